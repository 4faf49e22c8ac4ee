//! The writer thread: drains the cores' queues and the sink into the JSONL
//! chain and the per-session captures, syncs in batches, rotates daily,
//! recovers after a crash, and survives a failing disk without losing what
//! it accepted (see the module docs of `audit`).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, TryRecvError};
use dataplane::audit::{unix_micros, AuditQueue, AuditRecord, Direction, Event, Pacer, Verdict, PACED_SLICE};
use dataplane::io::Doorbell;
use serde_json::{Map, Value};

use super::chain::{Fields, Val};

use super::chain::{self, Chain};
use super::durable::{DurableFile, Mark, Ticket};
use super::pcap::{Capture, Header, Peer};
use super::sink::ControlEvent;
use super::syslog::{Forwarder, Forwarding, Severity};
use super::{AuditConfig, AuditError, Status};

/// The file naming the last synced record.
pub const HEAD: &str = "audit.head";
/// Subdirectory of the captures.
pub const PCAP_DIR: &str = "pcap";
/// Records taken from one queue per pass (fairness between cores).
const INGEST_BATCH: usize = 512;
/// How long a stopping writer keeps retrying a failing disk.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// `audit-YYYY-MM-DD.jsonl` for a day.
pub fn journal_name(day: &str) -> String {
    format!("audit-{day}.jsonl")
}

/// The journal files of `dir`, oldest first.
///
/// # Errors
/// The directory cannot be read.
pub fn journal_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The session id as written in records and capture names.
pub fn session_text(id: u64) -> String {
    SessionHex::new(id).as_str().to_string()
}

/// [`session_text`] on the stack (no allocation per record).
struct SessionHex([u8; 16]);

impl SessionHex {
    fn new(id: u64) -> Self {
        let mut b = [0u8; 16];
        for (i, d) in b.iter_mut().enumerate() {
            *d = chain::HEX_DIGITS[((id >> (60 - 4 * i)) & 15) as usize];
        }
        Self(b)
    }

    fn as_str(&self) -> &str {
        // Always ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Where the chain continues after a (clean or unclean) stop.
#[derive(Debug)]
pub struct Recovery {
    pub chain: Chain,
    /// The newest journal file holding a record.
    pub newest: Option<PathBuf>,
    /// A torn last line that was cut off: (file, bytes removed).
    pub torn: Option<(PathBuf, u64)>,
}

/// Reads the end of the newest journal file: cuts a torn last line (bytes
/// after the last `\n`) and returns the last complete record's seq and hash.
///
/// # Errors
/// A file cannot be read or cut, or the last complete line is not a valid
/// record (the chain cannot be continued from it).
pub fn recover(dir: &Path) -> Result<Recovery, AuditError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| AuditError::Io { path, error }
    };
    let files = journal_files(dir).map_err(io(dir))?;
    let mut torn = None;
    for (k, path) in files.iter().enumerate().rev() {
        let mut f = fs::OpenOptions::new().read(true).write(true).open(path).map_err(io(path))?;
        let len = f.metadata().map_err(io(path))?.len();
        // Lines are a few hundred bytes; 1 MiB always holds the last two.
        let start = len.saturating_sub(1 << 20);
        let mut tail = Vec::with_capacity((len - start) as usize);
        f.seek(SeekFrom::Start(start)).and_then(|_| f.read_to_end(&mut tail)).map_err(io(path))?;
        let end = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let complete = start + end as u64;
        if complete < len && k == files.len() - 1 && torn.is_none() {
            // Only the newest file can have a torn tail from a crash.
            f.set_len(complete).and_then(|()| f.sync_all()).map_err(io(path))?;
            torn = Some((path.clone(), len - complete));
        }
        if end == 0 {
            if start > 0 {
                return Err(AuditError::Corrupt {
                    file: path.clone(),
                    line: 0,
                    why: "no line end in its last MiB".into(),
                });
            }
            continue;
        }
        let body = &tail[..end - 1];
        let line_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if line_start == 0 && start > 0 {
            return Err(AuditError::Corrupt { file: path.clone(), line: 0, why: "last line longer than 1 MiB".into() });
        }
        let sealed = chain::check_line(&body[line_start..]).map_err(|e| AuditError::Corrupt {
            file: path.clone(),
            line: 0,
            why: format!("the last complete line is {e}"),
        })?;
        return Ok(Recovery { chain: Chain { seq: sealed.seq, hash: sealed.hash }, newest: Some(path.clone()), torn });
    }
    Ok(Recovery { chain: Chain::default(), newest: None, torn })
}

struct SessionLog {
    protocol: String,
    capture: Option<Capture>,
    /// An EtherNet/IP session's connections, for its capture's refusals.
    enip: Option<Box<EnipConnections>>,
    pcap: Option<String>,
    requests: u64,
    denied: u64,
    touched: bool,
}

/// What an EtherNet/IP session's capture needs to rebuild a connected
/// refusal as the gate sent it: the connections its Forward Opens opened,
/// learned from the trail's requests and responses as the inspector
/// learned them from the wire.
#[derive(Default)]
struct EnipConnections {
    connections: dataplane::inspect::enip::Connections,
    /// Forward Opens awaiting their reply: (request number, T->O id).
    opening: Vec<(u32, u32)>,
}

impl EnipConnections {
    /// At most this many Forward Opens wait for their reply (the
    /// inspector's requests in flight).
    const OPENING: usize = dataplane::inspect::enip::MAX_OUTSTANDING;

    /// A request the gate forwarded: `msg` is what the trail keeps of it
    /// (its first `PAYLOAD_LEN` bytes), `total` its length.
    fn request(&mut self, seq: u32, msg: &[u8], total: usize) {
        use dataplane::inspect::enip::forward_open_request;
        use dataplane::wire::enip as wire;
        // A Forward Open with a long route is cut in the trail; its ids sit
        // in the first 60 bytes. Zeros stand in for the rest (a path cut
        // short does not parse, and then nothing is learned). Only an
        // unconnected Forward Open (its service at byte 40) is padded.
        let cut_open = msg.len() < total
            && total <= wire::MAX_MESSAGE
            && msg.get(40).is_some_and(|s| matches!(*s, wire::FORWARD_OPEN | wire::LARGE_FORWARD_OPEN));
        let found = if cut_open {
            let mut whole = vec![0; total];
            whole[..msg.len()].copy_from_slice(msg);
            forward_open_request(&whole)
        } else {
            forward_open_request(msg)
        };
        if let Some(t_to_o) = found {
            if self.opening.len() == Self::OPENING {
                self.opening.remove(0);
            }
            self.opening.push((seq, t_to_o));
        }
    }

    fn response(&mut self, seq: u32, msg: &[u8]) {
        if let Some(k) = self.opening.iter().position(|o| o.0 == seq) {
            let (_, t_to_o) = self.opening.remove(k);
            if let Some(o_to_t) = dataplane::inspect::enip::forward_open_reply(msg) {
                self.connections.learn(o_to_t, t_to_o);
            }
        }
    }
}

struct Failure {
    since_us: u64,
    error: String,
}

/// Records are written at each sync (group commit), or before it once the
/// journal holds this much unwritten. Writing every millisecond was a
/// `pwrite` per busy session's capture per millisecond: a third of the
/// writer's CPU at 20k requests a second.
const FLUSH_BYTES: usize = 512 << 10;

/// An open session's capture is written (and so made durable) at the first
/// group commit this long after its last, or sooner once it holds
/// [`CAPTURE_WRITE_BYTES`]; a closed session's at the next commit, with
/// the session-close record that names its digest. The journal, which
/// carries every payload too, is committed every interval. With 100 busy
/// sessions, writing every capture at every 50 ms commit made 100 small
/// writes and as many file write-backs per commit; under s6's CPU quota
/// the gate held 18–20k requests a second with them and 24k without the
/// captures, or with commits a second apart (perf/README, round twelve).
/// A quarter of a second keeps those writes few (100 sessions: 400 a
/// second, against 2,000) and the captures' blocks still in the caches
/// when they are written: at 22k requests a second the gate used 4 % less
/// CPU per request than with a whole second, and lost nothing under the
/// quota (perf/README, round thirteen).
const CAPTURE_COMMIT: Duration = Duration::from_millis(250);

/// An open session's capture is written at the next commit once this much
/// of it waits, whenever its turn ([`CAPTURE_COMMIT`]) is.
const CAPTURE_WRITE_BYTES: usize = 64 << 10;

/// How long a writer that found no records waits for more (ms), unless a
/// group commit is due sooner or its bell rings. 5 ms of records at 80k a
/// second are a tenth of a core's 4,096-record queue. Waiting 1 ms while
/// records came cost a wake-up (two context switches on a CPU shared with
/// a dp core, and cold caches) per two dozen records at 12k requests/s: the
/// writer's CPU per record fell 18–26 % with 5 ms (`accessgate-perf audit
/// --sessions 100 --rate 12000`, perf/README round ten).
const IDLE_WAIT_MS: i32 = 5;

/// How long the writer waits for records: [`IDLE_WAIT_MS`], or until a
/// group commit due in `commit_due` (rounded up to whole milliseconds, so
/// it does not wake just before and wait again).
fn idle_wait_ms(commit_due: Option<Duration>) -> i32 {
    match commit_due {
        Some(due) => i32::try_from(due.as_micros().div_ceil(1000)).unwrap_or(IDLE_WAIT_MS).clamp(1, IDLE_WAIT_MS),
        None => IDLE_WAIT_MS,
    }
}

/// The journal is written in pieces of at most this much, each ending on a
/// whole line, so a paced writer can wait for a turn between them.
const WRITE_PIECE: usize = 64 << 10;

/// Records ingested between two looks at the paced writer's slice.
const INGEST_PER_CHECK: usize = 16;

/// How long a writer resting during a group commit looks at the cores'
/// queues (ms): a quarter of a 4,096-record queue is 25 ms of records at
/// 40k a second.
const REST_MS: i32 = 5;

/// The longest a paced writer waits for a turn (ms): a core that is never
/// idle still leaves it one slice per this long, until its queue is a
/// quarter full (then it works without waiting).
const TURN_TIMEOUT_MS: i32 = 1;

/// The writer's side of a [`Pacer`]: with one (the writer shares a CPU
/// with a dp core), it works in slices of at most [`PACED_SLICE`] and waits
/// for a turn between them; without, it works until done.
struct Slices {
    pacer: Option<Arc<Pacer>>,
    start: Instant,
    /// The cores' queues: while one is more than a quarter full the writer works
    /// without waiting, to catch up (sessions are held once it is full).
    queues: Vec<Arc<AuditQueue>>,
}

impl Slices {
    /// Waits for a turn if this slice is used up.
    fn check(&mut self) {
        let Some(pacer) = &self.pacer else { return };
        let now = Instant::now();
        if now.duration_since(self.start) >= PACED_SLICE && !self.queues.iter().any(|q| q.len() > q.capacity() / 4) {
            pacer.wait_turn(TURN_TIMEOUT_MS);
            self.start = Instant::now();
        }
    }

    /// `work` records ingested so far in this pass: a look at the slice
    /// every [`INGEST_PER_CHECK`].
    fn ingested(&mut self, work: usize) {
        if work.is_multiple_of(INGEST_PER_CHECK) {
            self.check();
        }
    }

    /// A new slice starts (after the writer slept: waiting, syncing).
    fn restart(&mut self) {
        self.start = Instant::now();
    }

    /// The idle wait: `ms`, or until the bell rings.
    fn idle(&mut self, bell: &Doorbell, ms: i32) {
        dataplane::io::wait_readable(&[bell.fd()], ms);
        bell.clear();
        self.restart();
    }
}

/// The writer's state; [`Writer::run`] is the thread body. Tests drive the
/// methods directly with their own clock.
pub struct Writer {
    cfg: AuditConfig,
    chain: Chain,
    synced: Chain,
    head_seq: u64,
    day: String,
    /// Days since the epoch `day` was last settled for (a cheap check).
    day_number: u64,
    file: DurableFile,
    file_name: String,
    synced_file_name: String,
    sessions: HashMap<u64, SessionLog, BuildHasherDefault<SessionIdHasher>>,
    /// Sessions whose capture got bytes since the last sync, and those of the
    /// sync before (released if untouched since). Flush, sync and the
    /// pending count walk these, not every open session: with 10,000 idle
    /// sessions a walk of all of them per loop cost the CPU the dp core
    /// shares with this thread.
    touched: Vec<u64>,
    touched_before: Vec<u64>,
    /// pcapng names in use by open sessions.
    pcap_names: HashSet<String>,
    /// The per-request pcapng comment, built here (no allocation each).
    comment: String,
    /// Scratch of the record being sealed, and its file line.
    body: Vec<u8>,
    line: Vec<u8>,
    /// Captures of closed sessions (by session), until their last bytes
    /// are synced.
    closing: Vec<(u64, Capture)>,
    healthy: Arc<AtomicBool>,
    status: Arc<Status>,
    failure: Option<Failure>,
    next_retry: Instant,
    forward: Option<Forward>,
    slices: Slices,
    /// The sync thread ([`Writer::start_threads`]), and the group commit
    /// it is making (the writer rests meanwhile, see [`Writer::run`]).
    syncer: Option<Syncer>,
    in_flight: Option<InFlight>,
    /// The captures' directory, for `syncfs` (see [`SyncJob`]).
    pcap_fd: Option<Arc<File>>,
    /// When the open sessions' captures are written next ([`CAPTURE_COMMIT`]).
    captures_due: Instant,
}

/// One group commit, for the sync thread: one `syncfs` for the captures,
/// the journal's `fdatasync` (and its directory's, for a new file), then
/// `audit.head`, in that order (a record naming a capture's digest is never
/// durable before the capture).
struct SyncJob {
    /// The captures' directory, opened once: `syncfs` reports the write-back
    /// errors since its descriptor was opened, so a fresh one each time
    /// would miss those of background write-back before it.
    pcap_dir: Option<Arc<File>>,
    journal: Option<Ticket>,
    /// `audit.head`'s directory and text.
    head: Option<(PathBuf, String)>,
}

impl SyncJob {
    fn run(&self) -> std::io::Result<()> {
        if let Some(dir) = &self.pcap_dir {
            dataplane::io::syncfs(dir)?;
        }
        if let Some(t) = &self.journal {
            t.sync()?;
        }
        if let Some((dir, text)) = &self.head {
            write_head(dir, text)?;
        }
        Ok(())
    }
}

/// What the group commit on the sync thread covers, until it ends.
struct InFlight {
    journal: Option<Mark>,
    /// Open sessions' captures, by session.
    captures: Vec<(u64, Mark)>,
    /// Closed sessions' captures: kept until the sync ends (back to
    /// `closing` if it fails).
    closing: Vec<(u64, Capture)>,
    chain: Chain,
    file_name: String,
    head: bool,
    /// Capture bytes covered (counted as pending until the sync ends).
    bytes: usize,
    started: Instant,
    /// When the operator hears of this sync next, if it has not ended.
    warn_after: Duration,
}

/// A sync running this long is logged (then at twice as long, and so on):
/// the disk is behind, though no session waits yet.
const SLOW_SYNC_WARN: Duration = Duration::from_secs(5);

/// Where records go to syslog: a forwarder the writer pumps itself (tests
/// that drive the writer directly, or no thread), or its own thread.
enum Forward {
    Here(Box<Forwarder>),
    Thread(Forwarding),
}

/// The sync thread: runs one [`SyncJob`] at a time, so a slow disk stalls
/// it and not the writer, which takes records into memory meanwhile (up to
/// `max_pending_bytes`) when a core's queue needs it.
struct Syncer {
    jobs: Option<Sender<SyncJob>>,
    done: Receiver<std::io::Result<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn spawn(bell: Arc<Doorbell>) -> std::io::Result<Self> {
        let (jobs, job_rx) = crossbeam::channel::bounded::<SyncJob>(1);
        let (done_tx, done) = crossbeam::channel::bounded(1);
        let thread = std::thread::Builder::new().name("audit-sync".into()).spawn(move || {
            for job in job_rx {
                if done_tx.send(job.run()).is_err() {
                    break;
                }
                // The writer may be in its idle wait.
                bell.ring();
            }
        })?;
        Ok(Self { jobs: Some(jobs), done, thread: Some(thread) })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    /// Prepares `cfg.dir`, recovers the chain and records the start (and a
    /// torn tail, if one was cut) as of `now_us`.
    ///
    /// # Errors
    /// See [`super::spawn`].
    pub fn open(
        cfg: AuditConfig,
        healthy: Arc<AtomicBool>,
        status: Arc<Status>,
        now_us: u64,
    ) -> Result<Self, AuditError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| AuditError::Io { path, error }
        };
        fs::create_dir_all(&cfg.dir).map_err(io(&cfg.dir))?;
        if cfg.pcap {
            let p = cfg.dir.join(PCAP_DIR);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        let forward = cfg
            .syslog
            .clone()
            .map(Forwarder::new)
            .transpose()
            .map_err(AuditError::Syslog)?
            .map(|f| Forward::Here(Box::new(f)));
        let rec = recover(&cfg.dir)?;
        let today = chain::date(now_us);
        let newest_name = rec.newest.as_ref().and_then(|p| p.file_name()).and_then(|n| n.to_str()).map(String::from);
        // Never write into a file that sorts before the newest one (clock
        // set back): the chain must follow the file order.
        let (day, file_name) = match &newest_name {
            Some(n) if *n >= journal_name(&today) => {
                (n["audit-".len()..n.len() - ".jsonl".len()].to_string(), n.clone())
            }
            _ => (today.clone(), journal_name(&today)),
        };
        let path = cfg.dir.join(&file_name);
        let file = if path.exists() { DurableFile::open(&path).map_err(io(&path))? } else { DurableFile::lazy(&path) };
        status.seq.store(rec.chain.seq, Ordering::Relaxed);
        status.synced_seq.store(rec.chain.seq, Ordering::Relaxed);
        let mut w = Self {
            cfg,
            synced: rec.chain.clone(),
            head_seq: 0,
            chain: rec.chain,
            day,
            day_number: u64::MAX,
            file,
            synced_file_name: newest_name.unwrap_or_else(|| file_name.clone()),
            file_name,
            sessions: HashMap::default(),
            touched: Vec::new(),
            touched_before: Vec::new(),
            pcap_names: HashSet::new(),
            comment: String::new(),
            body: Vec::with_capacity(1024),
            line: Vec::with_capacity(1024),
            closing: Vec::new(),
            healthy,
            status,
            failure: None,
            next_retry: Instant::now(),
            forward,
            slices: Slices { pacer: None, start: Instant::now(), queues: Vec::new() },
            syncer: None,
            in_flight: None,
            pcap_fd: None,
            captures_due: Instant::now(),
        };
        if w.cfg.pcap {
            w.pcap_dir().map_err(io(&w.cfg.dir.join(PCAP_DIR)))?;
        }
        let mut start = Fields::new("audit_start");
        start
            .put("pid", std::process::id())
            .put("version", env!("CARGO_PKG_VERSION"))
            .put("continues_seq", w.chain.seq);
        w.seal(now_us, now_us, start, Severity::Notice);
        if let Some((path, bytes)) = rec.torn {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            log::warn!("audit: {}: cut a torn last line ({bytes} bytes) left by a crash", path.display());
            let detail = format!("{name}: {bytes} bytes after the last complete line were cut (unclean stop)");
            let mut m = anomaly_fields(None, "torn_tail", &detail);
            m.put("file", name.as_str()).put("bytes", bytes);
            w.seal(now_us, now_us, m, Severity::Warning);
        }
        Ok(w)
    }

    /// Takes turns with the dp cores through `pacer` (the writer shares
    /// their CPU).
    pub fn pace(&mut self, pacer: Arc<Pacer>) {
        self.slices.pacer = Some(pacer);
    }

    /// Syncs, and forwards to syslog, on threads of their own from now on
    /// (started from the writer's thread, so they run where the writer
    /// does); `bell` is the writer's. A thread that cannot be started is
    /// logged, and the writer does that work itself.
    pub fn start_threads(&mut self, bell: Arc<Doorbell>) {
        match Syncer::spawn(bell) {
            Ok(s) => self.syncer = Some(s),
            Err(e) => log::warn!("audit: no sync thread ({e}); the writer syncs itself"),
        }
        if let Some(Forward::Here(f)) = self.forward.take() {
            self.forward = Some(match Forwarding::spawn(f, self.status.clone()) {
                Ok(t) => Forward::Thread(t),
                Err((f, e)) => {
                    log::warn!("audit: no syslog thread ({e}); the writer forwards itself");
                    Forward::Here(f)
                }
            });
        }
    }

    /// Bytes accepted and not yet synced (journal and captures; a capture
    /// that took more bytes while a sync runs counts those it covers twice
    /// until it ends).
    pub fn pending_bytes(&self) -> usize {
        self.file.unsynced()
            + self
                .touched
                .iter()
                .filter_map(|id| self.sessions.get(id)?.capture.as_ref())
                .map(Capture::pending)
                .sum::<usize>()
            + self.closing.iter().map(|(_, c)| c.pending()).sum::<usize>()
            + self.in_flight.as_ref().map_or(0, |f| f.bytes)
    }

    pub fn healthy(&self) -> bool {
        self.failure.is_none()
    }

    /// The chain head (last record sealed).
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Seals `fields` as the next record; `now_us` decides the file (daily
    /// rotation), `ts_us` is the record's time.
    fn seal(&mut self, now_us: u64, ts_us: u64, fields: Fields<'_>, severity: Severity) {
        if now_us / 86_400_000_000 != self.day_number {
            let today = chain::date(now_us);
            if today > self.day {
                self.rotate(today.clone(), now_us);
            }
            if today <= self.day {
                // Rotated (or the clock is behind the file): settled for today.
                self.day_number = now_us / 86_400_000_000;
            }
        }
        match &mut self.forward {
            Some(f) => {
                let event = fields.event().to_string();
                self.chain.seal_into(ts_us, fields, &mut self.body, &mut self.line);
                let (seq, hash) = (self.chain.seq, &self.chain.hash);
                // UTF-8 by construction (`seal_into`): this borrows.
                let line = String::from_utf8_lossy(&self.line);
                match f {
                    Forward::Here(f) => f.push(ts_us, &event, seq, hash, severity, &line),
                    Forward::Thread(f) => f.push(ts_us, &event, seq, hash, severity, &line),
                }
            }
            None => self.chain.seal_into(ts_us, fields, &mut self.body, &mut self.line),
        }
        self.file.append(&self.line);
        self.status.seq.store(self.chain.seq, Ordering::Relaxed);
    }

    /// Starts the file of `day` once everything before is synced (if the
    /// disk fails, records keep going to the current file until it works).
    fn rotate(&mut self, day: String, now_us: u64) {
        // A commit in flight covers bytes of this file: it lands first.
        self.settle();
        if self.file.unsynced() > 0 {
            if self.failure.is_some() {
                return;
            }
            if let Err(e) = self.sync_all() {
                // The outage starts now (sessions refused, retries paced),
                // not at the next commit after a full sync tried per record.
                self.fail(now_us, e);
                return;
            }
        }
        let name = journal_name(&day);
        log::info!("audit: rotating to {name} at seq {}", self.chain.seq + 1);
        self.file = DurableFile::lazy(&self.cfg.dir.join(&name));
        self.file_name = name;
        self.day = day;
    }

    /// Takes one record from a dp core.
    pub fn ingest(&mut self, rec: &AuditRecord, now_us: u64) {
        let sid = SessionHex::new(rec.session);
        let sid = sid.as_str();
        let ts = rec.ts_us;
        let mut severity = Severity::Notice;
        let m = match &rec.event {
            Event::SessionOpen(o) => {
                let mut log = SessionLog {
                    protocol: o.protocol.as_str().to_string(),
                    capture: None,
                    enip: None,
                    pcap: None,
                    requests: 0,
                    denied: 0,
                    touched: true,
                };
                self.touched.push(rec.session);
                if self.cfg.pcap {
                    let name = self.pcap_name(sid);
                    let header = Header {
                        session: sid,
                        user: o.user.as_str(),
                        roles: o.roles.as_str(),
                        asset_name: o.asset_name.as_str(),
                        protocol: o.protocol.as_str(),
                    };
                    let path = self.cfg.dir.join(PCAP_DIR).join(&name);
                    log.capture = Some(Capture::create(&path, &header, o.client, o.asset, ts));
                    if o.protocol.as_str() == "enip" {
                        log.enip = Some(Box::default());
                    }
                    self.pcap_names.insert(name.clone());
                    log.pcap = Some(name);
                }
                let mut m = Fields::new("session_open");
                m.put("session", sid).put("user", o.user.as_str());
                m.put(
                    "roles",
                    Val::List(o.roles.as_str().split(',').filter(|r| !r.is_empty()).map(Into::into).collect()),
                );
                m.put("client", o.client.to_string()).put("endpoint", o.endpoint.to_string());
                m.put("asset", o.asset_name.as_str()).put("asset_addr", o.asset.to_string());
                m.put("protocol", o.protocol.as_str());
                m.put("tls_version", o.tls_version.as_str()).put("tls_cipher", o.tls_cipher.as_str());
                m.put("ticket", opt_text(o.ticket.as_str())).put("pcap", log.pcap.clone());
                if o.user.truncated() || o.roles.truncated() || o.asset_name.truncated() {
                    m.put("truncated", true);
                }
                self.sessions.insert(rec.session, log);
                m
            }
            Event::Request(r) => {
                let bytes = r.payload.as_bytes();
                // One lookup of the session's protocol for the whole record.
                let (modbus, dnp3, enip) = match self.protocol_of(rec.session) {
                    None => (true, false, false),
                    Some(p) => (p == "modbus", p == "dnp3", p == "enip"),
                };
                let mut m = Fields::new("request");
                m.put("session", sid).put("req", r.seq);
                if let Some(u) = r.decoded.unit_op {
                    if dnp3 {
                        dnp3_fields(&mut m, r.decoded.function, &u, r.verdict == Verdict::Deny);
                    } else if enip {
                        enip_fields(&mut m, r.decoded.function, &u, bytes);
                    } else {
                        s7_fields(&mut m, r.decoded.function, &u);
                    }
                } else {
                    m.put("unit", r.decoded.unit).put("function", r.decoded.function);
                    if modbus {
                        if let Some(name) = modbus_function_name(r.decoded.function) {
                            m.put("function_name", name);
                        }
                    }
                    m.put("table", r.decoded.table.map(|t| t.as_str()));
                    if r.decoded.table.is_some() {
                        m.put("address", r.decoded.address).put("count", r.decoded.count);
                    }
                }
                m.put("verdict", r.verdict.as_str()).put("rule", r.rule);
                m.put("rule_name", opt_text(r.rule_name.as_str())).put("exception", r.exception);
                payload_fields(&mut m, bytes, r.payload.total());
                let denied = r.verdict == Verdict::Deny;
                if denied {
                    severity = Severity::Warning;
                }
                if let Some(s) = self.sessions.get_mut(&rec.session) {
                    s.requests += 1;
                    s.denied += u64::from(denied);
                    if !s.touched {
                        s.touched = true;
                        self.touched.push(rec.session);
                    }
                    if let (Some(e), false) = (&mut s.enip, denied) {
                        e.request(r.seq, bytes, r.payload.total() as usize);
                    }
                    if let Some(c) = &mut s.capture {
                        use std::fmt::Write as _;
                        let rule = if r.rule_name.is_empty() { "default" } else { r.rule_name.as_str() };
                        let comment = &mut self.comment;
                        comment.clear();
                        let _ = write!(comment, "req {} {} (rule {rule})", r.seq, r.verdict.as_str());
                        c.data(ts, Peer::Client, bytes, Some(comment));
                        if let (true, Some(code), true) = (denied, r.exception, modbus && bytes.len() >= 8) {
                            // The gate answered for the asset: show it.
                            let ex = [bytes[0], bytes[1], 0, 0, 0, 3, bytes[6], bytes[7] | 0x80, code];
                            c.data(
                                ts,
                                Peer::Asset,
                                &ex,
                                Some("exception sent by the gate; the asset never saw the request"),
                            );
                        }
                        if let (true, Some(u)) = (denied, r.decoded.unit_op) {
                            // The gate's refusal, rebuilt by the code that sent it.
                            use dataplane::inspect::{dnp3 as d, enip as e, s7, MAX_REFUSAL};
                            let mut out = [0u8; MAX_REFUSAL];
                            let f = r.decoded.function;
                            let n = if dnp3 {
                                d::refusal(bytes, f, u.reference as u8, u.error, &mut out)
                            } else if enip {
                                let none = e::Connections::default();
                                let learned = s.enip.as_ref().map_or(&none, |e| &e.connections);
                                e::refusal(bytes, f, u.error, learned, &mut out)
                            } else {
                                s7::refusal(bytes, f, u.error, &mut out)
                            };
                            if let Some(n) = n {
                                let note = "refusal sent by the gate; the asset never saw the request";
                                c.data(ts, Peer::Asset, &out[..n], Some(note));
                            }
                        }
                    }
                }
                m
            }
            Event::Response(r) => {
                let bytes = r.payload.as_bytes();
                let mut m = Fields::new("response");
                m.put("session", sid).put("req", r.seq).put("latency_us", r.latency_us);
                let modbus = self.protocol_of(rec.session).is_none_or(|p| p == "modbus");
                if modbus && bytes.len() >= 9 && bytes[7] & 0x80 != 0 {
                    m.put("exception", bytes[8]);
                }
                payload_fields(&mut m, bytes, r.payload.total());
                if let Some(s) = self.touch(rec.session) {
                    if let Some(e) = &mut s.enip {
                        e.response(r.seq, bytes);
                    }
                    if let Some(c) = &mut s.capture {
                        c.data(ts, Peer::Asset, bytes, None);
                    }
                }
                m
            }
            Event::Data(d) => {
                let bytes = d.payload.as_bytes();
                let mut m = Fields::new("data");
                m.put("session", sid).put("dir", d.direction.as_str());
                payload_fields(&mut m, bytes, d.payload.total());
                let peer = if d.direction == Direction::Up { Peer::Client } else { Peer::Asset };
                if let Some(c) = self.touch(rec.session).and_then(|s| s.capture.as_mut()) {
                    c.data(ts, peer, bytes, None);
                }
                m
            }
            Event::SessionClose(c) => {
                let mut m = Fields::new("session_close");
                m.put("session", sid).put("reason", c.reason.as_str());
                m.put("detail", opt_text(c.detail.as_str()));
                m.put("bytes_up", c.bytes_up).put("bytes_down", c.bytes_down).put("duration_us", c.duration_us);
                let log = self.sessions.remove(&rec.session);
                if let Some(name) = log.as_ref().and_then(|l| l.pcap.as_ref()) {
                    self.pcap_names.remove(name);
                }
                m.put("requests", log.as_ref().map(|l| l.requests)).put("denied", log.as_ref().map(|l| l.denied));
                let (mut pcap, mut digest, mut packets) = (None, None, None);
                if let Some(SessionLog { capture: Some(mut cap), pcap: Some(name), .. }) = log {
                    cap.close(ts, Some(&format!("session closed: {}", c.reason.as_str())));
                    pcap = Some(name);
                    digest = Some(cap.sha256());
                    packets = Some(cap.packets());
                    self.closing.push((rec.session, cap));
                }
                m.put("pcap", pcap).put("pcap_sha256", digest).put("pcap_packets", packets);
                m
            }
            Event::Anomaly(a) => {
                severity = Severity::Warning;
                let mut m = anomaly_fields((rec.session != 0).then_some(sid), a.kind.as_str(), a.detail.as_str());
                m.put("origin", "dataplane");
                m
            }
        };
        self.seal(now_us, ts, m, severity);
    }

    /// Takes one control-side event posted at `ts_us`.
    pub fn ingest_control(&mut self, ts_us: u64, ev: ControlEvent, now_us: u64) {
        let mut severity = Severity::Notice;
        let m = match &ev {
            ControlEvent::Auth(a) => {
                let mut m = Fields::new("auth");
                m.put("session", (a.session != 0).then(|| session_text(a.session)));
                m.put("user", a.user.as_str()).put("source", a.source.to_string());
                m.put("endpoint", a.endpoint.to_string()).put("method", a.method.as_str());
                m.put("purpose", a.purpose.as_str()).put("asset", a.asset.as_deref());
                m.put("service", a.service.as_deref());
                m.put("result", if a.success { "success" } else { "failure" }).put("reason", a.reason.as_deref());
                m.put("roles", Val::List(a.roles.iter().map(|r| r.as_str().into()).collect()));
                m.put("ticket", a.ticket_id.as_deref()).put("expires_unix", a.expires_unix);
                if !a.success {
                    severity = Severity::Warning;
                }
                m
            }
            ControlEvent::DeniedFlow(d) => {
                severity = Severity::Warning;
                let mut m = Fields::new("denied_flow");
                m.put("source", d.source.to_string()).put("destination", d.destination.to_string());
                m.put("port", d.port).put("reason", d.reason.as_str());
                m.put("count", d.count).put("interval_s", d.interval_s);
                m
            }
            ControlEvent::PolicyReload(p) => {
                let mut m = Fields::new("policy_reload");
                m.put("generation", p.generation).put("file", p.file.as_str()).put("sha256", p.digest.as_deref());
                m.put("result", if p.errors.is_empty() { "accepted" } else { "refused" });
                if !p.errors.is_empty() {
                    severity = Severity::Warning;
                }
                m.put("errors", Val::List(p.errors.iter().map(|e| e.as_str().into()).collect()));
                m
            }
            ControlEvent::Anomaly { kind, detail } => {
                severity = Severity::Warning;
                let mut m = anomaly_fields(None, kind, detail);
                m.put("origin", "control");
                m
            }
        };
        self.seal(now_us, ts_us, m, severity);
    }

    fn protocol_of(&self, session: u64) -> Option<&str> {
        self.sessions.get(&session).map(|s| s.protocol.as_str())
    }

    /// The session's log, marked touched (its capture is written at the
    /// next capture commit).
    fn touch(&mut self, session: u64) -> Option<&mut SessionLog> {
        let s = self.sessions.get_mut(&session)?;
        if !s.touched {
            s.touched = true;
            self.touched.push(session);
        }
        Some(s)
    }

    /// `<session>.pcapng`, or `<session>-N.pcapng` if taken (a restarted
    /// gate numbers sessions again).
    fn pcap_name(&self, sid: &str) -> String {
        let dir = self.cfg.dir.join(PCAP_DIR);
        let taken = |n: &str| self.pcap_names.contains(n) || dir.join(n).exists();
        let first = format!("{sid}.pcapng");
        if !taken(&first) {
            return first;
        }
        (2..).map(|k| format!("{sid}-{k}.pcapng")).find(|n| !taken(n)).unwrap_or(first)
    }

    /// Writes what was accepted (no sync). Errors turn the writer unhealthy.
    /// Nothing is written while a group commit runs on the sync thread: a
    /// failed write cuts its file back to the last synced length, which
    /// would take away bytes that commit is about to name in `audit.head`.
    pub fn flush(&mut self, now_us: u64) {
        if self.failure.is_some() || self.in_flight.is_some() {
            return;
        }
        let r = self.flush_inner();
        if let Err(e) = r {
            self.fail(now_us, e);
        }
    }

    fn flush_inner(&mut self) -> std::io::Result<()> {
        self.write_captures(false)?;
        self.write_journal()
    }

    /// Writes the journal's accepted bytes, in pieces (a paced writer waits
    /// for a turn between them).
    fn write_journal(&mut self) -> std::io::Result<()> {
        while !self.file.flush_lines_upto(WRITE_PIECE)? {
            self.slices.check();
        }
        self.slices.check();
        Ok(())
    }

    /// Syncs captures, then the journal, then `audit.head`. On success after
    /// a failure, the writer turns healthy and records the outage.
    pub fn sync(&mut self, now_us: u64) -> bool {
        match self.sync_all() {
            Ok(()) => {
                if let Some(f) = self.failure.take() {
                    log::warn!(
                        "audit: writing works again after {:.1} s ({}); {} record(s) are on disk",
                        (now_us.saturating_sub(f.since_us)) as f64 / 1e6,
                        f.error,
                        self.chain.seq
                    );
                    if let Ok(mut e) = self.status.last_error.lock() {
                        *e = None;
                    }
                    let mut m = Fields::new("audit_outage");
                    m.put("since", chain::rfc3339_micros(f.since_us)).put("until", chain::rfc3339_micros(now_us));
                    m.put("error", f.error);
                    self.seal(now_us, now_us, m, Severity::Warning);
                    self.healthy.store(true, Ordering::Release);
                    if let Err(e) = self.sync_all() {
                        self.fail(now_us, e);
                        return false;
                    }
                }
                true
            }
            Err(e) => {
                self.fail(now_us, e);
                false
            }
        }
    }

    /// Writes the captures of the closed sessions not yet synced and of the
    /// sessions touched since the last capture commit (`all`; otherwise
    /// only those holding [`CAPTURE_WRITE_BYTES`]), each in pieces like the
    /// journal; whether any needs a sync (bytes, or a new directory entry).
    fn write_captures(&mut self, all: bool) -> std::io::Result<bool> {
        fn write(f: &mut DurableFile, slices: &mut Slices) -> std::io::Result<bool> {
            while !f.flush_upto(WRITE_PIECE)? {
                slices.check();
            }
            slices.check();
            f.write_for_syncfs()
        }
        let mut any = false;
        for id in &self.touched {
            if let Some(c) = self.sessions.get_mut(id).and_then(|s| s.capture.as_mut()) {
                if all || c.file().unwritten() >= CAPTURE_WRITE_BYTES {
                    any |= write(c.file(), &mut self.slices)?;
                }
            }
        }
        for (_, c) in &mut self.closing {
            any |= write(c.file(), &mut self.slices)?;
        }
        Ok(any)
    }

    /// Syncs everything accepted, here and now (after the sync thread's
    /// group commit, if one runs).
    fn sync_all(&mut self) -> std::io::Result<()> {
        self.settle();
        let (job, flight) = self.prepare(true)?;
        let r = job.run();
        self.slices.restart();
        self.land(flight, r)
    }

    /// Writes everything accepted (the open sessions' captures only with
    /// `all_captures`) and makes the group commit that syncs it (for this
    /// thread or the sync thread).
    fn prepare(&mut self, all_captures: bool) -> std::io::Result<(SyncJob, InFlight)> {
        // Captures: written, then one syncfs for all of them (and their new
        // directory entries). An fdatasync per capture was 100 journal
        // commits per interval with 100 busy sessions, and it showed in the
        // disk-audited gate's tail latency.
        if all_captures {
            self.captures_due = Instant::now() + CAPTURE_COMMIT;
        }
        let syncfs = self.write_captures(all_captures)?;
        let pcap_dir = if syncfs { Some(self.pcap_dir()?) } else { None };
        self.write_journal()?;
        let journal = self.file.ticket()?;
        // Nothing fails from here on: what the sync covers moves into it.
        // Between capture commits the open sessions' captures stay touched
        // and unmarked: a capture written early (a big one) is covered by
        // the syncfs of its own commit later.
        let mut bytes = 0;
        let mut captures = Vec::with_capacity(if all_captures { self.touched.len() } else { 0 });
        if all_captures {
            for id in &self.touched {
                if let Some(s) = self.sessions.get_mut(id) {
                    s.touched = false;
                    if let Some(c) = s.capture.as_mut() {
                        let m = c.file().mark();
                        bytes += m.bytes();
                        captures.push((*id, m));
                    }
                }
            }
            // Sessions idle for a whole capture interval give their
            // descriptor back.
            for id in &self.touched_before {
                if let Some(s) = self.sessions.get_mut(id) {
                    if let (false, Some(c)) = (s.touched, s.capture.as_mut()) {
                        c.file().release();
                    }
                }
            }
            self.touched_before = std::mem::take(&mut self.touched);
        }
        let closing = std::mem::take(&mut self.closing);
        bytes += closing.iter().map(|(_, c)| c.pending()).sum::<usize>();
        let head = self.chain.seq != self.head_seq;
        let flight = InFlight {
            journal: journal.as_ref().map(|t| t.mark),
            captures,
            closing,
            chain: self.chain.clone(),
            file_name: self.file_name.clone(),
            head,
            bytes,
            started: Instant::now(),
            warn_after: SLOW_SYNC_WARN,
        };
        let job = SyncJob {
            pcap_dir,
            journal,
            head: head.then(|| (self.cfg.dir.clone(), head_text(&self.file_name, &self.chain))),
        };
        Ok((job, flight))
    }

    /// The end of a group commit: on success its bytes are durable and
    /// `audit.head` names its last record; on failure everything it covered
    /// is written again (from each file's last good sync) before the next.
    fn land(&mut self, flight: InFlight, r: std::io::Result<()>) -> std::io::Result<()> {
        if let Err(e) = r {
            self.file.sync_failed();
            for &(id, _) in &flight.captures {
                if let Some(c) = self.capture_of(id) {
                    c.file().sync_failed();
                }
                // Written again at the next sync.
                if let Some(s) = self.sessions.get_mut(&id).filter(|s| !s.touched) {
                    s.touched = true;
                    self.touched.push(id);
                }
            }
            for (id, mut c) in flight.closing {
                c.file().sync_failed();
                self.closing.push((id, c));
            }
            return Err(e);
        }
        if let Some(m) = flight.journal {
            self.file.synced_through(m);
        }
        for (id, m) in flight.captures {
            if let Some(c) = self.capture_of(id) {
                c.file().synced_through(m);
            }
        }
        self.synced = flight.chain;
        self.synced_file_name = flight.file_name;
        self.status.synced_seq.store(self.synced.seq, Ordering::Relaxed);
        if flight.head {
            self.head_seq = self.synced.seq;
        }
        Ok(())
    }

    /// The captures' directory, opened once (with the writer when it
    /// writes captures; see [`SyncJob`]).
    fn pcap_dir(&mut self) -> std::io::Result<Arc<File>> {
        if let Some(d) = &self.pcap_fd {
            return Ok(d.clone());
        }
        let d = Arc::new(File::open(self.cfg.dir.join(PCAP_DIR))?);
        self.pcap_fd = Some(d.clone());
        Ok(d)
    }

    /// The capture of session `id`, open or closed and not yet synced.
    fn capture_of(&mut self, id: u64) -> Option<&mut Capture> {
        if let Some(c) = self.sessions.get_mut(&id).and_then(|s| s.capture.as_mut()) {
            return Some(c);
        }
        self.closing.iter_mut().find(|(k, _)| *k == id).map(|(_, c)| c)
    }

    /// Starts the next group commit on the sync thread (or makes it here
    /// without one).
    fn start_sync(&mut self, now_us: u64) {
        if self.syncer.is_none() {
            self.sync(now_us);
            return;
        }
        match self.prepare(Instant::now() >= self.captures_due) {
            Ok((job, flight)) => {
                let sent = self.syncer.as_ref().and_then(|s| s.jobs.as_ref()).is_some_and(|j| j.send(job).is_ok());
                if sent {
                    self.in_flight = Some(flight);
                } else {
                    let gone = self.sync_thread_gone();
                    if let Err(e) = self.land(flight, Err(gone)) {
                        self.fail(now_us, e);
                    }
                }
            }
            Err(e) => self.fail(now_us, e),
        }
    }

    /// Lands the sync thread's group commit if it has ended.
    fn poll_sync(&mut self, now_us: u64) {
        if self.in_flight.is_none() {
            return;
        }
        let r = match self.syncer.as_ref().map(|s| s.done.try_recv()) {
            Some(Err(TryRecvError::Empty)) => {
                let pending = self.pending_bytes();
                if let Some(f) = self.in_flight.as_mut().filter(|f| f.started.elapsed() >= f.warn_after) {
                    log::warn!(
                        "audit: the disk has not confirmed a sync for {:.0} s; records after seq {} ({} bytes) wait \
                         for it, in memory (sessions wait once {} bytes do)",
                        f.started.elapsed().as_secs_f64(),
                        self.synced.seq,
                        pending,
                        self.cfg.max_pending_bytes
                    );
                    f.warn_after *= 2;
                }
                return;
            }
            Some(Ok(r)) => r,
            Some(Err(TryRecvError::Disconnected)) | None => Err(self.sync_thread_gone()),
        };
        if let Some(flight) = self.in_flight.take() {
            if flight.warn_after > SLOW_SYNC_WARN {
                log::warn!("audit: the disk confirmed the sync after {:.1} s", flight.started.elapsed().as_secs_f64());
            }
            if let Err(e) = self.land(flight, r) {
                self.fail(now_us, e);
            }
        }
    }

    /// The sync thread has died (it only can by panicking): the writer
    /// syncs itself from now on; the error its commit ends with.
    fn sync_thread_gone(&mut self) -> std::io::Error {
        self.syncer = None;
        std::io::Error::other("the audit sync thread is gone")
    }

    /// Waits for the sync thread's group commit, if one runs, and lands it.
    fn settle(&mut self) {
        let Some(flight) = self.in_flight.take() else { return };
        let r = match self.syncer.as_ref().map(|s| s.done.recv()) {
            Some(Ok(r)) => r,
            _ => Err(self.sync_thread_gone()),
        };
        self.slices.restart();
        if let Err(e) = self.land(flight, r) {
            self.fail(unix_micros(), e);
        }
    }

    fn fail(&mut self, now_us: u64, e: std::io::Error) {
        let error = format!("{}: {e}", self.cfg.dir.display());
        if let Ok(mut last) = self.status.last_error.lock() {
            *last = Some(error.clone());
        }
        match &mut self.failure {
            None => {
                log::error!(
                    "audit: cannot write: {error}; new sessions are refused, existing ones {:?}; {} bytes held in memory, retrying every {} ms",
                    self.cfg.on_failure,
                    self.pending_bytes(),
                    self.cfg.retry_ms
                );
                self.healthy.store(false, Ordering::Release);
                self.status.outages.fetch_add(1, Ordering::Relaxed);
                self.failure = Some(Failure { since_us: now_us, error });
            }
            Some(f) if f.error != error => {
                log::error!("audit: still cannot write: {error}");
                f.error = error;
            }
            Some(_) => {}
        }
        self.next_retry = Instant::now() + Duration::from_millis(self.cfg.retry_ms.max(1));
    }

    /// Whether anything is waiting for a sync, with [`Writer::pending_bytes`]
    /// already counted (the count walks the touched sessions).
    fn dirty_with(&self, pending: usize) -> bool {
        pending > 0 || self.synced.seq != self.chain.seq
    }

    /// How long until a group commit is wanted (zero: now), `interval`
    /// after the last one (`since_last` ago), or `None` if nothing waits:
    /// the journal's records and the closed sessions' captures want the
    /// next interval, open sessions' captures alone their turn as well
    /// ([`CAPTURE_COMMIT`]). `pending` is [`Writer::pending_bytes`].
    fn commit_wait(&self, pending: usize, since_last: Duration, interval: Duration, now: Instant) -> Option<Duration> {
        let next = interval.saturating_sub(since_last);
        if self.synced.seq != self.chain.seq || self.file.unsynced() > 0 || !self.closing.is_empty() {
            return Some(next);
        }
        self.dirty_with(pending).then(|| next.max(self.captures_due.saturating_duration_since(now)))
    }

    /// The thread body: runs until `stop`, then drains and syncs.
    pub fn run(
        mut self,
        queues: &[Arc<AuditQueue>],
        rx: &Receiver<(u64, ControlEvent)>,
        bell: &Doorbell,
        stop: &AtomicBool,
    ) {
        let interval = Duration::from_millis(self.cfg.fsync_interval_ms.max(1));
        self.slices.queues = queues.to_vec();
        let mut last_sync = Instant::now();
        let mut stop_seen: Option<Instant> = None;
        let mut pending = self.pending_bytes();
        loop {
            if stop_seen.is_none() && stop.load(Ordering::Acquire) {
                stop_seen = Some(Instant::now());
                // The cores have stopped: nobody gives turns any more.
                self.slices.pacer = None;
            }
            let now_us = unix_micros();
            let mut work = 0;
            self.poll_sync(now_us);
            // While a group commit runs on the sync thread the writer rests,
            // as it did when it made the commit itself: its wake-ups would
            // take the CPU from a dp core sharing it. It takes records all
            // the same once a core's queue is a quarter full, so a slow disk
            // does not fill them.
            // The sink's events (auth results, reloads: few) are taken all
            // the same, or a commit of seconds would fill the sink and refuse
            // logins while the writer is healthy.
            let resting =
                self.in_flight.is_some() && stop_seen.is_none() && !queues.iter().any(|q| q.len() > q.capacity() / 4);
            if pending < self.cfg.max_pending_bytes {
                while let Ok((ts, ev)) = rx.try_recv() {
                    self.ingest_control(ts, ev, now_us);
                    work += 1;
                    if work >= INGEST_BATCH {
                        break;
                    }
                    self.slices.ingested(work);
                }
            }
            if pending < self.cfg.max_pending_bytes && !resting {
                for q in queues {
                    for _ in 0..INGEST_BATCH {
                        let Some(rec) = q.pop() else { break };
                        self.ingest(&rec, now_us);
                        work += 1;
                        self.slices.ingested(work);
                    }
                }
            }
            let now = Instant::now();
            if self.failure.is_none() {
                if work > 0 && self.file.unwritten() >= FLUSH_BYTES {
                    self.flush(now_us);
                }
                // One group commit at a time: while the last one runs, the
                // next interval's records wait in memory.
                let since = now.duration_since(last_sync);
                if self.in_flight.is_none()
                    && since >= interval
                    && self.commit_wait(self.pending_bytes(), since, interval, now) == Some(Duration::ZERO)
                {
                    self.start_sync(now_us);
                    last_sync = now;
                }
            } else if now >= self.next_retry {
                self.sync(now_us);
                last_sync = now;
            }
            if let Some(Forward::Here(f)) = &mut self.forward {
                f.pump(now);
                f.publish(&self.status);
            }
            // Only this thread changes it: the next pass starts from this.
            pending = self.pending_bytes();
            self.status.pending_bytes.store(pending as u64, Ordering::Relaxed);
            if let Some(t) = stop_seen {
                let drained = work == 0 && rx.is_empty() && queues.iter().all(|q| q.is_empty());
                if drained {
                    break;
                }
                if t.elapsed() > STOP_DEADLINE {
                    // Not silent: what the stop leaves behind is counted.
                    log::error!(
                        "audit: stopping after {} s with {} records in the cores' queues and {} control events not taken (the disk: {})",
                        STOP_DEADLINE.as_secs(),
                        queues.iter().map(|q| q.len()).sum::<usize>(),
                        rx.len(),
                        self.status.last_error.lock().ok().and_then(|e| e.clone()).unwrap_or_else(|| "no error".into())
                    );
                    break;
                }
            }
            if work == 0 {
                // Sink events wake the writer at once; core queues are
                // looked at every IDLE_WAIT_MS (an idle gate's writer wakes
                // 200 times a second), or sooner when a group commit is due.
                // One poll(2) on the sink's eventfd: a channel's blocking
                // receive spins and calls sched_yield several times before
                // it parks, and on a CPU shared with a dp core each yield
                // is a context switch (the writer's CPU at 20k req/s was a
                // third scheduling).
                if resting && self.in_flight.is_some() {
                    // The sync thread rings when the commit ends.
                    self.slices.idle(bell, REST_MS);
                    continue;
                }
                if rx.is_empty() || pending >= self.cfg.max_pending_bytes {
                    // Events waiting are no reason to loop while nothing may
                    // be taken (too much held in memory for a failing disk).
                    let commit_due = (self.in_flight.is_none() && self.failure.is_none())
                        .then(|| self.commit_wait(pending, now.duration_since(last_sync), interval, now))
                        .flatten();
                    self.slices.idle(bell, idle_wait_ms(commit_due));
                } else {
                    bell.clear();
                }
            }
        }
        self.finish();
    }

    /// Records the stop and syncs, retrying a failing disk for a while.
    pub fn finish(&mut self) {
        let now_us = unix_micros();
        let mut m = Fields::new("audit_stop");
        m.put("open_sessions", self.sessions.len());
        self.seal(now_us, now_us, m, Severity::Notice);
        let deadline = Instant::now() + STOP_DEADLINE;
        while !self.sync(unix_micros()) {
            if Instant::now() > deadline {
                log::error!(
                    "audit: stopping with {} bytes that could not be written (records after seq {}): {}",
                    self.pending_bytes(),
                    self.synced.seq,
                    self.status.last_error.lock().ok().and_then(|e| e.clone()).unwrap_or_default()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(self.cfg.retry_ms.max(1)));
        }
        match &mut self.forward {
            Some(Forward::Here(f)) => {
                f.drain(Instant::now() + Duration::from_secs(2));
                f.publish(&self.status);
            }
            Some(Forward::Thread(f)) => f.finish(),
            None => {}
        }
    }
}

/// Hashes session ids for the writer's session map. The ids are the gate's
/// own (counters, not chosen by a client), so the map needs no
/// flood-resistant hash, and SipHash was 1 % of the writer's profile: one
/// multiply by an odd constant spreads consecutive ids over the buckets
/// (their low bits stay distinct) and fills the high bits the map's
/// control bytes use.
#[derive(Debug, Default, Clone, Copy)]
struct SessionIdHasher(u64);

impl Hasher for SessionIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// `audit.head`'s text: the journal file and the last record synced.
fn head_text(file_name: &str, chain: &Chain) -> String {
    let mut m = Map::new();
    m.insert("file".into(), file_name.into());
    m.insert("seq".into(), chain.seq.into());
    m.insert("hash".into(), chain.hash.clone().into());
    // Strings and integers only: always canonical.
    let mut text = chain::canonical(&Value::Object(m)).unwrap_or_default();
    text.push('\n');
    text
}

/// `audit.head`'s size on disk: one sector, written whole in place.
const HEAD_BLOCK: usize = 512;

/// Makes `text` `dir/audit.head`: one write of [`HEAD_BLOCK`] bytes at
/// offset 0 (the text, padded with spaces), then `fdatasync`. A write
/// within one sector is atomic on disks (PostgreSQL keeps `pg_control`
/// under 512 bytes and rewrites it in place for the same reason), so the
/// head is the old one or the new one. Rewriting it in place allocates and
/// frees nothing: a new file renamed over the old at every group commit
/// freed a block each time, which a file system mounted with `discard`
/// turned into a discard request a commit (perf/README, round fifteen).
/// Readers ignore the padding (JSON allows trailing white space). A text
/// that does not fit (it cannot: a file name, a seq and a hash) replaces
/// the file by a rename instead.
fn write_head(dir: &Path, text: &str) -> std::io::Result<()> {
    let path = dir.join(HEAD);
    if text.len() > HEAD_BLOCK {
        let tmp = dir.join(".audit.head.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        fs::rename(&tmp, &path)?;
        return File::open(dir)?.sync_all();
    }
    let mut block = [b' '; HEAD_BLOCK];
    block[..text.len()].copy_from_slice(text.as_bytes());
    let created = !path.exists();
    let f = fs::OpenOptions::new().write(true).create(true).truncate(false).open(&path)?;
    std::os::unix::fs::FileExt::write_all_at(&f, &block, 0)?;
    if f.metadata()?.len() > HEAD_BLOCK as u64 {
        // A longer head from a rename before: what is past the block goes.
        f.set_len(HEAD_BLOCK as u64)?;
    }
    f.sync_data()?;
    if created {
        // The new name itself must survive a power loss.
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn anomaly_fields<'a>(session: Option<&'a str>, kind: &'a str, detail: &'a str) -> Fields<'a> {
    let mut m = Fields::new("anomaly");
    m.put("session", session).put("kind", kind).put("detail", detail);
    m
}

fn opt_text(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn payload_fields<'a>(m: &mut Fields<'a>, bytes: &'a [u8], total: u32) {
    m.put("bytes", total).put("payload", Val::Hex(bytes));
}

/// An S7comm request's fields: function (and its name), operation, the
/// first variable of a read or write, the error the gate refused it with.
fn s7_fields(m: &mut Fields, function: u8, s7: &dataplane::audit::UnitDecoded) {
    use dataplane::wire::s7 as w;
    m.put("function", function);
    if function & 0xf0 == 0x70 && function != 0x70 {
        m.put("subfunction", s7.subfunction);
    }
    m.put("function_name", s7_function_name(function, s7.subfunction));
    m.put("op", s7.op.as_str());
    if let Some(i) = s7.item {
        let area = match i.area {
            0x81 => "inputs",
            0x82 => "outputs",
            0x83 => "flags",
            0x84 => "db",
            0x1c => "counters",
            0x1d => "timers",
            _ => "other",
        };
        m.put("area", area).put("db", i.db).put("address", i.bit_address / 8).put("count", i.count);
    }
    if s7.error != 0 {
        let error = if s7.error == u16::from(w::ITEM_ACCESS_DENIED) {
            "item 0x03 (object access not allowed)".to_string()
        } else {
            format!("0x{:04x}", s7.error)
        };
        m.put("s7_error", error);
    }
}

/// A name for an S7comm function (`0x70 | group` for userdata, COTP codes
/// for connection TPDUs).
fn s7_function_name(function: u8, subfunction: u8) -> &'static str {
    use dataplane::wire::s7 as w;
    match function {
        w::READ_VAR => "ReadVar",
        w::WRITE_VAR => "WriteVar",
        w::SETUP_COMMUNICATION => "SetupCommunication",
        w::REQUEST_DOWNLOAD => "RequestDownload",
        w::DOWNLOAD_BLOCK => "DownloadBlock",
        w::DOWNLOAD_ENDED => "DownloadEnded",
        w::START_UPLOAD => "StartUpload",
        w::UPLOAD => "Upload",
        w::END_UPLOAD => "EndUpload",
        w::PI_SERVICE => "PiService",
        w::PLC_STOP => "PlcStop",
        // No userdata group 0: 0x70 is COTP's error TPDU.
        0x70 => "CotpError",
        0x71 => "UserdataProgrammer",
        0x72 => "UserdataCyclicData",
        0x73 => "UserdataBlockInfo",
        0x74 if subfunction == 1 => "UserdataReadSzl",
        0x74 => "UserdataCpu",
        0x75 => "UserdataSecurity",
        0x77 if subfunction == 2 || subfunction == 4 => "UserdataSetClock",
        0x77 => "UserdataReadClock",
        f if f & 0xf0 == 0x70 => "Userdata",
        f => match f & 0xf0 {
            0xe0 => "CotpConnect",
            0x80 => "CotpDisconnect",
            0xc0 => "CotpDisconnectConfirm",
            _ => "Unknown",
        },
    }
}

/// A DNP3 unit's fields: function (and its name), application sequence,
/// operation, the IIN2 bits the gate refused it with.
fn dnp3_fields(m: &mut Fields, function: u8, u: &dataplane::audit::UnitDecoded, denied: bool) {
    use dataplane::wire::dnp3 as w;
    m.put("function", function).put("function_name", dnp3_function_name(function));
    m.put("app_seq", u.reference).put("op", u.op.as_str());
    // The gate's answer: IIN1 as the outstation last reported it, IIN2; a
    // refused control without IIN2 bits was echoed with its status.
    let [iin1, iin2] = u.error.to_be_bytes();
    if iin2 == 0 && denied && matches!(function, w::SELECT | w::OPERATE | w::DIRECT_OPERATE) {
        m.put("dnp3_error", format!("control status {} (not authorized)", w::STATUS_NOT_AUTHORIZED)).put("iin1", iin1);
    } else if iin2 != 0 {
        let why = match iin2 {
            dataplane::wire::dnp3::IIN2_NO_FUNC_CODE_SUPPORT => "function code not supported",
            dataplane::wire::dnp3::IIN2_PARAMETER_ERROR => "parameter error",
            _ => "",
        };
        m.put("dnp3_error", format!("IIN2 0x{iin2:02x} ({why})")).put("iin1", iin1);
    }
}

/// An EtherNet/IP unit's fields: the CIP service (and its name), the
/// class it addresses, the tag a symbolic path names, the operation, the
/// status the gate refused it with.
fn enip_fields(m: &mut Fields, function: u8, u: &dataplane::audit::UnitDecoded, bytes: &[u8]) {
    use dataplane::wire::enip as w;
    m.put("function", function).put("function_name", enip_service_name(function, u.reference));
    m.put("class", u.reference).put("op", u.op.as_str());
    let cip = w::Encap::parse(bytes).and_then(|e| e.cpf()).and_then(|c| w::Cip::parse(c.message));
    if let Some(tag) = cip.map(|c| c.embedded().unwrap_or(c).symbol).filter(|s| !s.is_empty()) {
        m.put("tag", String::from_utf8_lossy(tag).into_owned());
    }
    if u.error != 0 {
        // Encapsulation statuses are the small numbers the gate uses for
        // messages with no CIP request in them.
        let error = match (u32::from(u.error), function) {
            (w::STATUS_INVALID_COMMAND | w::STATUS_INSUFFICIENT_MEMORY | w::STATUS_BAD_DATA, 0) => {
                format!("encapsulation status 0x{:04x}", u.error)
            }
            (_, _) => {
                let why = match u.error as u8 {
                    w::STATUS_PRIVILEGE_VIOLATION => "privilege violation",
                    w::STATUS_RESOURCE_UNAVAILABLE => "resource unavailable",
                    w::STATUS_NOT_ENOUGH_DATA => "not enough data",
                    _ => "",
                };
                format!("CIP 0x{:02x} ({why})", u.error)
            }
        };
        m.put("enip_error", error);
    }
}

/// CIP service names (common services, Logix tag services, Connection
/// Manager services by class).
fn enip_service_name(service: u8, class: u16) -> &'static str {
    use dataplane::wire::enip as w;
    match (service, class) {
        (0, _) => "Encapsulation",
        (w::FORWARD_OPEN, w::CLASS_CONNECTION_MANAGER) => "ForwardOpen",
        (w::LARGE_FORWARD_OPEN, w::CLASS_CONNECTION_MANAGER) => "LargeForwardOpen",
        (w::FORWARD_CLOSE, w::CLASS_CONNECTION_MANAGER) => "ForwardClose",
        (w::UNCONNECTED_SEND, w::CLASS_CONNECTION_MANAGER) => "UnconnectedSend",
        (w::GET_ATTRIBUTES_ALL, _) => "GetAttributesAll",
        (w::SET_ATTRIBUTES_ALL, _) => "SetAttributesAll",
        (w::GET_ATTRIBUTE_LIST, _) => "GetAttributeList",
        (w::SET_ATTRIBUTE_LIST, _) => "SetAttributeList",
        (w::RESET, _) => "Reset",
        (w::START, _) => "Start",
        (w::STOP, _) => "Stop",
        (w::CREATE, _) => "Create",
        (w::DELETE, _) => "Delete",
        (w::MULTIPLE_SERVICE_PACKET, _) => "MultipleServicePacket",
        (w::APPLY_ATTRIBUTES, _) => "ApplyAttributes",
        (w::GET_ATTRIBUTE_SINGLE, _) => "GetAttributeSingle",
        (w::SET_ATTRIBUTE_SINGLE, _) => "SetAttributeSingle",
        (w::RESTORE, _) => "Restore",
        (w::SAVE, _) => "Save",
        (w::READ_TAG, _) => "ReadTag",
        (w::WRITE_TAG, _) => "WriteTag",
        (w::READ_MODIFY_WRITE_TAG, _) => "ReadModifyWriteTag",
        (w::READ_TAG_FRAGMENTED, _) => "ReadTagFragmented",
        (w::WRITE_TAG_FRAGMENTED, _) => "WriteTagFragmented",
        (w::GET_INSTANCE_ATTRIBUTE_LIST, _) => "GetInstanceAttributeList",
        _ => "Unknown",
    }
}

/// DNP3 application function names (IEEE 1815-2012 table 4-1); `0xf0 |
/// link function` for link-layer frames.
fn dnp3_function_name(function: u8) -> &'static str {
    const NAMES: [&str; 34] = [
        "Confirm",
        "Read",
        "Write",
        "Select",
        "Operate",
        "DirectOperate",
        "DirectOperateNoAck",
        "ImmediateFreeze",
        "ImmediateFreezeNoAck",
        "FreezeClear",
        "FreezeClearNoAck",
        "FreezeAtTime",
        "FreezeAtTimeNoAck",
        "ColdRestart",
        "WarmRestart",
        "InitializeData",
        "InitializeApplication",
        "StartApplication",
        "StopApplication",
        "SaveConfiguration",
        "EnableUnsolicited",
        "DisableUnsolicited",
        "AssignClass",
        "DelayMeasure",
        "RecordCurrentTime",
        "OpenFile",
        "CloseFile",
        "DeleteFile",
        "GetFileInfo",
        "AuthenticateFile",
        "AbortFile",
        "ActivateConfig",
        "AuthenticateRequest",
        "AuthenticateRequestNoAck",
    ];
    match function {
        0xf0 => "LinkResetStates",
        0xf2 => "LinkTest",
        0xf9 => "LinkRequestStatus",
        0xe0 => "LinkAck",
        0xe1 => "LinkNack",
        0xeb => "LinkStatus",
        f if f >= 0xe0 => "Link",
        f => NAMES.get(usize::from(f)).copied().unwrap_or("Unknown"),
    }
}

/// Modbus function names in the journal (the `FunctionCode` variants).
fn modbus_function_name(function: u8) -> Option<&'static str> {
    Some(match function & 0x7F {
        1 => "ReadCoils",
        2 => "ReadDiscreteInputs",
        3 => "ReadHoldingRegisters",
        4 => "ReadInputRegisters",
        5 => "WriteSingleCoil",
        6 => "WriteSingleRegister",
        7 => "ReadExceptionStatus",
        8 => "Diagnostics",
        11 => "GetCommEventCounter",
        12 => "GetCommEventLog",
        15 => "WriteMultipleCoils",
        16 => "WriteMultipleRegisters",
        17 => "ReportServerId",
        20 => "ReadFileRecord",
        21 => "WriteFileRecord",
        22 => "MaskWriteRegister",
        23 => "ReadWriteMultipleRegisters",
        24 => "ReadFifoQueue",
        43 => "EncapsulatedInterfaceTransport",
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests;
