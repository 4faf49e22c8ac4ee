//! Audit records as the dp cores emit them: fixed-size, `Copy`, no heap.
//!
//! A dp core fills an [`AuditRecord`] (names in fixed byte arrays, one
//! Modbus ADU or raw TCP chunk of at most [`PAYLOAD_LEN`] bytes inline) and
//! pushes it on its own [`AuditQueue`], a bounded lock-free queue the control
//! side's audit writer drains. Nothing here allocates after the queue is
//! built; a push is one copy of the record into the ring.
//!
//! "No unlogged sessions" is the contract: a record that does not fit is
//! handed back to the core ([`AuditQueue::try_push`] returns it), never
//! dropped silently. The core checks [`AuditQueue::accepts_requests`] before
//! it reads the next request of a session, so a full queue back-pressures
//! users (their TCP windows close) instead of losing records. The last
//! [`RESERVE`] slots are kept for records that cannot wait (session open and
//! close, anomalies).
//!
//! Text longer than its array is cut at a character boundary; the cut is
//! visible in the record (`Text::truncated`).

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam::queue::ArrayQueue;

use crate::policy::Op;
use crate::wire::{modbus, s7};

/// Bytes of payload one record carries: one Modbus/TCP ADU (MBAP 7 + PDU
/// 253), or one chunk of a raw TCP stream.
pub const PAYLOAD_LEN: usize = 260;

/// Records a core's queue holds unless configured otherwise.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Slots kept free for records that cannot wait (open, close, anomaly):
/// sessions stop reading requests once fewer than this many are free.
pub const RESERVE: usize = 64;

/// UTF-8 text in a fixed array (`N` <= 255), cut at a character boundary.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text<const N: usize> {
    len: u8,
    truncated: bool,
    bytes: [u8; N],
}

impl<const N: usize> Text<N> {
    /// The empty text.
    pub const EMPTY: Self = Self { len: 0, truncated: false, bytes: [0; N] };

    /// Copies `s`, cut to at most `N` bytes at a character boundary.
    pub fn new(s: &str) -> Self {
        let mut t = Self::EMPTY;
        t.push(s);
        t
    }

    /// `parts` joined by `sep` (e.g. a user's roles), cut like [`Text::new`].
    pub fn join<'a>(parts: impl IntoIterator<Item = &'a str>, sep: &str) -> Self {
        let mut t = Self::EMPTY;
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 {
                t.push(sep);
            }
            t.push(p);
        }
        t
    }

    /// Appends as much of `s` as fits.
    pub fn push(&mut self, s: &str) {
        let cap = N.min(255);
        let room = cap - self.len as usize;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        if take < s.len() {
            self.truncated = true;
        }
        let at = self.len as usize;
        self.bytes[at..at + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take as u8;
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only whole characters are ever copied in.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    /// Whether the source text was longer than `N` bytes.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<const N: usize> std::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// A user, asset, rule or ticket name: as long as a user name may be
/// (`wire::hello::MAX_USER_LEN`), so no valid user is logged cut.
pub type Name = Text<{ crate::wire::hello::MAX_USER_LEN }>;
/// A reason, anomaly detail or list (roles).
pub type Note = Text<96>;

/// Payload bytes of a record: at most [`PAYLOAD_LEN`] of `total` bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    len: u16,
    /// Length of the PDU or chunk the bytes came from (> `len` if cut).
    total: u32,
    bytes: [u8; PAYLOAD_LEN],
}

impl Payload {
    pub const EMPTY: Self = Self { len: 0, total: 0, bytes: [0; PAYLOAD_LEN] };

    /// Copies up to [`PAYLOAD_LEN`] bytes of `data`.
    pub fn new(data: &[u8]) -> Self {
        let mut p = Self::EMPTY;
        let n = data.len().min(PAYLOAD_LEN);
        p.bytes[..n].copy_from_slice(&data[..n]);
        p.len = n as u16;
        p.total = u32::try_from(data.len()).unwrap_or(u32::MAX);
        p
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Length of the original data (more than `as_bytes().len()` if cut).
    pub fn total(&self) -> u32 {
        self.total
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} of {} bytes)", self.len, self.total)
    }
}

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// User to asset.
    Up,
    /// Asset to user.
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// What inspection decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// A Modbus data table (protocol-neutral names in the audit trail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Coils,
    DiscreteInputs,
    InputRegisters,
    HoldingRegisters,
}

impl Table {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coils => "coils",
            Self::DiscreteInputs => "discrete_inputs",
            Self::InputRegisters => "input_registers",
            Self::HoldingRegisters => "holding_registers",
        }
    }
}

impl From<modbus::Table> for Table {
    fn from(t: modbus::Table) -> Self {
        match t {
            modbus::Table::Coils => Self::Coils,
            modbus::Table::DiscreteInputs => Self::DiscreteInputs,
            modbus::Table::InputRegisters => Self::InputRegisters,
            modbus::Table::HoldingRegisters => Self::HoldingRegisters,
        }
    }
}

/// The decoded fields of a request the audit trail shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decoded {
    /// Modbus unit id.
    pub unit: u8,
    /// Function code as sent.
    pub function: u8,
    /// Table addressed (the written span for read/write functions).
    pub table: Option<Table>,
    pub address: u16,
    pub count: u16,
    /// S7comm and DNP3: what the unit was beyond its function.
    pub unit_op: Option<UnitDecoded>,
}

/// The fields of an S7comm or DNP3 unit the audit trail shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitDecoded {
    /// The S7 userdata subfunction (0 otherwise).
    pub subfunction: u8,
    /// The operation the policy was asked about.
    pub op: Op,
    /// The first variable an S7 read or write names.
    pub item: Option<s7::Item>,
    /// The error the gate answered a refusal with (S7: item return code
    /// 0x03, header error 0x8703, userdata error 0xD241, ...; DNP3: the
    /// IIN2 bits); 0 if forwarded.
    pub error: u16,
    /// What answers are matched by (S7 PDU reference, DNP3 application
    /// sequence).
    pub reference: u16,
}

impl Decoded {
    /// Decodes a Modbus/TCP request ADU; `None` if it does not parse (the
    /// header fields are still worth recording: use [`Decoded::header`]).
    pub fn modbus(adu: &[u8]) -> Option<Self> {
        let packet = modbus::Packet::new_checked(adu).ok()?;
        let mut d = Self { unit: packet.unit_id(), function: packet.function(), ..Self::default() };
        if let Ok(req) = packet.request() {
            let access = req.access();
            if let Some(r) = access.write.or(access.read) {
                d.table = Some(r.table.into());
                d.address = r.start;
                d.count = r.count;
            }
        }
        Some(d)
    }

    /// An inspected S7comm or DNP3 unit.
    pub fn unit(i: &crate::inspect::Inspected) -> Self {
        use crate::inspect::Verdict as V;
        let error = match i.verdict {
            V::Denied { error, .. } | V::Malformed { error } | V::Flood { error } => error,
            V::Transport | V::Allowed { .. } => 0,
        };
        Self {
            function: i.function,
            unit_op: Some(UnitDecoded {
                subfunction: i.subfunction,
                op: i.op,
                item: i.item,
                error,
                reference: i.pdu_ref,
            }),
            ..Self::default()
        }
    }

    /// Unit id and function code from the raw MBAP header, if present.
    pub fn header(adu: &[u8]) -> Self {
        Self { unit: adu.get(6).copied().unwrap_or(0), function: adu.get(7).copied().unwrap_or(0), ..Self::default() }
    }
}

/// An authenticated session was opened to an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOpen {
    pub user: Name,
    /// Roles, comma-separated.
    pub roles: Note,
    pub client: SocketAddrV4,
    /// The overlay endpoint the user connected to.
    pub endpoint: SocketAddrV4,
    pub asset_name: Name,
    pub asset: SocketAddrV4,
    /// `modbus`, `raw`, ...
    pub protocol: Text<16>,
    pub tls_version: Text<16>,
    pub tls_cipher: Text<48>,
    /// Ticket id (hash prefix), empty for password logins.
    pub ticket: Name,
}

/// One request, its decoded fields and its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Per-session request number (1, 2, ...); the response carries it.
    pub seq: u32,
    pub decoded: Decoded,
    pub verdict: Verdict,
    /// Index of the deciding rule in the policy snapshot.
    pub rule: Option<u16>,
    /// Its name (empty: default deny).
    pub rule_name: Name,
    /// Exception code the gate answered a denied request with.
    pub exception: Option<u8>,
    pub payload: Payload,
}

/// The asset's answer to request `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub seq: u32,
    /// From the request leaving the gate to the response arriving.
    pub latency_us: u32,
    pub payload: Payload,
}

/// A chunk of a stream without DPI (raw TCP to an HMI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data {
    pub direction: Direction,
    pub payload: Payload,
}

/// The session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClose {
    /// `CloseReason::as_str()`.
    pub reason: Name,
    pub detail: Note,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_us: u64,
}

/// Malformed or suspicious input, counted and dropped or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: Name,
    pub detail: Note,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    SessionOpen(SessionOpen),
    Request(Request),
    Response(Response),
    Data(Data),
    SessionClose(SessionClose),
    Anomaly(Anomaly),
}

/// One audit record from a dp core (about 400 bytes, `Copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRecord {
    /// The session id (0: not about a session).
    pub session: u64,
    /// Unix time in microseconds, taken by the core.
    pub ts_us: u64,
    pub event: Event,
}

impl AuditRecord {
    /// A session-open record (`open` built with [`Text::new`]/[`Text::join`]).
    pub fn session_open(session: u64, ts_us: u64, open: SessionOpen) -> Self {
        Self { session, ts_us, event: Event::SessionOpen(open) }
    }

    /// A request record; `adu` is the request as the user sent it.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        session: u64,
        seq: u32,
        ts_us: u64,
        decoded: Decoded,
        verdict: Verdict,
        rule: Option<u16>,
        rule_name: &str,
        exception: Option<u8>,
        adu: &[u8],
    ) -> Self {
        Self {
            session,
            ts_us,
            event: Event::Request(Request {
                seq,
                decoded,
                verdict,
                rule,
                rule_name: Name::new(rule_name),
                exception,
                payload: Payload::new(adu),
            }),
        }
    }

    /// The asset's response to request `seq`.
    pub fn response(session: u64, seq: u32, ts_us: u64, latency_us: u32, adu: &[u8]) -> Self {
        Self { session, ts_us, event: Event::Response(Response { seq, latency_us, payload: Payload::new(adu) }) }
    }

    /// One raw chunk (at most [`PAYLOAD_LEN`] bytes; see [`AuditRecord::data_chunks`]).
    pub fn data(session: u64, ts_us: u64, direction: Direction, chunk: &[u8]) -> Self {
        Self { session, ts_us, event: Event::Data(Data { direction, payload: Payload::new(chunk) }) }
    }

    /// `bytes` as consecutive [`PAYLOAD_LEN`]-byte data records.
    pub fn data_chunks(
        session: u64,
        ts_us: u64,
        direction: Direction,
        bytes: &[u8],
    ) -> impl Iterator<Item = AuditRecord> + '_ {
        bytes.chunks(PAYLOAD_LEN).map(move |c| Self::data(session, ts_us, direction, c))
    }

    /// Records needed for `len` bytes of raw data.
    pub fn data_records(len: usize) -> usize {
        len.div_ceil(PAYLOAD_LEN)
    }

    /// The session ended.
    pub fn session_close(
        session: u64,
        ts_us: u64,
        reason: &str,
        detail: Option<&str>,
        bytes_up: u64,
        bytes_down: u64,
        duration_us: u64,
    ) -> Self {
        Self {
            session,
            ts_us,
            event: Event::SessionClose(SessionClose {
                reason: Name::new(reason),
                detail: Note::new(detail.unwrap_or("")),
                bytes_up,
                bytes_down,
                duration_us,
            }),
        }
    }

    /// An anomaly (`session` 0 if not about one session).
    pub fn anomaly(session: u64, ts_us: u64, kind: &str, detail: &str) -> Self {
        Self { session, ts_us, event: Event::Anomaly(Anomaly { kind: Name::new(kind), detail: Note::new(detail) }) }
    }
}

/// Unix time in microseconds (`SystemTime`, about 20 ns with the vDSO).
pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// One core's bounded queue of audit records to the writer.
///
/// Single producer (the core), single consumer (the writer); lock-free.
pub struct AuditQueue {
    records: ArrayQueue<AuditRecord>,
    full: AtomicU64,
    stalls: AtomicU64,
}

impl AuditQueue {
    /// A queue of `capacity` records (at least `2 * RESERVE`).
    pub fn new(capacity: usize) -> Self {
        Self { records: ArrayQueue::new(capacity.max(2 * RESERVE)), full: AtomicU64::new(0), stalls: AtomicU64::new(0) }
    }

    /// Queues `record`, or hands it back when the queue is full (the core
    /// keeps it and retries; counted in [`AuditQueue::full`]).
    ///
    /// # Errors
    /// The queue is full; the record is returned untouched.
    // The record comes back by value: boxing it would allocate on the dp core.
    #[allow(clippy::result_large_err)]
    pub fn try_push(&self, record: AuditRecord) -> Result<(), AuditRecord> {
        self.records.push(record).inspect_err(|_| {
            self.full.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Whether a session may read its next request: more than [`RESERVE`]
    /// free slots. When not, counts a stall ([`AuditQueue::stalls`]).
    pub fn accepts_requests(&self) -> bool {
        let ok = self.free() > RESERVE;
        if !ok {
            self.stalls.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Whether `n` more records fit right now (e.g. raw data chunks).
    pub fn has_room(&self, n: usize) -> bool {
        self.free() >= n
    }

    /// Free slots.
    pub fn free(&self) -> usize {
        self.records.capacity() - self.records.len()
    }

    pub fn is_full(&self) -> bool {
        self.records.is_full()
    }

    /// Pushes refused because the queue was full, since start.
    pub fn full(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }

    /// Times a session was held back by [`AuditQueue::accepts_requests`].
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }

    /// Takes the oldest record (the writer).
    pub fn pop(&self) -> Option<AuditRecord> {
        self.records.pop()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.records.capacity()
    }
}

impl Default for AuditQueue {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_text_cuts_at_char_boundaries() {
        let t = Text::<4>::new("abcdef");
        assert_eq!(t.as_str(), "abcd");
        assert!(t.truncated());
        // 'é' is two bytes: it does not fit after "abc".
        let t = Text::<4>::new("abcé");
        assert_eq!(t.as_str(), "abc");
        let t = Note::join(["operator", "engineer"], ",");
        assert_eq!(t.as_str(), "operator,engineer");
        assert!(!t.truncated());
        assert!(Name::EMPTY.is_empty());
    }

    #[test]
    fn audit_payload_keeps_the_total() {
        let big = [7u8; 300];
        let p = Payload::new(&big);
        assert_eq!(p.as_bytes().len(), PAYLOAD_LEN);
        assert_eq!(p.total(), 300);
        let chunks: Vec<_> = AuditRecord::data_chunks(1, 2, Direction::Down, &big).collect();
        assert_eq!(chunks.len(), 2);
        assert_eq!(AuditRecord::data_records(300), 2);
        match chunks[1].event {
            Event::Data(d) => assert_eq!(d.payload.as_bytes().len(), 40),
            _ => panic!("not data"),
        }
    }

    #[test]
    fn audit_record_is_small_and_copy() {
        let size = std::mem::size_of::<AuditRecord>();
        assert!(size <= 512, "AuditRecord is {size} bytes");
    }

    #[test]
    fn audit_decodes_modbus_requests() {
        // Read holding registers: tid 1, pid 0, len 6, unit 17, fc 3, addr 0x006B, qty 3.
        let adu = [0, 1, 0, 0, 0, 6, 17, 3, 0x00, 0x6B, 0, 3];
        let d = Decoded::modbus(&adu).unwrap();
        assert_eq!(
            d,
            Decoded {
                unit: 17,
                function: 3,
                table: Some(Table::HoldingRegisters),
                address: 0x6B,
                count: 3,
                unit_op: None
            }
        );
        // Write single coil 0x00AC on.
        let adu = [0, 2, 0, 0, 0, 6, 1, 5, 0x00, 0xAC, 0xFF, 0x00];
        let d = Decoded::modbus(&adu).unwrap();
        assert_eq!((d.table, d.address, d.count), (Some(Table::Coils), 0xAC, 1));
        assert_eq!(Decoded::modbus(&[0, 1, 0, 0]), None);
        assert_eq!(Decoded::header(&[0, 1, 0, 0, 0, 2, 9, 0x41]).function, 0x41);
    }

    #[test]
    fn pacer_gives_the_writer_a_turn_on_an_idle_pass() {
        use std::sync::Arc;
        use std::time::{Duration, Instant};
        let pacer = Arc::new(Pacer::new(Arc::new(crate::io::Doorbell::new().unwrap())));
        // Nobody waits: an idle pass does nothing.
        assert!(!pacer.core_idle());
        let writer = {
            let pacer = pacer.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                // At most 5 s without a turn.
                pacer.wait_turn(5000);
                t.elapsed()
            })
        };
        let t = Instant::now();
        let mut turns = 0;
        while t.elapsed() < Duration::from_secs(3) && turns == 0 {
            turns += usize::from(pacer.core_idle());
            std::thread::sleep(Duration::from_micros(200));
        }
        let waited = writer.join().unwrap();
        assert_eq!(turns, 1, "the core never gave the writer its turn");
        // The writer woke at the ring, not at its 5 s timeout.
        assert!(waited < Duration::from_secs(2), "the writer waited {waited:?}");
        // The turn was taken: the next idle pass does nothing.
        assert!(!pacer.core_idle());
        // A ring left over does not end the next wait early: it times out.
        pacer.bell.ring();
        let t = Instant::now();
        pacer.wait_turn(20);
        assert!(t.elapsed() >= Duration::from_millis(15), "a stale ring ended the wait");
        // Closed (the cores stopped): no more waiting at all.
        pacer.close();
        let t = Instant::now();
        pacer.wait_turn(5000);
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn audit_queue_hands_back_what_does_not_fit() {
        let q = AuditQueue::new(2 * RESERVE);
        let r = AuditRecord::anomaly(1, 2, "k", "d");
        for _ in 0..RESERVE {
            q.try_push(r).unwrap();
        }
        assert!(!q.accepts_requests());
        assert_eq!(q.stalls(), 1);
        for _ in 0..RESERVE {
            q.try_push(r).unwrap();
        }
        assert!(q.is_full());
        assert_eq!(q.try_push(r), Err(r));
        assert_eq!(q.full(), 1);
        assert_eq!(q.pop(), Some(r));
        assert!(q.has_room(1));
    }
}

/// A core's connection to the audit writer.
#[derive(Clone)]
pub struct AuditTap {
    pub queue: std::sync::Arc<AuditQueue>,
    /// False while the writer cannot write (disk full, I/O error).
    pub healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// End sessions while the writer fails (`on_failure = "terminate"`);
    /// otherwise hold them (read no requests).
    pub terminate_on_failure: bool,
    /// Turns on the CPU the writer shares with this core (`None`: it does not).
    pub pacer: Option<std::sync::Arc<Pacer>>,
}

/// Turns on a CPU that the audit writer shares with a dp core.
///
/// A writer on a polling core's CPU otherwise runs whenever it wakes, in the
/// middle of the core's work, for as long as its batch takes: a group
/// commit at 20k requests/s took 0.5-0.7 ms of CPU every 50 ms on this
/// project's bench VM (`scripts/bench --sched`), and every request arriving
/// meanwhile waited for it. With a pacer the writer works in slices of at
/// most [`PACED_SLICE`] and then waits for a turn ([`Pacer::wait_turn`]); a
/// core gives it one on its next pass without work ([`Pacer::core_idle`]),
/// or while its audit queue holds sessions back. A core that is never idle
/// cannot starve the writer: the wait has a timeout.
pub struct Pacer {
    /// The writer waits for a turn.
    waiting: AtomicBool,
    /// The cores have stopped: nobody gives turns any more.
    closed: AtomicBool,
    bell: std::sync::Arc<crate::io::Doorbell>,
}

/// The longest the writer works before it waits for a turn, when it shares
/// a CPU with a dp core: about what one pass of a busy core takes with a
/// few requests. A single system call (a sync's writeback, a large write)
/// can still take longer.
pub const PACED_SLICE: std::time::Duration = std::time::Duration::from_micros(50);

impl Pacer {
    /// A pacer that wakes the writer with `bell` (the writer also waits for
    /// its other events on it).
    pub fn new(bell: std::sync::Arc<crate::io::Doorbell>) -> Self {
        Self { waiting: AtomicBool::new(false), closed: AtomicBool::new(false), bell }
    }

    /// A core's pass found no work (or the audit queue holds its sessions
    /// back): gives the writer a turn if it waits for one. Whether it did
    /// (counted as `audit_turns`). One relaxed load while the writer does
    /// not wait.
    #[inline]
    pub fn core_idle(&self) -> bool {
        // One core rings, even if several see the writer waiting.
        if !self.waiting.load(Ordering::Relaxed) || !self.waiting.swap(false, Ordering::AcqRel) {
            return false;
        }
        self.bell.ring();
        true
    }

    /// The writer waits for a turn: until a core gives it one, the bell
    /// rings for another reason, or `timeout_ms` pass; not at all once
    /// [`Pacer::close`]d.
    pub fn wait_turn(&self, timeout_ms: i32) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        // A ring left over (a turn given after the last wait timed out, an
        // event the writer has already read) must not end this wait early.
        self.bell.clear();
        self.waiting.store(true, Ordering::Release);
        crate::io::wait_readable(&[self.bell.fd()], timeout_ms);
        self.waiting.store(false, Ordering::Release);
        self.bell.clear();
    }

    /// The cores have stopped: the writer works without waiting from now on
    /// (it drains and syncs what they left as fast as it can).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.bell.ring();
    }
}

/// Where a session step puts its records: the core's queue, or the core's
/// small backlog when the queue is momentarily full (never dropped).
pub struct AuditOut<'a> {
    pub queue: Option<&'a AuditQueue>,
    pub backlog: &'a mut std::collections::VecDeque<AuditRecord>,
    /// Whether sessions may read new requests now.
    pub ready: bool,
    /// Whether sessions must end now (writer failed, `terminate`).
    pub terminate: bool,
}

impl AuditOut<'_> {
    /// Queues a record (or keeps it in the backlog).
    pub fn push(&mut self, record: AuditRecord) {
        let Some(q) = self.queue else { return };
        if !self.backlog.is_empty() {
            self.backlog.push_back(record);
        } else if let Err(r) = q.try_push(record) {
            self.backlog.push_back(r);
            self.ready = false;
        }
    }

    /// Whether `records` more fit without waiting.
    pub fn has_room(&self, records: usize) -> bool {
        self.queue.is_none_or(|q| self.ready && q.has_room(records + RESERVE))
    }

    /// Whether auditing is on.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }
}
