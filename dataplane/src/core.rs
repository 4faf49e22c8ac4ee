//! The per-core loop: receive a batch on every port, classify, run the
//! segment stacks, move session bytes, transmit, and idle when there is
//! nothing to do.
//!
//! A [`Core`] owns its ports, stacks, sessions and counters outright: nothing
//! here is shared with another core, so nothing is locked. The only shared
//! inputs are the policy/config snapshot (an `ArcSwap`, loaded once per loop)
//! and the stop flag; the only shared outputs are the single-writer counters
//! and a bounded queue of session events for the control thread.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use crate::audit::{unix_micros, AuditOut, AuditRecord, AuditTap, Name, Note, SessionOpen, Text};
use crate::auth::{AuthChannel, AuthVerdict};
use crate::classify::{classify, dropped_flow, Disposition, DropReason};
use crate::counters::{bump, bump_over, set, CoreCounters};
use crate::io::{self, FramePort, BATCH, MAX_FRAME};
use crate::session::{CloseReason, Deadlines, Flow, Kind, Next, Phase, Session, Step, StepCtx, Target, NO_ASSET};
use crate::shard::{FlowKey, ShardedStack, Sock, Touch, NO_OWNER};
use crate::snapshot::{Ipv4Net, Protocol, SharedSnapshot, Side, Snapshot};
use crate::stack::{Stack, StackAddressing, TxStats, Wire};
use crate::tls::Tls;
use std::collections::{HashMap, VecDeque};

/// How a core waits when there is no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleMode {
    /// Poll forever (a dedicated core; lowest latency, 100% CPU).
    Busy,
    /// Keep polling for up to `spin_us` after the last work, then block in
    /// `poll()` on the ports' fds until a frame arrives or a timer is due.
    /// Spinning is paid from a budget that refills at `share_pct` % of
    /// wall time (at most [`SPIN_CREDIT_MAX_US`] saved up): under steady
    /// load the core spins at most that share of its time on top of the
    /// work, and sleeps at once when the budget is spent. Waking a sleeping
    /// core costs tens of microseconds on a VM; spinning through a short gap
    /// costs CPU; the budget bounds the second.
    Adaptive { spin_us: u64, share_pct: u8 },
}

/// Default spin after work (µs) and spin budget (% of time) of `adaptive`.
/// 50 µs covers a gap inside a request's round trip on a LAN; 5 % keeps
/// the spin from eating a CPU budget: under a 50 % CPU quota (`scripts/bench`
/// s6) 100 µs / 20 % saturated at 17.5k req/s in two rounds of three,
/// 50 µs / 5 % at 22.5–31k, with the same p50 / p99 at 20k req/s unquota'd.
pub const DEFAULT_SPIN_US: u64 = 50;
pub const DEFAULT_SPIN_SHARE: u8 = 5;

/// The most spin time an adaptive core saves up, in microseconds.
pub const SPIN_CREDIT_MAX_US: f64 = 2_000.0;

impl Default for IdleMode {
    fn default() -> Self {
        Self::Adaptive { spin_us: DEFAULT_SPIN_US, share_pct: DEFAULT_SPIN_SHARE }
    }
}

impl std::fmt::Display for IdleMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Busy => write!(f, "busy"),
            Self::Adaptive { spin_us, share_pct } => write!(f, "adaptive:{spin_us}:{share_pct}"),
        }
    }
}

impl std::str::FromStr for IdleMode {
    type Err = String;
    /// `busy`, `adaptive`, `adaptive:SPIN_US` or `adaptive:SPIN_US:SHARE_PCT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(':');
        let bad = || {
            format!("unknown idle mode {s:?} (expected busy, adaptive, adaptive:SPIN_US or adaptive:SPIN_US:SHARE_PCT)")
        };
        match parts.next() {
            Some("busy") if parts.next().is_none() => Ok(Self::Busy),
            Some("adaptive") => {
                let (mut spin_us, mut share_pct) = (DEFAULT_SPIN_US, DEFAULT_SPIN_SHARE);
                if let Some(v) = parts.next() {
                    spin_us = v.parse().ok().filter(|v| *v <= 10_000).ok_or_else(|| {
                        format!("idle mode {s:?}: spin {v:?} is not a number of microseconds in 0..=10000")
                    })?;
                }
                if let Some(v) = parts.next() {
                    share_pct = v
                        .parse()
                        .ok()
                        .filter(|v| *v <= 100)
                        .ok_or_else(|| format!("idle mode {s:?}: share {v:?} is not a percentage in 0..=100"))?;
                }
                if parts.next().is_some() {
                    return Err(bad());
                }
                Ok(Self::Adaptive { spin_us, share_pct })
            }
            _ => Err(bad()),
        }
    }
}

/// Sizes and timers of a core.
#[derive(Debug, Clone, Copy)]
pub struct CoreOptions {
    pub idle: IdleMode,
    /// Per-socket TCP buffer (each session has four: user rx/tx, asset rx/tx).
    pub socket_buffer: usize,
    /// Listening sockets kept ready per endpoint (the accept backlog).
    pub backlog: usize,
    /// Frames a stack's receive ring holds between classification and poll.
    pub ring: usize,
    /// How long the gate waits for the asset to accept a connection.
    pub connect_timeout: Duration,
    /// How long a session may wait for its auth verdict, from its first
    /// byte (a verdict lost to a full queue must not hold it forever).
    pub auth_deadline: Duration,
    /// How long a received segment's ACK may wait to ride on data going the
    /// other way (None: ACK at once). A Modbus answer usually follows its
    /// request within the delay, so the ACK costs no frame of its own; the
    /// Linux peers the gate replaces delay theirs by 40 ms or more.
    pub ack_delay: Option<Duration>,
}

impl Default for CoreOptions {
    fn default() -> Self {
        Self {
            idle: IdleMode::default(),
            socket_buffer: 8192,
            backlog: 4,
            ring: 2 * BATCH,
            connect_timeout: Duration::from_secs(3),
            auth_deadline: Duration::from_secs(60),
            ack_delay: Some(Duration::from_millis(10)),
        }
    }
}

/// Something the control thread should know about (logged; the audit issue
/// turns these into signed records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A user connection was accepted on an endpoint (TLS not yet up).
    Accepted { id: u64, client: SocketAddrV4, endpoint: SocketAddrV4 },
    /// The user was authenticated and the asset connection is being opened.
    Opened {
        id: u64,
        user: String,
        roles: Vec<String>,
        client: SocketAddrV4,
        endpoint: SocketAddrV4,
        asset: SocketAddrV4,
        /// TLS version and cipher suite.
        tls: (String, String),
        ticket: Option<String>,
    },
    /// The session ended; `detail` says why a refusal or failure happened.
    Closed { id: u64, reason: CloseReason, bytes_up: u64, bytes_down: u64, micros: u64, detail: Option<String> },
}

/// Unix time in seconds (policy windows are in UTC).
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Monotonic time in smoltcp's units.
#[derive(Debug, Clone, Copy)]
pub struct Clock(std::time::Instant);

impl Clock {
    pub fn new() -> Self {
        Self(std::time::Instant::now())
    }
    pub fn now(&self) -> Instant {
        self.at(std::time::Instant::now())
    }
    /// `t` (read earlier) in the same units: no second clock read.
    pub fn at(&self, t: std::time::Instant) -> Instant {
        Instant::from_micros(t.saturating_duration_since(self.0).as_micros() as i64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// A socket that is listening, or was and has not yet become a session.
struct Listener {
    endpoint: SocketAddrV4,
    sock: Sock,
}

/// One overlay segment's pair of stacks and its sessions.
///
/// Sessions live in slots (stable indices: the stacks record which slot
/// owns each socket). A loop steps only the sessions on the ready list —
/// those whose sockets received frames or ran timers, that moved bytes last
/// time, or that got an auth verdict — plus, every [`SWEEP_EVERY`], those of
/// a slice of all sessions whose own clocks are due (hello deadline, ticket
/// expiry, schedule windows, a new policy generation: `Session::clock_due`,
/// which touches no socket).
struct Segment {
    north: ShardedStack,
    south: ShardedStack,
    south_address: Ipv4Addr,
    listeners: Vec<Listener>,
    slots: Vec<Option<Session>>,
    free: Vec<u32>,
    live: usize,
    /// Slots to step on the next pass.
    ready: ReadyList,
    /// A listener's bucket saw a frame or a timer: check for accepts.
    accept: bool,
    /// Next slot the sweep looks at, and when the next slice is due.
    sweep_at: usize,
    next_sweep: Instant,
    /// Retired sockets waiting for their last segments: (north side?,
    /// socket, when it was retired).
    lingering: Vec<(bool, Sock, Instant)>,
    next_port: u16,
    /// Connection requests in this batch: listeners to have ready before
    /// smoltcp sees them (it answers a SYN no socket listens for with RST).
    syn_burst: usize,
}

/// Session slots to step on the next pass, each at most once.
#[derive(Default)]
struct ReadyList {
    slots: Vec<u32>,
    /// Per slot: on `slots` now.
    queued: Vec<bool>,
    /// The list being stepped is swapped out to here (no allocation).
    spare: Vec<u32>,
}

impl ReadyList {
    /// Puts `slot` on the list unless it is on it.
    fn push(&mut self, slot: u32) {
        if let Some(q) = self.queued.get_mut(slot as usize) {
            if !*q {
                *q = true;
                self.slots.push(slot);
            }
        }
    }

    /// The list so far, to step; what is pushed meanwhile waits for the next
    /// pass. Each slot is [`ReadyList::unmark`]ed when its step begins.
    fn take(&mut self) -> Vec<u32> {
        let mut batch = std::mem::take(&mut self.spare);
        std::mem::swap(&mut batch, &mut self.slots);
        batch
    }

    fn unmark(&mut self, slot: u32) {
        self.queued[slot as usize] = false;
    }

    /// Returns a stepped batch's storage.
    fn give_back(&mut self, mut batch: Vec<u32>) {
        batch.clear();
        self.spare = batch;
    }
}

impl Segment {
    fn queue(&mut self, slot: u32) {
        self.ready.push(slot);
    }

    fn insert(&mut self, sess: Session) -> u32 {
        self.live += 1;
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(sess);
                slot
            }
            None => {
                self.slots.push(Some(sess));
                self.ready.queued.push(false);
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn take(&mut self, slot: u32) -> Option<Session> {
        let sess = self.slots.get_mut(slot as usize)?.take()?;
        self.live -= 1;
        self.free.push(slot);
        Some(sess)
    }

    fn live_slots(&self) -> Vec<u32> {
        self.slots.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| i as u32).collect()
    }
}

/// What the stacks' passes tell a segment.
struct Touched<'a> {
    ready: &'a mut ReadyList,
    accept: &'a mut bool,
}

impl Touch for Touched<'_> {
    fn owner(&mut self, owner: u32) {
        self.ready.push(owner);
    }
    fn listeners(&mut self) {
        *self.accept = true;
    }
}

const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

/// Most listening sockets one endpoint keeps (its SYN backlog).
pub const MAX_LISTENERS: usize = 256;

/// How long a retired, reset socket may wait to send its RST (it waits for
/// ARP when the peer is gone) before it is removed anyway.
const RST_GRACE: Duration = Duration::from_secs(2);

/// How often a slice of every segment's sessions is stepped regardless of
/// traffic; all of them are visited within ten slices.
pub const SWEEP_EVERY: Duration = Duration::from_millis(10);

/// One dp core.
pub struct Core {
    id: usize,
    ports: Vec<Box<dyn FramePort>>,
    sides: Vec<Side>,
    segments: Vec<Segment>,
    /// Session id -> (segment, slot), for auth verdicts.
    index: HashMap<u64, (usize, u32)>,
    shared: SharedSnapshot,
    snap: Arc<Snapshot>,
    counters: Arc<CoreCounters>,
    events: Arc<ArrayQueue<SessionEvent>>,
    opts: CoreOptions,
    clock: Clock,
    scratch: Box<[u8; MAX_FRAME]>,
    next_session: u64,
    tx: TxStats,
    auth: Arc<AuthChannel>,
    audit: Option<AuditTap>,
    drops: Option<Arc<ArrayQueue<DroppedFlow>>>,
    /// Records the audit queue could not take at once; retried every loop,
    /// and sessions read no new requests until it is empty.
    audit_backlog: VecDeque<AuditRecord>,
    /// The audit trail held sessions back last pass: step them all this one.
    audit_held: bool,
    plain: Box<[u8; 16 * 1024]>,
    /// The last pass: when it started and how long its work took (µs; 0
    /// for a pass without work). `None` after a sleep.
    last_pass: Option<(i64, i64)>,
}

/// Records a core holds back when its audit queue is full (preallocated).
pub const AUDIT_BACKLOG: usize = 1024;

/// A dropped flow: (source, destination, destination port, reason).
pub type DroppedFlow = (Ipv4Addr, Ipv4Addr, Option<u16>, DropReason);

/// Dropped flows a core reports before the control thread drains them
/// (more are only counted).
pub const DROP_LOG: usize = 1024;

/// What a core shares with the control side.
pub struct CoreLinks {
    /// Dropped IPv4 flows, for the audit trail's aggregated denied flows.
    pub drops: Option<Arc<ArrayQueue<DroppedFlow>>>,
    pub counters: Arc<CoreCounters>,
    pub events: Arc<ArrayQueue<SessionEvent>>,
    pub auth: Arc<AuthChannel>,
    /// The audit trail (`None`: not recorded, e.g. benches without audit).
    pub audit: Option<AuditTap>,
}

/// What went wrong building a core.
#[derive(Debug)]
pub enum CoreError {
    /// The snapshot names a link with no port.
    MissingPort(usize),
    /// The snapshot has no north address.
    NoNorthAddress,
}

impl std::fmt::Display for CoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingPort(i) => write!(f, "no frame port for link #{i}"),
            Self::NoNorthAddress => write!(f, "the config has no north address"),
        }
    }
}

impl std::error::Error for CoreError {}

impl Core {
    /// Builds a core over `ports` (index = link index of the snapshot).
    ///
    /// # Errors
    /// The snapshot and the ports disagree.
    pub fn new(
        id: usize,
        ports: Vec<Box<dyn FramePort>>,
        shared: SharedSnapshot,
        links: CoreLinks,
        opts: CoreOptions,
    ) -> Result<Self, CoreError> {
        let CoreLinks { counters, events, auth, audit, drops } = links;
        let snap = shared.load_full();
        let clock = Clock::new();
        let now = clock.now();
        let segments = build_segments(id, &snap, &ports, &opts, now)?;
        let sides = snap.links.iter().map(|l| l.side).collect();
        let mut core = Self {
            id,
            ports,
            sides,
            segments,
            index: HashMap::new(),
            shared,
            snap: snap.clone(),
            counters,
            events,
            opts,
            clock,
            scratch: Box::new([0u8; MAX_FRAME]),
            next_session: 0,
            tx: TxStats::default(),
            auth,
            audit,
            drops,
            audit_backlog: VecDeque::with_capacity(AUDIT_BACKLOG),
            audit_held: false,
            last_pass: None,
            plain: Box::new([0u8; 16 * 1024]),
        };
        core.reconcile(&snap);
        for s in 0..core.segments.len() {
            core.top_up_listeners(s, 0);
        }
        Ok(core)
    }

    /// The counters this core writes.
    pub fn counters(&self) -> &Arc<CoreCounters> {
        &self.counters
    }

    /// Runs until `stop` is set, then resets every session. A panic in a
    /// pass outside a session's step makes the core start over
    /// ([`Core::recover`]) and run on; the guard is around the loop, not
    /// each pass, so the passes pay nothing for it.
    pub fn run(&mut self, stop: &AtomicBool) {
        while isolated(|| self.run_until(stop)).is_none() {
            if !self.recover() {
                return;
            }
        }
        self.shutdown();
    }

    /// The loop of [`Core::run`], until `stop` is set.
    fn run_until(&mut self, stop: &AtomicBool) {
        let mut last_work = std::time::Instant::now();
        let mut last = last_work;
        let mut credit_us = SPIN_CREDIT_MAX_US;
        // The time since `last` was spent spinning (else working or asleep).
        let mut spun = false;
        let mut fds = Vec::with_capacity(self.ports.len());
        while !stop.load(Ordering::Relaxed) {
            let work = self.poll_once();
            if work == 0 || self.audit_held {
                if let Some(pacer) = self.audit.as_ref().and_then(|t| t.pacer.as_deref()) {
                    if pacer.core_idle() {
                        bump(&self.counters.audit_turns, 1);
                    }
                }
            }
            if self.audit_held {
                // The audit writer shares this CPU (or the machine is short
                // of them) and is behind: let it run now rather than at a
                // time the scheduler picks.
                std::thread::yield_now();
            }
            let IdleMode::Adaptive { spin_us, share_pct } = self.opts.idle else {
                continue;
            };
            // The credit refills at share_pct % of the time passing; spin
            // time is paid from it.
            let now = std::time::Instant::now();
            let dt = now.duration_since(last).as_secs_f64() * 1e6;
            last = now;
            let paid = if std::mem::take(&mut spun) { dt } else { 0.0 };
            credit_us = (credit_us + dt * f64::from(share_pct) / 100.0 - paid).min(SPIN_CREDIT_MAX_US);
            if work > 0 {
                last_work = now;
                continue;
            }
            if credit_us > 0.0 && now.duration_since(last_work).as_micros() < u128::from(spin_us) {
                spun = true;
                std::hint::spin_loop();
                continue;
            }
            let now = self.clock.at(now);
            // poll(2) counts whole milliseconds: round up. Rounding down
            // turned every sub-millisecond remainder (each 10 ms sweep, each
            // TCP timer) into a busy wait of up to 1 ms: 4-9 % of a core on
            // an otherwise idle gate.
            let timer = self.next_timer(now).map_or(50, |d| d.total_micros().div_ceil(1000).min(50) as i32);
            if timer == 0 {
                // A timer due within the millisecond: busy-wait (spin time).
                spun = true;
                continue;
            }
            // The doorbell first: only the first 16 fds are waited on.
            fds.clear();
            fds.push(self.auth.doorbell.fd());
            fds.extend(self.ports.iter().filter_map(|p| p.poll_fd()));
            if self.ports.iter_mut().all(|p| p.arm_wakeup()) && self.auth.verdicts.is_empty() {
                bump(&self.counters.sleeps, 1);
                // Read the doorbell only when it rang: a read of an empty
                // eventfd is a syscall on every wake-up (1.5 % of the dp
                // thread's samples at 12k req/s).
                if io::wait_readable_mask(&fds, timer) & 1 != 0 {
                    self.auth.doorbell.clear();
                }
                // A sleep is not a stall.
                self.last_pass = None;
            }
            // No spin after a wake-up: a frame that woke the core makes the
            // next pass do work (and start a spin); a timer does not.
        }
    }

    /// [`Core::poll_once`], guarded as [`Core::run`] guards its loop: a
    /// panic in a session's step costs that session (see `step_ready`); one
    /// anywhere else in the pass (classification, the stacks, the ports)
    /// costs this core's sessions, not the core ([`Core::recover`]), and the
    /// pass counts as work. `None` if starting over panicked too: the core
    /// cannot go on.
    pub fn pass(&mut self) -> Option<usize> {
        match isolated(|| self.poll_once()) {
            Some(work) => Some(work),
            None => self.recover().then_some(1),
        }
    }

    /// After a panic in a pass: logs it and starts over ([`Core::restart`]).
    /// `false` if that panicked too.
    fn recover(&mut self) -> bool {
        log::error!("core {}: panic in a dataplane pass; its sessions are reset, its stacks rebuilt", self.id);
        if isolated(|| self.restart()).is_none() {
            log::error!("core {}: panic while starting over; the core stops", self.id);
            return false;
        }
        true
    }

    /// What the core does after a panic outside a session's step: every
    /// session closes (`internal_error`, audited), the stacks are built
    /// afresh from the snapshot (whatever the panic left half-done goes
    /// with the old ones; a user's next segment gets a reset from the new
    /// stack), and `core_restarts` counts it.
    pub fn restart(&mut self) {
        let now = self.clock.now();
        for s in 0..self.segments.len() {
            for slot in self.segments[s].live_slots() {
                if let Some(mut sess) = self.segments[s].take(slot) {
                    sess.detail = Some("the core started over after a panic (see the gate's log)".into());
                    self.finish(s, sess, CloseReason::InternalError, now);
                }
            }
        }
        match build_segments(self.id, &self.snap, &self.ports, &self.opts, now) {
            Ok(segments) => self.segments = segments,
            // The same snapshot and ports built them at start.
            Err(e) => log::error!("core {}: rebuilding the stacks: {e}", self.id),
        }
        self.index.clear();
        self.audit_held = false;
        self.last_pass = None;
        self.tx = TxStats::default();
        let snap = self.snap.clone();
        self.reconcile(&snap);
        for s in 0..self.segments.len() {
            self.top_up_listeners(s, 0);
        }
        bump(&self.counters.core_restarts, 1);
    }

    /// One pass: receive, classify, poll stacks, move bytes, transmit.
    /// Returns a measure of work done (frames + bytes + events); 0 means idle.
    pub fn poll_once(&mut self) -> usize {
        let now = self.clock.now();
        // Time between the last pass's work and this pass: the core was off
        // its CPU (a pass without work takes well under a microsecond).
        if let Some((start, took)) = self.last_pass {
            bump_over(&self.counters.stalls, (now.total_micros() - start - took).max(0) as u64);
        }
        let snap = self.shared.load();
        if snap.generation != self.snap.generation {
            let fresh = self.shared.load_full();
            self.reconcile(&fresh);
            self.snap = fresh;
        }
        let mut work = 0;

        // 1. Receive and classify one batch per port.
        let Self { ports, sides, segments, counters, drops, .. } = self;
        for (link, port) in ports.iter_mut().enumerate() {
            let side = sides.get(link).copied().unwrap_or(Side::South);
            let n = port
                .rx_burst(BATCH, &mut |frame| {
                    let disposition = classify(frame, side, link, &snap);
                    let reason = match disposition {
                        Disposition::North { segment, vlan, syn } => {
                            if syn {
                                if let Some(seg) = segments.get_mut(segment) {
                                    seg.syn_burst += 1;
                                }
                            }
                            admit(segments, segment, true, frame, vlan)
                        }
                        Disposition::South { segment, vlan } => admit(segments, segment, false, frame, vlan),
                        Disposition::NorthAll { vlan } => {
                            let mut r = None;
                            for s in 0..segments.len() {
                                r = r.or(admit(segments, s, true, frame, vlan));
                            }
                            r
                        }
                        Disposition::Drop(reason) => Some(reason),
                    };
                    if let Some(reason) = reason {
                        bump(&counters.drops[reason as usize], 1);
                        if let Some((src, dst, port)) = drops.as_ref().and_then(|_| dropped_flow(frame)) {
                            if let Some(q) = drops {
                                let _ = q.push((src, dst, port, reason));
                            }
                        }
                    }
                })
                .unwrap_or(0);
            work += n;
            bump(&counters.rx_frames, n as u64);
        }

        // 2. Verdicts from the auth workers.
        while let Some(v) = self.auth.verdicts.pop() {
            self.apply_verdict(v, now);
            work += 1;
        }

        // 3. Run each segment.
        let held = self.audit_pressure();
        let walk_all = held || self.audit_held;
        self.audit_held = held;
        for s in 0..self.segments.len() {
            work += self.run_segment(s, now, walk_all);
        }

        // 4. Transmit.
        for port in &mut self.ports {
            let _ = port.flush();
        }
        bump(&self.counters.loops, 1);
        let took = if work > 0 {
            // One more clock read, for passes with work only.
            let took = self.clock.now().total_micros() - now.total_micros();
            bump_over(&self.counters.slow_passes, took.max(0) as u64);
            took
        } else {
            0
        };
        self.last_pass = Some((now.total_micros(), took));
        if self.tx.sent + self.tx.dropped > 0 {
            bump(&self.counters.tx_frames, self.tx.sent);
            bump(&self.counters.tx_dropped, self.tx.dropped);
            self.tx = TxStats::default();
        }
        work
    }

    /// Whether the audit trail is holding sessions back (they read no new
    /// requests while it has no room, so nothing on the wire wakes them).
    fn audit_pressure(&self) -> bool {
        match &self.audit {
            None => false,
            Some(tap) => {
                !self.audit_backlog.is_empty()
                    || !tap.healthy.load(Ordering::Acquire)
                    || !tap.queue.has_room(AUDIT_HEADROOM)
            }
        }
    }

    /// Ingress on both stacks, accepts, the ready sessions, a sweep slice,
    /// egress. Returns the work done.
    fn run_segment(&mut self, s: usize, now: Instant, walk_all: bool) -> usize {
        let mut work = 0;
        if self.segments[s].syn_burst > 0 {
            let burst = std::mem::take(&mut self.segments[s].syn_burst);
            self.top_up_listeners(s, burst);
        }
        {
            let Self { ports, segments, scratch, tx, .. } = self;
            let seg = &mut segments[s];
            let mut touched = Touched { ready: &mut seg.ready, accept: &mut seg.accept };
            work +=
                seg.north.ingest(now, &mut Wire { port: ports[seg.north.link].as_mut(), scratch, tx }, &mut touched);
            work +=
                seg.south.ingest(now, &mut Wire { port: ports[seg.south.link].as_mut(), scratch, tx }, &mut touched);
        }
        if std::mem::take(&mut self.segments[s].accept) {
            work += self.accept(s, now);
        }
        let seg = &mut self.segments[s];
        if walk_all {
            for slot in 0..seg.slots.len() {
                if seg.slots[slot].is_some() {
                    seg.queue(slot as u32);
                }
            }
        } else if now >= seg.next_sweep && seg.live > 0 {
            seg.next_sweep = now + SWEEP_EVERY;
            let (unix, generation) = (unix_now(), self.snap.generation);
            let n = seg.slots.len();
            let slice = n.div_ceil(10).max(16).min(n);
            for k in 0..slice {
                let slot = (seg.sweep_at + k) % n;
                if seg.slots[slot].as_ref().is_some_and(|x| x.clock_due(now, unix, generation)) {
                    seg.queue(slot as u32);
                }
            }
            seg.sweep_at = (seg.sweep_at + slice) % n;
        }
        work += self.step_ready(s, now);
        self.reap(s, now);
        let Self { ports, segments, scratch, tx, .. } = self;
        let seg = &mut segments[s];
        let mut touched = Touched { ready: &mut seg.ready, accept: &mut seg.accept };
        seg.north.egress(now, &mut Wire { port: ports[seg.north.link].as_mut(), scratch, tx }, &mut touched);
        seg.south.egress(now, &mut Wire { port: ports[seg.south.link].as_mut(), scratch, tx }, &mut touched);
        work
    }

    /// Promotes accepted connections to sessions and keeps the listener
    /// pools full.
    fn accept(&mut self, s: usize, now: Instant) -> usize {
        let mut work = 0;
        let mut i = 0;
        while i < self.segments[s].listeners.len() {
            let seg = &mut self.segments[s];
            let Listener { endpoint, sock } = seg.listeners[i];
            let state = seg.north.peek(sock).state();
            match state {
                tcp::State::Listen | tcp::State::SynReceived => {
                    i += 1;
                }
                tcp::State::Established | tcp::State::CloseWait => {
                    let client = seg
                        .north
                        .peek(sock)
                        .remote_endpoint()
                        .and_then(v4)
                        .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
                    seg.listeners.swap_remove(i);
                    self.open_session(s, endpoint, sock, client, now);
                    work += 1;
                }
                _ => {
                    seg.north.remove(sock);
                    seg.listeners.swap_remove(i);
                    bump(&self.counters.handshakes_failed, 1);
                }
            }
        }
        self.top_up_listeners(s, 0);
        work
    }

    /// Steps the sessions on segment `s`'s ready list.
    fn step_ready(&mut self, s: usize, now: Instant) -> usize {
        if self.segments[s].ready.slots.is_empty() {
            return 0;
        }
        let mut work = 0;
        // One clock read for both (a read costs tens of ns in a VM).
        let unix_us = unix_micros();
        let unix = unix_us / 1_000_000;
        self.drain_audit_backlog();
        let (audit_ready, audit_terminate) = match &self.audit {
            None => (true, false),
            Some(tap) => {
                let healthy = tap.healthy.load(Ordering::Acquire);
                (
                    healthy && self.audit_backlog.is_empty() && tap.queue.accepts_requests(),
                    !healthy && tap.terminate_on_failure,
                )
            }
        };
        let batch = self.segments[s].ready.take();
        for &slot in &batch {
            let Self { segments, plain, counters, id, audit, audit_backlog, snap, .. } = self;
            let seg = &mut segments[s];
            seg.ready.unmark(slot);
            let Some(sess) = seg.slots[slot as usize].as_mut() else { continue };
            let north = seg.north.socket(sess.north);
            let mut south = sess.south.map(|h| seg.south.socket(h));
            let (up, down, phase) = (sess.bytes_up, sess.bytes_down, sess.phase);
            let mut ctx = StepCtx {
                core: *id,
                now,
                unix,
                policy: &snap.policy,
                users: snap.users.as_deref(),
                generation: snap.generation,
                ticket_lifetime: snap.ticket_lifetime,
                scratch: &mut plain[..],
                counters,
                unix_us,
                audit: AuditOut {
                    queue: audit.as_ref().map(|t| &*t.queue),
                    backlog: audit_backlog,
                    ready: audit_ready,
                    terminate: audit_terminate,
                },
            };
            // A bug in one session's handling (a parser, an inspector) costs
            // that session, not every session on this core.
            let step = isolated(|| sess.step(&mut ctx, &mut *north, south.as_deref_mut())).unwrap_or_else(|| {
                north.abort();
                if let Some(south) = south {
                    south.abort();
                }
                sess.detail = Some("panic in the session's step (see the gate's log)".into());
                Step::Closed(CloseReason::InternalError)
            });
            bump(&counters.bytes_up, sess.bytes_up - up);
            bump(&counters.bytes_down, sess.bytes_down - down);
            match step {
                Step::Running { moved } => {
                    // More may be waiting behind what fitted this time: after
                    // bytes moved, a phase change, or (handshake and hello)
                    // records still unread, step again next pass; nothing on
                    // the wire would wake the session otherwise.
                    let unread = matches!(sess.phase, Phase::Handshaking | Phase::Hello)
                        && seg.north.peek(sess.north).recv_queue() > 0;
                    if moved > 0 || sess.phase != phase || unread {
                        work += moved.max(1);
                        seg.queue(slot);
                    }
                }
                Step::Authenticate(req) => {
                    work += 1;
                    if self.auth.requests.push(*req).is_err() {
                        // The workers are saturated: drop the session before
                        // anything reached an asset, rather than wait unbounded.
                        let seg = &mut self.segments[s];
                        if let Some(sess) = seg.take(slot) {
                            seg.north.socket(sess.north).abort();
                            self.finish(s, sess, CloseReason::AuthBusy, now);
                        }
                    } else if let Some(worker) = &self.auth.worker {
                        worker.unpark();
                    }
                }
                Step::Closed(reason) => {
                    if let Some(sess) = seg.take(slot) {
                        self.finish(s, sess, reason, now);
                    }
                    work += 1;
                }
            }
        }
        self.segments[s].ready.give_back(batch);
        work
    }

    /// Retries records the audit queue could not take.
    fn drain_audit_backlog(&mut self) {
        let Some(tap) = &self.audit else { return };
        while let Some(r) = self.audit_backlog.pop_front() {
            if let Err(r) = tap.queue.try_push(r) {
                self.audit_backlog.push_front(r);
                break;
            }
        }
    }

    /// Queues one audit record (or keeps it in the backlog: never dropped).
    fn audit(&mut self, record: AuditRecord) {
        if let Some(tap) = &self.audit {
            if !self.audit_backlog.is_empty() {
                self.audit_backlog.push_back(record);
            } else if let Err(r) = tap.queue.try_push(record) {
                self.audit_backlog.push_back(r);
            }
        }
    }

    /// Accounts a finished session (already taken out of its slot) and
    /// retires its sockets.
    fn finish(&mut self, s: usize, sess: Session, reason: CloseReason, now: Instant) {
        let ts = unix_micros();
        match reason {
            CloseReason::TlsFailed
            | CloseReason::HelloMalformed
            | CloseReason::FramingLost
            | CloseReason::HelloTimeout => {
                self.audit(AuditRecord::anomaly(sess.id, ts, reason.as_str(), sess.detail.as_deref().unwrap_or("")));
            }
            _ => {}
        }
        if sess.audited {
            self.audit(AuditRecord::session_close(
                sess.id,
                ts,
                reason.as_str(),
                sess.detail.as_deref(),
                sess.bytes_up,
                sess.bytes_down,
                (now - sess.opened).total_micros(),
            ));
        }
        self.index.remove(&sess.id);
        let seg = &mut self.segments[s];
        retire(seg, &sess, now);
        bump(&self.counters.closes[reason as usize], 1);
        self.update_active();
        let _ = self.events.push(SessionEvent::Closed {
            id: sess.id,
            reason,
            bytes_up: sess.bytes_up,
            bytes_down: sess.bytes_down,
            micros: (now - sess.opened).total_micros(),
            detail: sess.detail,
        });
    }

    fn update_active(&self) {
        set(&self.counters.sessions_active, self.segments.iter().map(|g| g.live as u64).sum());
    }

    /// Delivers an auth verdict to its session (if it is still there).
    fn apply_verdict(&mut self, verdict: AuthVerdict, now: Instant) {
        let Some(&(s, slot)) = self.index.get(&verdict.session()) else { return };
        let seg = &mut self.segments[s];
        let Some(sess) = seg.slots[slot as usize].as_mut() else { return };
        let next = sess.on_verdict(verdict);
        seg.queue(slot);
        if next == Next::Connect {
            self.connect_south(s, slot, now);
        }
    }

    /// Opens the asset connection of an authorised session.
    fn connect_south(&mut self, s: usize, slot: u32, now: Instant) {
        let opts = self.opts;
        let Self { segments, snap, .. } = self;
        let seg = &mut segments[s];
        let Some(sess) = seg.slots[slot as usize].as_mut() else { return };
        // The protocol the session was accepted for: a reload that changed
        // it (or the asset's address) has ended the session (`reconcile`).
        let protocol = sess.target().protocol;
        sess.bind_policy(&snap.policy, protocol);
        let asset = sess.flow.asset;
        let mut sock = new_socket(&opts);
        sock.set_timeout(Some(opts.connect_timeout));
        // A port whose last connection to this asset still lingers (or is
        // live) would collide with it: the next free one.
        let key = |local_port| FlowKey {
            remote_ip: u32::from(*asset.ip()),
            local_ip: u32::from(seg.south_address),
            remote_port: asset.port(),
            local_port,
        };
        let mut local_port = next_port(&mut seg.next_port);
        for _ in EPHEMERAL {
            if !seg.south.in_use(key(local_port)) {
                break;
            }
            local_port = next_port(&mut seg.next_port);
        }
        let remote = IpEndpoint::new(IpAddress::Ipv4(*asset.ip()), asset.port());
        let local = IpListenEndpoint { addr: Some(IpAddress::Ipv4(seg.south_address)), port: local_port };
        let connected = sock.connect(seg.south.iface.context(), remote, local);
        let south = seg.south.add(sock, slot);
        sess.connecting(south, now);
        if connected.is_err() {
            // No route: the session step sees the closed socket and ends it
            // as `asset_unreachable`.
            seg.south.socket(south).abort();
        }
        let Some(grant) = sess.grant.as_deref() else { return };
        let tls = sess.negotiated();
        let record = AuditRecord::session_open(
            sess.id,
            unix_micros(),
            SessionOpen {
                user: Name::new(&grant.user),
                roles: Note::join(grant.roles.iter().map(String::as_str), ","),
                client: sess.flow.client,
                endpoint: sess.flow.endpoint,
                asset_name: Name::new(sess.asset_name()),
                asset,
                protocol: Text::new(protocol.as_str()),
                tls_version: Text::new(&tls.0),
                tls_cipher: Text::new(&tls.1),
                ticket: Name::new(grant.ticket_id.as_deref().unwrap_or("")),
            },
        );
        sess.audited = true;
        let _ = self.events.push(SessionEvent::Opened {
            id: sess.id,
            user: grant.user.clone(),
            roles: grant.roles.clone(),
            client: sess.flow.client,
            endpoint: sess.flow.endpoint,
            asset,
            tls,
            ticket: grant.ticket_id.clone(),
        });
        self.audit(record);
    }

    /// Removes retired sockets that are done.
    ///
    /// An aborted socket is Closed at once but still owes its RST: smoltcp
    /// forgets the remote endpoint only after sending it, which it never
    /// does when the peer does not answer ARP (an asset switched off), so
    /// the RST gets [`RST_GRACE`] and the socket goes after it either way.
    /// A socket in TIME-WAIT is removed at once: a client reusing its port
    /// should get a SYN-ACK, and a late retransmitted FIN now meets a RST
    /// instead, which ends nothing that was still open. An entry whose
    /// socket the stack evicted (the client reused its addresses; its
    /// handle may name the new connection's socket now) is forgotten.
    fn reap(&mut self, s: usize, now: Instant) {
        let seg = &mut self.segments[s];
        if seg.lingering.is_empty() {
            return;
        }
        let Segment { north, south, lingering, .. } = seg;
        lingering.retain(|&(is_north, h, since)| {
            let stack = if is_north { &mut *north } else { &mut *south };
            if !stack.lingers(h) {
                return false;
            }
            let sock = stack.peek(h);
            let done = match sock.state() {
                tcp::State::Closed => sock.remote_endpoint().is_none() || now - since >= RST_GRACE,
                tcp::State::TimeWait => true,
                _ => false,
            };
            if done {
                stack.remove(h);
            }
            !done
        });
    }

    /// Keeps `backlog + burst` listeners ready per endpoint of segment `s`
    /// (at most [`MAX_LISTENERS`]; SYNs past that get RST from smoltcp and
    /// the client retries).
    fn top_up_listeners(&mut self, s: usize, burst: usize) {
        let opts = self.opts;
        let seg = &mut self.segments[s];
        let want = (opts.backlog + burst).min(MAX_LISTENERS);
        let login = if s == 0 { self.snap.login } else { None };
        for ep in self.snap.endpoints.iter().filter(|e| e.segment == s).map(|e| e.overlay).chain(login) {
            // Half-open connections hold their listener (SYN-RECEIVED,
            // up to its 5 s timeout): they count against the bound too, or
            // a SYN flood would get a new socket per SYN.
            let (mut ready, mut held) = (0, 0);
            for l in seg.listeners.iter().filter(|l| l.endpoint == ep) {
                match seg.north.peek(l.sock).state() {
                    tcp::State::Listen => ready += 1,
                    tcp::State::SynReceived => held += 1,
                    _ => {}
                }
            }
            let room = MAX_LISTENERS.saturating_sub(ready + held);
            for _ in 0..want.saturating_sub(ready).min(room) {
                let mut sock = new_socket(&opts);
                sock.set_timeout(Some(Duration::from_secs(5)));
                if sock.listen(IpListenEndpoint { addr: Some(IpAddress::Ipv4(*ep.ip())), port: ep.port() }).is_ok() {
                    let sock = seg.north.add_listener(sock);
                    seg.listeners.push(Listener { endpoint: ep, sock });
                }
            }
        }
    }

    fn open_session(&mut self, s: usize, endpoint: SocketAddrV4, north: Sock, client: SocketAddrV4, now: Instant) {
        let login = self.snap.login == Some(endpoint);
        let found = self.snap.endpoint_at(*endpoint.ip(), endpoint.port()).map(|e| &self.snap.endpoints[e]);
        let tls = self.snap.tls.as_ref().map(Tls::new);
        let refuse = |core: &mut Self, reason: CloseReason| {
            let seg = &mut core.segments[s];
            let north = seg.north.promote(north, NO_OWNER);
            seg.north.socket(north).abort();
            seg.lingering.push((true, north, now));
            bump(&core.counters.closes[reason as usize], 1);
        };
        let (target, asset) = match (login, found) {
            (true, _) => (
                Target { kind: Kind::Login, asset: String::new(), service: String::new(), protocol: Protocol::Tcp },
                NO_ASSET,
            ),
            (false, Some(e)) => (
                Target { kind: Kind::Asset, asset: e.asset.clone(), service: e.service.clone(), protocol: e.protocol },
                e.underlay,
            ),
            (false, None) => return refuse(self, CloseReason::EndpointRemoved),
        };
        let Some(Ok(tls)) = tls else {
            // No usable TLS configuration: nothing may pass in plaintext.
            return refuse(self, CloseReason::TlsFailed);
        };
        self.next_session += 1;
        let id = (self.id as u64) << 48 | self.next_session;
        let flow = Flow { client, endpoint, asset };
        let deadlines = Deadlines { connect: self.opts.connect_timeout, auth: self.opts.auth_deadline };
        let seg = &mut self.segments[s];
        let slot = seg.insert(Session::new(id, flow, target, north, tls, now, deadlines));
        let north = seg.north.promote(north, slot);
        if let Some(sess) = seg.slots[slot as usize].as_mut() {
            sess.north = north;
        }
        // Tuned as a listener (`new_socket`); only the handshake timeout goes.
        seg.north.socket(north).set_timeout(None);
        seg.queue(slot);
        self.index.insert(id, (s, slot));
        bump(&self.counters.sessions_opened, 1);
        self.update_active();
        let _ = self.events.push(SessionEvent::Accepted { id, client, endpoint });
    }

    /// Applies a new snapshot: listeners of endpoints that are gone are
    /// closed, and sessions of endpoints that are gone or now lead to
    /// another asset, service, asset address or protocol (a session stays
    /// only on what its user was authorised and connected for); new
    /// endpoints get listeners; every other session is stepped (it re-checks
    /// the policy).
    fn reconcile(&mut self, snap: &Snapshot) {
        set(&self.counters.generation, snap.generation);
        let now = self.clock.now();
        for seg in &mut self.segments {
            let Segment { listeners, north, lingering, .. } = seg;
            listeners.retain(|l| {
                let keep = snap.is_endpoint(*l.endpoint.ip(), l.endpoint.port());
                if !keep {
                    north.socket(l.sock).abort();
                    lingering.push((true, l.sock, now));
                }
                keep
            });
            seg.accept = true;
        }
        for s in 0..self.segments.len() {
            for slot in self.segments[s].live_slots() {
                let seg = &mut self.segments[s];
                let Some(sess) = seg.slots[slot as usize].as_ref() else { continue };
                let ep = sess.flow.endpoint;
                let t = sess.target();
                let same = match snap.endpoint_at(*ep.ip(), ep.port()).map(|e| &snap.endpoints[e]) {
                    Some(e) => {
                        t.kind == Kind::Asset
                            && (e.asset.as_str(), e.service.as_str(), e.underlay, e.protocol)
                                == (t.asset.as_str(), t.service.as_str(), sess.flow.asset, t.protocol)
                    }
                    None => t.kind == Kind::Login && snap.login == Some(ep),
                };
                if same {
                    seg.queue(slot);
                } else {
                    self.abort_session(s, slot, CloseReason::EndpointRemoved, now);
                }
            }
        }
        self.update_active();
    }

    /// Resets both sides of the session in `slot` of segment `s` and
    /// accounts it.
    fn abort_session(&mut self, s: usize, slot: u32, reason: CloseReason, now: Instant) {
        let seg = &mut self.segments[s];
        let Some(sess) = seg.take(slot) else { return };
        seg.north.socket(sess.north).abort();
        if let Some(h) = sess.south {
            seg.south.socket(h).abort();
        }
        self.finish(s, sess, reason, now);
    }

    /// How long until some stack or session needs the core.
    fn next_timer(&mut self, now: Instant) -> Option<Duration> {
        self.segments
            .iter()
            .flat_map(|seg| {
                let sweep =
                    (seg.live > 0).then(|| if seg.next_sweep > now { seg.next_sweep - now } else { Duration::ZERO });
                let ready = (!seg.ready.slots.is_empty() || seg.accept).then_some(Duration::ZERO);
                [seg.north.poll_delay(now), seg.south.poll_delay(now), sweep, ready]
            })
            .flatten()
            .min()
    }

    /// Resets every session and sends the resets.
    pub fn shutdown(&mut self) {
        let now = self.clock.now();
        for s in 0..self.segments.len() {
            for slot in self.segments[s].live_slots() {
                self.abort_session(s, slot, CloseReason::Shutdown, now);
            }
        }
        let Self { ports, segments, scratch, tx, .. } = self;
        for seg in segments.iter_mut() {
            let mut touched = Touched { ready: &mut seg.ready, accept: &mut seg.accept };
            seg.north.egress(now, &mut Wire { port: ports[seg.north.link].as_mut(), scratch, tx }, &mut touched);
            seg.south.egress(now, &mut Wire { port: ports[seg.south.link].as_mut(), scratch, tx }, &mut touched);
        }
        for port in ports.iter_mut() {
            let _ = port.flush();
        }
        set(&self.counters.sessions_active, 0);
    }
}

/// Free audit slots below which the core steps every session each pass
/// (they may be holding requests back for lack of room).
///
/// (See [`isolated`] below for the other guard a core keeps.)
const AUDIT_HEADROOM: usize = 256;

/// A core's segments, each with its two stacks, empty, as `snap` and the
/// core's `ports` describe them.
fn build_segments(
    id: usize,
    snap: &Snapshot,
    ports: &[Box<dyn FramePort>],
    opts: &CoreOptions,
    now: Instant,
) -> Result<Vec<Segment>, CoreError> {
    let north_address = snap.north_address.ok_or(CoreError::NoNorthAddress)?;
    let north_port = ports.first().ok_or(CoreError::MissingPort(0))?;
    let north_mac = north_port.mac();
    let mut segments = Vec::with_capacity(snap.segments.len());
    for (i, seg) in snap.segments.iter().enumerate() {
        let south_port = ports.get(seg.south_link).ok_or(CoreError::MissingPort(seg.south_link))?;
        let seed = (id as u64) << 32 | i as u64;
        let north = ShardedStack::new(Stack::new(
            0,
            snap.north_vlan,
            &StackAddressing {
                mac: north_mac,
                address: north_address,
                gateway: snap.north_gateway,
                any_ip: if i == 0 {
                    [Some(seg.overlay), snap.login.map(|l| Ipv4Net { addr: *l.ip(), len: 32 })]
                        .into_iter()
                        .flatten()
                        .collect()
                } else {
                    vec![seg.overlay]
                },
            },
            opts.ring,
            seed ^ 0x9e37_79b9,
            now,
        ));
        let south = ShardedStack::new(Stack::new(
            seg.south_link,
            seg.south_vlan,
            &StackAddressing {
                mac: south_port.mac(),
                address: seg.south_address,
                gateway: seg.south_gateway,
                any_ip: Vec::new(),
            },
            opts.ring,
            seed ^ 0x7f4a_7c15,
            now,
        ));
        segments.push(Segment {
            north,
            south,
            south_address: seg.south_address.addr,
            listeners: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            ready: ReadyList::default(),
            accept: true,
            sweep_at: 0,
            next_sweep: now,
            lingering: Vec::new(),
            next_port: *EPHEMERAL.start() + ((id as u16).wrapping_mul(4099) % 8192),
            syn_burst: 0,
        });
    }
    Ok(segments)
}

/// Copies an admitted frame into the target stack's ring.
fn admit(segments: &mut [Segment], segment: usize, north: bool, frame: &[u8], vlan: bool) -> Option<DropReason> {
    let seg = segments.get_mut(segment)?;
    let stack = if north { &mut seg.north } else { &mut seg.south };
    (!stack.rx.push(frame, vlan)).then_some(DropReason::Backlog)
}

/// Moves a finished session's sockets to the lingering list (closed ones are
/// removed on the next reap).
///
/// A closing peer that stops answering (never sends its FIN) must not pin a
/// socket forever: keep-alives every 5 s, and a reset after 15 s of silence.
fn retire(seg: &mut Segment, sess: &Session, now: Instant) {
    let bound = |s: &mut tcp::Socket<'_>| {
        s.set_keep_alive(Some(Duration::from_secs(5)));
        s.set_timeout(Some(Duration::from_secs(15)));
    };
    bound(seg.north.socket(sess.north));
    seg.north.set_owner(sess.north, NO_OWNER);
    seg.lingering.push((true, sess.north, now));
    if let Some(south) = sess.south {
        bound(seg.south.socket(south));
        seg.south.set_owner(south, NO_OWNER);
        seg.lingering.push((false, south, now));
    }
}

fn next_port(next: &mut u16) -> u16 {
    let p = *next;
    *next = if p >= *EPHEMERAL.end() { *EPHEMERAL.start() } else { p + 1 };
    p
}

fn new_socket(opts: &CoreOptions) -> tcp::Socket<'static> {
    let buffer = opts.socket_buffer;
    let mut sock =
        tcp::Socket::new(tcp::SocketBuffer::new(vec![0u8; buffer]), tcp::SocketBuffer::new(vec![0u8; buffer]));
    tune(&mut sock, opts.ack_delay);
    sock
}

/// Request/response traffic: no Nagle (a request or answer goes out whole
/// at once); ACKs delayed by `ack_delay` so they ride on the answer.
fn tune(sock: &mut tcp::Socket<'_>, ack_delay: Option<Duration>) {
    sock.set_nagle_enabled(false);
    sock.set_ack_delay(ack_delay);
}

fn v4(ep: IpEndpoint) -> Option<SocketAddrV4> {
    match ep.addr {
        IpAddress::Ipv4(a) => Some(SocketAddrV4::new(a, ep.port)),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Runs `f`, catching a panic: `None` if it panicked. A session's step runs
/// through this so a bug in handling one session's bytes resets that
/// session instead of ending the core's thread (and every session on it).
/// The panic message still goes to the log through the panic hook.
fn isolated<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_reads_an_earlier_instant_in_its_own_units() {
        let clock = Clock::new();
        let t = std::time::Instant::now();
        let (a, b) = (clock.at(t), clock.now());
        assert!(a <= b);
        assert_eq!(clock.at(t + std::time::Duration::from_millis(5)) - a, smoltcp::time::Duration::from_millis(5));
        // An instant before the clock started reads as its start.
        assert_eq!(Clock::new().at(t), Instant::from_micros(0));
    }

    #[test]
    fn a_panic_in_an_isolated_step_is_caught_and_the_caller_goes_on() {
        let mut touched = 0usize;
        assert_eq!(isolated(|| 7), Some(7));
        let caught: Option<u8> = isolated(|| {
            touched += 1;
            let v: Vec<u8> = Vec::new();
            // An out-of-bounds index, as a parser bug would make.
            v[touched]
        });
        assert_eq!((caught, touched), (None, 1));
        assert_eq!(isolated(|| touched + 1), Some(2), "the thread goes on");
    }

    #[test]
    fn idle_modes_parse_and_print() {
        assert_eq!("busy".parse::<IdleMode>(), Ok(IdleMode::Busy));
        assert_eq!("adaptive".parse::<IdleMode>(), Ok(IdleMode::default()));
        assert_eq!("adaptive:80".parse::<IdleMode>(), Ok(IdleMode::Adaptive { spin_us: 80, share_pct: 5 }));
        assert_eq!("adaptive:0:0".parse::<IdleMode>(), Ok(IdleMode::Adaptive { spin_us: 0, share_pct: 0 }));
        let m = IdleMode::Adaptive { spin_us: 300, share_pct: 35 };
        assert_eq!(m.to_string().parse::<IdleMode>(), Ok(m));
        for bad in ["", "spin", "busy:1", "adaptive:x", "adaptive:10001", "adaptive:5:101", "adaptive:1:2:3"] {
            let e = bad.parse::<IdleMode>().unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}
