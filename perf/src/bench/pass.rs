//! What one dp pass costs when it carries a frame or two: the gate as it
//! runs at a few thousand requests a second, where every frame wakes the
//! core and is handled alone.
//!
//! The in-memory lab with `--sessions` TLS sessions open; one Modbus request
//! at a time, round robin over the sessions, so each of the gate's passes
//! sees what one frame brings (a request, an answer, an ACK). Between the
//! hosts' turn and the gate's, the cold variant writes `--evict-kib` of
//! memory, as the kernel's sleep and wake-up, the audit writer and the
//! receivers' softirq do on a real gate's CPU between two frames: the pass
//! then starts with its data out of the L1 and L2 caches. Hot and cold
//! requests alternate, so both see the same machine.
//!
//! Reported per request and per pass kind (by frames received in the pass):
//! gate time (inside `poll_once`), passes with work, and the pass times'
//! percentiles.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use dataplane::core::{CoreOptions, IdleMode};
use dataplane::counters::CoreCounters;
use hdrhistogram::Histogram;
use perf::memlab::MemLab;
use perf::sim::{read_holding, request};
use perf::tls_client::TlsClient;
use smoltcp::iface::SocketHandle;

use super::{arg, prepare};

const LAB_CONFIG: &str = include_str!("../../../config/lab.toml");

#[derive(clap::Args, Debug)]
pub struct PassArgs {
    /// TLS sessions open at the gate.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Requests measured per variant (hot and cold alternate).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Memory written before a cold pass, KiB (a multiple of the L2 cache
    /// clears it; 0 measures hot passes only).
    #[arg(long, default_value_t = 8192)]
    evict_kib: usize,
    /// Holding registers per read.
    #[arg(long, default_value_t = 10)]
    registers: u16,
    /// Pin the thread to this CPU.
    #[arg(long)]
    pin: Option<usize>,
}

/// What the passes of one variant did.
struct Tally {
    name: &'static str,
    requests: u64,
    gate: Duration,
    /// Pass times (ns) by frames received in the pass: 0, 1, 2 or more.
    by_rx: [Histogram<u64>; 3],
    /// Passes that found nothing to do.
    idle: Histogram<u64>,
    rx: u64,
    tx: u64,
}

impl Tally {
    fn new(name: &'static str) -> Result<Self, String> {
        let h = || Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).map_err(|e| e.to_string());
        Ok(Self { name, requests: 0, gate: Duration::ZERO, by_rx: [h()?, h()?, h()?], idle: h()?, rx: 0, tx: 0 })
    }

    fn passes(&self) -> u64 {
        self.by_rx.iter().map(Histogram::len).sum()
    }
}

struct Conn {
    handle: SocketHandle,
    client: TlsClient,
    tid: u16,
}

/// Runs the measurement and prints it.
///
/// # Errors
/// Bad arguments, the lab could not be built, or a request failed.
pub fn pass(args: &PassArgs) -> Result<(), String> {
    check(args)?;
    let profile = prepare(args.pin, "pass")?;
    let (hot, cold) = measure(args)?;
    print(args, profile, &hot, &cold);
    Ok(())
}

fn check(args: &PassArgs) -> Result<(), String> {
    arg("sessions", (1..=1000).contains(&args.sessions), "in 1..=1000")?;
    arg("requests", (100..=10_000_000).contains(&args.requests), "in 100..=10000000")?;
    arg("evict-kib", args.evict_kib <= 1 << 20, "at most 1048576")?;
    arg("registers", (1..=125).contains(&args.registers), "in 1..=125")
}

/// The hot and the cold variant's tallies.
fn measure(args: &PassArgs) -> Result<(Tally, Tally), String> {
    let config = control::config::parse("config/lab.toml (embedded)", LAB_CONFIG).map_err(|e| e.to_string())?;
    let opts = CoreOptions { idle: IdleMode::Busy, ..CoreOptions::default() };
    let mut lab = MemLab::new(&config, opts).map_err(|e| e.to_string())?;
    lab.sim.logging = false;
    let setup = Duration::from_secs(20);
    let ticket = lab.login("alice", setup)?;
    let mut conns = Vec::with_capacity(args.sessions);
    for _ in 0..args.sessions {
        let handle = lab.session(&ticket, setup)?;
        let client = lab.clients.remove(&handle).ok_or("the lab lost a session's TLS client")?;
        conns.push(Conn { handle, client, tid: 0 });
    }
    let mut evict = vec![0u8; args.evict_kib * 1024];
    let mut hot = Tally::new("hot")?;
    let mut cold = Tally::new("cold")?;
    let counters = lab.gate.counters().clone();
    // Warm up: every session once, hot.
    let mut scratch = Tally::new("warmup")?;
    for i in 0..conns.len() * 2 {
        transact(&mut lab, &mut conns, i, args.registers, None, &counters, &mut scratch)?;
    }
    let before = lab.control.totals();
    for k in 0..args.requests * 2 {
        let (tally, evict) =
            if k % 2 == 0 || args.evict_kib == 0 { (&mut hot, None) } else { (&mut cold, Some(&mut evict[..])) };
        transact(&mut lab, &mut conns, k, args.registers, evict, &counters, tally)?;
    }
    let after = lab.control.totals();
    let closed: u64 =
        after.closes.iter().map(|(_, n)| n).sum::<u64>() - before.closes.iter().map(|(_, n)| n).sum::<u64>();
    if closed > 0 {
        return Err(format!("{closed} sessions closed during the measurement"));
    }
    Ok((hot, cold))
}

fn print(args: &PassArgs, profile: &str, hot: &Tally, cold: &Tally) {
    println!(
        "accessgate-perf pass: {} sessions, one request at a time ({} registers), {} requests per variant, evict {} KiB, {profile}{}",
        args.sessions,
        args.registers,
        args.requests,
        args.evict_kib,
        args.pin.map_or(String::new(), |c| format!(", pinned to CPU {c}"))
    );
    println!();
    println!(
        "| variant | gate µs / request | passes with work / request | frames in / out per request | idle pass p50 ns |"
    );
    println!("|---|---:|---:|---:|---:|");
    let variants: Vec<&Tally> = if args.evict_kib == 0 { vec![hot] } else { vec![hot, cold] };
    for t in &variants {
        let r = t.requests.max(1) as f64;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} / {:.2} | {} |",
            t.name,
            t.gate.as_secs_f64() * 1e6 / r,
            t.passes() as f64 / r,
            t.rx as f64 / r,
            t.tx as f64 / r,
            t.idle.value_at_quantile(0.5)
        );
    }
    println!();
    println!("| variant | frames in | passes / request | mean ns | p50 | p90 | p99 |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for t in &variants {
        for (i, h) in t.by_rx.iter().enumerate() {
            if h.is_empty() {
                continue;
            }
            println!(
                "| {} | {} | {:.2} | {:.0} | {} | {} | {} |",
                t.name,
                ["0 (timers)", "1", "2+"][i],
                h.len() as f64 / t.requests.max(1) as f64,
                h.mean(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99)
            );
        }
    }
}

/// Sends one request on session `k mod N` and steps the lab until its
/// answer is read: hosts, then (after `evict`, if given) the gate's passes
/// until one finds no work, timed.
fn transact(
    lab: &mut MemLab,
    conns: &mut [Conn],
    k: usize,
    registers: u16,
    mut evict: Option<&mut [u8]>,
    counters: &CoreCounters,
    t: &mut Tally,
) -> Result<(), String> {
    let n = conns.len();
    let c = &mut conns[k % n];
    c.tid = c.tid.wrapping_add(1);
    let mut adu = [0u8; 260];
    let len = request(&mut adu, c.tid, 1, 3, &read_holding(((k * 7) % 1000) as u16, registers));
    c.client.send(&adu[..len]);
    let mut got = Vec::new();
    let want = 9 + 2 * usize::from(registers);
    let start = Instant::now();
    let mut frames = 0;
    loop {
        let now = lab.clock.now();
        frames += lab.user.poll(now);
        let c = &mut conns[k % n];
        c.client.pump(lab.user.socket(c.handle));
        got.extend(c.client.take_received());
        if got.len() >= want {
            break;
        }
        frames += lab.plc.poll(now);
        lab.sim.serve(&mut lab.plc);
        if frames > 0 {
            frames = 0;
            if let Some(buf) = evict.as_deref_mut() {
                scribble(buf);
            }
        }
        loop {
            let (rx0, tx0) = (counters.rx_frames.load(Relaxed), counters.tx_frames.load(Relaxed));
            let t0 = Instant::now();
            let work = lab.gate.poll_once();
            let dt = t0.elapsed();
            let (rx, tx) = (counters.rx_frames.load(Relaxed) - rx0, counters.tx_frames.load(Relaxed) - tx0);
            let ns = (dt.as_nanos() as u64).max(1);
            if work == 0 {
                let _ = t.idle.record(ns);
                break;
            }
            t.gate += dt;
            t.rx += rx;
            t.tx += tx;
            let _ = t.by_rx[(rx as usize).min(2)].record(ns);
        }
        if start.elapsed() > Duration::from_secs(2) {
            return Err(format!("request {k}: no answer in 2 s: {:?}", lab.control.totals()));
        }
    }
    if got.len() != want || got[7] != 3 {
        return Err(format!("request {k}: unexpected answer {got:02x?}"));
    }
    t.requests += 1;
    Ok(())
}

/// Writes one byte per cache line of `buf`, so what the pass touches next
/// comes from the L3 or memory.
fn scribble(buf: &mut [u8]) {
    for b in buf.iter_mut().step_by(64) {
        *b = b.wrapping_add(1);
    }
    std::hint::black_box(&buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(sessions: usize, requests: usize, evict_kib: usize) -> PassArgs {
        PassArgs { sessions, requests, evict_kib, registers: 10, pin: None }
    }

    /// Each request is answered whole and checked; the gate sees its four
    /// frames one per pass (request, answer, and the two ACKs), in both
    /// variants.
    #[test]
    fn every_pass_carries_one_frame_and_every_answer_is_checked() {
        let (hot, cold) = measure(&args(3, 100, 64)).unwrap();
        for t in [&hot, &cold] {
            assert_eq!(t.requests, 100, "{}", t.name);
            assert_eq!(t.rx, 400, "{}: four frames in per request", t.name);
            assert!(t.tx >= 200, "{}: the request and the answer go out", t.name);
            assert_eq!(t.by_rx[1].len(), 400, "{}: one frame per pass", t.name);
            assert!(t.gate > Duration::ZERO && !t.idle.is_empty());
        }
    }

    #[test]
    fn bad_arguments_are_refused() {
        for (a, want) in [
            (args(0, 100, 0), "--sessions must be in 1..=1000"),
            (args(1, 10, 0), "--requests must be"),
            (args(1, 100, 2 << 20), "--evict-kib must be at most"),
        ] {
            assert!(check(&a).unwrap_err().starts_with(want), "{want}");
        }
    }
}
