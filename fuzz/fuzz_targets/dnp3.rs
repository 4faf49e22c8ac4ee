//! Runs the input through the DNP3 inspector as the master's stream and as
//! the outstation's (see `units.rs`).
//!
//! Invariants checked: nothing panics; every byte the gate forwards or
//! writes is a whole link frame with good CRCs; every frame the gate writes
//! to the master is a link ACK or a response carrying IIN2.0.
//!
//! Run with `cargo +nightly fuzz run dnp3`.
#![no_main]

mod units;

use dataplane::inspect::dnp3::Dnp3;
use dataplane::wire::dnp3::{Frame, Segment, MAX_FRAME, MAX_USER, RESPONSE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, refusals, _) = units::drive::<Dnp3, { 2 * MAX_FRAME }>(data);
    let mut user = [0u8; MAX_USER];
    for frame in refusals {
        let f = Frame::parse(&frame, &mut user).expect("a refusal frame parses");
        // A link ACK carries nothing; a response: FIN|FIR, app, 0x81, IIN.
        if !f.user.is_empty() {
            let app = Segment::parse(f.user).and_then(|s| s.app).expect("a refusal has an application header");
            assert_eq!((app.function, f.user.get(4)), (RESPONSE, Some(&1)));
        }
    }
});
