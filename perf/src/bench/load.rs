//! `accessgate-perf load`: Modbus/TCP request latency under a fixed,
//! open-loop request rate, through the gate, through a TLS-terminating proxy
//! (stunnel, HAProxy, nginx), or straight to the PLC (the floor).
//!
//! It opens `--sessions` long-lived sessions (plus `--idle-sessions` that
//! are opened and then left alone) and sends read-holding-registers
//! requests on a fixed schedule: request k is *intended* at
//! `t0 + k / total_rate` and goes to session `k mod sessions`, so each
//! session sends at `total_rate / sessions` requests per second, evenly
//! spaced, whatever the server does (open loop: a slow answer does not
//! delay the next request). Each answer's latency is measured from its
//! request's intended send time, not from when it was actually sent, so a
//! stall of the server or of the client itself shows up in full in every
//! request that should have gone out during it (the "coordinated omission"
//! correction of wrk2 and HdrHistogram). How late the client itself was
//! (actual send minus intended) is kept apart as the send lag, and split
//! by its loop (`client_loop_us`): how long it worked between two waits,
//! how much of that its thread was off its CPU (another task, or the host,
//! ran instead), and how late a wait that slept returned.
//!
//! Modes:
//!
//! - `gate`: TLS 1.3 to the asset's endpoint (rustls, the certificate
//!   verified against `--ca`), the access hello with a ticket (read from the
//!   file `accessgate login --config-dir` writes, or obtained by logging in
//!   here with `--user --password --totp-secret`), then Modbus/TCP inside
//!   the TLS stream.
//! - `tls`: TLS 1.3 to a TLS-terminating proxy, then Modbus/TCP inside.
//! - `plain`: Modbus/TCP straight to the PLC.
//!
//! The client is one thread with one epoll loop (mio): non-blocking
//! sockets, a timerfd armed for the next intended send (sub-millisecond,
//! which epoll's own timeout is not), one TLS record per request (requests
//! that fall due together on the same session share one record and one
//! write). Every answer is checked: function 3, the byte count, the first
//! register's value (the simulator's holding register i holds i), and its
//! transaction id against the requests in flight on that session (answers
//! may overtake older ones, as Modbus/TCP allows: counted, not an error).
//! Hellos the gate refuses as `audit_unavailable` while the sessions open
//! (it fails closed while its audit writer catches up) are retried.
//!
//! Latencies go into HdrHistograms (1 ns .. 60 s, 3 significant digits).
//! Each run writes a JSON summary, one `.hgrm` file per rate step in
//! HdrHistogram's percentile-distribution format (values in microseconds),
//! and an SVG percentile plot (x = 1/(1-percentile) on a log scale, as
//! HdrHistogram's plotter draws it; latency on a log scale). `--sweep` runs
//! a list of total rates on the same sessions and stops at the first step
//! whose p50 exceeds `--p50-bound-us`, whose p99 exceeds `--p99-bound-us`,
//! or that has any error (`--no-stop` runs them all); the last step of the
//! unbroken run of passes is the maximum sustainable rate.
//!
//! With `--server-pid`, the server's CPU time over the measurement window
//! (utime + stime of all its threads, /proc/PID/stat) per 100 000 requests,
//! and its resident memory before and after the sessions opened (VmRSS) per
//! session (reports show it only for `--fresh-server` runs). With `--gate-ctl` as well, the busy-polling gate's dp-core loop
//! counts estimate how much of its always-100 % core was work: the loop rate
//! per dp CPU second is calibrated for 1 s with the sessions open and quiet,
//! and the share by which it falls under load is counted as the load's work
//! (a lower bound: work done in loops that would have run anyway is missed).
//!
//! `accessgate-perf load report FILE...` puts runs side by side per
//! scenario: added latency per percentile against a baseline label (the
//! direct runs), the maximum sustainable rate, CPU per 100k requests and
//! memory per session; it writes a Markdown table, a JSON file and one SVG
//! plot per scenario. It also says how sure each percentile is (95 %
//! distribution-free intervals, [`super::interval`]) and judges the issue's
//! targets on them: a latency target is met or not met only when the
//! intervals are apart, else "not resolved"; a rate target on the medians
//! of the rounds, unresolved where a server passed the sweep's top.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{ErrorKind, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::client::{self, Answer};
use dataplane::counters::{bucket_name, SLOW_PASSES, STALLS, STALL_BOUNDS_US};
use dataplane::wire::hello::{Auth, Reason};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use serde_json::{json, Map, Value};

use super::interval::{Interval, Verdict};
use super::procfs::{self, CpuTicks, USER_HZ};
use super::{build_profile, list_or_dash, si};

/// Most sessions (active + idle) one run opens.
const MAX_SESSIONS: usize = 20_000;
/// Longest measurement window and warmup.
const MAX_SECONDS: f64 = 300.0;
const MAX_WARMUP: f64 = 60.0;
/// Most sweep steps.
const MAX_STEPS: usize = 24;
/// The timerfd's token; sessions are tokens 0..n.
const TIMER: Token = Token(usize::MAX - 1);
/// Highest latency the histograms hold: 60 s in ns.
const HIST_MAX_NS: u64 = 60_000_000_000;
/// Pause before opening again a session the gate refused for a passing reason.
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// Protocol anomalies kept for the result file.
const MAX_ANOMALIES: usize = 20;
/// Percentiles reported everywhere (1.0 = max).
const PERCENTILES: [(&str, f64); 6] =
    [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999), ("max", 1.0)];
/// Confidence of the report's percentile intervals.
const CONFIDENCE: f64 = 0.95;
/// The peers the issue's targets compare the gate with (labels of `scripts/bench`).
const PEERS: [&str; 3] = ["stunnel", "haproxy", "nginx"];

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LoadArgs {
    #[command(subcommand)]
    command: Option<LoadCommand>,
    #[command(flatten)]
    run: Box<RunArgs>,
}

#[derive(clap::Subcommand, Debug)]
enum LoadCommand {
    /// Put `load` results side by side per scenario (added latency against a
    /// baseline label, max rate, CPU per 100k requests, memory per session);
    /// write a Markdown table, JSON and one SVG plot per scenario.
    Report(ReportArgs),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// TLS to the asset's endpoint, the access hello with a ticket, Modbus inside.
    Gate,
    /// TLS to a TLS-terminating proxy, Modbus inside.
    Tls,
    /// Modbus/TCP straight to the PLC.
    Plain,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Gate => "gate",
            Mode::Tls => "tls",
            Mode::Plain => "plain",
        }
    }
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// gate (TLS + access hello + Modbus), tls (TLS + Modbus) or plain (Modbus).
    #[arg(long, value_enum, required = true)]
    mode: Option<Mode>,
    /// Where the sessions go (the endpoint, the proxy or the PLC).
    #[arg(long, value_name = "IP:PORT", required = true)]
    target: Option<SocketAddr>,
    /// Name sent (SNI) and verified in the server's certificate.
    #[arg(long, default_value = "gate.lab")]
    server_name: String,
    /// CA certificate (PEM) for tls and gate modes (gate: default from the ticket file).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// gate mode: the ticket file `accessgate login --config-dir DIR` wrote (DIR/ticket).
    #[arg(long, value_name = "FILE")]
    ticket_file: Option<PathBuf>,
    /// gate mode without a ticket file: log in here first (the gate's login endpoint).
    #[arg(long, value_name = "IP:PORT", default_value = "100.64.0.1:443")]
    login: SocketAddr,
    /// gate mode: user to log in as (with --password and --totp-secret).
    #[arg(long)]
    user: Option<String>,
    /// gate mode: that user's password.
    #[arg(long)]
    password: Option<String>,
    /// gate mode: that user's TOTP secret (base32); the code is computed here.
    #[arg(long)]
    totp_secret: Option<String>,
    /// gate mode: asset and service named in the hello.
    #[arg(long, default_value = "plc-7")]
    asset: String,
    #[arg(long, default_value = "modbus")]
    service: String,
    /// Sessions that send requests (1..=20000).
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// More sessions, opened (TLS, hello) before the load and then left idle.
    #[arg(long, default_value_t = 0)]
    idle_sessions: usize,
    /// Requests per second per session.
    #[arg(long, value_name = "REQ/S")]
    rate: Option<f64>,
    /// Requests per second over all sessions (instead of --rate).
    #[arg(long, value_name = "REQ/S", conflicts_with = "rate")]
    total_rate: Option<f64>,
    /// Find the maximum: these total rates in turn, on the same sessions,
    /// until a step fails (p50 or p99 above their bounds, or any error).
    #[arg(long, value_name = "LIST", value_delimiter = ',', conflicts_with_all = ["rate", "total_rate"])]
    sweep: Vec<f64>,
    /// Run every rate of --sweep even after a step fails (to compare
    /// latencies rate by rate rather than to find the maximum).
    #[arg(long, requires = "sweep")]
    no_stop: bool,
    /// Run a failed sweep step again, up to N more times, before it counts
    /// as failed: one stalled window of a noisy machine should not end a
    /// sweep, while a saturated server fails every attempt (its queue
    /// grows in each). Each step's attempts are in the JSON.
    #[arg(long, default_value_t = 0, requires = "sweep")]
    retry_failed: u32,
    /// Sweep pass criterion: p99 at most this (µs).
    #[arg(long, default_value_t = 1000.0)]
    p99_bound_us: f64,
    /// Sweep pass criterion: p50 at most this (µs). A saturated server's
    /// queue grows for the whole window, so its median runs away, while a
    /// noisy machine's jitter only moves the upper percentiles.
    #[arg(long, default_value_t = 1000.0)]
    p50_bound_us: f64,
    /// Measurement window per rate step (seconds, at most 300).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Load before each window opens, not recorded (seconds, at most 60).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Stop sending after this many requests in a step (warmup included).
    #[arg(long, value_name = "N")]
    max_requests: Option<u64>,
    /// Holding registers per read (1..=125), starting at --address.
    #[arg(long, default_value_t = 10)]
    registers: u16,
    #[arg(long, default_value_t = 0)]
    address: u16,
    /// Modbus unit id.
    #[arg(long, default_value_t = 1)]
    unit: u8,
    /// After the window, wait at most this long for the last answers (ms);
    /// what is still unanswered counts as an error.
    #[arg(long, default_value_t = 3000)]
    drain_ms: u64,
    /// Session handshakes in flight while opening.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// Give up opening the sessions after this many seconds.
    #[arg(long, default_value_t = 180)]
    connect_timeout: u64,
    /// Pin the client to this CPU.
    #[arg(long, value_name = "CPU")]
    pin: Option<usize>,
    /// Busy-poll (epoll_wait with a zero timeout) instead of sleeping until
    /// the next send or answer: the client's CPU never idles, so its own
    /// wake-up latency (large on a virtual machine's idle vCPU) stays out of
    /// the measurement. Costs a whole CPU, shared with whatever else runs there.
    #[arg(long)]
    spin: bool,
    /// The server's pid: its CPU time per 100k requests and VmRSS per session.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// The server was started just for this run (no earlier sessions): its
    /// VmRSS growth per session is then meaningful, and reports show it.
    #[arg(long, requires = "server_pid")]
    fresh_server: bool,
    /// The PLC's pid: its CPU share (to show it is not the bottleneck).
    #[arg(long, value_name = "PID")]
    plc_pid: Option<u32>,
    /// The gate's management socket (with --server-pid): dp-loop work estimate and counters.
    #[arg(long, value_name = "SOCKET", requires = "server_pid")]
    gate_ctl: Option<PathBuf>,
    /// Also report how busy these CPUs were (/proc/stat), e.g. 0,1.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Name of the target in results and reports (default: the mode).
    #[arg(long)]
    label: Option<String>,
    /// Name of the scenario in results and reports.
    #[arg(long, default_value = "run")]
    scenario: String,
    /// Free text recorded in the result.
    #[arg(long, value_name = "TEXT")]
    note: Vec<String>,
    /// Output path prefix: PREFIX.json, PREFIX.svg, PREFIX[-stepN].hgrm
    /// (default perf/results/load-SCENARIO-LABEL-<unix time>).
    #[arg(long, value_name = "PREFIX")]
    out: Option<PathBuf>,
    /// Print only; write no files.
    #[arg(long)]
    no_write: bool,
}

#[derive(clap::Args, Debug)]
struct ReportArgs {
    /// Result files written by `load` (PREFIX.json).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The label the others are compared with (added latency = other − this).
    #[arg(long, default_value = "direct")]
    baseline: String,
    /// Free text recorded in the report.
    #[arg(long, value_name = "TEXT")]
    note: Vec<String>,
    /// Output prefix: PREFIX.md, PREFIX.json, PREFIX-SCENARIO.svg
    /// (default perf/results/load-report-<unix time>).
    #[arg(long, value_name = "PREFIX")]
    out: Option<PathBuf>,
    /// Also copy the outputs to this prefix (e.g. perf/results/load-latest).
    #[arg(long, value_name = "PREFIX")]
    latest: Option<PathBuf>,
}

pub fn load(args: &LoadArgs) -> Result<(), String> {
    match &args.command {
        Some(LoadCommand::Report(r)) => report(r),
        None => run(&args.run),
    }
}

// ------------------------------------------------------------------ sessions

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Connecting,
    Handshaking,
    Hello,
    Ready,
    Dead,
    /// Refused for a passing reason while opening (the gate's audit trail
    /// could not take the session's records yet): opened again at this time.
    Retry(Instant),
}

struct Session {
    sock: TcpStream,
    tls: Option<ClientConnection>,
    phase: Phase,
    /// Sent, unanswered: (transaction id, intended send time, in the window?).
    inflight: VecDeque<(u16, Instant, bool)>,
    next_tid: u16,
    /// Plaintext received and not yet parsed.
    rbuf: Vec<u8>,
    /// Plaintext to send: requests not yet handed to TLS (or to the socket).
    out: Vec<u8>,
    /// Plain mode: bytes of `out` already written.
    out_pos: usize,
    dirty: bool,
    /// The server's close_notify arrived (reported after what came before it).
    closed: bool,
}

/// What one step counted.
#[derive(Default, Clone, Copy)]
struct Tally {
    sent: u64,
    sent_in_window: u64,
    answered: u64,
    answered_in_window: u64,
    exceptions: u64,
    /// Exceptions by code (01..=0b; 0 = other).
    exception_codes: [u64; 12],
    bad_answers: u64,
    out_of_order: u64,
    /// Answers whose transaction id no request in flight has.
    unexpected: u64,
    /// Requests due on a session that was no longer open.
    unsendable: u64,
    /// Requests lost with a session that failed.
    lost: u64,
    session_failures: u64,
}

impl Tally {
    fn errors(&self) -> u64 {
        self.exceptions
            + self.bad_answers
            + self.out_of_order
            + self.unexpected
            + self.unsendable
            + self.lost
            + self.session_failures
    }
}

struct Engine<'a> {
    args: &'a RunArgs,
    mode: Mode,
    target: SocketAddr,
    poll: Poll,
    events: Events,
    timer: TimerFd,
    armed: Option<Instant>,
    sessions: Vec<Session>,
    active: Vec<usize>,
    tls: Option<Arc<ClientConfig>>,
    server_name: ServerName<'static>,
    hello: Vec<u8>,
    hist: Histogram<u64>,
    lag: Histogram<u64>,
    /// Where the send lag comes from: the loop's own time between two
    /// waits, and how late a wait that slept returned after the time it
    /// asked for (the timer's and the scheduler's lateness).
    loop_time: LoopTime,
    tally: Tally,
    /// Recorded requests sent and not yet answered or lost.
    outstanding: u64,
    first_error: Option<String>,
    plain: Vec<u8>,
    dirty: Vec<usize>,
    tokens: Vec<Token>,
    /// The first few protocol anomalies seen (answers out of order, unknown ids).
    anomalies: Vec<String>,
    /// Sessions are being opened (transient refusals are retried).
    opening: bool,
    /// Hellos refused as audit_unavailable while opening, and retried.
    refusals_retried: u64,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds")
}

/// How an engine reaches its target: the mode, and for TLS the client
/// config, the server name and the hello to send.
struct Reach {
    mode: Mode,
    tls: Option<Arc<ClientConfig>>,
    server_name: ServerName<'static>,
    hello: Vec<u8>,
}

impl<'a> Engine<'a> {
    /// An engine with no session open yet, room for `sessions`.
    fn new(args: &'a RunArgs, target: SocketAddr, reach: Reach, sessions: usize) -> Result<Self, String> {
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)
            .map_err(|e| format!("timerfd: {e}"))?;
        poll.registry()
            .register(&mut SourceFd(&timer.as_fd().as_raw_fd()), TIMER, Interest::READABLE)
            .map_err(|e| format!("epoll register: {e}"))?;
        let Reach { mode, tls, server_name, hello } = reach;
        Ok(Self {
            args,
            mode,
            target,
            poll,
            events: Events::with_capacity(1024),
            timer,
            armed: None,
            sessions: Vec::with_capacity(sessions),
            active: Vec::new(),
            tls,
            server_name,
            hello,
            hist: new_hist(),
            lag: new_hist(),
            loop_time: LoopTime::new(),
            tally: Tally::default(),
            outstanding: 0,
            first_error: None,
            plain: vec![0u8; 64 * 1024],
            dirty: Vec::new(),
            tokens: Vec::new(),
            anomalies: Vec::new(),
            opening: false,
            refusals_retried: 0,
        })
    }
}

impl Engine<'_> {
    fn note_error(&mut self, e: String) {
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    /// Marks session `i` failed; its requests in flight are lost.
    fn fail(&mut self, i: usize, why: String) {
        let s = &mut self.sessions[i];
        if s.phase == Phase::Dead {
            return;
        }
        let was = s.phase;
        s.phase = Phase::Dead;
        let lost_recorded = s.inflight.iter().filter(|e| e.2).count() as u64;
        self.tally.lost += s.inflight.len() as u64;
        self.outstanding -= lost_recorded;
        s.inflight.clear();
        let _ = self.poll.registry().deregister(&mut s.sock);
        let _ = s.sock.shutdown(std::net::Shutdown::Both);
        self.tally.session_failures += 1;
        self.note_error(format!("session {i} ({was:?}): {why}"));
    }

    /// Opens session `i`: a new one, or again in place of a refused one.
    fn start_session(&mut self, i: usize) -> Result<(), String> {
        let mut sock = TcpStream::connect(self.target).map_err(|e| format!("connect {}: {e}", self.target))?;
        self.poll
            .registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("epoll register: {e}"))?;
        let session = Session {
            sock,
            tls: None,
            phase: Phase::Connecting,
            inflight: VecDeque::new(),
            next_tid: 1,
            rbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            dirty: false,
            closed: false,
        };
        match self.sessions.get_mut(i) {
            Some(old) => *old = session,
            None => self.sessions.push(session),
        }
        Ok(())
    }

    /// Moves session `i` along as far as its socket allows: connect, TLS,
    /// hello, writes, reads and answers.
    fn pump(&mut self, i: usize) {
        if let Err(e) = self.pump_inner(i) {
            self.fail(i, e);
        }
    }

    fn pump_inner(&mut self, i: usize) -> Result<(), String> {
        let mode = self.mode;
        if self.sessions[i].phase == Phase::Dead {
            return Ok(());
        }
        if self.sessions[i].phase == Phase::Connecting {
            let s = &mut self.sessions[i];
            if let Ok(Some(e)) | Err(e) = s.sock.take_error() {
                return Err(format!("connect: {e}"));
            }
            match s.sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(format!("connect: {e}")),
            }
            s.sock.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
            match (mode, &self.tls) {
                (Mode::Plain, _) => s.phase = Phase::Ready,
                (_, Some(config)) => {
                    let mut conn =
                        ClientConnection::new(config.clone(), self.server_name.clone()).map_err(|e| e.to_string())?;
                    conn.set_buffer_limit(None);
                    s.tls = Some(conn);
                    s.phase = Phase::Handshaking;
                }
                (_, None) => return Err("no TLS configuration".into()),
            }
        }
        if mode == Mode::Plain {
            return self.pump_plain(i);
        }
        // TLS: write what rustls has, read what the socket has, repeat while
        // the phase moves on (the handshake's last flight, the hello).
        loop {
            let before = self.sessions[i].phase;
            self.tls_write(i)?;
            let got = self.tls_read(i)?;
            let s = &mut self.sessions[i];
            let Some(conn) = s.tls.as_mut() else { return Err("TLS session missing".into()) };
            if s.phase == Phase::Handshaking && !conn.is_handshaking() {
                if mode == Mode::Gate {
                    conn.writer().write_all(&self.hello).map_err(|e| format!("hello: {e}"))?;
                    s.phase = Phase::Hello;
                } else {
                    s.phase = Phase::Ready;
                }
            }
            if s.phase == Phase::Hello {
                match client::parse_answer(&s.rbuf)? {
                    None => {}
                    Some((Answer::Accept { .. }, n)) => {
                        s.rbuf.drain(..n);
                        s.phase = Phase::Ready;
                    }
                    Some((Answer::Refuse { reason, .. }, _)) if reason == Reason::AuditUnavailable && self.opening => {
                        // Fail closed while the audit writer catches up: try again shortly.
                        let _ = self.poll.registry().deregister(&mut s.sock);
                        let _ = s.sock.shutdown(std::net::Shutdown::Both);
                        s.phase = Phase::Retry(Instant::now() + RETRY_AFTER);
                        self.refusals_retried += 1;
                        return Ok(());
                    }
                    Some((Answer::Refuse { reason, .. }, _)) => {
                        return Err(format!("the gate refused the hello: {}", reason.as_str()))
                    }
                }
            }
            if let Some(now) = got {
                if self.sessions[i].phase == Phase::Ready {
                    self.answers(i, now)?;
                }
            }
            let s = &self.sessions[i];
            if s.closed && matches!(s.phase, Phase::Handshaking | Phase::Hello | Phase::Ready) {
                return Err(format!("the server sent close_notify ({:?})", s.phase));
            }
            let wants = s.tls.as_ref().is_some_and(|c| c.wants_write());
            if s.phase == before && !wants {
                return Ok(());
            }
            if s.phase == before && got.is_none() {
                // Something to write but the socket is full: the writable edge comes back here.
                return self.tls_write(i);
            }
        }
    }

    /// Writes rustls' pending records until the socket would block.
    fn tls_write(&mut self, i: usize) -> Result<(), String> {
        let s = &mut self.sessions[i];
        let Some(conn) = s.tls.as_mut() else { return Ok(()) };
        while conn.wants_write() {
            match conn.write_tls(&mut s.sock) {
                Ok(0) => return Err("socket closed while writing".into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        Ok(())
    }

    /// Reads and decrypts everything available; `Some(time)` of the last
    /// read that brought bytes.
    fn tls_read(&mut self, i: usize) -> Result<Option<Instant>, String> {
        let Self { sessions, plain, .. } = self;
        let s = &mut sessions[i];
        let Some(conn) = s.tls.as_mut() else { return Ok(None) };
        let mut got = None;
        loop {
            match conn.read_tls(&mut s.sock) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(_) => {
                    got = Some(Instant::now());
                    let state = conn.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
                    loop {
                        match conn.reader().read(plain) {
                            Ok(0) => break,
                            Ok(n) => s.rbuf.extend_from_slice(&plain[..n]),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => return Err(format!("TLS read: {e}")),
                        }
                    }
                    if state.peer_has_closed() {
                        s.closed = true;
                        return Ok(got);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(got),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    fn pump_plain(&mut self, i: usize) -> Result<(), String> {
        self.plain_write(i)?;
        let Self { sessions, plain, .. } = self;
        let s = &mut sessions[i];
        let mut got = None;
        loop {
            match s.sock.read(plain) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => {
                    got = Some(Instant::now());
                    s.rbuf.extend_from_slice(&plain[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        if let Some(now) = got {
            if s.phase == Phase::Ready {
                self.answers(i, now)?;
            }
        }
        Ok(())
    }

    fn plain_write(&mut self, i: usize) -> Result<(), String> {
        let s = &mut self.sessions[i];
        while s.out_pos < s.out.len() {
            match s.sock.write(&s.out[s.out_pos..]) {
                Ok(0) => return Err("socket closed while writing".into()),
                Ok(n) => s.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        s.out.clear();
        s.out_pos = 0;
        Ok(())
    }

    /// Parses the complete answers in session `i`'s buffer, received at `now`.
    fn answers(&mut self, i: usize, now: Instant) -> Result<(), String> {
        let (qty, first) = (self.args.registers, self.args.address);
        let Self { sessions, hist, tally, outstanding, anomalies, .. } = self;
        let s = &mut sessions[i];
        let mut at = 0;
        while s.rbuf.len() - at >= 8 {
            let f = &s.rbuf[at..];
            let len = usize::from(u16::from_be_bytes([f[4], f[5]]));
            if !(2..=254).contains(&len) {
                return Err(format!("not a Modbus/TCP answer (length field {len})"));
            }
            if f.len() < 6 + len {
                break;
            }
            let tid = u16::from_be_bytes([f[0], f[1]]);
            let oldest = s.inflight.front().map(|e| e.0);
            let Some(pos) = s.inflight.iter().position(|e| e.0 == tid) else {
                tally.unexpected += 1;
                if anomalies.len() < MAX_ANOMALIES {
                    anomalies.push(format!(
                        "session {i}: an answer with transaction id {tid}, which no request in flight has \
                         (oldest in flight: {oldest:?})"
                    ));
                }
                at += 6 + len;
                continue;
            };
            let fc = f[7];
            if pos > 0 {
                // Modbus/TCP matches answers by transaction id, so this is
                // legal (the gate answers a flood at once with exception 06,
                // ahead of the PLC's answers): counted, not an error.
                tally.out_of_order += 1;
                if anomalies.len() < MAX_ANOMALIES {
                    anomalies.push(format!(
                        "session {i}: the answer to transaction {tid} (function {fc:#04x}{}) overtook {pos} older \
                         request(s) (oldest {oldest:?})",
                        if fc & 0x80 != 0 { format!(", exception {:#04x}", f[8]) } else { String::new() }
                    ));
                }
            }
            let Some((_, intended, recorded)) = s.inflight.remove(pos) else { break };
            tally.answered += 1;
            if recorded {
                tally.answered_in_window += 1;
                *outstanding -= 1;
                let ns = now.saturating_duration_since(intended).as_nanos().clamp(1, u128::from(HIST_MAX_NS)) as u64;
                let _ = hist.record(ns);
            }
            if fc & 0x80 != 0 {
                tally.exceptions += 1;
                let code = usize::from(f[8]);
                tally.exception_codes[if code < 12 { code } else { 0 }] += 1;
            } else if fc != 3
                || len != 3 + 2 * usize::from(qty)
                || usize::from(f[8]) != 2 * usize::from(qty)
                || u16::from_be_bytes([f[9], f[10]]) != first
            {
                tally.bad_answers += 1;
            }
            at += 6 + len;
        }
        s.rbuf.drain(..at);
        Ok(())
    }

    /// Queues one request on session `i`, intended at `intended`.
    fn send(&mut self, i: usize, intended: Instant, recorded: bool, now: Instant) {
        let (unit, addr, qty) = (self.args.unit, self.args.address, self.args.registers);
        let s = &mut self.sessions[i];
        self.tally.sent += 1;
        if recorded {
            self.tally.sent_in_window += 1;
        }
        if s.phase != Phase::Ready {
            self.tally.unsendable += 1;
            return;
        }
        // A transaction id still in flight (a request never answered, 65,536
        // requests ago) would take the new request's answer: the next free.
        let mut tid = s.next_tid;
        for _ in 0..s.inflight.len() {
            if !s.inflight.iter().any(|e| e.0 == tid) {
                break;
            }
            tid = tid.wrapping_add(1);
        }
        s.next_tid = tid.wrapping_add(1);
        let [t0, t1] = tid.to_be_bytes();
        let [a0, a1] = addr.to_be_bytes();
        let [q0, q1] = qty.to_be_bytes();
        s.out.extend_from_slice(&[t0, t1, 0, 0, 0, 6, unit, 3, a0, a1, q0, q1]);
        s.inflight.push_back((tid, intended, recorded));
        if recorded {
            self.outstanding += 1;
            let _ = self.lag.record(ns_of(now.saturating_duration_since(intended)));
        }
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(i);
        }
    }

    /// Writes the requests queued since the last flush: one TLS record and
    /// one write per session.
    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            self.sessions[i].dirty = false;
            let r = match self.mode {
                Mode::Plain => self.plain_write(i),
                _ => {
                    let s = &mut self.sessions[i];
                    let r = match s.tls.as_mut() {
                        Some(conn) => conn.writer().write_all(&s.out).map_err(|e| format!("TLS write: {e}")),
                        None => Err("TLS session missing".into()),
                    };
                    s.out.clear();
                    r.and_then(|()| self.tls_write(i))
                }
            };
            if let Err(e) = r {
                self.fail(i, e);
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// Waits for events until `deadline` at the latest (timerfd, so
    /// sub-millisecond), then handles them.
    fn wait(&mut self, deadline: Instant) -> Result<(), String> {
        let now = Instant::now();
        self.loop_time.waiting(now);
        let timeout = if deadline <= now || self.args.spin {
            Some(Duration::ZERO)
        } else {
            if self.armed != Some(deadline) {
                let d = deadline - now;
                self.timer
                    .set(Expiration::OneShot(TimeSpec::from_duration(d)), TimerSetTimeFlags::empty())
                    .map_err(|e| format!("timerfd: {e}"))?;
                self.armed = Some(deadline);
            }
            // A safety net only: the timerfd wakes the loop on time.
            Some(deadline - now + Duration::from_millis(5))
        };
        let polled = self.poll.poll(&mut self.events, timeout);
        self.loop_time.woke(Instant::now(), deadline, timeout != Some(Duration::ZERO));
        match polled {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(format!("epoll_wait: {e}")),
        }
        let mut tokens = std::mem::take(&mut self.tokens);
        tokens.clear();
        tokens.extend(self.events.iter().map(|e| e.token()));
        for &t in &tokens {
            if t == TIMER {
                let mut b = [0u8; 8];
                let _ = nix::unistd::read(&self.timer, &mut b);
                self.armed = None;
            } else if t.0 < self.sessions.len() {
                self.pump(t.0);
            }
        }
        self.tokens = tokens;
        Ok(())
    }

    /// Opens `active + idle` sessions, `--connect-concurrency` at a time.
    fn open_all(&mut self, active: usize, idle: usize) -> Result<f64, String> {
        let total = active + idle;
        let started = Instant::now();
        let deadline = started + Duration::from_secs(self.args.connect_timeout);
        let concurrency = self.args.connect_concurrency.max(1);
        let mut progress = Progress::new();
        let mut next = 0;
        self.opening = true;
        loop {
            let mut pending = 0;
            let mut ready = 0;
            let mut dead = 0;
            let mut due = Vec::new();
            let now = Instant::now();
            for (i, s) in self.sessions.iter().enumerate() {
                match s.phase {
                    Phase::Ready => ready += 1,
                    Phase::Dead => dead += 1,
                    Phase::Retry(at) if at <= now => due.push(i),
                    _ => pending += 1,
                }
            }
            for i in due {
                if pending >= concurrency {
                    break;
                }
                self.start_session(i)?;
                pending += 1;
            }
            if dead > 0 {
                let why = self.first_error.clone().unwrap_or_default();
                return Err(format!("{dead} session(s) failed to open ({ready} open): {why}"));
            }
            if ready == total {
                break;
            }
            while pending < concurrency && next < total {
                self.start_session(next)?;
                next += 1;
                pending += 1;
            }
            if Instant::now() > deadline {
                return Err(format!("only {ready} of {total} sessions open after {} s", self.args.connect_timeout));
            }
            progress.tick(|| format!("opening sessions: {ready}/{total} open, {pending} in progress"));
            self.wait(Instant::now() + Duration::from_millis(20))?;
        }
        self.opening = false;
        let retried = if self.refusals_retried > 0 {
            format!(" ({} hello(s) refused as audit_unavailable on the way, opened again)", self.refusals_retried)
        } else {
            String::new()
        };
        progress.done(&format!("{total} session(s) open in {:.2} s{retried}", started.elapsed().as_secs_f64()));
        self.active = (0..active).collect();
        Ok(started.elapsed().as_secs_f64())
    }

    /// One rate step: warmup, window, drain.
    fn step(&mut self, total_rate: f64, probes: &Probes, title: &str) -> Result<StepOut, String> {
        self.hist.reset();
        self.lag.reset();
        self.loop_time.reset();
        self.tally = Tally::default();
        self.outstanding = 0;
        // Requests an earlier step (or a failed attempt of this one) left
        // unanswered were counted there; an answer that comes now is not
        // this step's sample, nor one of its outstanding requests.
        for s in &mut self.sessions {
            for e in &mut s.inflight {
                e.2 = false;
            }
        }
        let n = self.active.len() as u64;
        let period_ns = 1e9 / total_rate;
        let t0 = Instant::now() + Duration::from_millis(2);
        let tw = t0 + Duration::from_secs_f64(self.args.warmup);
        let mut tend = tw + Duration::from_secs_f64(self.args.seconds);
        let max_k = self.args.max_requests.unwrap_or(u64::MAX);
        let mut k: u64 = 0;
        // The window's two snapshots are taken on threads of their own: the
        // gate's is a request on its ctl socket, answered at its control
        // loop's next turn (up to ~20 ms), and taken on this thread it held
        // the sends due meanwhile, hundreds at 20k req/s, in every gate
        // run's tail and no peer's (perf/README, round fifteen).
        let mut snap0: Option<Probing> = None;
        let mut snap1: Option<Probing> = None;
        let mut drain_until: Option<Instant> = None;
        let mut progress = Progress::new();
        let at = |k: u64| t0 + Duration::from_nanos((k as f64 * period_ns) as u64);
        loop {
            let now = Instant::now();
            if snap0.is_none() && now >= tw {
                snap0 = Some(probes.start());
            }
            while k < max_k {
                let due = at(k);
                if due > now || due >= tend {
                    break;
                }
                let s = self.active[(k % n) as usize];
                self.send(s, due, due >= tw, now);
                k += 1;
            }
            if k >= max_k && tend > now {
                tend = now.max(tw);
            }
            self.flush();
            let now = Instant::now();
            if now >= tend {
                if snap0.is_none() {
                    snap0 = Some(probes.start());
                }
                if snap1.is_none() {
                    snap1 = Some(probes.start());
                    drain_until = Some(now + Duration::from_millis(self.args.drain_ms));
                }
                if self.outstanding == 0 || drain_until.is_some_and(|d| now >= d) {
                    break;
                }
            }
            let elapsed = now.saturating_duration_since(t0).as_secs_f64();
            let total = (tend - t0).as_secs_f64();
            progress.tick(|| {
                let p99 = if self.hist.is_empty() { "-".into() } else { us(self.hist.value_at_quantile(0.99)) };
                format!(
                    "{title}: {:>5.1}/{total:.1} s  sent {}  answered {}  in flight {}  errors {}  p99 so far {p99} µs",
                    elapsed.min(total),
                    self.tally.sent,
                    self.tally.answered,
                    self.tally.sent.saturating_sub(self.tally.answered + self.tally.lost + self.tally.unsendable),
                    self.tally.errors()
                )
            });
            let mut deadline = progress.next;
            if k < max_k && at(k) < tend {
                deadline = deadline.min(at(k));
            } else if snap1.is_none() {
                deadline = deadline.min(tend);
            }
            if snap0.is_none() {
                deadline = deadline.min(tw);
            }
            if let Some(d) = drain_until {
                deadline = deadline.min(d);
            }
            self.wait(deadline)?;
        }
        let unanswered = self.outstanding;
        let (s0, s1) = (snap0.ok_or("no window start")?.finish()?, snap1.ok_or("no window end")?.finish()?);
        progress.done(&format!(
            "{title}: {} requests in the window, {} answered, p99 {} µs, errors {}",
            self.tally.sent_in_window,
            self.tally.answered_in_window,
            if self.hist.is_empty() { "-".into() } else { us(self.hist.value_at_quantile(0.99)) },
            self.tally.errors() + unanswered
        ));
        Ok(StepOut {
            total_rate,
            hist: self.hist.clone(),
            lag: self.lag.clone(),
            loop_time: self.loop_time.clone(),
            tally: self.tally,
            unanswered,
            s0,
            s1,
            sessions: n as usize,
        })
    }
}

// ------------------------------------------------------------------ progress

/// A progress line on stderr: redrawn in place on a terminal, one line every
/// 5 s otherwise.
struct Progress {
    tty: bool,
    next: Instant,
    drawn: bool,
}

impl Progress {
    fn new() -> Self {
        Self { tty: std::io::stderr().is_terminal(), next: Instant::now() + Duration::from_millis(500), drawn: false }
    }

    fn every(&self) -> Duration {
        if self.tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        }
    }

    fn tick(&mut self, line: impl FnOnce() -> String) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + self.every();
        let text = line();
        if self.tty {
            eprint!("\r\x1b[2K  {text}");
            self.drawn = true;
        } else {
            eprintln!("  {text}");
        }
    }

    fn done(&mut self, text: &str) {
        if self.tty && self.drawn {
            eprint!("\r\x1b[2K");
        }
        eprintln!("  {text}");
    }
}

// ------------------------------------------------------------------ probes

/// What is watched around each window.
#[derive(Clone)]
struct Probes {
    own: u32,
    server: Option<u32>,
    plc: Option<u32>,
    gate_ctl: Option<PathBuf>,
    cpus: Vec<usize>,
}

struct Snap {
    at: Instant,
    own: Option<u64>,
    server: Option<u64>,
    /// The server's threads by name (threads of one name summed).
    threads: Vec<(String, u64)>,
    /// The server's context switches, all threads: (voluntary, involuntary).
    switches: Option<(u64, u64)>,
    plc: Option<u64>,
    cpus: Vec<CpuTicks>,
    gate: Option<GateSnap>,
    /// The kernel's TCP loss counters in the client's and the PLC's
    /// network namespaces.
    tcp_client: Option<[u64; 3]>,
    tcp_plc: Option<[u64; 3]>,
}

struct GateSnap {
    loops: u64,
    dp_ticks: u64,
    stats: Map<String, Value>,
}

fn gate_snap(ctl: &Path, pid: u32) -> Result<GateSnap, String> {
    let stats = procfs::gate_stats(ctl)?;
    Ok(GateSnap {
        loops: stats.get("loops").and_then(Value::as_u64).unwrap_or(0),
        dp_ticks: procfs::dp_ticks(pid)?,
        stats,
    })
}

/// A snapshot being taken on a thread of its own ([`Probes::start`]).
struct Probing(std::thread::JoinHandle<Result<Snap, String>>);

impl Probing {
    fn finish(self) -> Result<Snap, String> {
        self.0.join().map_err(|_| "the probe thread panicked".to_string())?
    }
}

impl Probes {
    /// Takes a snapshot on a thread of its own: the caller's loop goes on.
    fn start(&self) -> Probing {
        let probes = self.clone();
        Probing(std::thread::spawn(move || probes.snap()))
    }

    /// The time and the kernel's counters first, the gate's (a round trip
    /// to its control thread) last.
    fn snap(&self) -> Result<Snap, String> {
        let mut snap = Snap {
            at: Instant::now(),
            own: procfs::process_ticks(self.own),
            server: self.server.and_then(procfs::process_ticks),
            threads: self.server.map(procfs::thread_ticks).unwrap_or_default(),
            switches: self.server.and_then(procfs::context_switches),
            plc: self.plc.and_then(procfs::process_ticks),
            cpus: procfs::cpu_ticks(&self.cpus),
            tcp_client: procfs::tcp_loss(self.own),
            tcp_plc: self.plc.and_then(procfs::tcp_loss),
            gate: None,
        };
        if let (Some(ctl), Some(pid)) = (&self.gate_ctl, self.server) {
            snap.gate = Some(gate_snap(ctl, pid)?);
        }
        Ok(snap)
    }
}

// ------------------------------------------------------------------ running

/// The load generator's own loop: how long it worked between two waits,
/// and how late it woke from a wait that slept.
#[derive(Clone)]
struct LoopTime {
    busy: Histogram<u64>,
    /// Of each stretch, the time the thread was off its CPU (wall time
    /// minus its CPU time): another task, or the host, ran instead.
    off_cpu: Histogram<u64>,
    woke_late: Histogram<u64>,
    /// When the loop last returned from a wait, and the thread's CPU time.
    since: Option<(Instant, Duration)>,
}

/// This thread's CPU time (one clock_gettime; zero if it fails).
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

impl LoopTime {
    fn new() -> Self {
        Self { busy: new_hist(), off_cpu: new_hist(), woke_late: new_hist(), since: None }
    }

    fn reset(&mut self) {
        self.busy.reset();
        self.off_cpu.reset();
        self.woke_late.reset();
        self.since = None;
    }

    /// The loop is about to wait: the stretch since the last wait was work.
    fn waiting(&mut self, now: Instant) {
        if let Some((since, cpu)) = self.since {
            let wall = now.saturating_duration_since(since);
            let _ = self.busy.record(ns_of(wall));
            let _ = self.off_cpu.record(ns_of(wall.saturating_sub(thread_cpu().saturating_sub(cpu))));
        }
    }

    /// The wait returned at `now`; it asked to be woken at `deadline` and
    /// slept if `slept`.
    fn woke(&mut self, now: Instant, deadline: Instant, slept: bool) {
        if slept && now > deadline {
            let _ = self.woke_late.record(ns_of(now - deadline));
        }
        self.since = Some((now, thread_cpu()));
    }

    fn json(&self) -> Value {
        let q = |h: &Histogram<u64>| json!({"count": h.len(), "p99": quantile_us(h, 0.99), "p99.9": quantile_us(h, 0.999), "max": quantile_us(h, 1.0)});
        json!({"busy": q(&self.busy), "off_cpu": q(&self.off_cpu), "woke_late": q(&self.woke_late)})
    }
}

/// A duration in ns for a histogram (at least 1, at most its top).
fn ns_of(d: Duration) -> u64 {
    d.as_nanos().clamp(1, u128::from(HIST_MAX_NS)) as u64
}

struct StepOut {
    total_rate: f64,
    hist: Histogram<u64>,
    lag: Histogram<u64>,
    loop_time: LoopTime,
    tally: Tally,
    unanswered: u64,
    s0: Snap,
    s1: Snap,
    sessions: usize,
}

impl RunArgs {
    fn check(&self) -> Result<(), String> {
        let ok = super::arg;
        ok("sessions", (1..=MAX_SESSIONS).contains(&self.sessions), "in 1..=20000")?;
        ok("idle-sessions", self.sessions + self.idle_sessions <= MAX_SESSIONS, "at most 20000 - --sessions")?;
        ok("seconds", self.seconds > 0.0 && self.seconds <= MAX_SECONDS, "in (0, 300]")?;
        ok("warmup", (0.0..=MAX_WARMUP).contains(&self.warmup), "in [0, 60]")?;
        ok("registers", (1..=125).contains(&self.registers), "in 1..=125")?;
        ok("address", usize::from(self.address) + usize::from(self.registers) <= 65_536, "such that the read fits")?;
        ok("sweep", self.sweep.len() <= MAX_STEPS, "at most 24 rates")?;
        ok("retry-failed", self.retry_failed <= 3, "at most 3")?;
        ok("max-requests", self.max_requests.is_none_or(|n| n > 0), "at least 1")?;
        for r in self.rates() {
            ok("rate", r.is_finite() && r > 0.0 && r <= 10_000_000.0, "in (0, 10 M] requests/s in total")?;
        }
        ok("p99-bound-us", self.p99_bound_us > 0.0, "positive")?;
        ok("p50-bound-us", self.p50_bound_us > 0.0, "positive")?;
        ok("connect-concurrency", self.connect_concurrency >= 1, "at least 1")?;
        Ok(())
    }

    /// The total rate of each step.
    fn rates(&self) -> Vec<f64> {
        if !self.sweep.is_empty() {
            return self.sweep.clone();
        }
        match (self.rate, self.total_rate) {
            (_, Some(t)) => vec![t],
            (Some(r), None) => vec![r * self.sessions as f64],
            (None, None) => vec![100.0 * self.sessions as f64],
        }
    }
}

/// A ticket as `accessgate login` stores it (src/access.rs `TicketFile`).
struct TicketFile {
    ca: Option<PathBuf>,
    ticket: [u8; 32],
    expires_unix: u64,
}

fn read_ticket_file(path: &Path) -> Result<TicketFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--ticket-file {}: {e}", path.display()))?;
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')));
    let bad = || format!("--ticket-file {}: not a ticket file written by accessgate login", path.display());
    let hex = get("ticket").filter(|h| h.len() == 64).ok_or_else(bad)?;
    let mut ticket = [0u8; 32];
    for (i, b) in ticket.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(TicketFile {
        ca: get("ca").map(PathBuf::from),
        ticket,
        expires_unix: get("expires_unix").and_then(|e| e.parse().ok()).ok_or_else(bad)?,
    })
}

/// Logs in at the gate (password + TOTP computed from the secret): a ticket.
fn login(args: &RunArgs, config: &Arc<ClientConfig>) -> Result<[u8; 32], String> {
    let (Some(user), Some(password), Some(secret)) = (&args.user, &args.password, &args.totp_secret) else {
        return Err("gate mode needs --ticket-file, or --user, --password and --totp-secret".into());
    };
    let secret = control::identity::totp::Secret::from_base32(secret).map_err(|e| format!("--totp-secret: {e}"))?;
    let code = control::identity::totp::code_at(&secret, super::unix_time(), 6);
    let tcp = StdTcpStream::connect_timeout(&args.login, Duration::from_secs(5))
        .map_err(|e| format!("--login {}: {e}", args.login))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let conn = client::connection(config, &args.server_name)?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let hello = client::hello_frame(Auth::Credentials { user, password: password.as_bytes(), totp: &code }, None);
    match client::exchange(&mut stream, &hello)? {
        Answer::Accept { ticket: Some(t), .. } => Ok(t),
        Answer::Accept { .. } => Err("login: the gate accepted but sent no ticket".into()),
        Answer::Refuse { reason, .. } => Err(format!("login refused: {}", reason.as_str())),
    }
}

fn run(args: &RunArgs) -> Result<(), String> {
    args.check()?;
    let (Some(mode), Some(target)) = (args.mode, args.target) else {
        return Err("--mode and --target are required".into());
    };
    let label = args.label.clone().unwrap_or_else(|| mode.name().to_string());
    let profile = super::prepare(args.pin, "load ...")?;
    // TLS client config and the hello.
    let ticket = match (mode, &args.ticket_file) {
        (Mode::Gate, Some(p)) => Some(read_ticket_file(p)?),
        _ => None,
    };
    if let Some(t) = &ticket {
        if t.expires_unix <= super::unix_time() {
            return Err("the ticket has expired: log in again".into());
        }
    }
    let ca = args.ca.clone().or_else(|| ticket.as_ref().and_then(|t| t.ca.clone()));
    let tls = match mode {
        Mode::Plain => None,
        _ => {
            let ca = ca.ok_or("--ca is needed for tls and gate modes")?;
            let pem = std::fs::read(&ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            Some(client::client_config(&pem, false, None)?)
        }
    };
    let hello = match (mode, &ticket, &tls) {
        (Mode::Gate, Some(t), _) => {
            client::hello_frame(Auth::Ticket(&t.ticket), Some((args.asset.as_str(), args.service.as_str())))
        }
        (Mode::Gate, None, Some(config)) => {
            let t = login(args, config)?;
            eprintln!("accessgate-perf load: logged in at {} as {}", args.login, args.user.as_deref().unwrap_or(""));
            client::hello_frame(Auth::Ticket(&t), Some((args.asset.as_str(), args.service.as_str())))
        }
        _ => Vec::new(),
    };
    let server_name = ServerName::try_from(args.server_name.clone())
        .map_err(|e| format!("--server-name {}: {e}", args.server_name))?;
    for pid in [args.server_pid, args.plc_pid].into_iter().flatten() {
        if procfs::process_ticks(pid).is_none() {
            return Err(format!("pid {pid}: no such process"));
        }
    }

    let started = super::unix_time();
    let machine = super::machine();
    let probes = Probes {
        own: std::process::id(),
        server: args.server_pid,
        plc: args.plc_pid,
        gate_ctl: args.gate_ctl.clone(),
        cpus: args.cpus.clone(),
    };
    // A busy-polling gate's loops per dp CPU second with nothing to do.
    let calibrate = || match (&args.gate_ctl, args.server_pid) {
        (Some(ctl), Some(pid)) => {
            let a = gate_snap(ctl, pid)?;
            std::thread::sleep(Duration::from_secs(1));
            let b = gate_snap(ctl, pid)?;
            // Only a busy-polling core runs its loop flat out; one that
            // sleeps when idle (--idle adaptive) has no such baseline.
            let busy = (b.dp_ticks.saturating_sub(a.dp_ticks)) as f64 / USER_HZ >= 0.8;
            Ok::<_, String>(busy.then(|| loops_per_cpu_sec(&a, &b)))
        }
        _ => Ok(None),
    };
    let idle_loops_empty = calibrate()?;
    let rates = args.rates();
    eprintln!(
        "accessgate-perf load: {label} ({}) {target}, {} session(s) + {} idle, {} step(s) at {} req/s total, \
         {:.1} s warmup + {:.1} s each",
        mode.name(),
        args.sessions,
        args.idle_sessions,
        rates.len(),
        rates.iter().map(|r| si(*r)).collect::<Vec<_>>().join(", "),
        args.warmup,
        args.seconds
    );

    let reach = Reach { mode, tls, server_name, hello };
    let mut engine = Engine::new(args, target, reach, args.sessions + args.idle_sessions)?;

    let rss0 = args.server_pid.and_then(procfs::vm_rss_kb);
    let plc_rss0 = args.plc_pid.and_then(procfs::vm_rss_kb);
    let connect_seconds = engine.open_all(args.sessions, args.idle_sessions)?;
    // Let the servers settle (gate: hellos audited, TIME-WAITs of nothing).
    std::thread::sleep(Duration::from_millis(500));
    let rss1 = args.server_pid.and_then(procfs::vm_rss_kb);
    let plc_rss1 = args.plc_pid.and_then(procfs::vm_rss_kb);
    let total_sessions = args.sessions + args.idle_sessions;
    let rss_per_session = match (rss0, rss1) {
        (Some(a), Some(b)) => Some((b as f64 - a as f64) / total_sessions as f64),
        _ => None,
    };
    if let Some(per) = rss_per_session {
        eprintln!("  server VmRSS {} KiB -> {} KiB: {per:.1} KiB per session", rss0.unwrap_or(0), rss1.unwrap_or(0));
    }
    // The same with the sessions open and quiet: each dp loop also walks
    // every session, so this is the baseline the load's work is counted from.
    let idle_loops = calibrate()?;
    if let (Some(a), Some(b)) = (idle_loops_empty, idle_loops) {
        eprintln!("  gate dp loops per CPU second, idle: {} with no session, {} with these open", si(a), si(b));
    }

    let mut steps = Vec::new();
    let mut max_ok: Option<f64> = None;
    for (n, &rate) in rates.iter().enumerate() {
        let title = if rates.len() > 1 {
            format!("step {}/{} at {} req/s", n + 1, rates.len(), si(rate))
        } else {
            format!("{} req/s", si(rate))
        };
        let mut out = engine.step(rate, &probes, &title)?;
        let mut passed = step_passed(&out, args);
        let mut attempts = 1;
        while !passed
            && attempts <= args.retry_failed
            && engine.active.iter().any(|&i| engine.sessions[i].phase != Phase::Dead)
        {
            attempts += 1;
            eprintln!("  step failed: trying {} req/s again (attempt {attempts})", si(rate));
            out = engine.step(rate, &probes, &format!("{title}, attempt {attempts}"))?;
            passed = step_passed(&out, args);
        }
        if passed && steps.iter().all(|(_, ok, _)| *ok) {
            max_ok = Some(rate);
        }
        steps.push((out, passed, attempts));
        if !passed && rates.len() > 1 && !args.no_stop {
            eprintln!(
                "  step failed (p50 above {} µs, p99 above {} µs, or errors): the sweep stops here",
                args.p50_bound_us, args.p99_bound_us
            );
            break;
        }
        if engine.active.iter().all(|&i| engine.sessions[i].phase == Phase::Dead) {
            break;
        }
    }
    let rss2 = args.server_pid.and_then(procfs::vm_rss_kb);

    // Output.
    let prefix = args.out.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("results").join(format!(
            "load-{}-{}-{started}",
            sanitize(&args.scenario),
            sanitize(&label)
        ))
    });
    let multi = steps.len() > 1 || !args.sweep.is_empty();
    let mut step_docs = Vec::new();
    let mut curves = Vec::new();
    for (n, (out, passed, attempts)) in steps.iter().enumerate() {
        let hgrm =
            if multi { with_suffix(&prefix, &format!("-step{}.hgrm", n + 1)) } else { with_suffix(&prefix, ".hgrm") };
        let mut doc = step_json(out, *passed, idle_loops, args, &hgrm);
        doc["attempts"] = json!(attempts);
        print_step(&label, out, &doc);
        if !args.no_write {
            write_file(&hgrm, &hgrm_text(&out.hist, 1000.0))?;
        }
        curves.push((format!("{label} {} req/s{}", si(out.total_rate), legend_stats(&out.hist)), curve(&out.hist)));
        step_docs.push(doc);
    }
    if let Some(e) = &engine.first_error {
        eprintln!("  first error: {e}");
    }
    for a in engine.anomalies.iter().take(5) {
        eprintln!("  anomaly: {a}");
    }
    let failed_sessions = engine.sessions.iter().filter(|s| s.phase == Phase::Dead).count();
    let doc = json!({
        "benchmark": "accessgate-perf load",
        "schema": 1,
        "label": label,
        "mode": mode.name(),
        "scenario": args.scenario,
        "unix_time": started,
        "date_utc": super::utc(started),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "build_profile": profile,
        "git": to_value(&super::git(Path::new(env!("CARGO_MANIFEST_DIR")))),
        "machine": to_value(&machine),
        "notes": args.note,
        "params": {
            "target": target.to_string(),
            "sessions": args.sessions,
            "idle_sessions": args.idle_sessions,
            "rates_total": rates,
            "sweep": !args.sweep.is_empty(),
            "sweep_runs_every_rate": args.no_stop,
            "sweep_retries_failed_steps": args.retry_failed,
            "p99_bound_us": args.p99_bound_us,
            "p50_bound_us": args.p50_bound_us,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "registers": args.registers,
            "address": args.address,
            "unit": args.unit,
            "client_pinned_cpu": args.pin,
            "client_spins": args.spin,
            "server_pid": args.server_pid,
            "plc_pid": args.plc_pid,
            "server_name": if mode == Mode::Plain { Value::Null } else { json!(args.server_name) },
            "latency_definition": "answer received minus the request's intended send time (open loop, coordinated omission corrected)",
        },
        "setup": {
            "sessions_opened": total_sessions,
            "connect_seconds": connect_seconds,
            "server_rss_kb_before": rss0,
            "server_rss_kb_open": rss1,
            "server_rss_kb_end": rss2,
            "server_rss_kb_per_session": rss_per_session,
            "server_fresh": args.fresh_server,
            "plc_rss_kb_before": plc_rss0,
            "plc_rss_kb_open": plc_rss1,
            "gate_idle_loops_per_cpu_sec_no_session": idle_loops_empty,
            "gate_idle_loops_per_cpu_sec_sessions_open": idle_loops,
            "sessions_failed_by_end": failed_sessions,
            "hellos_refused_audit_unavailable_and_retried": engine.refusals_retried,
        },
        "first_error": engine.first_error,
        "anomalies": engine.anomalies,
        "max_sustainable_rate": if args.sweep.is_empty() { Value::Null } else { json!(max_ok) },
        "steps": step_docs,
    });
    if args.no_write {
        return Ok(());
    }
    let title = format!("{} — {label}, {} session(s)", args.scenario, args.sessions);
    write_file(&with_suffix(&prefix, ".svg"), &svg_plot(&title, &curves))?;
    write_file(&with_suffix(&prefix, ".json"), &pretty(&doc))?;
    eprintln!("  wrote {}.json (+ .svg, .hgrm)", prefix.display());
    Ok(())
}

fn step_passed(out: &StepOut, args: &RunArgs) -> bool {
    out.tally.errors() == 0
        && out.unanswered == 0
        && !out.hist.is_empty()
        && (out.hist.value_at_quantile(0.5) as f64) / 1000.0 <= args.p50_bound_us
        && (out.hist.value_at_quantile(0.99) as f64) / 1000.0 <= args.p99_bound_us
}

fn loops_per_cpu_sec(a: &GateSnap, b: &GateSnap) -> f64 {
    procfs::loops_per_cpu_sec(b.loops.saturating_sub(a.loops), b.dp_ticks.saturating_sub(a.dp_ticks))
}

fn step_json(out: &StepOut, passed: bool, idle_loops: Option<f64>, args: &RunArgs, hgrm: &Path) -> Value {
    let (s0, s1) = (&out.s0, &out.s1);
    let window = (s1.at - s0.at).as_secs_f64();
    let t = &out.tally;
    let ticks = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / USER_HZ),
        _ => None,
    };
    let server_cpu = ticks(s0.server, s1.server);
    let own_cpu = ticks(s0.own, s1.own);
    let plc_cpu = ticks(s0.plc, s1.plc);
    let reqs = t.sent_in_window.max(1) as f64;
    let mut lat = Map::new();
    for (name, q) in PERCENTILES {
        lat.insert(name.into(), json!(quantile_us(&out.hist, q)));
    }
    lat.insert("mean".into(), json!(out.hist.mean() / 1000.0));
    lat.insert("count".into(), json!(out.hist.len()));
    let (mut cpus, mut steal) = (Map::new(), Map::new());
    for (a, b) in s0.cpus.iter().zip(&s1.cpus) {
        cpus.insert(format!("cpu{}", a.cpu), json!(b.busy_percent_since(a)));
        steal.insert(format!("cpu{}", a.cpu), json!(b.steal_percent_since(a)));
    }
    let mut tcp_loss = Map::new();
    for (side, a, b) in [("client", s0.tcp_client, s1.tcp_client), ("plc", s0.tcp_plc, s1.tcp_plc)] {
        if let (Some(a), Some(b)) = (a, b) {
            let named = procfs::TCP_LOSS_COUNTERS.iter().zip(a.iter().zip(b));
            tcp_loss.insert(
                side.into(),
                named.map(|(n, (a, b))| ((*n).to_string(), json!(b.saturating_sub(*a)))).collect(),
            );
        }
    }
    let gate = match (&s0.gate, &s1.gate) {
        (Some(g0), Some(g1)) => {
            let dp_cpu = (g1.dp_ticks.saturating_sub(g0.dp_ticks)) as f64 / USER_HZ;
            let mut deltas = Map::new();
            for (k, v1) in &g1.stats {
                if let (Some(b), Some(a)) = (v1.as_u64(), g0.stats.get(k).and_then(Value::as_u64)) {
                    if b != a && k != "loops" {
                        deltas.insert(k.clone(), json!(b as i64 - a as i64));
                    }
                }
            }
            let mut doc = json!({
                "dp_cpu_percent": 100.0 * dp_cpu / window,
                "counter_deltas": deltas,
            });
            // The loop-count estimate of a busy core's work needs its idle
            // calibration (a gate that sleeps has none: its CPU is the figure).
            if let Some(idle) = idle_loops {
                let loaded = loops_per_cpu_sec(g0, g1);
                let work = (1.0 - loaded / idle).clamp(0.0, 1.0);
                doc["idle_loops_per_cpu_sec_sessions_open"] = json!(idle);
                doc["loops_per_cpu_sec"] = json!(loaded);
                doc["dp_work_percent_estimate"] = json!(100.0 * work * dp_cpu / window);
                doc["dp_work_cpu_s_per_100k_estimate"] = json!(1e5 * work * dp_cpu / reqs);
            }
            doc
        }
        _ => Value::Null,
    };
    json!({
        "total_rate": out.total_rate,
        "per_session_rate": out.total_rate / out.sessions as f64,
        "sessions": out.sessions,
        "window_seconds": window,
        "sent_in_window": t.sent_in_window,
        "answered_in_window": t.answered_in_window,
        "achieved_rate": t.answered_in_window as f64 / window,
        "latency_us": lat,
        "send_lag_us": {
            "p50": quantile_us(&out.lag, 0.5),
            "p99": quantile_us(&out.lag, 0.99),
            "p99.9": quantile_us(&out.lag, 0.999),
            "max": quantile_us(&out.lag, 1.0),
        },
        "client_loop_us": out.loop_time.json(),
        "errors": {
            "total": t.errors() + out.unanswered,
            "exceptions": t.exceptions,
            "bad_answers": t.bad_answers,
            "exception_codes": t.exception_codes.iter().enumerate().filter(|(_, n)| **n > 0)
                .map(|(c, n)| (format!("{c:#04x}"), json!(n))).collect::<Map<String, Value>>(),
            "answers_out_of_order_not_an_error": t.out_of_order,
            "unexpected_transaction_ids": t.unexpected,
            "unsendable": t.unsendable,
            "lost_with_session": t.lost,
            "session_failures": t.session_failures,
            "unanswered_after_drain": out.unanswered,
        },
        "passed": passed,
        "p99_bound_us": args.p99_bound_us,
        "client_cpu_percent": own_cpu.map(|c| 100.0 * c / window),
        "server_cpu_percent": server_cpu.map(|c| 100.0 * c / window),
        "server_cpu_s_per_100k": server_cpu.map(|c| 1e5 * c / reqs),
        "server_threads_cpu_percent": s1
            .threads
            .iter()
            .map(|(name, b)| {
                let a = s0.threads.iter().find(|(n, _)| n == name).map_or(0, |(_, a)| *a);
                (name.clone(), json!(100.0 * b.saturating_sub(a) as f64 / USER_HZ / window))
            })
            .collect::<Map<String, Value>>(),
        "plc_cpu_percent": plc_cpu.map(|c| 100.0 * c / window),
        // Per request answered: how often the server's threads slept (and
        // were woken) or were preempted.
        "server_context_switches_per_request": s0.switches.zip(s1.switches).map(|((v0, n0), (v1, n1))| {
            let answered = t.answered_in_window.max(1) as f64;
            json!({
                "voluntary": v1.saturating_sub(v0) as f64 / answered,
                "involuntary": n1.saturating_sub(n0) as f64 / answered,
            })
        }),
        "cpu_busy_percent": cpus,
        "cpu_steal_percent": steal,
        "kernel_tcp_loss_in_window": tcp_loss,
        "gate": gate,
        "hgrm": hgrm.file_name().map(|f| f.to_string_lossy().to_string()),
        "curve": curve(&out.hist).iter().map(|&(q, v)| json!([q, v])).collect::<Vec<_>>(),
        "histogram": hist_pairs(&out.hist),
    })
}

fn print_step(label: &str, out: &StepOut, doc: &Value) {
    let l = &doc["latency_us"];
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
    eprintln!(
        "  {label} @ {} req/s ({} sessions): p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {} µs  \
         ({} samples, errors {})",
        si(out.total_rate),
        out.sessions,
        f(&l["p50"]),
        f(&l["p90"]),
        f(&l["p99"]),
        f(&l["p99.9"]),
        f(&l["p99.99"]),
        f(&l["max"]),
        out.hist.len(),
        doc["errors"]["total"]
    );
    eprintln!(
        "    achieved {} answers/s; client CPU {}%, server CPU {}% ({} CPU-s per 100k), PLC CPU {}%; send lag p99 {} µs{}",
        si(doc["achieved_rate"].as_f64().unwrap_or(0.0)),
        f(&doc["client_cpu_percent"]),
        f(&doc["server_cpu_percent"]),
        doc["server_cpu_s_per_100k"].as_f64().map_or("-".into(), |x| format!("{x:.3}")),
        f(&doc["plc_cpu_percent"]),
        f(&doc["send_lag_us"]["p99"]),
        doc["gate"]["dp_work_percent_estimate"]
            .as_f64()
            .map_or(String::new(), |w| format!("; gate dp work ≈ {w:.1}% of its core (loop-count estimate)"))
    );
    let cl = &doc["client_loop_us"];
    if cl["busy"]["count"].as_u64() > Some(0) {
        eprintln!(
            "    load generator's loop: work between waits p99.9 {} max {} µs, off its CPU in them p99.9 {} max {} µs; woke late from a sleep p99.9 {} max {} µs",
            f(&cl["busy"]["p99.9"]),
            f(&cl["busy"]["max"]),
            f(&cl["off_cpu"]["p99.9"]),
            f(&cl["off_cpu"]["max"]),
            f(&cl["woke_late"]["p99.9"]),
            f(&cl["woke_late"]["max"])
        );
    }
    if let Some(steal) = doc["cpu_steal_percent"].as_object().filter(|s| s.values().any(|v| v.as_f64() > Some(0.0))) {
        let list: Vec<String> = steal.iter().map(|(c, v)| format!("{c} {:.1}%", v.as_f64().unwrap_or(0.0))).collect();
        eprintln!("    host steal (the hypervisor ran others while these vCPUs were runnable): {}", list.join(", "));
    }
    if let Some(threads) = doc["server_threads_cpu_percent"].as_object().filter(|t| t.len() > 1) {
        let list: Vec<String> = threads.iter().map(|(n, v)| format!("{n} {:.1}%", v.as_f64().unwrap_or(0.0))).collect();
        eprintln!("    server threads: {}", list.join(", "));
    }
    let loss = &doc["kernel_tcp_loss_in_window"];
    let sides: Vec<String> = ["client", "plc"]
        .iter()
        .filter(|side| loss[**side].is_object())
        .map(|side| {
            let n = |i: usize| loss[*side][procfs::TCP_LOSS_COUNTERS[i]].as_u64().unwrap_or(0);
            format!("{side} {} / {} / {}", n(0), n(1), n(2))
        })
        .collect();
    if !sides.is_empty() {
        eprintln!("    kernel TCP segments retransmitted / tail-loss probes / timeouts: {}", sides.join("; "));
    }
    let deltas = &doc["gate"]["counter_deltas"];
    if deltas.is_object() {
        let buckets = |family: &str| {
            (0..STALL_BOUNDS_US.len())
                .map(|i| deltas[bucket_name(family, i).as_str()].as_i64().unwrap_or(0).to_string())
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let bounds = STALL_BOUNDS_US
            .iter()
            .map(|&b| if b >= 1000 { format!("≥{} ms", b / 1000) } else { format!("≥{b} µs") })
            .collect::<Vec<_>>()
            .join(" / ");
        eprintln!(
            "    gate dp passes with work {bounds}: {}; off-CPU between passes: {}",
            buckets(SLOW_PASSES),
            buckets(STALLS)
        );
    }
}

fn quantile_us(h: &Histogram<u64>, q: f64) -> Option<f64> {
    if h.is_empty() {
        return None;
    }
    let v = if q >= 1.0 { h.max() } else { h.value_at_quantile(q) };
    Some(v as f64 / 1000.0)
}

/// The 95 % interval of a histogram's `q`-quantile (`q` < 1) in µs, from the
/// order statistics of its samples ([`super::interval`]).
fn quantile_interval_us(h: &Histogram<u64>, q: f64) -> Interval {
    let n = h.len();
    // The rank-th smallest sample: HdrHistogram takes the ceil(q·n)-th, and
    // rank/n·n can come out a hair above rank (one sample too high).
    Interval::of_quantile(n, q, CONFIDENCE, |rank| h.value_at_quantile((rank as f64 - 0.5) / n as f64) as f64 / 1000.0)
}

/// Added latency (`h` − `base` at `q`) as a point and a 95 % interval.
fn added_us(h: &Histogram<u64>, base: &Histogram<u64>, q: f64) -> Option<(f64, Interval)> {
    let point = quantile_us(h, q)? - quantile_us(base, q)?;
    Some((point, quantile_interval_us(h, q).minus(quantile_interval_us(base, q))))
}

/// How sure the run is of its percentiles, and the issue's two latency
/// targets judged on intervals, not points: the gate's added p50 at most
/// half the best peer's, its added p99.9 at most the best peer's added p99.
/// Each round alone is judged on its points too (bursts make the samples
/// dependent, which the intervals do not see; rounds agreeing is the check
/// they cannot give). Returns the verdicts for the JSON.
fn write_latency_targets(md: &mut String, groups: &[Group], baseline: &str) -> Value {
    let Some(base_group) = groups.iter().find(|g| g.label == baseline) else { return Value::Null };
    let _ = writeln!(
        md,
        "\nHow sure (95 % intervals of each percentile from the order statistics of the merged samples; \
         they assume independent samples, and bursts of latency make the truth wider; `∞)`: too few samples \
         to bound it from above):\n"
    );
    let _ = writeln!(md, "| target | samples | p50 | p99 | p99.9 | p99.99 |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for g in groups {
        let h = g.merged();
        let cells: Vec<String> = [0.5, 0.99, 0.999, 0.9999]
            .iter()
            .map(|&q| format!("{} {}", opt(quantile_us(&h, q), 0), quantile_interval_us(&h, q).text(false)))
            .collect();
        let _ = writeln!(md, "| {} | {} | {} |", g.label, h.len(), cells.join(" | "));
    }
    let gates: Vec<&Group> = groups.iter().filter(|g| g.label.starts_with("gate")).collect();
    let peers: Vec<&Group> = groups.iter().filter(|g| PEERS.contains(&g.label.as_str())).collect();
    if gates.is_empty() || peers.is_empty() {
        return Value::Null;
    }
    let base = base_group.merged();
    let rounds = groups.iter().map(|g| g.steps().len()).min().unwrap_or(0);
    // (name, the gate's percentile, the peers' percentile, factor on the peer's)
    let targets = [
        ("added p50 ≤ half the best peer's added p50", ("p50", 0.5), ("p50", 0.5), ("half of ", 0.5)),
        ("added p99.9 ≤ the best peer's added p99", ("p99.9", 0.999), ("p99", 0.99), ("", 1.0)),
    ];
    let mut out = Vec::new();
    for (name, (g_name, gq), (p_name, pq), (f_name, factor)) in targets {
        // The best peer: the lowest added latency, on the merged rounds.
        let best = peers
            .iter()
            .filter_map(|p| added_us(&p.merged(), &base, pq).map(|a| (p, a)))
            .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0));
        let Some((peer, (peer_point, peer_iv))) = best else { continue };
        let _ = writeln!(
            md,
            "\nIssue #7's target \"{name}\" (µs; the best peer here is {}; `not resolved`: the intervals overlap, \
             this run cannot tell; per round: each round's points alone):\n",
            peer.label
        );
        let _ = writeln!(
            md,
            "| target | its added {g_name} | 95 % interval | {f_name}{}'s added {p_name} | 95 % interval | verdict | per round |",
            peer.label
        );
        let _ = writeln!(md, "|---|---:|---|---:|---|---|---|");
        for g in &gates {
            let Some((point, iv)) = added_us(&g.merged(), &base, gq) else { continue };
            let bound = peer_iv.times(factor);
            let verdict = Verdict::at_most(iv, bound);
            let per_round: Vec<&str> = (0..rounds)
                .map(|r| {
                    let hist = |grp: &Group| step_hist(grp.steps()[r]);
                    let b = hist(base_group);
                    let gate = added_us(&hist(g), &b, gq).map(|a| a.0);
                    let best_peer =
                        peers.iter().filter_map(|p| added_us(&hist(p), &b, pq).map(|a| a.0)).min_by(f64::total_cmp);
                    match gate.zip(best_peer) {
                        Some((x, y)) if x <= y * factor => "met",
                        Some(_) => "not met",
                        None => "-",
                    }
                })
                .collect();
            let _ = writeln!(
                md,
                "| {} | {point:+.0} | {} | {:+.0} | {} | **{}** | {} |",
                g.label,
                iv.text(true),
                peer_point * factor,
                bound.text(true),
                verdict.text(),
                per_round.join(", ")
            );
            out.push(json!({
                "target": name,
                "label": g.label,
                "added_us": point,
                "added_ci95_us": iv.json(),
                "best_peer": peer.label,
                "bound_us": peer_point * factor,
                "bound_ci95_us": bound.json(),
                "verdict": verdict.text(),
                "per_round": per_round,
            }));
        }
    }
    Value::Array(out)
}

/// Every step of `label`'s sweeps of `sessions` active sessions, with idle
/// sessions open or not, merged per total rate over the rounds (a sweep's
/// steps, failed ones too: a p99 above the sweep's bound is still measured).
/// Sweeps under a CPU quota (s6) are another server: they are left out.
fn sweep_steps(runs: &[Run], label: &str, sessions: u64, with_idle: bool) -> Vec<(f64, Histogram<u64>)> {
    let mut out: Vec<(f64, Histogram<u64>)> = Vec::new();
    let mine = runs.iter().filter(|r| {
        let p = &r.doc["params"];
        r.label == label
            && r.is_sweep()
            && !r.scenario.contains("capped")
            && p["sessions"].as_u64() == Some(sessions)
            && (p["idle_sessions"].as_u64().unwrap_or(0) > 0) == with_idle
    });
    for st in mine.flat_map(|r| r.doc["steps"].as_array().into_iter().flatten()) {
        let Some(rate) = st["total_rate"].as_f64() else { continue };
        let h = step_hist(st);
        match out.iter_mut().find(|(r, _)| (r - rate).abs() < 0.5) {
            Some((_, merged)) => {
                let _ = merged.add(h);
            }
            None => out.push((rate, h)),
        }
    }
    out
}

/// The issue's idle-session target: with thousands of idle sessions open
/// (s4), the active sessions' p99 within 10 % of the same server's at the
/// same total rate without them (the sweep), judged on 95 % intervals.
/// Nothing when the runs have no s4 or no sweep to compare it with.
fn write_idle_target(md: &mut String, runs: &[Run]) -> Value {
    let mut labels: Vec<(&str, u64, u64)> = Vec::new();
    for r in runs.iter().filter(|r| r.is_sweep()) {
        let p = &r.doc["params"];
        let (Some(idle), Some(sessions)) = (p["idle_sessions"].as_u64(), p["sessions"].as_u64()) else { continue };
        if idle > 0 && !labels.iter().any(|l| l.0 == r.label) {
            labels.push((&r.label, sessions, idle));
        }
    }
    let mut rows = String::new();
    let mut out = Vec::new();
    for (label, sessions, idle) in labels {
        let without = sweep_steps(runs, label, sessions, false);
        for (rate, h_idle) in sweep_steps(runs, label, sessions, true) {
            let Some((_, h)) = without.iter().find(|(r, _)| (r - rate).abs() < 0.5) else { continue };
            let (Some(p), Some(p_idle)) = (quantile_us(h, 0.99), quantile_us(&h_idle, 0.99)) else { continue };
            let (iv, iv_idle) = (quantile_interval_us(h, 0.99), quantile_interval_us(&h_idle, 0.99));
            let verdict = Verdict::at_most(iv_idle, iv.times(1.1));
            let _ = writeln!(
                rows,
                "| {label} | {} | {p:.0} {} | {p_idle:.0} {} | {:.2} | **{}** |",
                si(rate),
                iv.text(false),
                iv_idle.text(false),
                p_idle / p,
                verdict.text()
            );
            out.push(json!({
                "label": label,
                "total_rate": rate,
                "idle_sessions": idle,
                "p99_us": p,
                "p99_ci95_us": iv.json(),
                "p99_with_idle_us": p_idle,
                "p99_with_idle_ci95_us": iv_idle.json(),
                "verdict": verdict.text(),
            }));
        }
    }
    if !rows.is_empty() {
        let _ = writeln!(
            md,
            "## Issue #7's idle-session target: the active sessions' p99 with the idle sessions open within 10 % \
             of the same server's without them, at the same total rate (s4's steps against the sweep's, rounds \
             merged per rate; µs with 95 % intervals; met only if the interval with them lies at or below 1.1× \
             the interval without)\n"
        );
        let _ = writeln!(md, "| target | req/s | p99 without | p99 with the idle sessions | × | verdict |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---|");
        let _ = writeln!(md, "{rows}");
    }
    Value::Array(out)
}

/// The issue's rate targets on a sweep: the gate's max sustainable rate at
/// least 1.3× HAProxy's and 2× stunnel's (medians of rounds; each round's
/// pair too). A sweep's steps are its resolution, and a server that passed
/// the sweep's top step may hold more: a ratio that such a server would
/// change is not resolved.
fn write_rate_targets(md: &mut String, groups: &[Group]) -> Value {
    let rate = |g: &Group| g.max_rate_median();
    let at_top = |g: &Group, r: f64| {
        let top = g.runs.iter().filter_map(|run| run.doc["params"]["rates_total"].as_array()).flatten();
        top.filter_map(Value::as_f64).fold(f64::NAN, f64::max) <= r
    };
    let per_round = |g: &Group| -> Vec<f64> { g.runs.iter().map(|r| r.max_rate()).collect() };
    let mut out = Vec::new();
    let mut lines = String::new();
    for (peer_label, factor) in [("haproxy", 1.3), ("stunnel", 2.0)] {
        let Some(peer) = groups.iter().find(|g| g.label == peer_label) else { continue };
        for g in groups.iter().filter(|g| g.label.starts_with("gate")) {
            let (Some(mine), Some(theirs)) = (rate(g), rate(peer)) else { continue };
            let rounds: Vec<String> = per_round(g)
                .iter()
                .zip(per_round(peer))
                .map(|(a, b)| if b > 0.0 { format!("{:.2}×", a / b) } else { "-".into() })
                .collect();
            let ratio = if theirs > 0.0 { mine / theirs } else { f64::INFINITY };
            let (mine_top, theirs_top) = (at_top(g, mine), at_top(peer, theirs));
            let verdict = match (ratio >= factor, mine_top, theirs_top) {
                (true, _, false) => "met",
                (false, false, _) => "not met",
                _ => "not resolved",
            };
            let top = |t: bool| if t { " (the sweep's top)" } else { "" };
            let _ = writeln!(
                lines,
                "- {}: {}{} vs {peer_label} {}{}: **{ratio:.2}×** (target ≥ {factor}×: {verdict}; per round {})",
                g.label,
                si(mine),
                top(mine_top),
                si(theirs),
                top(theirs_top),
                rounds.join(", ")
            );
            out.push(json!({
                "target": format!("max rate ≥ {factor}× {peer_label}"),
                "label": g.label,
                "ratio": ratio,
                "verdict": verdict,
                "per_round": rounds,
            }));
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(
            md,
            "\nIssue #7's rate targets (medians of the rounds' max sustainable rates; the sweep's steps are \
             their resolution):\n\n{lines}"
        );
    }
    Value::Array(out)
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// The percentile curve: (quantile, µs) at HdrHistogram's plotting steps.
fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut pts: Vec<(f64, f64)> = Vec::new();
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        if q >= 1.0 {
            break;
        }
        pts.push((q, h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0));
    }
    pts.push((1.0, h.max() as f64 / 1000.0));
    pts
}

/// HdrHistogram's percentile distribution text (as Java's
/// `outputPercentileDistribution(out, 5, ratio)`), values divided by `ratio`.
fn hgrm_text(h: &Histogram<u64>, ratio: f64) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = h.highest_equivalent(v.value_iterated_to()) as f64 / ratio;
            if q < 1.0 {
                let _ = writeln!(s, "{value:>12.3} {q:>2.12} {total:>10} {:>14.2}", 1.0 / (1.0 - q));
            } else {
                let _ = writeln!(s, "{value:>12.3} {q:>2.12} {total:>10}");
            }
        }
    }
    let _ = writeln!(s, "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]", h.mean() / ratio, h.stdev() / ratio);
    let _ = writeln!(s, "#[Max     = {:>12.3}, Total count    = {:>12}]", h.max() as f64 / ratio, h.len());
    let _ = writeln!(s, "#[Buckets = {:>12}, SubBuckets     = {:>12}]", h.buckets(), 2048);
    s
}

// ------------------------------------------------------------------ plots

const COLORS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// A percentile plot as HdrHistogram's plotter draws it (x = 1/(1-q) on a
/// log scale, labelled as percentiles), with latency on a log scale too so
/// that a tens-of-µs floor and a tens-of-ms tail both stay readable.
fn svg_plot(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let w = 900.0;
    let (l, r, t) = (80.0, 30.0, 50.0);
    let ph = 400.0;
    let pw = w - l - r;
    let legend_top = t + ph + 55.0;
    let h = legend_top + 20.0 * series.len() as f64 + 10.0;
    let x_of = |q: f64| (1.0 / (1.0 - q.min(0.999_999_9))).log10();
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().filter(|(q, _)| *q < 1.0).map(|&(q, _)| x_of(q)))
        .fold(2.0f64, f64::max)
        .ceil()
        .min(7.0);
    let values = || series.iter().flat_map(|(_, p)| p.iter().map(|&(_, v)| v)).filter(|v| *v > 0.0);
    let ymin = 10f64.powf(values().fold(f64::INFINITY, f64::min).max(0.1).log10().floor());
    let ymax = nice_ceiling(values().fold(ymin * 10.0, f64::max));
    let (ly0, ly1) = (ymin.log10(), ymax.log10());
    let px = |x: f64| l + pw * (x / xmax);
    let py = |y: f64| t + ph * (1.0 - (y.max(ymin).log10() - ly0) / (ly1 - ly0));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"28\" font-size=\"15\" text-anchor=\"middle\">{}</text>",
        l + pw / 2.0,
        xml(title)
    );
    for i in 0..=(xmax as usize) {
        let x = px(i as f64);
        let label = match i {
            0 => "0%".to_string(),
            n => format!("{}%", 100.0 - 100.0 / 10f64.powi(n as i32)),
        };
        let _ = writeln!(s, "<line x1=\"{x:.1}\" y1=\"{t}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/>", t + ph);
        let _ = writeln!(s, "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>", t + ph + 18.0);
    }
    // 1-2-5 grid lines per decade.
    let mut decade = ymin;
    while decade < ymax * 1.001 {
        for m in [1.0, 2.0, 5.0] {
            let y = decade * m;
            if y > ymax * 1.001 {
                break;
            }
            let yy = py(y);
            let stroke = if m == 1.0 { "#bbb" } else { "#eee" };
            let _ =
                writeln!(s, "<line x1=\"{l}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"{stroke}\"/>", l + pw);
            let _ =
                writeln!(s, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", l - 6.0, yy + 4.0, fmt_axis(y));
        }
        decade *= 10.0;
    }
    let _ = writeln!(
        s,
        "<rect x=\"{l}\" y=\"{t}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#444\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile (x = 1/(1-percentile), log scale)</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">latency from the intended \
         send time (log scale)</text>",
        l + pw / 2.0,
        t + ph + 38.0,
        t + ph / 2.0,
        t + ph / 2.0
    );
    for (n, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let mut path = String::new();
        for (i, &(q, v)) in pts.iter().filter(|(q, _)| *q < 1.0).enumerate() {
            let _ = write!(path, "{}{:.1},{:.1} ", if i == 0 { "M" } else { "L" }, px(x_of(q)), py(v));
        }
        let _ = writeln!(s, "<path d=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>");
        let ly = legend_top + 20.0 * n as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"3\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            l + 24.0,
            l + 30.0,
            ly + 4.0,
            xml(name),
        );
    }
    s.push_str("</svg>\n");
    s
}

/// " — p50 …, p99 …, p99.9 …, max …" for a plot's legend.
fn legend_stats(h: &Histogram<u64>) -> String {
    let q = |k: f64| quantile_us(h, k).map_or("-".into(), fmt_axis);
    format!(" — p50 {}, p99 {}, p99.9 {}, max {}", q(0.5), q(0.99), q(0.999), q(1.0))
}

fn nice_ceiling(x: f64) -> f64 {
    let p = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= x {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_axis(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 1.0 || v == 0.0 {
        format!("{v:.0} µs")
    } else {
        format!("{v:.1} µs")
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

// ------------------------------------------------------------------ files

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The crate's own JSON value as serde_json's.
fn to_value(j: &super::json::Json) -> Value {
    serde_json::from_str(&j.pretty()).unwrap_or(Value::Null)
}

// ------------------------------------------------------------------ report

/// One result file.
struct Run {
    label: String,
    scenario: String,
    doc: Value,
}

impl Run {
    /// The step reported for the scenario: the only one, or for a sweep the
    /// highest rate that passed (else the first).
    fn shown_step(&self) -> Option<&Value> {
        let steps = self.doc["steps"].as_array()?;
        if self.is_sweep() {
            // The last step of the unbroken run of passes from the start.
            steps.iter().take_while(|s| s["passed"].as_bool() == Some(true)).last().or(steps.first())
        } else {
            steps.first()
        }
    }

    /// The sweep's max sustainable rate; a round with no step sustained held
    /// less than the sweep's first rate: 0 (a lower bound), not left out.
    fn max_rate(&self) -> f64 {
        self.doc["max_sustainable_rate"].as_f64().unwrap_or(0.0)
    }

    fn is_sweep(&self) -> bool {
        self.doc["params"]["sweep"].as_bool() == Some(true)
    }
}

/// The histogram a step recorded (`"histogram": [[ns, count], ...]`).
fn step_hist(step: &Value) -> Histogram<u64> {
    let mut h = new_hist();
    for pair in step["histogram"].as_array().into_iter().flatten() {
        if let (Some(v), Some(c)) = (pair.get(0).and_then(Value::as_u64), pair.get(1).and_then(Value::as_u64)) {
            let _ = h.record_n(v.clamp(1, HIST_MAX_NS), c);
        }
    }
    h
}

/// The recorded values of a histogram as [[ns, count], ...].
fn hist_pairs(h: &Histogram<u64>) -> Vec<Value> {
    h.iter_recorded().map(|v| json!([h.highest_equivalent(v.value_iterated_to()), v.count_at_value()])).collect()
}

/// Where requests of the shown steps waited, summed over rounds: the load
/// generator's own send lag p99 (each round's, in order; a round without
/// one is left out), the gate's slow passes and off-CPU gaps of 1 ms or
/// more, every server's sleeps (voluntary context switches) and the gate's
/// dp waits in poll(2) per request answered (each sleep and wake-up costs
/// CPU: round ten measured ~7–9 µs for the gate's), and the kernel's TCP
/// retransmits on the client's and the PLC's side. Nothing when no step
/// recorded any of them (results from before round four).
fn write_waits(md: &mut String, groups: &[Group]) {
    let sum = |g: &Group, path: &[&str]| -> Option<i64> {
        let vals: Vec<i64> = g
            .steps()
            .iter()
            .filter_map(|st| path.iter().try_fold(*st, |v, k| v.get(*k)).and_then(Value::as_i64))
            .collect();
        (!vals.is_empty()).then(|| vals.iter().sum())
    };
    let rows: Vec<String> = groups
        .iter()
        .filter_map(|g| {
            // "N (P TLP)": segments sent again, of them tail-loss probes (an
            // ACK late by the probe timeout, no loss needed).
            let loss = |side: &str| {
                let count = |i: usize| sum(g, &["kernel_tcp_loss_in_window", side, procfs::TCP_LOSS_COUNTERS[i]]);
                count(0).map(|r| format!("{r} ({} TLP)", count(1).unwrap_or(0)))
            };
            let (client, plc) = (loss("client"), loss("plc"));
            // The 1 ms buckets.
            let gate = |family: &str| sum(g, &["gate", "counter_deltas", &bucket_name(family, 1)]);
            let is_gate = g.steps().iter().any(|st| st["gate"].is_object());
            // One number per round (a round without it is left out).
            let per_round = |path: &[&str], digits: usize| -> Vec<String> {
                g.steps()
                    .iter()
                    .filter_map(|st| path.iter().try_fold(*st, |v, k| v.get(*k)).and_then(Value::as_f64))
                    .map(|v| format!("{v:.digits$}"))
                    .collect()
            };
            // How late the load generator itself sent, per round: counted in
            // every latency above (open loop), and no server's doing.
            let lags = per_round(&["send_lag_us", "p99"], 0);
            // Its longest stretch off its CPU between two waits, per round:
            // another task or the host ran while it had sends due.
            let off_cpu = per_round(&["client_loop_us", "off_cpu", "max"], 0);
            // The host's share of the measured CPUs' time, per round (while
            // it runs something else, whatever was runnable there waits).
            let steals: Vec<String> = g
                .steps()
                .iter()
                .filter_map(|st| {
                    let per_cpu: Vec<f64> =
                        st["cpu_steal_percent"].as_object()?.values().filter_map(Value::as_f64).collect();
                    (!per_cpu.is_empty()).then(|| format!("{:.1}", per_cpu.iter().sum::<f64>() / per_cpu.len() as f64))
                })
                .collect();
            // The whole server's sleeps (voluntary context switches) per
            // request, per round: comparable across targets.
            let server_sleeps = per_round(&["server_context_switches_per_request", "voluntary"], 2);
            // Sleeps over the requests answered in the same windows.
            let sleeps = sum(g, &["gate", "counter_deltas", "sleeps"]);
            let answered = sum(g, &["answered_in_window"]).filter(|&a| a > 0);
            let per_request = sleeps.zip(answered).map(|(s, a)| format!("{:.2}", s as f64 / a as f64));
            (client.is_some() || is_gate).then(|| {
                let n = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
                let (passes, stalls) = if is_gate {
                    (gate(SLOW_PASSES).unwrap_or(0).to_string(), gate(STALLS).unwrap_or(0).to_string())
                } else {
                    ("-".into(), "-".into())
                };
                let (lag, off, steal) = (list_or_dash(&lags), list_or_dash(&off_cpu), list_or_dash(&steals));
                format!(
                    "| {} | {lag} | {off} | {steal} | {passes} | {stalls} | {} | {} | {} | {} |",
                    g.label,
                    list_or_dash(&server_sleeps),
                    n(per_request),
                    n(client),
                    n(plc)
                )
            })
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nWhere requests waited (the rows' steps, rounds summed): the load generator's own send lag p99 per round \
         (how late it sent, part of every latency above) and its longest time off its CPU between two waits \
         per round (its thread's wall time minus its CPU time while it worked: another task or the host ran \
         instead); the host's steal per round (% of the measured CPUs' \
         time the hypervisor ran something else while they were runnable: how exposed the window was to the \
         host; a polling vCPU is always runnable); gate dp passes and \
         off-CPU gaps of 1 ms or more; how often the server's threads slept (voluntary context switches, \
         all threads) per request answered, per round; how often the gate's dp core went to wait in poll(2) per \
         request answered (a wait that finds a frame already there does not sleep; a dash for a busy core, \
         which never waits); kernel TCP segments sent again on the client's and the PLC's side (of \
         them tail-loss probes):\n"
    );
    let _ = writeln!(
        md,
        "| target | client send lag p99 µs | client off-CPU max µs | host steal % | dp passes ≥ 1 ms | dp off-CPU ≥ 1 ms | server sleeps / request \
         | dp waits / request | client retransmits | PLC retransmits |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(md, "{r}");
    }
}

fn median_of(xs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = xs.into_iter().filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| super::median(&v))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// All rounds of one label in one scenario.
struct Group<'a> {
    label: String,
    runs: Vec<&'a Run>,
}

impl Group<'_> {
    fn steps(&self) -> Vec<&Value> {
        self.runs.iter().filter_map(|r| r.shown_step()).collect()
    }

    /// The shown steps' histograms merged (all rounds).
    fn merged(&self) -> Histogram<u64> {
        let mut h = new_hist();
        for st in self.steps() {
            let _ = h.add(step_hist(st));
        }
        h
    }

    fn median_step(&self, key: &[&str]) -> Option<f64> {
        median_of(self.steps().iter().filter_map(|st| key.iter().fold(*st, |v, k| &v[*k]).as_f64()))
    }

    /// The median of the rounds' max sustainable rates (sweeps only); a
    /// round with no step held counts as 0 (below the sweep's first rate),
    /// not left out, everywhere the report shows or judges it.
    fn max_rate_median(&self) -> Option<f64> {
        if !self.runs.iter().any(|r| r.is_sweep()) {
            return None;
        }
        median_of(self.runs.iter().map(|r| r.max_rate()))
    }

    fn errors(&self) -> u64 {
        self.steps().iter().filter_map(|st| st["errors"]["total"].as_u64()).sum()
    }
}

/// A result file as written (`.json`) or as `scripts/bench` keeps it
/// (`.json.gz`, read through `gzip -dc`), so a report can be made again
/// from the committed runs.
fn read_result(path: &Path) -> Result<String, String> {
    if path.extension().is_some_and(|e| e == "gz") {
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(|e| format!("gzip -dc: {e} (gzip is needed for .gz results)"))?;
        if !out.status.success() {
            return Err(format!("gzip -dc: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        return String::from_utf8(out.stdout).map_err(|e| e.to_string());
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

fn report(args: &ReportArgs) -> Result<(), String> {
    let mut runs = Vec::new();
    for path in &args.files {
        let text = read_result(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if doc["benchmark"] != "accessgate-perf load" {
            return Err(format!("{}: not an `accessgate-perf load` result", path.display()));
        }
        runs.push(Run {
            label: doc["label"].as_str().unwrap_or("?").to_string(),
            scenario: doc["scenario"].as_str().unwrap_or("run").to_string(),
            doc,
        });
    }
    let mut scenarios: Vec<String> = Vec::new();
    for r in &runs {
        if !scenarios.contains(&r.scenario) {
            scenarios.push(r.scenario.clone());
        }
    }
    let started = super::unix_time();
    let prefix = args.out.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("results").join(format!("load-report-{started}"))
    });
    let mut md = String::new();
    let _ = writeln!(md, "# accessgate-perf load report ({})\n", super::utc(started));
    for n in &args.note {
        let _ = writeln!(md, "- {n}");
    }
    if !args.note.is_empty() {
        md.push('\n');
    }
    let mut scen_docs = Map::new();
    let mut svgs = Vec::new();
    for scen in &scenarios {
        let mut groups: Vec<Group> = Vec::new();
        for r in runs.iter().filter(|r| &r.scenario == scen) {
            match groups.iter_mut().find(|g| g.label == r.label) {
                Some(g) => g.runs.push(r),
                None => groups.push(Group { label: r.label.clone(), runs: vec![r] }),
            }
        }
        let p = &groups[0].runs[0].doc["params"];
        let sweep = groups[0].runs[0].is_sweep();
        let rounds = groups.iter().map(|g| g.runs.len()).max().unwrap_or(1);
        let _ = writeln!(
            md,
            "## {scen}: {} session(s){}{}\n",
            p["sessions"],
            if sweep {
                format!(
                    ", sweep of total rates {} (a step passes with p50 ≤ {} µs, p99 ≤ {} µs and no errors)",
                    rates_text(&p["rates_total"]),
                    p["p50_bound_us"],
                    p["p99_bound_us"]
                )
            } else {
                format!(", {} req/s in total", rates_text(&p["rates_total"]))
            },
            match p["idle_sessions"].as_u64() {
                Some(0) | None => String::new(),
                Some(i) => format!(", + {i} idle sessions"),
            }
        );
        let _ = writeln!(
            md,
            "Latency in µs from each request's intended send time (open loop, coordinated omission corrected), \
             {rounds} round(s) merged per target{}; {} s window after {} s warmup{}.\n",
            if rounds > 1 { " (p99 per round in brackets)" } else { "" },
            p["seconds"],
            p["warmup_seconds"],
            if sweep { " per step; rows show the highest rate that passed (each round's own)" } else { "" }
        );
        let _ = writeln!(
            md,
            "| target | req/s | p50 | p90 | p99 | p99.9 | p99.99 | max | samples | errors | server CPU % | \
             CPU-s / 100k req | RSS KiB / session (fresh server) | client CPU % |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let base = groups.iter().find(|g| g.label == args.baseline).map(Group::merged);
        let mut series = Vec::new();
        let mut run_docs = Vec::new();
        for g in &groups {
            let h = g.merged();
            let q = |k: f64| quantile_us(&h, k);
            let per_round: Vec<String> = g.steps().iter().map(|st| opt(st["latency_us"]["p99"].as_f64(), 0)).collect();
            let rate = g.median_step(&["total_rate"]).unwrap_or(0.0);
            let cpu100k = g.median_step(&["server_cpu_s_per_100k"]);
            let work = g.median_step(&["gate", "dp_work_cpu_s_per_100k_estimate"]);
            let cpu_text = match (cpu100k, work) {
                (Some(c), Some(w)) => format!("{c:.2} (dp work ≈ {w:.2})"),
                (c, _) => opt(c, 2),
            };
            // Memory per session only from servers that had served no one
            // before (a server's allocator keeps what earlier sessions freed).
            let rss = median_of(
                g.runs
                    .iter()
                    .filter(|r| r.doc["setup"]["server_fresh"].as_bool() == Some(true))
                    .filter_map(|r| r.doc["setup"]["server_rss_kb_per_session"].as_f64()),
            );
            let p99_text = if g.runs.len() > 1 {
                format!("{} [{}]", opt(q(0.99), 0), per_round.join(", "))
            } else {
                opt(q(0.99), 0)
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                g.label,
                si(rate),
                opt(q(0.5), 0),
                opt(q(0.9), 0),
                p99_text,
                opt(q(0.999), 0),
                opt(q(0.9999), 0),
                opt(q(1.0), 0),
                h.len(),
                g.errors(),
                opt(g.median_step(&["server_cpu_percent"]), 0),
                cpu_text,
                opt(rss, 1),
                opt(g.median_step(&["client_cpu_percent"]), 0),
            );
            series.push((format!("{} {} req/s{}", g.label, si(rate), legend_stats(&h)), curve(&h)));
            let mut lat = Map::new();
            let mut added = Map::new();
            let mut ci = Map::new();
            for (k, qq) in PERCENTILES {
                lat.insert(k.into(), json!(q(qq)));
                if qq < 1.0 {
                    ci.insert(k.into(), quantile_interval_us(&h, qq).json());
                }
                if let (Some(b), Some(v)) = (base.as_ref().and_then(|b| quantile_us(b, qq)), q(qq)) {
                    added.insert(k.into(), json!(v - b));
                }
            }
            run_docs.push(json!({
                "label": g.label,
                "rounds": g.runs.len(),
                "total_rate": rate,
                "samples": h.len(),
                "latency_us": lat,
                "latency_ci95_us": ci,
                "added_latency_us": if base.is_some() { Value::Object(added) } else { Value::Null },
                "p99_per_round_us": g.steps().iter().map(|st| st["latency_us"]["p99"].clone()).collect::<Vec<_>>(),
                "errors": g.errors(),
                "server_cpu_percent": g.median_step(&["server_cpu_percent"]),
                "server_cpu_s_per_100k": cpu100k,
                "gate_dp_work_cpu_s_per_100k_estimate": work,
                "client_cpu_percent": g.median_step(&["client_cpu_percent"]),
                "plc_cpu_percent": g.median_step(&["plc_cpu_percent"]),
                "rss_kb_per_session": rss,
                "max_sustainable_rate_per_round":
                    g.runs.iter().map(|r| r.doc["max_sustainable_rate"].clone()).collect::<Vec<_>>(),
                "max_sustainable_rate_median": g.max_rate_median(),
                "files_unix_time": g.runs.iter().map(|r| r.doc["unix_time"].clone()).collect::<Vec<_>>(),
            }));
        }
        if let Some(b) = &base {
            let _ = writeln!(
                md,
                "\nAdded latency against `{}` (µs per percentile, merged rounds: target − {}):\n",
                args.baseline, args.baseline
            );
            let _ = writeln!(md, "| target | p50 | p90 | p99 | p99.9 | p99.99 | max |");
            let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
            for g in groups.iter().filter(|g| g.label != args.baseline) {
                let h = g.merged();
                let mut line = format!("| {} |", g.label);
                for (_, qq) in PERCENTILES {
                    let d = quantile_us(&h, qq).zip(quantile_us(b, qq)).map(|(a, c)| a - c);
                    let _ = write!(line, " {} |", d.map_or("-".into(), |v| format!("{v:+.0}")));
                }
                let _ = writeln!(md, "{line}");
            }
        }
        // The issue's targets: latency on the fixed-rate scenarios, rate on
        // the sweeps without idle sessions (s4's sweep measures another thing).
        let idle = p["idle_sessions"].as_u64().unwrap_or(0) > 0;
        let targets = match (sweep, idle) {
            (false, _) => write_latency_targets(&mut md, &groups, &args.baseline),
            (true, false) => write_rate_targets(&mut md, &groups),
            (true, true) => Value::Null,
        };
        write_waits(&mut md, &groups);
        if sweep {
            let _ = writeln!(
                md,
                "\nMax sustainable rate (median of rounds) and each round's steps (total req/s: p50/p99 µs; \
                 ✗ = the step that failed; \"attempt N\": the N-th try of a step, --retry-failed):\n"
            );
            for g in &groups {
                let maxes: Vec<String> =
                    g.runs.iter().map(|r| r.doc["max_sustainable_rate"].as_f64().map_or("none".into(), si)).collect();
                let _ = writeln!(
                    md,
                    "- **{}**: {} req/s (rounds: {})",
                    g.label,
                    g.max_rate_median().map_or("none".into(), si),
                    maxes.join(", ")
                );
                for (n, r) in g.runs.iter().enumerate() {
                    let steps = r.doc["steps"].as_array().cloned().unwrap_or_default();
                    let text: Vec<String> = steps
                        .iter()
                        .map(|s| {
                            let tries = s["attempts"].as_u64().unwrap_or(1);
                            format!(
                                "{}: {}/{}{}{}",
                                si(s["total_rate"].as_f64().unwrap_or(0.0)),
                                opt(s["latency_us"]["p50"].as_f64(), 0),
                                opt(s["latency_us"]["p99"].as_f64(), 0),
                                if tries > 1 { format!(" (attempt {tries})") } else { String::new() },
                                if s["passed"].as_bool() == Some(true) { "" } else { " ✗" }
                            )
                        })
                        .collect();
                    let last = steps.last();
                    let _ = writeln!(
                        md,
                        "  - round {}: {} — at the last step: client CPU {}%, server CPU {}%{}",
                        n + 1,
                        text.join(", "),
                        opt(last.and_then(|s| s["client_cpu_percent"].as_f64()), 0),
                        opt(last.and_then(|s| s["server_cpu_percent"].as_f64()), 0),
                        last.and_then(|s| s["gate"]["dp_work_percent_estimate"].as_f64())
                            .map_or(String::new(), |w| format!(" (dp work ≈ {w:.0}%)"))
                    );
                }
            }
        }
        md.push('\n');
        let svg_path = with_suffix(&prefix, &format!("-{}.svg", sanitize(scen)));
        let _ = writeln!(md, "Plot: `{}`\n", svg_path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default());
        let title = format!("{scen}: {} session(s), {rounds} round(s) merged", p["sessions"]);
        svgs.push((svg_path, svg_plot(&title, &series)));
        scen_docs.insert(scen.clone(), json!({ "params": p, "targets": run_docs, "issue_targets": targets }));
    }
    let idle_target = write_idle_target(&mut md, &runs);
    print!("{md}");
    let doc = json!({
        "benchmark": "accessgate-perf load report",
        "schema": 1,
        "unix_time": started,
        "date_utc": super::utc(started),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "build_profile": build_profile(),
        "git": to_value(&super::git(Path::new(env!("CARGO_MANIFEST_DIR")))),
        "machine": to_value(&super::machine()),
        "notes": args.note,
        "baseline": args.baseline,
        "files": args.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "scenarios": scen_docs,
        "idle_target": idle_target,
    });
    let mut outputs = vec![(with_suffix(&prefix, ".md"), md.clone()), (with_suffix(&prefix, ".json"), pretty(&doc))];
    outputs.extend(svgs);
    for (path, text) in &outputs {
        write_file(path, text)?;
    }
    if let Some(latest) = &args.latest {
        // Plots of scenarios an older report had and this one has not.
        let stem = file_stem(latest);
        if let Ok(dir) = std::fs::read_dir(latest.parent().unwrap_or(Path::new("."))) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(&format!("{stem}-")) && name.ends_with(".svg") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let from = prefix.as_os_str().to_string_lossy().to_string();
        let to = latest.as_os_str().to_string_lossy().to_string();
        for (path, text) in &outputs {
            let p = path.as_os_str().to_string_lossy().replacen(&from, &to, 1);
            write_file(Path::new(&p), &text.replace(&file_stem(&prefix), &file_stem(latest)))?;
        }
    }
    eprintln!("wrote {}.md, .json and {} plot(s)", prefix.display(), scenarios.len());
    Ok(())
}

fn file_stem(p: &Path) -> String {
    p.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default()
}

fn rates_text(v: &Value) -> String {
    v.as_array().map(|a| a.iter().filter_map(Value::as_f64).map(si).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_format_and_curve() {
        let mut h = new_hist();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let text = hgrm_text(&h, 1000.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "       Value     Percentile TotalCount 1/(1-Percentile)");
        assert_eq!(lines[1], "");
        assert!(lines[2].starts_with("       1.000 0.000000000000          1           1.00"), "{}", lines[2]);
        let last_data = lines.iter().rev().find(|l| !l.starts_with('#')).unwrap();
        assert!(last_data.contains("1.000000000000      10000"), "{last_data}");
        assert!(text.contains("Total count    =        10000]"), "{text}");
        let c = curve(&h);
        assert_eq!(c.last().unwrap().0, 1.0);
        let p99 = c.iter().find(|(q, _)| *q >= 0.99).unwrap().1;
        assert!((9880.0..=9930.0).contains(&p99), "{p99}");
    }

    #[test]
    fn histograms_survive_the_result_file() {
        let mut h = new_hist();
        for v in [70_000u64, 70_100, 80_000, 5_000_000, 5_000_000] {
            h.record(v).unwrap();
        }
        let step = json!({ "histogram": hist_pairs(&h) });
        let back = step_hist(&step);
        assert_eq!(back.len(), 5);
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert_eq!(back.max(), h.max());
        assert_eq!(median_of([3.0, f64::NAN, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn retry_failed_needs_a_sweep_and_is_bounded() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let parse = |extra: &[&str]| {
            let mut argv = vec!["load", "--mode", "plain", "--target", "127.0.0.1:502"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|c| c.run)
        };
        assert!(parse(&["--retry-failed", "1"]).is_err(), "a retry without --sweep is refused by clap");
        let ok = parse(&["--sweep", "1000,2000", "--retry-failed", "2"]).unwrap();
        assert_eq!(ok.retry_failed, 2);
        assert!(ok.check().is_ok());
        let bad = parse(&["--sweep", "1000,2000", "--retry-failed", "4"]).unwrap();
        assert!(bad.check().unwrap_err().contains("retry-failed"), "{:?}", bad.check());
    }

    /// A snapshot's round trip to the gate's ctl socket runs on a thread of
    /// its own: starting it returns at once, however slow the gate answers
    /// (found in round fifteen: taken on the loop's thread, it held every
    /// gate run's sends for up to ~20 ms at the window's start and end).
    #[test]
    fn a_slow_gate_answer_does_not_hold_the_loop() {
        use std::io::{BufRead, BufReader, Write};
        let dir = std::env::temp_dir().join(format!("agperf-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ctl = dir.join("ctl.sock");
        let _ = std::fs::remove_file(&ctl);
        let listener = std::os::unix::net::UnixListener::bind(&ctl).unwrap();
        let gate = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            (&s).write_all(b"{\"loops\": 7}\n").unwrap();
            line
        });
        let own = std::process::id();
        let probes = Probes { own, server: Some(own), plc: None, gate_ctl: Some(ctl), cpus: vec![0] };
        let t = Instant::now();
        let probing = probes.start();
        assert!(t.elapsed() < Duration::from_millis(100), "started in {:?}", t.elapsed());
        // This process has no dp thread: the snapshot itself may fail; it
        // waited for the gate's answer either way.
        let _ = probing.finish();
        assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
        assert_eq!(gate.join().unwrap().trim(), "stats");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The loop's stretches: time off the CPU is wall time the thread did
    /// not run; a wake-up counts as late only after a sleep past its time.
    #[test]
    fn the_loop_time_splits_work_from_time_off_the_cpu() {
        let mut lt = LoopTime::new();
        let t = Instant::now();
        lt.woke(t, t + Duration::from_millis(1), true); // early: not late
        std::thread::sleep(Duration::from_millis(20)); // off its CPU
        lt.waiting(Instant::now());
        lt.woke(Instant::now(), t, false); // past its time, but it did not sleep
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(5) {
            std::hint::black_box(0);
        }
        lt.waiting(Instant::now());
        let woke = Instant::now();
        lt.woke(woke, woke - Duration::from_millis(3), true); // 3 ms late
        assert_eq!((lt.busy.len(), lt.off_cpu.len(), lt.woke_late.len()), (2, 2, 1));
        assert!(lt.busy.min() >= 4_990_000 && lt.busy.max() >= 19_990_000, "{} {}", lt.busy.min(), lt.busy.max());
        assert!(lt.off_cpu.max() >= 19_000_000, "the sleep is time off the CPU: {}", lt.off_cpu.max());
        assert!(lt.off_cpu.min() < lt.busy.min(), "the spin ran on its CPU for part of its stretch at least");
        assert!((2_980_000..=3_020_000).contains(&lt.woke_late.max()), "{}", lt.woke_late.max());
        let j = lt.json();
        assert_eq!(j["busy"]["count"], 2);
        assert!(j["off_cpu"]["max"].as_f64().unwrap() >= 19_000.0, "{j}");
        lt.reset();
        assert!(lt.busy.is_empty() && lt.off_cpu.is_empty() && lt.woke_late.is_empty() && lt.since.is_none());
    }

    #[test]
    fn the_report_says_where_requests_waited() {
        let step = |gate: bool, client_retrans: i64| {
            let loss = |r: i64| json!({"Tcp:RetransSegs": r, "TcpExt:TCPLossProbes": r, "TcpExt:TCPTimeouts": 0});
            let mut st = json!({
                "kernel_tcp_loss_in_window": {"client": loss(client_retrans), "plc": loss(0)},
                "send_lag_us": {"p99": 40.4 + 1000.0 * client_retrans as f64},
                "client_loop_us": {"off_cpu": {"max": 12.0 + 3000.0 * client_retrans as f64}},
                "cpu_steal_percent": {"cpu0": 0.5 * client_retrans as f64, "cpu1": 1.5 * client_retrans as f64},
            });
            if gate {
                st["gate"] = json!({"counter_deltas": {"slow_passes_1ms": 3, "stalls_1ms": 2, "sleeps": 150}});
                st["answered_in_window"] = json!(100);
            }
            st["server_context_switches_per_request"] =
                json!({"voluntary": 1.6 + client_retrans as f64, "involuntary": 0.1});
            json!({"steps": [st]})
        };
        let run = |label: &str, doc: Value| Run { label: label.into(), scenario: "s2".into(), doc };
        let (a, b, c) = (run("gate", step(true, 0)), run("gate", step(true, 4)), run("nginx", step(false, 7)));
        let groups =
            vec![Group { label: "gate".into(), runs: vec![&a, &b] }, Group { label: "nginx".into(), runs: vec![&c] }];
        let mut md = String::new();
        write_waits(&mut md, &groups);
        // 300 sleeps over 200 answered: 1.50 a request.
        assert!(
            md.contains(
                "| gate | 40, 4040 | 12, 12012 | 0.0, 4.0 | 6 | 4 | 1.60, 5.60 | 1.50 | 4 (4 TLP) | 0 (0 TLP) |"
            ),
            "{md}"
        );
        assert!(md.contains("| nginx | 7040 | 21012 | 7.0 | - | - | 8.60 | - | 7 (7 TLP) | 0 (0 TLP) |"), "{md}");
        // Results from before steal was recorded: a dash.
        let older = run("gate", json!({"steps": [{"send_lag_us": {"p99": 50.0}, "gate": {"counter_deltas": {}}}]}));
        let mut md = String::new();
        write_waits(&mut md, &[Group { label: "gate".into(), runs: vec![&older] }]);
        assert!(md.contains("| gate | 50 | - | - | 0 | 0 | - | - | - | - |"), "{md}");
        // A busy core never sleeps: the counter does not move, so the
        // deltas leave it out and the column has no figure.
        let busy = run(
            "gate",
            json!({"steps": [{"answered_in_window": 500, "gate": {"counter_deltas": {"slow_passes_1ms": 1}}}]}),
        );
        let mut md = String::new();
        write_waits(&mut md, &[Group { label: "gate".into(), runs: vec![&busy] }]);
        assert!(md.contains("| gate | - | - | - | 1 | 0 | - | - | - | - |"), "{md}");
        // Results from before the counters existed: no table at all.
        let old = run("gate", json!({"steps": [{"latency_us": {}}]}));
        let mut md = String::new();
        write_waits(&mut md, &[Group { label: "gate".into(), runs: vec![&old] }]);
        assert!(md.is_empty(), "{md}");
    }

    #[test]
    fn the_report_judges_the_latency_targets_on_intervals() {
        // One step of `n` samples at `us` µs, plus `slow` samples at 5 ms.
        let step = |us: u64, n: u64, slow: u64| {
            let mut h = new_hist();
            h.record_n(us * 1000, n).unwrap();
            if slow > 0 {
                h.record_n(5_000_000, slow).unwrap();
            }
            json!({"steps": [{"histogram": hist_pairs(&h)}]})
        };
        let run = |label: &str, doc: Value| Run { label: label.into(), scenario: "s1".into(), doc };
        // s1-like: 2,000 samples a round, two rounds. The gate adds 50 µs at
        // p50, HAProxy 200 (half: 100): met, surely. At p99.9 the gate has 5
        // slow samples in 4,000 (the 5th-slowest is its p99.9, 5 ms) and
        // HAProxy's p99 adds 200: not met at the point, but the gate's
        // interval runs from 150 µs (the 9th-slowest) to 5 ms: it overlaps
        // the bound.
        let d = [run("direct", step(100, 2000, 0)), run("direct", step(100, 2000, 0))];
        let g = [run("gate", step(150, 1997, 3)), run("gate", step(150, 1998, 2))];
        let h = [run("haproxy", step(300, 2000, 0)), run("haproxy", step(300, 2000, 0))];
        fn group(runs: &[Run; 2]) -> Group<'_> {
            Group { label: runs[0].label.clone(), runs: runs.iter().collect() }
        }
        let groups = vec![group(&d), group(&g), group(&h)];
        let mut md = String::new();
        let doc = write_latency_targets(&mut md, &groups, "direct");
        assert!(md.contains("| gate | 4000 | 150 [150, 150] |"), "{md}");
        assert!(md.contains("| gate | +50 | [+50, +50] | +100 | [+100, +100] | **met** | met, met |"), "{md}");
        assert!(md.contains("haproxy's added p99"), "{md}");
        let p999 = doc.as_array().unwrap().iter().find(|t| t["target"].as_str().unwrap().contains("p99.9")).unwrap();
        assert_eq!(p999["verdict"], "not resolved", "{md}");
        assert!(p999["added_us"].as_f64().unwrap() > 4000.0, "{p999}");
        // Round 1 has 3 slow samples in 2,000 (its p99.9, the 3rd-slowest,
        // is 5 ms), round 2 two (its p99.9 is 150 µs).
        assert_eq!(p999["per_round"], json!(["not met", "met"]), "{p999}");
        // The same shape with 50 times the samples is decided.
        let d = [run("direct", step(100, 100_000, 0)), run("direct", step(100, 100_000, 0))];
        let g = [run("gate", step(150, 99_850, 150)), run("gate", step(150, 99_850, 150))];
        let h = [run("haproxy", step(300, 100_000, 0)), run("haproxy", step(300, 100_000, 0))];
        let groups = vec![group(&d), group(&g), group(&h)];
        let doc = write_latency_targets(&mut String::new(), &groups, "direct");
        let p999 = doc.as_array().unwrap().iter().find(|t| t["target"].as_str().unwrap().contains("p99.9")).unwrap();
        assert_eq!(p999["verdict"], "not met", "{p999}");
        // Without a peer (or a gate) there is no target to judge, only the
        // intervals; without the baseline nothing at all.
        let mut md = String::new();
        assert_eq!(write_latency_targets(&mut md, &groups[..2], "direct"), Value::Null);
        assert!(md.contains("How sure") && !md.contains("Issue #7"), "{md}");
        let mut md = String::new();
        assert_eq!(write_latency_targets(&mut md, &groups[1..], "direct"), Value::Null);
        assert!(md.is_empty(), "{md}");
    }

    #[test]
    fn the_report_judges_the_rate_targets_on_medians() {
        let run = |label: &str, rate: f64| Run {
            label: label.into(),
            scenario: "sweep".into(),
            doc: json!({"max_sustainable_rate": rate, "params": {"sweep": true, "rates_total": [5e3, 1e4, 2e4, 3e4]}}),
        };
        let (g1, g2) = (run("gate-nospin", 20000.0), run("gate-nospin", 15000.0));
        let (h1, h2) = (run("haproxy", 10000.0), run("haproxy", 15000.0));
        let s1 = run("stunnel", 5000.0);
        let groups = vec![
            Group { label: "gate-nospin".into(), runs: vec![&g1, &g2] },
            Group { label: "haproxy".into(), runs: vec![&h1, &h2] },
            Group { label: "stunnel".into(), runs: vec![&s1] },
        ];
        let mut md = String::new();
        let doc = write_rate_targets(&mut md, &groups);
        // Medians 17.5k vs 12.5k: 1.40×; per round 2.00× and 1.00×.
        assert!(md.contains("**1.40×** (target ≥ 1.3×: met; per round 2.00×, 1.00×)"), "{md}");
        assert!(md.contains("vs stunnel 5.000 k: **3.50×** (target ≥ 2×: met; per round 4.00×)"), "{md}");
        assert_eq!(doc.as_array().unwrap().len(), 2);
        // The report of one gate run against one HAProxy run.
        let pair = |gate: &Run, peer: &Run| {
            let groups = vec![
                Group { label: gate.label.clone(), runs: vec![gate] },
                Group { label: peer.label.clone(), runs: vec![peer] },
            ];
            let mut md = String::new();
            write_rate_targets(&mut md, &groups);
            md
        };
        let md = pair(&run("gate-nospin", 12000.0), &h1);
        assert!(md.contains("**1.20×** (target ≥ 1.3×: not met"), "{md}");
        // At the sweep's top the server may hold more: a ratio it would
        // change is not resolved.
        let (top, low) = (run("gate-nospin", 30000.0), run("haproxy", 25000.0));
        let md = pair(&top, &low);
        assert!(
            md.contains("30.00 k (the sweep's top) vs haproxy 25.00 k: **1.20×** (target ≥ 1.3×: not resolved"),
            "{md}"
        );
        let md = pair(&g1, &run("haproxy", 30000.0));
        assert!(md.contains("vs haproxy 30.00 k (the sweep's top): **0.67×** (target ≥ 1.3×: not met"), "{md}");
    }

    /// A sweep step of 10,000 samples spread evenly over `us` .. 2 × `us`
    /// µs: its p99 is 1.99 × `us`, its interval a few tenths of a % wide.
    fn even_step(rate: f64, us: u64) -> Value {
        let mut h = new_hist();
        for i in 0..10_000 {
            h.record(us * 1000 + us * i / 10).unwrap();
        }
        json!({"total_rate": rate, "histogram": hist_pairs(&h)})
    }

    #[test]
    fn the_report_judges_the_idle_target_per_rate() {
        let step = even_step;
        let run = |label: &str, idle: u64, steps: Vec<Value>| Run {
            label: label.into(),
            scenario: if idle > 0 { "s4-idle".into() } else { "sweep-100".into() },
            doc: json!({"params": {"sweep": true, "sessions": 100, "idle_sessions": idle}, "steps": steps}),
        };
        let runs = vec![
            run("gate", 0, vec![step(2000.0, 100), step(5000.0, 100)]),
            run("gate", 9000, vec![step(2000.0, 100), step(5000.0, 300), step(10000.0, 100)]),
            // A second round of the sweep at 2k: merged with the first.
            run("gate", 0, vec![step(2000.0, 100)]),
            // No s4 for nginx: nothing to judge.
            run("nginx", 0, vec![step(2000.0, 100)]),
        ];
        let mut md = String::new();
        let doc = write_idle_target(&mut md, &runs);
        let rows = doc.as_array().unwrap();
        // 10k has no step without idle sessions to compare with.
        assert_eq!(rows.len(), 2, "{md}");
        // 2k: the same p99 with and without (the sweep's two rounds merged).
        assert_eq!(rows[0]["total_rate"], 2000.0);
        assert_eq!(rows[0]["verdict"], "met", "{md}");
        assert!(md.contains("| gate | 2.000 k | 199 [199, 199] | 199 [199, 199] | 1.00 | **met** |"), "{md}");
        // 5k: three times the p99 with them.
        assert_eq!(rows[1]["verdict"], "not met", "{md}");
        assert!(md.contains("| 3.00 | **not met** |"), "{md}");
        assert!(write_idle_target(&mut String::new(), &runs[2..]).as_array().unwrap().is_empty());
    }

    #[test]
    fn results_are_read_plain_or_gzipped() {
        let dir = std::env::temp_dir().join(format!("agperf-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("r.json");
        std::fs::write(&plain, "{\"benchmark\":\"accessgate-perf load\"}\n").unwrap();
        let copy = dir.join("c.json");
        std::fs::copy(&plain, &copy).unwrap();
        assert!(std::process::Command::new("gzip").arg("-f").arg(&copy).status().unwrap().success());
        let gz = dir.join("c.json.gz");
        assert_eq!(read_result(&gz).unwrap(), read_result(&plain).unwrap());
        std::fs::write(dir.join("bad.json.gz"), b"not gzip").unwrap();
        let e = read_result(&dir.join("bad.json.gz")).unwrap_err();
        assert!(e.starts_with("gzip -dc: "), "{e}");
        assert!(read_result(&dir.join("missing.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plot_is_svg() {
        let mut h = new_hist();
        for v in [50_000u64, 60_000, 70_000, 900_000] {
            h.record(v).unwrap();
        }
        let s = svg_plot("t <1>", &[("a".into(), curve(&h))]);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("t &lt;1&gt;") && s.contains("99%"));
        assert_eq!(nice_ceiling(901.0), 1000.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
    }

    /// A load engine with one plain session to a PLC that answers every
    /// request 600 ms after it came, its windows `seconds` long after
    /// `warmup`, and a 100 ms drain. The engine borrows `args`.
    fn late_plc(warmup: &str) -> (RunArgs, SocketAddr) {
        use clap::Parser;
        use std::io::{Read as _, Write as _};
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut rd, _) = listener.accept().unwrap();
            let mut wr = rd.try_clone().unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<([u8; 2], Instant)>();
            std::thread::spawn(move || {
                for (tid, at) in rx {
                    std::thread::sleep((at + Duration::from_millis(600)).saturating_duration_since(Instant::now()));
                    let mut a = vec![tid[0], tid[1], 0, 0, 0, 23, 1, 3, 20];
                    for r in 0u16..10 {
                        a.extend_from_slice(&r.to_be_bytes());
                    }
                    if wr.write_all(&a).is_err() {
                        return;
                    }
                }
            });
            let mut req = [0u8; 12];
            while rd.read_exact(&mut req).is_ok() {
                let _ = tx.send(([req[0], req[1]], Instant::now()));
            }
        });
        let target = addr.to_string();
        let argv = ["load", "--mode", "plain", "--target", &target, "--seconds", "0.3", "--warmup", warmup];
        let args = Cli::try_parse_from(argv.into_iter().chain(["--drain-ms", "100", "--registers", "10"])).unwrap();
        (args.run, addr)
    }

    fn engine(args: &RunArgs, target: SocketAddr) -> Engine<'_> {
        let server_name = ServerName::try_from("x".to_string()).unwrap();
        let reach = Reach { mode: Mode::Plain, tls: None, server_name, hello: Vec::new() };
        let mut e = Engine::new(args, target, reach, 1).unwrap();
        e.open_all(1, 0).unwrap();
        e
    }

    fn no_probes() -> Probes {
        Probes { own: std::process::id(), server: None, plc: None, gate_ctl: None, cpus: Vec::new() }
    }

    /// An answer that comes after its step ended is not the next step's
    /// sample nor one of its outstanding requests, which a retry or s4's
    /// next rate (`--no-stop`) would otherwise take: the next step's own
    /// unanswered request was hidden and a 600 ms sample recorded (found by
    /// a review of the instrument).
    #[test]
    fn a_late_answer_of_one_step_is_not_counted_in_the_next() {
        let (args, addr) = late_plc("0");
        let mut e = engine(&args, addr);
        // 2 req/s for 0.3 s: one request a step, at its start.
        let first = e.step(2.0, &no_probes(), "first").unwrap();
        assert_eq!((first.tally.sent_in_window, first.unanswered), (1, 1), "the first step's answer is late");
        let second = e.step(2.0, &no_probes(), "second").unwrap();
        assert_eq!(second.tally.sent_in_window, 1);
        assert_eq!(
            (second.unanswered, second.hist.len(), second.tally.answered_in_window),
            (1, 0, 0),
            "the second step's own request was never answered; max recorded {} µs",
            second.hist.max() / 1000
        );
    }

    /// The same late answer arriving in the next step's warmup, when that
    /// step has nothing outstanding: it took `outstanding` below zero (a
    /// panic in tests, a wrap to ~1.8e19 in release).
    #[test]
    fn a_late_answer_in_the_next_warmup_does_not_wrap_outstanding() {
        let (args, addr) = late_plc("0.5");
        let mut e = engine(&args, addr);
        // One request in the window (at 0.5 s), answered at 1.1 s, after the
        // step (0.9 s); the next step's warmup (0.9 .. 1.4 s) receives it.
        let first = e.step(2.0, &no_probes(), "first").unwrap();
        assert_eq!((first.tally.sent_in_window, first.unanswered), (1, 1));
        let second = e.step(2.0, &no_probes(), "second").unwrap();
        assert_eq!((second.tally.sent_in_window, second.unanswered, second.hist.len()), (1, 1, 0));
    }

    /// The 95 % interval reads the order statistics at the ranks
    /// `rank_interval` gives (`x(l)`, `x(u)`), as its doc says (found by a
    /// review: for ~4 % of (rank, n) pairs it read the next one up).
    #[test]
    fn the_interval_is_read_at_its_ranks() {
        for n in 1..=1000u64 {
            let mut h = new_hist();
            for i in 1..=n {
                h.record(i * 1000).unwrap(); // the i-th smallest is i µs (distinct buckets)
            }
            for q in [0.5, 0.9, 0.99] {
                let (l, u) = super::super::interval::rank_interval(n, q, CONFIDENCE);
                let iv = quantile_interval_us(&h, q);
                let at = |r: u64| h.highest_equivalent(r * 1000) as f64 / 1000.0;
                assert_eq!((iv.lo, iv.hi), (l.map(at), u.map(at)), "n {n}, q {q}, ranks {l:?} {u:?}");
            }
        }
    }

    /// The idle target compares s4's steps with the same server's uncapped
    /// sweep-100 steps; s6's CPU-capped sweep (also 100 sessions, no idle
    /// sessions, a sweep) is not merged into "without" (found by a review:
    /// it was, and a 3× worse p99 with idle sessions was judged met).
    #[test]
    fn the_idle_target_ignores_the_capped_sweep() {
        let step = even_step;
        let run = |scenario: &str, idle: u64, us: u64| Run {
            label: "gate-nospin".into(),
            scenario: scenario.into(),
            doc: json!({"params": {"sweep": true, "sessions": 100, "idle_sessions": idle},
                        "steps": [step(5000.0, us)]}),
        };
        let runs = vec![
            run("sweep-100", 0, 100),        // uncapped: p99 199 µs
            run("s6-capped-40pct", 0, 2000), // under a 40 % CPU quota: p99 3,980 µs
            run("s4-idle", 9000, 300),       // with 9,000 idle sessions: p99 597 µs, 3× the uncapped
        ];
        let mut md = String::new();
        let doc = write_idle_target(&mut md, &runs);
        let row = &doc.as_array().unwrap()[0];
        assert_eq!(row["verdict"], "not met", "{md}");
    }

    /// A round in which the gate held no step at all (its max sustainable
    /// rate is below the sweep's first step, written as null) counts as 0
    /// in the median the rate target is judged on (found by a review: it
    /// vanished, and [none, 20k] against [10k, 10k] was 2.00×, met).
    #[test]
    fn a_round_with_no_sustained_rate_counts() {
        let run = |label: &str, rate: Value| Run {
            label: label.into(),
            scenario: "sweep".into(),
            doc: json!({"max_sustainable_rate": rate, "params": {"sweep": true, "rates_total": [5e3, 1e4, 2e4, 3e4]}}),
        };
        let (g1, g2) = (run("gate-nospin", Value::Null), run("gate-nospin", json!(20000.0)));
        let (h1, h2) = (run("haproxy", json!(10000.0)), run("haproxy", json!(10000.0)));
        let groups = vec![
            Group { label: "gate-nospin".into(), runs: vec![&g1, &g2] },
            Group { label: "haproxy".into(), runs: vec![&h1, &h2] },
        ];
        let mut md = String::new();
        let doc = write_rate_targets(&mut md, &groups);
        // Round 1: gate < 5k vs 10k (< 0.5×); round 2: 2.0×. Not "met".
        assert_ne!(doc[0]["verdict"], "met", "{md}");
    }

    #[test]
    fn ticket_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("agload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("ticket");
        let hex: String = (0u8..32).map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            &p,
            format!("gate=100.64.0.1:443\nserver_name=gate.lab\nca=/x/ca.crt\nuser=a\nticket={hex}\nexpires_unix=99\n"),
        )
        .unwrap();
        let t = read_ticket_file(&p).unwrap();
        assert_eq!(t.ticket[31], 31);
        assert_eq!(t.expires_unix, 99);
        assert_eq!(t.ca.as_deref(), Some(Path::new("/x/ca.crt")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
