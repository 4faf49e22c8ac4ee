//! Loads arbitrary text as a gate config + policy (the operator-facing
//! parser: TOML, validation, compilation). Invariant: every input ends in a
//! config or a list of positioned errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match control::config::parse("fuzz.toml", text) {
            Ok(_) => {}
            Err(errors) => assert!(!errors.0.is_empty()),
        }
    }
});
