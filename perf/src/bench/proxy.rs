//! Proxy path: the in-memory lab with `connections` user sessions (TLS to
//! the endpoint, ticket from one login), each keeping `depth` Modbus
//! read-holding requests in flight to the PLC simulator, everything stepped
//! in turn on one thread.
//!
//! The user host (smoltcp + rustls client), the auth worker and the PLC
//! share the thread with the gate, so the wall request rate understates what
//! a gate core does. The gate's `poll_once` is timed apart from the rest, and
//! the per-core figure is the gate's frames (rx + tx from its counters) per
//! second of gate time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use control::Config;
use dataplane::core::{CoreOptions, IdleMode};
use hdrhistogram::Histogram;
use perf::memlab::MemLab;
use perf::sim::{read_holding, request};
use perf::tls_client::TlsClient;
use smoltcp::iface::SocketHandle;

/// Shape of the proxy load.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub connections: usize,
    pub depth: usize,
    pub registers: u16,
}

/// One proxy-path measurement.
#[derive(Debug, Clone)]
pub struct ProxyResult {
    /// Complete, non-exception responses the user read.
    pub requests: u64,
    /// Requests the PLC simulator answered.
    pub plc_served: u64,
    /// Plaintext bytes the gate moved user -> PLC and PLC -> user.
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub gate_rx: u64,
    pub gate_tx: u64,
    /// Frames smoltcp built while a gate port had no transmit buffer.
    pub gate_tx_dropped: u64,
    /// Time inside the gate's `poll_once`.
    pub gate: Duration,
    /// Time in the auth worker (a control thread in `accessgate run`).
    pub auth: Duration,
    /// Time in the user host (stack, TLS client, app), the PLC host and the simulator.
    pub hosts: Duration,
    pub wall: Duration,
    pub steps: u64,
    /// Request latency in µs (send to complete response, step granularity).
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub latency_max_us: f64,
}

impl ProxyResult {
    pub fn frames(&self) -> u64 {
        self.gate_rx + self.gate_tx
    }
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }
    pub fn wall_fps(&self) -> f64 {
        self.frames() as f64 / self.wall.as_secs_f64()
    }
    /// Frames per second of gate time: the per-core rate.
    pub fn gate_fps(&self) -> f64 {
        self.frames() as f64 / self.gate.as_secs_f64()
    }
    pub fn gate_ns_per_frame(&self) -> f64 {
        self.gate.as_nanos() as f64 / self.frames() as f64
    }
    /// Requests per second of gate time.
    pub fn gate_requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.gate.as_secs_f64()
    }
    pub fn gate_share(&self) -> f64 {
        self.gate.as_secs_f64() / self.wall.as_secs_f64()
    }
    pub fn frames_per_request(&self) -> f64 {
        self.frames() as f64 / self.requests.max(1) as f64
    }
}

/// One user session and its pipeline.
struct Conn {
    handle: SocketHandle,
    client: TlsClient,
    /// Send times of the requests in flight, oldest first (TCP keeps order).
    sent: VecDeque<Instant>,
    rx: Vec<u8>,
    tid: u16,
}

/// Counts of one window.
#[derive(Default)]
struct Tally {
    requests: u64,
    plc_served: u64,
    gate: Duration,
    auth: Duration,
    hosts: Duration,
    steps: u64,
}

/// How long setup (login, sessions) may take.
const SETUP: Duration = Duration::from_secs(20);

/// Runs the proxy path for `warmup` then `seconds`.
pub fn run(config: &Config, load: Load, warmup: Duration, seconds: Duration) -> Result<ProxyResult, String> {
    run_with(config, load, warmup, seconds, Variant::default())
}

/// What else happens while the proxy path runs.
#[derive(Clone, Default)]
pub struct Variant {
    /// Policy/config generations published per second (0: none).
    pub reload_hz: f64,
    /// Record every request to this audit trail (writer on its own thread).
    pub audit: Option<dataplane::audit::AuditTap>,
}

/// [`run`] with reloads and/or auditing going on.
///
/// # Errors
/// The lab could not be built, or the load stalled or failed.
pub fn run_with(
    config: &Config,
    load: Load,
    warmup: Duration,
    seconds: Duration,
    variant: Variant,
) -> Result<ProxyResult, String> {
    let opts = CoreOptions { idle: IdleMode::Busy, ..CoreOptions::default() };
    let mut lab = MemLab::new_with(config, opts, variant.audit.clone()).map_err(|e| e.to_string())?;
    lab.sim.logging = false;
    let ticket = lab.login("alice", SETUP).map_err(|e| format!("proxy path: {e}"))?;
    let mut conns = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let handle = lab.session(&ticket, SETUP).map_err(|e| format!("proxy path: {e}"))?;
        let client = lab.clients.remove(&handle).ok_or("proxy path: the lab lost a session's TLS client")?;
        conns.push(Conn {
            handle,
            client,
            sent: VecDeque::with_capacity(load.depth),
            rx: Vec::with_capacity(4096),
            tid: 0,
        });
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut errors = 0u64;
    window(&mut lab, &mut conns, load, warmup, &mut hist, &mut errors, &variant)?;
    hist.reset();
    let before = lab.control.totals();
    let start = Instant::now();
    let tally = window(&mut lab, &mut conns, load, seconds, &mut hist, &mut errors, &variant)?;
    let wall = start.elapsed();
    let after = lab.control.totals();
    if errors > 0 {
        return Err(format!("proxy path: {errors} malformed or exception responses"));
    }
    if tally.requests == 0 {
        return Err(format!("proxy path: no request completed: {after:?}"));
    }
    // Every response the user read was served by the PLC (give or take the
    // requests in flight at the window's edges).
    let in_flight = (load.connections * load.depth) as u64;
    if tally.plc_served.abs_diff(tally.requests) > in_flight {
        return Err(format!(
            "proxy path: the user read {} responses, the PLC served {}",
            tally.requests, tally.plc_served
        ));
    }
    if let Some(e) = conns.iter().find_map(|c| c.client.error.clone()) {
        return Err(format!("proxy path: TLS error on a user session: {e}"));
    }
    let closed: u64 =
        after.closes.iter().map(|(_, n)| n).sum::<u64>() - before.closes.iter().map(|(_, n)| n).sum::<u64>();
    if closed > 0 {
        return Err(format!("proxy path: {closed} sessions closed during the measurement: {after:?}"));
    }
    Ok(ProxyResult {
        requests: tally.requests,
        plc_served: tally.plc_served,
        bytes_up: after.bytes_up - before.bytes_up,
        bytes_down: after.bytes_down - before.bytes_down,
        gate_rx: after.rx_frames - before.rx_frames,
        gate_tx: after.tx_frames - before.tx_frames,
        gate_tx_dropped: after.tx_dropped - before.tx_dropped,
        gate: tally.gate,
        auth: tally.auth,
        hosts: tally.hosts,
        wall,
        steps: tally.steps,
        latency_p50_us: hist.value_at_quantile(0.5) as f64,
        latency_p99_us: hist.value_at_quantile(0.99) as f64,
        latency_max_us: hist.max() as f64,
    })
}

/// Steps the lab for `length`: the gate (timed), the auth worker (timed),
/// then the user host, its TLS clients and application, the PLC host and
/// the simulator (timed together).
fn window(
    lab: &mut MemLab,
    conns: &mut [Conn],
    load: Load,
    length: Duration,
    hist: &mut Histogram<u64>,
    errors: &mut u64,
    variant: &Variant,
) -> Result<Tally, String> {
    let mut t = Tally::default();
    let start = Instant::now();
    let reload_every = (variant.reload_hz > 0.0).then(|| Duration::from_secs_f64(1.0 / variant.reload_hz));
    let mut last_reload = start;
    let mut adu = [0u8; 260];
    let mut last_progress = start;
    loop {
        let t0 = Instant::now();
        if t0 - start >= length {
            break;
        }
        if reload_every.is_some_and(|every| t0 - last_reload >= every) {
            // What a reload does to the cores: a new generation, the same content.
            let snap = (*lab.control.snapshot()).clone();
            lab.control.publish(snap).map_err(|e| format!("reload: {e}"))?;
            last_reload = t0;
        }
        let now = lab.clock.now();
        lab.gate.poll_once();
        let t1 = Instant::now();
        lab.auth.serve_pending();
        let t2 = Instant::now();
        lab.user.poll(now);
        let done = app(lab, conns, load, t0, &mut adu, hist, errors);
        lab.plc.poll(now);
        t.plc_served += lab.sim.serve(&mut lab.plc) as u64;
        let t3 = Instant::now();
        t.gate += t1 - t0;
        t.auth += t2 - t1;
        t.hosts += t3 - t2;
        t.steps += 1;
        t.requests += done;
        if done > 0 {
            last_progress = t3;
        } else if t3 - last_progress > Duration::from_secs(2) {
            return Err(format!("proxy path: no response for 2 s: {:?}", lab.control.totals()));
        }
    }
    Ok(t)
}

/// The user's application: reads complete responses, keeps `depth`
/// requests in flight per session (one TLS write per request). Returns
/// responses completed.
fn app(
    lab: &mut MemLab,
    conns: &mut [Conn],
    load: Load,
    now: Instant,
    adu: &mut [u8; 260],
    hist: &mut Histogram<u64>,
    errors: &mut u64,
) -> u64 {
    let mut done = 0;
    for (i, c) in conns.iter_mut().enumerate() {
        let sock = lab.user.socket(c.handle);
        c.client.pump(sock);
        c.rx.extend(c.client.take_received());
        let mut at = 0;
        while c.rx.len() - at >= 7 {
            let len = usize::from(u16::from_be_bytes([c.rx[at + 4], c.rx[at + 5]]));
            if c.rx.len() - at < 6 + len {
                break;
            }
            if c.rx[at + 7] != 3 || len != 3 + 2 * usize::from(load.registers) {
                *errors += 1;
            }
            if let Some(sent) = c.sent.pop_front() {
                let _ = hist.record(((now - sent).as_micros() as u64).max(1));
            }
            at += 6 + len;
            done += 1;
        }
        c.rx.drain(..at);
        let mut queued = false;
        while c.sent.len() < load.depth {
            c.tid = c.tid.wrapping_add(1);
            let address = ((i * 97 + usize::from(c.tid)) % 1000) as u16;
            let n = request(adu, c.tid, 1, 3, &read_holding(address, load.registers));
            c.client.send(&adu[..n]);
            c.sent.push_back(now);
            queued = true;
        }
        if queued {
            c.client.pump(sock);
        }
    }
    done
}
