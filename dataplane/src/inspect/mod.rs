//! Inline inspection: turns parsed PDUs into verdicts.
//!
//! `wire/` only parses; this module decides what each request means for
//! the policy (which table, which addresses, which operation) and what the
//! gate does with it: forward it, answer it itself the way the protocol
//! expects, or end the session when the stream can no longer be framed.

pub mod dnp3;
pub mod enip;
pub mod modbus;
pub mod s7;

use crate::policy::{Decision, Denial, Op};
use crate::wire::s7::Item;

/// The gate's decision on one unit (S7 PDU, DNP3 link frame) from the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded without a policy check: what every session needs (S7:
    /// COTP connect/disconnect, setup communication; DNP3: link-layer
    /// frames, application confirms).
    Transport,
    /// Forwarded to the asset; `rule` allowed it.
    Allowed { rule: u32 },
    /// Refused; answered by the gate with this error (S7: item return code
    /// 0x03, header error 0x8703, userdata error 0xD241; DNP3: IIN2 bits).
    Denied { denial: Denial, error: u16 },
    /// Not a valid request (S7: answered 0x8500; DNP3: IIN2 parameter
    /// error, or dropped when it carries no sequence to answer).
    Malformed { error: u16 },
    /// Too many requests outstanding (or an S7 PDU reference already in
    /// flight): answered with `error` (S7 0x8302 no resources, CIP 0x02
    /// resource unavailable, encapsulation 0x0002).
    Flood { error: u16 },
}

/// What happened to one unit from the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    /// The unit's number within the session (1, 2, ...).
    pub seq: u32,
    /// What the protocol matches answers by: the S7 PDU reference, the
    /// DNP3 application sequence.
    pub pdu_ref: u16,
    /// The function: S7 job function, `0x70 | group` for userdata
    /// (`subfunction` says which), COTP code for connection TPDUs; DNP3
    /// application function code (link-layer frames: `0xf0 | link
    /// function` from a primary station, `0xe0 | function` from a
    /// secondary).
    pub function: u8,
    pub subfunction: u8,
    pub op: Op,
    /// The first variable an S7 read or write names.
    pub item: Option<Item>,
    pub verdict: Verdict,
}

/// What a unit from the asset was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The response to request `seq`, `latency` after it was forwarded.
    Matched { seq: u32, latency: u64 },
    /// Forwarded, matching no request: connection and link-layer frames,
    /// pushes and unsolicited responses, a response's later fragments or
    /// segments, a PLC's download jobs.
    Unsolicited,
    /// A response no request is waiting for: dropped.
    Unmatched,
}

/// An inspector of a protocol framed into units, decided request by
/// request on the operation (S7comm, DNP3). The session drives it the same
/// way for each.
pub trait UnitInspector {
    /// Why a stream cannot be framed.
    type Anomaly: std::fmt::Debug;
    /// The longest unit on the wire (the audit trail makes room for it).
    const MAX_UNIT: usize;

    /// Room for more bytes from the user.
    fn up_spare(&mut self) -> &mut [u8];
    /// `n` bytes were written into [`UnitInspector::up_spare`].
    fn up_filled(&mut self, n: usize);
    /// Room for more bytes from the asset.
    fn down_spare(&mut self) -> &mut [u8];
    /// `n` bytes were written into [`UnitInspector::down_spare`].
    fn down_filled(&mut self, n: usize);
    /// Bytes from the user waiting for room on the other side.
    fn up_pending(&self) -> usize;

    /// Decides every complete unit in the user's buffer, in order,
    /// forwarding or answering each; stops at a partial unit or when the
    /// target has no room. `decide` is the policy; `now` a timestamp for
    /// latency. `on` hears about each unit (with its bytes).
    ///
    /// # Errors
    /// The stream cannot be framed any more: close the session.
    fn requests(
        &mut self,
        sink: &mut dyn Sink,
        decide: &mut dyn FnMut(Op) -> Decision,
        now: u64,
        on: &mut dyn FnMut(&Inspected, &[u8]),
    ) -> Result<usize, Self::Anomaly>;

    /// Matches every complete unit in the asset's buffer to its request and
    /// forwards it, or drops it (and counts it). `on` hears what each was.
    ///
    /// # Errors
    /// The asset's stream cannot be framed any more: close the session.
    fn responses(
        &mut self,
        sink: &mut dyn Sink,
        now: u64,
        on: &mut dyn FnMut(Answer, &[u8]),
    ) -> Result<usize, Self::Anomaly>;
}

/// Where inspected bytes go. The session implements this over the asset's
/// TCP socket (`to_asset`) and the user's TLS session (`to_user`); both
/// return `false` when there is no room for the whole unit (ADU, TPKT)
/// right now.
pub trait Sink {
    fn to_asset(&mut self, unit: &[u8]) -> bool;
    fn to_user(&mut self, unit: &[u8]) -> bool;
}

/// A fixed byte buffer for partial protocol units.
pub(crate) struct Buf<const N: usize> {
    pub(crate) data: [u8; N],
    pub(crate) len: usize,
}

impl<const N: usize> Buf<N> {
    pub(crate) const fn new() -> Self {
        Self { data: [0; N], len: 0 }
    }

    pub(crate) fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.len..]
    }

    /// `n` bytes were written into [`Buf::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.len = (self.len + n).min(N);
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.data.copy_within(n..self.len, 0);
        self.len -= n;
    }
}
