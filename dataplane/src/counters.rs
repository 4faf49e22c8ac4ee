//! Per-core counters: written by exactly one dp core, read by the control
//! thread. Single writer, so a relaxed load + store (a plain `mov` on x86) is
//! enough; no locked instructions on the hot path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::classify::DropReason;
use crate::session::CloseReason;

/// Counters of one dp core.
#[derive(Default)]
pub struct CoreCounters {
    pub rx_frames: AtomicU64,
    pub tx_frames: AtomicU64,
    /// Frames smoltcp built while the port had no transmit buffer.
    pub tx_dropped: AtomicU64,
    pub drops: [AtomicU64; DropReason::ALL.len()],
    pub sessions_opened: AtomicU64,
    pub sessions_active: AtomicU64,
    pub closes: [AtomicU64; CloseReason::ALL.len()],
    /// Payload bytes user -> asset.
    pub bytes_up: AtomicU64,
    /// Payload bytes asset -> user.
    pub bytes_down: AtomicU64,
    /// Handshakes that never completed (SYN without ACK, RST in SYN-RECEIVED).
    pub handshakes_failed: AtomicU64,
    /// Modbus requests forwarded / answered with an exception by the gate /
    /// malformed; PLC responses that matched no request.
    pub modbus_allowed: AtomicU64,
    pub modbus_denied: AtomicU64,
    pub modbus_malformed: AtomicU64,
    pub modbus_unmatched: AtomicU64,
    /// The same for S7comm, DNP3 and EtherNet/IP units.
    pub s7: InspectCounters,
    pub dnp3: InspectCounters,
    pub enip: InspectCounters,
    pub loops: AtomicU64,
    pub sleeps: AtomicU64,
    /// Passes without work on which the core gave its CPU to the audit
    /// writer that shares it ([`crate::audit::Pacer`]).
    pub audit_turns: AtomicU64,
    /// Times the core caught a panic outside a session's step and started
    /// over: its sessions closed (`internal_error`), its stacks rebuilt.
    pub core_restarts: AtomicU64,
    /// Passes that did work and took at least 100 µs / 1 ms / 10 ms
    /// (cumulative: a 2 ms pass counts in the first two).
    pub slow_passes: [AtomicU64; STALL_BOUNDS_US.len()],
    /// Times the core was off its CPU (preempted, or held up in a system
    /// call) for at least 100 µs / 1 ms / 10 ms between two passes, its
    /// own sleeps not counted.
    pub stalls: [AtomicU64; STALL_BOUNDS_US.len()],
    /// Snapshot generation the core runs on.
    pub generation: AtomicU64,
}

/// One inspected protocol's units: forwarded, refused by the gate,
/// malformed; the asset's answers that matched no request.
#[derive(Default)]
pub struct InspectCounters {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub malformed: AtomicU64,
    pub unmatched: AtomicU64,
}

impl InspectCounters {
    fn load(&self) -> [u64; 4] {
        [&self.allowed, &self.denied, &self.malformed, &self.unmatched].map(|c| c.load(Relaxed))
    }
}

/// The names of [`InspectCounters`] in `ctl stats`, after the protocol's.
const INSPECT_NAMES: [&str; 4] = ["allowed", "denied", "malformed", "unmatched"];

/// The bounds of [`CoreCounters::slow_passes`] and [`CoreCounters::stalls`].
pub const STALL_BOUNDS_US: [u64; 3] = [100, 1_000, 10_000];

/// The suffixes of their names in `ctl stats`, bound by bound.
pub const STALL_NAMES: [&str; 3] = ["100us", "1ms", "10ms"];

/// `ctl stats` name families of [`CoreCounters::slow_passes`] and
/// [`CoreCounters::stalls`].
pub const SLOW_PASSES: &str = "slow_passes";
pub const STALLS: &str = "stalls";

/// The `ctl stats` name of bucket `i` of `family` ([`SLOW_PASSES`] or
/// [`STALLS`]), e.g. `stalls_1ms`.
pub fn bucket_name(family: &str, i: usize) -> String {
    format!("{family}_{}", STALL_NAMES[i])
}

/// Counts `us` in every bucket of `c` whose bound it reaches.
#[inline]
pub fn bump_over(c: &[AtomicU64; STALL_BOUNDS_US.len()], us: u64) {
    for (bound, slot) in STALL_BOUNDS_US.iter().zip(c) {
        if us < *bound {
            break;
        }
        bump(slot, 1);
    }
}

/// Adds `n` to a counter this thread alone writes.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Sets a gauge this thread alone writes.
#[inline]
pub fn set(c: &AtomicU64, v: u64) {
    c.store(v, Relaxed);
}

/// A plain copy of counters, summed over cores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterTotals {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub tx_dropped: u64,
    pub drops: Vec<(DropReason, u64)>,
    pub sessions_opened: u64,
    pub sessions_active: u64,
    pub closes: Vec<(CloseReason, u64)>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub handshakes_failed: u64,
    pub modbus_allowed: u64,
    pub modbus_denied: u64,
    pub modbus_malformed: u64,
    pub modbus_unmatched: u64,
    /// S7comm, DNP3, EtherNet/IP: allowed, denied, malformed, unmatched.
    pub s7: [u64; 4],
    pub dnp3: [u64; 4],
    pub enip: [u64; 4],
    pub loops: u64,
    pub sleeps: u64,
    pub audit_turns: u64,
    pub core_restarts: u64,
    pub slow_passes: [u64; STALL_BOUNDS_US.len()],
    pub stalls: [u64; STALL_BOUNDS_US.len()],
    pub generation: u64,
}

impl CounterTotals {
    /// Sums the counters of every core.
    pub fn sum<'a>(cores: impl IntoIterator<Item = &'a CoreCounters>) -> Self {
        let mut t = Self {
            drops: DropReason::ALL.iter().map(|r| (*r, 0)).collect(),
            closes: CloseReason::ALL.iter().map(|r| (*r, 0)).collect(),
            ..Self::default()
        };
        let mut first = true;
        for c in cores {
            t.rx_frames += c.rx_frames.load(Relaxed);
            t.tx_frames += c.tx_frames.load(Relaxed);
            t.tx_dropped += c.tx_dropped.load(Relaxed);
            for (slot, v) in t.drops.iter_mut().zip(&c.drops) {
                slot.1 += v.load(Relaxed);
            }
            for (slot, v) in t.closes.iter_mut().zip(&c.closes) {
                slot.1 += v.load(Relaxed);
            }
            t.sessions_opened += c.sessions_opened.load(Relaxed);
            t.sessions_active += c.sessions_active.load(Relaxed);
            t.bytes_up += c.bytes_up.load(Relaxed);
            t.bytes_down += c.bytes_down.load(Relaxed);
            t.handshakes_failed += c.handshakes_failed.load(Relaxed);
            t.modbus_allowed += c.modbus_allowed.load(Relaxed);
            t.modbus_denied += c.modbus_denied.load(Relaxed);
            t.modbus_malformed += c.modbus_malformed.load(Relaxed);
            t.modbus_unmatched += c.modbus_unmatched.load(Relaxed);
            for (total, core) in [(&mut t.s7, &c.s7), (&mut t.dnp3, &c.dnp3), (&mut t.enip, &c.enip)] {
                for (sum, v) in total.iter_mut().zip(core.load()) {
                    *sum += v;
                }
            }
            t.loops += c.loops.load(Relaxed);
            t.sleeps += c.sleeps.load(Relaxed);
            t.audit_turns += c.audit_turns.load(Relaxed);
            t.core_restarts += c.core_restarts.load(Relaxed);
            for i in 0..STALL_BOUNDS_US.len() {
                t.slow_passes[i] += c.slow_passes[i].load(Relaxed);
                t.stalls[i] += c.stalls[i].load(Relaxed);
            }
            let g = c.generation.load(Relaxed);
            t.generation = if first { g } else { t.generation.min(g) };
            first = false;
        }
        t
    }

    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.iter().find(|(r, _)| *r == reason).map_or(0, |(_, v)| *v)
    }

    /// Sessions closed for `reason`.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closes.iter().find(|(r, _)| *r == reason).map_or(0, |(_, v)| *v)
    }

    /// All frames dropped by classification.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().map(|(_, v)| v).sum()
    }

    /// One `name value` pair per line, stable order (for `ctl stats` and logs).
    pub fn to_pairs(&self) -> Vec<(String, u64)> {
        let mut out = vec![
            ("generation".to_string(), self.generation),
            ("rx_frames".into(), self.rx_frames),
            ("tx_frames".into(), self.tx_frames),
            ("tx_dropped".into(), self.tx_dropped),
            ("drop_total".into(), self.dropped_total()),
        ];
        out.extend(self.drops.iter().map(|(r, v)| (format!("drop_{}", r.as_str()), *v)));
        out.extend([
            ("sessions_opened".into(), self.sessions_opened),
            ("sessions_active".into(), self.sessions_active),
            ("handshakes_failed".into(), self.handshakes_failed),
        ]);
        out.extend(self.closes.iter().map(|(r, v)| (format!("close_{}", r.as_str()), *v)));
        out.extend([
            ("modbus_allowed".into(), self.modbus_allowed),
            ("modbus_denied".into(), self.modbus_denied),
            ("modbus_malformed".into(), self.modbus_malformed),
            ("modbus_unmatched".into(), self.modbus_unmatched),
        ]);
        for (proto, totals) in [("s7", &self.s7), ("dnp3", &self.dnp3), ("enip", &self.enip)] {
            out.extend(INSPECT_NAMES.iter().zip(totals).map(|(name, v)| (format!("{proto}_{name}"), *v)));
        }
        out.extend([
            ("bytes_up".into(), self.bytes_up),
            ("bytes_down".into(), self.bytes_down),
            ("loops".into(), self.loops),
            ("sleeps".into(), self.sleeps),
            ("audit_turns".into(), self.audit_turns),
            ("core_restarts".into(), self.core_restarts),
        ]);
        out.extend(self.slow_passes.iter().enumerate().map(|(i, v)| (bucket_name(SLOW_PASSES, i), *v)));
        out.extend(self.stalls.iter().enumerate().map(|(i, v)| (bucket_name(STALLS, i), *v)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_counts_in_every_bucket_it_reaches() {
        let c = CoreCounters::default();
        for us in [0, 99, 100, 999, 1_000, 9_999, 10_000, 250_000] {
            bump_over(&c.stalls, us);
        }
        let t = CounterTotals::sum([&c]);
        assert_eq!(t.stalls, [6, 4, 2]);
        assert_eq!(t.slow_passes, [0, 0, 0]);
        let pairs = t.to_pairs();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(get("stalls_100us"), Some(6));
        assert_eq!(get("stalls_1ms"), Some(4));
        assert_eq!(get("stalls_10ms"), Some(2));
        assert_eq!(get("slow_passes_1ms"), Some(0));
    }
}
