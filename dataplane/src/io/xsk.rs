//! AF_XDP frame I/O through xsk-rs: one socket on one (interface, queue),
//! with its own UMEM.
//!
//! Contract (on top of [`FramePort`]'s):
//! - The UMEM is split once, at open, into an rx pool and a tx pool. Every rx
//!   frame lives in the fill ring, in the kernel, in the rx ring, or (only
//!   during [`FramePort::rx_burst`]) in our hands; every tx frame lives on the
//!   free list, staged, in the tx ring, in the kernel, or in the completion
//!   ring. The pools never mix, and each pool is no larger than the rings it
//!   cycles through, so producing to the fill and tx rings cannot come up
//!   short and the completion ring cannot overflow.
//! - `rx_burst` hands the sink a slice of the UMEM frame itself (no copy) and
//!   gives the frames back to the fill ring in one batch. Frames longer than
//!   [`MAX_FRAME`] (or split over several buffers) are skipped and counted.
//! - `tx_frame` lets the caller write the frame in place in a UMEM frame;
//!   `flush` produces the staged descriptors to the tx ring in one batch, kicks
//!   the kernel with `sendto` only when the ring says it needs waking
//!   (`XDP_USE_NEED_WAKEUP`), and reclaims completed frames.
//! - Nothing on the data path allocates (every `Vec` is sized at open) or
//!   panics on what the kernel hands back.
//!
//! This module is the one home of AF_XDP `unsafe`: the xsk-rs ring and UMEM
//! calls are `unsafe` because they trust the caller to hand a frame to at most
//! one owner (us, the fill ring, or the tx ring) at a time and to use only this
//! UMEM's descriptors. The pool discipline above is what upholds both.
//!
//! In generic (SKB) mode, which is what veth and most virtual NICs give, the
//! kernel copies frames between the skb and the UMEM, and transmits only when
//! woken (`sendto`, at most 32 frames per call), so `flush` wakes it whenever
//! the tx ring still holds descriptors.

use std::fmt;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};

use xsk_rs::config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::{FramePort, BATCH, MAX_FRAME};

/// Headroom the kernel reserves in front of every UMEM frame
/// (`XDP_PACKET_HEADROOM`); xsk-rs always applies it.
const XDP_HEADROOM: u32 = 256;

/// Where the XDP program that feeds the socket runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Generic XDP on the skb path: works on any interface (veth, virtio,
    /// bridges), always copies.
    Skb,
    /// Native XDP in the driver: needs driver support.
    Driver,
    /// Native if the driver supports it, generic otherwise.
    Auto,
}

/// How an [`XskPort`] sizes and binds its socket.
#[derive(Debug, Clone)]
pub struct XskOptions {
    /// UMEM frames in total (rx pool + tx pool).
    pub frame_count: u32,
    /// Bytes per UMEM frame: a power of two, at least 2048.
    pub frame_size: u32,
    /// Rx ring entries (power of two).
    pub rx_size: u32,
    /// Tx ring entries (power of two).
    pub tx_size: u32,
    /// Fill ring entries (power of two).
    pub fill_size: u32,
    /// Completion ring entries (power of two).
    pub comp_size: u32,
    /// Where the XDP program runs.
    pub mode: XdpMode,
    /// `true` requires zero-copy (`XDP_ZEROCOPY`, driver mode only: the bind
    /// fails if the driver cannot); `false` binds in copy mode (`XDP_COPY`).
    pub zero_copy: bool,
    /// Descriptors moved per ring operation, and staged tx frames that
    /// trigger an automatic flush.
    pub batch: usize,
}

impl Default for XskOptions {
    fn default() -> Self {
        Self {
            frame_count: 4096,
            frame_size: 2048,
            rx_size: 2048,
            tx_size: 2048,
            fill_size: 2048,
            comp_size: 2048,
            mode: XdpMode::Skb,
            zero_copy: false,
            batch: BATCH,
        }
    }
}

/// Frames an AF_XDP port moved, skipped or could not place.
#[derive(Debug, Default, Clone, Copy)]
pub struct XskStats {
    /// Frames handed to the rx sink.
    pub rx_frames: u64,
    /// Frames produced to the tx ring.
    pub tx_frames: u64,
    /// Received frames longer than [`MAX_FRAME`] (or multi-buffer), skipped.
    pub rx_oversize: u64,
    /// `tx_frame` calls refused because `len` exceeded [`MAX_FRAME`].
    pub tx_oversize: u64,
    /// `tx_frame` calls refused for want of a free tx frame, plus flushes
    /// the tx ring could not take in full.
    pub tx_ring_full: u64,
    /// Times the fill ring could not take back every rx frame at once (the
    /// rest are kept and retried on the next burst).
    pub fill_ring_short: u64,
    /// Wakeup syscalls made because a ring asked for one.
    pub wakeups: u64,
}

/// The kernel's own counters for an AF_XDP socket (`XDP_STATISTICS`).
#[derive(Debug, Default, Clone, Copy)]
pub struct XskKernelStats {
    /// Received packets dropped for other reasons.
    pub rx_dropped: u64,
    /// Received packets dropped for an invalid descriptor.
    pub rx_invalid_descs: u64,
    /// Packets to send dropped for an invalid descriptor.
    pub tx_invalid_descs: u64,
    /// Received packets dropped because the rx ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the tx ring empty when woken.
    pub tx_ring_empty_descs: u64,
}

/// One AF_XDP socket on one queue of one interface, with its own UMEM.
///
/// Every field is `Send` (xsk-rs 0.11 makes its UMEM, socket and queue types
/// `Send`; the compiler checks it through the `FramePort: Send` bound), so the
/// port can be opened on the control thread and moved to its pinned core.
/// Nothing here is `Sync` or shared: the one owner is the one user.
pub struct XskPort {
    name: String,
    mac: [u8; 6],
    fd: RawFd,
    tx_size: u32,
    batch: usize,
    /// Rx ring scratch: `batch` descriptors, overwritten by each consume.
    rx_descs: Vec<FrameDesc>,
    /// Rx frames the fill ring could not take back yet (never, by sizing).
    fill_pending: Vec<FrameDesc>,
    /// Tx frames free for `tx_frame` (capacity: the whole tx pool).
    tx_free: Vec<FrameDesc>,
    /// Tx frames filled but not yet produced to the tx ring.
    tx_staged: Vec<FrameDesc>,
    tx_pool: usize,
    stats: XskStats,
    // The queues each hold a handle on the socket, which holds one on the
    // UMEM; dropping the last of them deletes the socket (and detaches the
    // XDP program when it was the last socket on the interface).
    rx_q: RxQueue,
    tx_q: TxQueue,
    fill_q: FillQueue,
    comp_q: CompQueue,
    umem: Umem,
}

impl fmt::Debug for XskPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XskPort")
            .field("name", &self.name)
            .field("fd", &self.fd)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Why the kernel (or libxdp) refused to set the socket up, in the form
/// operators can act on: the OS error, the likely cause for that error, and
/// the usual suspects.
fn setup_error(ifname: &str, queue: u32, stage: &str, err: &(dyn std::error::Error + 'static)) -> io::Error {
    // xsk-rs wraps the OS error in its own; report the OS error itself.
    let mut os = None;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            os = Some(io_err);
        }
        cause = e.source();
    }
    let (kind, detail) = match os {
        Some(e) => (e.kind(), e.to_string()),
        None => (io::ErrorKind::Other, err.to_string()),
    };
    let likely = match os.and_then(io::Error::raw_os_error) {
        Some(libc::EPERM | libc::EACCES) => "AF_XDP needs CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF; ".to_owned(),
        Some(libc::EINVAL) => {
            format!("does {ifname} have queue {queue}? see `ethtool -l {ifname}`; ")
        }
        Some(libc::EBUSY) => format!(
            "is another AF_XDP socket bound to {ifname} queue {queue}, or an XDP program \
             attached in another mode? see `ip link show {ifname}`; "
        ),
        Some(libc::EOPNOTSUPP) => "does the driver support this XDP mode and copy/zero-copy setting? XdpMode::Skb \
             works everywhere; "
            .to_owned(),
        Some(libc::ENOMEM | libc::ENOBUFS) => {
            "is the UMEM larger than RLIMIT_MEMLOCK allows (`ulimit -l`)? ".to_owned()
        }
        _ => String::new(),
    };
    io::Error::new(
        kind,
        format!(
            "AF_XDP on {ifname} queue {queue}: {stage}: {detail} ({likely}is the interface up? \
             is this root? generic XDP needs kernel >= 4.18)"
        ),
    )
}

fn invalid(ifname: &str, queue: u32, detail: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("AF_XDP on {ifname} queue {queue}: {detail}"))
}

impl XskOptions {
    /// Checks the sizes before any kernel object is created.
    fn validate(&self, ifname: &str, queue: u32) -> io::Result<()> {
        for (what, size) in [
            ("rx_size", self.rx_size),
            ("tx_size", self.tx_size),
            ("fill_size", self.fill_size),
            ("comp_size", self.comp_size),
        ] {
            if !size.is_power_of_two() {
                return Err(invalid(ifname, queue, &format!("{what} {size} is not a power of two")));
            }
        }
        if !self.frame_size.is_power_of_two() || self.frame_size < 2048 {
            return Err(invalid(
                ifname,
                queue,
                &format!("frame_size {} must be a power of two >= 2048", self.frame_size),
            ));
        }
        if ((self.frame_size - XDP_HEADROOM) as usize) < MAX_FRAME {
            return Err(invalid(
                ifname,
                queue,
                &format!(
                    "frame_size {} leaves less than {MAX_FRAME} bytes after the {XDP_HEADROOM}-byte XDP headroom",
                    self.frame_size
                ),
            ));
        }
        if self.frame_count < 2 {
            return Err(invalid(ifname, queue, "frame_count must be at least 2 (one rx, one tx)"));
        }
        if self.batch == 0 {
            return Err(invalid(ifname, queue, "batch must be at least 1"));
        }
        if self.zero_copy && self.mode == XdpMode::Skb {
            return Err(invalid(ifname, queue, "zero_copy needs XdpMode::Driver (generic/SKB mode always copies)"));
        }
        Ok(())
    }
}

impl XskPort {
    /// Creates a UMEM and binds an AF_XDP socket to `queue` of `ifname` in the
    /// calling thread's network namespace; libxdp attaches its default XDP
    /// program (redirecting the queue to the socket) if none is attached yet.
    ///
    /// # Errors
    /// Invalid `opts` (`InvalidInput`), an interface that does not exist, or a
    /// kernel refusal (no privilege, no XDP support, queue out of range, queue
    /// already bound); the message names the interface and queue and hints at
    /// the usual causes.
    pub fn open(ifname: &str, queue: u32, opts: &XskOptions) -> io::Result<Self> {
        opts.validate(ifname, queue)?;
        // Through an ioctl, not sysfs: right in whichever network namespace
        // the calling thread is (sysfs shows the one it was mounted in).
        let mac = super::packet::link_mac(ifname)
            .map_err(|e| io::Error::new(e.kind(), format!("AF_XDP on {ifname} queue {queue}: {e}")))?;

        // Rx pool: half the frames, no more than the fill ring (so refilling
        // cannot come up short) or the rx ring (so it cannot overflow). Tx
        // pool: the rest, no more than the tx ring (so a flush always fits)
        // or the completion ring (so completions cannot be lost).
        let rx_pool = (opts.frame_count / 2).min(opts.fill_size).min(opts.rx_size).max(1) as usize;
        let tx_pool = (opts.frame_count as usize - rx_pool).min(opts.tx_size as usize).min(opts.comp_size as usize);

        // validate() already checked what these builders check.
        let config = |e: &dyn std::error::Error| invalid(ifname, queue, &e.to_string());
        let queue_size = |n: u32| QueueSize::new(n).map_err(|e| config(&e));
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(opts.frame_size).map_err(|e| config(&e))?)
            .fill_queue_size(queue_size(opts.fill_size)?)
            .comp_queue_size(queue_size(opts.comp_size)?)
            .frame_headroom(0)
            .build()
            .map_err(|e| config(&e))?;
        let frame_count = NonZeroU32::new(opts.frame_count).unwrap_or(NonZeroU32::MIN);
        let (umem, descs) = Umem::new(umem_config, frame_count, false)
            .map_err(|e| setup_error(ifname, queue, "creating the UMEM", &e))?;

        let xdp_flags = match opts.mode {
            XdpMode::Skb => XdpFlags::XDP_FLAGS_SKB_MODE,
            XdpMode::Driver => XdpFlags::XDP_FLAGS_DRV_MODE,
            XdpMode::Auto => XdpFlags::empty(),
        };
        let copy_flag = if opts.zero_copy { BindFlags::XDP_ZEROCOPY } else { BindFlags::XDP_COPY };
        let socket_config = SocketConfig::builder()
            .rx_queue_size(queue_size(opts.rx_size)?)
            .tx_queue_size(queue_size(opts.tx_size)?)
            .libxdp_flags(LibxdpFlags::empty())
            .xdp_flags(xdp_flags)
            .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP | copy_flag)
            .build();
        let if_name = ifname.parse().map_err(|_| invalid(ifname, queue, "interface name contains a NUL byte"))?;

        // SAFETY: the UMEM was created just above and is used by this socket
        // only, so the (ifname, queue) pair is not already bound from it and
        // `XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD` is not required.
        let (tx_q, rx_q, rings) = unsafe { Socket::new(socket_config, &umem, &if_name, queue) }
            .map_err(|e| setup_error(ifname, queue, "creating the socket", &e))?;
        let (mut fill_q, comp_q) = rings.ok_or_else(|| {
            io::Error::other(format!(
                "AF_XDP on {ifname} queue {queue}: libxdp returned no fill/completion rings \
                 for an unshared UMEM"
            ))
        })?;
        let fd = rx_q.fd().as_raw_fd();

        // SAFETY: `descs[..rx_pool]` are frames of this UMEM that nothing else
        // holds yet; from here they belong to the kernel until they come back
        // through the rx ring.
        let filled = unsafe { fill_q.produce(&descs[..rx_pool]) };
        if filled != rx_pool {
            return Err(io::Error::other(format!(
                "AF_XDP on {ifname} queue {queue}: fill ring took {filled} of {rx_pool} rx frames"
            )));
        }
        let mut tx_free = Vec::with_capacity(tx_pool);
        tx_free.extend_from_slice(&descs[rx_pool..rx_pool + tx_pool]);

        log::debug!(
            "AF_XDP on {ifname} queue {queue}: fd {fd}, {rx_pool} rx + {tx_pool} tx frames of {} bytes, {:?} mode",
            opts.frame_size,
            opts.mode
        );

        Ok(Self {
            name: ifname.to_owned(),
            mac,
            fd,
            tx_size: opts.tx_size,
            batch: opts.batch,
            rx_descs: vec![FrameDesc::default(); opts.batch],
            fill_pending: Vec::with_capacity(rx_pool),
            tx_free,
            tx_staged: Vec::with_capacity(tx_pool),
            tx_pool,
            stats: XskStats::default(),
            rx_q,
            tx_q,
            fill_q,
            comp_q,
            umem,
        })
    }

    /// Counters of this port.
    pub fn stats(&self) -> XskStats {
        self.stats
    }

    /// The kernel's counters for this socket (drops it saw before we did).
    ///
    /// # Errors
    /// `getsockopt(XDP_STATISTICS)` failed.
    pub fn kernel_stats(&self) -> io::Result<XskKernelStats> {
        let s = self.rx_q.fd().xdp_statistics()?;
        Ok(XskKernelStats {
            rx_dropped: s.rx_dropped(),
            rx_invalid_descs: s.rx_invalid_descs(),
            tx_invalid_descs: s.tx_invalid_descs(),
            rx_ring_full: s.rx_ring_full(),
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs(),
            tx_ring_empty_descs: s.tx_ring_empty_descs(),
        })
    }

    /// Moves completed tx frames from the completion ring to the free list.
    fn reclaim(&mut self) {
        let have = self.tx_free.len();
        // Within capacity (the whole tx pool): no allocation.
        self.tx_free.resize(self.tx_pool, FrameDesc::default());
        // SAFETY: the completion ring only ever holds frames of this UMEM's tx
        // pool that we produced to the tx ring; the kernel is done with them.
        // At most `tx_pool - have` of them are outstanding, so the slice has
        // room for all of them.
        let done = unsafe { self.comp_q.consume(&mut self.tx_free[have..]) };
        self.tx_free.truncate(have + done);
    }

    /// Gives rx frames the fill ring could not take earlier back to it.
    fn refill_pending(&mut self) {
        if self.fill_pending.is_empty() {
            return;
        }
        // SAFETY: these are rx-pool frames of this UMEM we consumed from the
        // rx ring and no longer reference.
        let n = unsafe { self.fill_q.produce(&self.fill_pending) };
        if n == self.fill_pending.len() {
            self.fill_pending.clear();
        } else {
            self.stats.fill_ring_short += 1;
        }
    }

    /// Tx descriptors still in the tx ring, not yet taken by the kernel.
    fn tx_ring_pending(&mut self) -> u32 {
        self.tx_size.saturating_sub(self.tx_q.nb_free_exact())
    }
}

impl FramePort for XskPort {
    fn rx_burst(&mut self, max: usize, sink: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        self.refill_pending();
        let mut seen = 0;
        let mut delivered = 0;
        while seen < max {
            let want = (max - seen).min(self.batch);
            // SAFETY: the descriptors written are the kernel's, for frames of
            // this UMEM's rx pool (the only frames in its fill ring).
            let got = unsafe { self.rx_q.consume(&mut self.rx_descs[..want]) };
            if got == 0 {
                break;
            }
            for desc in &self.rx_descs[..got] {
                let len = desc.lengths().data();
                if len > MAX_FRAME || desc.has_more_frames() {
                    self.stats.rx_oversize += 1;
                    continue;
                }
                // SAFETY: `desc` came from this socket's rx ring, so it names
                // a frame of this UMEM that the kernel has finished writing and
                // will not touch until we give it back to the fill ring below,
                // after the sink's borrow has ended.
                let data = unsafe { self.umem.data(desc) };
                sink(data.contents());
                delivered += 1;
            }
            // SAFETY: the frames just consumed are rx-pool frames of this UMEM
            // and no borrow of them outlives the loop above.
            let back = unsafe { self.fill_q.produce(&self.rx_descs[..got]) };
            if back != got {
                // All-or-nothing: keep them and retry on the next burst.
                self.stats.fill_ring_short += 1;
                self.fill_pending.extend_from_slice(&self.rx_descs[..got]);
            }
            seen += got;
            if got < want {
                break;
            }
        }
        self.stats.rx_frames += delivered as u64;
        if self.fill_q.needs_wakeup() {
            // Only drivers that run rx from a wakeup set this flag (never in
            // generic mode): one that ran dry of fill entries stops until
            // kicked, and a zero-timeout poll() kicks it.
            self.stats.wakeups += 1;
            self.fill_q.wakeup(self.rx_q.fd_mut(), 0)?;
        }
        Ok(delivered)
    }

    fn tx_ready(&mut self) -> bool {
        if self.tx_free.is_empty() {
            self.reclaim();
        }
        !self.tx_free.is_empty()
    }

    fn tx_frame(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if len > MAX_FRAME {
            self.stats.tx_oversize += 1;
            return false;
        }
        if self.tx_free.is_empty() {
            self.reclaim();
        }
        let Some(mut desc) = self.tx_free.pop() else {
            self.stats.tx_ring_full += 1;
            return false;
        };
        {
            // SAFETY: `desc` is a tx-pool frame of this UMEM taken from the free
            // list: the kernel completed it (or never had it) and nothing else
            // references it until we stage it below.
            let mut data = unsafe { self.umem.data_mut(&mut desc) };
            // The data area is frame_size - headroom >= MAX_FRAME (checked at
            // open), so the length is not clamped.
            data.cursor().set_pos(len);
            fill(data.contents_mut());
        }
        // Capacity is the whole tx pool, so this never reallocates.
        self.tx_staged.push(desc);
        if self.tx_staged.len() >= self.batch {
            let _ = self.flush();
        }
        true
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.tx_staged.is_empty() {
            // SAFETY: staged frames are tx-pool frames of this UMEM, filled and
            // no longer referenced; the kernel owns them until they come back
            // through the completion ring.
            let n = unsafe { self.tx_q.produce(&self.tx_staged) };
            if n == self.tx_staged.len() {
                self.stats.tx_frames += n as u64;
                self.tx_staged.clear();
            } else {
                // All-or-nothing, and by sizing the ring always has room; if
                // it ever does not, keep them staged for the next flush.
                self.stats.tx_ring_full += 1;
            }
        }
        if self.tx_q.needs_wakeup() && self.tx_ring_pending() > 0 {
            self.stats.wakeups += 1;
            self.tx_q
                .wakeup()
                .map_err(|e| io::Error::new(e.kind(), format!("AF_XDP on {}: tx wakeup: {e}", self.name)))?;
        }
        self.reclaim();
        Ok(())
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd)
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

    fn err(opts: XskOptions) -> String {
        XskPort::open("agt-none0", 0, &opts).unwrap_err().to_string()
    }

    #[test]
    fn bad_options_are_refused_before_touching_the_kernel() {
        let e = err(XskOptions { rx_size: 1000, ..Default::default() });
        assert!(e.contains("agt-none0 queue 0") && e.contains("rx_size 1000"), "{e}");
        let e = err(XskOptions { frame_size: 3000, ..Default::default() });
        assert!(e.contains("frame_size 3000"), "{e}");
        let e = err(XskOptions { zero_copy: true, ..Default::default() });
        assert!(e.contains("zero_copy"), "{e}");
        let e = err(XskOptions { batch: 0, ..Default::default() });
        assert!(e.contains("batch"), "{e}");
    }

    #[test]
    fn missing_interface_is_named_with_a_hint() {
        let e = err(XskOptions::default());
        assert!(e.starts_with("AF_XDP on agt-none0 queue 0: interface agt-none0: "), "{e}");
        assert!(e.contains("not in this network namespace?"), "{e}");
    }
}
