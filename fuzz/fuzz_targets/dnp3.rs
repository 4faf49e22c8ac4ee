//! Runs the input through the DNP3 inspector as the master's stream and as
//! the outstation's (see `units.rs`). Random bytes rarely carry good CRCs,
//! so when the first byte's top bit is set the rest is read as frames to
//! build (a length byte, a control byte, then that many user bytes each)
//! with their CRCs computed: the inspector past the link layer gets fuzzed
//! too.
//!
//! Invariants checked: nothing panics; every byte the gate forwards or
//! writes is a whole link frame with good CRCs; every frame the gate writes
//! to the master is a link ACK, a response carrying IIN2.0, or a response
//! without IIN2 bits echoing control objects whose statuses are all 9 (not
//! authorized).
//!
//! Run with `cargo +nightly fuzz run dnp3`.
#![no_main]

mod units;

use dataplane::inspect::dnp3::Dnp3;
use dataplane::wire::dnp3::{
    echo_controls, emit_frame, Frame, Segment, MAX_FRAME, MAX_USER, RESPONSE, STATUS_NOT_AUTHORIZED,
};
use libfuzzer_sys::fuzz_target;

/// `[cut, len, control, user.., len, control, user.., ...]` as frames with
/// good CRCs, master 2 to outstation 1, behind the same cut byte.
fn framed(data: &[u8]) -> Vec<u8> {
    let mut out = vec![data.get(1).copied().unwrap_or(0)];
    let mut rest = data.get(2..).unwrap_or(&[]);
    let mut frame = [0u8; MAX_FRAME];
    while let [len, control, tail @ ..] = rest {
        let n = usize::from(*len).min(MAX_USER).min(tail.len());
        let written = emit_frame(&mut frame, *control, 1, 2, &tail[..n]);
        out.extend_from_slice(&frame[..written]);
        rest = &tail[n..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let input = if data.first().is_some_and(|b| b & 0x80 != 0) { framed(data) } else { data.to_vec() };
    let (_, refusals, _) = units::drive::<Dnp3, { 2 * MAX_FRAME }>(&input);
    let mut user = [0u8; MAX_USER];
    for frame in refusals {
        let f = Frame::parse(&frame, &mut user).expect("a refusal frame parses");
        // A link ACK carries nothing; a response: FIN|FIR, app, 0x81, IIN.
        if !f.user.is_empty() {
            let app = Segment::parse(f.user).and_then(|s| s.app).expect("a refusal has an application header");
            assert_eq!(app.function, RESPONSE);
            match f.user.get(4) {
                Some(&1) => assert_eq!(f.user.len(), 5, "IIN2.0 with objects"),
                Some(&0) => {
                    // An echoed control: echoing it again changes nothing.
                    let objects = &f.user[5..];
                    let mut again = [0u8; MAX_USER];
                    assert_eq!(echo_controls(objects, STATUS_NOT_AUTHORIZED, &mut again), Some(objects.len()));
                    assert_eq!(&again[..objects.len()], objects, "a status that is not 9");
                }
                other => panic!("a refusal with IIN2 {other:?}"),
            }
        }
    }
});
