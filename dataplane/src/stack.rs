//! A smoltcp stack fed by the classifier: its receive ring and its `Device`.
//!
//! The classifier copies each admitted frame once, into the target stack's
//! [`RxRing`] (stripping an 802.1Q tag on the way: smoltcp speaks untagged
//! Ethernet). smoltcp then reads frames from the ring in place. Transmit goes
//! straight into the port's transmit buffer (a UMEM frame for AF_XDP): smoltcp
//! serialises the frame there, and the tag is inserted in place. No allocation
//! after setup.

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

use crate::io::{FramePort, MAX_FRAME};
use crate::snapshot::Ipv4Net;

/// Ethernet frame length smoltcp may emit (untagged, 1500 MTU).
const ETH_MTU: usize = 1514;

/// Frames a stack handed to its port, and frames it built with no buffer to
/// put them in (TCP retransmits those).
#[derive(Debug, Default, Clone, Copy)]
pub struct TxStats {
    pub sent: u64,
    pub dropped: u64,
}

/// A fixed ring of frame buffers between the classifier and one stack.
pub struct RxRing {
    slots: Box<[[u8; MAX_FRAME]]>,
    lens: Box<[u16]>,
    head: usize,
    len: usize,
}

impl RxRing {
    /// A ring of `capacity` frames, allocated once.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            slots: vec![[0u8; MAX_FRAME]; capacity].into_boxed_slice(),
            lens: vec![0u16; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    /// Copies `frame` in, removing the 4-byte 802.1Q tag at offset 12 when
    /// `strip_vlan`. Returns `false` if the ring is full or the frame is too
    /// short or too long.
    pub fn push(&mut self, frame: &[u8], strip_vlan: bool) -> bool {
        if self.len == self.slots.len() || frame.len() > MAX_FRAME || (strip_vlan && frame.len() < 18) {
            return false;
        }
        let idx = (self.head + self.len) % self.slots.len();
        let slot = &mut self.slots[idx];
        let n = if strip_vlan {
            slot[..12].copy_from_slice(&frame[..12]);
            slot[12..frame.len() - 4].copy_from_slice(&frame[16..]);
            frame.len() - 4
        } else {
            slot[..frame.len()].copy_from_slice(frame);
            frame.len()
        };
        // MAX_FRAME < u16::MAX, so the length always fits.
        self.lens[idx] = n as u16;
        self.len += 1;
        true
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn pop(&mut self) -> Option<&[u8]> {
        if self.len == 0 {
            return None;
        }
        let idx = self.head;
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        Some(&self.slots[idx][..usize::from(self.lens[idx])])
    }
}

/// Where a stack's frames go out: the port, a scratch frame for when the
/// port has no buffer, and the transmit counts.
pub struct Wire<'a> {
    pub port: &'a mut dyn FramePort,
    pub scratch: &'a mut [u8; MAX_FRAME],
    pub tx: &'a mut TxStats,
}

/// Where a device's received frames come from.
enum Source<'a> {
    /// A stack's receive ring, drained.
    Ring(&'a mut RxRing),
    /// One frame (or none: an egress-only pass).
    One(Option<&'a [u8]>),
}

/// The `smoltcp::phy::Device` of one stack for one poll: frames from its ring
/// (or a single frame), transmissions into its port.
pub struct StackDevice<'a> {
    rx: Source<'a>,
    port: &'a mut dyn FramePort,
    vlan: Option<u16>,
    scratch: &'a mut [u8; MAX_FRAME],
    tx: &'a mut TxStats,
}

impl<'a> StackDevice<'a> {
    /// A device that receives `frame` (if any) and transmits on `wire`,
    /// tagging frames with `vlan`.
    pub fn one(frame: Option<&'a [u8]>, wire: &'a mut Wire<'_>, vlan: Option<u16>) -> Self {
        Self { rx: Source::One(frame), port: &mut *wire.port, vlan, scratch: &mut *wire.scratch, tx: &mut *wire.tx }
    }
}

/// Device capabilities shared by every stack: Ethernet, 1500 MTU, batch 32.
/// Checksums are verified on receive and computed on transmit by smoltcp
/// (the lab turns off checksum offload on the peers so AF_XDP sees full sums).
pub fn capabilities() -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = ETH_MTU;
    caps.max_burst_size = Some(crate::io::BATCH);
    let mut sums = ChecksumCapabilities::default();
    sums.ipv4 = Checksum::Both;
    sums.tcp = Checksum::Both;
    caps.checksum = sums;
    caps
}

pub struct RxToken<'a>(&'a [u8]);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub struct TxToken<'a> {
    port: &'a mut dyn FramePort,
    vlan: Option<u16>,
    scratch: &'a mut [u8; MAX_FRAME],
    tx: &'a mut TxStats,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut f = Some(f);
        let mut out = None;
        let extra = if self.vlan.is_some() { 4 } else { 0 };
        let vlan = self.vlan;
        let sent = self.port.tx_frame(len + extra, &mut |buf: &mut [u8]| {
            if let Some(f) = f.take() {
                out = Some(f(&mut buf[extra..]));
            }
            if let (Some(id), true) = (vlan, buf.len() >= 18) {
                buf.copy_within(4..16, 0);
                buf[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
                buf[14..16].copy_from_slice(&(id & 0x0fff).to_be_bytes());
            }
        });
        if sent {
            self.tx.sent += 1;
        }
        match (out, f) {
            (Some(r), _) => r,
            // No transmit buffer: smoltcp's frame is built and discarded; TCP
            // retransmits it. Counted as `tx_dropped`.
            (None, Some(f)) => {
                self.tx.dropped += 1;
                let n = len.min(MAX_FRAME);
                f(&mut self.scratch[..n])
            }
            (None, None) => unreachable!("fill closure ran but produced no value"),
        }
    }
}

impl phy::Device for StackDevice<'_> {
    type RxToken<'b>
        = RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let frame = match &mut self.rx {
            Source::Ring(ring) => ring.pop()?,
            Source::One(frame) => frame.take()?,
        };
        Some((
            RxToken(frame),
            TxToken { port: &mut *self.port, vlan: self.vlan, scratch: &mut *self.scratch, tx: &mut *self.tx },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if !self.port.tx_ready() {
            return None;
        }
        Some(TxToken { port: &mut *self.port, vlan: self.vlan, scratch: &mut *self.scratch, tx: &mut *self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities()
    }
}

/// One smoltcp interface with one socket set and a receive ring: a plain
/// host (the in-memory lab's PCs and PLCs). The gate's cores use
/// [`crate::shard::ShardedStack`].
pub struct Stack {
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub rx: RxRing,
    /// Index of the link (port) it transmits on.
    pub link: usize,
    pub vlan: Option<u16>,
}

/// How a stack is addressed.
pub struct StackAddressing {
    pub mac: [u8; 6],
    /// The gate's address on the link, with its subnet.
    pub address: Ipv4Net,
    /// Next hop for destinations outside `address`'s subnet.
    pub gateway: Option<std::net::Ipv4Addr>,
    /// Prefixes this stack owns entirely (AnyIP): the segment's overlay /24,
    /// and on one stack the gate's own login address.
    pub any_ip: Vec<Ipv4Net>,
}

/// The smoltcp interface of a stack: its MAC, address, default route and
/// AnyIP prefixes.
pub fn interface(addressing: &StackAddressing, seed: u64, now: Instant) -> Interface {
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(addressing.mac)));
    config.random_seed = seed;
    let mut dummy = NullDevice;
    let mut iface = Interface::new(config, &mut dummy, now);
    let own = addressing.address.addr;
    iface.update_ip_addrs(|addrs| {
        // Capacity is a compile-time feature (8); one address never overflows it.
        let _ = addrs.push(IpCidr::new(own.into(), addressing.address.len));
    });
    if let Some(gw) = addressing.gateway {
        let _ = iface.routes_mut().add_default_ipv4_route(gw);
    }
    for &prefix in &addressing.any_ip {
        iface.set_any_ip(true);
        let cidr = IpCidr::new(prefix.network().into(), prefix.len);
        iface.routes_mut().update(|routes| {
            let _ = routes.push(smoltcp::iface::Route {
                cidr,
                via_router: own.into(),
                preferred_until: None,
                expires_at: None,
            });
        });
    }
    iface
}

impl Stack {
    /// Builds a stack on link `link`.
    pub fn new(
        link: usize,
        vlan: Option<u16>,
        addressing: &StackAddressing,
        ring: usize,
        seed: u64,
        now: Instant,
    ) -> Self {
        let iface = interface(addressing, seed, now);
        Self { iface, sockets: SocketSet::new(Vec::new()), rx: RxRing::new(ring), link, vlan }
    }

    /// Runs smoltcp over the ring and the port. Returns whether any socket may
    /// have changed state.
    pub fn poll(
        &mut self,
        now: Instant,
        port: &mut dyn FramePort,
        scratch: &mut [u8; MAX_FRAME],
        tx: &mut TxStats,
    ) -> bool {
        let mut dev = StackDevice { rx: Source::Ring(&mut self.rx), port, vlan: self.vlan, scratch, tx };
        self.iface.poll(now, &mut dev, &mut self.sockets) == smoltcp::iface::PollResult::SocketStateChanged
    }

    /// How long until smoltcp needs a poll for its timers.
    pub fn poll_delay(&mut self, now: Instant) -> Option<smoltcp::time::Duration> {
        self.iface.poll_delay(now, &self.sockets)
    }
}

/// A device with nothing to say, for `Interface::new`.
struct NullDevice;

impl phy::Device for NullDevice {
    type RxToken<'b>
        = RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b>
    where
        Self: 'b;
    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        None
    }
    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        None
    }
    fn capabilities(&self) -> DeviceCapabilities {
        capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_strips_vlan_and_wraps() {
        let mut ring = RxRing::new(2);
        let mut tagged = vec![0xAAu8; 12];
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x1e, 0x08, 0x00, 1, 2, 3]);
        assert!(ring.push(&tagged, true));
        assert!(ring.push(&[7u8; 60], false));
        assert!(!ring.push(&[7u8; 60], false), "full");
        let f = ring.pop().unwrap().to_vec();
        assert_eq!(&f[..12], &[0xAA; 12]);
        assert_eq!(&f[12..], &[0x08, 0x00, 1, 2, 3]);
        assert_eq!(ring.pop().unwrap().len(), 60);
        assert!(ring.pop().is_none());
        for i in 0..5u8 {
            assert!(ring.push(&[i; 64], false));
            assert_eq!(ring.pop().unwrap()[0], i);
        }
        assert!(!ring.push(&[0u8; 10], true), "too short to carry a tag");
        assert!(!ring.push(&vec![0u8; MAX_FRAME + 1], false));
    }
}
