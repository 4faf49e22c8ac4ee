//! Runs the input through the DNP3 inspector as the master's stream and as
//! the outstation's, split at a point the input chooses, under a policy
//! that allows reads only.
//!
//! Invariants checked: nothing panics; every byte the gate forwards is a
//! whole link frame with good CRCs; every frame the gate writes to the
//! master is a link ACK or a response carrying IIN2.0; whatever the framer
//! accepts parses.
//!
//! Run with `cargo +nightly fuzz run dnp3`.
#![no_main]

use dataplane::inspect::dnp3::Dnp3Inspector;
use dataplane::inspect::{Sink, UnitInspector};
use dataplane::policy::{Decision, Denial, Op, Permit};
use dataplane::wire::dnp3::{Frame, Framer, Progress, Segment, MAX_USER, RESPONSE};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Wires {
    asset: Vec<u8>,
    user: Vec<u8>,
}

impl Sink for Wires {
    fn to_asset(&mut self, unit: &[u8]) -> bool {
        self.asset.extend_from_slice(unit);
        true
    }
    fn to_user(&mut self, unit: &[u8]) -> bool {
        self.user.extend_from_slice(unit);
        true
    }
}

/// The user data of every frame of a stream the gate wrote.
fn frames(mut stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut user = [0u8; MAX_USER];
    while !stream.is_empty() {
        let Progress::Done { len } = Framer::next(stream) else { panic!("the gate wrote a broken frame") };
        out.push(Frame::parse(&stream[..len], &mut user).expect("a framed frame parses").user.to_vec());
        stream = &stream[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    let cut = usize::from(cut).min(data.len());
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    let mut decide = |op: Op| {
        if op == Op::Read {
            Decision::Permit(Permit { rule: 0, until: u64::MAX })
        } else {
            Decision::Deny(Denial::NoRule)
        }
    };
    for part in [&data[..cut], &data[cut..]] {
        let mut rest = part;
        while !rest.is_empty() {
            let spare = insp.up_spare();
            let n = spare.len().min(rest.len());
            if n == 0 {
                break;
            }
            spare[..n].copy_from_slice(&rest[..n]);
            insp.up_filled(n);
            rest = &rest[n..];
            if insp.requests(&mut w, &mut decide, 0, &mut |_, _| {}).is_err() {
                break;
            }
        }
    }
    frames(&w.asset);
    for user in frames(&w.user) {
        // A link ACK carries nothing; a response: FIN|FIR, app, 0x81, IIN.
        if !user.is_empty() {
            let app = Segment::parse(&user).and_then(|s| s.app).expect("a refusal has an application header");
            assert_eq!((app.function, user.get(4)), (RESPONSE, Some(&1)));
        }
    }
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    let spare = insp.down_spare();
    let n = spare.len().min(data.len());
    spare[..n].copy_from_slice(&data[..n]);
    insp.down_filled(n);
    let _ = insp.responses(&mut w, 0, &mut |_, _| {});
    frames(&w.user);
});
