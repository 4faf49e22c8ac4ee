//! Runs the input through the EtherNet/IP inspector as the client's stream
//! and as the target's (see `units.rs`).
//!
//! Invariants checked: nothing panics; what the gate forwards or writes is
//! whole encapsulation messages; every CIP reply the gate writes is a reply
//! (service bit 0x80) with a non-zero general status. The audit writer's
//! side on the same bytes as a recorded payload: learning a connection
//! from a Forward Open and its reply, and rebuilding a refusal, never
//! panic (twin: `inspect::enip::tests::trail_helpers_never_panic`).
//!
//! Run with `cargo +nightly fuzz run enip`.
#![no_main]

mod units;

use dataplane::inspect::enip::{forward_open_reply, forward_open_request, refusal, Connections, Enip};
use dataplane::inspect::MAX_REFUSAL;
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
    // The input's halves as a Forward Open and its reply.
    let (open, reply) = data.split_at(data.len() / 2);
    let mut learned = Connections::default();
    if let (Some(t_to_o), Some(o_to_t)) = (forward_open_request(open), forward_open_reply(reply)) {
        learned.learn(o_to_t, t_to_o);
    }
    let mut out = [0u8; MAX_REFUSAL];
    for (service, error) in [(0x4d, 0x0f), (0x0a, 0x0f), (0x05, 0x13), (0, 1), (0, 3)] {
        if let Some(n) = refusal(data, service, error, &learned, &mut out) {
            assert!(Encap::parse(&out[..n]).is_some(), "a rebuilt refusal parses");
        }
    }
});
