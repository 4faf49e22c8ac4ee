//! A plain TCP/IP host on a memory link: the user's PC and the PLC of the
//! in-memory lab. It is the same smoltcp stack type the gate runs, fed from a
//! [`MemoryPort`] without classification (a host accepts what its stack does).

use std::net::{Ipv4Addr, SocketAddrV4};

use dataplane::io::memory::MemoryPort;
use dataplane::io::{FramePort, BATCH, MAX_FRAME};
use dataplane::snapshot::Ipv4Net;
use dataplane::stack::{Stack, StackAddressing, TxStats};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

/// A host: one port, one stack.
pub struct Host {
    pub port: MemoryPort,
    pub stack: Stack,
    pub address: Ipv4Addr,
    scratch: Box<[u8; MAX_FRAME]>,
    tx: TxStats,
    next_port: u16,
}

impl Host {
    /// A host with `address` (and subnet) routing everything else via `gateway`.
    pub fn new(port: MemoryPort, address: Ipv4Net, gateway: Option<Ipv4Addr>, now: Instant) -> Self {
        let addressing = StackAddressing { mac: port.mac(), address, gateway, any_ip: Vec::new() };
        let stack = Stack::new(0, None, &addressing, 4 * BATCH, u64::from(u32::from(address.addr)), now);
        Self {
            port,
            stack,
            address: address.addr,
            scratch: Box::new([0; MAX_FRAME]),
            tx: TxStats::default(),
            next_port: 40000,
        }
    }

    /// Receives, runs the stack, transmits. Returns frames received.
    pub fn poll(&mut self, now: Instant) -> usize {
        let Self { port, stack, .. } = self;
        let mut n = 0;
        let _ = port.rx_burst(BATCH, &mut |f| {
            if stack.rx.push(f, false) {
                n += 1;
            }
        });
        self.stack.poll(now, &mut self.port, &mut self.scratch, &mut self.tx);
        let _ = self.port.flush();
        n
    }

    /// Opens a TCP connection to `remote`.
    pub fn connect(&mut self, remote: SocketAddrV4, buffer: usize) -> SocketHandle {
        let mut sock =
            tcp::Socket::new(tcp::SocketBuffer::new(vec![0; buffer]), tcp::SocketBuffer::new(vec![0; buffer]));
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        self.next_port = if self.next_port >= 60000 { 40000 } else { self.next_port + 1 };
        let remote = IpEndpoint::new(IpAddress::Ipv4(*remote.ip()), remote.port());
        let local = IpListenEndpoint { addr: Some(IpAddress::Ipv4(self.address)), port: self.next_port };
        // A fresh socket with a unicast remote and nonzero local port always connects.
        let _ = sock.connect(self.stack.iface.context(), remote, local);
        self.stack.sockets.add(sock)
    }

    /// A listening socket on `port`.
    pub fn listen(&mut self, port: u16, buffer: usize) -> SocketHandle {
        let mut sock =
            tcp::Socket::new(tcp::SocketBuffer::new(vec![0; buffer]), tcp::SocketBuffer::new(vec![0; buffer]));
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        let _ = sock.listen(port);
        self.stack.sockets.add(sock)
    }

    /// A socket of this host.
    pub fn socket(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.stack.sockets.get_mut::<tcp::Socket>(h)
    }

    /// Removes a closed socket.
    pub fn remove(&mut self, h: SocketHandle) {
        self.stack.sockets.remove(h);
    }
}
