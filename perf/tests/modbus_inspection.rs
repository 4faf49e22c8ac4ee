//! Modbus/TCP inspection through the whole in-memory dataplane: the lab
//! policy (config/lab.toml) gives `operator` reads plus writes of holding
//! registers 100-199 and `viewer` reads only; the gate answers what the
//! policy denies with the exception the protocol expects, and the PLC never
//! sees a denied request.

use std::time::Duration;

use control::config;
use dataplane::core::CoreOptions;
use dataplane::session::CloseReason;
use perf::memlab::MemLab;
use perf::sim::{read_holding, request, Served};

const LAB: &str = include_str!("../../config/lab.toml");
const WAIT: Duration = Duration::from_secs(10);

fn lab() -> MemLab {
    let cfg = config::parse("lab.toml", LAB).expect("config");
    MemLab::new(&cfg, CoreOptions::default()).expect("memlab")
}

fn ask(lab: &mut MemLab, h: smoltcp::iface::SocketHandle, tid: u16, function: u8, body: &[u8]) -> Vec<u8> {
    let mut adu = [0u8; 260];
    let n = request(&mut adu, tid, 1, function, body);
    lab.transact(h, &adu[..n], WAIT).expect("no answer")
}

#[test]
fn viewer_reads_but_every_write_gets_exception_01() {
    let mut lab = lab();
    let ticket = lab.login("bob", WAIT).unwrap();
    let h = lab.session(&ticket, WAIT).unwrap();
    assert_eq!(ask(&mut lab, h, 1, 3, &read_holding(0, 2)), [0, 1, 0, 0, 0, 7, 1, 3, 4, 0, 0, 0, 1]);
    // write single register 150 = 42 -> 0x86 01, the PLC untouched.
    assert_eq!(ask(&mut lab, h, 2, 6, &[0, 150, 0, 42]), [0, 2, 0, 0, 0, 3, 1, 0x86, 0x01]);
    // write multiple coils -> 0x8F 01.
    assert_eq!(ask(&mut lab, h, 3, 15, &[0, 0, 0, 3, 1, 0b101]), [0, 3, 0, 0, 0, 3, 1, 0x8F, 0x01]);
    assert_eq!(lab.sim.holding[150], 150, "the register is unchanged");
    assert_eq!(lab.sim.log, [Served { unit: 1, function: 3, address: 0, quantity: 2 }], "the PLC saw only the read");
    let t = lab.control.totals();
    assert_eq!((t.modbus_allowed, t.modbus_denied), (1, 2), "{t:?}");
}

#[test]
fn operator_writes_its_range_and_is_refused_outside_it() {
    let mut lab = lab();
    let ticket = lab.login("alice", WAIT).unwrap();
    let h = lab.session(&ticket, WAIT).unwrap();
    // Inside 100-199: forwarded, echoed by the PLC.
    assert_eq!(ask(&mut lab, h, 1, 6, &[0, 150, 0, 42]), [0, 1, 0, 0, 0, 6, 1, 6, 0, 150, 0, 42]);
    assert_eq!(lab.sim.holding[150], 42);
    // Register 200: exception 02 (illegal data address), from the gate.
    assert_eq!(ask(&mut lab, h, 2, 6, &[0, 200, 0, 42]), [0, 2, 0, 0, 0, 3, 1, 0x86, 0x02]);
    assert_eq!(lab.sim.holding[200], 200);
    // Diagnostics: not the operator's business: exception 01.
    assert_eq!(ask(&mut lab, h, 3, 8, &[0, 0, 0xAB, 0xCD]), [0, 3, 0, 0, 0, 3, 1, 0x88, 0x01]);
    // Malformed (quantity 0): the gate answers 03, the PLC never sees it.
    assert_eq!(ask(&mut lab, h, 4, 3, &read_holding(0, 0)), [0, 4, 0, 0, 0, 3, 1, 0x83, 0x03]);
    assert_eq!(lab.sim.log, [Served { unit: 1, function: 6, address: 150, quantity: 42 }]);
}

#[test]
fn pipelined_requests_split_anywhere_get_their_answers_in_order() {
    let mut lab = lab();
    let ticket = lab.login("alice", WAIT).unwrap();
    let h = lab.session(&ticket, WAIT).unwrap();
    let mut stream = Vec::new();
    let mut adu = [0u8; 260];
    for (tid, f, body) in
        [(1u16, 3u8, read_holding(10, 1).to_vec()), (2, 6, vec![0, 201, 0, 1]), (3, 3, read_holding(11, 1).to_vec())]
    {
        let n = request(&mut adu, tid, 1, f, &body);
        stream.extend_from_slice(&adu[..n]);
    }
    // Send byte by byte in three TLS writes of odd sizes.
    let c = lab.clients.get_mut(&h).unwrap();
    c.send(&stream[..5]);
    c.send(&stream[5..17]);
    c.send(&stream[17..]);
    let mut got = Vec::new();
    let ok = lab.run_until(WAIT, |l| {
        got.extend(l.clients.get_mut(&h).unwrap().take_received());
        got.len() >= 11 + 9 + 11
    });
    assert!(ok, "{got:?}");
    // The denied write is answered by the gate at once, possibly before the
    // PLC's answers: match by transaction id, as Modbus clients do.
    let mut answers = Vec::new();
    let mut rest = &got[..];
    while rest.len() >= 6 {
        let n = 6 + usize::from(u16::from_be_bytes([rest[4], rest[5]]));
        answers.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    answers.sort();
    assert_eq!(
        answers,
        [
            vec![0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 10],
            vec![0, 2, 0, 0, 0, 3, 1, 0x86, 0x02],
            vec![0, 3, 0, 0, 0, 5, 1, 3, 2, 0, 11]
        ]
    );
}

#[test]
fn a_stream_that_cannot_be_framed_ends_the_session() {
    let mut lab = lab();
    let ticket = lab.login("alice", WAIT).unwrap();
    let h = lab.session(&ticket, WAIT).unwrap();
    // Protocol id 7: not Modbus/TCP. The gate closes with framing_lost.
    lab.clients.get_mut(&h).unwrap().send(&[0, 1, 0, 7, 0, 6, 1, 3, 0, 0, 0, 1]);
    assert!(
        lab.run_until(WAIT, |l| l.control.totals().closed(CloseReason::FramingLost) == 1),
        "{:?}",
        lab.control.totals()
    );
    assert!(lab.sim.log.is_empty());
}
