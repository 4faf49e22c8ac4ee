//! Reads arbitrary text as the TOTP step file the gate loads at start.
//! Invariants: every input ends in steps or in an error naming its line,
//! never a panic; what parses renders back to the same steps.
#![no_main]

use control::identity::steps::{parse, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match parse(text) {
            Ok(steps) => assert_eq!(parse(&render(&steps)), Ok(steps)),
            Err(e) => assert!(e.starts_with("line ")),
        }
    }
});
