//! The whole dataplane in memory: user host -> gate (classification, segment
//! stacks, TLS termination, hello + auth worker, sessions) -> PLC, over
//! memory links, with real smoltcp TCP and real rustls on both ends.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use control::client::Answer;
use control::config;
use dataplane::classify::DropReason;
use dataplane::core::CoreOptions;
use dataplane::io::FramePort;
use dataplane::session::CloseReason;
use dataplane::wire::hello::{Auth, Reason};
use perf::memlab::{MemLab, PASSWORD};
use perf::sim::{read_holding, request, Served};
use smoltcp::socket::tcp::State;

const LAB: &str = include_str!("../../config/lab.toml");
const WAIT: Duration = Duration::from_secs(10);

fn lab() -> MemLab {
    lab_with(LAB, CoreOptions::default())
}

fn lab_with(text: &str, opts: CoreOptions) -> MemLab {
    let cfg = config::parse("lab.toml", text).expect("config");
    MemLab::new(&cfg, opts).expect("memlab")
}

/// alice's session to plc-7.
fn session(lab: &mut MemLab) -> smoltcp::iface::SocketHandle {
    let ticket = lab.login("alice", WAIT).expect("login");
    lab.session(&ticket, WAIT).expect("session")
}

/// Runs the lab until `n` sessions have closed for `reason`; fails with
/// the counters if they do not within [`WAIT`].
fn wait_closed(lab: &mut MemLab, reason: CloseReason, n: u64) {
    assert!(lab.run_until(WAIT, |l| l.control.totals().closed(reason) == n), "{:?}", lab.control.totals());
}

fn exchange(lab: &mut MemLab, h: smoltcp::iface::SocketHandle, adu: &[u8]) -> Vec<u8> {
    lab.transact(h, adu, WAIT).expect("no complete response")
}

/// Reads `count` holding registers from `address` (unit 1, transaction `tid`).
fn read(lab: &mut MemLab, h: smoltcp::iface::SocketHandle, tid: u16, address: u16, count: u16) -> Vec<u8> {
    let mut adu = [0u8; 260];
    let n = request(&mut adu, tid, 1, 3, &read_holding(address, count));
    exchange(lab, h, &adu[..n])
}

#[test]
fn modbus_read_and_write_through_the_gate() {
    let mut lab = lab();
    let h = session(&mut lab);
    let resp = read(&mut lab, h, 1, 0, 10);
    // MBAP tid 1, len 23, unit 1, fc 3, 20 bytes: registers 0..10 hold 0..10.
    let mut expected = vec![0, 1, 0, 0, 0, 23, 1, 3, 20];
    for i in 0..10u16 {
        expected.extend_from_slice(&i.to_be_bytes());
    }
    assert_eq!(resp, expected);

    let mut adu = [0u8; 260];
    let n = request(&mut adu, 2, 1, 6, &[0, 100, 0x04, 0xD2]);
    assert_eq!(exchange(&mut lab, h, &adu[..n]), [0, 2, 0, 0, 0, 6, 1, 6, 0, 100, 0x04, 0xD2]);
    assert_eq!(lab.sim.holding[100], 1234, "the write reached the PLC");
    assert_eq!(
        lab.sim.log,
        [
            Served { unit: 1, function: 3, address: 0, quantity: 10 },
            Served { unit: 1, function: 6, address: 100, quantity: 1234 }
        ]
    );

    let t = lab.control.totals();
    // The login exchange and the Modbus session.
    assert_eq!(t.sessions_opened, 2);
    assert_eq!(t.closed(CloseReason::LoginDone), 1);
    assert_eq!(t.sessions_active, 1);
    assert_eq!((t.bytes_up, t.bytes_down), (24, 41), "{t:?}");

    // The user closes: close_notify + FIN cross to the PLC, the PLC closes.
    lab.clients.get_mut(&h).unwrap().conn.send_close_notify();
    lab.user.socket(h).close();
    wait_closed(&mut lab, CloseReason::ClientClosed, 1);
    assert!(lab.run_until(WAIT, |l| l.sim.connections() == 0), "the PLC saw the FIN and closed");
    let mut events = Vec::new();
    lab.control.drain_events(|e| events.push(control::describe(e)));
    let text = events.join("\n");
    assert!(text.contains("open: user alice (roles operator) 198.18.0.2:"), "{text}");
    assert!(text.contains("-> 100.64.3.7:802 -> asset 198.19.3.7:502 [TLSv1_3 TLS13_"), "{text}");
    assert!(text.contains("closed: client_closed (24 bytes up, 41 bytes down"), "{text}");
    assert!(!text.contains(PASSWORD), "no secret in the log");
}

#[test]
fn port_that_is_not_an_endpoint_gets_no_syn_ack() {
    let mut lab = lab();
    let ep = lab.endpoint;
    let wrong_port = lab.user.connect(SocketAddrV4::new(*ep.ip(), 502), 1024);
    let wrong_ip = lab.user.connect(SocketAddrV4::new(std::net::Ipv4Addr::new(100, 64, 3, 8), 802), 1024);
    let ok = lab.run_until(Duration::from_millis(1500), |l| l.control.totals().dropped(DropReason::NoEndpoint) >= 2);
    assert!(ok, "{:?}", lab.control.totals());
    lab.run_until(Duration::from_millis(300), |_| false);
    assert_eq!(lab.user.socket(wrong_port).state(), State::SynSent);
    assert_eq!(lab.user.socket(wrong_ip).state(), State::SynSent);
    assert_eq!(lab.control.totals().sessions_opened, 0);
    assert!(lab.sim.log.is_empty());
}

#[test]
fn many_concurrent_sessions_on_one_endpoint() {
    let mut lab = lab();
    let ticket = lab.login("alice", WAIT).unwrap();
    const N: usize = 40;
    let snap = lab.control.snapshot();
    let (asset, service) = (snap.endpoints[0].asset.clone(), snap.endpoints[0].service.clone());
    let ep = lab.endpoint;
    let handles: Vec<_> =
        (0..N).map(|_| lab.open(ep, Auth::Ticket(&ticket), Some((&asset, &service))).unwrap()).collect();
    assert!(lab.run_until(WAIT, |l| handles.iter().all(|h| l.clients[h].accepted())), "{:?}", lab.control.totals());
    let mut adu = [0u8; 260];
    for (i, h) in handles.iter().enumerate() {
        let n = request(&mut adu, i as u16, 1, 3, &read_holding(i as u16, 1));
        lab.clients.get_mut(h).unwrap().send(&adu[..n]);
    }
    let mut answers = vec![Vec::new(); N];
    let ok = lab.run_until(WAIT, |l| {
        for (i, h) in handles.iter().enumerate() {
            answers[i].extend(l.clients.get_mut(h).unwrap().take_received());
        }
        answers.iter().all(|a| a.len() == 11)
    });
    assert!(ok);
    for (i, a) in answers.iter().enumerate() {
        // Each session got its own transaction id and its own register back.
        assert_eq!(&a[..2], &(i as u16).to_be_bytes());
        assert_eq!(&a[9..11], &(i as u16).to_be_bytes());
    }
    let t = lab.control.totals();
    assert_eq!(t.sessions_active, N as u64);
}

#[test]
fn plc_that_disappears_resets_the_user() {
    let mut lab = lab();
    let h = session(&mut lab);
    read(&mut lab, h, 1, 0, 1);
    let plc = &mut lab.plc;
    lab.sim.abort_all(plc);
    assert!(lab.run_until(WAIT, |l| l.user.socket(h).state() == State::Closed), "user was not reset");
    assert_eq!(lab.control.totals().closed(CloseReason::AssetReset), 1);
    assert_eq!(lab.control.totals().sessions_active, 0);
}

#[test]
fn refused_and_unreachable_assets_reset_the_user_with_a_reason() {
    // Refused: the PLC stops listening, its stack answers the SYN with RST.
    let mut lab = lab();
    let plc = &mut lab.plc;
    lab.sim.stop_listening(plc);
    let ticket = lab.login("alice", WAIT).unwrap();
    let _ = lab.session(&ticket, Duration::from_secs(2));
    wait_closed(&mut lab, CloseReason::AssetRefused, 1);

    // Unreachable: the PLC's cable is pulled (no ARP answer, no SYN-ACK).
    let opts = CoreOptions { connect_timeout: smoltcp::time::Duration::from_millis(400), ..CoreOptions::default() };
    let mut lab = lab_with(LAB, opts);
    lab.plc_offline = true;
    let ticket = lab.login("alice", WAIT).unwrap();
    assert!(lab.session(&ticket, Duration::from_secs(3)).is_err());
    wait_closed(&mut lab, CloseReason::AssetUnreachable, 1);
}

#[test]
fn idle_sessions_stay_open_past_the_connect_timeout() {
    let opts = CoreOptions { connect_timeout: smoltcp::time::Duration::from_millis(200), ..CoreOptions::default() };
    let mut lab = lab_with(LAB, opts);
    let h = session(&mut lab);
    read(&mut lab, h, 1, 0, 1);
    lab.run_until(Duration::from_millis(1000), |_| false);
    assert_eq!(lab.user.socket(h).state(), State::Established);
    assert_eq!(read(&mut lab, h, 2, 5, 1), [0, 2, 0, 0, 0, 5, 1, 3, 2, 0, 5]);
    assert_eq!(lab.control.totals().sessions_active, 1);
}

#[test]
fn slow_asset_backpressures_the_user_and_loses_nothing() {
    // A raw TCP service to a sink that does not read at first.
    let text = LAB.replace(
        "protocol = \"modbus\"\nport = 802          # Modbus/TCP Security: TLS from users\nasset_port = 502",
        "protocol = \"tcp\"\nport = 5900\nasset_port = 5900",
    );
    assert!(text.contains("5900"));
    let opts = CoreOptions { socket_buffer: 4096, ..CoreOptions::default() };
    let mut lab = lab_with(&text, opts);
    let sink = lab.plc.listen(5900, 4096);
    let h = session(&mut lab);
    let data: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 251) as u8).collect();
    // Phase 1: the sink does not read. The gate holds at most its bounded
    // buffers (TCP 4 KiB x2 + TLS 16 KiB); the rest stays with the user.
    lab.clients.get_mut(&h).unwrap().send(&data);
    lab.run_until(Duration::from_millis(500), |_| false);
    let got_by_plc = lab.plc.socket(sink).recv_queue();
    assert!(got_by_plc <= 4096, "{got_by_plc}");
    let unsent = lab.clients[&h].conn.wants_write() as usize + lab.user.socket(h).send_queue();
    assert!(unsent > 0, "the user's data should be held back (window closed)");
    // Phase 2: the sink reads; every byte arrives in order.
    let mut got = Vec::new();
    let ok = lab.run_until(WAIT, |l| {
        let k = l.plc.socket(sink);
        while k.can_recv() {
            k.recv(|d| {
                got.extend_from_slice(d);
                (d.len(), ())
            })
            .unwrap();
        }
        got.len() == data.len()
    });
    assert!(ok, "received {} of {}", got.len(), data.len());
    assert!(got == data, "bytes were reordered or corrupted");
}

/// Asserts that nothing of a refused attempt reached the PLC.
fn plc_saw_nothing(lab: &MemLab) {
    assert!(lab.sim.log.is_empty(), "{:?}", lab.sim.log);
    assert_eq!(lab.plc.port.stats().rx_frames, 0, "not a single frame reached the PLC");
}

fn refused(lab: &mut MemLab, to: SocketAddrV4, auth: Auth<'_>, target: Option<(&str, &str)>) -> Reason {
    let h = lab.open(to, auth, target).unwrap();
    match lab.answer(h, WAIT) {
        Some(Answer::Refuse { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn every_refusal_has_its_reason_and_the_plc_sees_nothing() {
    let mut lab = lab();
    let login = lab.login;
    let code = lab.totp_code();
    let pw = PASSWORD.as_bytes();
    let creds = |user, password, totp| Auth::Credentials { user, password, totp };
    assert_eq!(refused(&mut lab, login, creds("alice", b"wrong password!", &code), None), Reason::BadCredentials);
    assert_eq!(refused(&mut lab, login, creds("alice", pw, "000000"), None), Reason::BadCredentials);
    assert_eq!(refused(&mut lab, login, creds("mallory", pw, &code), None), Reason::BadCredentials);
    // A good login, then the same code again: replay.
    let ticket = lab.login("alice", WAIT).unwrap();
    assert_eq!(refused(&mut lab, login, creds("alice", pw, &code), None), Reason::BadCredentials);
    // carol is a guest: not authorized for plc-7 (the PLC endpoint itself refuses).
    lab.advance(30);
    let carol = lab.login("carol", WAIT).unwrap();
    let ep = lab.endpoint;
    assert_eq!(refused(&mut lab, ep, Auth::Ticket(&carol), Some(("plc-7", "modbus"))), Reason::NotAuthorized);
    assert_eq!(refused(&mut lab, ep, Auth::Ticket(&ticket), Some(("plc-9", "modbus"))), Reason::UnknownAsset);
    // A forged ticket, then alice's after it expired.
    assert_eq!(refused(&mut lab, ep, Auth::Ticket(&[7u8; 32]), Some(("plc-7", "modbus"))), Reason::BadCredentials);
    lab.advance(9 * 3600);
    assert_eq!(refused(&mut lab, ep, Auth::Ticket(&ticket), Some(("plc-7", "modbus"))), Reason::TicketExpired);
    plc_saw_nothing(&lab);
    assert!(lab.control.totals().closed(CloseReason::AuthRefused) >= 7, "{:?}", lab.control.totals());
}

#[test]
fn repeated_failures_lock_the_user_with_backoff() {
    let mut lab = lab();
    let login = lab.login;
    for _ in 0..5 {
        let code = lab.totp_code();
        let r =
            refused(&mut lab, login, Auth::Credentials { user: "alice", password: b"guessing...", totp: &code }, None);
        assert_eq!(r, Reason::BadCredentials);
    }
    // Now even the right password is refused, with a retry time.
    let code = lab.totp_code();
    let h =
        lab.open(login, Auth::Credentials { user: "alice", password: PASSWORD.as_bytes(), totp: &code }, None).unwrap();
    match lab.answer(h, WAIT) {
        Some(Answer::Refuse { reason: Reason::Locked, retry_after: Some(s) }) => assert!(s > 0 && s <= 30, "{s}"),
        other => panic!("expected locked, got {other:?}"),
    }
    lab.advance(31);
    assert!(lab.login("alice", WAIT).is_ok(), "the lock opens after the backoff");
    plc_saw_nothing(&lab);
}

#[test]
fn plaintext_garbage_and_oversized_hellos_never_reach_the_plc() {
    let mut lab = lab();
    let ep = lab.endpoint;
    // Plaintext Modbus straight to :802 (no TLS): the TLS handshake fails.
    let h = lab.user.connect(ep, 1024);
    assert!(lab.run_until(WAIT, |l| l.user.socket(h).may_send()));
    let mut adu = [0u8; 260];
    let n = request(&mut adu, 1, 1, 3, &read_holding(0, 1));
    lab.user.socket(h).send_slice(&adu[..n]).unwrap();
    wait_closed(&mut lab, CloseReason::TlsFailed, 1);

    // TLS, then garbage instead of a hello: malformed_hello.
    let client =
        perf::tls_client::TlsClient::new(&lab.client_config, perf::memlab::SERVER_NAME, Auth::Ticket(&[0; 32]), None)
            .unwrap();
    let h = lab.user.connect(ep, 4096);
    let mut client = client;
    client.conn = control::client::connection(&lab.client_config, perf::memlab::SERVER_NAME).unwrap();
    client.send(b"GET / HTTP/1.1\r\n\r\n");
    lab.clients.insert(h, client);
    assert_eq!(
        lab.answer(h, WAIT).map(|a| matches!(a, Answer::Refuse { reason: Reason::MalformedHello, .. })),
        Some(true)
    );

    // An oversized hello (length 1025 in its header): refused from the header.
    let mut client =
        perf::tls_client::TlsClient::new(&lab.client_config, perf::memlab::SERVER_NAME, Auth::Ticket(&[0; 32]), None)
            .unwrap();
    client.conn = control::client::connection(&lab.client_config, perf::memlab::SERVER_NAME).unwrap();
    let mut big = vec![b'A', b'G', 1, 1, 0x04, 0x01];
    big.extend(std::iter::repeat_n(0u8, 1025));
    client.send(&big);
    let h = lab.user.connect(ep, 4096);
    lab.clients.insert(h, client);
    assert_eq!(
        lab.answer(h, WAIT).map(|a| matches!(a, Answer::Refuse { reason: Reason::MalformedHello, .. })),
        Some(true)
    );
    wait_closed(&mut lab, CloseReason::HelloMalformed, 2);
    plc_saw_nothing(&lab);
}

/// A client announcing a 60,000-byte ClientHello and sending it is cut off
/// once 16 KiB have come in (`tls_failed`), long before the hello deadline:
/// rustls would otherwise keep every record until the message is whole,
/// ~80 KiB a session for anyone who can reach the port. A real handshake,
/// client certificate included, stays far below (the mTLS tests).
#[test]
fn an_oversized_client_hello_is_cut_off_at_the_handshake_limit() {
    let mut lab = lab();
    let ep = lab.endpoint;
    let h = lab.user.connect(ep, 64 * 1024);
    assert!(lab.run_until(WAIT, |l| l.user.socket(h).may_send()));
    let mut flight = Vec::new();
    let mut left = 60_000usize + 4;
    let mut first = true;
    while flight.len() < 40 * 1024 {
        let len = left.min(16 * 1024);
        flight.extend_from_slice(&[0x16, 0x03, 0x01]);
        flight.extend_from_slice(&(len as u16).to_be_bytes());
        let mut body = vec![0u8; len];
        if first {
            // ClientHello, 60,000 bytes long.
            body[..4].copy_from_slice(&[0x01, 0x00, 0xea, 0x60]);
            first = false;
        }
        flight.extend_from_slice(&body);
        left -= len;
    }
    let mut sent = 0;
    let cut = lab.run_until(Duration::from_secs(3), |l| {
        let sock = l.user.socket(h);
        if sock.can_send() && sent < flight.len() {
            sent += sock.send_slice(&flight[sent..]).unwrap_or(0);
        }
        l.control.totals().closed(CloseReason::TlsFailed) == 1
    });
    assert!(cut, "still open after 3 s, {sent} bytes sent: {:?}", lab.control.totals());
    assert!(sent > 16 * 1024, "the cut came at the limit, not before: {sent} bytes sent");
    plc_saw_nothing(&lab);
}

/// Gate frames sent for `n` read requests on an open session.
fn frames_per_requests(lab: &mut MemLab, h: smoltcp::iface::SocketHandle, n: u16) -> u64 {
    let before = lab.control.totals().tx_frames;
    for tid in 0..n {
        let resp = read(lab, h, 100 + tid, tid, 4);
        assert_eq!(&resp[..2], &(100 + tid).to_be_bytes(), "the answer to request {tid}");
    }
    lab.control.totals().tx_frames - before
}

#[test]
fn acks_ride_on_the_answers_unless_turned_off() {
    // Delayed (the default is 10 ms; 1 s here so a slow test machine cannot
    // fire the timer mid-exchange): per request the gate sends the request
    // to the PLC and the answer to the user, each carrying the ACK of what
    // came the other way. Immediate: a pure ACK to the user and one to the
    // PLC besides.
    let delayed = CoreOptions { ack_delay: Some(smoltcp::time::Duration::from_secs(1)), ..CoreOptions::default() };
    let mut lab = lab_with(LAB, delayed);
    let h = session(&mut lab);
    let _ = frames_per_requests(&mut lab, h, 1);
    assert_eq!(frames_per_requests(&mut lab, h, 20), 40, "2 frames per request with delayed ACKs");

    let mut lab = lab_with(LAB, CoreOptions { ack_delay: None, ..CoreOptions::default() });
    let h = session(&mut lab);
    let _ = frames_per_requests(&mut lab, h, 1);
    assert_eq!(frames_per_requests(&mut lab, h, 20), 80, "4 frames per request with immediate ACKs");
}

#[test]
fn time_off_the_cpu_between_passes_counts_as_a_stall() {
    let mut lab = lab();
    let h = session(&mut lab);
    assert_eq!(read(&mut lab, h, 1, 0, 2).len(), 13);
    // Past every TCP timer (the delayed ACK is 10 ms), until a pass finds
    // nothing to do.
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(40) {
        lab.step();
    }
    assert!((0..1000).any(|_| lab.step() == 0), "the lab never went quiet");
    let before = lab.control.totals();
    // The core is held off its CPU for 3 ms between two passes.
    assert_eq!(lab.gate.poll_once(), 0);
    std::thread::sleep(Duration::from_millis(3));
    assert_eq!(lab.gate.poll_once(), 0);
    let after = lab.control.totals();
    let grew = |a: [u64; 3], b: [u64; 3]| [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    // At least that one stall of 1 ms or more and under 10 ms (the test
    // thread itself may be preempted for 100 µs or more on a busy machine).
    let stalls = grew(before.stalls, after.stalls);
    assert!(stalls[1] >= 1 && stalls[2] == 0 && stalls[0] >= stalls[1], "stalls {stalls:?}");
    // Passes without work are never slow passes.
    assert_eq!(grew(before.slow_passes, after.slow_passes), [0, 0, 0]);
    // The counters reach `ctl stats` by name.
    let pairs = after.to_pairs();
    assert!(pairs.iter().any(|(n, v)| n == "stalls_1ms" && *v == after.stalls[1]));
}

#[test]
fn an_idle_pass_gives_the_waiting_audit_writer_its_turn() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use dataplane::audit::{AuditQueue, AuditTap, Pacer};
    use dataplane::core::IdleMode;
    use dataplane::io::Doorbell;

    let pacer = Arc::new(Pacer::new(Arc::new(Doorbell::new().unwrap())));
    let tap = AuditTap {
        queue: Arc::new(AuditQueue::new(256)),
        healthy: Arc::new(AtomicBool::new(true)),
        terminate_on_failure: false,
        pacer: Some(pacer.clone()),
    };
    let cfg = config::parse("lab.toml", LAB).expect("config");
    // Sleeps as soon as a pass finds no work: the turn is given on the way.
    let opts = CoreOptions { idle: IdleMode::Adaptive { spin_us: 0, share_pct: 0 }, ..CoreOptions::default() };
    let mut lab = MemLab::new_with(&cfg, opts, Some(tap)).expect("memlab");
    let stop = Arc::new(AtomicBool::new(false));
    // The writer, done with a slice, waits for a turn (5 s at most); the
    // core runs until the writer got one.
    let writer = {
        let (pacer, stop) = (pacer.clone(), stop.clone());
        std::thread::spawn(move || {
            let t = std::time::Instant::now();
            pacer.wait_turn(5000);
            stop.store(true, Ordering::Release);
            t.elapsed()
        })
    };
    lab.gate.run(&stop);
    let waited = writer.join().unwrap();
    assert!(waited < Duration::from_secs(2), "the writer waited {waited:?} for its turn");
    let turns = lab.control.totals().audit_turns;
    assert_eq!(turns, 1, "one turn, given by an idle pass of the real loop");
    assert!(lab.control.totals().to_pairs().iter().any(|(n, v)| n == "audit_turns" && *v == 1));
}

/// A port that panics in its next receive once armed: a bug outside any
/// session's step (here the port; the same for classification or the
/// stacks). While `broken`, reading its MAC panics too, as building the
/// stacks afresh does.
struct Tripwire {
    port: Box<dyn FramePort>,
    armed: Arc<AtomicBool>,
    broken: Arc<AtomicBool>,
}

impl FramePort for Tripwire {
    fn rx_burst(&mut self, max: usize, sink: &mut dyn FnMut(&[u8])) -> std::io::Result<usize> {
        assert!(!self.armed.swap(false, Ordering::Relaxed), "tripwire");
        self.port.rx_burst(max, sink)
    }
    fn tx_ready(&mut self) -> bool {
        self.port.tx_ready()
    }
    fn tx_frame(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.port.tx_frame(len, fill)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.port.flush()
    }
    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        self.port.poll_fd()
    }
    fn mac(&self) -> [u8; 6] {
        assert!(!self.broken.load(Ordering::Relaxed), "broken");
        self.port.mac()
    }
    fn name(&self) -> &str {
        self.port.name()
    }
}

/// A lab whose north port is a [`Tripwire`]: (lab, armed, broken).
fn tripwired_lab() -> (MemLab, Arc<AtomicBool>, Arc<AtomicBool>) {
    let cfg = config::parse("lab.toml", LAB).expect("config");
    let (armed, broken) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (a, b) = (armed.clone(), broken.clone());
    let wrap = move |link: usize, port: Box<dyn FramePort>| -> Box<dyn FramePort> {
        if link == 0 {
            Box::new(Tripwire { port, armed: a.clone(), broken: b.clone() })
        } else {
            port
        }
    };
    let lab = MemLab::new_wrapped(&cfg, CoreOptions::default(), None, &wrap).expect("memlab");
    (lab, armed, broken)
}

/// Starting over after a panic panics too (here the port's MAC, which the
/// new stacks read): the core cannot go on and its loop ends, though
/// nobody asked it to stop. `accessgate run` then stops the gate with an
/// error (src/run.rs), rather than leave this core's traffic unanswered.
#[test]
fn a_core_that_cannot_start_over_ends_its_loop() {
    let (mut lab, armed, broken) = tripwired_lab();
    let ticket = lab.login("alice", WAIT).expect("login");
    lab.session(&ticket, WAIT).expect("session");
    armed.store(true, Ordering::Relaxed);
    broken.store(true, Ordering::Relaxed);
    assert_eq!(lab.gate.pass(), None, "the restart panicked: the core cannot go on");
    assert_eq!(lab.control.totals().core_restarts, 0, "no restart was completed");
    armed.store(true, Ordering::Relaxed);
    let stop = AtomicBool::new(false);
    lab.gate.run(&stop);
    assert!(!stop.load(Ordering::Relaxed) && !armed.load(Ordering::Relaxed), "the loop ended on the panic");
}

/// A panic in a pass outside a session's step: the core catches it, its
/// sessions close as `internal_error` (the user's next segment is reset by
/// the fresh stack), `core_restarts` counts it, and new sessions work at
/// once.
#[test]
fn a_panic_in_a_pass_costs_the_sessions_not_the_core() {
    let (mut lab, armed, _) = tripwired_lab();
    let ticket = lab.login("alice", WAIT).expect("login");
    let old = lab.session(&ticket, WAIT).expect("session");
    assert_eq!(read(&mut lab, old, 1, 0, 2)[..9], [0, 1, 0, 0, 0, 7, 1, 3, 4]);
    let before = lab.control.totals();
    armed.store(true, Ordering::Relaxed);
    assert_eq!(lab.gate.pass(), Some(1), "the panic is caught and the core starts over");
    assert!(!armed.load(Ordering::Relaxed), "the tripwire went off");
    let after = lab.control.totals();
    let internal = |t: &dataplane::counters::CounterTotals| t.closed(CloseReason::InternalError);
    assert_eq!((after.core_restarts, internal(&after) - internal(&before)), (1, 1));
    assert_eq!(after.sessions_active, 0);
    // The old session's next request meets a stack that never knew it.
    let mut adu = [0u8; 260];
    let n = request(&mut adu, 2, 1, 3, &read_holding(0, 2));
    assert!(lab.transact(old, &adu[..n], Duration::from_secs(2)).is_none());
    let reset = lab.run_until(WAIT, |l| matches!(l.user.socket(old).state(), State::Closed));
    assert!(reset, "the user's connection was not reset: {:?}", lab.user.socket(old).state());
    // A new session (same ticket) works.
    let new = lab.session(&ticket, WAIT).expect("a session after the restart");
    assert_eq!(read(&mut lab, new, 3, 10, 2)[..9], [0, 3, 0, 0, 0, 7, 1, 3, 4]);
}

/// An open session follows its user: disabled, removed, stripped of the
/// session's roles by a reload, or revoked (`ctl revoke`), the user's next
/// request ends it with `user_revoked`, and nothing more reaches the PLC
/// (found by a review: sessions kept their grant's roles until the ticket
/// expired). A user whose standing did not change keeps theirs.
#[test]
fn an_open_session_ends_when_its_user_is_disabled_removed_demoted_or_revoked() {
    for change in ["disable", "remove", "demote", "revoke", "unrelated"] {
        let mut lab = lab();
        let h = session(&mut lab);
        assert_eq!(read(&mut lab, h, 1, 0, 1).len(), 11, "{change}: read works before");
        if change == "revoke" {
            assert_eq!(lab.control.revoke_user("alice"), Some(1), "alice's ticket");
        } else {
            // What a reload does: the new users, then a new generation.
            let mut db = (*lab.auth.authenticator.users()).clone();
            match change {
                "disable" => db.require_mut("alice").unwrap().disabled = true,
                "remove" => {
                    let mut without = control::identity::UserDb::new();
                    for u in db.iter().filter(|u| u.name != "alice") {
                        without.add(u.clone()).unwrap();
                    }
                    db = without;
                }
                "demote" => db.require_mut("alice").unwrap().roles = vec!["guest".into()],
                _ => db.require_mut("bob").unwrap().disabled = true,
            }
            lab.auth.authenticator.set_users(db);
            let snap = (*lab.control.snapshot()).clone();
            lab.control.publish(snap).unwrap();
        }
        let (resp, reached) = read_after_change(&mut lab, h);
        if change == "unrelated" {
            assert_eq!(resp.map(|r| r.len()), Some(11), "alice's session goes on when bob is disabled");
            continue;
        }
        assert!(resp.is_none(), "{change}: alice's session still served: {resp:?}");
        assert!(!reached, "{change}: the request reached the PLC");
        assert!(
            lab.run_until(WAIT, |l| l.control.totals().closed(CloseReason::UserRevoked) == 1),
            "{change}: {:?}",
            lab.control.totals()
        );
    }
}

/// A reload that points an endpoint at another asset address or port ends
/// the sessions opened through it (`endpoint_removed`): a session stays only
/// on the asset service its user was authorised and connected for (found by
/// a review: only a removed endpoint ended them, and a session accepted
/// before the reload but connected after it went to the old address with
/// the new snapshot's protocol). An unrelated change keeps it.
#[test]
fn a_reload_that_moves_an_endpoint_ends_its_sessions() {
    let cases = [
        ("address", "underlay = \"198.19.3.7\"", "underlay = \"198.19.3.8\""),
        ("port", "asset_port = 502 ", "asset_port = 5020 "),
        ("unrelated", "asset_port = 20000", "asset_port = 20001"),
    ];
    for (change, from, to) in cases {
        assert_eq!(LAB.matches(from).count(), 1, "{change}");
        let mut lab = lab();
        let h = session(&mut lab);
        assert_eq!(read(&mut lab, h, 1, 0, 1).len(), 11, "{change}: read works before");
        let snap = config::parse("lab.toml", &LAB.replace(from, to)).expect("config").snapshot;
        lab.control.publish(snap).unwrap();
        let (resp, reached) = read_after_change(&mut lab, h);
        if change == "unrelated" {
            assert_eq!(resp.map(|r| r.len()), Some(11), "the session goes on");
            assert_eq!(lab.control.totals().closed(CloseReason::EndpointRemoved), 0);
            continue;
        }
        assert!(resp.is_none(), "{change}: still served: {resp:?}");
        assert!(!reached, "{change}: the request reached the PLC");
        wait_closed(&mut lab, CloseReason::EndpointRemoved, 1);
    }
}

/// A read on `h` after a change: its answer (`None`: none within 2 s), and
/// whether it reached the PLC.
fn read_after_change(lab: &mut MemLab, h: smoltcp::iface::SocketHandle) -> (Option<Vec<u8>>, bool) {
    let served = lab.sim.log.len();
    let mut adu = [0u8; 260];
    let n = request(&mut adu, 2, 1, 3, &read_holding(0, 1));
    let resp = lab.transact(h, &adu[..n], Duration::from_secs(2));
    (resp, lab.sim.log.len() > served)
}

/// A session of alice's opened "two minutes ago" (it has read once), and
/// the lab's config with a line added to every rule (each of the three
/// that would let her session go on: reads, setpoint writes and
/// operator-sessions).
fn old_session_and_rule_with() -> (MemLab, smoltcp::iface::SocketHandle, impl Fn(&str) -> dataplane::snapshot::Snapshot)
{
    let mut lab = lab();
    lab.rewind(120);
    let h = session(&mut lab);
    assert_eq!(read(&mut lab, h, 1, 0, 1).len(), 11);
    assert_eq!(LAB.matches("\n[[rule]]\n").count(), 9);
    let config = move |line: &str| {
        let text = LAB.replace("\n[[rule]]\n", &format!("\n[[rule]]\n{line}\n"));
        config::parse("lab.toml", &text).expect("config").snapshot
    };
    (lab, h, config)
}

/// A reload that gives the permitting rule a shorter `max_session_secs`
/// shortens the sessions already open: they end `session_expired` when
/// they reach it, counted from their grant (found by a review: only new
/// sessions got the new bound).
#[test]
fn a_reload_that_lowers_max_session_secs_shortens_open_sessions() {
    let (mut lab, _, config) = old_session_and_rule_with();
    lab.control.publish(config("max_session_secs = 60")).unwrap();
    wait_closed(&mut lab, CloseReason::SessionExpired, 1);
}

/// The same for a rule's `ticket_lifetime_secs`: a reload that lowers it
/// below the age of an open session's ticket ends that session (found by
/// a review: the grant carried no ticket age, so only new sessions saw it).
#[test]
fn a_reload_that_lowers_ticket_lifetime_secs_ends_sessions_on_older_tickets() {
    // The ticket and the session are "two minutes" old.
    let (mut lab, h, config) = old_session_and_rule_with();
    // A lifetime the ticket is still within keeps the session.
    lab.control.publish(config("ticket_lifetime_secs = 3600")).unwrap();
    assert_eq!(read(&mut lab, h, 1, 0, 1).len(), 11, "a ticket younger than the new lifetime");
    lab.control.publish(config("ticket_lifetime_secs = 60")).unwrap();
    wait_closed(&mut lab, CloseReason::SessionExpired, 1);
}

/// A reload that lowers the gate's `ticket_lifetime_secs` below the age of
/// an open session's ticket ends that session (`session_expired`); one it
/// is still within keeps it (found by a review: tickets and their sessions
/// kept the lifetime they were issued with).
#[test]
fn a_reload_that_lowers_the_gate_ticket_lifetime_ends_sessions_on_older_tickets() {
    let mut lab = lab();
    lab.rewind(120);
    let h = session(&mut lab);
    let from = "ticket_lifetime_secs = 28800";
    assert_eq!(LAB.matches(from).count(), 1);
    let with = |secs: u32| {
        let text = LAB.replace(from, &format!("ticket_lifetime_secs = {secs}"));
        config::parse("lab.toml", &text).expect("config").snapshot
    };
    lab.control.publish(with(3600)).unwrap();
    assert_eq!(read(&mut lab, h, 1, 0, 1).len(), 11, "a ticket younger than the new lifetime");
    lab.control.publish(with(60)).unwrap();
    wait_closed(&mut lab, CloseReason::SessionExpired, 1);
}

/// A reload that moves the login endpoint to another address (or changes
/// the north gateway) needs a restart: it is refused and logins go on at
/// the running address (found by a review: it was accepted, and the
/// stacks, built with the old address, answered neither). A new port on
/// the same address is applied.
#[test]
fn a_reload_that_moves_the_login_address_is_refused_and_logins_go_on() {
    let mut lab = lab();
    lab.login("alice", WAIT).expect("login works before");
    let from = "login = \"100.64.0.1:443\"";
    assert_eq!(LAB.matches(from).count(), 1);
    let with = |to: &str| config::parse("lab.toml", &LAB.replace(from, to)).expect("config").snapshot;
    let refused = lab.control.publish(with("login = \"100.64.0.2:443\"")).expect_err("a new login address");
    assert!(refused.to_string().contains("needs a restart"), "{refused}");
    // Each login below in a new TOTP step (a code is good once).
    lab.advance(30);
    lab.login("alice", WAIT).expect("login at the running address");
    let gateway = LAB.replace(
        "north_address = \"198.18.0.1/24\"",
        "north_address = \"198.18.0.1/24\"\nnorth_gateway = \"198.18.0.254\"",
    );
    let snap = config::parse("lab.toml", &gateway).expect("config").snapshot;
    assert!(lab.control.publish(snap).is_err(), "a new north gateway");
    lab.control.publish(with("login = \"100.64.0.1:4443\"")).expect("a new port");
    lab.login = "100.64.0.1:4443".parse().unwrap();
    lab.advance(30);
    lab.login("alice", WAIT).expect("login at the new port");
}

/// alice logged in, the auth worker paused, and her session to plc-7
/// opened: its verdict waits until `auth_paused` is lifted.
fn session_awaiting_verdict(lab: &mut MemLab) -> smoltcp::iface::SocketHandle {
    let ticket = lab.login("alice", WAIT).expect("login");
    lab.auth_paused = true;
    let ep = lab.endpoint;
    lab.open(ep, Auth::Ticket(&ticket), Some(("plc-7", "modbus"))).expect("open")
}

/// A revocation published after the auth worker accepted a session but
/// before the core bound it still ends it: the user hears no "accept" and
/// nothing reaches the PLC (found by a review: the session was bound at the
/// new generation and never checked the user's standing).
#[test]
fn a_revoke_between_verdict_and_bind_still_ends_the_session() {
    let mut lab = lab();
    let h = session_awaiting_verdict(&mut lab);
    let mut decided = 0;
    let start = std::time::Instant::now();
    while decided == 0 && start.elapsed() < WAIT {
        lab.step();
        decided = lab.auth.serve_pending();
    }
    assert_eq!(decided, 1, "the auth worker decided the session");
    assert!(lab.control.revoke_user("alice").is_some());
    lab.auth_paused = false;
    let answer = lab.answer(h, Duration::from_secs(2));
    assert!(!matches!(answer, Some(Answer::Accept { .. })), "accepted after the revoke: {answer:?}");
    let (resp, reached) = read_after_change(&mut lab, h);
    assert!(resp.is_none() && !reached, "a revoked user's session is still served: {resp:?} reached PLC: {reached}");
    wait_closed(&mut lab, CloseReason::UserRevoked, 1);
}

/// A user revoked and logging in again within the same second gets the
/// session: the verdict was decided after the revocation (found by a review
/// of the fix above: the whole-second comparison refused it).
#[test]
fn a_login_right_after_a_revoke_is_served() {
    let mut lab = lab();
    // Just after a second boundary, so revoke, login and connect share it.
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    std::thread::sleep(Duration::from_nanos(u64::from(1_000_000_000 - t.subsec_nanos())) + Duration::from_millis(5));
    assert_eq!(lab.control.revoke_user("bob"), Some(0), "bob had no ticket yet");
    let ticket = lab.login("bob", WAIT).expect("login after the revoke");
    let h = lab.session(&ticket, WAIT).expect("a session after the revoke");
    assert_eq!(read(&mut lab, h, 1, 0, 1).len(), 11);
    assert_eq!(lab.control.totals().closed(CloseReason::UserRevoked), 0);
}

/// A write rule that wants a fresh login (`ticket_lifetime_secs = 60`)
/// holds for a session that connected through another rule: with a
/// two-minute-old ticket the write is answered exception 01 and never
/// reaches the PLC, while reads and the session go on (found by a review:
/// only the rule that permitted the connect had its limits applied).
#[test]
fn a_write_rules_ticket_lifetime_holds_in_a_session_it_did_not_open() {
    let mut lab = lab();
    lab.rewind(120);
    let h = session(&mut lab);
    let write = "operations = [\"write\"]\nschedule = \"shift\"\n[rule.modbus]";
    assert_eq!(LAB.matches(write).count(), 1);
    let text = LAB.replace(write, &write.replace("[rule.modbus]", "ticket_lifetime_secs = 60\n[rule.modbus]"));
    lab.control.publish(config::parse("lab.toml", &text).expect("config").snapshot).unwrap();
    let mut adu = [0u8; 260];
    let n = request(&mut adu, 2, 1, 6, &[0, 100, 0x04, 0xD2]);
    assert_eq!(exchange(&mut lab, h, &adu[..n]), [0, 2, 0, 0, 0, 3, 1, 0x86, 0x01], "exception 01");
    assert_ne!(lab.sim.holding[100], 1234, "the write reached the PLC");
    assert_eq!(read(&mut lab, h, 3, 100, 1).len(), 11, "reads go on");
    assert_eq!(lab.control.totals().sessions_active, 1);
}

/// A session whose auth verdict never comes (lost to a full queue, say)
/// is dropped at the auth deadline (`auth_busy`) instead of holding its
/// slot forever (found by a review); the verdict that comes late finds no
/// session, and the next session is served.
#[test]
fn a_session_without_a_verdict_is_dropped_at_the_auth_deadline() {
    let opts = CoreOptions { auth_deadline: smoltcp::time::Duration::from_millis(500), ..CoreOptions::default() };
    let mut lab = lab_with(LAB, opts);
    let ticket = lab.login("alice", WAIT).expect("login");
    lab.auth_paused = true;
    assert!(lab.session(&ticket, Duration::from_secs(3)).is_err(), "no verdict, no session");
    wait_closed(&mut lab, CloseReason::AuthBusy, 1);
    lab.auth_paused = false;
    let h = lab.session(&ticket, WAIT).expect("the next session");
    assert_eq!(read(&mut lab, h, 1, 0, 1).len(), 11);
}

/// A TLS error while the auth verdict is pending ends the session then
/// (`tls_failed`): the verdict that comes later finds it finishing and
/// opens no asset connection (found by a review: the error was ignored,
/// and the accepted session connected to the PLC on a dead TLS session).
#[test]
fn a_tls_error_while_authenticating_opens_no_asset_connection() {
    let mut lab = lab();
    let h = session_awaiting_verdict(&mut lab);
    assert!(lab.run_until(WAIT, |l| !l.clients[&h].conn.is_handshaking() && !l.clients[&h].conn.wants_write()));
    lab.run_until(Duration::from_millis(200), |_| false);
    // A forged application-data record: bad_record_mac at the gate.
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    record.extend_from_slice(&[0x5a; 32]);
    lab.user.socket(h).send_slice(&record).expect("send");
    wait_closed(&mut lab, CloseReason::TlsFailed, 1);
    lab.auth_paused = false;
    lab.run_until(Duration::from_secs(1), |_| false);
    let t = lab.control.totals();
    assert_eq!((t.sessions_active, lab.plc.port.stats().rx_frames), (0, 0), "no asset connection: {t:?}");
}

/// Sessions to an asset that is switched off (no ARP answer) leave no
/// sockets behind: a reset socket that cannot send its RST goes after
/// `RST_GRACE`. No ARP for it after that, and no stale RSTs when the asset
/// comes back (found by a review: each failed connect leaked a socket
/// that sought the asset for ever).
#[test]
fn sockets_to_an_unreachable_asset_are_reaped() {
    let opts = CoreOptions { connect_timeout: smoltcp::time::Duration::from_millis(400), ..CoreOptions::default() };
    let mut lab = lab_with(LAB, opts);
    lab.plc_offline = true;
    let ticket = lab.login("alice", WAIT).unwrap();
    for n in 1..=3 {
        assert!(lab.session(&ticket, Duration::from_secs(3)).is_err());
        wait_closed(&mut lab, CloseReason::AssetUnreachable, n);
    }
    assert_eq!(lab.control.totals().sessions_active, 0);
    // Long after the sessions ended, watch the south link while the PLC is away.
    lab.run_until(Duration::from_secs(2), |_| false);
    let mut arps = 0;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        lab.gate.poll_once();
        let _ = lab.plc.port.rx_burst(usize::MAX, &mut |f| arps += usize::from(f.len() >= 14 && f[12..14] == [8, 6]));
        std::thread::sleep(Duration::from_millis(2));
    }
    // The PLC comes back: every retired socket still holds its connection and
    // now sends the RST it owed.
    lab.plc_offline = false;
    let mut rsts = 0;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        lab.gate.poll_once();
        let now = lab.clock.now();
        let plc = &mut lab.plc;
        let _ = plc.port.rx_burst(usize::MAX, &mut |f| {
            if f.len() >= 54 && f[12..14] == [8, 0] && f[23] == 6 && f[47] & 0x04 != 0 {
                rsts += 1;
            }
            let _ = plc.stack.rx.push(f, false);
        });
        plc.poll(now);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!((arps, rsts), (0, 0), "ARPs for the asset / RSTs for sessions that ended seconds ago");
}

/// Half-open connections count against the 256 listeners of an endpoint:
/// a SYN flood gets 256 SYN-ACKs and RSTs after that, not a socket per SYN
/// (found by a review: only listeners still in LISTEN were counted).
#[test]
fn a_syn_flood_is_bounded_by_the_listeners_of_an_endpoint() {
    let mut lab = lab();
    let _ = lab.login("alice", WAIT).unwrap(); // ARP resolved both ways
    let ep = lab.endpoint;
    let mut synacks = std::collections::HashSet::new();
    let mut rsts = 0usize;
    let count = |f: &[u8], synacks: &mut std::collections::HashSet<u16>, rsts: &mut usize| {
        if f.len() >= 54 && f[12..14] == [0x08, 0x00] && f[23] == 6 {
            let flags = f[14 + 20 + 13];
            if flags & 0x12 == 0x12 {
                synacks.insert(u16::from_be_bytes([f[36], f[37]])); // distinct user ports
            } else if flags & 0x04 != 0 {
                *rsts += 1;
            }
        }
    };
    for _ in 0..40 {
        for _ in 0..50 {
            lab.user.connect(ep, 256);
        }
        let now = lab.clock.now();
        lab.user.poll(now); // sends the SYNs
        for _ in 0..3 {
            lab.gate.poll_once();
            // The user host never sees the SYN-ACKs: no handshake completes.
            let _ = lab.user.port.rx_burst(usize::MAX, &mut |f| count(f, &mut synacks, &mut rsts));
        }
    }
    assert_eq!(lab.control.totals().sessions_opened, 1, "only the login");
    let half_open = synacks.len();
    assert!(half_open <= 256 + 4, "{half_open} half-open sockets on one endpoint ({rsts} RSTs)");
}
