//! The textfile collector's parser (Prometheus text format).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = astrolabe_collectors::textfile::parse("fuzz.prom", text);
    }
});
