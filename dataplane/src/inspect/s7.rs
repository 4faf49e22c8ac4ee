//! S7comm inspection and enforcement, per request, inline.
//!
//! The user's plaintext stream is framed into ISO-on-TCP units with
//! [`wire::s7::Framer`] across any segmentation. Connection TPDUs (COTP
//! connect, disconnect) and *setup communication* are transport: they are
//! forwarded unchecked, the setup's PDU size lowered to
//! [`wire::s7::MAX_PDU`] so every later unit fits the gate's buffers. Every
//! other request is mapped to an operation and the policy decides:
//!
//! | request                                   | operation    |
//! |-------------------------------------------|--------------|
//! | read variables (0x04)                     | `read`       |
//! | write variables (0x05)                    | `write`      |
//! | download, upload (0x1A..0x1F)             | `program`    |
//! | PI `_INSE`, `_DELE`, `_MODU`              | `program`    |
//! | PI start `P_PROGRAM`, `_GARB`, PLC stop   | `control`    |
//! | userdata: block list/info, SZL, read clock | `diagnostic` |
//! | userdata: cyclic data                     | `read`       |
//! | userdata: programmer commands, set clock  | `control`    |
//! | userdata: security (passwords), others; other jobs | `other` |
//!
//! Allowed requests go to the PLC unchanged. Denied ones are answered by
//! the gate the way a CPU refuses a protected object, with the request's
//! PDU reference: a read or write gets Ack_Data with every item's return
//! code 0x03 ("object access not allowed"); another job gets Ack_Data with
//! header error 0x8703 ("access to object refused"); a userdata request a
//! response with parameter error 0xD241 ("not permitted in the current
//! protection level"). Responses are matched to requests by PDU reference;
//! unsolicited acknowledgements are dropped and counted; userdata *pushes*
//! (alarms, cyclic data the user subscribed to) are forwarded. A stream that
//! cannot be framed ends the session.
//!
//! A download turns the roles around: after the user's *request download*,
//! the PLC sends *download block* and *download ended* jobs and the user
//! acknowledges them with the block's data. Those jobs reach the user, and
//! the user's acknowledgements the PLC, only while a download the policy
//! allowed is running; the acknowledgements are audited under its rule.
//!
//! Buffers are fixed (two TPKTs' worth per direction); when the other side
//! has no room, reading stops. Nothing here allocates.

pub use super::{Answer, Inspected, Verdict};
use super::{Buf, Sink, UnitInspector};
use crate::inspect::modbus::InspectStats;
use crate::policy::{Decision, Op};
use crate::wire::s7::{
    self as wire, Anomaly, Framer, Pdu, PiService, Progress, Request, Tpdu, Unit, Userdata, MAX_PDU, MAX_REFUSAL,
    MAX_UNIT,
};

/// Outstanding requests per session; more is a flood (anomaly). CPUs grant
/// 1..=8 parallel jobs (max AmQ).
pub const MAX_OUTSTANDING: usize = 16;

/// A request forwarded and not yet answered.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    pdu_ref: u16,
    userdata: bool,
    seq: u32,
    sent_at: u64,
}

/// Jobs the PLC may have open towards the user during a download.
const MAX_ASSET_JOBS: usize = 4;

/// One session's S7comm inspector.
pub struct S7Inspector {
    up: Buf<MAX_UNIT>,
    down: Buf<MAX_UNIT>,
    /// A PDU gathered from several DTs.
    scratch: [u8; MAX_PDU],
    pending: [Pending; MAX_OUTSTANDING],
    outstanding: usize,
    /// The rule that allowed the download in progress.
    download: Option<u32>,
    /// The PLC's download jobs the user has not acknowledged: (PDU
    /// reference, function).
    asset_jobs: [(u16, u8); MAX_ASSET_JOBS],
    asset_open: usize,
    pub stats: InspectStats,
}

impl Default for S7Inspector {
    fn default() -> Self {
        Self::new()
    }
}

impl S7Inspector {
    pub const fn new() -> Self {
        Self {
            up: Buf::new(),
            down: Buf::new(),
            scratch: [0; MAX_PDU],
            pending: [Pending { pdu_ref: 0, userdata: false, seq: 0, sent_at: 0 }; MAX_OUTSTANDING],
            outstanding: 0,
            download: None,
            asset_jobs: [(0, 0); MAX_ASSET_JOBS],
            asset_open: 0,
            stats: InspectStats { requests: 0, allowed: 0, denied: 0, malformed: 0, responses: 0, unmatched: 0 },
        }
    }

    /// Reads the unit `up[..len]` and decides it (the setup's PDU size is
    /// lowered in place). Returns what happened and how a refusal is sent.
    fn inspect(&mut self, len: usize, decide: &mut dyn FnMut(Op) -> Decision) -> Result<(Inspected, Reply), Anomaly> {
        let mut i = Inspected {
            seq: 0,
            pdu_ref: 0,
            function: 0,
            subfunction: 0,
            op: Op::Other,
            item: None,
            verdict: Verdict::Transport,
        };
        // The unit is one TPKT (not a PDU split over several).
        let single = usize::from(u16::from_be_bytes([self.up.data[2], self.up.data[3]])) == len;
        let unit = Unit::parse(&self.up.data[..len], &mut self.scratch);
        let pdu = match unit {
            Some(Unit::Connection(
                t @ (Tpdu::ConnectRequest | Tpdu::DisconnectRequest | Tpdu::DisconnectConfirm | Tpdu::Error),
            )) => {
                i.function = self.up.data[5];
                i.op = if t == Tpdu::ConnectRequest { Op::Connect } else { Op::Other };
                return Ok((i, Reply::None));
            }
            // A user does not confirm connections.
            Some(Unit::Connection(_)) => return Err(Anomaly::BadTpdu(self.up.data[5])),
            Some(Unit::Data(pdu)) => pdu,
            None => return Err(Anomaly::BadSegmentation),
        };
        let malformed = |i: Inspected, pdu: &[u8]| {
            let pdu_ref = pdu.get(4..6).map_or(0, |r| u16::from_be_bytes([r[0], r[1]]));
            let function = pdu.get(10).copied().unwrap_or(0);
            let i = Inspected { pdu_ref, function, verdict: Verdict::Malformed { error: wire::ERR_WRONG_FRAMES }, ..i };
            (i, Reply::JobError(function, wire::ERR_WRONG_FRAMES))
        };
        let p = match Pdu::parse(pdu) {
            Ok(p) => p,
            // Not S7comm at all (S7comm+, or anything else): the gate
            // cannot answer in its language, and nothing after it is safe.
            Err(wire::Error::BadProtocol(id)) => return Err(Anomaly::NotS7comm(id)),
            Err(_) => return Ok(malformed(i, pdu)),
        };
        if let (wire::ACK_DATA, Some(rule)) = (p.rosctr, self.download) {
            // The user acknowledging one of the PLC's download jobs.
            if let Some(k) = self.asset_jobs[..self.asset_open].iter().position(|j| j.0 == p.pdu_ref) {
                let function = self.asset_jobs[k].1;
                self.asset_jobs.copy_within(k + 1..self.asset_open, k);
                self.asset_open -= 1;
                let i = Inspected {
                    pdu_ref: p.pdu_ref,
                    function,
                    op: Op::Program,
                    verdict: Verdict::Allowed { rule },
                    ..i
                };
                return Ok((i, Reply::None));
            }
        }
        let request = match Request::parse(&p) {
            Ok(r) => r,
            Err(_) => return Ok(malformed(i, pdu)),
        };
        i.pdu_ref = p.pdu_ref;
        let (op, reply) = match request {
            Request::Setup { .. } => {
                i.function = wire::SETUP_COMMUNICATION;
                i.op = Op::Connect;
                // Only a setup in one DT can be lowered (no tool splits one).
                if !single {
                    return Ok(malformed(i, pdu));
                }
                wire::clamp_setup(&mut self.up.data[..len]);
                return Ok(self.admit(i, Reply::Setup));
            }
            Request::Variables { function, items, first } => {
                i.function = function;
                i.item = first;
                let op = if function == wire::READ_VAR { Op::Read } else { Op::Write };
                (op, Reply::Items(function, items))
            }
            Request::Pi(service) => {
                i.function = wire::PI_SERVICE;
                let op = match service {
                    PiService::InsertBlock | PiService::DeleteBlock | PiService::CopyRamToRom => Op::Program,
                    PiService::Start | PiService::Compress | PiService::Other => Op::Control,
                };
                (op, Reply::of(&request))
            }
            Request::Job { function } => {
                i.function = function;
                let op = match function {
                    wire::REQUEST_DOWNLOAD..=wire::END_UPLOAD => Op::Program,
                    wire::PLC_STOP => Op::Control,
                    _ => Op::Other,
                };
                (op, Reply::of(&request))
            }
            Request::Userdata(u) => {
                i.function = 0x70 | u.group;
                i.subfunction = u.subfunction;
                (userdata_op(u), Reply::of(&request))
            }
        };
        i.op = op;
        i.verdict = match decide(op) {
            Decision::Permit(p) => Verdict::Allowed { rule: p.rule },
            Decision::Deny(denial) => Verdict::Denied { denial, error: reply.error() },
        };
        Ok(self.admit(i, reply))
    }

    /// A request to forward, unless too many are in flight or its PDU
    /// reference already is (its answer could not be matched).
    fn admit(&self, i: Inspected, reply: Reply) -> (Inspected, Reply) {
        let forward = matches!(i.verdict, Verdict::Transport | Verdict::Allowed { .. });
        let userdata = matches!(reply, Reply::Userdata(..));
        let busy = self.outstanding >= MAX_OUTSTANDING
            || self.pending[..self.outstanding].iter().any(|p| p.pdu_ref == i.pdu_ref && p.userdata == userdata);
        if !forward || !busy || reply == Reply::None {
            return (i, reply);
        }
        (
            Inspected { verdict: Verdict::Flood { error: wire::ERR_NO_RESOURCES }, ..i },
            reply.with_error(i.function, wire::ERR_NO_RESOURCES),
        )
    }
}

impl UnitInspector for S7Inspector {
    type Anomaly = Anomaly;
    const MAX_UNIT: usize = MAX_UNIT;

    /// Room for more bytes from the user.
    fn up_spare(&mut self) -> &mut [u8] {
        self.up.spare()
    }

    /// `n` bytes were written into [`S7Inspector::up_spare`].
    fn up_filled(&mut self, n: usize) {
        self.up.filled(n);
    }

    /// Room for more bytes from the asset.
    fn down_spare(&mut self) -> &mut [u8] {
        self.down.spare()
    }

    /// `n` bytes were written into [`S7Inspector::down_spare`].
    fn down_filled(&mut self, n: usize) {
        self.down.filled(n);
    }

    /// Bytes from the user waiting for room on the other side.
    fn up_pending(&self) -> usize {
        self.up.len
    }

    /// Decides every complete unit in the user's buffer, in order,
    /// forwarding or answering each; stops at a partial unit or when the
    /// target has no room. `decide` is the policy; `now` a timestamp for
    /// latency. `on` hears about each unit (with its bytes as forwarded).
    ///
    /// # Errors
    /// The stream cannot be framed any more: close the session.
    fn requests(
        &mut self,
        sink: &mut dyn Sink,
        decide: &mut dyn FnMut(Op) -> Decision,
        now: u64,
        on: &mut dyn FnMut(&Inspected, &[u8]),
    ) -> Result<usize, Anomaly> {
        let mut done = 0;
        loop {
            let len = match Framer::next(&self.up.data[..self.up.len]) {
                Progress::Done { len } => len,
                Progress::NeedMore => return Ok(done),
                Progress::Reject(anomaly) => return Err(anomaly),
            };
            let (mut inspected, reply) = self.inspect(len, decide)?;
            let forward = matches!(inspected.verdict, Verdict::Transport | Verdict::Allowed { .. });
            if forward {
                if !sink.to_asset(&self.up.data[..len]) {
                    // No room at the asset: keep the unit, try again later.
                    return Ok(done);
                }
            } else {
                let mut out = [0u8; MAX_REFUSAL];
                let n = reply.emit(&mut out, inspected.pdu_ref);
                if !sink.to_user(&out[..n]) {
                    return Ok(done);
                }
            }
            self.stats.requests += 1;
            inspected.seq = self.stats.requests as u32;
            match inspected.verdict {
                Verdict::Transport | Verdict::Allowed { .. } => self.stats.allowed += 1,
                Verdict::Denied { .. } | Verdict::Flood { .. } => self.stats.denied += 1,
                Verdict::Malformed { .. } => self.stats.malformed += 1,
            }
            match inspected.verdict {
                Verdict::Allowed { rule } if inspected.function == wire::REQUEST_DOWNLOAD => self.download = Some(rule),
                _ if inspected.function == wire::DOWNLOAD_ENDED && reply == Reply::None => self.download = None,
                _ => {}
            }
            if forward && reply.expects_answer() {
                self.pending[self.outstanding] = Pending {
                    pdu_ref: inspected.pdu_ref,
                    userdata: matches!(reply, Reply::Userdata(..)),
                    seq: inspected.seq,
                    sent_at: now,
                };
                self.outstanding += 1;
            }
            on(&inspected, &self.up.data[..len]);
            self.up.consume(len);
            done += 1;
        }
    }

    /// Matches every complete unit in the asset's buffer to its request and
    /// forwards it; drops (and counts) unsolicited acknowledgements. `on`
    /// hears what each was and its bytes.
    ///
    /// # Errors
    /// The asset's stream cannot be framed any more: close the session.
    fn responses(
        &mut self,
        sink: &mut dyn Sink,
        now: u64,
        on: &mut dyn FnMut(Answer, &[u8]),
    ) -> Result<usize, Anomaly> {
        let mut done = 0;
        loop {
            let len = match Framer::next(&self.down.data[..self.down.len]) {
                Progress::Done { len } => len,
                Progress::NeedMore => return Ok(done),
                Progress::Reject(anomaly) => return Err(anomaly),
            };
            let kind = match Unit::parse(&self.down.data[..len], &mut self.scratch) {
                // The PLC confirms, refuses or ends the connection.
                Some(Unit::Connection(Tpdu::ConnectRequest)) => return Err(Anomaly::BadTpdu(self.down.data[5])),
                Some(Unit::Connection(_)) => FromAsset::Unsolicited,
                Some(Unit::Data(pdu)) => match Pdu::parse(pdu) {
                    Ok(p) if p.rosctr == wire::ACK || p.rosctr == wire::ACK_DATA => FromAsset::Ack(p.pdu_ref, false),
                    // The PLC pulling block data during an allowed download.
                    Ok(p)
                        if p.rosctr == wire::JOB
                            && self.download.is_some()
                            && self.asset_open < MAX_ASSET_JOBS
                            && matches!(p.param.first(), Some(&(wire::DOWNLOAD_BLOCK | wire::DOWNLOAD_ENDED))) =>
                    {
                        FromAsset::Job(p.pdu_ref, p.param[0])
                    }
                    Ok(p) => match p.userdata() {
                        Some(u) if u.kind == 0 => FromAsset::Unsolicited,
                        Some(u) if u.kind == 8 => FromAsset::Ack(p.pdu_ref, true),
                        _ => FromAsset::Stray,
                    },
                    Err(_) => FromAsset::Stray,
                },
                None => return Err(Anomaly::BadSegmentation),
            };
            let matched = match kind {
                FromAsset::Ack(pdu_ref, userdata) => {
                    self.pending[..self.outstanding].iter().position(|p| p.pdu_ref == pdu_ref && p.userdata == userdata)
                }
                _ => None,
            };
            let answer = match (kind, matched) {
                (FromAsset::Ack(..), Some(k)) => {
                    Answer::Matched { seq: self.pending[k].seq, latency: now.saturating_sub(self.pending[k].sent_at) }
                }
                (FromAsset::Ack(..) | FromAsset::Stray, _) => Answer::Unmatched,
                (FromAsset::Unsolicited | FromAsset::Job(..), _) => Answer::Unsolicited,
            };
            if answer == Answer::Unmatched {
                self.stats.unmatched += 1;
            } else {
                if !sink.to_user(&self.down.data[..len]) {
                    return Ok(done);
                }
                if let Some(k) = matched {
                    self.pending.copy_within(k + 1..self.outstanding, k);
                    self.outstanding -= 1;
                    self.stats.responses += 1;
                }
                if let FromAsset::Job(pdu_ref, function) = kind {
                    self.asset_jobs[self.asset_open] = (pdu_ref, function);
                    self.asset_open += 1;
                }
            }
            on(answer, &self.down.data[..len]);
            self.down.consume(len);
            done += 1;
        }
    }
}

/// What a unit from the PLC is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FromAsset {
    /// An acknowledgement (job or userdata) of PDU reference `.0`.
    Ack(u16, bool),
    /// A download job of the PLC's: PDU reference, function.
    Job(u16, u8),
    /// A connection TPDU or a userdata push.
    Unsolicited,
    /// Anything else: a request the PLC has no business sending, garbage.
    Stray,
}

/// How the gate answers a request it does not forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// Connection TPDUs: always forwarded, never answered.
    None,
    /// Setup communication: always forwarded (answered only when flooding).
    Setup,
    /// Read or write variables: function, item count.
    Items(u8, u8),
    /// Another job: function, header error.
    JobError(u8, u16),
    /// A userdata request and the error for its response.
    Userdata(Userdata, u16),
}

impl Reply {
    /// How a denial of `request` is answered.
    fn of(request: &Request) -> Self {
        match *request {
            Request::Variables { function, items, .. } => Self::Items(function, items),
            Request::Userdata(u) => Self::Userdata(u, wire::ERR_PROTECTION),
            Request::Pi(_) => Self::JobError(wire::PI_SERVICE, wire::ERR_ACCESS_REFUSED),
            Request::Job { function } => Self::JobError(function, wire::ERR_ACCESS_REFUSED),
            Request::Setup { .. } => Self::Setup,
        }
    }

    /// The same refusal with `error` instead (an item refusal becomes a
    /// job error of `function` unless `error` is the item code).
    fn with_error(self, function: u8, error: u16) -> Self {
        match self {
            Self::Items(..) if error == u16::from(wire::ITEM_ACCESS_DENIED) => self,
            Self::Userdata(u, _) => Self::Userdata(u, error),
            _ => Self::JobError(function, error),
        }
    }

    /// The error a denial is answered with.
    fn error(self) -> u16 {
        match self {
            Self::Items(..) => u16::from(wire::ITEM_ACCESS_DENIED),
            Self::JobError(_, e) | Self::Userdata(_, e) => e,
            Self::None | Self::Setup => wire::ERR_ACCESS_REFUSED,
        }
    }

    /// Whether the PLC answers the request when forwarded.
    fn expects_answer(self) -> bool {
        self != Self::None
    }

    /// Writes the refusal for PDU `pdu_ref`; returns its length.
    fn emit(self, out: &mut [u8], pdu_ref: u16) -> usize {
        match self {
            Self::Items(function, items) => {
                wire::emit_item_refusal(out, pdu_ref, function, items, wire::ITEM_ACCESS_DENIED)
            }
            Self::JobError(function, error) => wire::emit_job_error(out, pdu_ref, function, error),
            Self::Userdata(u, error) => wire::emit_userdata_error(out, pdu_ref, u, error),
            Self::None | Self::Setup => {
                wire::emit_job_error(out, pdu_ref, wire::SETUP_COMMUNICATION, wire::ERR_NO_RESOURCES)
            }
        }
    }
}

/// The refusal the gate sent for the unit `unit` with `error` (as the audit
/// trail records it), rebuilt for the capture: the PLC never saw the
/// request, so the capture shows the gate's answer. Returns its length in
/// `out`; `None` if `unit` is not an S7 request.
pub fn refusal(unit: &[u8], function: u8, error: u16, out: &mut [u8; MAX_REFUSAL]) -> Option<usize> {
    let mut scratch = [0u8; MAX_PDU];
    let (pdu, whole) = match Unit::parse(unit, &mut scratch) {
        Some(Unit::Data(pdu)) => (pdu, true),
        Some(Unit::Connection(_)) => return None,
        // The audit keeps a long unit's start in the request record: the
        // header is enough for the refusal.
        None => (unit.get(7..)?, false),
    };
    let pdu_ref = u16::from_be_bytes([*pdu.get(4)?, *pdu.get(5)?]);
    let request = if whole { Pdu::parse(pdu).ok().and_then(|p| Request::parse(&p).ok()) } else { None };
    let reply = match request {
        Some(request) => Reply::of(&request).with_error(function, error),
        None if matches!(function, wire::READ_VAR | wire::WRITE_VAR) && pdu.first() == Some(&wire::PROTOCOL_ID) => {
            Reply::Items(function, *pdu.get(11)?).with_error(function, error)
        }
        None => Reply::JobError(function, error),
    };
    Some(reply.emit(out, pdu_ref))
}

/// The operation a userdata request is (see the module's table).
fn userdata_op(u: Userdata) -> Op {
    match u.group {
        wire::GROUP_CYCLIC => Op::Read,
        wire::GROUP_BLOCKS | wire::GROUP_CPU => Op::Diagnostic,
        wire::GROUP_PROGRAMMER => Op::Control,
        // Clock: 1 read, 2 set, 3 read (following), 4 set (following).
        wire::GROUP_TIME if u.subfunction == 2 || u.subfunction == 4 => Op::Control,
        wire::GROUP_TIME => Op::Diagnostic,
        _ => Op::Other,
    }
}

#[cfg(test)]
mod tests;
