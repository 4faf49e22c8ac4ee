//! The audit trail: who did what, when, through which session, and whether
//! the gate let it through; in a form an auditor can verify and an engineer
//! can open in Wireshark.
//!
//! - dp cores push fixed-size [`dataplane::audit::AuditRecord`]s on their
//!   [`AuditQueue`]s; control threads post [`ControlEvent`]s through an
//!   [`AuditSink`] (auth results, denied flows, policy reloads).
//! - One writer thread ([`spawn`]) drains both into `audit-YYYY-MM-DD.jsonl`
//!   (UTC, rotated daily), one JSON object per line in a SHA-256 hash chain
//!   that carries across files ([`chain`] defines the canonical form and the
//!   hash), and into one pcapng per session (`pcap/<session>.pcapng`,
//!   [`pcap`]) whose SHA-256 the session-close record carries.
//! - Durability: lines are written and `fsync`ed every `fsync_interval_ms`
//!   (group commit; written sooner once 512 KiB of journal wait), a closed
//!   session's capture with its close record, an open session's capture
//!   at the first commit 250 ms after its last (sooner once 64 KiB of it
//!   wait: the journal holds the same payloads, and 100 small capture
//!   writes per commit cost the gate a fifth of its rate under a CPU
//!   quota), by a sync thread of the writer's own, so a slow disk
//!   does not hold the cores: while a commit runs the writer takes the
//!   sink's events, and a core's records once its queue is a quarter full
//!   (they wait in memory until the next commit; nothing is written while
//!   one runs); `audit.head` names the last synced record so a
//!   verifier sees whole records removed from the end. After a crash the
//!   writer cuts a torn last line, records an anomaly saying so, and
//!   continues the chain from the last complete line.
//! - Nothing accepted is lost: when a write or sync fails (disk full, I/O
//!   error) the writer turns unhealthy ([`AuditHandle::healthy`]; new
//!   sessions are refused, existing ones follow `on_failure`), keeps what it
//!   accepted in memory (up to `max_pending_bytes`, then it stops draining
//!   the cores' queues, which back-pressures the sessions), retries every
//!   `retry_ms`, and writes everything once the disk recovers, followed by
//!   an `audit_outage` record.
//! - [`verify`] checks a directory (the `accessgate audit` commands), and
//!   [`syslog`] forwards every record to a collector over TLS.

pub mod chain;
pub mod durable;
pub mod pcap;
pub mod sink;
pub mod syslog;
pub mod verify;
pub mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use dataplane::io::Doorbell;
use serde::Deserialize;

pub use dataplane::audit::{AuditQueue, AuditRecord, Pacer};
pub use sink::{file_digest, AuditSink, AuditUnavailable, AuthEvent, ControlEvent, DeniedFlow, DeniedFlows};

/// What existing sessions do while the writer cannot write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Keep them, but read no further requests (back-pressure) until the
    /// writer recovers.
    #[default]
    Hold,
    /// End them (reason `audit_unavailable`).
    Terminate,
}

/// How the audit writer works (`accessgate run`'s `--audit-*` flags).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Directory of the JSONL files, `audit.head` and `pcap/`.
    pub dir: PathBuf,
    /// Group commit interval (`--audit-fsync-ms`).
    pub fsync_interval_ms: u64,
    /// Records each dp core's queue holds ([`AuditQueue::new`]).
    pub queue_capacity: usize,
    /// What existing sessions do while the writer fails.
    pub on_failure: OnFailure,
    /// Bytes held in memory while the disk fails before the writer stops
    /// draining the cores' queues.
    pub max_pending_bytes: usize,
    /// How often a failing writer retries.
    pub retry_ms: u64,
    /// Write one pcapng per session.
    pub pcap: bool,
    /// Forward every record to a syslog collector over TLS.
    pub syslog: Option<SyslogConfig>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/accessgate/audit"),
            fsync_interval_ms: 50,
            queue_capacity: dataplane::audit::DEFAULT_CAPACITY,
            on_failure: OnFailure::Hold,
            max_pending_bytes: 64 << 20,
            retry_ms: 200,
            pcap: true,
            syslog: None,
        }
    }
}

/// `[audit.syslog]`: an RFC 5424 collector reached over TLS (RFC 5425).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` (6514 is the IANA port for syslog over TLS).
    pub address: String,
    /// CA certificate(s) the collector's certificate must chain to (PEM).
    pub ca_file: PathBuf,
    /// Name to verify in the collector's certificate (default: the host).
    pub server_name: Option<String>,
    /// HOSTNAME field of the messages (default: the kernel hostname).
    pub hostname: Option<String>,
    /// Messages kept while the collector is away.
    pub max_queue: usize,
    pub connect_timeout_ms: u64,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        Self {
            address: String::new(),
            ca_file: PathBuf::new(),
            server_name: None,
            hostname: None,
            max_queue: 100_000,
            connect_timeout_ms: 500,
        }
    }
}

/// Why the writer could not start.
#[derive(Debug)]
pub enum AuditError {
    /// The directory or a file could not be created or read.
    Io { path: PathBuf, error: std::io::Error },
    /// The newest file does not end in a valid record: the chain cannot be
    /// continued (run `accessgate audit verify`).
    Corrupt { file: PathBuf, line: u64, why: String },
    /// The syslog forwarding is misconfigured.
    Syslog(String),
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io { path, error } => write!(f, "audit: {}: {error}", path.display()),
            Self::Corrupt { file, line, why } => write!(
                f,
                "audit: {}:{line}: {why}; the chain cannot be continued (check it with `accessgate audit verify {}`)",
                file.display(),
                file.parent().map_or_else(String::new, |d| d.display().to_string())
            ),
            Self::Syslog(e) => write!(f, "audit: {e}"),
        }
    }
}

impl std::error::Error for AuditError {}

/// Shared counters of the writer (read by the control thread and `ctl`).
#[derive(Debug, Default)]
pub struct Status {
    /// Records sealed (seq of the last one).
    pub seq: AtomicU64,
    /// Records on stable storage.
    pub synced_seq: AtomicU64,
    /// Bytes accepted and not yet synced.
    pub pending_bytes: AtomicU64,
    /// Times the writer turned unhealthy.
    pub outages: AtomicU64,
    /// Records forwarded to syslog, and dropped from its queue.
    pub forwarded: AtomicU64,
    pub forward_dropped: AtomicU64,
    /// The last write error, while unhealthy.
    pub last_error: Mutex<Option<String>>,
}

/// The running writer.
pub struct AuditHandle {
    healthy: Arc<AtomicBool>,
    sink: AuditSink,
    on_failure: OnFailure,
    status: Arc<Status>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pacer: Option<Arc<Pacer>>,
}

impl AuditHandle {
    /// Whether the writer is writing. The auth worker refuses new sessions
    /// (`audit_unavailable`) while this is false.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// The health flag itself, for other threads.
    pub fn health_flag(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    /// A sink for control-side events.
    pub fn sink(&self) -> AuditSink {
        self.sink.clone()
    }

    /// What sessions do while unhealthy.
    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// The turns the writer takes with the dp cores, when it shares their
    /// CPU ([`spawn_paced`]).
    pub fn pacer(&self) -> Option<Arc<Pacer>> {
        self.pacer.clone()
    }

    /// Sets the stop flag and waits for the writer to drain every queue,
    /// sync and exit. Call after the dp cores have stopped (their last
    /// session-close records must be in the queues).
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AuditHandle {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            let _ = t.join();
        }
    }
}

/// Starts the writer on `cfg.dir`: recovers the chain (cutting a torn
/// tail), then drains `queues` (one per dp core) and the sink on its own
/// thread until `stop` is set; then it drains everything, syncs and exits.
///
/// # Errors
/// The directory cannot be prepared, the newest file cannot be continued,
/// or syslog is misconfigured.
pub fn spawn(cfg: AuditConfig, queues: Vec<Arc<AuditQueue>>, stop: Arc<AtomicBool>) -> Result<AuditHandle, AuditError> {
    spawn_paced(cfg, queues, stop, None)
}

/// [`spawn`], and with `paced_on` the writer runs on that dp CPU and takes
/// turns with its core ([`Pacer`]; hand [`AuditHandle::pacer`] to that
/// core's `AuditTap`, and [`Pacer::close`] it once the cores stopped).
///
/// # Errors
/// See [`spawn`].
pub fn spawn_paced(
    cfg: AuditConfig,
    queues: Vec<Arc<AuditQueue>>,
    stop: Arc<AtomicBool>,
    paced_on: Option<usize>,
) -> Result<AuditHandle, AuditError> {
    let healthy = Arc::new(AtomicBool::new(true));
    let status = Arc::new(Status::default());
    let (tx, rx) = crossbeam::channel::bounded(sink::SINK_CAPACITY);
    let bell = Arc::new(Doorbell::new().map_err(|error| AuditError::Io { path: PathBuf::from("eventfd"), error })?);
    let on_failure = cfg.on_failure;
    let mut writer = writer::Writer::open(cfg, healthy.clone(), status.clone(), dataplane::audit::unix_micros())?;
    let pacer = paced_on.map(|_| Arc::new(Pacer::new(bell.clone())));
    if let Some(p) = &pacer {
        writer.pace(p.clone());
    }
    let thread_stop = stop.clone();
    let thread_bell = bell.clone();
    let thread = std::thread::Builder::new()
        .name("audit".into())
        .spawn(move || {
            if let Some(cpu) = paced_on {
                // Turns are given by that CPU's core: wait for them there.
                if let Err(e) = dataplane::io::set_thread_cpus(&[cpu]) {
                    log::warn!("audit: could not run the writer on CPU {cpu}: {e}");
                }
            }
            writer.start_threads(thread_bell.clone());
            writer.run(&queues, &rx, &thread_bell, &thread_stop)
        })
        .map_err(|error| AuditError::Io { path: PathBuf::from("audit thread"), error })?;
    Ok(AuditHandle {
        sink: AuditSink::new(tx, healthy.clone(), bell),
        healthy,
        on_failure,
        status,
        stop,
        thread: Some(thread),
        pacer,
    })
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut out = [0u8; 32];
    out.copy_from_slice(&sha2::Sha256::digest(bytes));
    out
}

/// A fresh directory under the system temp dir for a test, removed when
/// the guard drops, unless the test is failing (then its path is printed
/// and the directory kept for a look).
#[cfg(test)]
pub(crate) fn testdir(name: &str) -> TestDir {
    use std::sync::atomic::AtomicUsize;
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "accessgate-audit-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TestDir(dir)
}

/// See [`testdir`].
#[cfg(test)]
pub(crate) struct TestDir(PathBuf);

#[cfg(test)]
impl std::ops::Deref for TestDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

#[cfg(test)]
impl AsRef<std::path::Path> for TestDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
