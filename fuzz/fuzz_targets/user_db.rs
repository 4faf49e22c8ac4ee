//! Reads arbitrary text as the users/secrets file (`accessgate user`, and
//! the gate at start). Invariants: never a panic; every refusal names the
//! file, and a file that parses renders back to the same users.
#![no_main]

use control::identity::UserDb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match UserDb::parse("fuzz.toml", text) {
            Ok(db) => {
                let text = db.to_toml().expect("a parsed file renders");
                let again = UserDb::parse("fuzz.toml", &text).expect("a rendered file parses");
                assert_eq!(again.to_toml().expect("and renders again"), text);
            }
            Err(e) => assert!(e.to_string().starts_with("fuzz.toml:"), "{e}"),
        }
    }
});
