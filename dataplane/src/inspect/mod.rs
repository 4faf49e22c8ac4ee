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

impl Inspected {
    /// A unit before anything is read of it: no function, `other`,
    /// transport (what a protocol's inspection starts from).
    pub const UNKNOWN: Self = Self {
        seq: 0,
        pdu_ref: 0,
        function: 0,
        subfunction: 0,
        op: Op::Other,
        item: None,
        verdict: Verdict::Transport,
    };
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

/// The most bytes a protocol's refusal of one unit takes (S7: one PDU,
/// 967 bytes; DNP3: a link ACK and a response frame).
pub const MAX_REFUSAL: usize = 1024;

/// How long a request may go unanswered before its slot is taken back
/// (µs): a broadcast, or a request the asset dropped, is never answered,
/// and clients give up on theirs long before. Without it, such requests
/// would fill the session's slots and every later one be refused as a
/// flood.
pub const EXPIRE_US: u64 = 30_000_000;

/// One protocol framed into units and decided unit by unit on the
/// operation (S7comm, DNP3, EtherNet/IP), as [`Units`] drives it. Every
/// method sees one whole unit; state that depends on a unit having left the
/// gate changes in [`Protocol::sent`] and [`Protocol::answer`] only.
pub trait Protocol {
    /// Why a stream cannot be framed.
    type Anomaly: std::fmt::Debug;
    /// What [`Protocol::answer`] may change, kept while its unit waits for
    /// room towards the user.
    type Saved;
    /// The longest unit on the wire (the audit trail makes room for it).
    const MAX_UNIT: usize;

    /// The length of the unit at the start of `buf` (`None`: not complete).
    ///
    /// # Errors
    /// The stream cannot be framed: close the session.
    fn frame(buf: &[u8]) -> Result<Option<usize>, Self::Anomaly>;

    /// Reads and decides the user's unit (which it may change in place,
    /// like S7's PDU size). `Ok(None)`: forward it; `Ok(Some(n))`: answer
    /// the user with `out[..n]` instead (0: drop it silently).
    ///
    /// # Errors
    /// The stream cannot be trusted any more: close the session.
    fn request(
        &mut self,
        unit: &mut [u8],
        decide: &mut dyn FnMut(Op) -> Decision,
        out: &mut [u8; MAX_REFUSAL],
    ) -> Result<(Inspected, Option<usize>), Self::Anomaly>;

    /// The unit [`Protocol::request`] decided has left the gate (numbered
    /// `i.seq`; forwarded if its verdict says so) at `now`.
    fn sent(&mut self, i: &Inspected, now: u64);

    /// Forgets the requests sent at or before `deadline` (µs, [`EXPIRE_US`]
    /// ago) that are still unanswered: their slots are free again, and
    /// their answers, if they ever come, strays.
    fn expire(&mut self, deadline: u64);

    /// What a unit from the asset is, matched against what was sent.
    ///
    /// # Errors
    /// The asset's stream cannot be trusted any more: close the session.
    fn answer(&mut self, unit: &[u8], now: u64) -> Result<Answer, Self::Anomaly>;

    fn save(&self) -> Self::Saved;
    fn restore(&mut self, saved: Self::Saved);
}

/// Whether a verdict sends the unit on to the asset.
pub fn forwards(v: Verdict) -> bool {
    matches!(v, Verdict::Transport | Verdict::Allowed { .. })
}

/// One session's inspector for a [`Protocol`]: fixed buffers of `N` bytes
/// each way (two units' worth), the loops that frame, decide, forward or
/// answer, and match the asset's answers.
pub struct Units<P, const N: usize> {
    up: Buf<N>,
    down: Buf<N>,
    proto: P,
    pub stats: modbus::InspectStats,
}

impl<P: Protocol + Default, const N: usize> Default for Units<P, N> {
    fn default() -> Self {
        Self { up: Buf::new(), down: Buf::new(), proto: P::default(), stats: modbus::InspectStats::default() }
    }
}

impl<P: Protocol + Default, const N: usize> Units<P, N> {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<P: Protocol, const N: usize> Units<P, N> {
    /// The longest unit on the wire.
    pub const MAX_UNIT: usize = P::MAX_UNIT;

    /// Room for more bytes from the user.
    pub fn up_spare(&mut self) -> &mut [u8] {
        self.up.spare()
    }

    /// `n` bytes were written into [`Units::up_spare`].
    pub fn up_filled(&mut self, n: usize) {
        self.up.filled(n);
    }

    /// Bytes from the user waiting for room on the other side.
    pub fn up_pending(&self) -> usize {
        self.up.len
    }

    /// Decides every complete unit in the user's buffer, in order,
    /// forwarding or answering each; stops at a partial unit or when the
    /// target has no room (the unit is decided again next time). `decide` is
    /// the policy; `now` a timestamp for latency. `on` hears about each unit
    /// (with its bytes as forwarded).
    ///
    /// # Errors
    /// The stream cannot be framed any more: close the session.
    pub fn requests(
        &mut self,
        sink: &mut dyn Sink,
        decide: &mut dyn FnMut(Op) -> Decision,
        now: u64,
        on: &mut dyn FnMut(&Inspected, &[u8]),
    ) -> Result<usize, P::Anomaly> {
        let mut done = 0;
        if let Some(deadline) = now.checked_sub(EXPIRE_US) {
            self.proto.expire(deadline);
        }
        while let Some(len) = P::frame(&self.up.data[..self.up.len])? {
            let mut out = [0u8; MAX_REFUSAL];
            let (mut inspected, answer) = self.proto.request(&mut self.up.data[..len], decide, &mut out)?;
            let room = match answer {
                None => sink.to_asset(&self.up.data[..len]),
                Some(0) => true,
                Some(n) => sink.to_user(&out[..n]),
            };
            if !room {
                return Ok(done);
            }
            self.stats.requests += 1;
            inspected.seq = self.stats.requests as u32;
            match inspected.verdict {
                Verdict::Transport | Verdict::Allowed { .. } => self.stats.allowed += 1,
                Verdict::Denied { .. } | Verdict::Flood { .. } => self.stats.denied += 1,
                Verdict::Malformed { .. } => self.stats.malformed += 1,
            }
            self.proto.sent(&inspected, now);
            on(&inspected, &self.up.data[..len]);
            self.up.consume(len);
            done += 1;
        }
        Ok(done)
    }

    /// Matches every complete unit in the asset's buffer to its request and
    /// forwards it, or drops (and counts) it. `on` hears what each was.
    ///
    /// # Errors
    /// The asset's stream cannot be framed any more: close the session.
    pub fn responses(
        &mut self,
        sink: &mut dyn Sink,
        now: u64,
        on: &mut dyn FnMut(Answer, &[u8]),
    ) -> Result<usize, P::Anomaly> {
        let mut done = 0;
        while let Some(len) = P::frame(&self.down.data[..self.down.len])? {
            let saved = self.proto.save();
            let answer = self.proto.answer(&self.down.data[..len], now)?;
            if answer == Answer::Unmatched {
                self.stats.unmatched += 1;
            } else {
                if !sink.to_user(&self.down.data[..len]) {
                    // Matched once, when it leaves: undo and retry later.
                    self.proto.restore(saved);
                    return Ok(done);
                }
                if matches!(answer, Answer::Matched { .. }) {
                    self.stats.responses += 1;
                }
            }
            on(answer, &self.down.data[..len]);
            self.down.consume(len);
            done += 1;
        }
        Ok(done)
    }
}

#[cfg(test)]
pub(crate) mod testing;

/// Where inspected bytes go. The session implements this over the asset's
/// TCP socket (`to_asset`) and the user's TLS session (`to_user`); both
/// return `false` when there is no room for the whole unit (ADU, TPKT,
/// frame, message) right now.
pub trait Sink {
    fn to_asset(&mut self, unit: &[u8]) -> bool;
    fn to_user(&mut self, unit: &[u8]) -> bool;
}

/// An inspector's buffer of bytes from the asset, as the session fills it
/// from the asset's socket ([`Downstream::recv_from`]).
pub trait Downstream {
    /// Room for more bytes from the asset.
    fn down_spare(&mut self) -> &mut [u8];
    /// `n` bytes were written into [`Downstream::down_spare`].
    fn down_filled(&mut self, n: usize);

    /// Reads what the asset's socket has, as far as the buffer has room.
    fn recv_from(&mut self, south: &mut smoltcp::socket::tcp::Socket<'_>) {
        while south.can_recv() {
            let spare = self.down_spare();
            if spare.is_empty() {
                break;
            }
            let got = south.recv_slice(spare).unwrap_or(0);
            if got == 0 {
                break;
            }
            self.down_filled(got);
        }
    }
}

impl<P: Protocol, const N: usize> Downstream for Units<P, N> {
    fn down_spare(&mut self) -> &mut [u8] {
        self.down.spare()
    }

    fn down_filled(&mut self, n: usize) {
        self.down.filled(n);
    }
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
