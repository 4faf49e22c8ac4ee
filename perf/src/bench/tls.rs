//! `accessgate-perf tls`: TLS 1.3 handshakes per second against a real TLS
//! server over the network (the gate's endpoint, or a peer such as stunnel
//! or haproxy holding the same certificate), in a closed loop.
//!
//! `--connections` client threads each repeat, until the time is up: TCP
//! connect, a rustls handshake (`control::client::client_config`, TLS 1.3,
//! the server certificate verified against `--ca`), `close_notify`, a wait
//! that proves the server finished the handshake (`--close`: its first
//! ticket, or its close_notify and FIN), close. Without `--resume` the
//! client keeps no tickets, so every handshake is full. With `--resume` one
//! in-memory cache is shared by all threads, tickets are offered, and the
//! share that actually resumed is counted from
//! `ClientConnection::handshake_kind()`.
//!
//! Besides the rates it reports the handshake latency, the client's own CPU
//! time (to show when the client, not the server, is the bottleneck), with
//! `--server-pid` the server process's CPU time per handshake, and with
//! `--gate-ctl` an estimate of the work of a busy-polling gate from its loop
//! counter. Bounded: at most 60 s per window, 256 connections, 9 runs, and
//! `--max-handshakes` attempts if given.
//!
//! `accessgate-perf tls report FILE...` puts results written with `--json`
//! side by side (medians across files and runs of the same label and mode)
//! with ratios against one label, and writes `perf/results/tls-<time>.json`.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, NamedGroup};

use super::json::Json;
use super::procfs::{self, CpuTicks, USER_HZ};
use super::{median, si};

/// Most client threads.
const MAX_CONNECTIONS: usize = 256;
/// Connect, read and write timeout of one client socket: a server that
/// stalls costs a thread this long, then counts as an error.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause after a failed attempt, so a refusing server is not hammered.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TlsArgs {
    #[command(subcommand)]
    command: Option<TlsCommand>,
    #[command(flatten)]
    load: Box<LoadArgs>,
}

#[derive(clap::Subcommand, Debug)]
enum TlsCommand {
    /// Print `tls --json` results side by side (median per label and mode
    /// over all their runs) with ratios, and write tls-<time>.json.
    Report(ReportArgs),
}

#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// The TLS server to load.
    #[arg(long, value_name = "ADDR:PORT", required = true)]
    target: Option<SocketAddr>,
    /// Server name to send (SNI) and to verify in its certificate.
    #[arg(long, value_name = "NAME", required = true)]
    server_name: Option<String>,
    /// CA certificate (PEM) the server's certificate must chain to.
    #[arg(long, value_name = "FILE", required = true)]
    ca: Option<PathBuf>,
    /// Length of the measurement window, after the warmup (at most 60).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of load before the window opens (at most 10).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent client threads, each one connection at a time (1..=256).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Keep a client session cache shared by all threads so that tickets are
    /// used (TLS 1.3 resumption); without it every handshake is full.
    #[arg(long)]
    resume: bool,
    /// How a connection ends after the handshake. client-first: send
    /// close_notify, wait for the server's first ticket (proof that it
    /// processed our Finished) or its close_notify, and close. server-first:
    /// send close_notify and read until the server has closed (its
    /// close_notify and FIN), so the server holds the TIME-WAIT.
    #[arg(long, value_enum, default_value_t = CloseMode::ClientFirst)]
    close: CloseMode,
    /// Pin every client thread to this CPU.
    #[arg(long, value_name = "CPU")]
    pin: Option<usize>,
    /// Repeat the measurement this many times and report medians (1..=9).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Stop a run after this many connection attempts (warmup included).
    #[arg(long, value_name = "N")]
    max_handshakes: Option<u64>,
    /// The server's process id: report its CPU time per handshake (from
    /// /proc/PID/stat, all threads).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// The gate's management socket (with --server-pid of that gate): count
    /// its dp-core loops to estimate how much of a busy-polling core the
    /// handshakes used (see "Busy polling" in perf/README.md).
    #[arg(long, value_name = "SOCKET", requires = "server_pid")]
    gate_ctl: Option<PathBuf>,
    /// Seconds of idle calibration of the dp-core loop rate before each run
    /// (with --gate-ctl).
    #[arg(long, default_value_t = 1.0)]
    calibrate: f64,
    /// Also report how busy these CPUs were during the window (/proc/stat),
    /// e.g. 0,1.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Client source addresses (this host's own, e.g. 198.18.0.16,...):
    /// connections take (address, port 10000-65535) pairs in sequence so
    /// that none is reused within a server's TIME-WAIT (see "Source
    /// addresses" in perf/README.md). Without it the kernel picks them.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// A name for the server in the result and in `tls report` (e.g. gate).
    #[arg(long, default_value = "server")]
    label: String,
    /// Free text recorded in the result (how the server was run).
    #[arg(long, value_name = "TEXT")]
    note: Vec<String>,
    /// Write the result (all runs and medians) to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum CloseMode {
    ClientFirst,
    ServerFirst,
}

impl CloseMode {
    fn name(self) -> &'static str {
        match self {
            Self::ClientFirst => "client-first",
            Self::ServerFirst => "server-first",
        }
    }
}

#[derive(clap::Args, Debug)]
struct ReportArgs {
    /// Result files written by `tls --json`.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The label the others are compared with (ratio = this ÷ other).
    #[arg(long, default_value = "gate")]
    baseline: String,
    /// Free text recorded in the report (the command, how servers were run).
    #[arg(long, value_name = "TEXT")]
    note: Vec<String>,
    /// Where to write tls-<unix time>.json and tls-latest.json.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Print the table only; write no result file.
    #[arg(long)]
    no_write: bool,
}

pub fn tls(args: &TlsArgs) -> Result<(), String> {
    match &args.command {
        Some(TlsCommand::Report(r)) => report(r),
        None => measure(&args.load),
    }
}

// ---------------------------------------------------------------- measuring

/// What the client threads count, shared.
#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    full: AtomicU64,
    /// Full handshakes that needed a HelloRetryRequest (also in `full`).
    retried: AtomicU64,
    resumed: AtomicU64,
    connect_errors: AtomicU64,
    tls_errors: AtomicU64,
    timeouts: AtomicU64,
    /// Handshake done, but the close was not clean (reset, timeout, EOF
    /// without the server's close_notify).
    unclean_closes: AtomicU64,
}

#[derive(Clone, Copy, Default)]
struct Count {
    attempts: u64,
    full: u64,
    retried: u64,
    resumed: u64,
    connect_errors: u64,
    tls_errors: u64,
    timeouts: u64,
    unclean_closes: u64,
}

impl Counters {
    fn read(&self) -> Count {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Count {
            attempts: r(&self.attempts),
            full: r(&self.full),
            retried: r(&self.retried),
            resumed: r(&self.resumed),
            connect_errors: r(&self.connect_errors),
            tls_errors: r(&self.tls_errors),
            timeouts: r(&self.timeouts),
            unclean_closes: r(&self.unclean_closes),
        }
    }
}

impl std::ops::Sub for Count {
    type Output = Count;
    fn sub(self, o: Count) -> Count {
        Count {
            attempts: self.attempts - o.attempts,
            full: self.full - o.full,
            retried: self.retried - o.retried,
            resumed: self.resumed - o.resumed,
            connect_errors: self.connect_errors - o.connect_errors,
            tls_errors: self.tls_errors - o.tls_errors,
            timeouts: self.timeouts - o.timeouts,
            unclean_closes: self.unclean_closes - o.unclean_closes,
        }
    }
}

struct Shared {
    counters: Counters,
    /// Set when the window opens; handshakes started after it are timed.
    measuring: AtomicBool,
    stop: AtomicBool,
    /// The first handshake's negotiated parameters (cipher suite, group).
    negotiated: std::sync::Mutex<Option<(String, String)>>,
    /// The first error text, for the report when everything fails.
    first_error: std::sync::Mutex<Option<String>>,
    /// Source pairs (`--sources`), if any.
    tuples: Option<Tuples>,
    close: CloseMode,
}

/// How one attempt failed.
enum Failure {
    Connect(String),
    Timeout(String),
    Tls(String),
}

/// What one successful attempt did.
struct Done {
    kind: HandshakeKind,
    handshake: Duration,
    clean_close: bool,
    /// Cipher suite and key exchange group, when asked for.
    negotiated: Option<(String, String)>,
}

/// Source (address, port) pairs for the client's connections.
///
/// A server that closes first holds each connection's 4-tuple in TIME-WAIT
/// (smoltcp: 10 s, during which it does not answer a new SYN on that tuple:
/// the client's SYN retransmits stall 1, 3, 7 s). The kernel's own choice of
/// source port comes round again after about 32 k connections to the same
/// destination, i.e. within 10 s at a few thousand handshakes/s. So the
/// client binds explicitly: pair k is (`sources[k % S]`, `PORT_LO + k / S`),
/// cycling through S × 55 536 pairs, and the sequence starts where the
/// wall clock says (10 pairs per millisecond), so a run continues past the
/// pairs of the runs just before it instead of starting over.
struct Tuples {
    sources: Vec<IpAddr>,
    next: AtomicU64,
}

/// Lowest source port the client binds (above the kernel's default
/// ephemeral range would be 61000; 10000..=65535 leaves the low ports alone).
const PORT_LO: u16 = 10_000;
const PORTS: u64 = 65_536 - PORT_LO as u64;
/// The sequence start advances this many pairs per millisecond of wall time
/// (an upper bound on connections per millisecond, with margin).
const PAIRS_PER_MS: u64 = 10;

impl Tuples {
    fn new(sources: &[IpAddr]) -> Option<Self> {
        if sources.is_empty() {
            return None;
        }
        let space = sources.len() as u64 * PORTS;
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Some(Self { sources: sources.to_vec(), next: AtomicU64::new(now_ms.wrapping_mul(PAIRS_PER_MS) % space) })
    }

    /// Seconds before a pair comes round again at `rate` connections/s.
    fn reuse_after(&self, rate: f64) -> f64 {
        self.sources.len() as f64 * PORTS as f64 / rate
    }

    fn take(&self) -> SocketAddr {
        let s = self.sources.len() as u64;
        let k = self.next.fetch_add(1, Ordering::Relaxed) % (s * PORTS);
        SocketAddr::new(self.sources[(k % s) as usize], PORT_LO + (k / s) as u16)
    }
}

/// A TCP connection to `target`, from the next source pair if there are any.
fn connect(target: SocketAddr, tuples: Option<&Tuples>) -> Result<TcpStream, Failure> {
    let failed = |e: std::io::Error| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::Timeout(format!("connect: {e}")),
        _ => Failure::Connect(format!("connect: {e}")),
    };
    let Some(tuples) = tuples else {
        return TcpStream::connect_timeout(&target, IO_TIMEOUT).map_err(failed);
    };
    let mut last = None;
    // A pair still busy here (our own TIME-WAIT after an unclean close) is
    // skipped for the next one.
    for _ in 0..8 {
        let local = tuples.take();
        let sock =
            socket2::Socket::new(socket2::Domain::for_address(target), socket2::Type::STREAM, None).map_err(failed)?;
        sock.set_reuse_address(true).map_err(failed)?;
        let attempt = sock.bind(&local.into()).and_then(|()| sock.connect_timeout(&target.into(), IO_TIMEOUT));
        match attempt {
            Ok(()) => return Ok(sock.into()),
            Err(e) if matches!(e.kind(), ErrorKind::AddrInUse | ErrorKind::AddrNotAvailable) => {
                last = Some(format!("{local}: {e}"));
            }
            Err(e) => return Err(failed(e)),
        }
    }
    Err(Failure::Connect(format!("connect: no free source pair ({})", last.unwrap_or_default())))
}

/// CPU accounting at one instant.
struct CpuSnap {
    at: Instant,
    own_ticks: Option<u64>,
    server_ticks: Option<u64>,
    cpus: Vec<CpuTicks>,
}

fn cpu_snap(server: Option<u32>, cpus: &[usize]) -> CpuSnap {
    CpuSnap {
        at: Instant::now(),
        own_ticks: procfs::process_ticks(std::process::id()),
        server_ticks: server.and_then(procfs::process_ticks),
        cpus: procfs::cpu_ticks(cpus),
    }
}

/// A busy-polling gate's dp cores at one instant (`--gate-ctl`).
struct GateSnap {
    at: Instant,
    /// Loops of all dp cores (the `loops` counter).
    loops: u64,
    /// CPU time of the gate's dp threads (named dp0, dp1, ...), USER_HZ ticks.
    dp_ticks: u64,
    sessions: u64,
    hello_malformed: u64,
    hello_timeout: u64,
}

fn gate_snap(ctl: &Path, pid: u32) -> Result<GateSnap, String> {
    let stats = procfs::gate_stats(ctl)?;
    let n = |k: &str| stats.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    Ok(GateSnap {
        at: Instant::now(),
        loops: n("loops"),
        dp_ticks: procfs::dp_ticks(pid)?,
        sessions: n("sessions_opened"),
        hello_malformed: n("close_hello_malformed"),
        hello_timeout: n("close_hello_timeout"),
    })
}

/// Loops per second of dp-thread CPU time between two snapshots.
fn loops_per_cpu_sec(a: &GateSnap, b: &GateSnap) -> f64 {
    procfs::loops_per_cpu_sec(b.loops - a.loops, b.dp_ticks - a.dp_ticks)
}

impl LoadArgs {
    fn check(&self) -> Result<(), String> {
        let range = super::arg;
        super::check_window(self.seconds, self.warmup)?;
        range("connections", (1..=MAX_CONNECTIONS).contains(&self.connections), "in 1..=256")?;
        range("runs", (1..=9).contains(&self.runs), "in 1..=9")?;
        range("max-handshakes", self.max_handshakes.is_none_or(|n| n > 0), "at least 1")?;
        range("calibrate", self.calibrate >= 0.2 && self.calibrate <= 10.0, "in [0.2, 10]")?;
        if let Some(t) = self.target {
            if let Some(a) = self.sources.iter().find(|a| a.is_ipv4() != t.is_ipv4()) {
                return Err(format!("--sources: {a} is not of the address family of --target {t}"));
            }
        }
        if let Some(p) = self.server_pid {
            if procfs::process_ticks(p).is_none() {
                return Err(format!("--server-pid {p}: no such process (or /proc/{p}/stat unreadable)"));
            }
        }
        Ok(())
    }
}

/// Named values of one run, in print order.
type Values = Vec<(&'static str, f64)>;

fn measure(args: &LoadArgs) -> Result<(), String> {
    args.check()?;
    // clap enforces these (required unless a subcommand is given).
    let (Some(target), Some(server_name), Some(ca)) = (args.target, args.server_name.as_deref(), args.ca.as_ref())
    else {
        return Err("--target, --server-name and --ca are required".into());
    };
    let ca_pem = std::fs::read(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    let base = control::client::client_config(&ca_pem, false, None)?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| format!("--server-name: {e}"))?;
    // Before pinning, so that it counts every CPU of the machine.
    let machine = super::machine();
    let profile = super::prepare(args.pin, "tls ...")?;
    let mode = if args.resume { "resume" } else { "full" };
    let started = super::unix_time();
    eprintln!(
        "accessgate-perf tls: {} {target} ({server_name}), {mode} handshakes, {} connection(s), {} run(s) x ({:.1} s warmup + {:.1} s)",
        args.label, args.connections, args.runs, args.warmup, args.seconds
    );
    let mut runs: Vec<Values> = Vec::new();
    let mut negotiated = None;
    for run in 1..=args.runs {
        // A fresh config per run: with --resume the cache starts empty, so
        // every run pays its own first full handshakes.
        let mut config: ClientConfig = (*base).clone();
        // The store notes each ticket's arrival; it keeps them only to resume.
        let keep = args.resume.then(|| ClientSessionMemoryCache::new(4 * MAX_CONNECTIONS));
        config.resumption = Resumption::store(Arc::new(TicketWatch { keep }));
        let (values, neg) = run_once(args, Arc::new(config), &name, target)?;
        negotiated = negotiated.or(neg);
        eprintln!(
            "run {run}/{}: {} handshakes/s ({} full/s, {} resumed/s), client CPU {:.0} %",
            args.runs,
            si(get(&values, "handshakes_per_sec")),
            si(get(&values, "full_per_sec")),
            si(get(&values, "resumed_per_sec")),
            get(&values, "client_cpu_percent")
        );
        runs.push(values);
    }
    print_measurement(args, target, server_name, mode, profile, &runs, negotiated.as_ref());

    let Some(path) = &args.json else { return Ok(()) };
    let keys: Vec<&str> = runs.first().map(|r| r.iter().map(|(k, _)| *k).collect()).unwrap_or_default();
    let as_obj = |r: &Values| Json::obj(r.iter().map(|(k, v)| (*k, Json::from(*v))));
    let doc = Json::obj(super::result_header("accessgate-perf tls", started, profile).into_iter().chain([
        ("label", Json::from(args.label.as_str())),
        ("mode", Json::from(mode)),
        ("machine", machine),
        ("notes", Json::Arr(args.note.iter().map(|n| Json::from(n.as_str())).collect())),
        (
            "params",
            Json::obj([
                ("target", Json::from(target.to_string())),
                ("server_name", Json::from(server_name)),
                ("seconds", Json::from(args.seconds)),
                ("warmup_seconds", Json::from(args.warmup)),
                ("connections", Json::from(args.connections)),
                ("runs", Json::from(args.runs)),
                ("resume", Json::from(args.resume)),
                ("close", Json::from(args.close.name())),
                ("client_pinned_cpu", Json::from(args.pin)),
                ("server_pid", Json::from(args.server_pid.map(u64::from))),
                ("max_handshakes", Json::from(args.max_handshakes)),
                ("sources", Json::Arr(args.sources.iter().map(|a| Json::from(a.to_string())).collect())),
                ("source_ports", Json::from(format!("{PORT_LO}-65535"))),
                ("cipher_suite", Json::from(negotiated.as_ref().map(|n| n.0.clone()))),
                ("key_exchange", Json::from(negotiated.as_ref().map(|n| n.1.clone()))),
            ]),
        ),
        (
            "median",
            Json::obj(keys.iter().map(|k| {
                let xs: Vec<f64> = runs.iter().map(|r| get(r, k)).collect();
                (*k, Json::from(median(&xs)))
            })),
        ),
        ("runs", Json::Arr(runs.iter().map(as_obj).collect())),
    ]));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, doc.pretty()).map_err(|e| format!("{}: {e}", path.display()))?;
    println!();
    println!("wrote {}", path.display());
    Ok(())
}

fn get(values: &Values, key: &str) -> f64 {
    values.iter().find(|(k, _)| *k == key).map_or(f64::NAN, |(_, v)| *v)
}

type RunResult = (Values, Option<(String, String)>);

fn run_once(
    args: &LoadArgs,
    config: Arc<ClientConfig>,
    name: &ServerName<'static>,
    target: SocketAddr,
) -> Result<RunResult, String> {
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        negotiated: std::sync::Mutex::new(None),
        first_error: std::sync::Mutex::new(None),
        tuples: Tuples::new(&args.sources),
        close: args.close,
    });
    // The gate's idle loop rate, with nothing connecting. A gate that does
    // not answer costs only the gate-specific values, not the run.
    let gate_at = |args: &LoadArgs| match (&args.gate_ctl, args.server_pid) {
        (Some(ctl), Some(pid)) => {
            gate_snap(ctl, pid).map_err(|e| eprintln!("warning: {e}; no dp-core estimate for this run")).ok()
        }
        _ => None,
    };
    let idle = gate_at(args).and_then(|a| {
        std::thread::sleep(Duration::from_secs_f64(args.calibrate));
        gate_at(args).map(|b| loops_per_cpu_sec(&a, &b))
    });
    let mut threads = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let (config, name, mine) = (config.clone(), name.clone(), shared.clone());
        let (pin_to, max) = (args.pin, args.max_handshakes);
        let t = std::thread::Builder::new()
            .name(format!("tls{i}"))
            .spawn(move || client_thread(&config, &name, target, &mine, pin_to, max))
            .map_err(|e| format!("spawning client thread {i}: {e}"));
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    let all_done = |threads: &Vec<std::thread::JoinHandle<_>>| threads.iter().all(|t| t.is_finished());
    let sleep_until = |end: Instant, threads: &Vec<std::thread::JoinHandle<_>>| {
        while Instant::now() < end && !all_done(threads) {
            std::thread::sleep(Duration::from_millis(10).min(end.saturating_duration_since(Instant::now())));
        }
    };
    sleep_until(Instant::now() + Duration::from_secs_f64(args.warmup), &threads);
    let g0 = gate_at(args);
    let c0 = shared.counters.read();
    let s0 = cpu_snap(args.server_pid, &args.cpus);
    shared.measuring.store(true, Ordering::Relaxed);
    sleep_until(s0.at + Duration::from_secs_f64(args.seconds), &threads);
    let c1 = shared.counters.read();
    let s1 = cpu_snap(args.server_pid, &args.cpus);
    let g1 = gate_at(args);
    shared.stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    for t in threads {
        let h = t.join().map_err(|_| "a client thread panicked".to_string())?;
        hist.add(&h).map_err(|e| e.to_string())?;
    }
    let window = (s1.at - s0.at).as_secs_f64();
    let d = c1 - c0;
    let handshakes = d.full + d.resumed;
    if handshakes == 0 {
        let why = shared.first_error.lock().ok().and_then(|e| e.clone()).unwrap_or_else(|| "no error seen".into());
        return Err(format!(
            "no handshake completed in the {window:.1} s window against {target} \
             ({} connect errors, {} TLS errors, {} timeouts; first: {why})",
            d.connect_errors, d.tls_errors, d.timeouts
        ));
    }
    let per_sec = |n: u64| n as f64 / window;
    let reuse = shared.tuples.as_ref().map_or(f64::NAN, |t| t.reuse_after(per_sec(d.attempts)));
    if reuse < 12.0 {
        eprintln!(
            "warning: at {:.0} connections/s a source (address, port) pair comes round every {reuse:.1} s, \
             within smoltcp's 10 s TIME-WAIT: give more --sources",
            per_sec(d.attempts)
        );
    } else if shared.tuples.is_none() && per_sec(d.attempts) * 10.0 > 28_000.0 {
        eprintln!(
            "warning: {:.0} connections/s from kernel-chosen ports: a server's TIME-WAIT may meet a reused \
             port within 10 s; use --sources",
            per_sec(d.attempts)
        );
    }
    let ticks_to_s = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / USER_HZ,
        _ => f64::NAN,
    };
    let client_cpu = ticks_to_s(s0.own_ticks, s1.own_ticks);
    let server_cpu = ticks_to_s(s0.server_ticks, s1.server_ticks);
    let mut v: Values = vec![
        ("handshakes_per_sec", per_sec(handshakes)),
        ("full_per_sec", per_sec(d.full)),
        ("resumed_per_sec", per_sec(d.resumed)),
        ("resumed_percent", 100.0 * d.resumed as f64 / handshakes as f64),
        ("latency_p50_us", hist.value_at_quantile(0.5) as f64),
        ("latency_p99_us", hist.value_at_quantile(0.99) as f64),
        ("latency_max_us", hist.max() as f64),
        ("client_cpu_percent", 100.0 * client_cpu / window),
        ("client_cpu_us_per_handshake", 1e6 * client_cpu / handshakes as f64),
        ("server_cpu_percent", 100.0 * server_cpu / window),
        ("server_cpu_us_per_handshake", 1e6 * server_cpu / handshakes as f64),
        ("handshakes", handshakes as f64),
        ("full", d.full as f64),
        ("hello_retries", d.retried as f64),
        ("resumed", d.resumed as f64),
        ("connect_errors", d.connect_errors as f64),
        ("tls_errors", d.tls_errors as f64),
        ("timeouts", d.timeouts as f64),
        ("unclean_closes", d.unclean_closes as f64),
        ("attempts", d.attempts as f64),
        ("window_seconds", window),
        ("source_pair_reuse_seconds", reuse),
    ];
    // Work of a busy-polling gate: the share of its dp threads' CPU time not
    // spent in loops that an idle core would have run anyway.
    if let (Some(idle), Some(g0), Some(g1)) = (idle, &g0, &g1) {
        let gate_window = (g1.at - g0.at).as_secs_f64();
        let dp_cpu = (g1.dp_ticks - g0.dp_ticks) as f64 / USER_HZ;
        let loaded = loops_per_cpu_sec(g0, g1);
        let work_share = (1.0 - loaded / idle).clamp(0.0, 1.0);
        let handshakes_in_gate_window = handshakes as f64 * gate_window / window;
        let work_us = 1e6 * dp_cpu * work_share / handshakes_in_gate_window;
        v.extend([
            ("gate_dp_cpu_percent", 100.0 * dp_cpu / gate_window),
            ("gate_idle_loops_per_cpu_sec", idle),
            ("gate_loops_per_cpu_sec", loaded),
            ("gate_dp_work_percent", 100.0 * work_share * dp_cpu / gate_window),
            ("gate_work_us_per_handshake", work_us),
            ("gate_sessions", (g1.sessions - g0.sessions) as f64),
            ("gate_hello_malformed", (g1.hello_malformed - g0.hello_malformed) as f64),
            ("gate_hello_timeout", (g1.hello_timeout - g0.hello_timeout) as f64),
        ]);
    }
    v.push(("capacity_per_core", 1e6 / get(&v, "server_cpu_us_per_handshake")));
    for (a, b) in s0.cpus.iter().zip(&s1.cpus) {
        v.push((cpu_key(a.cpu), b.busy_percent_since(a)));
        v.push((softirq_key(a.cpu), b.softirq_percent_since(a)));
    }
    let negotiated = shared.negotiated.lock().ok().and_then(|n| n.clone());
    Ok((v, negotiated))
}

/// `cpuN_softirq_percent` as a static key (CPUs past 7 share one key).
fn softirq_key(cpu: usize) -> &'static str {
    const KEYS: [&str; 8] = [
        "cpu0_softirq_percent",
        "cpu1_softirq_percent",
        "cpu2_softirq_percent",
        "cpu3_softirq_percent",
        "cpu4_softirq_percent",
        "cpu5_softirq_percent",
        "cpu6_softirq_percent",
        "cpu7_softirq_percent",
    ];
    KEYS.get(cpu).copied().unwrap_or("cpu_other_softirq_percent")
}

/// `cpuN_busy_percent` as a static key (CPUs past 15 share one key).
fn cpu_key(cpu: usize) -> &'static str {
    const KEYS: [&str; 16] = [
        "cpu0_busy_percent",
        "cpu1_busy_percent",
        "cpu2_busy_percent",
        "cpu3_busy_percent",
        "cpu4_busy_percent",
        "cpu5_busy_percent",
        "cpu6_busy_percent",
        "cpu7_busy_percent",
        "cpu8_busy_percent",
        "cpu9_busy_percent",
        "cpu10_busy_percent",
        "cpu11_busy_percent",
        "cpu12_busy_percent",
        "cpu13_busy_percent",
        "cpu14_busy_percent",
        "cpu15_busy_percent",
    ];
    KEYS.get(cpu).copied().unwrap_or("cpu_other_busy_percent")
}

/// One client thread: connect, handshake, close, again, until told to stop.
/// Returns the latencies of the handshakes it started inside the window.
fn client_thread(
    config: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    target: SocketAddr,
    shared: &Shared,
    pin_to: Option<usize>,
    max: Option<u64>,
) -> Histogram<u64> {
    if let Some(cpu) = pin_to {
        // Checked on the main thread already.
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let c = &shared.counters;
    let mut described = false;
    while !shared.stop.load(Ordering::Relaxed) {
        let n = c.attempts.fetch_add(1, Ordering::Relaxed);
        if max.is_some_and(|m| n >= m) {
            break;
        }
        let timed = shared.measuring.load(Ordering::Relaxed);
        match handshake_once(config, name, target, shared.tuples.as_ref(), shared.close, !described) {
            Ok(done) => {
                if let Some(n) = done.negotiated {
                    described = true;
                    if let Ok(mut first) = shared.negotiated.lock() {
                        first.get_or_insert(n);
                    }
                }
                match done.kind {
                    HandshakeKind::Resumed => c.resumed.fetch_add(1, Ordering::Relaxed),
                    HandshakeKind::FullWithHelloRetryRequest => {
                        c.retried.fetch_add(1, Ordering::Relaxed);
                        c.full.fetch_add(1, Ordering::Relaxed)
                    }
                    HandshakeKind::Full => c.full.fetch_add(1, Ordering::Relaxed),
                };
                if !done.clean_close {
                    c.unclean_closes.fetch_add(1, Ordering::Relaxed);
                }
                if timed && !shared.stop.load(Ordering::Relaxed) {
                    let _ = hist.record(done.handshake.as_micros().max(1) as u64);
                }
            }
            Err(f) => {
                let (counter, text) = match f {
                    Failure::Connect(t) => (&c.connect_errors, t),
                    Failure::Timeout(t) => (&c.timeouts, t),
                    Failure::Tls(t) => (&c.tls_errors, t),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = shared.first_error.lock() {
                    first.get_or_insert(text);
                }
                std::thread::sleep(ERROR_BACKOFF);
            }
        }
    }
    hist
}

fn io_failure(what: &str, e: &std::io::Error) -> Failure {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::Timeout(format!("{what}: {e}")),
        _ => Failure::Tls(format!("{what}: {e}")),
    }
}

/// One connection: connect, handshake, close_notify, wait for the server to
/// close, close.
fn handshake_once(
    config: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    target: SocketAddr,
    tuples: Option<&Tuples>,
    mode: CloseMode,
    describe: bool,
) -> Result<Done, Failure> {
    let start = Instant::now();
    let mut sock = connect(target, tuples)?;
    let setup = |s: &TcpStream| -> std::io::Result<()> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))
    };
    setup(&sock).map_err(|e| Failure::Connect(format!("socket options: {e}")))?;
    let mut conn = ClientConnection::new(config.clone(), name.clone()).map_err(|e| Failure::Tls(e.to_string()))?;
    TICKET_SEEN.with(|t| t.set(false));
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| io_failure("handshake", &e))?;
    }
    let handshake = start.elapsed();
    let kind = conn.handshake_kind().unwrap_or(HandshakeKind::Full);
    let negotiated = describe.then(|| {
        let suite = conn.negotiated_cipher_suite().map_or("?".into(), |s| format!("{:?}", s.suite()));
        let group = conn.negotiated_key_exchange_group().map_or("?".into(), |g| format!("{:?}", g.name()));
        (suite, group)
    });
    conn.send_close_notify();
    let clean_close = close(&mut conn, &mut sock, mode);
    Ok(Done { kind, handshake, clean_close, negotiated })
}

thread_local! {
    /// Set when this thread's current connection received a TLS 1.3 ticket
    /// (rustls stores tickets on the thread that processes the records).
    static TICKET_SEEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A client session store that notes each ticket's arrival and keeps the
/// tickets only when resuming (`keep`); without it every handshake is full.
#[derive(Debug)]
struct TicketWatch {
    keep: Option<ClientSessionMemoryCache>,
}

impl ClientSessionStore for TicketWatch {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        if let Some(k) = &self.keep {
            k.set_kx_hint(name, group);
        }
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.keep.as_ref()?.kx_hint(name)
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: rustls::client::Tls12ClientSessionValue) {
        if let Some(k) = &self.keep {
            k.set_tls12_session(name, value);
        }
    }

    fn tls12_session(&self, name: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.keep.as_ref()?.tls12_session(name)
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        if let Some(k) = &self.keep {
            k.remove_tls12_session(name);
        }
    }

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: rustls::client::Tls13ClientSessionValue) {
        TICKET_SEEN.with(|t| t.set(true));
        if let Some(k) = &self.keep {
            k.insert_tls13_ticket(name, value);
        }
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.keep.as_ref()?.take_tls13_ticket(name)
    }
}

/// Sends our close_notify, then reads what the server sends (tickets, the
/// gate's refusal, its close_notify) until `mode` says the connection is
/// done. Clean: client-first saw a ticket or the server's close_notify;
/// server-first saw its close_notify and then its FIN.
fn close(conn: &mut ClientConnection, sock: &mut TcpStream, mode: CloseMode) -> bool {
    while conn.wants_write() {
        if conn.write_tls(sock).is_err() {
            return false;
        }
    }
    let mut peer_closed = false;
    let mut plain = [0u8; 4096];
    loop {
        if mode == CloseMode::ClientFirst && (peer_closed || TICKET_SEEN.with(std::cell::Cell::get)) {
            return true;
        }
        // rustls reads nothing more after the peer's close_notify: wait for
        // the FIN on the socket itself.
        let read = if peer_closed { sock.read(&mut plain) } else { conn.read_tls(sock) };
        match read {
            Ok(0) => return peer_closed,
            Ok(_) if peer_closed => {}
            Ok(_) => match conn.process_new_packets() {
                Ok(state) => {
                    peer_closed |= state.peer_has_closed();
                    // Discard the server's plaintext (the gate's refusal).
                    while matches!(conn.reader().read(&mut plain), Ok(n) if n > 0) {}
                }
                Err(_) => return false,
            },
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// A table row: (key, label, unit, shown as a raw number rather than SI).
type Row = (&'static str, &'static str, &'static str, bool);

/// The rows of a measurement's table.
const ROWS: &[Row] = &[
    ("handshakes_per_sec", "handshakes", "handshakes/s", false),
    ("full_per_sec", "  full", "handshakes/s", false),
    ("resumed_per_sec", "  resumed", "handshakes/s", false),
    ("resumed_percent", "  resumed share", "%", true),
    ("latency_p50_us", "handshake latency p50", "µs (connect to handshake done)", true),
    ("latency_p99_us", "handshake latency p99", "µs", true),
    ("client_cpu_percent", "client CPU", "% of one CPU (all client threads)", true),
    ("client_cpu_us_per_handshake", "client CPU per handshake", "µs", true),
    ("server_cpu_percent", "server CPU", "% of one CPU (whole process)", true),
    ("server_cpu_us_per_handshake", "server CPU per handshake", "µs", true),
    ("gate_dp_cpu_percent", "gate dp threads' CPU", "% of one CPU (busy polling: all of it)", true),
    ("gate_idle_loops_per_cpu_sec", "gate loops, idle", "loops per CPU second (calibration)", false),
    ("gate_loops_per_cpu_sec", "gate loops, under load", "loops per CPU second", false),
    ("gate_dp_work_percent", "gate dp work (estimate)", "% of one CPU, not idle-looping", true),
    ("gate_work_us_per_handshake", "gate work per handshake", "µs, estimate from loop counts (a lower bound)", true),
    ("capacity_per_core", "1 / server CPU per handshake", "handshakes/s per core (busy poll: a lower bound)", false),
    ("gate_sessions", "gate sessions opened", "in the window", true),
    ("gate_hello_malformed", "gate closes: hello_malformed", "in the window", true),
    ("gate_hello_timeout", "gate closes: hello_timeout", "in the window", true),
    ("tls_errors", "errors: TLS", "per window", true),
    ("connect_errors", "errors: connect", "per window", true),
    ("timeouts", "errors: timeouts", "per window", true),
    ("unclean_closes", "unclean closes", "per window (handshake counted)", true),
];

fn shown(v: f64, raw: bool) -> String {
    if v.is_nan() {
        "-".into()
    } else if raw {
        format!("{v:.1}")
    } else {
        si(v)
    }
}

fn print_measurement(
    args: &LoadArgs,
    target: SocketAddr,
    server_name: &str,
    mode: &str,
    profile: &str,
    runs: &[Values],
    negotiated: Option<&(String, String)>,
) {
    let med = |k: &str| median(&runs.iter().map(|r| get(r, k)).collect::<Vec<_>>());
    println!();
    println!("accessgate-perf tls — {} at {target} ({server_name}), {mode} handshakes, closed loop", args.label);
    let loud = if profile == "release" { "" } else { "   <-- NOT RELEASE: NUMBERS ARE MEANINGLESS" };
    println!("  build profile : {profile}{loud}");
    let pinned = args.pin.map_or("none".to_string(), |c| format!("CPU {c} (all client threads)"));
    println!("  client pinned : {pinned}");
    println!(
        "  load          : {} connection(s), {} close, {:.1} s (+{:.1} s warmup), {} run(s), {}",
        args.connections,
        args.close.name(),
        args.seconds,
        args.warmup,
        runs.len(),
        if runs.len() > 1 { "median of runs shown" } else { "single run" }
    );
    if let Some((suite, group)) = negotiated {
        println!("  negotiated    : {suite}, {group}");
    }
    println!();
    println!("{:<30} {:>12}  unit", "measurement", "value");
    println!("{}", "-".repeat(78));
    for &(key, label, unit, raw) in ROWS {
        if (key.starts_with("server_cpu") || key.starts_with("capacity")) && args.server_pid.is_none()
            || key.starts_with("gate_") && args.gate_ctl.is_none()
        {
            continue;
        }
        println!("{label:<30} {:>12}  {unit}", shown(med(key), raw));
    }
    for &c in &args.cpus {
        println!("{:<30} {:>12}  % (/proc/stat, all processes)", format!("CPU {c} busy"), shown(med(cpu_key(c)), true));
        println!("{:<30} {:>12}  % (/proc/stat)", format!("CPU {c} in softirq"), shown(med(softirq_key(c)), true));
    }
}

// ---------------------------------------------------------------- report

/// All runs of one label in one mode, from any number of files.
#[derive(Default)]
struct Group {
    runs: Vec<BTreeMap<String, f64>>,
    files: Vec<String>,
    params: Option<serde_json::Value>,
    notes: Vec<String>,
}

impl Group {
    fn median(&self, key: &str) -> f64 {
        let xs: Vec<f64> = self.runs.iter().filter_map(|r| r.get(key).copied()).collect();
        median(&xs)
    }

    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for r in &self.runs {
            for k in r.keys() {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        keys
    }
}

fn report(args: &ReportArgs) -> Result<(), String> {
    // label -> mode -> group, labels in order of first appearance.
    let mut labels: Vec<String> = Vec::new();
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut profiles: Vec<String> = Vec::new();
    let mut first_doc: Option<serde_json::Value> = None;
    for path in &args.files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if doc["benchmark"] != "accessgate-perf tls" {
            return Err(format!("{}: not an `accessgate-perf tls --json` result", path.display()));
        }
        let label = doc["label"].as_str().unwrap_or("server").to_string();
        let mode = doc["mode"].as_str().unwrap_or("full").to_string();
        if !labels.contains(&label) {
            labels.push(label.clone());
        }
        if let Some(p) = doc["build_profile"].as_str() {
            if !profiles.iter().any(|x| x == p) {
                profiles.push(p.to_string());
            }
        }
        let g = groups.entry((label, mode)).or_default();
        for run in doc["runs"].as_array().into_iter().flatten() {
            let values = run
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                .collect::<BTreeMap<_, _>>();
            g.runs.push(values);
        }
        g.files.push(path.display().to_string());
        g.params.get_or_insert_with(|| doc["params"].clone());
        for n in doc["notes"].as_array().into_iter().flatten().filter_map(|n| n.as_str()) {
            if !g.notes.iter().any(|x| x == n) {
                g.notes.push(n.to_string());
            }
        }
        first_doc.get_or_insert(doc);
    }
    let first = first_doc.ok_or("no result files")?;
    let base = args.baseline.as_str();
    let peers: Vec<&String> = labels.iter().filter(|l| l.as_str() != base).collect();
    let has_base = labels.iter().any(|l| l == base);
    let profile = if profiles.len() == 1 { profiles[0].clone() } else { profiles.join("+") };
    let started = super::unix_time();

    print_report(args, &labels, &peers, has_base, &groups, &profile, &first);

    if args.no_write {
        return Ok(());
    }
    let mut servers = Vec::new();
    for label in &labels {
        let mut modes = Vec::new();
        for mode in ["full", "resume"] {
            let Some(g) = groups.get(&(label.clone(), mode.to_string())) else { continue };
            let keys = g.keys();
            modes.push((
                mode,
                Json::obj([
                    ("median", Json::obj(keys.iter().map(|k| (k.as_str(), Json::from(g.median(k)))))),
                    (
                        "runs",
                        Json::Arr(
                            g.runs
                                .iter()
                                .map(|r| Json::obj(r.iter().map(|(k, v)| (k.as_str(), Json::from(*v)))))
                                .collect(),
                        ),
                    ),
                    ("params", g.params.as_ref().map_or(Json::Null, to_json)),
                    ("notes", Json::Arr(g.notes.iter().map(|n| Json::from(n.as_str())).collect())),
                    ("files", Json::Arr(g.files.iter().map(|f| Json::from(f.as_str())).collect())),
                ]),
            ));
        }
        servers.push((label.as_str(), Json::obj(modes)));
    }
    let mut ratios = Vec::new();
    if has_base {
        for peer in &peers {
            let r = |mode: &str, key: &str| ratio(&groups, base, peer, mode, key);
            ratios.push((
                peer.as_str(),
                Json::obj([
                    ("full_per_sec", Json::from(r("full", "full_per_sec"))),
                    ("resumed_per_sec", Json::from(r("resume", "resumed_per_sec"))),
                    ("handshakes_per_sec_in_resume_mode", Json::from(r("resume", "handshakes_per_sec"))),
                    ("server_cpu_us_per_full_handshake", Json::from(r("full", "server_cpu_us_per_handshake"))),
                    ("capacity_per_core_full", Json::from(r("full", "capacity_per_core"))),
                    ("capacity_per_core_resume", Json::from(r("resume", "capacity_per_core"))),
                ]),
            ));
        }
    }
    let doc = Json::obj(super::result_header("accessgate-perf tls report", started, &profile).into_iter().chain([
        ("machine", to_json(&first["machine"])),
        ("notes", Json::Arr(args.note.iter().map(|n| Json::from(n.as_str())).collect())),
        ("baseline", Json::from(base)),
        ("ratio_definition", Json::from("baseline ÷ peer, per median")),
        ("servers", Json::obj(servers)),
        ("ratios", Json::obj(ratios)),
    ]));
    let dir = args.out_dir.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let stamped = dir.join(format!("tls-{started}.json"));
    let latest = dir.join("tls-latest.json");
    let text = doc.pretty();
    for path in [&stamped, &latest] {
        std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!();
    println!("wrote {} and {}", stamped.display(), latest.display());
    Ok(())
}

fn ratio(groups: &BTreeMap<(String, String), Group>, base: &str, peer: &str, mode: &str, key: &str) -> f64 {
    let m = |label: &str| groups.get(&(label.to_string(), mode.to_string())).map_or(f64::NAN, |g| g.median(key));
    m(base) / m(peer)
}

fn to_json(v: &serde_json::Value) -> Json {
    match v {
        serde_json::Value::Null => Json::Null,
        serde_json::Value::Bool(b) => Json::Bool(*b),
        serde_json::Value::Number(n) => {
            n.as_i64().map_or_else(|| Json::from(n.as_f64().unwrap_or(f64::NAN)), Json::Int)
        }
        serde_json::Value::String(s) => Json::from(s.as_str()),
        serde_json::Value::Array(a) => Json::Arr(a.iter().map(to_json).collect()),
        serde_json::Value::Object(o) => Json::obj(o.iter().map(|(k, v)| (k.as_str(), to_json(v)))),
    }
}

fn print_report(
    args: &ReportArgs,
    labels: &[String],
    peers: &[&String],
    has_base: bool,
    groups: &BTreeMap<(String, String), Group>,
    profile: &str,
    first: &serde_json::Value,
) {
    let base = args.baseline.as_str();
    let p = &first["params"];
    println!();
    println!("accessgate-perf tls report — TLS 1.3 handshakes, closed loop, medians over runs");
    let loud = if profile == "release" { "" } else { "   <-- NOT RELEASE: NUMBERS ARE MEANINGLESS" };
    println!("  build profile : {profile}{loud}");
    println!(
        "  load          : {} connection(s), {} close, {} s windows (+{} s warmup), client pinned to CPU {}",
        p["connections"],
        p["close"].as_str().unwrap_or("?"),
        p["seconds"],
        p["warmup_seconds"],
        p["client_pinned_cpu"].as_u64().map_or("none".into(), |c| c.to_string())
    );
    for label in labels {
        for mode in ["full", "resume"] {
            if let Some(g) = groups.get(&(label.clone(), mode.to_string())) {
                let suite = g.params.as_ref().and_then(|p| p["cipher_suite"].as_str()).unwrap_or("?");
                let group = g.params.as_ref().and_then(|p| p["key_exchange"].as_str()).unwrap_or("?");
                let target = g.params.as_ref().and_then(|p| p["target"].as_str()).unwrap_or("?");
                println!("  {label:<8} {mode:<6}: {} run(s) against {target}, {suite}, {group}", g.runs.len());
            }
        }
    }
    if has_base && !peers.is_empty() {
        println!("  ratio         : {base} ÷ peer (rates: > 1 means {base} is faster; costs: < 1 means cheaper)");
    }
    println!();
    let mut header = format!("{:<32}", "measurement");
    for l in labels {
        header.push_str(&format!(" {l:>10}"));
    }
    if has_base {
        for peer in peers {
            header.push_str(&format!(" {:>14}", format!("{base}/{peer}")));
        }
    }
    header.push_str("  unit");
    println!("{header}");
    println!("{}", "-".repeat(header.chars().count().max(78)));
    // The rows both modes report after their own rate rows.
    const SHARED: [Row; 9] = [
        ("latency_p50_us", "  latency p50", "µs", true),
        ("latency_p99_us", "  latency p99", "µs", true),
        ("client_cpu_percent", "  client CPU", "% of one CPU", true),
        ("server_cpu_percent", "  server CPU", "% of one CPU", true),
        ("server_cpu_us_per_handshake", "  server CPU per handshake", "µs (process CPU time)", true),
        ("gate_dp_work_percent", "  gate dp work (estimate)", "% of one CPU, not idle-looping", true),
        (
            "capacity_per_core",
            "  1 / server CPU per handshake",
            "handshakes/s per core (busy poll: lower bound)",
            false,
        ),
        ("gate_work_us_per_handshake", "  gate work per handshake", "µs, loop-count estimate (lower bound)", true),
        ("unclean_closes", "  unclean closes", "per window", true),
    ];
    let full: &[Row] = &[("full_per_sec", "  full handshakes", "handshakes/s", false)];
    let resume: &[Row] = &[
        ("resumed_per_sec", "  resumptions", "handshakes/s", false),
        ("handshakes_per_sec", "  all handshakes", "handshakes/s", false),
        ("resumed_percent", "  resumed share", "%", true),
    ];
    let sections: [(&str, &str, &[Row]); 2] = [
        ("full", "full handshakes (no session cache)", full),
        ("resume", "resumption (shared client session cache)", resume),
    ];
    // CPUs watched with --cpus, in order.
    let cpu_rows: Vec<(&'static str, String)> = (0..8)
        .flat_map(|c| [(cpu_key(c), format!("  CPU {c} busy")), (softirq_key(c), format!("  CPU {c} in softirq"))])
        .filter(|(k, _)| groups.values().any(|g| g.runs.iter().any(|r| r.contains_key(*k))))
        .collect();
    for (mode, title, rows) in sections {
        if !labels.iter().any(|l| groups.contains_key(&(l.clone(), mode.to_string()))) {
            continue;
        }
        println!("{title}");
        let cpus = cpu_rows.iter().map(|(k, l)| (*k, l.as_str(), "% (/proc/stat, all processes)", true));
        for (key, label, unit, raw) in rows.iter().chain(&SHARED).copied().chain(cpus) {
            let m = |l: &str| groups.get(&(l.to_string(), mode.to_string())).map_or(f64::NAN, |g| g.median(key));
            if labels.iter().all(|l| m(l).is_nan()) {
                continue;
            }
            let mut line = format!("{label:<32}");
            for l in labels {
                line.push_str(&format!(" {:>10}", shown(m(l), raw)));
            }
            if has_base {
                for peer in peers {
                    let r = m(base) / m(peer);
                    let text = if r.is_finite() { format!("{r:.2}") } else { "-".into() };
                    line.push_str(&format!(" {text:>14}"));
                }
            }
            line.push_str(&format!("  {unit}"));
            println!("{line}");
        }
    }
    // A rate is the server's only when the client had CPU to spare.
    if let Some(cpu) = p["client_pinned_cpu"].as_u64() {
        let key = cpu_key(cpu as usize);
        for ((label, mode), g) in groups {
            let busy = g.median(key);
            if busy >= CLIENT_BOUND_PERCENT {
                println!(
                    "note: {label} {mode}: the client's CPU {cpu} was {busy:.0} % busy (the client and anything else \
                     there), so this rate may be the client's limit, not {label}'s: compare the CPU per handshake"
                );
            }
        }
    }
}

/// Busy share of the client's CPU above which a rate is the client's.
const CLIENT_BOUND_PERCENT: f64 = 95.0;
