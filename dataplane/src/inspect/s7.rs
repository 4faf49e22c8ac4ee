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
//! | PI `_INSE`, `_DELE`, `_MODU`, unknown PI  | `program`    |
//! | PI start `P_PROGRAM`, `_GARB`, PLC stop   | `control`    |
//! | userdata: block list/info, SZL, message service subscription, alarm query, read clock | `diagnostic` |
//! | userdata: cyclic data                     | `read`       |
//! | userdata: programmer commands, alarm lock/unlock/ack, set clock | `control` |
//! | userdata: security (passwords), any subfunction not named above; other jobs | `other` |
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

use super::{forwards, Protocol, Units, MAX_REFUSAL};
use super::{Answer, Inspected, Verdict};

// The largest refusal fits the shared buffer.
const _: () = assert!(wire::MAX_REFUSAL <= MAX_REFUSAL);
use crate::policy::{Decision, Op};
use crate::wire::s7::{
    self as wire, Anomaly, Framer, Pdu, PiService, Request, Tpdu, Unit, Userdata, MAX_PDU, MAX_UNIT,
};

/// Outstanding requests per session; more is a flood (anomaly). CPUs grant
/// 1..=8 parallel jobs (max AmQ).
pub const MAX_OUTSTANDING: usize = 16;

/// A request forwarded and not yet answered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pending {
    pdu_ref: u16,
    userdata: bool,
    seq: u32,
    sent_at: u64,
    /// A request download: the rule that allowed it (the download starts
    /// when the PLC accepts it).
    download: Option<u32>,
}

/// Jobs the PLC may have open towards the user during a download.
const MAX_ASSET_JOBS: usize = 4;

/// An S7comm session's inspector: [`S7`] driven by [`Units`].
pub type S7Inspector = Units<S7, MAX_UNIT>;

/// S7comm's side of an inspector: what is in flight each way.
pub struct S7 {
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
    /// The last request's refusal, and the download job it acknowledges.
    last: (Reply, Option<usize>),
}

impl Default for S7 {
    fn default() -> Self {
        Self {
            scratch: [0; MAX_PDU],
            pending: [Pending::default(); MAX_OUTSTANDING],
            outstanding: 0,
            download: None,
            asset_jobs: [(0, 0); MAX_ASSET_JOBS],
            asset_open: 0,
            last: (Reply::None, None),
        }
    }
}

impl S7 {
    /// Reads the unit and decides it (the setup's PDU size is lowered in
    /// place). Returns what happened, how a refusal is sent, and the PLC
    /// download job it acknowledges, if it does.
    fn inspect(
        &mut self,
        unit: &mut [u8],
        decide: &mut dyn FnMut(Op) -> Decision,
    ) -> Result<(Inspected, Reply, Option<usize>), Anomaly> {
        let mut i = Inspected::UNKNOWN;
        // The unit is one TPKT (not a PDU split over several).
        let single = usize::from(u16::from_be_bytes([unit[2], unit[3]])) == unit.len();
        let (code, parsed) = (unit[5], Unit::parse(unit, &mut self.scratch));
        let pdu = match parsed {
            Some(Unit::Connection(
                t @ (Tpdu::ConnectRequest | Tpdu::DisconnectRequest | Tpdu::DisconnectConfirm | Tpdu::Error),
            )) => {
                i.function = code;
                i.op = if t == Tpdu::ConnectRequest { Op::Connect } else { Op::Other };
                return Ok((i, Reply::None, None));
            }
            // A user does not confirm connections.
            Some(Unit::Connection(_)) => return Err(Anomaly::BadTpdu(code)),
            Some(Unit::Data(pdu)) => pdu,
            None => return Err(Anomaly::BadSegmentation),
        };
        let malformed = |i: Inspected, pdu: &[u8]| {
            let pdu_ref = pdu.get(4..6).map_or(0, |r| u16::from_be_bytes([r[0], r[1]]));
            let function = pdu.get(10).copied().unwrap_or(0);
            let i = Inspected { pdu_ref, function, verdict: Verdict::Malformed { error: wire::ERR_WRONG_FRAMES }, ..i };
            (i, Reply::JobError(function, wire::ERR_WRONG_FRAMES), None)
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
                let i = Inspected {
                    pdu_ref: p.pdu_ref,
                    function,
                    op: Op::Program,
                    verdict: Verdict::Allowed { rule },
                    ..i
                };
                return Ok((i, Reply::None, Some(k)));
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
                wire::clamp_setup(unit);
                let (i, reply) = self.admit(i, Reply::Setup);
                return Ok((i, reply, None));
            }
            Request::Variables { function, first, .. } => {
                i.function = function;
                i.item = first;
                let op = if function == wire::READ_VAR { Op::Read } else { Op::Write };
                (op, Reply::of(&request))
            }
            Request::Pi(service) => {
                i.function = wire::PI_SERVICE;
                let op = match service {
                    // An unknown service may change the program: ask for the most.
                    PiService::InsertBlock | PiService::DeleteBlock | PiService::CopyRamToRom | PiService::Other => {
                        Op::Program
                    }
                    PiService::Start | PiService::Compress => Op::Control,
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
        let (i, reply) = self.admit(i, reply);
        Ok((i, reply, None))
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

impl Protocol for S7 {
    type Anomaly = Anomaly;
    type Saved = ([Pending; MAX_OUTSTANDING], usize, [(u16, u8); MAX_ASSET_JOBS], usize, Option<u32>);
    const MAX_UNIT: usize = MAX_UNIT;

    fn frame(buf: &[u8]) -> Result<Option<usize>, Anomaly> {
        Framer::next(buf).into_result()
    }

    fn request(
        &mut self,
        unit: &mut [u8],
        decide: &mut dyn FnMut(Op) -> Decision,
        out: &mut [u8; MAX_REFUSAL],
    ) -> Result<(Inspected, Option<usize>), Anomaly> {
        let (i, reply, job) = self.inspect(unit, decide)?;
        self.last = (reply, job);
        let answer = if forwards(i.verdict) { None } else { Some(reply.emit(out, i.pdu_ref)) };
        Ok((i, answer))
    }

    fn sent(&mut self, i: &Inspected, now: u64) {
        let (reply, job) = self.last;
        if let Some(k) = job {
            self.asset_jobs.copy_within(k + 1..self.asset_open, k);
            self.asset_open -= 1;
        }
        if i.function == wire::DOWNLOAD_ENDED && job.is_some() {
            self.download = None;
        }
        if forwards(i.verdict) && reply.expects_answer() {
            let download = match i.verdict {
                Verdict::Allowed { rule } if i.function == wire::REQUEST_DOWNLOAD => Some(rule),
                _ => None,
            };
            self.pending[self.outstanding] = Pending {
                pdu_ref: i.pdu_ref,
                userdata: matches!(reply, Reply::Userdata(..)),
                seq: i.seq,
                sent_at: now,
                download,
            };
            self.outstanding += 1;
        }
    }

    fn expire(&mut self, deadline: u64) {
        let mut k = 0;
        while k < self.outstanding {
            if self.pending[k].sent_at <= deadline {
                self.pending.copy_within(k + 1..self.outstanding, k);
                self.outstanding -= 1;
            } else {
                k += 1;
            }
        }
    }

    fn answer(&mut self, unit: &[u8], now: u64) -> Result<Answer, Anomaly> {
        let kind = match Unit::parse(unit, &mut self.scratch) {
            // The PLC confirms, refuses or ends the connection.
            Some(Unit::Connection(Tpdu::ConnectRequest)) => return Err(Anomaly::BadTpdu(unit[5])),
            Some(Unit::Connection(_)) => FromAsset::Unsolicited,
            Some(Unit::Data(pdu)) => match Pdu::parse(pdu) {
                Ok(p) if p.rosctr == wire::ACK || p.rosctr == wire::ACK_DATA => {
                    FromAsset::Ack(p.pdu_ref, false, p.error)
                }
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
                    Some(u) if u.kind == 8 => FromAsset::Ack(p.pdu_ref, true, 0),
                    _ => FromAsset::Stray,
                },
                Err(_) => FromAsset::Stray,
            },
            None => return Err(Anomaly::BadSegmentation),
        };
        Ok(match kind {
            FromAsset::Ack(pdu_ref, userdata, error) => {
                let pending = &self.pending[..self.outstanding];
                match pending.iter().position(|p| p.pdu_ref == pdu_ref && p.userdata == userdata) {
                    Some(k) => {
                        let p = self.pending[k];
                        self.pending.copy_within(k + 1..self.outstanding, k);
                        self.outstanding -= 1;
                        // The PLC accepted a download the policy allowed: it
                        // may now pull the block; a refused one never starts.
                        if let (Some(rule), 0) = (p.download, error) {
                            self.download = Some(rule);
                        }
                        Answer::Matched { seq: p.seq, latency: now.saturating_sub(p.sent_at) }
                    }
                    None => Answer::Unmatched,
                }
            }
            FromAsset::Job(pdu_ref, function) => {
                self.asset_jobs[self.asset_open] = (pdu_ref, function);
                self.asset_open += 1;
                Answer::Unsolicited
            }
            FromAsset::Unsolicited => Answer::Unsolicited,
            FromAsset::Stray => Answer::Unmatched,
        })
    }

    fn save(&self) -> Self::Saved {
        (self.pending, self.outstanding, self.asset_jobs, self.asset_open, self.download)
    }

    fn restore(&mut self, saved: Self::Saved) {
        (self.pending, self.outstanding, self.asset_jobs, self.asset_open, self.download) = saved;
    }
}

/// What a unit from the PLC is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FromAsset {
    /// An acknowledgement (job or userdata) of PDU reference `.0`, with
    /// its header error.
    Ack(u16, bool, u16),
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
            Request::Variables { function, items, .. } if wire::item_refusal_fits(function, items) => {
                Self::Items(function, items)
            }
            // More items than an answer can list: refused as a whole.
            Request::Variables { function, .. } => Self::JobError(function, wire::ERR_ACCESS_REFUSED),
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
            let items = *pdu.get(11)?;
            let reply = if wire::item_refusal_fits(function, items) {
                Reply::Items(function, items)
            } else {
                Reply::JobError(function, wire::ERR_ACCESS_REFUSED)
            };
            reply.with_error(function, error)
        }
        None => Reply::JobError(function, error),
    };
    Some(reply.emit(out, pdu_ref))
}

/// The operation a userdata request is (see the module's table). Only the
/// subfunctions named are read as what they are; any other is `other`, so
/// one the gate does not know is never let through as a mere read.
fn userdata_op(u: Userdata) -> Op {
    match (u.group, u.subfunction) {
        (wire::GROUP_CYCLIC, _) => Op::Read,
        // Block functions: 1 list blocks, 2 list blocks of a type, 3 block info.
        (wire::GROUP_BLOCKS, 1..=3) => Op::Diagnostic,
        // CPU functions: 1 read SZL, 2 message service (subscribe to
        // alarms and events), 0x13 alarm query; 7 ALARM_8 lock, 8 ALARM_8
        // unlock and 0x0b alarm acknowledge change the CPU's alarm state.
        (wire::GROUP_CPU, 1 | 2 | 0x13) => Op::Diagnostic,
        (wire::GROUP_CPU, 7 | 8 | 0x0b) => Op::Control,
        (wire::GROUP_PROGRAMMER, _) => Op::Control,
        // Clock: 1 read, 2 set, 3 read (following), 4 set (following).
        (wire::GROUP_TIME, 1 | 3) => Op::Diagnostic,
        (wire::GROUP_TIME, 2 | 4) => Op::Control,
        _ => Op::Other,
    }
}

#[cfg(test)]
mod tests;
