//! What reloads and the audit trail cost a request: the proxy path of the
//! in-memory lab (TLS, inspection, policy) measured three ways in the same
//! run: as is, with 10 policy generations published per second, and with
//! every request recorded to the audit trail (JSONL chain + pcapng, the
//! writer on its own thread, fsync every 50 ms). Busy polling on one thread
//! (gate, user host and PLC stepped in turn); latency is per request from
//! send to complete response, at step granularity.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use control::audit::AuditConfig;
use dataplane::audit::{AuditQueue, AuditTap};

use super::proxy::{self, Load, ProxyResult, Variant};
use super::{build_profile, median, si};

const LAB_CONFIG: &str = include_str!("../../../config/lab.toml");

#[derive(clap::Args, Debug)]
pub struct LatencyArgs {
    /// Seconds per measurement (1..=60).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Runs of each variant (interleaved); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// User sessions.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Requests in flight per session.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Policy generations per second in the reload variant.
    #[arg(long, default_value_t = 10.0)]
    reload_hz: f64,
}

struct Row {
    name: &'static str,
    results: Vec<ProxyResult>,
}

/// Runs the comparison and prints it.
///
/// # Errors
/// A measurement failed.
pub fn latency(args: &LatencyArgs) -> Result<(), String> {
    let seconds = Duration::from_secs_f64(args.seconds.clamp(1.0, 60.0));
    let config = control::config::parse("config/lab.toml", LAB_CONFIG).map_err(|e| e.to_string())?;
    let load = Load { connections: args.connections.max(1), depth: args.depth.max(1), registers: 10 };
    let warmup = Duration::from_millis(500);
    let mut rows = vec![
        Row { name: "baseline", results: Vec::new() },
        Row { name: "reloads", results: Vec::new() },
        Row { name: "audit on", results: Vec::new() },
    ];
    let dir = std::env::temp_dir().join(format!("ag-bench-audit-{}", std::process::id()));
    for _ in 0..args.runs.max(1) {
        rows[0].results.push(proxy::run_with(&config, load, warmup, seconds, Variant::default())?);
        rows[1].results.push(proxy::run_with(
            &config,
            load,
            warmup,
            seconds,
            Variant { reload_hz: args.reload_hz, audit: None },
        )?);
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = AuditConfig { dir: dir.clone(), ..AuditConfig::default() };
        let queue = Arc::new(AuditQueue::new(cfg.queue_capacity));
        let handle = control::audit::spawn(cfg, vec![queue.clone()], Arc::new(AtomicBool::new(false)))
            .map_err(|e| e.to_string())?;
        let tap = AuditTap { queue, healthy: handle.health_flag(), terminate_on_failure: false, pacer: None };
        let r = proxy::run_with(&config, load, warmup, seconds, Variant { reload_hz: 0.0, audit: Some(tap) });
        handle.shutdown();
        rows[2].results.push(r?);
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "accessgate-perf latency: {} build, busy polling, one thread; {} sessions x {} in flight, {} s x {} runs (medians)",
        build_profile(),
        load.connections,
        load.depth,
        seconds.as_secs_f64(),
        args.runs.max(1)
    );
    if build_profile() != "release" {
        println!("WARNING: not a release build; numbers are meaningless");
    }
    println!(
        "{:<10} {:>12} {:>16} {:>10} {:>10} {:>10} {:>12}",
        "variant", "req/s wall", "req/s gate-time", "p50 us", "p99 us", "max us", "p99 vs base"
    );
    let base_p99 = median(&rows[0].results.iter().map(|r| r.latency_p99_us).collect::<Vec<_>>());
    for row in &rows {
        let m = |f: fn(&ProxyResult) -> f64| median(&row.results.iter().map(f).collect::<Vec<_>>());
        let p99 = m(|r| r.latency_p99_us);
        println!(
            "{:<10} {:>12} {:>16} {:>10.0} {:>10.0} {:>10.0} {:>11.2}x",
            row.name,
            si(m(|r| r.requests as f64 / r.wall.as_secs_f64())),
            si(m(|r| r.requests as f64 / r.gate.as_secs_f64())),
            m(|r| r.latency_p50_us),
            p99,
            m(|r| r.latency_max_us),
            p99 / base_p99
        );
    }
    Ok(())
}
