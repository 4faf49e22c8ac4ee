//! Frame I/O: the one trait every backend implements, and the backends.
//!
//! A [`FramePort`] is one queue of one link: an AF_XDP socket bound to a NIC
//! queue (`xsk`), an AF_PACKET socket bound to an interface (`packet`), or one
//! end of an in-process pair (`memory`). The per-core loop owns its ports; a
//! port is never shared between cores.
//!
//! Contract:
//! - `rx_burst` hands each received frame to the sink as a slice borrowed from
//!   the backend's own buffer (the UMEM frame for `xsk`), valid only for that
//!   call; the frame is returned to the backend afterwards.
//! - `tx_frame` reserves one transmit buffer of `len` bytes (the UMEM frame for
//!   `xsk`), lets the caller fill it in place, and queues it. Frames are pushed
//!   to the wire in batches by `flush`, which the core calls once per loop.
//! - Nothing here panics on what arrives from the wire.

use std::io;
use std::os::fd::RawFd;

pub mod memory;
pub mod packet;
#[cfg(feature = "xsk")]
pub mod xsk;

/// Largest frame any backend accepts or emits (Ethernet + 802.1Q, 1500 MTU).
pub const MAX_FRAME: usize = 1518;

/// Default receive/transmit batch size (DPDK l3fwd's burst).
pub const BATCH: usize = 32;

/// One queue of one link, owned by one dp core.
pub trait FramePort: Send {
    /// Receives up to `max` frames, calling `sink` once per frame with a slice
    /// borrowed from the backend's buffer. Returns how many frames were seen.
    ///
    /// # Errors
    /// An I/O error of the underlying socket; frames already delivered stay delivered.
    fn rx_burst(&mut self, max: usize, sink: &mut dyn FnMut(&[u8])) -> io::Result<usize>;

    /// Whether a transmit buffer is available right now.
    fn tx_ready(&mut self) -> bool;

    /// Queues one frame of `len` bytes, filled in place by `fill`. Returns
    /// `false` (and does not call `fill`) when no transmit buffer is free or
    /// `len` exceeds [`MAX_FRAME`].
    fn tx_frame(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool;

    /// Pushes queued frames to the wire (and kicks the kernel when it asks to
    /// be woken). Reclaims completed transmit buffers.
    ///
    /// # Errors
    /// An I/O error of the underlying socket.
    fn flush(&mut self) -> io::Result<()>;

    /// A file descriptor that becomes readable when frames arrive, for the
    /// adaptive idle mode. `None` means the port cannot be waited on.
    fn poll_fd(&self) -> Option<RawFd>;

    /// Called before the core blocks in `poll()` on [`FramePort::poll_fd`].
    /// Returns `false` when frames are already waiting (do not block). Kernel
    /// backends need nothing here; the memory backend arms its eventfd.
    fn arm_wakeup(&mut self) -> bool {
        true
    }

    /// The link's MAC address.
    fn mac(&self) -> [u8; 6];

    /// A name for logs and counters (interface name, `mem:...`).
    fn name(&self) -> &str;
}

/// Which backend drives a link, chosen per interface in the config or CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// AF_XDP through xsk-rs (generic/SKB or native mode).
    Xsk,
    /// AF_PACKET (`recvmmsg`/`sendmmsg` in batches).
    Packet,
    /// In-process pair (tests, benches, `accessgate demo`).
    Memory,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "xsk" => Ok(Self::Xsk),
            "packet" => Ok(Self::Packet),
            "memory" => Ok(Self::Memory),
            other => Err(format!("unknown frame I/O backend {other:?} (expected xsk, packet or memory)")),
        }
    }
}

/// Reads an interface's MAC address (`SIOCGIFHWADDR`, answered for the
/// calling thread's network namespace; sysfs would show the namespace it was
/// mounted in).
///
/// # Errors
/// The interface does not exist in this namespace.
pub fn interface_mac(ifname: &str) -> io::Result<[u8; 6]> {
    packet::link_mac(ifname)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Opens a port on `ifname` with the chosen backend.
///
/// # Errors
/// The backend could not bind to the interface (missing, no permission, no
/// XDP support), or the backend was compiled out.
pub fn open(backend: Backend, ifname: &str, queue: u32) -> io::Result<Box<dyn FramePort>> {
    match backend {
        #[cfg(feature = "xsk")]
        Backend::Xsk => Ok(Box::new(xsk::XskPort::open(ifname, queue, &xsk::XskOptions::default())?)),
        #[cfg(not(feature = "xsk"))]
        Backend::Xsk => {
            Err(io::Error::new(io::ErrorKind::Unsupported, "this build has no AF_XDP support (feature `xsk`)"))
        }
        Backend::Packet => {
            let _ = queue;
            Ok(Box::new(packet::PacketPort::open(ifname)?))
        }
        Backend::Memory => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "memory ports are created in-process with memory::pair(), not opened by name",
        )),
    }
}

/// An eventfd another thread rings to wake a sleeping core (auth verdicts).
pub struct Doorbell {
    fd: RawFd,
}

impl Doorbell {
    /// A new doorbell.
    ///
    /// # Errors
    /// The kernel refused an eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall, no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Wakes the core (a no-op cost if it is not sleeping: one write).
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        unsafe { libc::write(self.fd, (&one as *const u64).cast(), 8) };
    }

    /// Clears pending rings.
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.fd, (&mut v as *mut u64).cast(), 8) };
    }

    /// The fd to include in `poll(2)`.
    pub fn fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        // SAFETY: the fd is owned by this doorbell and closed exactly once.
        unsafe { libc::close(self.fd) };
    }
}

/// Flushes every dirty page and inode of the file system holding `file`
/// (`syncfs(2)`): one call where syncing N files would take N `fdatasync`
/// calls and N journal commits. Write-back errors since the last call are
/// reported (Linux >= 5.8).
///
/// # Errors
/// The sync failed.
pub fn syncfs(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `file` is an open descriptor for the duration of the call;
    // syncfs only reads it.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Restricts the calling thread to `cpus` (`sched_setaffinity(2)`). Threads
/// it spawns afterwards inherit the set.
///
/// # Errors
/// `cpus` is empty or names a CPU past the kernel's set size, or the kernel
/// refuses (a CPU this process may not use).
pub fn set_thread_cpus(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set (plain bytes).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let bits = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpus.is_empty() || cpus.iter().any(|&c| c >= bits) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU set {cpus:?} (at most CPU {})", bits - 1),
        ));
    }
    for &c in cpus {
        // SAFETY: `c` < the set's size in bits (checked above).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 = this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs the calling thread (and the threads it spawns after this) under
/// `SCHED_IDLE` (`idle`: it runs only when nothing else on its CPU wants to,
/// and any other thread that wakes there takes the CPU at once) or the
/// normal policy (`SCHED_OTHER`).
///
/// # Errors
/// The kernel refused (a normal policy from idle needs `CAP_SYS_NICE` or an
/// `RLIMIT_NICE` allowing it).
pub fn set_thread_sched_idle(idle: bool) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    let policy = if idle { libc::SCHED_IDLE } else { libc::SCHED_OTHER };
    // SAFETY: `param` is a valid sched_param; 0 = this thread.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPUs of a kernel CPU mask as `/sys` prints it: hex words, most
/// significant first, comma separated (`3`, `ff,ffffffff`). `None` if it is
/// not one.
pub fn parse_cpu_mask(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for (i, word) in text.trim().rsplit(',').enumerate() {
        if word.is_empty() || word.len() > 8 {
            return None;
        }
        let bits = u32::from_str_radix(word, 16).ok()?;
        cpus.extend((0..32).filter(|b| bits >> b & 1 == 1).map(|b| 32 * i + b));
    }
    cpus.sort_unstable();
    Some(cpus)
}

/// Blocks until one of `fds` is readable or `timeout_ms` passes (`poll(2)`).
/// Returns whether any fd became readable. EINTR counts as a wakeup.
pub fn wait_readable(fds: &[RawFd], timeout_ms: i32) -> bool {
    wait_readable_mask(fds, timeout_ms) != 0
}

/// [`wait_readable`], telling which: bit `i` is set if `fds[i]` is
/// readable (or hung up). Only the first 16 fds are waited on. All bits are
/// set if the wait failed (a signal), so a caller looks at everything.
pub fn wait_readable_mask(fds: &[RawFd], timeout_ms: i32) -> u16 {
    let mut pfds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 16];
    let n = fds.len().min(pfds.len());
    for (p, &fd) in pfds.iter_mut().zip(fds) {
        p.fd = fd;
        p.events = libc::POLLIN;
    }
    // SAFETY: `pfds` is a valid array of `n` initialised pollfd structs that
    // outlives the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        return u16::MAX;
    }
    pfds[..n].iter().enumerate().filter(|(_, p)| p.revents != 0).fold(0, |m, (i, _)| m | 1 << i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread spawned under SCHED_IDLE inherits it, and (with the
    /// privilege a gate has) goes back to the normal policy: what a dp core
    /// does under `--housekeeping-sched idle`.
    #[test]
    fn a_thread_spawned_under_sched_idle_inherits_it_and_can_leave_it() {
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let (inherited, back, after) = std::thread::spawn(move || {
            set_thread_sched_idle(true).unwrap();
            std::thread::spawn(move || {
                let inherited = policy();
                (inherited, set_thread_sched_idle(false), policy())
            })
            .join()
            .unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(inherited, libc::SCHED_IDLE);
        match back {
            Ok(()) => assert_eq!(after, libc::SCHED_OTHER),
            // Without CAP_SYS_NICE: what `run` refuses at start.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM)),
        }
    }

    #[test]
    fn the_wait_says_which_fds_are_readable() {
        let (a, b) = (Doorbell::new().unwrap(), Doorbell::new().unwrap());
        assert_eq!(wait_readable_mask(&[a.fd(), b.fd()], 0), 0);
        b.ring();
        assert_eq!(wait_readable_mask(&[a.fd(), b.fd()], 1000), 0b10);
        a.ring();
        assert_eq!(wait_readable_mask(&[a.fd(), b.fd()], 1000), 0b11);
        a.clear();
        b.clear();
        assert!(!wait_readable(&[a.fd(), b.fd()], 0));
    }

    #[test]
    fn cpu_masks_as_sys_prints_them() {
        assert_eq!(parse_cpu_mask("3\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_mask("1"), Some(vec![0]));
        assert_eq!(parse_cpu_mask("ff,00000001"), Some(vec![0, 32, 33, 34, 35, 36, 37, 38, 39]));
        assert_eq!(parse_cpu_mask("0"), Some(vec![]));
        for bad in ["", "x", "1,,2", "123456789", "-1"] {
            assert_eq!(parse_cpu_mask(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_thread_is_held_to_the_cpus_it_is_given() {
        assert!(set_thread_cpus(&[]).is_err());
        assert!(set_thread_cpus(&[1 << 20]).is_err());
        // The CPUs a thread may run on, as `run` reads them.
        let cpus =
            || -> Vec<usize> { core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect() };
        let all = cpus();
        let first = *all.first().expect("a CPU");
        let seen = std::thread::spawn(move || {
            set_thread_cpus(&[first]).expect("pin to an available CPU");
            // A thread spawned now inherits the set.
            std::thread::spawn(cpus).join().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![first]);
        assert_eq!(cpus(), all, "the test thread itself is untouched");
    }
}
