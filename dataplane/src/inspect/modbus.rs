//! Modbus/TCP inspection and enforcement, per request, inline.
//!
//! The user's plaintext stream (after TLS) is framed into ADUs with
//! [`wire::modbus::Framer`] across any segmentation; each request is parsed
//! and mapped to an operation and the data it touches, and the policy
//! decides. Allowed requests go to the PLC unchanged; denied ones are
//! answered by the gate with an exception carrying the same transaction
//! and unit id and `function | 0x80` (01 illegal function, 02 illegal data
//! address, 03 illegal data value), so the engineering tool stays sane and
//! the PLC never sees them. Responses from the PLC are matched to requests
//! by transaction id; unsolicited or mismatched ones are dropped and
//! counted. A stream that cannot be framed (protocol id != 0, bad length)
//! ends the session: after it, nothing in the stream can be trusted.
//!
//! Buffers are fixed (two ADUs per direction); when the other side has no
//! room, reading stops (TCP backpressure). Nothing here allocates.

use super::{Buf, Downstream, Sink, EXPIRE_US};
use crate::policy::{Decision, Denial, ModbusDetail, Op, Table};
use crate::wire::modbus::{
    self as wire, emit_exception, Entry, ExceptionCode, Framer, OpClass, Packet, Progress, Request, Transactions,
    MAX_ADU_LEN,
};

/// Outstanding requests per session; more is a flood (anomaly).
pub const MAX_OUTSTANDING: usize = 32;

/// What happened to one request (for counters and the audit trail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    /// The request's number within the session (1, 2, ...).
    pub seq: u32,
    pub tid: u16,
    pub unit: u8,
    pub function: u8,
    pub op: Op,
    pub read: Option<(Table, u16, u16)>,
    pub write: Option<(Table, u16, u16)>,
    pub verdict: Verdict,
}

/// The gate's decision on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded to the PLC; `rule` allowed it.
    Allowed { rule: u32 },
    /// Answered by the gate with this exception code.
    Denied { denial: Denial, exception: u8 },
    /// Malformed (well framed but not a valid request): answered with
    /// exception 03 (illegal data value) or 01 for a bad function.
    Malformed { exception: u8 },
    /// Too many requests outstanding: answered with 06 (server busy).
    Flood,
}

/// Why the stream had to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// A header the framer cannot get past (protocol id, length).
    FramingLost(wire::Anomaly),
}

/// Counters of one session's inspection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InspectStats {
    pub requests: u64,
    pub allowed: u64,
    pub denied: u64,
    pub malformed: u64,
    pub responses: u64,
    pub unmatched: u64,
}

/// Hears each response: the seq of its request (0: unmatched), latency
/// (`None`: unmatched, dropped) and the ADU.
pub type OnResponse<'a> = dyn FnMut(u32, Option<u64>, &[u8]) + 'a;

/// One session's Modbus inspector.
pub struct ModbusInspector {
    up: Buf<{ 2 * MAX_ADU_LEN }>,
    down: Buf<{ 2 * MAX_ADU_LEN }>,
    framer: Framer,
    pending: Transactions<MAX_OUTSTANDING>,
    /// (transaction id, request seq) of forwarded requests.
    seqs: [(u16, u32); MAX_OUTSTANDING],
    pub stats: InspectStats,
}

impl Default for ModbusInspector {
    fn default() -> Self {
        Self::new()
    }
}

impl ModbusInspector {
    pub const fn new() -> Self {
        Self {
            up: Buf::new(),
            down: Buf::new(),
            framer: Framer::new(),
            pending: Transactions::new(),
            seqs: [(0, 0); MAX_OUTSTANDING],
            stats: InspectStats { requests: 0, allowed: 0, denied: 0, malformed: 0, responses: 0, unmatched: 0 },
        }
    }

    /// Room for more bytes from the user.
    pub fn up_spare(&mut self) -> &mut [u8] {
        self.up.spare()
    }

    /// `n` bytes were written into [`ModbusInspector::up_spare`].
    pub fn up_filled(&mut self, n: usize) {
        self.up.filled(n);
    }

    /// Whether bytes from the user wait for room on the other side.
    pub fn up_pending(&self) -> usize {
        self.up.len
    }

    /// Whether bytes from the asset wait for room on the other side.
    pub fn down_pending(&self) -> usize {
        self.down.len
    }

    /// Decides every complete request in the user's buffer, in order,
    /// forwarding or answering each; stops at a partial ADU or when the
    /// target has no room. `decide` is the policy; `now` is a timestamp
    /// for latency (any monotonic unit). `on` hears about each request.
    ///
    /// # Errors
    /// The stream cannot be framed any more: close the session.
    pub fn requests(
        &mut self,
        sink: &mut dyn Sink,
        decide: &mut dyn FnMut(Op, &ModbusDetail<'_>) -> Decision,
        exception: &dyn Fn(Denial) -> u8,
        now: u64,
        on: &mut dyn FnMut(&Inspected, &[u8]),
    ) -> Result<usize, Broken> {
        let mut done = 0;
        if let Some(deadline) = now.checked_sub(EXPIRE_US) {
            while let Some(e) = self.pending.take_expired(deadline) {
                let _ = self.recall(e.tid);
            }
        }
        loop {
            let adu_len = match self.framer.next(&self.up.data[..self.up.len]) {
                Progress::Done { adu_len } => adu_len,
                Progress::NeedMore { .. } => return Ok(done),
                Progress::Reject(anomaly) => return Err(Broken::FramingLost(anomaly)),
            };
            let adu = &self.up.data[..adu_len];
            let Ok(packet) = Packet::new_checked(adu) else {
                // The framer and the packet agree by construction; be safe anyway.
                return Err(Broken::FramingLost(wire::Anomaly::BadLength(0)));
            };
            let (tid, unit, function) = (packet.transaction_id(), packet.unit_id(), packet.function());
            let parsed = Request::parse(function, packet.data());
            let (inspected, forward, exception) = match parsed {
                Err(e) => {
                    let exception = match e {
                        wire::Error::BadFunction(_) => 0x01,
                        _ => 0x03,
                    };
                    (
                        Inspected {
                            seq: 0,
                            tid,
                            unit,
                            function,
                            op: Op::Other,
                            read: None,
                            write: None,
                            verdict: Verdict::Malformed { exception },
                        },
                        false,
                        exception,
                    )
                }
                Ok(req) => {
                    let access = req.access();
                    let op = match access.class {
                        OpClass::Read => Op::Read,
                        OpClass::Write => Op::Write,
                        OpClass::Diagnostic => Op::Diagnostic,
                        OpClass::Program => Op::Program,
                        OpClass::Control => Op::Control,
                        OpClass::Other => Op::Other,
                    };
                    let read = access.read.map(|r| (table(r.table), r.start, r.count));
                    let write = access.write.map(|r| (table(r.table), r.start, r.count));
                    let detail =
                        ModbusDetail { unit, function, read, write, values: written_values(function, packet.data()) };
                    let verdict = if self.pending.len() >= MAX_OUTSTANDING {
                        Verdict::Flood
                    } else {
                        match decide(op, &detail) {
                            Decision::Permit(p) => Verdict::Allowed { rule: p.rule },
                            Decision::Deny(denial) => Verdict::Denied { denial, exception: exception(denial) },
                        }
                    };
                    let exception = match verdict {
                        Verdict::Denied { exception, .. } | Verdict::Malformed { exception } => exception,
                        Verdict::Flood => 0x06,
                        Verdict::Allowed { .. } => 0,
                    };
                    (
                        Inspected { seq: 0, tid, unit, function, op, read, write, verdict },
                        matches!(verdict, Verdict::Allowed { .. }),
                        exception,
                    )
                }
            };
            // A request to forward takes its slot now. A duplicate
            // transaction id in flight cannot be matched: it is answered
            // busy (and audited so) instead of forwarding an ambiguity.
            let (inspected, forward, exception) =
                if forward && self.pending.insert(Entry { tid, unit, function, sent_at: now }).is_err() {
                    (Inspected { verdict: Verdict::Flood, ..inspected }, false, 0x06)
                } else {
                    (inspected, forward, exception)
                };
            if forward {
                if !sink.to_asset(adu) {
                    // No room at the asset: keep the ADU, try again later.
                    let _ = self.pending.take(tid);
                    return Ok(done);
                }
            } else {
                let mut out = [0u8; 9];
                let n = emit_exception(&mut out, tid, unit, function, ExceptionCode::from(exception));
                if !sink.to_user(&out[..n]) {
                    return Ok(done);
                }
            }
            self.stats.requests += 1;
            let inspected = Inspected { seq: self.stats.requests as u32, ..inspected };
            if forward {
                self.remember(tid, inspected.seq);
            }
            match inspected.verdict {
                Verdict::Allowed { .. } => self.stats.allowed += 1,
                Verdict::Denied { .. } | Verdict::Flood => self.stats.denied += 1,
                Verdict::Malformed { .. } => self.stats.malformed += 1,
            }
            on(&inspected, &self.up.data[..adu_len]);
            self.up.consume(adu_len);
            done += 1;
        }
    }

    fn remember(&mut self, tid: u16, seq: u32) {
        if let Some(slot) = self.seqs.iter_mut().find(|s| s.0 == tid || s.1 == 0) {
            *slot = (tid, seq);
        }
    }

    fn recall(&mut self, tid: u16) -> u32 {
        match self.seqs.iter_mut().find(|s| s.0 == tid && s.1 != 0) {
            Some(slot) => std::mem::take(slot).1,
            None => 0,
        }
    }

    /// Matches every complete response in the asset's buffer to its request
    /// and forwards it; drops (and counts) unsolicited ones. `on` hears the
    /// request's seq (0: unmatched), the latency (`now - sent_at`) and the ADU.
    ///
    /// # Errors
    /// The asset's stream cannot be framed any more: close the session.
    pub fn responses(&mut self, sink: &mut dyn Sink, now: u64, on: &mut OnResponse<'_>) -> Result<usize, Broken> {
        let mut done = 0;
        loop {
            let adu_len = match self.framer.next(&self.down.data[..self.down.len]) {
                Progress::Done { adu_len } => adu_len,
                Progress::NeedMore { .. } => return Ok(done),
                Progress::Reject(anomaly) => return Err(Broken::FramingLost(anomaly)),
            };
            let adu = &self.down.data[..adu_len];
            let (tid, function) = match Packet::new_checked(adu) {
                Ok(p) => (p.transaction_id(), p.function() & 0x7f),
                Err(_) => return Err(Broken::FramingLost(wire::Anomaly::BadLength(0))),
            };
            let matched = self.pending.get(tid).is_some_and(|e| e.function == function);
            if matched {
                if !sink.to_user(adu) {
                    return Ok(done);
                }
                let latency = self.pending.take(tid).map(|e| now.saturating_sub(e.sent_at));
                self.stats.responses += 1;
                let seq = self.recall(tid);
                on(seq, latency, &self.down.data[..adu_len]);
            } else {
                self.stats.unmatched += 1;
                on(0, None, adu);
            }
            self.down.consume(adu_len);
            done += 1;
        }
    }
}

impl Downstream for ModbusInspector {
    fn down_spare(&mut self) -> &mut [u8] {
        self.down.spare()
    }

    fn down_filled(&mut self, n: usize) {
        self.down.filled(n);
    }
}

fn table(t: wire::Table) -> Table {
    match t {
        wire::Table::Coils => Table::Coils,
        wire::Table::DiscreteInputs => Table::DiscreteInputs,
        wire::Table::InputRegisters => Table::InputRegisters,
        wire::Table::HoldingRegisters => Table::HoldingRegisters,
    }
}

/// The exception a denial is answered with when no rule overrides it
/// ([`Denial::modbus_exception`]; as a function for the inspector's
/// `exception` argument).
pub fn exception_for(denial: Denial) -> u8 {
    denial.modbus_exception()
}

/// The register values a write carries, big-endian pairs (6, 16, 23).
fn written_values(function: u8, data: &[u8]) -> &[u8] {
    let range = match function {
        6 => 2..4,
        16 => 5..data.len(),
        23 => 9..data.len(),
        _ => 0..0,
    };
    data.get(range).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::testing::Wires;
    use crate::policy::Permit;

    const ALLOW: Decision = Decision::Permit(Permit { rule: 7, until: u64::MAX });

    /// A viewer: reads anything, writes nothing.
    fn viewer(op: Op, _: &ModbusDetail<'_>) -> Decision {
        if op == Op::Read {
            ALLOW
        } else {
            Decision::Deny(Denial::NoRule)
        }
    }

    /// An operator: reads anything; writes holding registers 100..=199 with
    /// values up to 1000; no diagnostics.
    fn operator(op: Op, d: &ModbusDetail<'_>) -> Decision {
        match op {
            Op::Read => ALLOW,
            Op::Write => match d.write {
                Some((Table::HoldingRegisters, start, count))
                    if start >= 100 && u32::from(start) + u32::from(count) <= 200 =>
                {
                    if d.values.chunks_exact(2).any(|v| u16::from_be_bytes([v[0], v[1]]) > 1000) {
                        Decision::Deny(Denial::ValueOutOfBounds(3))
                    } else {
                        ALLOW
                    }
                }
                _ => Decision::Deny(Denial::AddressOutOfRange(3)),
            },
            _ => Decision::Deny(Denial::NoRule),
        }
    }

    fn feed(
        insp: &mut ModbusInspector,
        wires: &mut Wires,
        bytes: &[u8],
        policy: fn(Op, &ModbusDetail<'_>) -> Decision,
    ) -> Vec<Inspected> {
        let mut seen = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let spare = insp.up_spare();
            let n = spare.len().min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            insp.up_filled(n);
            rest = &rest[n..];
            insp.requests(wires, &mut |op, d| policy(op, d), &exception_for, 0, &mut |i, _| seen.push(*i)).unwrap();
        }
        seen
    }

    // Requests: MBAP (tid, proto 0, len, unit 1) then the PDU.
    /// tid 1, read holding registers 0..10.
    const READ_HR: &[u8] = &[0, 1, 0, 0, 0, 6, 1, 0x03, 0, 0, 0, 10];
    /// tid 2, write single register 150 = 42.
    const WRITE_150: &[u8] = &[0, 2, 0, 0, 0, 6, 1, 0x06, 0, 150, 0, 42];
    /// tid 3, write single register 200 = 42.
    const WRITE_200: &[u8] = &[0, 3, 0, 0, 0, 6, 1, 0x06, 0, 200, 0, 42];
    /// tid 4, write multiple registers 150..152 = [5, 2000].
    const WRITE_MULTI_BIG: &[u8] = &[0, 4, 0, 0, 0, 11, 1, 0x10, 0, 150, 0, 2, 4, 0, 5, 0x07, 0xD0];
    /// tid 5, diagnostics (8) return query data.
    const DIAG: &[u8] = &[0, 5, 0, 0, 0, 6, 1, 0x08, 0, 0, 0xAB, 0xCD];
    /// tid 6, read holding with quantity 0 (illegal).
    const READ_ZERO: &[u8] = &[0, 6, 0, 0, 0, 6, 1, 0x03, 0, 0, 0, 0];
    /// tid 7, read/write multiple (23): read 0..2, write 120 = 9.
    const RW_23: &[u8] = &[0, 7, 0, 0, 0, 13, 1, 0x17, 0, 0, 0, 2, 0, 120, 0, 1, 2, 0, 9];
    /// tid 8, user-defined function 65.
    const USER_FC: &[u8] = &[0, 8, 0, 0, 0, 2, 1, 0x41];

    #[test]
    fn verdict_table() {
        type Policy = fn(Op, &ModbusDetail<'_>) -> Decision;
        // {what, request, policy, expected verdict, bytes to the user, bytes to the PLC}
        type Row<'a> = (&'a str, &'a [u8], Policy, Verdict, &'a [u8], &'a [u8]);
        let table: &[Row<'_>] = &[
            ("viewer reads", READ_HR, viewer, Verdict::Allowed { rule: 7 }, &[], READ_HR),
            (
                "viewer writes: 01",
                WRITE_150,
                viewer,
                Verdict::Denied { denial: Denial::NoRule, exception: 1 },
                &[0, 2, 0, 0, 0, 3, 1, 0x86, 0x01],
                &[],
            ),
            ("operator writes 150", WRITE_150, operator, Verdict::Allowed { rule: 7 }, &[], WRITE_150),
            (
                "operator writes 200: 02",
                WRITE_200,
                operator,
                Verdict::Denied { denial: Denial::AddressOutOfRange(3), exception: 2 },
                &[0, 3, 0, 0, 0, 3, 1, 0x86, 0x02],
                &[],
            ),
            (
                "setpoint above bound: 03",
                WRITE_MULTI_BIG,
                operator,
                Verdict::Denied { denial: Denial::ValueOutOfBounds(3), exception: 3 },
                &[0, 4, 0, 0, 0, 3, 1, 0x90, 0x03],
                &[],
            ),
            (
                "operator diagnostics: 01",
                DIAG,
                operator,
                Verdict::Denied { denial: Denial::NoRule, exception: 1 },
                &[0, 5, 0, 0, 0, 3, 1, 0x88, 0x01],
                &[],
            ),
            (
                "quantity 0: 03, PLC untouched",
                READ_ZERO,
                operator,
                Verdict::Malformed { exception: 3 },
                &[0, 6, 0, 0, 0, 3, 1, 0x83, 0x03],
                &[],
            ),
            ("23 needs read and write", RW_23, operator, Verdict::Allowed { rule: 7 }, &[], RW_23),
            (
                "23 as viewer",
                RW_23,
                viewer,
                Verdict::Denied { denial: Denial::NoRule, exception: 1 },
                &[0, 7, 0, 0, 0, 3, 1, 0x97, 0x01],
                &[],
            ),
            (
                "user-defined code",
                USER_FC,
                operator,
                Verdict::Denied { denial: Denial::NoRule, exception: 1 },
                &[0, 8, 0, 0, 0, 3, 1, 0xC1, 0x01],
                &[],
            ),
        ];
        for &(what, request, policy, verdict, to_user, to_plc) in table {
            let mut insp = ModbusInspector::new();
            let mut wires = Wires::default();
            let seen = feed(&mut insp, &mut wires, request, policy);
            assert_eq!(seen.len(), 1, "{what}");
            assert_eq!(seen[0].verdict, verdict, "{what}");
            assert_eq!(wires.user, to_user, "{what}: bytes to the user");
            assert_eq!(wires.asset, to_plc, "{what}: bytes to the PLC");
        }
    }

    #[test]
    fn a_pipelined_stream_split_at_every_offset_gives_the_same_verdicts() {
        let stream: Vec<u8> = [READ_HR, WRITE_150, WRITE_200, DIAG, RW_23].concat();
        let mut whole = ModbusInspector::new();
        let mut w0 = Wires::default();
        let expected = feed(&mut whole, &mut w0, &stream, operator);
        assert_eq!(expected.len(), 5);
        for cut in 0..=stream.len() {
            let mut insp = ModbusInspector::new();
            let mut w = Wires::default();
            let mut seen = feed(&mut insp, &mut w, &stream[..cut], operator);
            seen.extend(feed(&mut insp, &mut w, &stream[cut..], operator));
            assert_eq!(seen, expected, "cut at {cut}");
            assert_eq!((w.user.clone(), w.asset.clone()), (w0.user.clone(), w0.asset.clone()), "cut at {cut}");
        }
    }

    #[test]
    fn lost_framing_breaks_the_session() {
        let mut insp = ModbusInspector::new();
        let mut w = Wires::default();
        let bad = [0, 1, 0, 7, 0, 6, 1, 3, 0, 0, 0, 1]; // protocol id 7
        let n = insp.up_spare().len().min(bad.len());
        insp.up_spare()[..n].copy_from_slice(&bad[..n]);
        insp.up_filled(n);
        let r = insp.requests(&mut w, &mut |op, d| operator(op, d), &exception_for, 0, &mut |_, _| {});
        assert!(matches!(r, Err(Broken::FramingLost(_))));
        assert!(w.asset.is_empty() && w.user.is_empty());
    }

    #[test]
    fn responses_are_matched_and_strays_dropped() {
        let mut insp = ModbusInspector::new();
        let mut w = Wires::default();
        feed(&mut insp, &mut w, READ_HR, operator);
        // The PLC answers tid 1, then sends an unsolicited tid 99.
        let resp: &[u8] = &[0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 7];
        let stray: &[u8] = &[0, 99, 0, 0, 0, 5, 1, 3, 2, 0, 7];
        let both = [resp, stray].concat();
        insp.down_spare()[..both.len()].copy_from_slice(&both);
        insp.down_filled(both.len());
        let mut lat = Vec::new();
        insp.responses(&mut w, 40, &mut |tid, l, _| lat.push((tid, l))).unwrap();
        assert_eq!(w.user, resp, "only the matched response reaches the user");
        assert_eq!(lat, [(1, Some(40)), (0, None)], "seq 1 answered; the stray matches nothing");
        assert_eq!((insp.stats.responses, insp.stats.unmatched), (1, 1));
    }

    #[test]
    fn a_full_asset_side_holds_requests_back_without_losing_them() {
        let mut insp = ModbusInspector::new();
        let mut w = Wires { asset_room: Some(12), ..Wires::default() };
        let stream = [READ_HR, READ_HR].concat();
        // Second request: tid clash with the first in flight -> busy (06).
        let seen = feed(&mut insp, &mut w, &stream, operator);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].verdict, Verdict::Flood);
        assert_eq!(w.user, [0, 1, 0, 0, 0, 3, 1, 0x83, 0x06]);
        // A different tid with no room: held, not consumed, not lost.
        let mut insp = ModbusInspector::new();
        let mut w = Wires { asset_room: Some(12), ..Wires::default() };
        let other: &[u8] = &[0, 9, 0, 0, 0, 6, 1, 0x03, 0, 0, 0, 1];
        let stream = [READ_HR, other].concat();
        let n = stream.len();
        insp.up_spare()[..n].copy_from_slice(&stream);
        insp.up_filled(n);
        let done = insp.requests(&mut w, &mut |op, d| operator(op, d), &exception_for, 0, &mut |_, _| {}).unwrap();
        assert_eq!(done, 1);
        assert_eq!(insp.up_pending(), 12, "the second request waits");
        w.asset_room = None;
        assert_eq!(insp.requests(&mut w, &mut |op, d| operator(op, d), &exception_for, 0, &mut |_, _| {}).unwrap(), 1);
        assert_eq!(w.asset, stream);
    }

    /// An engineer: diagnostics only (config/plant.toml "engineer-diagnostics").
    fn diagnostics_only(op: Op, _: &ModbusDetail<'_>) -> Decision {
        if op == Op::Diagnostic {
            ALLOW
        } else {
            Decision::Deny(Denial::NoRule)
        }
    }

    #[test]
    fn a_canopen_general_reference_is_not_a_diagnostic() {
        // FC 43 / MEI 0x0D (CANopen General Reference): an SDO download
        // (write) of object 0x6040 (controlword) sub 0 = 0x000F, i.e. a write
        // into the CANopen object dictionary behind the gateway.
        let canopen: &[u8] =
            &[0, 9, 0, 0, 0, 0x0d, 1, 0x2b, 0x0d, 0x00, 0x00, 0x2b, 0x40, 0x60, 0x00, 0x0f, 0x00, 0, 0];
        let mut insp = ModbusInspector::new();
        let mut w = Wires::default();
        let seen = feed(&mut insp, &mut w, canopen, diagnostics_only);
        assert_eq!(seen.len(), 1);
        assert_ne!(seen[0].op, Op::Diagnostic, "a CANopen SDO write is classified as a diagnostic");
        assert!(w.asset.is_empty(), "a diagnostics-only role got a CANopen write to the PLC");
    }

    #[test]
    fn diagnostics_restart_and_listen_only_are_control() {
        // FC 08 sub-function 0x0001 (Restart Communications Option) and
        // 0x0004 (Force Listen Only Mode: the device stops answering).
        let restart: &[u8] = &[0, 10, 0, 0, 0, 6, 1, 0x08, 0x00, 0x01, 0xff, 0x00];
        let listen_only: &[u8] = &[0, 11, 0, 0, 0, 6, 1, 0x08, 0x00, 0x04, 0x00, 0x00];
        for (what, adu) in [("restart", restart), ("force listen only", listen_only)] {
            let mut insp = ModbusInspector::new();
            let mut w = Wires::default();
            let seen = feed(&mut insp, &mut w, adu, diagnostics_only);
            assert_eq!(seen[0].op, Op::Control, "{what} is classified as {:?}", seen[0].op);
            assert!(w.asset.is_empty(), "{what} reached the PLC for a diagnostics-only role");
        }
    }

    #[test]
    fn unanswered_requests_give_their_slots_back_after_30_s() {
        // 32 broadcast writes (unit 0: a gateway forwards them and nobody
        // answers) -- then, much later, an ordinary read.
        let mut insp = ModbusInspector::new();
        let mut w = Wires::default();
        for tid in 0..MAX_OUTSTANDING as u16 {
            let [hi, lo] = (0x100 + tid).to_be_bytes();
            let adu = [hi, lo, 0, 0, 0, 6, 0, 0x06, 0, 150, 0, 42];
            insp.up_spare()[..12].copy_from_slice(&adu);
            insp.up_filled(12);
            insp.requests(&mut w, &mut |_, _| ALLOW, &exception_for, 0, &mut |_, _| {}).unwrap();
        }
        // An hour later (µs), with nothing outstanding that will ever be answered.
        let hour = 3_600_000_000;
        insp.up_spare()[..12].copy_from_slice(READ_HR);
        insp.up_filled(12);
        let mut seen = Vec::new();
        insp.requests(&mut w, &mut |_, _| ALLOW, &exception_for, hour, &mut |i, _| seen.push(*i)).unwrap();
        assert_eq!(
            seen[0].verdict,
            Verdict::Allowed { rule: 7 },
            "the session is wedged: every request is 'busy' forever"
        );
    }

    #[test]
    fn a_duplicate_tid_answered_busy_is_audited_as_busy_and_steals_nothing() {
        // Two reads with the same transaction id: the first goes to the PLC,
        // the second is answered 06 by the gate and never reaches the PLC.
        let mut insp = ModbusInspector::new();
        let mut w = Wires::default();
        let seen = feed(&mut insp, &mut w, &[READ_HR, READ_HR].concat(), operator);
        assert_eq!(w.asset, READ_HR, "only the first reached the PLC");
        assert_eq!(w.user, [0, 1, 0, 0, 0, 3, 1, 0x83, 0x06], "the second was answered busy");
        // The PLC answers the first.
        let resp: &[u8] = &[0, 1, 0, 0, 0, 23, 1, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        insp.down_spare()[..resp.len()].copy_from_slice(resp);
        insp.down_filled(resp.len());
        let mut answered = Vec::new();
        insp.responses(&mut w, 5, &mut |seq, _, _| answered.push(seq)).unwrap();
        assert_eq!(answered, [1], "the PLC's answer to request 1 is audited as the answer to request {answered:?}");
        assert_ne!(
            seen[1].verdict,
            Verdict::Allowed { rule: 7 },
            "the request the gate answered 06 is audited as allowed (forwarded, no exception)"
        );
    }

    #[test]
    fn never_panics_on_random_streams() {
        let mut rng = crate::xorshift::XorShift::new(0x9e37_79b9_7f4a_7c15);
        let mut next = || rng.next_u64();
        for _ in 0..20_000 {
            let mut insp = ModbusInspector::new();
            let mut w = Wires::default();
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 && bytes.len() > 6 {
                bytes[2] = 0;
                bytes[3] = 0;
                bytes[4] = 0;
                bytes[5] = (bytes.len() - 6).min(250) as u8;
            }
            let n = insp.up_spare().len().min(bytes.len());
            insp.up_spare()[..n].copy_from_slice(&bytes[..n]);
            insp.up_filled(n);
            let _ = insp.requests(&mut w, &mut |op, d| operator(op, d), &exception_for, 0, &mut |_, _| {});
            let n = insp.down_spare().len().min(bytes.len());
            insp.down_spare()[..n].copy_from_slice(&bytes[..n]);
            insp.down_filled(n);
            let _ = insp.responses(&mut w, 0, &mut |_, _, _| {});
        }
    }
}
