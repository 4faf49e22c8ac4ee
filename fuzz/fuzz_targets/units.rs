//! What the S7comm, DNP3 and EtherNet/IP fuzz targets share: the input as
//! the user's stream (split where its first byte says) and as the asset's,
//! through one protocol's inspector, under a policy that allows reads only.
//! Included by each target (`mod units;`), not a target itself.

use dataplane::inspect::{Downstream, Protocol, Sink, Units};
use dataplane::policy::{Decision, Denial, Op, Permit};

#[derive(Default)]
pub struct Wires {
    pub asset: Vec<u8>,
    pub user: Vec<u8>,
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

/// Every unit of a stream the gate wrote: each must frame whole.
pub fn units<P: Protocol>(mut stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        let Ok(Some(len)) = P::frame(stream) else { panic!("the gate wrote a partial or broken unit") };
        out.push(stream[..len].to_vec());
        stream = &stream[len..];
    }
    out
}

/// Runs `data` both ways. Returns (what went to the asset, the gate's
/// answers to the user, the PDU references of the user's units); checks
/// that everything the gate wrote is whole units.
pub fn drive<P: Protocol + Default, const N: usize>(data: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<u16>) {
    let Some((&cut, data)) = data.split_first() else { return Default::default() };
    let cut = usize::from(cut).min(data.len());
    let mut insp = Units::<P, N>::new();
    let mut w = Wires::default();
    let mut decide = |op: Op| {
        if op == Op::Read {
            Decision::Permit(Permit { rule: 0, until: u64::MAX })
        } else {
            Decision::Deny(Denial::NoRule)
        }
    };
    let mut refs = Vec::new();
    'feed: for part in [&data[..cut], &data[cut..]] {
        let mut rest = part;
        while !rest.is_empty() {
            let spare = insp.up_spare();
            let n = spare.len().min(rest.len());
            if n == 0 {
                break 'feed;
            }
            spare[..n].copy_from_slice(&rest[..n]);
            insp.up_filled(n);
            rest = &rest[n..];
            if insp.requests(&mut w, &mut decide, 0, &mut |i, _| refs.push(i.pdu_ref)).is_err() {
                break 'feed;
            }
        }
    }
    let (asset, user) = (units::<P>(&w.asset), units::<P>(&w.user));
    let mut insp = Units::<P, N>::new();
    let mut w = Wires::default();
    let spare = insp.down_spare();
    let n = spare.len().min(data.len());
    spare[..n].copy_from_slice(&data[..n]);
    insp.down_filled(n);
    let _ = insp.responses(&mut w, 0, &mut |_, _| {});
    units::<P>(&w.user);
    (asset, user, refs)
}
