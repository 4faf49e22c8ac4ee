//! Runs the input through the S7comm inspector as the user's stream and as
//! the PLC's (see `units.rs`).
//!
//! Invariants checked: nothing panics; every byte the gate forwards or
//! writes is a whole unit the framer accepts; every refusal parses as an
//! acknowledgement (not a request) carrying a PDU reference the user sent.
//!
//! Run with `cargo +nightly fuzz run s7`.
#![no_main]

mod units;

use dataplane::inspect::s7::S7;
use dataplane::wire::s7::{Pdu, Request, MAX_UNIT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, refusals, refs) = units::drive::<S7, MAX_UNIT>(data);
    for refusal in refusals {
        let p = Pdu::parse(&refusal[7..]).expect("a refusal parses");
        assert!(refs.contains(&p.pdu_ref));
        assert!(Request::parse(&p).is_err(), "a refusal is not a request");
    }
});
