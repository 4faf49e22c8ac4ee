//! Runs the input through the EtherNet/IP inspector as the client's stream
//! and as the target's, split at a point the input chooses, under a policy
//! that allows reads only.
//!
//! Invariants checked: nothing panics; what the gate forwards or writes is
//! whole encapsulation messages; every CIP reply the gate writes is a reply
//! (service bit 0x80) with a non-zero general status.
//!
//! Run with `cargo +nightly fuzz run enip`.
#![no_main]

use dataplane::inspect::enip::EnipInspector;
use dataplane::inspect::{Sink, UnitInspector};
use dataplane::policy::{Decision, Denial, Op, Permit};
use dataplane::wire::enip::{Encap, Framer, Progress};
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

fn messages(mut stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        let Progress::Done { len } = Framer::next(stream) else { panic!("the gate wrote a partial message") };
        out.push(stream[..len].to_vec());
        stream = &stream[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    let cut = usize::from(cut).min(data.len());
    let mut insp = EnipInspector::new();
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
    messages(&w.asset);
    for m in messages(&w.user) {
        let e = Encap::parse(&m).expect("a refusal parses");
        if let Some(cip) = e.cpf().map(|c| c.message) {
            assert!(cip.len() == 4 && cip[0] & 0x80 != 0 && cip[2] != 0, "{cip:02x?}");
        } else {
            assert_ne!(e.status, 0);
        }
    }
    let mut insp = EnipInspector::new();
    let mut w = Wires::default();
    let spare = insp.down_spare();
    let n = spare.len().min(data.len());
    spare[..n].copy_from_slice(&data[..n]);
    insp.down_filled(n);
    let _ = insp.responses(&mut w, 0, &mut |_, _| {});
    messages(&w.user);
});
