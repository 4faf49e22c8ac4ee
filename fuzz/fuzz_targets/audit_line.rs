//! Audit journal lines, the way `accessgate audit verify` reads a trail
//! someone may have edited, and the way the writer seals what sessions
//! carry. Invariants: any bytes read as a line end in an error or a record,
//! never a panic; whatever text and bytes a record carries, its sealed line
//! checks out, and changing any one byte of it is refused; any timestamp
//! before the year 10000 formats and parses back.
#![no_main]

use control::audit::chain::{check_line, parse_rfc3339_micros, rfc3339_micros, Chain, Fields, Val};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = check_line(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_rfc3339_micros(text);
    }

    let ts = data.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    let ts = ts % 253_402_300_800_000_000;
    assert_eq!(parse_rfc3339_micros(&rfc3339_micros(ts)), Some(ts));

    // Seal the input as a record's text and payload, then check and edit it.
    let text = String::from_utf8_lossy(data);
    let mut fields = Fields::new("request");
    fields.put("user", &*text).put("payload", Val::Hex(data)).put("seq_in_session", data.len() as u64);
    let line = Chain::default().seal(ts, fields);
    let line = line.strip_suffix('\n').expect("a sealed line ends in a newline").as_bytes();
    check_line(line).expect("a sealed line checks out");
    let at = usize::from(data.first().copied().unwrap_or(0)) * 7 % line.len();
    let mut edited = line.to_vec();
    edited[at] ^= data.get(1).copied().unwrap_or(1).max(1);
    assert!(check_line(&edited).is_err(), "an edit at byte {at} passed");
});
