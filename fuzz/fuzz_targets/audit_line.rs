//! Reads arbitrary bytes as one line of the audit journal, the way
//! `accessgate audit verify` reads a trail someone may have edited.
//! Invariants: never a panic; a line that checks out is exactly the
//! canonical form of its record (so no two spellings of one record pass),
//! and any timestamp formats and parses back.
#![no_main]

use control::audit::chain::{canonical_into, check_line, parse_rfc3339_micros, rfc3339_micros};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sealed) = check_line(data) {
        let mut canonical = String::new();
        canonical_into(&serde_json::Value::Object(sealed.record), &mut canonical).unwrap();
        assert_eq!(canonical.as_bytes(), data);
    }
    if let Some(ts) = data.get(..8) {
        let ts = u64::from_le_bytes(ts.try_into().unwrap()) % 253_402_300_800_000_000; // before year 10000
        assert_eq!(parse_rfc3339_micros(&rfc3339_micros(ts)), Some(ts));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_rfc3339_micros(text);
    }
});
