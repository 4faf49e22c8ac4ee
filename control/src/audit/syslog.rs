//! Forwarding to a syslog collector: RFC 5424 messages over TLS (RFC 5425,
//! octet-counting framing), on a thread of its own ([`Forwarding`]): the
//! writer frames each record and hands it over a bounded channel, and never
//! waits for the collector (its name lookup and its TCP connect, each up
//! to `connect_timeout_ms`, or its TLS). Only if that thread cannot be
//! started does the writer forward itself, and then it waits as long.
//!
//! Each message is
//! `<PRI>1 TIMESTAMP HOSTNAME accessgate PROCID EVENT [audit@32473 seq="N" hash="H"] JSON`
//! with facility 13 (log audit), severity notice (warning for denials,
//! failures and anomalies), and the record's JSON line as MSG. The local
//! files are the record of truth; forwarding is best effort: messages wait in
//! a bounded queue while the collector is away (the oldest are dropped past
//! `max_queue`, counted; while the thread is in a connect, the channel to
//! it, as long again, fills and the newest are dropped, counted too), and a
//! connection that breaks may lose or repeat what was in flight: the `seq`
//! in each message shows gaps and repeats. At stop the thread forwards what
//! is queued for up to 2 s, after a connect it is in (up to twice
//! `connect_timeout_ms`: the name lookup, then the TCP connect). The
//! system's resolver has no time limit of its own, so the lookup runs on a
//! short-lived thread of its own; one that outlives its limit is waited for
//! again by the next attempt, never started twice.
//! (32473 is the private enterprise number RFC 5612 reserves for examples.)

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::chain::rfc3339_micros;
use super::{Status, SyslogConfig};

const FACILITY_LOG_AUDIT: u8 = 13;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long the forwarding thread sleeps between pumps, by idle rounds in
/// a row (ms): up to 500 wake-ups a second while records flow, 20 when
/// there are none. The thread shares the writer's CPU, which may be a busy
/// dp core's, and short batches hold that CPU for less at a time: at 20k
/// req/s with the collector on loopback, 10 ms batches gave p90 1.7-1.9 ms
/// and p99 3.8-4.0 ms, 2 ms batches 0.75-0.89 and 2.7-3.0 ms
/// (perf/README, round six).
const PUMP_BACKOFF_MS: [u64; 5] = [2, 5, 10, 20, 50];
/// Pumps per wake-up at most (each moves up to rustls's 64 KiB buffer).
const PUMPS_PER_WAKE: usize = 16;
/// How long a stopping gate keeps forwarding what is queued.
const DRAIN: Duration = Duration::from_secs(2);

/// Severity of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning = 4,
    Notice = 5,
}

struct Conn {
    sock: TcpStream,
    tls: rustls::ClientConnection,
}

/// Turns a record into one RFC 5425 frame.
#[derive(Debug, Clone)]
pub struct Framer {
    hostname: String,
    procid: String,
}

impl Framer {
    /// The octet-counted frame of one record.
    pub fn frame(&self, ts_us: u64, event: &str, seq: u64, hash: &str, severity: Severity, json: &str) -> Vec<u8> {
        let pri = FACILITY_LOG_AUDIT * 8 + severity as u8;
        let msg = format!(
            "<{pri}>1 {} {} accessgate {} {} [audit@32473 seq=\"{seq}\" hash=\"{hash}\"] {}",
            rfc3339_micros(ts_us),
            self.hostname,
            self.procid,
            printable(event, 32),
            json.trim_end()
        );
        let mut frame = format!("{} ", msg.len()).into_bytes();
        frame.extend_from_slice(msg.as_bytes());
        frame
    }
}

/// The forwarder's state: the connection and the queue ([`Forwarding`]
/// runs it on its own thread).
pub struct Forwarder {
    cfg: SyslogConfig,
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    framer: Framer,
    conn: Option<Conn>,
    queue: VecDeque<Vec<u8>>,
    /// Bytes of the front message already handed to rustls.
    front_sent: usize,
    next_attempt: Instant,
    backoff: Duration,
    pub sent: u64,
    pub dropped: u64,
    /// `dropped` as last published ([`Forwarder::publish`]).
    dropped_published: u64,
    pub last_error: Option<String>,
    /// The collector's name lookup, if one outlived its limit.
    lookup: Option<Receiver<LookupResult>>,
    resolver: Resolver,
}

/// A name lookup's answer: the first address, if any.
type LookupResult = io::Result<Option<SocketAddr>>;
/// Looks a `host:port` up (the system's resolver; tests put a slow one in).
type Resolver = fn(&str) -> LookupResult;

fn system_resolver(address: &str) -> LookupResult {
    address.to_socket_addrs().map(|mut a| a.next())
}

impl Forwarder {
    /// Reads the CA file and prepares the TLS client.
    ///
    /// # Errors
    /// The CA file is unreadable or holds no certificate, or the server name
    /// is not a valid DNS name or IP address.
    pub fn new(cfg: SyslogConfig) -> Result<Self, String> {
        let pem = std::fs::read(&cfg.ca_file).map_err(|e| format!("syslog ca_file {}: {e}", cfg.ca_file.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("syslog ca_file {}: {e}", cfg.ca_file.display()))?;
            roots.add(cert).map_err(|e| format!("syslog ca_file {}: {e}", cfg.ca_file.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("syslog ca_file {}: no certificate", cfg.ca_file.display()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("syslog TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let host = cfg.server_name.clone().unwrap_or_else(|| host_part(&cfg.address).to_string());
        let server_name =
            ServerName::try_from(host.clone()).map_err(|e| format!("syslog server name {host:?}: {e}"))?;
        let hostname = cfg.hostname.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "-".into(), |h| h.trim().to_string())
        });
        Ok(Self {
            cfg,
            tls: Arc::new(tls),
            server_name,
            framer: Framer { hostname: printable(&hostname, 255), procid: std::process::id().to_string() },
            conn: None,
            queue: VecDeque::new(),
            front_sent: 0,
            next_attempt: Instant::now(),
            backoff: Duration::from_millis(250),
            sent: 0,
            dropped: 0,
            dropped_published: 0,
            last_error: None,
            lookup: None,
            resolver: system_resolver,
        })
    }

    /// Queues one record for forwarding.
    pub fn push(&mut self, ts_us: u64, event: &str, seq: u64, hash: &str, severity: Severity, json: &str) {
        let frame = self.framer.frame(ts_us, event, seq, hash, severity, json);
        self.enqueue(frame);
    }

    /// Publishes `forwarded` and the drops since the last call in `status`
    /// (the writer counts there too, for frames the channel refused).
    pub fn publish(&mut self, status: &Status) {
        status.forwarded.store(self.sent, Ordering::Relaxed);
        status.forward_dropped.fetch_add(self.dropped - self.dropped_published, Ordering::Relaxed);
        self.dropped_published = self.dropped;
    }

    /// Queues one frame; past `max_queue` the oldest are dropped.
    fn enqueue(&mut self, frame: Vec<u8>) {
        self.queue.push_back(frame);
        while self.queue.len() > self.cfg.max_queue.max(1) {
            // A front message partly handed to TLS must be finished: cut,
            // the rest of the stream would not be octet-counted any more.
            // The next oldest goes instead.
            if self.front_sent > 0 && self.queue.len() > 1 {
                self.queue.remove(1);
            } else {
                self.queue.pop_front();
                self.front_sent = 0;
            }
            self.dropped += 1;
        }
    }

    /// Messages waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| !c.tls.is_handshaking())
    }

    /// Connects if due, moves queued messages into TLS and TLS onto the
    /// socket as far as it takes them. Returns whether anything moved.
    pub fn pump(&mut self, now: Instant) -> bool {
        if self.conn.is_none() {
            if self.queue.is_empty() || now < self.next_attempt {
                return false;
            }
            match self.connect() {
                Ok(c) => {
                    log::info!("audit: forwarding to syslog {} over TLS", self.cfg.address);
                    self.conn = Some(c);
                    self.backoff = Duration::from_millis(250);
                }
                Err(e) => {
                    self.fail(now, format!("connect to {}: {e}", self.cfg.address));
                    return false;
                }
            }
        }
        match self.move_bytes() {
            Ok(moved) => moved,
            Err(e) => {
                self.fail(now, format!("{}: {e}", self.cfg.address));
                false
            }
        }
    }

    /// Pumps until the queue is empty and written, or `deadline`.
    pub fn drain(&mut self, deadline: Instant) {
        while Instant::now() < deadline {
            self.pump(Instant::now());
            let Some(conn) = self.conn.as_mut() else { return };
            if self.queue.is_empty() && !conn.tls.is_handshaking() && !conn.tls.wants_write() {
                // Everything is on the wire: say goodbye properly.
                conn.tls.send_close_notify();
                let _ = conn.tls.write_tls(&mut conn.sock);
                self.conn = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn connect(&mut self) -> io::Result<Conn> {
        let limit = Duration::from_millis(self.cfg.connect_timeout_ms.max(1));
        let addr = self.resolve(limit)?;
        let sock = TcpStream::connect_timeout(&addr, limit)?;
        sock.set_nodelay(true)?;
        sock.set_nonblocking(true)?;
        let tls =
            rustls::ClientConnection::new(self.tls.clone(), self.server_name.clone()).map_err(io::Error::other)?;
        Ok(Conn { sock, tls })
    }

    /// The collector's address: at once for a literal address, otherwise
    /// by a lookup on a thread of its own, waited for at most `limit`.
    fn resolve(&mut self, limit: Duration) -> io::Result<SocketAddr> {
        if let Ok(addr) = self.cfg.address.parse::<SocketAddr>() {
            return Ok(addr);
        }
        let rx = match self.lookup.take() {
            Some(rx) => rx,
            None => {
                let (tx, rx) = crossbeam::channel::bounded(1);
                let (name, resolver) = (self.cfg.address.clone(), self.resolver);
                std::thread::Builder::new().name("audit-syslog-dns".into()).spawn(move || {
                    let _ = tx.send(resolver(&name));
                })?;
                rx
            }
        };
        match rx.recv_timeout(limit) {
            Ok(found) => found?.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")),
            Err(RecvTimeoutError::Timeout) => {
                self.lookup = Some(rx);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("name lookup took more than {} ms", limit.as_millis()),
                ))
            }
            Err(RecvTimeoutError::Disconnected) => Err(io::Error::other("name lookup ended without an answer")),
        }
    }

    fn move_bytes(&mut self) -> io::Result<bool> {
        let Some(conn) = self.conn.as_mut() else { return Ok(false) };
        let mut moved = false;
        // Plaintext into rustls (it buffers during the handshake too, up to
        // its buffer limit).
        while let Some(front) = self.queue.front() {
            let n = conn.tls.writer().write(&front[self.front_sent..])?;
            if n == 0 {
                break;
            }
            moved = true;
            self.front_sent += n;
            if self.front_sent == front.len() {
                self.queue.pop_front();
                self.front_sent = 0;
                self.sent += 1;
            }
        }
        loop {
            // Records onto the socket.
            while conn.tls.wants_write() {
                match conn.tls.write_tls(&mut conn.sock) {
                    Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "connection closed")),
                    Ok(_) => moved = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            // Handshake messages, alerts, close.
            match conn.tls.read_tls(&mut conn.sock) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the collector")),
                Ok(_) => {
                    let state = conn.tls.process_new_packets().map_err(io::Error::other)?;
                    if state.peer_has_closed() {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the collector"));
                    }
                    // Discard anything the collector sends (it should not).
                    let mut sink = [0u8; 512];
                    while let Ok(n) = conn.tls.reader().read(&mut sink) {
                        if n == 0 {
                            break;
                        }
                    }
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(moved),
                Err(e) => return Err(e),
            }
        }
    }

    fn fail(&mut self, now: Instant, error: String) {
        if self.last_error.as_deref() != Some(error.as_str()) {
            log::warn!("audit: syslog forwarding: {error} (retrying in {:?})", self.backoff);
        }
        self.last_error = Some(error);
        self.conn = None;
        // Resend the whole message that was cut.
        self.front_sent = 0;
        self.next_attempt = now + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// The forwarder on a thread of its own, started from the writer's thread
/// (so it runs where the writer does). The writer frames each record and
/// hands it over a channel as long as `max_queue`; a frame the channel
/// cannot take is dropped and counted like one dropped from the queue.
pub struct Forwarding {
    framer: Framer,
    tx: Option<Sender<Vec<u8>>>,
    status: Arc<Status>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarding {
    /// Starts the thread; it publishes `forwarded` and `forward_dropped`
    /// in `status`.
    ///
    /// # Errors
    /// The thread could not be started (`f` is handed back).
    pub fn spawn(f: Box<Forwarder>, status: Arc<Status>) -> Result<Self, (Box<Forwarder>, io::Error)> {
        let (tx, rx) = crossbeam::channel::bounded(f.cfg.max_queue.max(1));
        // The forwarder follows once the thread runs (kept if it cannot).
        let (hand_tx, hand_rx) = crossbeam::channel::bounded::<Box<Forwarder>>(1);
        let thread_status = status.clone();
        let spawned = std::thread::Builder::new().name("audit-syslog".into()).spawn(move || {
            if let Ok(f) = hand_rx.recv() {
                forward_loop(*f, &rx, &thread_status);
            }
        });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => return Err((f, e)),
        };
        let framer = f.framer.clone();
        let _ = hand_tx.send(f);
        Ok(Self { framer, tx: Some(tx), status, thread: Some(thread) })
    }

    /// Hands one record to the thread.
    pub fn push(&mut self, ts_us: u64, event: &str, seq: u64, hash: &str, severity: Severity, json: &str) {
        let frame = self.framer.frame(ts_us, event, seq, hash, severity, json);
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(frame) {
            self.status.forward_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lets the thread forward what is queued (up to 2 s) and waits for it.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The forwarding thread: takes frames, pumps, sleeps a little; drains and
/// ends once the writer closes the channel.
fn forward_loop(mut f: Forwarder, rx: &Receiver<Vec<u8>>, status: &Status) {
    let mut idle = 0;
    loop {
        let mut took = 0;
        let closed = loop {
            match rx.try_recv() {
                Ok(frame) => {
                    f.enqueue(frame);
                    took += 1;
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if closed {
            f.drain(Instant::now() + DRAIN);
        } else {
            let mut moved = false;
            for _ in 0..PUMPS_PER_WAKE {
                if !f.pump(Instant::now()) {
                    break;
                }
                moved = true;
            }
            idle = if moved || took > 0 { 0 } else { (idle + 1).min(PUMP_BACKOFF_MS.len() - 1) };
        }
        f.publish(status);
        if closed {
            return;
        }
        std::thread::sleep(Duration::from_millis(PUMP_BACKOFF_MS[idle]));
    }
}

/// `host` of `host:port` (`[v6]:port` too).
fn host_part(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// PRINTUSASCII only (RFC 5424 header fields), at most `max` characters.
fn printable(s: &str, max: usize) -> String {
    let t: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if t.is_empty() {
        "-".into()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use std::net::TcpListener;
    use std::path::PathBuf;

    /// A lab PKI whose server certificate names `host`, its CA's file, and
    /// the directory holding it.
    fn lab_pki(test: &str, host: &str) -> (crate::pki::LabPki, PathBuf, crate::audit::TestDir) {
        let dir = crate::audit::testdir(test);
        let pki = crate::pki::generate(&[host.to_string()]).unwrap();
        std::fs::write(dir.join("ca.crt"), &pki.ca_cert).unwrap();
        (pki, dir.join("ca.crt"), dir)
    }

    /// A forwarder to `address` with a CA of its own, `cfg` on top.
    fn forwarder(test: &str, address: &str, cfg: SyslogConfig) -> (Forwarder, crate::audit::TestDir) {
        let (_, ca_file, dir) = lab_pki(test, host_part(address));
        (Forwarder::new(SyslogConfig { address: address.into(), ca_file, ..cfg }).unwrap(), dir)
    }

    #[test]
    fn audit_syslog_frames_are_octet_counted_rfc5424() {
        let cfg = SyslogConfig { hostname: Some("gate 1".into()), ..SyslogConfig::default() };
        let (mut f, _dir) = forwarder("syslog-frame", "127.0.0.1:1", cfg);
        f.push(0, "session_open", 7, "ab", Severity::Notice, "{\"x\":1}\n");
        let frame = String::from_utf8(f.queue[0].clone()).unwrap();
        let (len, msg) = frame.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        let pid = std::process::id();
        assert_eq!(
            msg,
            format!(
                "<109>1 1970-01-01T00:00:00.000000Z gate1 accessgate {pid} session_open [audit@32473 seq=\"7\" hash=\"ab\"] {{\"x\":1}}"
            )
        );
        assert_eq!(host_part("[::1]:6514"), "::1");
        assert_eq!(host_part("logs.plant:6514"), "logs.plant");
        // Nobody listens on port 1: the failure backs off, nothing blocks.
        assert!(!f.pump(Instant::now()));
        assert!(f.last_error.is_some());
        assert_eq!(f.queued(), 1);
    }

    static LOOKUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// A resolver that hangs for 1.5 s, then finds nothing listening.
    fn hanging_resolver(_: &str) -> LookupResult {
        LOOKUPS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1500));
        Ok(Some("127.0.0.1:1".parse().unwrap()))
    }

    #[test]
    fn a_name_lookup_that_hangs_is_waited_for_at_most_the_connect_timeout() {
        let cfg = SyslogConfig { connect_timeout_ms: 200, ..SyslogConfig::default() };
        let (mut f, _dir) = forwarder("syslog-lookup", "logs.plant:6514", cfg);
        f.resolver = hanging_resolver;
        f.push(0, "session_open", 1, "ab", Severity::Notice, "{}\n");
        let t = Instant::now();
        assert!(!f.pump(t));
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(190) && waited < Duration::from_millis(1000), "{waited:?}");
        assert!(
            f.last_error.as_deref().unwrap_or("").contains("name lookup took more than 200 ms"),
            "{:?}",
            f.last_error
        );
        // The next attempt waits for the same lookup instead of starting
        // another: it answers (nobody listens there), the connect fails.
        let t = Instant::now();
        while f.last_error.as_deref().unwrap_or("").contains("name lookup") && t.elapsed() < Duration::from_secs(5) {
            f.next_attempt = Instant::now();
            f.pump(Instant::now());
        }
        assert_eq!(LOOKUPS.load(Ordering::SeqCst), 1, "one lookup thread, not one per attempt");
        let error = f.last_error.clone().unwrap_or_default();
        assert!(error.contains("connect to logs.plant:6514") && !error.contains("name lookup"), "{error}");
        assert_eq!(f.queued(), 1, "nothing is lost while the collector is away");
    }

    /// A collector that takes the TCP connection but answers the TLS
    /// handshake only when told to; then reads everything until the
    /// client closes and returns the plaintext stream.
    fn late_collector(pki: &crate::pki::LabPki) -> (u16, Sender<()>, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pki.gate_cert.as_bytes()).map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_slice(pki.gate_key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let (go_tx, go_rx) = crossbeam::channel::bounded::<()>(1);
        let t = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            go_rx.recv().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(server)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut out = Vec::new();
            let mut buf = [0u8; 16384];
            loop {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
            out
        });
        (port, go_tx, t)
    }

    /// RFC 5425 octet-counting: `LEN SP MSG` again and again; every MSG
    /// is an RFC 5424 message (`<PRI>1 ...`).
    fn frames(stream: &[u8]) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let sp = stream[at..].iter().position(|&b| b == b' ').ok_or("no space after a length")? + at;
            let len: usize =
                std::str::from_utf8(&stream[at..sp]).ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
                    format!(
                        "frame {}: bad length {:?}",
                        out.len() + 1,
                        String::from_utf8_lossy(&stream[at..sp.min(at + 20)])
                    )
                })?;
            let msg = stream.get(sp + 1..sp + 1 + len).ok_or("frame runs past the end")?;
            let msg = String::from_utf8_lossy(msg).into_owned();
            if !msg.starts_with("<109>1 ") {
                return Err(format!(
                    "frame {}: not an RFC 5424 message: {:?}",
                    out.len() + 1,
                    &msg[..msg.len().min(40)]
                ));
            }
            out.push(msg);
            at = sp + 1 + len;
        }
        Ok(out)
    }

    /// The queue overflowing while its oldest message is partly handed to
    /// TLS drops the next oldest instead (found by a review: dropping the
    /// oldest sent the head of one frame followed by the next frame, and
    /// the octet-counted stream was broken from there on).
    #[test]
    fn a_queue_overflow_never_cuts_a_frame_in_the_stream() {
        let (pki, ca_file, _dir) = lab_pki("syslog-overflow-cut", "127.0.0.1");
        let (port, go, collector) = late_collector(&pki);
        let cfg =
            SyslogConfig { address: format!("127.0.0.1:{port}"), ca_file, max_queue: 4, ..SyslogConfig::default() };
        let mut f = Forwarder::new(cfg).unwrap();
        // ~30 KB records: rustls buffers 64 KiB of plaintext while the
        // handshake waits, so the third record goes in only in part.
        let json = format!("{{\"payload\":\"{}\"}}\n", "ab".repeat(15_000));
        for seq in 1..=4 {
            f.push(0, "data", seq, "h", Severity::Notice, &json);
        }
        f.pump(Instant::now());
        assert!(f.conn.is_some(), "{:?}", f.last_error);
        assert_eq!(f.sent, 2);
        assert!(f.front_sent > 0, "the third record is in TLS in part");
        // More records while the collector is slow: the queue overflows.
        for seq in 5..=7 {
            f.push(0, "data", seq, "h", Severity::Notice, &json);
        }
        assert!(f.dropped > 0);
        go.send(()).unwrap();
        f.drain(Instant::now() + Duration::from_secs(10));
        assert_eq!(f.queued(), 0);
        let stream = collector.join().unwrap();
        let got = frames(&stream).unwrap_or_else(|e| panic!("the collector's stream is broken: {e}"));
        assert!(got.len() >= 4, "{} frames", got.len());
    }
}
