//! `accessgate-perf audit`: records per second the audit writer sustains.
//!
//! Producer threads play dp cores: each pushes Modbus sessions (open, then
//! request/response pairs, then close) on its own `AuditQueue` as fast as
//! the queue takes them (a full queue is retried, as a back-pressured core
//! would). The writer drains into a real directory with its real settings
//! (hash chain, pcapng per session, fsync every `--fsync-ms`). The rate is
//! the writer's sealed-record count over the measurement window, i.e. what
//! reached the journal, not what producers offered.

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
            let (q, stop, requests) = (q.clone(), stop.clone(), args.requests);
            std::thread::spawn(move || produce(k as u64, &q, &stop, requests))
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
    println!(
        "audit writer ({}): {} records/s sealed, chained, written and fsynced every {} ms{}; {} producer(s), {} requests/session",
        build_profile(),
        si(rate),
        args.fsync_ms,
        if args.no_pcap { ", no pcap" } else { ", pcapng per session" },
        args.producers.max(1),
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

/// Pushes sessions until `stop`; returns the records pushed.
fn produce(core: u64, q: &AuditQueue, stop: &AtomicBool, requests: u32) -> u64 {
    let mut pushed = 0;
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
    for n in 1u64.. {
        let id = core << 48 | n;
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
        if !push(AuditRecord::session_open(id, unix_micros(), open)) {
            break;
        }
        for k in 1..=requests {
            let ts = unix_micros();
            if !push(AuditRecord::request(id, k, ts, decoded, Verdict::Allow, Some(0), "ops-read", None, &read))
                || !push(AuditRecord::response(id, k, ts, 300, &response))
            {
                return pushed;
            }
        }
        if !push(AuditRecord::session_close(id, unix_micros(), "client_closed", None, 1200, 2900, 100_000)) {
            break;
        }
    }
    pushed
}
