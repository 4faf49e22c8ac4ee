//! Drop path: frames the classifier denies, pushed into the gate's north
//! memory port and drained by `Core::poll_once()`.
//!
//! The clock runs only around the gate's `poll_once` calls (receive burst,
//! classification, counting, the per-loop stack polls and flushes); writing
//! the frames into the link is timed apart and reported as the end-to-end
//! rate, which is what one thread doing both would reach.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use control::Config;
use dataplane::classify::DropReason;
use dataplane::core::{CoreOptions, IdleMode};
use dataplane::io::FramePort;
use perf::memlab::{MemLab, LINK_DEPTH};

use super::mix::{self, Kind};

/// One drop-path measurement.
#[derive(Debug, Clone)]
pub struct DropResult {
    /// Frames the gate received (its `rx_frames`) during the window.
    pub frames: u64,
    /// `drop_total` (from `control.totals()`) during the window.
    pub dropped: u64,
    /// Per kind of frame: (reason counter, frames dropped for it).
    pub by_reason: Vec<(&'static str, u64)>,
    /// Time inside `poll_once`.
    pub gate: Duration,
    /// Whole window (injection + gate).
    pub wall: Duration,
    /// `poll_once` calls.
    pub polls: u64,
}

impl DropResult {
    /// Frames per second of gate time: the per-core rate.
    pub fn gate_fps(&self) -> f64 {
        self.frames as f64 / self.gate.as_secs_f64()
    }
    pub fn gate_ns_per_frame(&self) -> f64 {
        self.gate.as_nanos() as f64 / self.frames as f64
    }
    /// Frames per second of wall time (one thread injecting and draining).
    pub fn wall_fps(&self) -> f64 {
        self.frames as f64 / self.wall.as_secs_f64()
    }
    pub fn frames_per_poll(&self) -> f64 {
        self.frames as f64 / self.polls.max(1) as f64
    }
}

/// Runs the drop path for `warmup` then `seconds`, injecting `batch` frames
/// before each round of `poll_once` calls.
pub fn run(config: &Config, batch: usize, warmup: Duration, seconds: Duration) -> Result<DropResult, String> {
    assert!((1..=LINK_DEPTH).contains(&batch));
    let opts = CoreOptions { idle: IdleMode::Busy, ..CoreOptions::default() };
    let mut lab = MemLab::new(config, opts).map_err(|e| e.to_string())?;
    let snap = lab.control.snapshot();
    let frames = mix::drop_mix(&snap, lab.user.address, lab.user.port.mac())?;

    let mut cursor = 0;
    window(&mut lab, &frames, &mut cursor, batch, warmup)?;
    let before = lab.control.totals();
    let (gate, wall, polls) = window(&mut lab, &frames, &mut cursor, batch, seconds)?;
    let after = lab.control.totals();

    let rx = after.rx_frames - before.rx_frames;
    let dropped = after.dropped_total() - before.dropped_total();
    if dropped != rx {
        return Err(format!("drop path: the gate received {rx} frames but dropped {dropped}: {after:?}"));
    }
    if after.sessions_opened != 0 || after.tx_frames != 0 {
        return Err(format!("drop path: the gate answered a denied frame: {after:?}"));
    }
    let by_reason = Kind::ALL
        .iter()
        .map(|k| {
            let r: DropReason = k.expected();
            (r.as_str(), after.dropped(r) - before.dropped(r))
        })
        .collect();
    Ok(DropResult { frames: rx, dropped, by_reason, gate, wall, polls })
}

/// Injects and drains for `length`; returns (gate time, wall time, polls).
fn window(
    lab: &mut MemLab,
    frames: &[mix::MixFrame],
    cursor: &mut usize,
    batch: usize,
    length: Duration,
) -> Result<(Duration, Duration, u64), String> {
    let counters = lab.gate.counters().clone();
    let mut gate = Duration::ZERO;
    let mut polls = 0u64;
    let start = Instant::now();
    while start.elapsed() < length {
        let target = counters.rx_frames.load(Relaxed) + batch as u64;
        for _ in 0..batch {
            let f = &frames[*cursor].bytes;
            *cursor = (*cursor + 1) % frames.len();
            if !lab.user.port.tx_frame(f.len(), &mut |buf| buf.copy_from_slice(f)) {
                return Err("drop path: the north link refused a frame".into());
            }
        }
        let _ = lab.user.port.flush();
        let t0 = Instant::now();
        let mut idle = 0;
        while counters.rx_frames.load(Relaxed) < target {
            if lab.gate.poll_once() == 0 {
                idle += 1;
                if idle > 1000 {
                    return Err("drop path: the gate stopped receiving".into());
                }
            }
            polls += 1;
        }
        gate += t0.elapsed();
    }
    Ok((gate, start.elapsed(), polls))
}
