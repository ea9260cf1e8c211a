//! The scenario parser on arbitrary text: `Scenario::parse` must never panic; whatever it
//! refuses is an error value that names the file. A scenario it accepts parses again to the
//! same error-or-success when given the same text (parsing is deterministic).
#![no_main]

use iopf_sim::Scenario;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Scenario::parse(text, "fuzz.toml") {
        Ok(_) => assert!(Scenario::parse(text, "fuzz.toml").is_ok()),
        Err(e) => {
            // Displaying the error must not panic either (it quotes the text).
            let _ = e.to_string();
            assert!(Scenario::parse(text, "fuzz.toml").is_err());
        }
    }
});
