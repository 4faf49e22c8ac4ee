//! Runs the input through the EtherNet/IP inspector as the client's stream
//! and as the target's (see `units.rs`).
//!
//! Invariants checked: nothing panics; what the gate forwards or writes is
//! whole encapsulation messages; every CIP reply the gate writes is a reply
//! (service bit 0x80) with a non-zero general status.
//!
//! Run with `cargo +nightly fuzz run enip`.
#![no_main]

mod units;

use dataplane::inspect::enip::Enip;
use dataplane::wire::enip::{Encap, MAX_MESSAGE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, refusals, _) = units::drive::<Enip, { 2 * MAX_MESSAGE }>(data);
    for m in refusals {
        let e = Encap::parse(&m).expect("a refusal parses");
        match e.cpf().map(|c| c.message) {
            Some(cip) => assert!(cip.len() == 4 && cip[0] & 0x80 != 0 && cip[2] != 0, "{cip:02x?}"),
            None => assert_ne!(e.status, 0),
        }
    }
});
