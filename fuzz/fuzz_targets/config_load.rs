//! The configuration loaders: the agent's TOML file and the web config.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = astrolabe::config::Settings::parse(text, std::path::Path::new("agent.toml"));
        let _ = astrolabe::http::secure::WebConfig::parse(text, std::path::Path::new("/nonexistent"));
    }
});
