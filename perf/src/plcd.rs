//! `accessgate-plcd`: a fast Modbus/TCP PLC simulator for the network
//! benchmarks (`scripts/bench`), so that the PLC is never the bottleneck
//! (the Python `scripts/plc_server.py` serves a few thousand requests per
//! second; this serves hundreds of thousands on one core).
//!
//! One thread, one epoll loop (mio), non-blocking sockets. Every complete
//! request in a read is answered in order and the answers go out in one
//! write, so pipelined requests are safe and cheap.
//!
//! The register bank has 65 536 entries per table: holding register `i`
//! starts at `i`, input register `i` is `1000 + i` (mod 2^16), the layout of
//! `scripts/plc_server.py` and `perf::sim`. Served: 3 (read holding), 4 (read
//! input), 6 (write single), 16 (write multiple); every other function gets
//! exception 01, a range past the bank exception 02, a bad quantity or
//! length exception 03. A malformed MBAP header (protocol id not 0, length
//! below 2 or above 254) closes the connection, as a real PLC would.
#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

#[derive(Parser, Debug)]
#[command(name = "accessgate-plcd", about = "Fast Modbus/TCP PLC simulator for benchmarks")]
struct Args {
    /// Address to listen on (repeat for several).
    #[arg(long, value_name = "IP:PORT", required = true)]
    listen: Vec<SocketAddr>,
    /// Pin the server thread to this CPU.
    #[arg(long, value_name = "CPU")]
    cpu: Option<usize>,
    /// Print the request and connection counts every N seconds (0: never).
    #[arg(long, default_value_t = 0)]
    stats_every: u64,
    /// Stop after this many seconds (0: run until killed).
    #[arg(long, default_value_t = 0)]
    max_seconds: u64,
}

/// Entries per register table.
const BANK: usize = 65_536;
/// Stop reading from a connection whose unsent answers exceed this.
const WRITE_HIGH: usize = 1 << 20;
/// The listeners' tokens are 0..LISTENERS; connections come after.
const MAX_LISTENERS: usize = 16;

struct Conn {
    sock: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
}

struct Plc {
    holding: Vec<u16>,
    requests: u64,
    exceptions: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accessgate-plcd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args) -> Result<(), String> {
    if args.listen.len() > MAX_LISTENERS {
        return Err(format!("at most {MAX_LISTENERS} --listen addresses"));
    }
    if let Some(cpu) = args.cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            return Err(format!("--cpu {cpu}: cannot pin to it"));
        }
    }
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut listeners = Vec::new();
    for (i, addr) in args.listen.iter().enumerate() {
        let mut l = TcpListener::bind(*addr).map_err(|e| format!("--listen {addr}: {e}"))?;
        poll.registry().register(&mut l, Token(i), Interest::READABLE).map_err(|e| e.to_string())?;
        eprintln!("accessgate-plcd: listening on {addr}");
        listeners.push(l);
    }
    let mut plc = Plc { holding: (0..BANK).map(|i| i as u16).collect(), requests: 0, exceptions: 0 };
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut next_stats = started + Duration::from_secs(args.stats_every.max(1));
    let deadline = (args.max_seconds > 0).then(|| started + Duration::from_secs(args.max_seconds));
    let mut open = 0usize;
    loop {
        let timeout = if args.stats_every > 0 || deadline.is_some() { Some(Duration::from_millis(200)) } else { None };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        }
        for ev in &events {
            let t = ev.token().0;
            if t < MAX_LISTENERS {
                let l = &listeners[t];
                loop {
                    match l.accept() {
                        Ok((mut sock, _)) => {
                            let _ = sock.set_nodelay(true);
                            let slot = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry()
                                .register(
                                    &mut sock,
                                    Token(MAX_LISTENERS + slot),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .map_err(|e| e.to_string())?;
                            conns[slot] = Some(Conn { sock, rbuf: Vec::new(), wbuf: Vec::new(), wpos: 0 });
                            open += 1;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        // Out of fds and the like: try again on the next event.
                        Err(_) => break,
                    }
                }
                continue;
            }
            let slot = t - MAX_LISTENERS;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else { continue };
            if !service(conn, &mut plc, &mut chunk) {
                if let Some(mut c) = conns[slot].take() {
                    let _ = poll.registry().deregister(&mut c.sock);
                }
                free.push(slot);
                open -= 1;
            }
        }
        let now = Instant::now();
        if args.stats_every > 0 && now >= next_stats {
            eprintln!(
                "accessgate-plcd: {:.0} s: {} requests, {} exceptions, {open} connections",
                (now - started).as_secs_f64(),
                plc.requests,
                plc.exceptions
            );
            next_stats += Duration::from_secs(args.stats_every);
        }
        if deadline.is_some_and(|d| now >= d) {
            eprintln!("accessgate-plcd: --max-seconds reached: {} requests served", plc.requests);
            return Ok(());
        }
    }
}

/// Reads, answers and writes what it can; false when the connection is done.
fn service(conn: &mut Conn, plc: &mut Plc, chunk: &mut [u8]) -> bool {
    loop {
        if !flush(conn) {
            return false;
        }
        if conn.wbuf.len() - conn.wpos > WRITE_HIGH {
            // Wait for the writable edge; reading resumes after the flush.
            return true;
        }
        match conn.sock.read(chunk) {
            Ok(0) => return false,
            Ok(n) => {
                conn.rbuf.extend_from_slice(&chunk[..n]);
                let used = match answer_all(&conn.rbuf, &mut conn.wbuf, plc) {
                    Some(used) => used,
                    None => return false,
                };
                conn.rbuf.drain(..used);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return flush(conn),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Writes pending answers until the socket would block; false on error.
fn flush(conn: &mut Conn) -> bool {
    while conn.wpos < conn.wbuf.len() {
        match conn.sock.write(&conn.wbuf[conn.wpos..]) {
            Ok(0) => return false,
            Ok(n) => conn.wpos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    conn.wbuf.clear();
    conn.wpos = 0;
    true
}

/// Answers every complete request at the start of `buf` into `out`; returns
/// the bytes used, or `None` when the stream is not Modbus/TCP.
fn answer_all(buf: &[u8], out: &mut Vec<u8>, plc: &mut Plc) -> Option<usize> {
    let mut at = 0;
    while buf.len() - at >= 7 {
        let h = &buf[at..];
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if h[2] != 0 || h[3] != 0 || !(2..=254).contains(&len) {
            return None;
        }
        if h.len() < 6 + len {
            break;
        }
        answer(&h[..6 + len], out, plc);
        at += 6 + len;
    }
    Some(at)
}

/// Appends the answer to one complete frame (MBAP + PDU) to `out`.
fn answer(frame: &[u8], out: &mut Vec<u8>, plc: &mut Plc) {
    plc.requests += 1;
    let start = out.len();
    // MBAP: transaction id, protocol 0, length (patched below), unit.
    out.extend_from_slice(&[frame[0], frame[1], 0, 0, 0, 0, frame[6]]);
    let pdu = &frame[7..];
    if let Err(code) = respond(pdu, out, &mut plc.holding) {
        plc.exceptions += 1;
        out.truncate(start + 7);
        out.extend_from_slice(&[pdu[0] | 0x80, code]);
    }
    let len = (out.len() - start - 6) as u16;
    out[start + 4..start + 6].copy_from_slice(&len.to_be_bytes());
}

fn word(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Appends the response PDU, or returns the exception code.
fn respond(pdu: &[u8], out: &mut Vec<u8>, holding: &mut [u16]) -> Result<(), u8> {
    let fc = pdu[0];
    match fc {
        3 | 4 => {
            if pdu.len() != 5 {
                return Err(3);
            }
            let (addr, qty) = (usize::from(word(pdu, 1)), usize::from(word(pdu, 3)));
            if !(1..=125).contains(&qty) {
                return Err(3);
            }
            if addr + qty > BANK {
                return Err(2);
            }
            out.extend_from_slice(&[fc, (2 * qty) as u8]);
            if fc == 3 {
                for v in &holding[addr..addr + qty] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            } else {
                for i in addr..addr + qty {
                    out.extend_from_slice(&((1000 + i) as u16).to_be_bytes());
                }
            }
            Ok(())
        }
        6 => {
            if pdu.len() != 5 {
                return Err(3);
            }
            holding[usize::from(word(pdu, 1))] = word(pdu, 3);
            out.extend_from_slice(pdu);
            Ok(())
        }
        16 => {
            if pdu.len() < 6 {
                return Err(3);
            }
            let (addr, qty, count) = (usize::from(word(pdu, 1)), usize::from(word(pdu, 3)), usize::from(pdu[5]));
            if !(1..=123).contains(&qty) || count != 2 * qty || pdu.len() != 6 + count {
                return Err(3);
            }
            if addr + qty > BANK {
                return Err(2);
            }
            for i in 0..qty {
                holding[addr + i] = word(pdu, 6 + 2 * i);
            }
            out.extend_from_slice(&pdu[..5]);
            Ok(())
        }
        _ => Err(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plc() -> Plc {
        Plc { holding: (0..BANK).map(|i| i as u16).collect(), requests: 0, exceptions: 0 }
    }

    #[test]
    fn pipelined_reads_writes_and_exceptions() {
        let mut p = plc();
        let mut input = Vec::new();
        // tid 1: read holding 100, qty 2; tid 2: write 100 = 7; tid 3: FC 5; tid 4: read 65535 qty 2.
        input.extend_from_slice(&[0, 1, 0, 0, 0, 6, 1, 3, 0, 100, 0, 2]);
        input.extend_from_slice(&[0, 2, 0, 0, 0, 6, 1, 6, 0, 100, 0, 7]);
        input.extend_from_slice(&[0, 3, 0, 0, 0, 6, 1, 5, 0, 1, 0xff, 0]);
        input.extend_from_slice(&[0, 4, 0, 0, 0, 6, 1, 3, 0xff, 0xff, 0, 2]);
        // tid 5: write multiple 10..12 = 1, 2; tid 6: read back 100 (partial frame follows).
        input.extend_from_slice(&[0, 5, 0, 0, 0, 11, 1, 16, 0, 10, 0, 2, 4, 0, 1, 0, 2]);
        input.extend_from_slice(&[0, 6, 0, 0, 0, 6, 1, 3, 0, 100]);
        let mut out = Vec::new();
        let used = answer_all(&input, &mut out, &mut p).unwrap();
        assert_eq!(used, input.len() - 10);
        let mut expect = Vec::new();
        expect.extend_from_slice(&[0, 1, 0, 0, 0, 7, 1, 3, 4, 0, 100, 0, 101]);
        expect.extend_from_slice(&[0, 2, 0, 0, 0, 6, 1, 6, 0, 100, 0, 7]);
        expect.extend_from_slice(&[0, 3, 0, 0, 0, 3, 1, 0x85, 1]);
        expect.extend_from_slice(&[0, 4, 0, 0, 0, 3, 1, 0x83, 2]);
        expect.extend_from_slice(&[0, 5, 0, 0, 0, 6, 1, 16, 0, 10, 0, 2]);
        assert_eq!(out, expect);
        assert_eq!(&p.holding[10..12], &[1, 2]);
        assert_eq!(p.requests, 5);
        assert_eq!(p.exceptions, 2);
        // Not Modbus: protocol id 1.
        assert!(answer_all(&[0, 1, 0, 1, 0, 6, 1, 3, 0, 0, 0, 1], &mut out, &mut p).is_none());
    }
}
