//! The whole dataplane in memory: user host -> gate (classification, segment
//! stacks, sessions) -> PLC, over memory links, with real smoltcp TCP on all
//! three. No root needed.

use std::net::SocketAddrV4;
use std::time::Duration;

use control::config;
use dataplane::classify::DropReason;
use dataplane::core::CoreOptions;
use dataplane::session::CloseReason;
use perf::memlab::MemLab;
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

/// Sends one request on `h` and waits for the whole response.
fn exchange(lab: &mut MemLab, h: smoltcp::iface::SocketHandle, adu: &[u8]) -> Vec<u8> {
    lab.transact(h, adu, WAIT).expect("no complete response")
}

#[test]
fn modbus_read_and_write_through_the_gate() {
    let mut lab = lab();
    let ep = lab.endpoint;
    let h = lab.user.connect(ep, 4096);
    let mut adu = [0u8; 260];
    let n = request(&mut adu, 1, 1, 3, &read_holding(0, 10));
    let resp = exchange(&mut lab, h, &adu[..n]);
    // MBAP tid 1, len 23, unit 1, fc 3, 20 bytes: registers 0..10 hold 0..10.
    let mut expected = vec![0, 1, 0, 0, 0, 23, 1, 3, 20];
    for i in 0..10u16 {
        expected.extend_from_slice(&i.to_be_bytes());
    }
    assert_eq!(resp, expected);

    let n = request(&mut adu, 2, 1, 6, &[0, 100, 0x04, 0xD2]);
    assert_eq!(
        exchange(&mut lab, h, &adu[..n]),
        [0, 2, 0, 0, 0, 6, 1, 6, 0, 100, 0x04, 0xD2]
    );
    assert_eq!(lab.sim.holding[100], 1234, "the write reached the PLC");
    assert_eq!(
        lab.sim.log,
        [
            Served {
                unit: 1,
                function: 3,
                address: 0,
                quantity: 10
            },
            Served {
                unit: 1,
                function: 6,
                address: 100,
                quantity: 1234
            }
        ]
    );

    let t = lab.control.totals();
    assert_eq!(t.sessions_opened, 1);
    assert_eq!(t.sessions_active, 1);
    assert!(t.bytes_up >= 24 && t.bytes_down >= 41, "{t:?}");

    // The user closes: the FIN crosses to the PLC, the PLC closes, the session ends.
    lab.user.socket(h).close();
    assert!(lab.run_until(WAIT, |l| l
        .control
        .totals()
        .closed(CloseReason::ClientClosed)
        == 1));
    assert!(
        lab.run_until(WAIT, |l| l.sim.connections() == 0),
        "the PLC saw the FIN and closed"
    );
    assert_eq!(lab.control.totals().sessions_active, 0);
    let mut events = Vec::new();
    lab.control
        .drain_events(|e| events.push(control::describe(e)));
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].contains("open: 198.18.0.2:"), "{events:?}");
    assert!(
        events[1].contains("closed: client_closed (24 bytes up, 41 bytes down"),
        "{events:?}"
    );
}

#[test]
fn port_that_is_not_an_endpoint_gets_no_syn_ack() {
    let mut lab = lab();
    let ep = lab.endpoint;
    let wrong_port = lab.user.connect(SocketAddrV4::new(*ep.ip(), 503), 1024);
    let wrong_ip = lab.user.connect(
        SocketAddrV4::new(std::net::Ipv4Addr::new(100, 64, 3, 8), 502),
        1024,
    );
    let ok = lab.run_until(Duration::from_millis(1500), |l| {
        l.control.totals().dropped(DropReason::NoEndpoint) >= 2
    });
    assert!(ok, "{:?}", lab.control.totals());
    // Keep going a while: still no answer of any kind (no SYN-ACK, no RST).
    lab.run_until(Duration::from_millis(300), |_| false);
    assert_eq!(lab.user.socket(wrong_port).state(), State::SynSent);
    assert_eq!(lab.user.socket(wrong_ip).state(), State::SynSent);
    assert_eq!(lab.control.totals().sessions_opened, 0);
    assert!(lab.sim.log.is_empty());
}

#[test]
fn many_concurrent_sessions_on_one_endpoint() {
    let mut lab = lab();
    let ep = lab.endpoint;
    const N: usize = 40;
    let handles: Vec<_> = (0..N).map(|_| lab.user.connect(ep, 2048)).collect();
    assert!(
        lab.run_until(WAIT, |l| handles
            .iter()
            .all(|&h| l.user.socket(h).may_send())),
        "{:?}",
        lab.control.totals()
    );
    let mut adu = [0u8; 260];
    for (i, &h) in handles.iter().enumerate() {
        let n = request(&mut adu, i as u16, 1, 3, &read_holding(i as u16, 1));
        lab.user.socket(h).send_slice(&adu[..n]).unwrap();
    }
    let mut answers = vec![Vec::new(); N];
    let ok = lab.run_until(WAIT, |l| {
        for (i, &h) in handles.iter().enumerate() {
            let s = l.user.socket(h);
            while s.can_recv() {
                s.recv(|d| {
                    answers[i].extend_from_slice(d);
                    (d.len(), ())
                })
                .unwrap();
            }
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
    assert_eq!(t.sessions_opened, N as u64);
    assert_eq!(t.sessions_active, N as u64);
}

#[test]
fn plc_that_disappears_resets_the_user() {
    let mut lab = lab();
    let h = lab.user.connect(lab.endpoint, 1024);
    let mut adu = [0u8; 260];
    let n = request(&mut adu, 1, 1, 3, &read_holding(0, 1));
    exchange(&mut lab, h, &adu[..n]);
    let plc = &mut lab.plc;
    lab.sim.abort_all(plc);
    assert!(
        lab.run_until(WAIT, |l| l.user.socket(h).state() == State::Closed),
        "user was not reset"
    );
    assert_eq!(lab.control.totals().closed(CloseReason::AssetReset), 1);
    assert_eq!(lab.control.totals().sessions_active, 0);
}

#[test]
fn refused_and_unreachable_assets_reset_the_user_with_a_reason() {
    // Refused: the PLC stops listening, its stack answers the SYN with RST.
    let mut lab = lab();
    let plc = &mut lab.plc;
    lab.sim.stop_listening(plc);
    let h = lab.user.connect(lab.endpoint, 1024);
    assert!(
        lab.run_until(WAIT, |l| l
            .control
            .totals()
            .closed(CloseReason::AssetRefused)
            == 1),
        "{:?}",
        lab.control.totals()
    );
    assert!(lab.run_until(WAIT, |l| l.user.socket(h).state() == State::Closed));

    // Unreachable: the PLC's cable is pulled (no ARP answer, no SYN-ACK).
    let opts = CoreOptions {
        connect_timeout: smoltcp::time::Duration::from_millis(400),
        ..CoreOptions::default()
    };
    let mut lab = lab_with(LAB, opts);
    lab.plc_offline = true;
    let h = lab.user.connect(lab.endpoint, 1024);
    assert!(
        lab.run_until(WAIT, |l| l
            .control
            .totals()
            .closed(CloseReason::AssetUnreachable)
            == 1),
        "{:?}",
        lab.control.totals()
    );
    assert!(lab.run_until(WAIT, |l| l.user.socket(h).state() == State::Closed));
}

#[test]
fn idle_sessions_stay_open_past_the_connect_timeout() {
    let opts = CoreOptions {
        connect_timeout: smoltcp::time::Duration::from_millis(200),
        ..CoreOptions::default()
    };
    let mut lab = lab_with(LAB, opts);
    let h = lab.user.connect(lab.endpoint, 1024);
    let mut adu = [0u8; 260];
    let n = request(&mut adu, 1, 1, 3, &read_holding(0, 1));
    exchange(&mut lab, h, &adu[..n]);
    lab.run_until(Duration::from_millis(1000), |_| false);
    assert_eq!(lab.user.socket(h).state(), State::Established);
    let n = request(&mut adu, 2, 1, 3, &read_holding(5, 1));
    assert_eq!(
        exchange(&mut lab, h, &adu[..n]),
        [0, 2, 0, 0, 0, 5, 1, 3, 2, 0, 5]
    );
    assert_eq!(lab.control.totals().sessions_active, 1);
}

#[test]
fn slow_asset_backpressures_the_user_and_loses_nothing() {
    // A raw TCP service to a sink that does not read at first.
    let text = LAB.replace(
        "protocol = \"modbus\"\nport = 502\nasset_port = 502",
        "protocol = \"tcp\"\nport = 5900\nasset_port = 5900",
    );
    let opts = CoreOptions {
        socket_buffer: 4096,
        ..CoreOptions::default()
    };
    let mut lab = lab_with(&text, opts);
    let sink = lab.plc.listen(5900, 4096);
    let h = lab.user.connect(lab.endpoint, 16384);
    assert!(lab.run_until(WAIT, |l| l.user.socket(h).may_send()));
    let data: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    // Phase 1: the sink does not read. The user can only push what the
    // buffers on the way hold: its window closes.
    lab.run_until(Duration::from_millis(500), |l| {
        let s = l.user.socket(h);
        if s.can_send() && sent < data.len() {
            sent += s.send_slice(&data[sent..]).unwrap();
        }
        false
    });
    let in_flight = sent - (lab.user.socket(h).send_queue());
    assert!(
        in_flight <= 3 * 4096 + 1500,
        "{in_flight} bytes left the user: no backpressure"
    );
    assert!(sent < data.len());
    // Phase 2: the sink reads; every byte arrives in order.
    let ok = lab.run_until(WAIT, |l| {
        let s = l.user.socket(h);
        if s.can_send() && sent < data.len() {
            sent += s.send_slice(&data[sent..]).unwrap();
        }
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
