//! `accessgate run`: the appliance on real links.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::api::Api;
use control::audit::{AuditConfig, DeniedFlows, OnFailure, SyslogConfig};
use control::auth::AuthWorker;
use control::identity::users::UserDb;
use control::identity::Authenticator;
use control::{Control, TlsSource};
use crossbeam::queue::ArrayQueue;
use crossbeam::sync::Parker;
use dataplane::audit::{AuditQueue, AuditTap};
use dataplane::auth::AuthChannel;
use dataplane::core::DROP_LOG;
use dataplane::core::{Core, CoreLinks, CoreOptions, IdleMode};
use dataplane::io::{self, Backend, FramePort};

/// Where `run` listens for `accessgate ctl` unless told otherwise.
pub const DEFAULT_CTL: &str = "/run/accessgate/ctl.sock";

#[derive(clap::Args)]
pub struct RunArgs {
    /// The gate's TOML config (see config/lab.toml).
    #[arg(long)]
    config: PathBuf,
    /// Frame I/O: xsk (AF_XDP), packet (AF_PACKET, hosts without XDP).
    #[arg(long, default_value = "xsk")]
    backend: Backend,
    /// CPU ids of the dp cores, one per NIC queue (queue i on the i-th core).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    cores: Vec<usize>,
    /// busy: poll forever (a dedicated core). adaptive[:SPIN_US[:SHARE_PCT]]:
    /// after work keep polling up to SPIN_US (default 50), spending at most
    /// SHARE_PCT % of the time spinning (default 5), then sleep in poll(2).
    #[arg(long, default_value = "adaptive")]
    idle: IdleMode,
    /// Users: argon2id hashes, TOTP secrets, roles (mode 0600).
    #[arg(long, default_value = "/etc/accessgate/secrets.toml")]
    secrets: PathBuf,
    /// Where each user's last TOTP step is kept, so a code is good once
    /// across restarts too (default: the secrets file's path with
    /// `.totp-steps` appended; created on the first login).
    #[arg(long)]
    totp_steps: Option<PathBuf>,
    /// The gate's TLS certificate chain (PEM).
    #[arg(long, default_value = "/etc/accessgate/gate.crt")]
    cert: PathBuf,
    /// The gate's TLS private key (PEM: ECDSA P-256 or Ed25519).
    #[arg(long, default_value = "/etc/accessgate/gate.key")]
    key: PathBuf,
    /// CA for optional client certificates (mTLS).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Also accept TLS 1.2 (TLS 1.3 only by default).
    #[arg(long)]
    tls12: bool,
    /// Audit trail directory (JSONL hash chain, pcapng per session).
    #[arg(long, default_value = "/var/lib/accessgate/audit")]
    audit_dir: PathBuf,
    /// What open sessions do while the audit writer cannot write:
    /// hold (read no requests until it recovers) or terminate.
    #[arg(long, default_value = "hold", value_parser = ["hold", "terminate"])]
    audit_on_failure: String,
    /// Group commit interval of the audit trail (ms, 1..=1000): how long an
    /// accepted record waits, at most, before its sync starts. Longer means
    /// fewer, larger disk writes, and more records at risk if power fails.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    audit_fsync_ms: u64,
    /// When the audit writer shares a dp core's CPU (no other CPU left):
    /// auto makes it write in slices of 50 µs when a core has nothing to do;
    /// off lets it run whenever the scheduler picks (for comparison).
    #[arg(long, default_value = "auto", value_parser = ["auto", "off"])]
    audit_pacing: String,
    /// Scheduling policy of the threads other than the dp cores (audit
    /// writer and its sync and syslog threads, auth worker, control):
    /// normal, or idle (SCHED_IDLE: they run only when a dp core on their
    /// CPU does not want it, which suits adaptive cores sharing their CPU;
    /// a busy core never leaves them any).
    #[arg(long, default_value = "normal", value_parser = ["normal", "idle"])]
    housekeeping_sched: String,
    /// One decrypted pcapng per session under DIR/pcap (on), or none (off:
    /// the journal still carries every request and response with its
    /// payload, and the captures' share of the writer's work goes away).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    audit_pcap: String,
    /// Forward audit records to an RFC 5424 syslog collector over TLS (host:port).
    #[arg(long)]
    syslog: Option<String>,
    /// CA the syslog collector's certificate chains to.
    #[arg(long, requires = "syslog")]
    syslog_ca: Option<PathBuf>,
    /// Name in the syslog collector's certificate (default: its host).
    #[arg(long, requires = "syslog")]
    syslog_name: Option<String>,
    /// Management socket for `accessgate ctl`.
    #[arg(long, default_value = DEFAULT_CTL)]
    ctl: PathBuf,
    /// Log the counters every N seconds (0: only at exit).
    #[arg(long, default_value_t = 0)]
    stats_every: u64,
    /// TCP buffer per socket in bytes (a session has four).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1024..=1_048_576))]
    socket_buffer: u32,
    /// How long to wait for an asset to accept, in milliseconds.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    connect_timeout_ms: u64,
    /// How long the gate's TCP may hold a segment's ACK to send it with the
    /// answer, in milliseconds (0: ACK every segment at once, one more frame
    /// per request each way).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=200))]
    tcp_ack_delay_ms: u64,
}

pub fn run(args: &RunArgs) -> ExitCode {
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accessgate run: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: &RunArgs) -> Result<(), String> {
    // First: a SIGHUP or SIGTERM while the gate starts (loading the audit
    // trail can take a while) is a reload or a stop in its turn, not the
    // default action that kills the process mid-start (found by a review).
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal handler: {e}"))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .map_err(|e| format!("signal handler: {e}"))?;
    let config =
        control::config::load(&args.config).map_err(|e| format!("{} has errors:\n{e}", args.config.display()))?;
    check_backend(args.backend, &args.cores)?;
    let available: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
    for c in &args.cores {
        if !available.contains(c) {
            return Err(format!("--cores: CPU {c} is not available to this process (available: {available:?})"));
        }
    }
    let writer_shares_dp_cpu = place_housekeeping(&available, &args.cores, args.idle);
    // Set on this thread before it spawns the others, which inherit it; each
    // dp thread sets the normal policy back for itself.
    let idle_housekeeping = idle_housekeeping(&args.housekeeping_sched, args.idle)?;
    if idle_housekeeping {
        // The dp threads inherit SCHED_IDLE and must be able to leave it
        // (CAP_SYS_NICE, or RLIMIT_NICE 20): tried first on a thread of its
        // own, so a gate that could not is refused here, not run with its
        // cores under SCHED_IDLE.
        std::thread::spawn(|| io::set_thread_sched_idle(true).and_then(|()| io::set_thread_sched_idle(false)))
            .join()
            .map_err(|_| "--housekeeping-sched idle: the policy probe panicked".to_string())?
            .map_err(|e| {
                format!("--housekeeping-sched idle: a thread cannot leave SCHED_IDLE here ({e}); it needs CAP_SYS_NICE")
            })?;
        io::set_thread_sched_idle(true).map_err(|e| format!("--housekeeping-sched idle: {e}"))?;
        log::info!("audit writer, auth worker and control under SCHED_IDLE");
    }
    let mut control = Control::new(Some(args.config.clone()), &config);
    control
        .set_tls(TlsSource {
            certificate: args.cert.clone(),
            key: args.key.clone(),
            client_ca: args.client_ca.clone(),
            tls12: args.tls12,
        })
        .map_err(|e| format!("TLS: {e}"))?;
    let users = UserDb::load(&args.secrets).map_err(|e| format!("{e}"))?;
    log::info!("{} user(s) from {}", users.len(), args.secrets.display());
    let steps = args.totp_steps.clone().unwrap_or_else(|| {
        let mut p = args.secrets.clone().into_os_string();
        p.push(".totp-steps");
        PathBuf::from(p)
    });
    let authenticator = Arc::new(Authenticator::new(users).with_step_file(&steps)?);
    let audit_cfg = audit_config(args);
    let queues: Vec<Arc<AuditQueue>> =
        args.cores.iter().map(|_| Arc::new(AuditQueue::new(audit_cfg.queue_capacity))).collect();
    let paced_on = paced_cpu(writer_shares_dp_cpu, args.idle, &args.audit_pacing, &args.cores);
    if let Some(cpu) = paced_on {
        log::info!("the audit writer shares dp CPU {cpu}: it writes when that core has nothing to do");
    }
    let audit =
        control::audit::spawn_paced(audit_cfg.clone(), queues.clone(), Arc::new(AtomicBool::new(false)), paced_on)
            .map_err(|e| format!("audit trail in {}: {e}", args.audit_dir.display()))?;
    log::info!("audit trail in {} (on failure: {})", args.audit_dir.display(), args.audit_on_failure);
    control.set_audit(audit.sink());
    control.watch_audit(queues.clone(), audit.health_flag(), audit.status().clone());
    let parker = Parker::new();
    let mut channels = Vec::new();
    let mut drop_logs = Vec::new();
    let mut denied = DeniedFlows::new(Duration::from_secs(5), 4096);
    let sink = audit.sink();
    let opts = CoreOptions {
        idle: args.idle,
        socket_buffer: args.socket_buffer as usize,
        connect_timeout: smoltcp::time::Duration::from_millis(args.connect_timeout_ms),
        ack_delay: (args.tcp_ack_delay_ms > 0).then(|| smoltcp::time::Duration::from_millis(args.tcp_ack_delay_ms)),
        ..CoreOptions::default()
    };

    let mut threads = Vec::new();
    for (k, &cpu) in args.cores.iter().enumerate() {
        let mut ports: Vec<Box<dyn FramePort>> = Vec::new();
        for ifname in &config.interfaces {
            let port = io::open(args.backend, ifname, k as u32).map_err(|e| format!("{ifname} queue {k}: {e}"))?;
            log::info!("core {k}: {} on {ifname} queue {k} (mac {})", backend_name(args.backend), mac_text(port.mac()));
            ports.push(port);
        }
        let (counters, events) = control.add_core();
        let channel = AuthChannel::new(Some(parker.unparker().clone())).map_err(|e| e.to_string())?;
        channels.push(channel.clone());
        let tap = AuditTap {
            queue: queues[k].clone(),
            healthy: audit.health_flag(),
            terminate_on_failure: audit.on_failure() == OnFailure::Terminate,
            pacer: if k == 0 { audit.pacer() } else { None },
        };
        let drops = Arc::new(ArrayQueue::new(DROP_LOG));
        drop_logs.push(drops.clone());
        let links = CoreLinks { counters, events, auth: channel, audit: Some(tap), drops: Some(drops) };
        let mut core = Core::new(k, ports, control.shared(), links, opts).map_err(|e| e.to_string())?;
        let stop = stop.clone();
        let t = std::thread::Builder::new()
            .name(format!("dp{k}"))
            .spawn(move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                    log::warn!("core {k}: could not pin to CPU {cpu}");
                }
                if idle_housekeeping {
                    if let Err(e) = io::set_thread_sched_idle(false) {
                        log::error!("core {k}: could not leave SCHED_IDLE (it runs only when its CPU is idle): {e}");
                    }
                }
                core.run(&stop);
            })
            .map_err(|e| format!("spawning core {k}: {e}"))?;
        threads.push(t);
    }
    control.set_authenticator(authenticator.clone(), Some(args.secrets.clone()));
    let worker = AuthWorker::new(authenticator, control.shared(), channels).with_audit(audit.sink());
    let worker_stop = stop.clone();
    threads.push(
        std::thread::Builder::new()
            .name("auth".into())
            .spawn(move || worker.run(parker, worker_stop))
            .map_err(|e| format!("spawning the auth worker: {e}"))?,
    );
    let api = Api::bind(&args.ctl).map_err(|e| format!("management socket {}: {e}", args.ctl.display()))?;
    let snap = control.snapshot();
    log::info!(
        "gate up: {} segment(s), {} endpoint(s), {} core(s) on CPUs {:?}, idle {}, ctl {}",
        snap.segments.len(),
        snap.endpoints.len(),
        args.cores.len(),
        args.cores,
        args.idle,
        args.ctl.display()
    );
    for e in &snap.endpoints {
        log::info!("endpoint {} -> {} {} ({})", e.overlay, e.asset, e.underlay, e.protocol.as_str());
    }

    let mut watch = match control::watch::FileWatch::new(&args.config) {
        Ok(w) => Some(w),
        Err(e) => {
            log::warn!("not watching {} for changes ({e}); reload with SIGHUP or ctl reload", args.config.display());
            None
        }
    };
    let mut last_stats = Instant::now();
    let mut failed = None;
    while !stop.load(Ordering::Relaxed) {
        // A dp core ends only when told to, or when starting over after a
        // panic panicked too: then its share of the traffic goes
        // unanswered while the gate looks up. The gate stops instead (exit
        // status 1), so its supervisor starts it afresh.
        if let Some(k) = ended_unasked(&threads[..args.cores.len()], &stop) {
            let reason = format!("core {k} stopped after a panic it could not recover from (see the log)");
            log::error!("{reason}; the gate stops");
            failed = Some(reason);
            stop.store(true, Ordering::Relaxed);
            break;
        }
        control.drain_events(|ev| log::info!("{}", control::describe(ev)));
        control.refresh_policy(control::identity::unix_now());
        drain_denied(&drop_logs, &mut denied);
        denied.flush(&sink, Instant::now(), false);
        if watch.as_mut().is_some_and(|w| w.changed()) {
            log_reload(&format!("{} changed", args.config.display()), control.reload());
        }
        if reload.swap(false, Ordering::Relaxed) {
            log_reload("SIGHUP", control.reload());
        }
        api.serve_pending(&mut control);
        if args.stats_every > 0 && last_stats.elapsed() >= Duration::from_secs(args.stats_every) {
            last_stats = Instant::now();
            log::info!("counters: {}", pairs(&control));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    log::info!("stopping");
    for t in threads {
        let _ = t.join();
    }
    // Nobody gives the writer turns any more.
    if let Some(p) = audit.pacer() {
        p.close();
    }
    // The cores and the auth worker are done: everything they queued is
    // written before the audit writer stops, the flows they denied since
    // the loop's last pass too (found by a review: those were lost).
    drain_denied(&drop_logs, &mut denied);
    denied.flush(&sink, Instant::now(), true);
    audit.shutdown();
    control.drain_events(|ev| log::info!("{}", control::describe(ev)));
    log::info!("final counters: {}", pairs(&control));
    failed.map_or(Ok(()), Err)
}

/// The first of `cores` whose thread has ended though nobody set `stop`
/// (read after the threads, so a stop that ended them since is seen).
fn ended_unasked<T>(cores: &[std::thread::JoinHandle<T>], stop: &AtomicBool) -> Option<usize> {
    let ended = cores.iter().position(|t| t.is_finished());
    ended.filter(|_| !stop.load(Ordering::Relaxed))
}

/// Where the kernel lets unbound workqueue workers run (page writeback of
/// the audit trail among them).
const WORKQUEUE_CPUMASK: &str = "/sys/devices/virtual/workqueue/cpumask";

/// The audit writer's settings from the `--audit-*` and `--syslog*` flags.
pub(crate) fn audit_config(args: &RunArgs) -> AuditConfig {
    AuditConfig {
        dir: args.audit_dir.clone(),
        on_failure: if args.audit_on_failure == "terminate" { OnFailure::Terminate } else { OnFailure::Hold },
        fsync_interval_ms: args.audit_fsync_ms,
        pcap: args.audit_pcap == "on",
        syslog: args.syslog.as_ref().map(|address| SyslogConfig {
            address: address.clone(),
            ca_file: args.syslog_ca.clone().unwrap_or_default(),
            server_name: args.syslog_name.clone(),
            ..SyslogConfig::default()
        }),
        ..AuditConfig::default()
    }
}

/// Keeps the gate's other threads (audit writer, auth worker, control and
/// management) off the dp CPUs when the process has another CPU for them:
/// they are all spawned from this thread after this, and inherit its CPU
/// set (each dp thread pins itself to its own CPU). Logs what a busy core
/// will still share.
///
/// Returns whether the other threads share the dp CPUs after all (then the
/// audit writer takes turns with the cores: `audit::Pacer`).
fn place_housekeeping(available: &[usize], cores: &[usize], idle: IdleMode) -> bool {
    let mask = std::fs::read_to_string(WORKQUEUE_CPUMASK).ok();
    let plan = housekeeping_plan(available, cores, idle, mask.as_deref());
    let mut shared = plan.others.is_empty();
    if !shared {
        match io::set_thread_cpus(&plan.others) {
            Ok(()) => log::info!("audit writer, auth worker and control on CPU(s) {:?}", plan.others),
            Err(e) => {
                log::warn!("could not keep the audit writer and auth worker off the dp CPUs: {e}");
                shared = true;
            }
        }
    }
    for w in &plan.warnings {
        log::warn!("{w}");
    }
    shared
}

/// The dp CPU whose core the audit writer takes turns with, if any. A busy
/// core never sleeps, so a writer sharing its CPU runs in the middle of its
/// work unless they take turns. A core in adaptive mode sleeps when idle,
/// which is the writer's turn anyway (and a sleeping core gives none).
/// With several dp CPUs the writer takes turns with the first one's core.
fn paced_cpu(shares_dp_cpu: bool, idle: IdleMode, pacing: &str, cores: &[usize]) -> Option<usize> {
    (shares_dp_cpu && idle == IdleMode::Busy && pacing == "auto").then(|| cores.first().copied()).flatten()
}

/// Takes the flows the cores denied into `denied`'s counts.
fn drain_denied(drop_logs: &[Arc<ArrayQueue<dataplane::core::DroppedFlow>>], denied: &mut DeniedFlows) {
    for q in drop_logs {
        while let Some((src, dst, port, reason)) = q.pop() {
            denied.add(src.into(), dst.into(), port, reason.as_str(), 1);
        }
    }
}

/// Logs what a reload did, `why` naming its cause.
fn log_reload(why: &str, result: Result<u64, control::ReloadError>) {
    match result {
        Ok(g) => log::info!("{why}: config generation {g} in force"),
        Err(e @ control::ReloadError::Partial { .. }) => log::error!("{why}: {e}"),
        Err(e) => log::error!("{why}: reload refused, running config kept:\n{e}"),
    }
}

/// Whether the housekeeping threads run SCHED_IDLE (`--housekeeping-sched`).
fn idle_housekeeping(sched: &str, idle: IdleMode) -> Result<bool, String> {
    match (sched, idle) {
        ("idle", IdleMode::Busy) => {
            Err("--housekeeping-sched idle with --idle busy: a busy core never leaves the audit writer a turn".into())
        }
        (s, _) => Ok(s == "idle"),
    }
}

/// Whether the backend can serve these cores.
fn check_backend(backend: Backend, cores: &[usize]) -> Result<(), String> {
    match backend {
        Backend::Memory => Err("the memory backend has no wire; use `accessgate demo`".into()),
        // Each core would open its own AF_PACKET socket on every interface
        // and receive every frame: two cores answer each ARP and SYN, and
        // one resets the other's connections.
        Backend::Packet if cores.len() > 1 => Err(format!(
            "--backend packet serves one core (each would receive every frame); got --cores {}: use one CPU, or --backend xsk for one queue per core",
            cores.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
        )),
        _ => Ok(()),
    }
}

/// What [`place_housekeeping`] does: the CPUs for the other threads (none:
/// they share the dp CPUs), and the warnings for a busy core.
#[derive(Debug, PartialEq, Eq)]
struct Housekeeping {
    others: Vec<usize>,
    warnings: Vec<String>,
}

fn housekeeping_plan(available: &[usize], cores: &[usize], idle: IdleMode, workqueue: Option<&str>) -> Housekeeping {
    let others: Vec<usize> = available.iter().copied().filter(|c| !cores.contains(c)).collect();
    let mut warnings = Vec::new();
    if idle == IdleMode::Busy {
        if others.is_empty() {
            warnings.push(format!(
                "--idle busy: no CPU but the dp CPU(s) {cores:?} is available, so the audit writer and the auth \
                 worker share the polling core's CPU (the writer takes turns with it, unless --audit-pacing off); \
                 give the process another CPU (docs/operations.md)"
            ));
        }
        let shared: Vec<usize> = match workqueue.map(io::parse_cpu_mask) {
            Some(Some(wq)) => cores.iter().copied().filter(|c| wq.contains(c)).collect(),
            _ => Vec::new(),
        };
        if !shared.is_empty() {
            warnings.push(format!(
                "--idle busy: kernel workers (audit trail writeback) may run on dp CPU(s) {shared:?}: {WORKQUEUE_CPUMASK} \
                 is {}; leave the dp CPUs out of it (docs/operations.md)",
                workqueue.unwrap_or_default().trim()
            ));
        }
    }
    Housekeeping { others, warnings }
}

fn pairs(control: &Control) -> String {
    control
        .totals()
        .to_pairs()
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Xsk => "AF_XDP",
        Backend::Packet => "AF_PACKET",
        Backend::Memory => "memory",
    }
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AF_PACKET has no per-core queue: more than one core is refused
    /// before anything starts (found by a review: each core received every
    /// frame, and connections were reset by the other core).
    #[test]
    fn idle_housekeeping_needs_cores_that_sleep() {
        assert_eq!(idle_housekeeping("normal", IdleMode::Busy), Ok(false));
        assert_eq!(idle_housekeeping("idle", IdleMode::default()), Ok(true));
        assert!(idle_housekeeping("idle", IdleMode::Busy).unwrap_err().contains("never leaves"));
    }

    #[test]
    fn the_packet_backend_serves_one_core() {
        assert_eq!(check_backend(Backend::Packet, &[0]), Ok(()));
        let e = check_backend(Backend::Packet, &[0, 1]).unwrap_err();
        assert!(e.contains("--backend packet serves one core") && e.contains("--cores 0,1"), "{e}");
        assert_eq!(check_backend(Backend::Xsk, &[0, 1]), Ok(()));
        assert!(check_backend(Backend::Memory, &[0]).unwrap_err().contains("accessgate demo"));
    }

    const ADAPTIVE: IdleMode = IdleMode::Adaptive { spin_us: 50, share_pct: 5 };

    #[test]
    fn a_core_that_ended_unasked_is_found_and_a_stopped_one_is_not() {
        // Core 0 runs until told to stop, as `Core::run` does; core 1 ends
        // by itself, as `Core::run` does when starting over after a panic
        // fails (dataplane: `a_core_that_cannot_start_over_ends_its_loop`).
        let stop = Arc::new(AtomicBool::new(false));
        let running = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let ending = std::thread::spawn(move || {
            let _ = wait.recv();
        });
        let cores = [running, ending];
        assert_eq!(ended_unasked(&cores, &stop), None, "both still run");
        go.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cores[1].is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(ended_unasked(&cores, &stop), Some(1));
        // Once a stop is asked for (a signal, or this check itself), an
        // ended core is no failure.
        stop.store(true, Ordering::Relaxed);
        assert_eq!(ended_unasked(&cores, &stop), None);
        for t in cores {
            t.join().unwrap();
        }
    }

    #[test]
    fn other_threads_go_to_the_cpus_the_dp_cores_leave() {
        let plan = housekeeping_plan(&[0, 1, 2, 3], &[2, 3], IdleMode::Busy, Some("3\n"));
        assert_eq!(plan, Housekeeping { others: vec![0, 1], warnings: vec![] });
        assert_eq!(housekeeping_plan(&[0, 1], &[1], ADAPTIVE, None).others, vec![0]);
    }

    #[test]
    fn only_a_busy_core_on_a_shared_cpu_takes_turns_with_the_writer() {
        assert_eq!(paced_cpu(true, IdleMode::Busy, "auto", &[3, 1]), Some(3));
        assert_eq!(paced_cpu(false, IdleMode::Busy, "auto", &[3]), None, "the writer has a CPU of its own");
        assert_eq!(paced_cpu(true, ADAPTIVE, "auto", &[3]), None, "an adaptive core sleeps when idle");
        assert_eq!(paced_cpu(true, IdleMode::Busy, "off", &[3]), None);
    }

    #[test]
    fn a_busy_core_that_shares_its_cpu_is_named() {
        // Confined to the dp CPU, with kernel workers allowed on it.
        let plan = housekeeping_plan(&[1], &[1], IdleMode::Busy, Some("3\n"));
        assert!(plan.others.is_empty());
        assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
        assert!(plan.warnings[0].contains("share the polling core's CPU"));
        assert!(plan.warnings[1].contains("dp CPU(s) [1]") && plan.warnings[1].contains(" is 3;"));
        // An adaptive core sleeps when idle: nothing to say.
        assert!(housekeeping_plan(&[1], &[1], ADAPTIVE, Some("3")).warnings.is_empty());
        // No mask to read, or one that is not a mask: no guess.
        assert_eq!(housekeeping_plan(&[0, 1], &[1], IdleMode::Busy, None).warnings, Vec::<String>::new());
        assert!(housekeeping_plan(&[0, 1], &[1], IdleMode::Busy, Some("zz")).warnings.is_empty());
    }
}
