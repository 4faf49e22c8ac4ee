//! Classifier micro: `dataplane::classify::classify` called in a loop over a
//! fixed set of frames, nothing else (no port, no counters, no stacks).

use std::hint::black_box;
use std::time::{Duration, Instant};

use dataplane::classify::classify;
use dataplane::snapshot::{Side, Snapshot};

/// Frames classified per clock read.
const CHUNK: usize = 4096;

/// One classifier measurement.
#[derive(Debug, Clone, Copy)]
pub struct MicroResult {
    pub frames: u64,
    pub elapsed: Duration,
}

impl MicroResult {
    pub fn ns_per_frame(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.frames as f64
    }
    pub fn frames_per_sec(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64()
    }
}

/// Classifies `frames` round-robin on the north link for `warmup` then `seconds`.
pub fn run(frames: &[&[u8]], snap: &Snapshot, warmup: Duration, seconds: Duration) -> MicroResult {
    assert!(!frames.is_empty());
    window(frames, snap, warmup);
    window(frames, snap, seconds)
}

fn window(frames: &[&[u8]], snap: &Snapshot, length: Duration) -> MicroResult {
    let mut n = 0u64;
    let mut i = 0;
    let start = Instant::now();
    loop {
        for _ in 0..CHUNK {
            let f = frames[i];
            i += 1;
            if i == frames.len() {
                i = 0;
            }
            black_box(classify(black_box(f), Side::North, black_box(0), snap));
        }
        n += CHUNK as u64;
        let elapsed = start.elapsed();
        if elapsed >= length {
            return MicroResult { frames: n, elapsed };
        }
    }
}
