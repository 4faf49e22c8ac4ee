//! In-process frame links: two [`MemoryPort`]s joined back to back.
//!
//! Used by tests, benches and the root-free `accessgate demo`. Each direction
//! is a bounded lock-free queue of preallocated frame buffers (crossbeam
//! `ArrayQueue`) with a second queue recycling empty buffers, so steady-state
//! traffic allocates nothing. A full queue refuses the frame (`tx_ready` is
//! false), which is exactly what a full NIC ring does.
//!
//! Wakeups for the adaptive idle mode use an eventfd per direction, written
//! only when the receiving side has announced it is about to sleep.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use super::{FramePort, MAX_FRAME};

struct Frame {
    buf: Box<[u8; MAX_FRAME]>,
    len: usize,
}

/// One direction of a memory link.
struct Lane {
    full: ArrayQueue<Frame>,
    free: ArrayQueue<Box<[u8; MAX_FRAME]>>,
    sleeping: AtomicBool,
    event_fd: RawFd,
}

impl Lane {
    fn new(depth: usize) -> io::Result<Self> {
        // SAFETY: plain syscall, no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let free = ArrayQueue::new(depth);
        for _ in 0..depth {
            let _ = free.push(Box::new([0u8; MAX_FRAME]));
        }
        Ok(Self { full: ArrayQueue::new(depth), free, sleeping: AtomicBool::new(false), event_fd: fd })
    }

    fn wake(&self) {
        if self.sleeping.swap(false, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
            unsafe { libc::write(self.event_fd, (&one as *const u64).cast(), 8) };
        }
    }

    fn drain_event(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.event_fd, (&mut v as *mut u64).cast(), 8) };
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // SAFETY: the fd is owned by this lane and closed exactly once.
        unsafe { libc::close(self.event_fd) };
    }
}

/// One end of an in-process link.
pub struct MemoryPort {
    name: String,
    mac: [u8; 6],
    rx: Arc<Lane>,
    tx: Arc<Lane>,
    /// Frames taken from `free` but not yet pushed (batched like a NIC ring).
    pending: Vec<Frame>,
    stats: MemoryStats,
}

/// Frames a memory port moved or refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub tx_full: u64,
}

/// Creates a link of `depth` frames per direction between two ports.
///
/// # Errors
/// The kernel refused an eventfd.
pub fn pair(a: (&str, [u8; 6]), b: (&str, [u8; 6]), depth: usize) -> io::Result<(MemoryPort, MemoryPort)> {
    let ab = Arc::new(Lane::new(depth)?);
    let ba = Arc::new(Lane::new(depth)?);
    let mk = |name: &str, mac, rx: &Arc<Lane>, tx: &Arc<Lane>| MemoryPort {
        name: format!("mem:{name}"),
        mac,
        rx: rx.clone(),
        tx: tx.clone(),
        pending: Vec::with_capacity(super::BATCH),
        stats: MemoryStats::default(),
    };
    Ok((mk(a.0, a.1, &ba, &ab), mk(b.0, b.1, &ab, &ba)))
}

impl MemoryPort {
    /// Counters of this end.
    pub fn stats(&self) -> MemoryStats {
        self.stats
    }
}

impl FramePort for MemoryPort {
    fn rx_burst(&mut self, max: usize, sink: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        let mut n = 0;
        while n < max {
            let Some(frame) = self.rx.full.pop() else {
                break;
            };
            sink(&frame.buf[..frame.len]);
            // The free queue has room for every buffer of the lane by construction.
            let _ = self.rx.free.push(frame.buf);
            n += 1;
        }
        self.stats.rx_frames += n as u64;
        Ok(n)
    }

    fn tx_ready(&mut self) -> bool {
        !self.tx.free.is_empty()
    }

    fn tx_frame(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if len > MAX_FRAME {
            self.stats.tx_full += 1;
            return false;
        }
        let Some(mut buf) = self.tx.free.pop() else {
            self.stats.tx_full += 1;
            return false;
        };
        fill(&mut buf[..len]);
        self.pending.push(Frame { buf, len });
        if self.pending.len() >= super::BATCH {
            let _ = self.flush();
        }
        true
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        for frame in self.pending.drain(..) {
            // `full` and `free` share the lane's depth, so a buffer taken from
            // `free` always fits in `full`.
            if let Err(frame) = self.tx.full.push(frame) {
                let _ = self.tx.free.push(frame.buf);
            }
            self.stats.tx_frames += 1;
        }
        self.tx.wake();
        Ok(())
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.rx.event_fd)
    }

    fn arm_wakeup(&mut self) -> bool {
        self.rx.drain_event();
        self.rx.sleeping.store(true, Ordering::Release);
        if self.rx.full.is_empty() {
            true
        } else {
            self.rx.sleeping.store(false, Ordering::Release);
            false
        }
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_and_buffers_recycle() {
        let (mut a, mut b) = pair(("a", [2, 0, 0, 0, 0, 1]), ("b", [2, 0, 0, 0, 0, 2]), 4).unwrap();
        for round in 0..10u8 {
            assert!(a.tx_frame(3, &mut |buf| buf.copy_from_slice(&[round, 1, 2])));
            a.flush().unwrap();
            let mut got = Vec::new();
            assert_eq!(b.rx_burst(8, &mut |f| got.extend_from_slice(f)).unwrap(), 1);
            assert_eq!(got, [round, 1, 2]);
        }
    }

    #[test]
    fn full_link_refuses_frames() {
        let (mut a, mut b) = pair(("a", [2; 6]), ("b", [4; 6]), 2).unwrap();
        assert!(a.tx_frame(60, &mut |_| {}));
        assert!(a.tx_frame(60, &mut |_| {}));
        assert!(!a.tx_ready());
        assert!(!a.tx_frame(60, &mut |_| {}));
        assert!(!a.tx_frame(MAX_FRAME + 1, &mut |_| {}));
        a.flush().unwrap();
        assert_eq!(b.rx_burst(8, &mut |_| {}).unwrap(), 2);
        assert!(a.tx_ready());
        assert_eq!(a.stats().tx_full, 2);
    }

    #[test]
    fn wakeup_only_when_armed() {
        let (mut a, mut b) = pair(("a", [2; 6]), ("b", [4; 6]), 4).unwrap();
        assert!(b.arm_wakeup());
        assert!(a.tx_frame(60, &mut |_| {}));
        a.flush().unwrap();
        let fd = b.poll_fd().unwrap();
        assert!(super::super::wait_readable(&[fd], 1000));
        assert!(!b.arm_wakeup(), "a frame is waiting, the core must not sleep");
    }
}
