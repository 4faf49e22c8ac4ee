//! What the inspectors' tests share: a sink that records both ways, and
//! feeding bytes through a [`Units`] inspector the way the session does.

use super::{Answer, Downstream, Inspected, Protocol, Sink, Units};
use crate::policy::{Decision, Op, Permit};

/// Records what the gate sends each way; `asset_room` and `user_room`
/// limit each side's.
#[derive(Default)]
pub(crate) struct Wires {
    pub asset: Vec<u8>,
    pub user: Vec<u8>,
    pub asset_room: Option<usize>,
    pub user_room: Option<usize>,
}

impl Sink for Wires {
    fn to_asset(&mut self, unit: &[u8]) -> bool {
        if self.asset_room.is_some_and(|r| self.asset.len() + unit.len() > r) {
            return false;
        }
        self.asset.extend_from_slice(unit);
        true
    }
    fn to_user(&mut self, unit: &[u8]) -> bool {
        if self.user_room.is_some_and(|r| self.user.len() + unit.len() > r) {
            return false;
        }
        self.user.extend_from_slice(unit);
        true
    }
}

pub(crate) const ALLOW: Decision = Decision::Permit(Permit { rule: 7, until: u64::MAX });

/// A viewer: reads and diagnostics, nothing else.
pub(crate) fn viewer(op: Op) -> Decision {
    if matches!(op, Op::Read | Op::Diagnostic) {
        ALLOW
    } else {
        Decision::Deny(crate::policy::Denial::NoRule)
    }
}

/// Feeds the user's `bytes` as far as the buffer takes them each time;
/// returns every unit decided.
pub(crate) fn feed<P: Protocol, const N: usize>(
    insp: &mut Units<P, N>,
    w: &mut Wires,
    bytes: &[u8],
    policy: fn(Op) -> Decision,
) -> Vec<Inspected> {
    let mut seen = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let spare = insp.up_spare();
        let n = spare.len().min(rest.len());
        spare[..n].copy_from_slice(&rest[..n]);
        insp.up_filled(n);
        rest = &rest[n..];
        insp.requests(w, &mut |op| policy(op), 0, &mut |i, _| seen.push(*i)).unwrap();
    }
    seen
}

/// Feeds the asset's `bytes` at `now`; returns what each unit was.
pub(crate) fn answers<P: Protocol, const N: usize>(
    insp: &mut Units<P, N>,
    w: &mut Wires,
    bytes: &[u8],
    now: u64,
) -> Vec<Answer> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let spare = insp.down_spare();
        let n = spare.len().min(rest.len());
        spare[..n].copy_from_slice(&rest[..n]);
        insp.down_filled(n);
        rest = &rest[n..];
        insp.responses(w, now, &mut |a, _| out.push(a)).unwrap();
    }
    out
}

/// Feeds `stream` whole, then cut in two at every byte: the units decided
/// and the bytes sent each way are the same every time.
pub(crate) fn every_split_agrees<I: Whole>(stream: &[u8], policy: fn(Op) -> Decision) {
    let mut whole = Wires::default();
    let expected = I::feed(&mut I::fresh(), &mut whole, stream, policy);
    for cut in 1..stream.len() {
        let mut insp = I::fresh();
        let mut w = Wires::default();
        let mut seen = I::feed(&mut insp, &mut w, &stream[..cut], policy);
        seen.extend(I::feed(&mut insp, &mut w, &stream[cut..], policy));
        assert_eq!(seen, expected, "cut at {cut}");
        assert_eq!((&w.asset, &w.user), (&whole.asset, &whole.user), "cut at {cut}");
    }
}

/// A [`Units`] inspector as [`every_split_agrees`] makes and feeds it.
pub(crate) trait Whole: Sized {
    fn fresh() -> Self;
    fn feed(&mut self, w: &mut Wires, bytes: &[u8], policy: fn(Op) -> Decision) -> Vec<Inspected>;
}

impl<P: Protocol + Default, const N: usize> Whole for Units<P, N> {
    fn fresh() -> Self {
        Self::new()
    }
    fn feed(&mut self, w: &mut Wires, bytes: &[u8], policy: fn(Op) -> Decision) -> Vec<Inspected> {
        feed(self, w, bytes, policy)
    }
}
