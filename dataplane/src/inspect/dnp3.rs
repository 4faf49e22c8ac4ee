//! DNP3 inspection and enforcement, per request, inline.
//!
//! The master's plaintext stream is framed into link frames with
//! [`wire::dnp3::Framer`] (every CRC checked). Link-layer frames (reset
//! link, test link, link status, ACKs) and application confirms are
//! transport: forwarded unchecked. A request is decided on its fragment's
//! first transport segment, which carries the application header; the
//! fragment's later segments share its fate. Function codes map to
//! operations:
//!
//! | function                                             | operation    |
//! |------------------------------------------------------|--------------|
//! | read; enable/disable unsolicited; assign class       | `read`       |
//! | write (except time and IIN objects, groups 50 and 80) | `write`      |
//! | write of time or IIN; delay measure; record current time | `diagnostic` |
//! | select, operate, direct operate (+ no ack); freezes  | `control`    |
//! | cold/warm restart; initialize, start, stop application | `control`  |
//! | save configuration; file transfer; activate configuration | `program` |
//! | authentication and anything else                     | `other`      |
//!
//! Allowed requests go to the outstation unchanged. Denied ones are
//! answered by the gate as the outstation refuses a function it does not
//! perform: a response (0x81) with the request's application sequence and
//! IIN2.0 (function code not supported), from the outstation's address to
//! the master's (and a link ACK first if the frame asked for one). The
//! "no acknowledgement" functions are refused without an answer, as they
//! expect none. The outstation's responses are matched to the waiting
//! request by application sequence (later fragments of a response and
//! unsolicited responses pass); other responses are dropped and counted.
//! A stream with a bad frame (start bytes, length, any CRC) ends the session.
//!
//! Buffers are fixed (two frames per direction). Nothing here allocates.

use super::{Answer, Buf, Inspected, Sink, UnitInspector, Verdict};
use crate::inspect::modbus::InspectStats;
use crate::policy::{Decision, Op};
use crate::wire::dnp3::{self as wire, Anomaly, AppHeader, Frame, Framer, Progress, Segment, MAX_FRAME, MAX_USER};

/// What happens to the rest of a fragment from the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fate {
    forward: bool,
    function: u8,
    op: Op,
    verdict: Verdict,
    app_seq: u8,
}

/// The request waiting for its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    app_seq: u8,
    seq: u32,
    sent_at: u64,
}

/// One session's DNP3 inspector.
pub struct Dnp3Inspector {
    up: Buf<{ 2 * MAX_FRAME }>,
    down: Buf<{ 2 * MAX_FRAME }>,
    user: [u8; MAX_USER],
    /// The fragment the master is sending, decided on its first segment.
    up_fragment: Option<Fate>,
    waiting: Option<Waiting>,
    /// The outstation is sending a response fragment the gate forwards
    /// (its later segments follow it).
    down_forwarding: bool,
    /// The response's final fragment has not come yet.
    more_fragments: bool,
    /// IIN1 as the outstation last reported it (restart, need time, events
    /// ...), for the gate's own responses.
    iin1: u8,
    pub stats: InspectStats,
}

impl Default for Dnp3Inspector {
    fn default() -> Self {
        Self::new()
    }
}

impl Dnp3Inspector {
    pub const fn new() -> Self {
        Self {
            up: Buf::new(),
            down: Buf::new(),
            user: [0; MAX_USER],
            up_fragment: None,
            waiting: None,
            down_forwarding: false,
            more_fragments: false,
            iin1: 0,
            stats: InspectStats { requests: 0, allowed: 0, denied: 0, malformed: 0, responses: 0, unmatched: 0 },
        }
    }

    /// Reads and decides the frame `up[..len]`: what happened, the answer
    /// to write to the master instead of forwarding, and whether the frame
    /// starts a fragment.
    fn inspect(&mut self, len: usize, decide: &mut dyn FnMut(Op) -> Decision) -> (Inspected, Refusal, bool) {
        let mut i = Inspected {
            seq: 0,
            pdu_ref: 0,
            function: 0,
            subfunction: 0,
            op: Op::Other,
            item: None,
            verdict: Verdict::Transport,
        };
        let Some(frame) = Frame::parse(&self.up.data[..len], &mut self.user) else {
            // The framer accepted it: cannot happen.
            i.verdict = Verdict::Malformed { error: u16::from(wire::IIN2_PARAMETER_ERROR) };
            return (i, Refusal::Drop, false);
        };
        if !frame.carries_data() {
            // Link layer: reset, test, link status (primary, 0xf0 | link
            // function), ACK/NACK, status (secondary, 0xe0 | function).
            i.function = if frame.control & wire::PRM != 0 { 0xf0 } else { 0xe0 } | frame.function();
            return (i, Refusal::None, false);
        }
        let Some(segment) = Segment::parse(frame.user) else { return (i, Refusal::None, false) };
        if !segment.fir {
            // A later segment shares its fragment's fate; one with no
            // fragment started is dropped.
            return match self.up_fragment {
                Some(f) => {
                    let i = Inspected {
                        pdu_ref: f.app_seq.into(),
                        function: f.function,
                        op: f.op,
                        verdict: f.verdict,
                        ..i
                    };
                    (i, if f.forward { Refusal::None } else { Refusal::Drop }, false)
                }
                None => {
                    let error = u16::from(wire::IIN2_PARAMETER_ERROR);
                    (Inspected { verdict: Verdict::Malformed { error }, ..i }, Refusal::Drop, false)
                }
            };
        }
        let Some(app) = segment.app else {
            // A first segment too short for an application header: no
            // sequence to answer with.
            self.up_fragment = None;
            let error = u16::from(wire::IIN2_PARAMETER_ERROR);
            return (Inspected { verdict: Verdict::Malformed { error }, ..i }, Refusal::Drop, false);
        };
        i.function = app.function;
        i.pdu_ref = app.seq.into();
        let (verdict, refusal) = if app.function == wire::CONFIRM {
            (Verdict::Transport, Refusal::None)
        } else {
            i.op = op_of(&app);
            match decide(i.op) {
                Decision::Permit(p) => (Verdict::Allowed { rule: p.rule }, Refusal::None),
                Decision::Deny(denial) => {
                    let iin = [self.iin1, wire::IIN2_NO_FUNC_CODE_SUPPORT];
                    (
                        Verdict::Denied { denial, error: u16::from_be_bytes(iin) },
                        Refusal::for_request(&frame, &app, iin),
                    )
                }
            }
        };
        i.verdict = verdict;
        (i, refusal, true)
    }

    /// Records the fragment's fate and the request now waiting.
    fn started(&mut self, i: &Inspected, forward: bool, now: u64) {
        let app_seq = i.pdu_ref as u8;
        self.up_fragment = Some(Fate { forward, function: i.function, op: i.op, verdict: i.verdict, app_seq });
        if forward && i.function != wire::CONFIRM && expects_response(i.function) {
            self.waiting = Some(Waiting { app_seq, seq: i.seq, sent_at: now });
            self.more_fragments = false;
        }
    }

    /// What a frame from the outstation is, and whether it is forwarded.
    fn answer(&mut self, len: usize, now: u64) -> Answer {
        let Some(frame) = Frame::parse(&self.down.data[..len], &mut self.user) else { return Answer::Unmatched };
        if !frame.carries_data() {
            return Answer::Unsolicited;
        }
        let Some(segment) = Segment::parse(frame.user) else { return Answer::Unmatched };
        if !segment.fir {
            return if self.down_forwarding { Answer::Unsolicited } else { Answer::Unmatched };
        }
        let Some(app) = segment.app else {
            self.down_forwarding = false;
            return Answer::Unmatched;
        };
        if matches!(app.function, wire::RESPONSE | wire::UNSOLICITED_RESPONSE) {
            // Broadcast is per message, not the outstation's state.
            self.iin1 = app.iin[0] & !0x01;
        }
        let answer = match app.function {
            wire::UNSOLICITED_RESPONSE | wire::AUTH_RESPONSE => Answer::Unsolicited,
            wire::RESPONSE => match self.waiting {
                Some(w) if w.app_seq == app.seq => {
                    self.waiting = None;
                    self.more_fragments = !app.fin;
                    Answer::Matched { seq: w.seq, latency: now.saturating_sub(w.sent_at) }
                }
                // A multi-fragment response's later fragments.
                _ if self.more_fragments && !app.fir => {
                    self.more_fragments = !app.fin;
                    Answer::Unsolicited
                }
                _ => Answer::Unmatched,
            },
            // An outstation does not send requests.
            _ => Answer::Unmatched,
        };
        self.down_forwarding = answer != Answer::Unmatched && !segment.fin;
        answer
    }
}

/// How the gate answers a frame it does not forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Forwarded (no refusal).
    None,
    /// Dropped without an answer.
    Drop,
    /// Answered with a link ACK only (a confirmed frame whose request
    /// expects no response).
    LinkAck { addresses: (u16, u16) },
    /// Answered with a response carrying `iin` (and a link ACK before it
    /// when the frame asked for one). Addresses: (master, outstation).
    Answer { addresses: (u16, u16), app_seq: u8, link_ack: bool, iin: [u8; 2] },
}

impl Refusal {
    /// How a denied request is answered: a response when it expects one
    /// (after a link ACK if the frame asked for one), else a link ACK or
    /// nothing.
    fn for_request(frame: &Frame<'_>, app: &AppHeader, iin: [u8; 2]) -> Self {
        let addresses = (frame.src, frame.dest);
        let confirmed = frame.function() == wire::LINK_CONFIRMED_USER_DATA;
        if expects_response(app.function) {
            Self::Answer { addresses, app_seq: app.seq, link_ack: confirmed, iin }
        } else if confirmed {
            Self::LinkAck { addresses }
        } else {
            Self::Drop
        }
    }

    /// Writes the answer into `out`; returns its length (0: none).
    fn emit(self, out: &mut [u8; MAX_REFUSAL]) -> usize {
        match self {
            Self::None | Self::Drop => 0,
            Self::LinkAck { addresses: (master, outstation) } => wire::emit_link_ack(out, master, outstation),
            Self::Answer { addresses: (master, outstation), app_seq, link_ack, iin } => {
                let n = if link_ack { wire::emit_link_ack(out, master, outstation) } else { 0 };
                n + wire::emit_refusal(&mut out[n..], master, outstation, app_seq, iin)
            }
        }
    }
}

/// The most bytes a refusal takes: a link ACK and a response frame.
pub const MAX_REFUSAL: usize = 2 * MAX_FRAME;

/// The answer the gate sent for the refused frame `frame` with `error`
/// (IIN1 << 8 | IIN2, as the audit trail records it), rebuilt for the
/// capture (the outstation never saw the request). `None` when the frame
/// got no answer (not a fragment's first segment, or a request that
/// expects no response).
pub fn refusal(frame: &[u8], error: u16, out: &mut [u8; MAX_REFUSAL]) -> Option<usize> {
    let mut user = [0u8; MAX_USER];
    let f = Frame::parse(frame, &mut user)?;
    let app = Segment::parse(f.user).filter(|_| f.carries_data())?.app?;
    let n = Refusal::for_request(&f, &app, error.to_be_bytes()).emit(out);
    (n > 0).then_some(n)
}

impl UnitInspector for Dnp3Inspector {
    type Anomaly = Anomaly;
    const MAX_UNIT: usize = MAX_FRAME;

    fn up_spare(&mut self) -> &mut [u8] {
        self.up.spare()
    }

    fn up_filled(&mut self, n: usize) {
        self.up.filled(n);
    }

    fn down_spare(&mut self) -> &mut [u8] {
        self.down.spare()
    }

    fn down_filled(&mut self, n: usize) {
        self.down.filled(n);
    }

    fn up_pending(&self) -> usize {
        self.up.len
    }

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
            let (mut inspected, refusal, first) = self.inspect(len, decide);
            let mut out = [0u8; MAX_REFUSAL];
            let n = refusal.emit(&mut out);
            if refusal == Refusal::None {
                if !sink.to_asset(&self.up.data[..len]) {
                    return Ok(done);
                }
            } else if n > 0 && !sink.to_user(&out[..n]) {
                return Ok(done);
            }
            self.stats.requests += 1;
            inspected.seq = self.stats.requests as u32;
            match inspected.verdict {
                Verdict::Transport | Verdict::Allowed { .. } => self.stats.allowed += 1,
                Verdict::Denied { .. } | Verdict::Flood { .. } => self.stats.denied += 1,
                Verdict::Malformed { .. } => self.stats.malformed += 1,
            }
            if first {
                self.started(&inspected, refusal == Refusal::None, now);
            }
            on(&inspected, &self.up.data[..len]);
            self.up.consume(len);
            done += 1;
        }
    }

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
            // Decided once: a frame kept for lack of room is not matched twice.
            let state = (self.waiting, self.down_forwarding, self.more_fragments);
            let answer = self.answer(len, now);
            if answer == Answer::Unmatched {
                self.stats.unmatched += 1;
            } else {
                if !sink.to_user(&self.down.data[..len]) {
                    (self.waiting, self.down_forwarding, self.more_fragments) = state;
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
    }
}

/// Whether the outstation answers `function` (the `_NR` / no-ack ones and
/// confirms get no response).
fn expects_response(function: u8) -> bool {
    !matches!(
        function,
        wire::CONFIRM
            | wire::DIRECT_OPERATE_NR
            | wire::IMMED_FREEZE_NR
            | wire::FREEZE_CLEAR_NR
            | wire::FREEZE_AT_TIME_NR
            | wire::AUTH_REQUEST_NO_ACK
    )
}

/// The operation a request is (see the module's table).
fn op_of(app: &AppHeader) -> Op {
    match app.function {
        wire::READ | wire::ENABLE_UNSOLICITED | wire::DISABLE_UNSOLICITED | wire::ASSIGN_CLASS => Op::Read,
        // Time synchronisation and clearing the restart bit.
        wire::WRITE if matches!(app.first_group, 50 | 80) => Op::Diagnostic,
        wire::WRITE => Op::Write,
        wire::DELAY_MEASURE | wire::RECORD_CURRENT_TIME => Op::Diagnostic,
        wire::SELECT..=wire::FREEZE_AT_TIME_NR => Op::Control,
        wire::COLD_RESTART..=0x12 => Op::Control,
        wire::SAVE_CONFIG | wire::OPEN_FILE..=wire::ABORT_FILE | wire::ACTIVATE_CONFIG => Op::Program,
        _ => Op::Other,
    }
}

#[cfg(test)]
mod tests;
