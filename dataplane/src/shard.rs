//! The gate's smoltcp stacks, sharded so that a packet costs the same with
//! ten sessions or ten thousand.
//!
//! smoltcp walks its whole `SocketSet` twice per poll: on ingress to find
//! the socket a segment belongs to, and on egress to ask every socket
//! whether it has something to send. With one set per stack, every frame
//! paid for every open connection (the load bench measured an idle loop of
//! 4.4 µs with 100 sessions and ~1 ms with 10,100). Here a stack keeps one
//! `Interface` but spreads its sockets over [`BUCKETS`] socket sets by a hash
//! of the connection's addresses ([`FlowKey`]):
//!
//! - **Ingress**: each frame is parsed just far enough to compute its key,
//!   and only its bucket is handed to `poll_ingress_single`. Frames that
//!   match no connection (SYNs, ARP, strays) go to bucket 0, which holds the
//!   listening sockets: smoltcp answers there exactly as it would have.
//! - **Egress**: only buckets that received a frame, whose sockets the core
//!   touched (every mutable access marks the bucket), or whose smoltcp timer
//!   is due are polled. Each bucket caches its `poll_at`, and a min-heap of
//!   those times (one entry per bucket) says which are due without looking
//!   at the others: a scan of every bucket whenever the earliest timer
//!   passed read 80 KiB per stack, the largest part of egress in a
//!   one-frame pass on cold caches (`accessgate-perf pass`).
//! - **Ownership**: every socket outside bucket 0 records the session slot
//!   that owns it, so ingress tells the core exactly which sessions have
//!   work (its ready list) instead of the core stepping every session.
//!
//! A listening socket that completes its handshake is *promoted*: moved out
//! of bucket 0 into its hashed bucket (a smoltcp socket is a plain value).

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::stack::{RxRing, Stack, StackDevice, Wire};

/// Hashed buckets per stack (a power of two), plus bucket 0 for listeners.
pub const BUCKETS: usize = 1024;

/// The bucket of listening sockets and of frames no connection claims.
const LISTEN: usize = 0;

/// No session owns the socket (a listener, or a retired socket lingering).
pub const NO_OWNER: u32 = u32::MAX;

/// A socket of a sharded stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sock {
    bucket: u32,
    handle: SocketHandle,
}

/// A TCP connection's addresses, seen from the gate's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub remote_ip: u32,
    pub local_ip: u32,
    pub remote_port: u16,
    pub local_port: u16,
}

impl FlowKey {
    /// The key of an untagged Ethernet/IPv4/TCP frame arriving at the gate,
    /// and whether it is a pure SYN (a connection request). `None` for
    /// anything else (ARP, ICMP, fragments, truncated headers).
    pub fn of_frame(frame: &[u8]) -> Option<(Self, bool)> {
        let ip = frame.get(14..)?;
        if frame.get(12..14)? != [0x08, 0x00] || ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
            return None;
        }
        // A non-first fragment carries no TCP header.
        if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
            return None;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ihl < 20 {
            return None;
        }
        let tcp = ip.get(ihl..ihl + 14)?;
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let key = Self {
            remote_ip: be32(&ip[12..16]),
            local_ip: be32(&ip[16..20]),
            remote_port: u16::from_be_bytes([tcp[0], tcp[1]]),
            local_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        };
        let flags = tcp[13];
        Some((key, flags & 0x12 == 0x02))
    }

    /// The key of a socket with both endpoints known.
    pub fn of_socket(s: &tcp::Socket<'_>) -> Option<Self> {
        let (remote, local) = (s.remote_endpoint()?, s.local_endpoint()?);
        let v4 = |e: IpEndpoint| match e.addr {
            IpAddress::Ipv4(a) => Some((u32::from(a), e.port)),
            #[allow(unreachable_patterns)]
            _ => None,
        };
        let ((remote_ip, remote_port), (local_ip, local_port)) = (v4(remote)?, v4(local)?);
        Some(Self { remote_ip, local_ip, remote_port, local_port })
    }

    /// The hashed bucket (1..=BUCKETS).
    fn bucket(&self) -> usize {
        let x = (u64::from(self.remote_ip) << 32 | u64::from(self.remote_port) << 16 | u64::from(self.local_port))
            ^ u64::from(self.local_ip).rotate_left(23);
        let h = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        1 + (h >> (64 - BUCKETS.trailing_zeros())) as usize
    }
}

struct Member {
    key: FlowKey,
    handle: SocketHandle,
    owner: u32,
}

struct Bucket {
    set: SocketSet<'static>,
    members: Vec<Member>,
    dirty: bool,
    /// smoltcp's `poll_at` after this bucket's last egress poll.
    due: Option<Instant>,
}

/// Buckets by the time their timers are due, earliest first: a binary
/// min-heap indexed by bucket, so a bucket has at most one entry and its
/// time is changed in place. (A heap with lazy deletion, tried first, kept
/// every superseded time until it came up: a socket's timer moves each
/// request, and its far keep-alive times piled up to a heap too large for
/// the caches, which cost the gate more than the scans it replaced.)
struct Timers {
    /// Bucket ids, heap-ordered by `at`.
    heap: Vec<u32>,
    /// Each bucket's index in `heap`, or [`Timers::NONE`].
    place: Vec<u32>,
    /// Each queued bucket's time.
    at: Vec<Instant>,
}

impl Timers {
    const NONE: u32 = u32::MAX;

    fn new(buckets: usize) -> Self {
        Self {
            heap: Vec::with_capacity(buckets),
            place: vec![Self::NONE; buckets],
            at: vec![Instant::from_micros(0); buckets],
        }
    }

    /// Bucket `i` comes up at `at` (`None`: not at all).
    fn set(&mut self, i: u32, at: Option<Instant>) {
        let p = self.place[i as usize];
        match (at, p) {
            (None, Self::NONE) => {}
            (None, p) => self.remove_at(p as usize),
            (Some(t), Self::NONE) => {
                self.at[i as usize] = t;
                self.place[i as usize] = self.heap.len() as u32;
                self.heap.push(i);
                self.up(self.heap.len() - 1);
            }
            (Some(t), p) => {
                let before = std::mem::replace(&mut self.at[i as usize], t);
                if t < before {
                    self.up(p as usize);
                } else {
                    self.down(p as usize);
                }
            }
        }
    }

    /// The next bucket due at `now` or earlier, taken off the heap.
    fn pop_due(&mut self, now: Instant) -> Option<u32> {
        let &i = self.heap.first()?;
        if self.at[i as usize] > now {
            return None;
        }
        self.remove_at(0);
        Some(i)
    }

    /// When the earliest bucket comes up.
    fn next(&self) -> Option<Instant> {
        self.heap.first().map(|&i| self.at[i as usize])
    }

    fn remove_at(&mut self, p: usize) {
        let last = self.heap.len() - 1;
        self.swap(p, last);
        if let Some(i) = self.heap.pop() {
            self.place[i as usize] = Self::NONE;
        }
        if p < self.heap.len() {
            self.down(p);
            self.up(p);
        }
    }

    fn key(&self, p: usize) -> Instant {
        self.at[self.heap[p] as usize]
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.place[self.heap[a] as usize] = a as u32;
        self.place[self.heap[b] as usize] = b as u32;
    }

    fn up(&mut self, mut p: usize) {
        while p > 0 {
            let parent = (p - 1) / 2;
            if self.key(parent) <= self.key(p) {
                break;
            }
            self.swap(p, parent);
            p = parent;
        }
    }

    fn down(&mut self, mut p: usize) {
        loop {
            let (l, r) = (2 * p + 1, 2 * p + 2);
            let mut least = p;
            if l < self.heap.len() && self.key(l) < self.key(least) {
                least = l;
            }
            if r < self.heap.len() && self.key(r) < self.key(least) {
                least = r;
            }
            if least == p {
                break;
            }
            self.swap(p, least);
            p = least;
        }
    }
}

/// One smoltcp interface whose sockets are spread over hashed buckets.
pub struct ShardedStack {
    pub iface: Interface,
    pub rx: RxRing,
    /// Index of the link (port) it transmits on.
    pub link: usize,
    pub vlan: Option<u16>,
    buckets: Box<[Bucket]>,
    dirty: Vec<u32>,
    /// Buckets whose timers were due in this egress pass.
    fired: Vec<u32>,
    /// Buckets by the time their timers are due.
    timers: Timers,
}

/// What an ingress or egress pass tells the core.
pub trait Touch {
    /// A socket owned by session slot `owner` may have changed.
    fn owner(&mut self, owner: u32);
    /// A listening socket may have changed (accept, or top up the pool).
    fn listeners(&mut self);
}

impl ShardedStack {
    /// The stack `plain` (its interface, receive ring and link), its
    /// sockets spread over buckets from now on.
    pub fn new(plain: Stack) -> Self {
        let Stack { iface, rx, link, vlan, .. } = plain;
        let buckets = (0..=BUCKETS)
            .map(|_| Bucket { set: SocketSet::new(Vec::new()), members: Vec::new(), dirty: false, due: None })
            .collect();
        Self {
            iface,
            rx,
            link,
            vlan,
            buckets,
            dirty: Vec::with_capacity(64),
            fired: Vec::with_capacity(64),
            timers: Timers::new(BUCKETS + 1),
        }
    }

    fn mark(&mut self, bucket: usize) {
        let b = &mut self.buckets[bucket];
        if !b.dirty {
            b.dirty = true;
            self.dirty.push(bucket as u32);
        }
    }

    /// A socket, for changing it: its bucket is polled on the next egress.
    pub fn socket(&mut self, s: Sock) -> &mut tcp::Socket<'static> {
        self.mark(s.bucket as usize);
        self.buckets[s.bucket as usize].set.get_mut::<tcp::Socket>(s.handle)
    }

    /// A socket, for looking at it.
    pub fn peek(&self, s: Sock) -> &tcp::Socket<'static> {
        self.buckets[s.bucket as usize].set.get::<tcp::Socket>(s.handle)
    }

    /// Adds a listening socket (or any socket no frame is routed to).
    pub fn add_listener(&mut self, sock: tcp::Socket<'static>) -> Sock {
        self.mark(LISTEN);
        let handle = self.buckets[LISTEN].set.add(sock);
        Sock { bucket: LISTEN as u32, handle }
    }

    /// Adds a socket whose endpoints are known (after `connect`) to its
    /// hashed bucket, owned by `owner`. One without endpoints (a failed
    /// connect) goes to bucket 0, where nothing is routed to it.
    pub fn add(&mut self, sock: tcp::Socket<'static>, owner: u32) -> Sock {
        let Some(key) = FlowKey::of_socket(&sock) else {
            return self.add_listener(sock);
        };
        let bucket = key.bucket();
        // A socket lingering with the same addresses is a dead connection
        // whose port the peer reused: it would shadow the new one.
        if let Some(i) = self.buckets[bucket].members.iter().position(|m| m.key == key && m.owner == NO_OWNER) {
            let old = self.buckets[bucket].members.swap_remove(i);
            self.buckets[bucket].set.remove(old.handle);
        }
        self.mark(bucket);
        let b = &mut self.buckets[bucket];
        let handle = b.set.add(sock);
        b.members.push(Member { key, handle, owner });
        Sock { bucket: bucket as u32, handle }
    }

    /// Moves a listener that accepted a connection to its hashed bucket,
    /// owned by `owner`.
    pub fn promote(&mut self, s: Sock, owner: u32) -> Sock {
        if s.bucket as usize != LISTEN {
            self.set_owner(s, owner);
            return s;
        }
        if FlowKey::of_socket(self.peek(s)).is_none() {
            return s;
        }
        let sock = self.buckets[LISTEN].set.remove(s.handle);
        // The gate's stacks are built with TCP sockets only.
        let smoltcp::socket::Socket::Tcp(sock) = sock;
        self.add(sock, owner)
    }

    /// Changes who owns a socket ([`NO_OWNER`] when its session ends).
    pub fn set_owner(&mut self, s: Sock, owner: u32) {
        if let Some(m) = self.buckets[s.bucket as usize].members.iter_mut().find(|m| m.handle == s.handle) {
            m.owner = owner;
        }
    }

    /// Whether a socket of these addresses is in the stack (live or
    /// lingering): a new connection from `local` must not reuse them.
    pub fn in_use(&self, key: FlowKey) -> bool {
        self.buckets[key.bucket()].members.iter().any(|m| m.key == key)
    }

    /// Whether `s` still names a socket no session owns (a retired one, or
    /// a listener). A retired socket that `add` evicted (its peer reused
    /// its addresses) does not, even when the new socket took its handle:
    /// whoever kept `s` must forget it, not touch or remove it.
    pub fn lingers(&self, s: Sock) -> bool {
        s.bucket as usize == LISTEN
            || self.buckets[s.bucket as usize].members.iter().any(|m| m.handle == s.handle && m.owner == NO_OWNER)
    }

    /// Removes a socket.
    pub fn remove(&mut self, s: Sock) {
        let b = &mut self.buckets[s.bucket as usize];
        if let Some(i) = b.members.iter().position(|m| m.handle == s.handle) {
            b.members.swap_remove(i);
        }
        b.set.remove(s.handle);
    }

    /// Runs every frame of the receive ring through smoltcp, each against
    /// its own bucket only.
    pub fn ingest(&mut self, now: Instant, wire: &mut Wire<'_>, touch: &mut impl Touch) -> usize {
        let mut frames = 0;
        let mut other = false;
        loop {
            let Self { rx, buckets, iface, vlan, .. } = self;
            let Some(frame) = rx.pop() else { break };
            frames += 1;
            let (bucket, owner, tcp) = Self::route_in(buckets, frame);
            other |= !tcp;
            let mut dev = StackDevice::one(Some(frame), wire, *vlan);
            iface.poll_ingress_single(now, &mut dev, &mut buckets[bucket].set);
            self.mark(bucket);
            if bucket == LISTEN {
                touch.listeners();
            } else if owner != NO_OWNER {
                touch.owner(owner);
            }
        }
        if other {
            // An ARP reply may release sockets that wait for their neighbour:
            // poll every bucket with a pending timer.
            for i in 0..self.buckets.len() {
                if self.buckets[i].due.is_some() {
                    self.mark(i);
                }
            }
        }
        frames
    }

    /// The bucket a frame belongs to, the session that owns its socket, and
    /// whether it is TCP at all.
    fn route_in(buckets: &[Bucket], frame: &[u8]) -> (usize, u32, bool) {
        let Some((key, syn)) = FlowKey::of_frame(frame) else { return (LISTEN, NO_OWNER, false) };
        let bucket = key.bucket();
        let mut lingering = false;
        for m in &buckets[bucket].members {
            if m.key == key {
                if m.owner != NO_OWNER {
                    return (bucket, m.owner, true);
                }
                lingering = true;
            }
        }
        // A new connection on a reused port goes to the listeners, not to
        // the dead connection lingering under the same addresses.
        if lingering && !syn {
            (bucket, NO_OWNER, true)
        } else {
            (LISTEN, NO_OWNER, true)
        }
    }

    /// Transmits what the touched buckets' sockets have to send and runs
    /// the timers that are due. Sockets whose timers ran are reported (a
    /// timeout may have closed them).
    pub fn egress(&mut self, now: Instant, wire: &mut Wire<'_>, touch: &mut impl Touch) {
        while let Some(i) = self.timers.pop_due(now) {
            let b = &mut self.buckets[i as usize];
            self.fired.push(i);
            if !b.dirty {
                b.dirty = true;
                self.dirty.push(i);
            }
        }
        for &i in &self.dirty {
            let Self { buckets, iface, vlan, timers, .. } = self;
            let b = &mut buckets[i as usize];
            let mut dev = StackDevice::one(None, wire, *vlan);
            iface.poll_egress(now, &mut dev, &mut b.set);
            b.dirty = false;
            b.due = iface.poll_at(now, &b.set);
            timers.set(i, b.due);
        }
        self.dirty.clear();
        // A timer that ran may have closed a socket (connect or keep-alive
        // timeout): its session looks.
        for &i in &self.fired {
            if i as usize == LISTEN {
                touch.listeners();
            }
            for m in &self.buckets[i as usize].members {
                if m.owner != NO_OWNER {
                    touch.owner(m.owner);
                }
            }
        }
        self.fired.clear();
    }

    /// How long until this stack needs an egress pass (zero if one is owed).
    pub fn poll_delay(&self, now: Instant) -> Option<Duration> {
        if !self.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        self.timers.next().map(|d| if d > now { d - now } else { Duration::ZERO })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xorshift::XorShift;

    /// Ethernet + IPv4 (IHL 5) + TCP header, 198.18.0.2:40000 -> 100.64.3.7:802.
    fn tcp_frame(flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 6;
        f[26..30].copy_from_slice(&[198, 18, 0, 2]);
        f[30..34].copy_from_slice(&[100, 64, 3, 7]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&802u16.to_be_bytes());
        f[46] = 0x50;
        f[47] = flags;
        f
    }

    #[test]
    fn timers_come_up_in_order_at_their_latest_time_and_once() {
        let t = |ms| Some(Instant::from_millis(ms));
        let mut q = Timers::new(8);
        q.set(3, t(30));
        q.set(1, t(10));
        q.set(2, t(20));
        q.set(4, t(40));
        // Moved earlier, moved later, taken off: the latest word counts.
        q.set(3, t(5));
        q.set(2, t(50));
        q.set(4, None);
        q.set(5, None);
        assert_eq!(q.next(), t(5));
        assert_eq!(q.pop_due(Instant::from_millis(4)), None);
        assert_eq!(q.pop_due(Instant::from_millis(25)), Some(3));
        assert_eq!(q.pop_due(Instant::from_millis(25)), Some(1));
        assert_eq!(q.pop_due(Instant::from_millis(25)), None);
        assert_eq!(q.next(), t(50));
        assert_eq!(q.pop_due(Instant::from_millis(1000)), Some(2));
        assert_eq!((q.pop_due(Instant::from_millis(1000)), q.next()), (None, None));
        // A bucket that came up can be set again; one entry per bucket.
        q.set(2, t(60));
        q.set(2, t(70));
        assert_eq!(q.heap.len(), 1);
        assert_eq!(q.pop_due(Instant::from_millis(69)), None);
        assert_eq!(q.pop_due(Instant::from_millis(70)), Some(2));
    }

    #[test]
    fn random_timers_match_a_scan_of_every_bucket() {
        // The reference is what egress did before the heap: scan every
        // bucket for a time that has passed.
        let mut rng = XorShift::new(7);
        let mut q = Timers::new(64);
        let mut due: [Option<i64>; 64] = [None; 64];
        let mut now = 0i64;
        for _ in 0..50_000 {
            let i = (rng.next_u64() % 64) as usize;
            match rng.next_u64() % 4 {
                0 | 1 => {
                    let at = now + (rng.next_u64() % 50) as i64;
                    due[i] = Some(at);
                    q.set(i as u32, Some(Instant::from_millis(at)));
                }
                2 => {
                    due[i] = None;
                    q.set(i as u32, None);
                }
                _ => {
                    now += (rng.next_u64() % 20) as i64;
                    let mut fired = Vec::new();
                    while let Some(b) = q.pop_due(Instant::from_millis(now)) {
                        fired.push(b as usize);
                    }
                    let mut want: Vec<usize> = (0..64).filter(|&b| due[b].is_some_and(|d| d <= now)).collect();
                    for &b in &want {
                        due[b] = None;
                    }
                    fired.sort_unstable();
                    want.sort_unstable();
                    assert_eq!(fired, want, "at {now}");
                    let earliest = due.iter().flatten().min().map(|&d| Instant::from_millis(d));
                    assert_eq!(q.next(), earliest);
                    assert_eq!(q.heap.len(), due.iter().flatten().count());
                }
            }
        }
    }

    #[test]
    fn keys_come_from_the_addresses_and_syn_is_a_pure_syn() {
        let (key, syn) = FlowKey::of_frame(&tcp_frame(0x02)).unwrap();
        assert_eq!(key, FlowKey { remote_ip: 0xc612_0002, local_ip: 0x6440_0307, remote_port: 40000, local_port: 802 });
        assert!(syn);
        assert!(!FlowKey::of_frame(&tcp_frame(0x12)).unwrap().1, "SYN-ACK is not a connection request");
        assert!(!FlowKey::of_frame(&tcp_frame(0x10)).unwrap().1);
        assert!((1..=BUCKETS).contains(&key.bucket()));
    }

    #[test]
    fn what_is_not_a_first_tcp_fragment_has_no_key() {
        let good = tcp_frame(0x10);
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut udp = good.clone();
        udp[23] = 17;
        let mut v6 = good.clone();
        v6[14] = 0x65;
        let mut fragment = good.clone();
        fragment[20] = 0x00;
        fragment[21] = 0x08; // offset 64 bytes: no TCP header in this one
        let mut long_ihl = good.clone();
        long_ihl[14] = 0x4f; // 60-byte IP header: the TCP ports are past the end
        let mut short_ihl = good.clone();
        short_ihl[14] = 0x44; // 16 bytes: not a valid IPv4 header
        let cases =
            [("arp", arp), ("udp", udp), ("ipv6", v6), ("fragment", fragment), ("ihl", long_ihl), ("ihl<5", short_ihl)];
        for (what, f) in cases {
            assert!(FlowKey::of_frame(&f).is_none(), "{what}");
        }
        // A first fragment (more-fragments set, offset 0) still has its ports.
        let mut first = good.clone();
        first[20] = 0x20;
        assert!(FlowKey::of_frame(&first).is_some());
    }

    #[test]
    fn every_prefix_and_random_bytes_never_panic() {
        let good = tcp_frame(0x18);
        for n in 0..good.len() {
            let got = FlowKey::of_frame(&good[..n]);
            // The ports and flags end at byte 48.
            assert_eq!(got.is_some(), n >= 48, "prefix of {n} bytes");
        }
        let mut rng = XorShift::new(0x5eed);
        for _ in 0..20_000 {
            let mut f = good.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(f.len());
                f[i] = rng.byte();
            }
            f.truncate(rng.below(f.len() + 1));
            if let Some((key, _)) = FlowKey::of_frame(&f) {
                assert!((1..=BUCKETS).contains(&key.bucket()));
            }
        }
    }

    /// A retired socket evicted by a new connection with its addresses is
    /// not lingering any more, even when the new socket took its handle:
    /// the core forgets its entry instead of reaping the new one (found by
    /// a review: the stale entry named a live session's socket, and the
    /// reap that followed would remove it or panic).
    #[test]
    fn an_evicted_lingering_socket_lingers_no_more() {
        use crate::snapshot::Ipv4Net;
        use crate::stack::{Stack, StackAddressing};
        use smoltcp::wire::IpListenEndpoint;
        let now = Instant::from_millis(0);
        let addressing = StackAddressing {
            mac: [2, 0, 0, 0, 0, 1],
            address: Ipv4Net { addr: std::net::Ipv4Addr::new(10, 0, 0, 1), len: 24 },
            gateway: None,
            any_ip: Vec::new(),
        };
        let mut st = ShardedStack::new(Stack::new(1, None, &addressing, 4, 1, now));
        let connected = |st: &mut ShardedStack| {
            let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 64]), tcp::SocketBuffer::new(vec![0; 64]));
            let remote = IpEndpoint::new(IpAddress::v4(10, 0, 0, 7), 502);
            let local = IpListenEndpoint { addr: Some(IpAddress::v4(10, 0, 0, 1)), port: 50000 };
            s.connect(st.iface.context(), remote, local).unwrap();
            s
        };
        // Session in slot 3 connects from local port 50000, ends; core::retire
        // marks the socket NO_OWNER and keeps `old` on its lingering list.
        let s = connected(&mut st);
        let old = st.add(s, 3);
        st.set_owner(old, NO_OWNER);
        // 16384 connects later the port counter is back at 50000 (same asset).
        let s = connected(&mut st);
        let new = st.add(s, 5);
        assert!(!st.lingers(old), "the core's lingering entry would name slot 5's live socket");
        assert!(!st.lingers(new));
        st.set_owner(new, NO_OWNER);
        assert!(st.lingers(new), "retired in its turn");
    }
}
