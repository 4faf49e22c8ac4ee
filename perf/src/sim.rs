//! A Modbus/TCP PLC simulator for the in-memory lab and benches: a register
//! bank served on smoltcp sockets, fast enough never to be the bottleneck.
//!
//! Holding register `i` starts at value `i`, input register `i` at `1000 + i`
//! (the same layout as `scripts/plc_server.py`), coil `i` is on when `i` is
//! odd, discrete input `i` when `i` is even. Supported: 1, 2, 3, 4, 5, 6, 15, 16; anything else gets
//! exception 01, an address past the bank exception 02. Every request it
//! serves is appended to [`PlcSim::log`] so tests can show what the PLC saw.

use std::collections::HashMap;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use crate::host::Host;

/// Registers and coils per table.
pub const BANK: usize = 10_000;

/// Request bytes held per connection, at most, while answers wait for room.
const MAX_PENDING: usize = 64 * 1024;

/// One request the PLC served: (unit, function, address, quantity or value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub unit: u8,
    pub function: u8,
    pub address: u16,
    pub quantity: u16,
}

/// The PLC: a bank and the sockets it serves.
pub struct PlcSim {
    pub holding: Vec<u16>,
    pub coils: Vec<bool>,
    pub log: Vec<Served>,
    port: u16,
    listeners: Vec<SocketHandle>,
    conns: HashMap<SocketHandle, Vec<u8>>,
    /// Keep a log of served requests (off for benches).
    pub logging: bool,
    accepting: bool,
}

impl PlcSim {
    /// A PLC listening on `port` of `host` with `backlog` ready listeners.
    pub fn new(host: &mut Host, port: u16, backlog: usize) -> Self {
        let mut sim = Self {
            holding: (0..BANK).map(|i| i as u16).collect(),
            coils: (0..BANK).map(|i| i % 2 == 1).collect(),
            log: Vec::new(),
            port,
            listeners: Vec::new(),
            conns: HashMap::new(),
            logging: true,
            accepting: true,
        };
        for _ in 0..backlog {
            sim.listeners.push(host.listen(port, 4096));
        }
        sim
    }

    /// Accepts, answers every complete request, closes finished connections.
    /// Returns requests served.
    pub fn serve(&mut self, host: &mut Host) -> usize {
        let mut served = 0;
        let mut i = 0;
        while i < self.listeners.len() {
            let h = self.listeners[i];
            if host.socket(h).state() != tcp::State::Listen {
                self.listeners.swap_remove(i);
                self.conns.insert(h, Vec::with_capacity(512));
                if self.accepting {
                    self.listeners.push(host.listen(self.port, 4096));
                }
            } else {
                i += 1;
            }
        }
        let mut dead = Vec::new();
        for (&h, buf) in &mut self.conns {
            let sock = host.socket(h);
            // Requests wait in the socket (closing the client's window)
            // while answers cannot leave.
            while sock.can_recv() && buf.len() < MAX_PENDING {
                let _ = sock.recv(|d| {
                    buf.extend_from_slice(d);
                    (d.len(), ())
                });
            }
            while buf.len() >= 7 {
                let len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
                if !(2..=254).contains(&len) {
                    sock.abort();
                    buf.clear();
                    break;
                }
                // An answer is at most 260 bytes: without room for it the
                // request waits (dropped, the answer would be lost and the
                // stream cut mid-frame).
                if buf.len() < 6 + len || sock.send_capacity() - sock.send_queue() < 260 {
                    break;
                }
                let mut resp = [0u8; 260];
                let n = answer(
                    &mut self.holding,
                    &mut self.coils,
                    &buf[..6 + len],
                    &mut resp,
                    self.logging.then_some(&mut self.log),
                );
                let sent = sock.send_slice(&resp[..n]);
                debug_assert_eq!(sent, Ok(n), "room was checked");
                buf.drain(..6 + len);
                served += 1;
            }
            if matches!(sock.state(), tcp::State::CloseWait) && buf.is_empty() {
                sock.close();
            }
            if sock.state() == tcp::State::Closed {
                dead.push(h);
            }
        }
        for h in dead {
            self.conns.remove(&h);
            host.remove(h);
        }
        served
    }
}

fn answer(
    holding: &mut [u16],
    coils: &mut [bool],
    adu: &[u8],
    out: &mut [u8; 260],
    log: Option<&mut Vec<Served>>,
) -> usize {
    let unit = adu[6];
    let function = adu[7];
    let pdu = &adu[8..];
    out[..4].copy_from_slice(&adu[..4]);
    out[6] = unit;
    let word = |i: usize| pdu.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (address, quantity) = (word(0).unwrap_or(0), word(2).unwrap_or(0));
    if let Some(log) = log {
        log.push(Served { unit, function, address, quantity });
    }
    let a = usize::from(address);
    let q = usize::from(quantity);
    let exception = |out: &mut [u8; 260], code: u8| {
        out[4..6].copy_from_slice(&3u16.to_be_bytes());
        out[7] = function | 0x80;
        out[8] = code;
        9
    };
    let body_len = match function {
        3 | 4 if pdu.len() == 4 && (1..=125).contains(&q) => {
            if a + q > BANK {
                return exception(out, 2);
            }
            out[7] = function;
            out[8] = (2 * q) as u8;
            for k in 0..q {
                let v = if function == 3 { holding[a + k] } else { 1000u16.wrapping_add((a + k) as u16) };
                out[9 + 2 * k..11 + 2 * k].copy_from_slice(&v.to_be_bytes());
            }
            2 + 2 * q
        }
        1 | 2 if pdu.len() == 4 && (1..=2000).contains(&q) => {
            if a + q > BANK {
                return exception(out, 2);
            }
            out[7] = function;
            let bytes = q.div_ceil(8);
            out[8] = bytes as u8;
            out[9..9 + bytes].fill(0);
            for k in 0..q {
                let bit = if function == 1 { coils[a + k] } else { (a + k) % 2 == 0 };
                if bit {
                    out[9 + k / 8] |= 1 << (k % 8);
                }
            }
            2 + bytes
        }
        5 | 6 if pdu.len() == 4 => {
            if a >= BANK {
                return exception(out, 2);
            }
            if function == 5 {
                match quantity {
                    0xFF00 => coils[a] = true,
                    0x0000 => coils[a] = false,
                    _ => return exception(out, 3),
                }
            } else {
                holding[a] = quantity;
            }
            out[7..12].copy_from_slice(&adu[7..12]);
            5
        }
        16 if pdu.len() >= 5 && (1..=123).contains(&q) && usize::from(pdu[4]) == 2 * q && pdu.len() == 5 + 2 * q => {
            if a + q > BANK {
                return exception(out, 2);
            }
            for k in 0..q {
                holding[a + k] = u16::from_be_bytes([pdu[5 + 2 * k], pdu[6 + 2 * k]]);
            }
            out[7..12].copy_from_slice(&adu[7..12]);
            5
        }
        15 if pdu.len() >= 5
            && (1..=1968).contains(&q)
            && usize::from(pdu[4]) == q.div_ceil(8)
            && pdu.len() == 5 + q.div_ceil(8) =>
        {
            if a + q > BANK {
                return exception(out, 2);
            }
            for k in 0..q {
                coils[a + k] = pdu[5 + k / 8] & (1 << (k % 8)) != 0;
            }
            out[7..12].copy_from_slice(&adu[7..12]);
            5
        }
        1..=6 | 15 | 16 => return exception(out, 3),
        _ => return exception(out, 1),
    };
    out[4..6].copy_from_slice(&((body_len + 1) as u16).to_be_bytes());
    6 + 1 + body_len
}

impl PlcSim {
    /// Resets every open connection (the PLC "disappears" mid-session).
    pub fn abort_all(&mut self, host: &mut Host) {
        for &h in self.conns.keys() {
            host.socket(h).abort();
        }
    }

    /// Stops accepting: listeners are closed, so new connects get RST.
    pub fn stop_listening(&mut self, host: &mut Host) {
        self.accepting = false;
        for h in self.listeners.drain(..) {
            host.socket(h).abort();
            host.remove(h);
        }
    }

    /// Connections currently open.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

/// Builds a Modbus/TCP request ADU into `out`, returns its length.
pub fn request(out: &mut [u8], tid: u16, unit: u8, function: u8, body: &[u8]) -> usize {
    let n = 8 + body.len();
    out[..2].copy_from_slice(&tid.to_be_bytes());
    out[2..4].fill(0);
    out[4..6].copy_from_slice(&((2 + body.len()) as u16).to_be_bytes());
    out[6] = unit;
    out[7] = function;
    out[8..n].copy_from_slice(body);
    n
}

/// Read holding registers request body.
pub fn read_holding(address: u16, count: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&address.to_be_bytes());
    b[2..].copy_from_slice(&count.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(bank: &mut (Vec<u16>, Vec<bool>), function: u8, body: &[u8]) -> Vec<u8> {
        let mut req = [0u8; 260];
        let n = request(&mut req, 7, 1, function, body);
        let mut out = [0u8; 260];
        let m = answer(&mut bank.0, &mut bank.1, &req[..n], &mut out, None);
        out[..m].to_vec()
    }

    /// Pipelined reads whose answers exceed the socket's free send buffer
    /// (4096 bytes) wait for room: none is cut off or dropped while counted
    /// as served (found by a review: answers past the buffer were lost).
    #[test]
    fn answers_that_do_not_fit_wait_for_room() {
        use dataplane::io::memory;
        use dataplane::snapshot::Ipv4Net;
        use smoltcp::time::Instant;
        use std::net::{Ipv4Addr, SocketAddrV4};
        let (a, b) = memory::pair(("c", [2, 0, 0, 0, 0, 1]), ("p", [2, 0, 0, 0, 0, 2]), 1024).unwrap();
        let now = Instant::from_millis(0);
        let mut client = Host::new(a, Ipv4Net { addr: Ipv4Addr::new(10, 0, 0, 1), len: 24 }, None, now);
        let mut plc = Host::new(b, Ipv4Net { addr: Ipv4Addr::new(10, 0, 0, 2), len: 24 }, None, now);
        let mut sim = PlcSim::new(&mut plc, 502, 1);
        sim.logging = false;
        let c = client.connect(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 502), 1 << 16);
        let mut served = 0;
        let mut got = Vec::new();
        let mut sent = false;
        for step in 0..2000u64 {
            let t = Instant::from_millis(step as i64);
            client.poll(t);
            plc.poll(t);
            served += sim.serve(&mut plc);
            let s = client.socket(c);
            if !sent && s.may_send() {
                // 20 reads of 125 registers: 20 × 259 = 5,180 bytes of answers.
                for tid in 0..20u16 {
                    let mut req = [0u8; 260];
                    let n = request(&mut req, tid, 1, 3, &read_holding(0, 125));
                    assert_eq!(s.send_slice(&req[..n]).unwrap(), n);
                }
                sent = true;
            }
            while s.can_recv() {
                let _ = s.recv(|d| {
                    got.extend_from_slice(d);
                    (d.len(), ())
                });
            }
        }
        assert_eq!(served, 20);
        assert_eq!(got.len(), 20 * 259, "the PLC counted 20 served but sent {} bytes", got.len());
    }

    #[test]
    fn reads_writes_and_exceptions() {
        let mut bank = ((0..BANK).map(|i| i as u16).collect::<Vec<_>>(), vec![false; BANK]);
        assert_eq!(ask(&mut bank, 3, &read_holding(100, 2)), [0, 7, 0, 0, 0, 7, 1, 3, 4, 0, 100, 0, 101]);
        assert_eq!(ask(&mut bank, 6, &[0, 100, 0x04, 0xD2]), [0, 7, 0, 0, 0, 6, 1, 6, 0, 100, 0x04, 0xD2]);
        assert_eq!(bank.0[100], 1234);
        assert_eq!(ask(&mut bank, 3, &read_holding(9999, 2)), [0, 7, 0, 0, 0, 3, 1, 0x83, 2]);
        assert_eq!(ask(&mut bank, 8, &[0, 0, 0, 0]), [0, 7, 0, 0, 0, 3, 1, 0x88, 1]);
        assert_eq!(ask(&mut bank, 3, &read_holding(0, 126)), [0, 7, 0, 0, 0, 3, 1, 0x83, 3]);
        assert_eq!(ask(&mut bank, 16, &[0, 5, 0, 2, 4, 0, 9, 0, 8]), [0, 7, 0, 0, 0, 6, 1, 16, 0, 5, 0, 2]);
        assert_eq!(&bank.0[5..7], &[9, 8]);
    }
}
