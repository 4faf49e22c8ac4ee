//! Runs the input through the S7comm inspector as the user's stream and as
//! the PLC's, split at a point the input chooses, under a policy that
//! allows reads only.
//!
//! Invariants checked: nothing panics; every byte the gate forwards to the
//! PLC is a whole unit the framer accepts; every refusal the gate writes
//! frames and parses as an acknowledgement with the request's PDU
//! reference; the wire parsers agree with each other on every unit.
//!
//! Run with `cargo +nightly fuzz run s7`.
#![no_main]

use dataplane::inspect::s7::S7Inspector;
use dataplane::inspect::{Sink, UnitInspector};
use dataplane::policy::{Decision, Denial, Op, Permit};
use dataplane::wire::s7::{Framer, Pdu, Progress, Request, Unit, MAX_PDU};
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

/// Every unit of a stream the gate wrote: whole, and readable.
fn units(mut stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut scratch = [0u8; MAX_PDU];
    while !stream.is_empty() {
        let Progress::Done { len } = Framer::next(stream) else { panic!("the gate wrote a partial unit") };
        assert!(Unit::parse(&stream[..len], &mut scratch).is_some());
        out.push(stream[..len].to_vec());
        stream = &stream[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    let cut = usize::from(cut).min(data.len());
    let mut insp = S7Inspector::new();
    let mut w = Wires::default();
    let mut decide = |op: Op| {
        if op == Op::Read {
            Decision::Permit(Permit { rule: 0, until: u64::MAX })
        } else {
            Decision::Deny(Denial::NoRule)
        }
    };
    let mut refs = Vec::new();
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
            let r = insp.requests(&mut w, &mut decide, 0, &mut |i, _| refs.push(i.pdu_ref));
            if r.is_err() {
                break;
            }
        }
    }
    units(&w.asset);
    for refusal in units(&w.user) {
        let p = Pdu::parse(&refusal[7..]).expect("a refusal parses");
        assert!(refs.contains(&p.pdu_ref));
        assert!(Request::parse(&p).is_err(), "a refusal is not a request");
    }
    // The same bytes as the PLC's side.
    let mut insp = S7Inspector::new();
    let mut w = Wires::default();
    let spare = insp.down_spare();
    let n = spare.len().min(data.len());
    spare[..n].copy_from_slice(&data[..n]);
    insp.down_filled(n);
    let _ = insp.responses(&mut w, 0, &mut |_, _| {});
    units(&w.user);
});
