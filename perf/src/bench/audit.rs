//! `accessgate-perf audit`: records per second the audit writer sustains.
//!
//! Producer threads play dp cores: each pushes Modbus sessions (open, then
//! request/response pairs, then close) on its own `AuditQueue` as fast as
//! the queue takes them (a full queue is retried, as a back-pressured core
//! would). The writer drains into a real directory with its real settings
//! (hash chain, pcapng per session, fsync every `--fsync-ms`). The rate is
//! the writer's sealed-record count over the measurement window, i.e. what
//! reached the journal, not what producers offered.
//!
//! `--sessions N --rate R` plays a gate under load instead: each producer
//! keeps N sessions open and sends their requests in turn, all producers
//! together R requests (2R records) a second, so the writer wakes to small
//! batches spread over N capture files, as it does behind the dp cores.
//! Then the figure to read is the writer's CPU per record at that rate.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::audit::{self, AuditConfig, AuditQueue, AuditRecord};
use dataplane::audit::{unix_micros, Decoded, Name, Note, SessionOpen, Text, Verdict};

use super::procfs::{thread_ticks, USER_HZ};
use super::{build_profile, si};

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Seconds measured (after the warmup; at most 60).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of warmup.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Producer threads (one queue each, like dp cores).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Requests per session (each with its response).
    #[arg(long, default_value_t = 100)]
    requests: u32,
    /// Sessions each producer keeps open at once (requests go to them in
    /// turn; each has its own capture file).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    sessions: u32,
    /// Requests per second offered by all producers together (0: as fast as
    /// the queues take them).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Batched fsync interval of the writer.
    #[arg(long, default_value_t = 50)]
    fsync_ms: u64,
    /// Skip the per-session pcapng files.
    #[arg(long)]
    no_pcap: bool,
    /// Audit directory (default: a fresh one under the temp dir, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn audit(args: &AuditArgs) -> Result<(), String> {
    if build_profile() != "release" {
        eprintln!("WARNING: debug build: these numbers mean nothing; use --release");
    }
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err(format!("--rate {}: must be a number of requests per second, 0 or more", args.rate));
    }
    let seconds = args.seconds.clamp(0.1, 60.0);
    let temp = args.dir.is_none();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("accessgate-perf-audit-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir);
    let queues: Vec<Arc<AuditQueue>> =
        (0..args.producers.max(1)).map(|_| Arc::new(AuditQueue::new(dataplane::audit::DEFAULT_CAPACITY))).collect();
    let cfg = AuditConfig {
        dir: dir.clone(),
        fsync_interval_ms: args.fsync_ms,
        pcap: !args.no_pcap,
        ..AuditConfig::default()
    };
    let handle = audit::spawn(cfg, queues.clone(), Arc::new(AtomicBool::new(false))).map_err(|e| e.to_string())?;
    let status = handle.status().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = queues
        .iter()
        .enumerate()
        .map(|(k, q)| {
            let (q, stop) = (q.clone(), stop.clone());
            let load = Load {
                requests: args.requests,
                sessions: args.sessions.max(1),
                rate: args.rate / args.producers.max(1) as f64,
            };
            std::thread::spawn(move || produce(k as u64, &q, &stop, &load))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.warmup.clamp(0.0, 10.0)));
    let (s0, t0, c0) = (status.seq.load(Ordering::Relaxed), Instant::now(), writer_ticks());
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (s1, elapsed, c1) = (status.seq.load(Ordering::Relaxed), t0.elapsed(), writer_ticks());
    let synced = status.synced_seq.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let offered: u64 = producers.into_iter().map(|p| p.join().unwrap_or(0)).sum();
    let full: u64 = queues.iter().map(|q| q.full()).sum();
    handle.shutdown();
    let bytes: u64 = audit::writer::journal_files(&dir)
        .map_err(|e| e.to_string())?
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let total = status.seq.load(Ordering::Relaxed).max(1);
    let rate = (s1 - s0) as f64 / elapsed.as_secs_f64();
    let pace = if args.rate > 0.0 { format!("{}req/s offered", si(args.rate)) } else { "flat out".into() };
    println!(
        "audit writer ({}): {} records/s sealed, chained, written and fsynced every {} ms{}; {} producer(s) x {} open session(s), {} requests/session, {pace}",
        build_profile(),
        si(rate),
        args.fsync_ms,
        if args.no_pcap { ", no pcap" } else { ", pcapng per session" },
        args.producers.max(1),
        args.sessions.max(1),
        args.requests
    );
    println!(
        "  {} records in total, {:.0} bytes/record in the journal ({}B/s), synced seq {synced} at the end of the window; {} pushes offered, {} refused by full queues (back-pressure)",
        total,
        bytes as f64 / total as f64,
        si(rate * bytes as f64 / total as f64),
        offered,
        full
    );
    // CPU per record is steadier than the rate on a shared machine: a
    // slower host stretches both the window's records and its CPU time.
    let sealed = (s1 - s0).max(1) as f64;
    let us = |ticks: u64| ticks as f64 / USER_HZ * 1e6 / sealed;
    println!(
        "  writer CPU per record: {:.2} µs (the `audit` thread, which seals and writes), {:.2} µs with `audit-sync` (the commits)",
        us(c1.0 - c0.0),
        us((c1.0 + c1.1) - (c0.0 + c0.1)),
    );
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// CPU ticks so far of this process's `audit` and `audit-sync` threads.
fn writer_ticks() -> (u64, u64) {
    let threads = thread_ticks(std::process::id());
    let of = |name: &str| threads.iter().filter(|(n, _)| n == name).map(|(_, t)| t).sum();
    (of("audit"), of("audit-sync"))
}

/// What one producer offers.
struct Load {
    requests: u32,
    /// Open at once.
    sessions: u32,
    /// Requests per second (0: flat out).
    rate: f64,
}

/// Pushes sessions until `stop`; returns the records pushed.
fn produce(core: u64, q: &AuditQueue, stop: &AtomicBool, load: &Load) -> u64 {
    let mut pushed = 0;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut pace = || {
        // Requests due by now are sent at once, then the producer naps, as
        // a dp core's requests come in bursts between its polls.
        sent += 1;
        if load.rate > 0.0 {
            let due = Duration::from_secs_f64(sent as f64 / load.rate);
            let ahead = due.saturating_sub(start.elapsed());
            if ahead > Duration::from_micros(200) {
                std::thread::sleep(ahead);
            }
        }
        !stop.load(Ordering::Relaxed)
    };
    let mut push = |mut rec: AuditRecord| {
        while let Err(back) = q.try_push(rec) {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            rec = back;
            // Leave the CPU to the writer (a dp core would poll its NIC).
            std::thread::sleep(Duration::from_micros(50));
        }
        pushed += 1;
        true
    };
    let read = [0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10];
    let decoded = Decoded::modbus(&read).unwrap_or_default();
    let mut response = [0u8; 29];
    response[..9].copy_from_slice(&[0, 1, 0, 0, 0, 23, 1, 3, 20]);
    let open_one = |id: u64| {
        let open = SessionOpen {
            user: Name::new("bench"),
            roles: Note::new("operator"),
            client: "198.18.0.2:40000".parse().unwrap_or(std::net::SocketAddrV4::new(0.into(), 0)),
            endpoint: "100.64.3.7:802".parse().unwrap_or(std::net::SocketAddrV4::new(0.into(), 0)),
            asset_name: Name::new("plc-7"),
            asset: "198.19.3.7:502".parse().unwrap_or(std::net::SocketAddrV4::new(0.into(), 0)),
            protocol: Text::new("modbus"),
            tls_version: Text::new("TLSv1_3"),
            tls_cipher: Text::new("TLS13_AES_128_GCM_SHA256"),
            ticket: Name::EMPTY,
        };
        AuditRecord::session_open(id, unix_micros(), open)
    };
    // Generations of `sessions` sessions: all opened, their requests
    // interleaved, all closed.
    let per = u64::from(load.sessions);
    for generation in 0u64.. {
        let ids = (1..=per).map(|n| core << 48 | (generation * per + n));
        for id in ids.clone() {
            if !push(open_one(id)) {
                return pushed;
            }
        }
        for k in 1..=load.requests {
            for id in ids.clone() {
                let ts = unix_micros();
                if !push(AuditRecord::request(id, k, ts, decoded, Verdict::Allow, Some(0), "ops-read", None, &read))
                    || !push(AuditRecord::response(id, k, ts, 300, &response))
                    || !pace()
                {
                    return pushed;
                }
            }
        }
        for id in ids {
            if !push(AuditRecord::session_close(id, unix_micros(), "client_closed", None, 1200, 2900, 100_000)) {
                return pushed;
            }
        }
    }
    pushed
}
