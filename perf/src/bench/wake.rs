//! The machine's wake-up floor: how late a thread that sleeps on one CPU
//! runs after a thread on another CPU wakes it.
//!
//! Every proxy in `scripts/bench` runs on a CPU other than the load
//! generator's and the PLC's, so each request and each answer crosses CPUs
//! and wakes a sleeping thread there (the busy gate itself never sleeps,
//! the client and the PLC do). `direct` never crosses: its path runs in the
//! sender's context on one CPU. On a virtual machine whose idle vCPUs halt,
//! a cross-CPU wake-up is an interrupt to a halted vCPU that the host must
//! schedule: this measures that cost, the floor under every proxy's tail.
//!
//! A waker pinned to `--from` stores the time and unparks a sleeper pinned to
//! `--to` every `--gap-us`; the sleeper records now − stored time in an
//! HdrHistogram, for every wake-up it finds when it runs (one that came
//! while it was late counts too, from its own time: no omission). `--spin` keeps the waker's CPU busy between wake-ups (like
//! a busy-polling gate) instead of sleeping.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{arg, build_profile, list_or_dash, procfs};

#[derive(clap::Args, Debug)]
pub struct WakeArgs {
    /// Wake-ups to measure.
    #[arg(long, default_value_t = 20_000)]
    samples: u64,
    /// Time between wake-ups (µs): the sleeper is asleep again by then.
    #[arg(long, default_value_t = 500)]
    gap_us: u64,
    /// CPU of the waker.
    #[arg(long, default_value_t = 1)]
    from: usize,
    /// CPU of the sleeper.
    #[arg(long, default_value_t = 0)]
    to: usize,
    /// The waker busy-waits between wake-ups (its CPU never idles).
    #[arg(long)]
    spin: bool,
}

/// Wake-up times kept for a late sleeper.
const RING: usize = 4096;

const PERCENTILES: [(&str, f64); 5] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999)];

/// Runs the measurement and prints it.
///
/// # Errors
/// Bad arguments, or a CPU this process may not use.
pub fn wake(args: &WakeArgs) -> Result<(), String> {
    arg("samples", (100..=10_000_000).contains(&args.samples), "in 100..=10000000")?;
    arg("gap-us", (50..=1_000_000).contains(&args.gap_us), "in 50..=1000000")?;
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    for (name, cpu) in [("from", args.from), ("to", args.to)] {
        arg(name, cpus.iter().any(|c| c.id == cpu), "a CPU this process may run on")?;
    }
    let base = Instant::now();
    let stamps: Arc<[AtomicU64]> = (0..RING).map(|_| AtomicU64::new(0)).collect();
    let seq = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (to, samples) = (args.to, args.samples);
    let sleeper = {
        let (stamps, seq, done) = (stamps.clone(), seq.clone(), done.clone());
        std::thread::Builder::new()
            .name("sleeper".into())
            .spawn(move || -> Result<Histogram<u64>, String> {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: to }) {
                    return Err(format!("--to {to}: cannot pin to it"));
                }
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
                let mut seen = 0;
                while seen < samples && !done.load(Ordering::Acquire) {
                    // park() may return early: sleep again until the next wake-up.
                    std::thread::park_timeout(Duration::from_millis(100));
                    let s = seq.load(Ordering::Acquire);
                    let now = base.elapsed().as_nanos() as u64;
                    // The waker is at most RING wake-ups ahead: it waits a
                    // gap of ≥ 50 µs between them, the sleeper is never that late.
                    for k in seen + 1..=s {
                        let at = stamps[(k % RING as u64) as usize].load(Ordering::Acquire);
                        let _ = hist.record(now.saturating_sub(at).max(1));
                    }
                    seen = seen.max(s);
                }
                Ok(hist)
            })
            .map_err(|e| format!("spawn: {e}"))?
    };
    if !core_affinity::set_for_current(core_affinity::CoreId { id: args.from }) {
        return Err(format!("--from {}: cannot pin to it", args.from));
    }
    let mut measured = vec![args.from, args.to];
    measured.dedup();
    let ticks_before = procfs::cpu_ticks(&measured);
    let gap = Duration::from_micros(args.gap_us);
    let mut next = Instant::now() + gap;
    for i in 1..=args.samples {
        if args.spin {
            while Instant::now() < next {
                std::hint::spin_loop();
            }
        } else {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        stamps[(i % RING as u64) as usize].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        seq.store(i, Ordering::Release);
        sleeper.thread().unpark();
        next += gap;
    }
    std::thread::sleep(gap);
    done.store(true, Ordering::Release);
    sleeper.thread().unpark();
    let hist = sleeper.join().map_err(|_| "the sleeper panicked".to_string())??;
    // A wake-up is late by whatever the host took from either CPU meanwhile.
    let steal: Vec<String> = ticks_before
        .iter()
        .zip(procfs::cpu_ticks(&measured))
        .map(|(a, b)| format!("cpu{} {:.1}%", a.cpu, b.steal_percent_since(a)))
        .collect();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let list: Vec<String> = PERCENTILES.iter().map(|(n, q)| format!("{n} {:.1}", us(*q))).collect();
    println!(
        "accessgate-perf wake ({}): CPU {} -> CPU {}, waker {}, every {} µs: {}  max {:.1} µs  ({} wake-ups; host steal {})",
        build_profile(),
        args.from,
        args.to,
        if args.spin { "spinning" } else { "sleeping" },
        args.gap_us,
        list.join("  "),
        hist.max() as f64 / 1000.0,
        hist.len(),
        list_or_dash(&steal)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(samples: u64, gap_us: u64, from: usize, to: usize) -> WakeArgs {
        WakeArgs { samples, gap_us, from, to, spin: false }
    }

    #[test]
    fn measures_on_one_cpu_and_refuses_bad_arguments() {
        assert_eq!(wake(&args(200, 100, 0, 0)), Ok(()));
        assert!(wake(&args(10, 100, 0, 0)).unwrap_err().contains("--samples"));
        assert!(wake(&args(200, 10, 0, 0)).unwrap_err().contains("--gap-us"));
        assert!(wake(&args(200, 100, 0, 100_000)).unwrap_err().contains("--to"));
        assert!(wake(&args(200, 100, 100_000, 0)).unwrap_err().contains("--from"));
    }
}
