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
//! | read                                                 | `read`       |
//! | write (anything but a lone time or IIN object)       | `write`      |
//! | write of just the time (g50v1/v3) or IIN bits (g80v1), in one segment; delay measure; record current time | `diagnostic` |
//! | select, operate, direct operate (+ no ack); freezes  | `control`    |
//! | enable/disable unsolicited; assign class (what the outstation reports, to every master) | `control` |
//! | cold/warm restart; initialize, start, stop application | `control`  |
//! | save configuration; file transfer; activate configuration | `program` |
//! | authentication and anything else                     | `other`      |
//!
//! Allowed requests go to the outstation unchanged. Denied ones are
//! answered by the gate as the outstation would, from the outstation's
//! address to the master's (and after a link ACK if the frame asked for
//! one): a select, operate or direct operate of control relay output
//! blocks or analog output blocks, whole in one segment, gets a response
//! (0x81) echoing its objects with each status set to 9, not authorized, as
//! an outstation answers a control it will not perform; anything else gets
//! a response with the request's application sequence and IIN2.0 (function
//! code not supported), as it refuses a function it does not perform. The
//! "no acknowledgement" functions are refused without an answer, as they
//! expect none. A fragment in several transport segments is answered after
//! its last, as an outstation answers once it has the whole fragment (the
//! earlier frames get only their link ACK when they ask for one). The
//! outstation's responses are matched to the waiting request by
//! application sequence (later fragments of a response and unsolicited
//! responses pass); other responses are dropped and counted.
//! A stream with a bad frame (start bytes, length, any CRC) ends the session.
//!
//! In confirmed mode the link layer counts frames (the FCB alternates and a
//! frame with the last one's FCB is a repeat). A frame the gate answers
//! itself is counted by the master but never reaches the outstation, so
//! the gate keeps the outstation's count: it rewrites the FCB (and the
//! header CRC) of the frames it forwards to the one the outstation expects,
//! and gives a repeat the FCB it gave the original. A repeated later
//! segment (the master missed the ACK of its last frame) shares its
//! original's fate: forwarded again, or ACKed again.
//!
//! Buffers are fixed (two frames per direction). Nothing here allocates.

use super::{forwards, Answer, Inspected, Protocol, Units, Verdict, MAX_REFUSAL};
use crate::policy::{Decision, Op};
use crate::wire::dnp3::{self as wire, Anomaly, AppHeader, Frame, Framer, Segment, MAX_FRAME, MAX_USER};

/// What happens to the rest of a fragment from the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fate {
    forward: bool,
    function: u8,
    op: Op,
    verdict: Verdict,
    app_seq: u8,
    /// The transport sequence the next segment must carry.
    next_seq: u8,
    /// A refused fragment's response (its IIN), sent at its last segment:
    /// an outstation answers a fragment once it has all of it.
    respond: Option<[u8; 2]>,
}

/// The link layer's frame count, master to outstation: the FCB of the
/// master's last counted frame, and the FCB the outstation last got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LinkCount {
    master: Option<bool>,
    sent: Option<bool>,
}

impl LinkCount {
    /// Whether a confirmed frame with `control` repeats the master's last
    /// counted frame (its FCB did not alternate).
    fn repeats(self, control: u8) -> bool {
        control & 0x0f == wire::LINK_CONFIRMED_USER_DATA
            && control & wire::FCV != 0
            && self.master == Some(control & wire::FCB != 0)
    }
}

/// The request waiting for its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    app_seq: u8,
    seq: u32,
    sent_at: u64,
}

/// A DNP3 session's inspector: [`Dnp3`] driven by [`Units`].
pub type Dnp3Inspector = Units<Dnp3, { 2 * MAX_FRAME }>;

/// DNP3's side of an inspector: the fragments and the request in flight.
pub struct Dnp3 {
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
    /// The last unit's transport segment (first?, last?, sequence), if it
    /// carried one that counts.
    segment: Option<(bool, bool, u8)>,
    /// The last unit's response, when it is a refused fragment's first
    /// segment and the response waits for the last.
    deferred: Option<[u8; 2]>,
    link: LinkCount,
    /// The master's last transport segment that counted (its sequence) and
    /// its fragment's fate: what a link-layer repeat of it shares.
    last_segment: Option<(u8, Fate)>,
    /// What the last unit does to `link`, made when it is sent. `Some`
    /// between `request` and `sent`: a unit decided again (it found no
    /// room) may have been rewritten, and is put back first.
    link_step: Option<LinkStep>,
}

/// What a unit does to the link count: its control byte as the master
/// sent it, and the count after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinkStep {
    control: u8,
    count: Option<LinkCount>,
}

impl Default for Dnp3 {
    fn default() -> Self {
        Self {
            user: [0; MAX_USER],
            up_fragment: None,
            waiting: None,
            down_forwarding: false,
            more_fragments: false,
            iin1: 0,
            segment: None,
            deferred: None,
            link: LinkCount::default(),
            last_segment: None,
            link_step: None,
        }
    }
}

impl Dnp3 {
    /// Reads and decides the frame `unit`: what happened, the answer to
    /// write to the master instead of forwarding, and the transport segment
    /// it carries (first?, last?, sequence) when that segment counts.
    fn inspect(
        &mut self,
        unit: &[u8],
        decide: &mut dyn FnMut(Op) -> Decision,
    ) -> (Inspected, Refusal, Option<(bool, bool, u8)>) {
        let mut i = Inspected::UNKNOWN;
        let Some(frame) = Frame::parse(unit, &mut self.user) else {
            // The framer accepted it: cannot happen.
            i.verdict = Verdict::Malformed { error: u16::from(wire::IIN2_PARAMETER_ERROR) };
            return (i, Refusal::Drop, None);
        };
        if !frame.carries_data() {
            // Link layer: reset, test, link status (primary, 0xf0 | link
            // function), ACK/NACK, status (secondary, 0xe0 | function).
            i.function = if frame.control & wire::PRM != 0 { 0xf0 } else { 0xe0 } | frame.function();
            return (i, Refusal::None, None);
        }
        let Some(segment) = Segment::parse(frame.user) else { return (i, Refusal::None, None) };
        if !segment.fir {
            // A later segment shares its fragment's fate; one with no
            // fragment started is dropped.
            // (It must carry the next transport sequence: a segment out of
            // order, or after the fragment's last, belongs to nothing.)
            let fate = match self.up_fragment {
                Some(f) if segment.seq == f.next_seq => Some((f, Some((false, segment.fin, segment.seq)))),
                // The master's link layer sends its last counted frame again
                // when it missed the ACK (same FCB, same segment): a repeat
                // shares its original's fate and leaves the transport as it
                // was. The outstation ACKs and discards a forwarded one (the
                // link count gives it the original's FCB); the gate ACKs a
                // refused one again.
                _ => {
                    let repeat = self.link.repeats(frame.control);
                    self.last_segment.filter(|&(seq, _)| repeat && seq == segment.seq).map(|(_, f)| (f, None))
                }
            };
            return match fate {
                Some((f, counts)) => {
                    let i = Inspected {
                        pdu_ref: f.app_seq.into(),
                        function: f.function,
                        op: f.op,
                        verdict: f.verdict,
                        ..i
                    };
                    // A refused fragment's later frames still get their link
                    // ACK when they asked for one: the master's link layer
                    // waits for it. Its last gets the response too (again,
                    // for a repeat: the master may have missed both).
                    let refusal = match (f.forward, f.respond) {
                        (true, _) => Refusal::None,
                        (false, Some(iin)) if segment.fin => Refusal::last_segment(&frame, f.app_seq, iin),
                        (false, _) => Refusal::later_segment(&frame),
                    };
                    (i, refusal, counts)
                }
                None => {
                    let error = u16::from(wire::IIN2_PARAMETER_ERROR);
                    (Inspected { verdict: Verdict::Malformed { error }, ..i }, Refusal::Drop, None)
                }
            };
        }
        let Some(app) = segment.app else {
            // A first segment too short for an application header: no
            // sequence to answer with.
            self.up_fragment = None;
            let error = u16::from(wire::IIN2_PARAMETER_ERROR);
            return (Inspected { verdict: Verdict::Malformed { error }, ..i }, Refusal::Drop, None);
        };
        i.function = app.function;
        i.pdu_ref = app.seq.into();
        let (verdict, refusal) = if app.function == wire::CONFIRM {
            (Verdict::Transport, Refusal::None)
        } else {
            // A whole fragment in this one segment: its objects are all here.
            let whole = segment.fin && app.fin;
            let objects = frame.user.get(3..).filter(|_| whole);
            i.op = op_of(&app, objects);
            match decide(i.op) {
                Decision::Permit(p) => (Verdict::Allowed { rule: p.rule }, Refusal::None),
                Decision::Deny(denial) => {
                    let refusal = Refusal::for_request(&frame, &app, objects, self.iin1);
                    (Verdict::Denied { denial, error: u16::from_be_bytes(refusal.iin(self.iin1)) }, refusal)
                }
            }
        };
        // A refused fragment that goes on in later segments is answered at
        // its last: now only the link ACK.
        let (refusal, deferred) = match refusal {
            Refusal::Answer { iin, .. } if !segment.fin => (Refusal::later_segment(&frame), Some(iin)),
            r => (r, None),
        };
        self.deferred = deferred;
        i.verdict = verdict;
        (i, refusal, Some((true, segment.fin, segment.seq)))
    }

    /// Records the fragment's fate and the request now waiting.
    fn started(&mut self, i: &Inspected, forward: bool, now: u64, next_seq: u8) {
        let app_seq = i.pdu_ref as u8;
        let respond = self.deferred.take();
        self.up_fragment =
            Some(Fate { forward, function: i.function, op: i.op, verdict: i.verdict, app_seq, next_seq, respond });
        if forward && i.function != wire::CONFIRM && expects_response(i.function) {
            self.waiting = Some(Waiting { app_seq, seq: i.seq, sent_at: now });
            self.more_fragments = false;
        }
    }

    /// What a frame from the outstation is, and whether it is forwarded.
    fn classify(&mut self, unit: &[u8], now: u64) -> Answer {
        let Some(frame) = Frame::parse(unit, &mut self.user) else { return Answer::Unmatched };
        if !frame.carries_data() {
            return Answer::Unsolicited;
        }
        let Some(segment) = Segment::parse(frame.user) else { return Answer::Unmatched };
        if !segment.fir {
            let answer = if self.down_forwarding { Answer::Unsolicited } else { Answer::Unmatched };
            // After its last segment a fragment takes no more.
            if segment.fin {
                self.down_forwarding = false;
            }
            return answer;
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
    /// A refused control: a response echoing the request's `objects` bytes
    /// of control objects (the frame's user data from byte 3), each status
    /// set to not authorized, with IIN1 and no IIN2 bit (and a link ACK
    /// before it when the frame asked for one).
    Echo { addresses: (u16, u16), app_seq: u8, link_ack: bool, iin1: u8, objects: u8 },
}

impl Refusal {
    /// How a denied request is answered: a response when it expects one
    /// (after a link ACK if the frame asked for one), else a link ACK or
    /// nothing.
    /// `objects`: the request's objects when its fragment is this one
    /// segment; `iin1` as the outstation last reported it.
    fn for_request(frame: &Frame<'_>, app: &AppHeader, objects: Option<&[u8]>, iin1: u8) -> Self {
        let addresses = (frame.src, frame.dest);
        let (app_seq, link_ack) = (app.seq, frame.function() == wire::LINK_CONFIRMED_USER_DATA);
        let echo = matches!(app.function, wire::SELECT | wire::OPERATE | wire::DIRECT_OPERATE)
            .then_some(objects)
            .flatten()
            .filter(|o| wire::echo_controls(o, wire::STATUS_NOT_AUTHORIZED, &mut [0; MAX_USER - 5]).is_some());
        if frame.dest >= wire::BROADCAST_MIN {
            // Outstations answer broadcasts neither at the link nor above.
            Self::Drop
        } else if let Some(o) = echo {
            // At most MAX_USER - 5 bytes: it fitted the echo.
            Self::Echo { addresses, app_seq, link_ack, iin1, objects: o.len() as u8 }
        } else if expects_response(app.function) {
            Self::Answer { addresses, app_seq, link_ack, iin: [iin1, wire::IIN2_NO_FUNC_CODE_SUPPORT] }
        } else if link_ack {
            Self::LinkAck { addresses }
        } else {
            Self::Drop
        }
    }

    /// Whether the answer starts with a link ACK.
    fn acks(&self) -> bool {
        match *self {
            Self::LinkAck { .. } => true,
            Self::Answer { link_ack, .. } | Self::Echo { link_ack, .. } => link_ack,
            Self::None | Self::Drop => false,
        }
    }

    /// How a later segment of a refused fragment is answered: a link ACK
    /// if its frame asked for one (not to a broadcast), else nothing.
    fn later_segment(frame: &Frame<'_>) -> Self {
        if frame.function() == wire::LINK_CONFIRMED_USER_DATA && frame.dest < wire::BROADCAST_MIN {
            Self::LinkAck { addresses: (frame.src, frame.dest) }
        } else {
            Self::Drop
        }
    }

    /// How the last segment of a refused fragment is answered: a response
    /// with `app_seq` and `iin`, after a link ACK if its frame asked for
    /// one.
    fn last_segment(frame: &Frame<'_>, app_seq: u8, iin: [u8; 2]) -> Self {
        let link_ack = frame.function() == wire::LINK_CONFIRMED_USER_DATA;
        Self::Answer { addresses: (frame.src, frame.dest), app_seq, link_ack, iin }
    }

    /// The IIN the refusal carries (or would: the audit trail records it
    /// for every refusal).
    fn iin(&self, iin1: u8) -> [u8; 2] {
        match self {
            Self::Echo { .. } => [iin1, 0],
            _ => [iin1, wire::IIN2_NO_FUNC_CODE_SUPPORT],
        }
    }

    /// Writes the answer into `out`; returns its length (0: none). `user`:
    /// the refused frame's user data.
    fn emit(self, user: &[u8], out: &mut [u8; MAX_REFUSAL]) -> usize {
        let ack = |out: &mut [u8; MAX_REFUSAL], (master, outstation), link_ack: bool| {
            if link_ack {
                wire::emit_link_ack(out, master, outstation)
            } else {
                0
            }
        };
        match self {
            Self::None | Self::Drop => 0,
            Self::LinkAck { addresses } => ack(out, addresses, true),
            Self::Answer { addresses, app_seq, link_ack, iin } => {
                let n = ack(out, addresses, link_ack);
                n + wire::emit_refusal(&mut out[n..], addresses.0, addresses.1, app_seq, iin, &[])
            }
            Self::Echo { addresses, app_seq, link_ack, iin1, objects } => {
                let n = ack(out, addresses, link_ack);
                let objects = user.get(3..3 + usize::from(objects)).unwrap_or_default();
                let mut echo = [0u8; MAX_USER - 5];
                let len = wire::echo_controls(objects, wire::STATUS_NOT_AUTHORIZED, &mut echo).unwrap_or(0);
                n + wire::emit_refusal(&mut out[n..], addresses.0, addresses.1, app_seq, [iin1, 0], &echo[..len])
            }
        }
    }
}

// A refusal (a link ACK and a response frame) fits the shared buffer.
const _: () = assert!(2 * MAX_FRAME <= MAX_REFUSAL);

/// The answer the gate sent for the refused frame `frame` of a request
/// with `function` and application sequence `app_seq`, refused with
/// `error` (IIN1 << 8 | IIN2), as the audit trail records them; rebuilt
/// for the capture (the outstation never saw the request). `None` when the
/// frame got no answer (a request that expects no response, or a malformed
/// frame: those carry IIN2.2, parameter error).
pub fn refusal(frame: &[u8], function: u8, app_seq: u8, error: u16, out: &mut [u8; MAX_REFUSAL]) -> Option<usize> {
    let mut user = [0u8; MAX_USER];
    let f = Frame::parse(frame, &mut user)?;
    let segment = Segment::parse(f.user).filter(|_| f.carries_data())?;
    let [iin1, iin2] = error.to_be_bytes();
    if iin2 == wire::IIN2_PARAMETER_ERROR {
        return None;
    }
    let refusal = match segment.app {
        // A fragment that goes on is answered at its last segment.
        Some(_) if segment.fir && !segment.fin => Refusal::later_segment(&f),
        Some(app) if segment.fir => {
            let objects = f.user.get(3..).filter(|_| app.fin);
            Refusal::for_request(&f, &app, objects, iin1)
        }
        _ if !segment.fir && segment.fin && expects_response(function) && f.dest < wire::BROADCAST_MIN => {
            Refusal::last_segment(&f, app_seq, [iin1, iin2])
        }
        _ if !segment.fir => Refusal::later_segment(&f),
        _ => Refusal::Drop,
    };
    let n = refusal.emit(f.user, out);
    (n > 0).then_some(n)
}

impl Protocol for Dnp3 {
    type Anomaly = Anomaly;
    type Saved = (Option<Waiting>, bool, bool, u8);
    const MAX_UNIT: usize = MAX_FRAME;

    fn frame(buf: &[u8]) -> Result<Option<usize>, Anomaly> {
        Framer::next(buf).into_result()
    }

    fn request(
        &mut self,
        unit: &mut [u8],
        decide: &mut dyn FnMut(Op) -> Decision,
        out: &mut [u8; MAX_REFUSAL],
    ) -> Result<(Inspected, Option<usize>), Anomaly> {
        // A frame that waited for room is decided again on the bytes the
        // master sent: the first try may have rewritten its FCB, and a
        // repeat is known by the master's FCB (found by a review: a
        // rewritten repeat was taken for a stray segment and dropped).
        if let Some(step) = self.link_step {
            wire::set_fcb(unit, step.control & wire::FCB != 0);
        }
        let (i, refusal, segment) = self.inspect(unit, decide);
        self.segment = segment;
        // Counted again on each try: the count depends only on the link
        // state, which changes when the frame goes (`sent`), so an
        // unchanged fate gives the same rewrite and a new one (a reload
        // while it waited) its own.
        let control = unit.get(3).copied().unwrap_or_default();
        self.link_step = Some(LinkStep { control, count: self.count(unit, refusal) });
        Ok((i, (refusal != Refusal::None).then(|| refusal.emit(&self.user, out))))
    }

    fn sent(&mut self, i: &Inspected, now: u64) {
        if let Some(count) = self.link_step.take().and_then(|s| s.count) {
            self.link = count;
        }
        let Some((first, last, seq)) = self.segment else { return };
        let next = (seq + 1) & 0x3f;
        if first {
            self.started(i, forwards(i.verdict), now, next);
        } else if let Some(f) = &mut self.up_fragment {
            f.next_seq = next;
        }
        self.last_segment = self.up_fragment.map(|f| (seq, f));
        // After its last segment a fragment takes no more.
        if last {
            self.up_fragment = None;
        }
    }

    fn expire(&mut self, _deadline: u64) {
        // One request waits at a time, and the master's next one takes its
        // place: nothing piles up.
    }

    fn answer(&mut self, unit: &[u8], now: u64) -> Result<Answer, Anomaly> {
        Ok(self.classify(unit, now))
    }

    fn save(&self) -> Self::Saved {
        (self.waiting, self.down_forwarding, self.more_fragments, self.iin1)
    }

    fn restore(&mut self, saved: Self::Saved) {
        (self.waiting, self.down_forwarding, self.more_fragments, self.iin1) = saved;
    }
}

impl Dnp3 {
    /// The link count after the master's frame `unit` goes (`refusal`:
    /// how), rewriting a forwarded frame's FCB to the outstation's count.
    /// `None`: the frame does not count.
    fn count(&self, unit: &mut [u8], refusal: Refusal) -> Option<LinkCount> {
        let control = *unit.get(3)?;
        if control & wire::PRM == 0 {
            return None;
        }
        let forwarded = refusal == Refusal::None;
        if control & 0x0f == wire::LINK_RESET_LINK_STATES {
            // Both ends start over: the next counted frame carries FCB 1.
            return forwarded.then_some(LinkCount { master: Some(false), sent: Some(false) });
        }
        if control & wire::FCV == 0 {
            return None;
        }
        let fcb = control & wire::FCB != 0;
        let LinkCount { master, sent } = self.link;
        if forwarded {
            let out = match (master, sent) {
                // The master sends a frame again (it missed the ACK): so
                // does the gate.
                (Some(m), Some(s)) if m == fcb => s,
                (_, Some(s)) => !s,
                // Nothing counted yet: follow the master.
                (_, None) => fcb,
            };
            if out != fcb {
                wire::set_fcb(unit, out);
            }
            Some(LinkCount { master: Some(fcb), sent: Some(out) })
        } else if refusal.acks() {
            // The master counts it delivered; the outstation never saw it.
            Some(LinkCount { master: Some(fcb), sent })
        } else {
            None
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
/// `objects`: the request's objects when the fragment is this one segment.
fn op_of(app: &AppHeader, objects: Option<&[u8]>) -> Op {
    match app.function {
        wire::READ => Op::Read,
        // They change what the outstation reports to every master (a
        // read-only user could silence the alarms the SCADA master
        // relies on): control, not read.
        wire::ENABLE_UNSOLICITED | wire::DISABLE_UNSOLICITED | wire::ASSIGN_CLASS => Op::Control,
        // Time synchronisation and clearing the restart bit, and nothing
        // more in the same request.
        wire::WRITE if objects.is_some_and(wire::housekeeping) => Op::Diagnostic,
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
