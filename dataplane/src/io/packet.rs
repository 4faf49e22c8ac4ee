//! AF_PACKET frame I/O: a raw packet socket bound to one interface.
//!
//! The fallback backend for links where AF_XDP is unavailable. It copies every
//! frame once each way (kernel <-> our buffers), but batches the syscalls:
//! - `rx_burst` reads up to `max` frames with `recvmmsg` into preallocated
//!   slots and hands each slot to the sink. Frames longer than [`MAX_FRAME`]
//!   are dropped and counted (the real length is asked for with `MSG_TRUNC`).
//!   Our own transmissions are not looped back (`PACKET_IGNORE_OUTGOING`, and
//!   the packet type is checked as well for kernels without it).
//! - `tx_frame` has the caller fill a preallocated slot in place; `flush`
//!   sends every staged slot with one `sendmmsg`. A full socket buffer keeps
//!   the frames staged for the next flush; a frame the kernel rejects outright
//!   is dropped and counted, so one bad frame never wedges the port.
//! - The socket is non-blocking; its fd is pollable for the idle mode.
//! - Nothing on the data path allocates or panics on what arrives.
//!
//! The socket is created with protocol 0 (receives nothing) and only then
//! bound to the interface with `ETH_P_ALL`, so no frame of another interface
//! is ever queued on it.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use super::{FramePort, BATCH, MAX_FRAME};

/// Frames per `recvmmsg`/`sendmmsg` and transmit slots.
const SLOTS: usize = BATCH;

/// `PACKET_IGNORE_OUTGOING` (Linux 4.20), from `<linux/if_packet.h>`.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// `PACKET_OUTGOING`, the `sll_pkttype` of frames this host sent.
const PACKET_OUTGOING: u8 = 4;

/// Receive buffer asked for (best effort): ~2000 full-size frames.
const RCVBUF_BYTES: libc::c_int = 4 << 20;

/// Frames an AF_PACKET port moved, dropped or could not place.
#[derive(Debug, Default, Clone, Copy)]
pub struct PacketStats {
    /// Frames handed to the rx sink.
    pub rx_frames: u64,
    /// Frames accepted by the kernel for transmission.
    pub tx_frames: u64,
    /// Received frames longer than [`MAX_FRAME`], dropped.
    pub rx_oversize: u64,
    /// `tx_frame` calls refused because `len` exceeded [`MAX_FRAME`].
    pub tx_oversize: u64,
    /// `tx_frame` calls refused because every slot was staged, plus flushes
    /// cut short by a full socket buffer (frames kept for the next flush).
    pub tx_ring_full: u64,
    /// Staged frames the kernel rejected (e.g. longer than the MTU), dropped.
    pub tx_errors: u64,
}

/// One AF_PACKET socket bound to one interface.
pub struct PacketPort {
    name: String,
    fd: OwnedFd,
    mac: [u8; 6],
    /// `SLOTS` receive buffers of `MAX_FRAME` bytes, back to back.
    rx_buf: Box<[u8]>,
    /// `SLOTS` transmit buffers of `MAX_FRAME` bytes, back to back.
    tx_buf: Box<[u8]>,
    tx_len: [usize; SLOTS],
    /// Staged frames are slots `tx_head..tx_tail`.
    tx_head: usize,
    tx_tail: usize,
    stats: PacketStats,
}

impl fmt::Debug for PacketPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketPort")
            .field("name", &self.name)
            .field("fd", &self.fd)
            .field("staged", &(self.tx_tail - self.tx_head))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The OS error of the last failed call, with context.
fn os_error(ifname: &str, what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("AF_PACKET on {ifname}: {what}: {e}"))
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Sets an integer socket option.
fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The index of `ifname` in the calling thread's network namespace.
fn ifindex(ifname: &str) -> io::Result<libc::c_int> {
    let cname = CString::new(ifname).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("interface {ifname:?}: name contains a NUL byte"))
    })?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("interface {ifname}: {e} (not in this network namespace?)")));
    }
    libc::c_int::try_from(index).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidData, format!("interface {ifname}: ifindex {index} out of range"))
    })
}

/// Reads the MAC address of `ifname` with `SIOCGIFHWADDR`.
///
/// Unlike sysfs (which shows the namespace it was mounted in), the ioctl
/// answers for the calling thread's network namespace, so it is right for a
/// thread that entered another namespace with `setns`.
///
/// # Errors
/// The interface does not exist in this namespace or is not Ethernet.
pub fn link_mac(ifname: &str) -> io::Result<[u8; 6]> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface {ifname:?}: not a valid interface name"),
        ));
    }
    // SAFETY: plain syscall, no pointers.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("interface {ifname}: socket for SIOCGIFHWADDR: {e}")));
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data (a name array and a union of integers,
    // sockaddrs and a pointer); all-zeroes is a valid value of it.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a live, NUL-terminated ifreq the kernel fills in.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req as *mut libc::ifreq) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("interface {ifname}: {e} (not in this network namespace?)")));
    }
    // SAFETY: SIOCGIFHWADDR succeeded, so the union holds `ifru_hwaddr`.
    let addr = unsafe { req.ifr_ifru.ifru_hwaddr };
    if addr.sa_family != libc::ARPHRD_ETHER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("interface {ifname}: not Ethernet (hardware type {})", addr.sa_family),
        ));
    }
    let mut mac = [0u8; 6];
    for (dst, &src) in mac.iter_mut().zip(&addr.sa_data) {
        *dst = src as u8;
    }
    Ok(mac)
}

impl PacketPort {
    /// Opens a non-blocking raw packet socket on `ifname` in the calling
    /// thread's network namespace.
    ///
    /// # Errors
    /// The interface does not exist here, or the kernel refused the socket
    /// (`CAP_NET_RAW` is needed) or the bind.
    pub fn open(ifname: &str) -> io::Result<Self> {
        let index = ifindex(ifname).map_err(|e| io::Error::new(e.kind(), format!("AF_PACKET on {ifname}: {e}")))?;
        let mac = link_mac(ifname).map_err(|e| io::Error::new(e.kind(), format!("AF_PACKET on {ifname}: {e}")))?;

        // Protocol 0: nothing is queued until the bind below picks the
        // interface and ETH_P_ALL.
        // SAFETY: plain syscall, no pointers.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os_error(ifname, "socket (needs root or CAP_NET_RAW)"));
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        if let Err(e) = set_int(fd.as_raw_fd(), libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1) {
            // Pre-4.20 kernel: rx_burst filters PACKET_OUTGOING itself.
            log::debug!("AF_PACKET on {ifname}: PACKET_IGNORE_OUTGOING unavailable ({e})");
        }
        // Best effort: a bigger receive buffer rides out scheduling hiccups.
        // The FORCE variant (CAP_NET_ADMIN) ignores net.core.rmem_max.
        if set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF_BYTES).is_err() {
            let _ = set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF_BYTES);
        }

        // SAFETY: sockaddr_ll is plain old data; all-zeroes is valid.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = index;
        // SAFETY: passes a live sockaddr_ll and its exact size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(os_error(ifname, "bind"));
        }

        Ok(Self {
            name: ifname.to_owned(),
            fd,
            mac,
            rx_buf: vec![0u8; SLOTS * MAX_FRAME].into_boxed_slice(),
            tx_buf: vec![0u8; SLOTS * MAX_FRAME].into_boxed_slice(),
            tx_len: [0; SLOTS],
            tx_head: 0,
            tx_tail: 0,
            stats: PacketStats::default(),
        })
    }

    /// Counters of this port.
    pub fn stats(&self) -> PacketStats {
        self.stats
    }

    /// Receives up to `want` (<= SLOTS) frames into the rx slots. Returns how
    /// many messages arrived, with each one's full length and packet type.
    fn recv_batch(&mut self, want: usize, lens: &mut [usize; SLOTS], types: &mut [u8; SLOTS]) -> io::Result<usize> {
        // SAFETY: iovec, sockaddr_ll and mmsghdr are plain old data (integers
        // and raw pointers); all-zeroes is a valid value of each.
        let mut iov: [libc::iovec; SLOTS] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut names: [libc::sockaddr_ll; SLOTS] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; SLOTS] = unsafe { mem::zeroed() };
        // One base pointer for all slots (not a reborrow per slot).
        let base = self.rx_buf.as_mut_ptr();
        for (i, ((io, name), msg)) in iov.iter_mut().zip(names.iter_mut()).zip(msgs.iter_mut()).enumerate().take(want) {
            // In bounds: i < SLOTS and rx_buf holds SLOTS * MAX_FRAME bytes.
            io.iov_base = base.wrapping_add(i * MAX_FRAME).cast();
            io.iov_len = MAX_FRAME;
            msg.msg_hdr.msg_iov = io;
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_name = (name as *mut libc::sockaddr_ll).cast();
            msg.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        }
        // SAFETY: the first `want` headers point at live iovecs, each covering
        // MAX_FRAME bytes inside `rx_buf`, and at live sockaddr_ll buffers of
        // the stated size; all outlive the call, which writes nothing else.
        let rc = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match errno_of(&e) {
                libc::EAGAIN | libc::EINTR => Ok(0),
                _ => Err(io::Error::new(e.kind(), format!("AF_PACKET on {}: recvmmsg: {e}", self.name))),
            };
        }
        let got = (rc as usize).min(want);
        for i in 0..got {
            // With MSG_TRUNC a packet socket reports the frame's full length.
            lens[i] = msgs[i].msg_len as usize;
            types[i] = names[i].sll_pkttype;
        }
        Ok(got)
    }
}

impl FramePort for PacketPort {
    fn rx_burst(&mut self, max: usize, sink: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        let mut lens = [0usize; SLOTS];
        let mut types = [0u8; SLOTS];
        let mut seen = 0;
        let mut delivered = 0;
        while seen < max {
            let want = (max - seen).min(SLOTS);
            let got = match self.recv_batch(want, &mut lens, &mut types) {
                Ok(got) => got,
                Err(e) => {
                    self.stats.rx_frames += delivered as u64;
                    return Err(e);
                }
            };
            for i in 0..got {
                if types[i] == PACKET_OUTGOING {
                    continue;
                }
                if lens[i] > MAX_FRAME {
                    self.stats.rx_oversize += 1;
                    continue;
                }
                sink(&self.rx_buf[i * MAX_FRAME..i * MAX_FRAME + lens[i]]);
                delivered += 1;
            }
            seen += got;
            if got < want {
                break;
            }
        }
        self.stats.rx_frames += delivered as u64;
        Ok(delivered)
    }

    fn tx_ready(&mut self) -> bool {
        if self.tx_tail == SLOTS {
            let _ = self.flush();
        }
        self.tx_tail < SLOTS
    }

    fn tx_frame(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if len > MAX_FRAME {
            self.stats.tx_oversize += 1;
            return false;
        }
        if self.tx_tail == SLOTS {
            // Errors are counted in the stats; the caller learns of a full
            // port from the `false` below.
            let _ = self.flush();
            if self.tx_tail == SLOTS {
                self.stats.tx_ring_full += 1;
                return false;
            }
        }
        let slot = self.tx_tail;
        fill(&mut self.tx_buf[slot * MAX_FRAME..slot * MAX_FRAME + len]);
        self.tx_len[slot] = len;
        self.tx_tail += 1;
        if self.tx_tail == SLOTS {
            let _ = self.flush();
        }
        true
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut first_err = None;
        while self.tx_head < self.tx_tail {
            let n = self.tx_tail - self.tx_head;
            // SAFETY: iovec and mmsghdr are plain old data; all-zeroes is valid.
            let mut iov: [libc::iovec; SLOTS] = unsafe { mem::zeroed() };
            // SAFETY: as above.
            let mut msgs: [libc::mmsghdr; SLOTS] = unsafe { mem::zeroed() };
            // The kernel only reads through these pointers.
            let base = self.tx_buf.as_ptr();
            for (k, (io, msg)) in iov.iter_mut().zip(msgs.iter_mut()).enumerate().take(n) {
                let slot = self.tx_head + k;
                // In bounds: slot < SLOTS and tx_buf holds SLOTS * MAX_FRAME bytes.
                io.iov_base = base.wrapping_add(slot * MAX_FRAME).cast_mut().cast();
                io.iov_len = self.tx_len[slot];
                // No msg_name: the socket is bound, so frames go out on its
                // interface.
                msg.msg_hdr.msg_iov = io;
                msg.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: the first `n` headers point at live iovecs, each covering
            // a staged frame inside `tx_buf`; the kernel only reads them.
            let rc = unsafe {
                libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT)
            };
            if rc > 0 {
                let sent = (rc as usize).min(n);
                self.tx_head += sent;
                self.stats.tx_frames += sent as u64;
                continue;
            }
            let e = io::Error::last_os_error();
            match errno_of(&e) {
                libc::EINTR => continue,
                libc::EAGAIN | libc::ENOBUFS => {
                    self.stats.tx_ring_full += 1;
                    break;
                }
                _ => {
                    // The head frame itself was refused: drop it so the rest
                    // can go, and report the first such error.
                    self.tx_head += 1;
                    self.stats.tx_errors += 1;
                    first_err.get_or_insert_with(|| {
                        io::Error::new(e.kind(), format!("AF_PACKET on {}: sendmmsg: {e}", self.name))
                    });
                }
            }
        }
        if self.tx_head == self.tx_tail {
            self.tx_head = 0;
            self.tx_tail = 0;
        }
        first_err.map_or(Ok(()), Err)
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
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
    fn missing_interface_is_named() {
        let e = PacketPort::open("agt-none0").unwrap_err().to_string();
        assert!(e.starts_with("AF_PACKET on agt-none0: interface agt-none0"), "{e}");
        let e = link_mac("agt-none0").unwrap_err().to_string();
        assert!(e.contains("agt-none0"), "{e}");
        assert!(link_mac("").is_err());
        assert!(link_mac("a-name-far-too-long-for-linux").is_err());
    }

    #[test]
    fn loopback_is_not_ethernet() {
        let e = link_mac("lo").unwrap_err().to_string();
        assert!(e.contains("not Ethernet"), "{e}");
    }
}
