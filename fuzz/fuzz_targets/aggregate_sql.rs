//! The aggregate SQL planner: any text is planned or refused with a
//! message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sql) = std::str::from_utf8(data) {
        let _ = astrolabe::aggregate::AggregateSet::with_system::<&str, &str>(&[], &[sql]);
    }
});
