use super::*;
use crate::inspect::testing::{answers as to_user, every_split_agrees, feed, viewer, Wires, ALLOW};
use crate::inspect::EXPIRE_US;
use crate::policy::Denial;
use crate::wire::enip::tests::{
    hex, CONNECTED_IDENTITY, FORWARD_OPEN, READ_SPEED, REGISTER, RESET_IDENTITY, WRITE_SPEED,
};
use crate::wire::Progress;

/// The CIP replies in a stream of messages.
fn replies(mut stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Progress::Done { len } = Framer::next(stream) {
        let e = Encap::parse(&stream[..len]).unwrap();
        out.push(e.cpf().map_or(vec![], |c| c.message.to_vec()));
        stream = &stream[len..];
    }
    out
}

#[test]
fn a_viewer_reads_and_is_refused_writes_and_resets() {
    let mut insp = EnipInspector::new();
    let mut w = Wires::default();
    let stream = [
        hex(REGISTER),
        hex(READ_SPEED),
        hex(WRITE_SPEED),
        hex(FORWARD_OPEN),
        hex(CONNECTED_IDENTITY),
        hex(RESET_IDENTITY),
    ]
    .concat();
    let seen = feed(&mut insp, &mut w, &stream, viewer);
    let got: Vec<_> = seen.iter().map(|i| (i.function, i.op, i.verdict)).collect();
    let no = Verdict::Denied { denial: Denial::NoRule, error: 0x0f };
    assert_eq!(
        got,
        [
            (0, Op::Connect, Verdict::Transport),
            (wire::READ_TAG, Op::Read, Verdict::Allowed { rule: 7 }),
            (wire::WRITE_TAG, Op::Write, no),
            (wire::LARGE_FORWARD_OPEN, Op::Connect, Verdict::Transport),
            (wire::GET_ATTRIBUTES_ALL, Op::Diagnostic, Verdict::Allowed { rule: 7 }),
            (wire::RESET, Op::Control, no),
        ]
    );
    assert_eq!(w.asset, [hex(REGISTER), hex(READ_SPEED), hex(FORWARD_OPEN), hex(CONNECTED_IDENTITY)].concat());
    // Write Tag reply 0xCD and Reset reply 0x85, both privilege violation.
    assert_eq!(replies(&w.user), [vec![0xcd, 0, 0x0f, 0], vec![0x85, 0, 0x0f, 0]]);
}

#[test]
fn every_split_gives_the_same_verdicts_and_bytes() {
    let stream = [hex(REGISTER), hex(WRITE_SPEED), hex(READ_SPEED)].concat();
    every_split_agrees::<EnipInspector>(&stream, viewer);
}

/// Replies captured from cpppo's simulator.
const REGISTER_REPLY: &str = "65000400606d73340000000000000000000000000000000001000000";
const READ_REPLY: &str =
    "6f001a00606d733400000000300000000000000000000000000000000800020000000000b2000a00cc000000c30000002a00";
const OPEN_REPLY: &str = "6f002e009f635f34000000005f7079636f6d6d5f00000000000000000a00020000000000b2001e00db000000e0fe589e37a09020270409102ecae7f801402000014020000000";

#[test]
fn replies_are_matched_and_connected_refusals_use_the_learned_connection() {
    let mut insp = EnipInspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &[hex(REGISTER), hex(READ_SPEED), hex(FORWARD_OPEN)].concat(), |_| ALLOW);
    let stray = hex(READ_REPLY);
    let answers =
        to_user(&mut insp, &mut w, &[hex(REGISTER_REPLY), hex(READ_REPLY), stray, hex(OPEN_REPLY)].concat(), 9);
    assert_eq!(
        answers,
        [
            Answer::Matched { seq: 1, latency: 9 },
            Answer::Matched { seq: 2, latency: 9 },
            Answer::Unmatched,
            Answer::Matched { seq: 3, latency: 9 }
        ]
    );
    assert_eq!(insp.stats.unmatched, 1);
    // A refused connected request is answered on the T->O id the
    // originator chose in its Forward Open (0x2090a037), with its sequence.
    w.user.clear();
    let mut reset = hex(CONNECTED_IDENTITY);
    let at = reset.len() - 6;
    reset[at] = wire::RESET;
    feed(&mut insp, &mut w, &reset, viewer);
    let e = Encap::parse(&w.user).unwrap();
    let cpf = e.cpf().unwrap();
    assert_eq!((cpf.connection, cpf.sequence, cpf.message), (Some(0x2090_a037), Some(1), &[0x85, 0, 0x0f, 0][..]));
}

#[test]
fn malformed_and_unknown_messages_get_protocol_errors() {
    let mut w = Wires::default();
    let mut unknown = hex(REGISTER);
    unknown[0] = 0x99;
    let mut bad_cip = hex(READ_SPEED);
    // The Unconnected Send's embedded size points past the data.
    bad_cip[48] = 0x7f;
    let seen = feed(&mut EnipInspector::new(), &mut w, &[unknown, bad_cip].concat(), |_| ALLOW);
    assert!(seen.iter().all(|i| matches!(i.verdict, Verdict::Malformed { .. })), "{seen:?}");
    assert!(w.asset.is_empty());
    let mut stream = &w.user[..];
    let mut statuses = Vec::new();
    while let Progress::Done { len } = Framer::next(stream) {
        let e = Encap::parse(&stream[..len]).unwrap();
        statuses.push((e.status, e.cpf().map(|c| c.message.to_vec())));
        stream = &stream[len..];
    }
    assert_eq!(statuses, [(1, None), (0, Some(vec![0xd2, 0, 0x13, 0]))]);
}

#[test]
fn a_multiple_service_packet_is_all_or_nothing() {
    let get = [wire::GET_ATTRIBUTE_SINGLE, 3, 0x20, 1, 0x24, 1, 0x30, 7];
    let write = [wire::WRITE_TAG, 2, 0x91, 1, b'A', 0, 0xc3, 0, 1, 0, 5, 0];
    let mut data = vec![2, 0, 6, 0, 6 + get.len() as u8, 0];
    data.extend(get);
    data.extend(write);
    let msp = [&[wire::MULTIPLE_SERVICE_PACKET, 2, 0x20, 2, 0x24, 1][..], &data].concat();
    // SendRRData around it.
    let mut m = hex(RESET_IDENTITY);
    m.truncate(wire::HEADER + 14);
    m.extend((msp.len() as u16).to_le_bytes());
    m.extend(&msp);
    let n = (m.len() - wire::HEADER) as u16;
    m[2..4].copy_from_slice(&n.to_le_bytes());
    let mut w = Wires::default();
    let seen = feed(&mut EnipInspector::new(), &mut w, &m, viewer);
    assert_eq!((seen[0].op, seen[0].function), (Op::Write, wire::MULTIPLE_SERVICE_PACKET));
    assert!(matches!(seen[0].verdict, Verdict::Denied { .. }));
    // 0x8A, embedded service error, one reply per request, each refused.
    assert_eq!(replies(&w.user), [vec![0x8a, 0, 0x1e, 0, 2, 0, 6, 0, 10, 0, 0x8e, 0, 0x0f, 0, 0xcd, 0, 0x0f, 0]]);
    let e = Encap::parse(&w.user).unwrap();
    let mut out = [0u8; MAX_REFUSAL];
    let n = refusal(&m, wire::MULTIPLE_SERVICE_PACKET, 0x0f, &Connections::default(), &mut out).unwrap();
    assert_eq!((&out[..n], e.command), (&w.user[..], wire::SEND_RR_DATA), "the capture rebuilds it");
    let mut w = Wires::default();
    let seen = feed(&mut EnipInspector::new(), &mut w, &m, |_| ALLOW);
    assert_eq!(seen[0].verdict, Verdict::Allowed { rule: 7 });
    assert_eq!(w.asset, m);
}

#[test]
fn too_many_requests_in_flight_are_refused() {
    let mut insp = EnipInspector::new();
    let mut w = Wires::default();
    let stream: Vec<u8> = (0..=MAX_OUTSTANDING).flat_map(|_| hex(READ_SPEED)).collect();
    let seen = feed(&mut insp, &mut w, &stream, |_| ALLOW);
    assert_eq!(seen.last().map(|i| i.verdict), Some(Verdict::Flood { error: 2 }));
    assert_eq!(replies(&w.user), [vec![0xcc, 0, 0x02, 0]]);
}

#[test]
fn refusals_rebuilt_for_the_capture_are_the_ones_sent() {
    for m in [hex(WRITE_SPEED), hex(RESET_IDENTITY)] {
        let mut w = Wires::default();
        let seen = feed(&mut EnipInspector::new(), &mut w, &m, viewer);
        let Verdict::Denied { error, .. } = seen[0].verdict else { panic!() };
        let mut out = [0u8; MAX_REFUSAL];
        let n = refusal(&m, seen[0].function, error, &Connections::default(), &mut out).unwrap();
        assert_eq!(&out[..n], &w.user[..]);
    }
}

#[test]
fn a_connected_refusal_is_rebuilt_on_the_connection_learned_from_the_trail() {
    // What the gate sent: pycomm3's Forward Open, the target's reply, then a
    // refused connected Reset on the O->T id the target chose.
    let mut insp = EnipInspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &hex(FORWARD_OPEN), |_| ALLOW);
    to_user(&mut insp, &mut w, &hex(OPEN_REPLY), 9);
    w.user.clear();
    let mut reset = hex(CONNECTED_IDENTITY);
    let at = reset.len() - 6;
    reset[at] = wire::RESET;
    let seen = feed(&mut insp, &mut w, &reset, viewer);
    let Verdict::Denied { error, .. } = seen[0].verdict else { panic!("{seen:?}") };
    // What the audit writer sees: the same messages as payloads.
    assert_eq!(forward_open_request(&hex(FORWARD_OPEN)), Some(0x2090_a037));
    assert_eq!(forward_open_reply(&hex(OPEN_REPLY)), Some(0x9e58_fee0));
    let mut learned = Connections::default();
    learned.learn(0x9e58_fee0, 0x2090_a037);
    let mut out = [0u8; MAX_REFUSAL];
    let n = refusal(&reset, seen[0].function, error, &learned, &mut out).unwrap();
    assert_eq!(&out[..n], &w.user[..], "the capture shows the refusal the gate sent");
    // Without the Forward Open the rebuild can only use the request's id.
    let n = refusal(&reset, seen[0].function, error, &Connections::default(), &mut out).unwrap();
    assert_ne!(&out[..n], &w.user[..]);
    // Anything but a Forward Open, or a failed one, teaches nothing.
    assert_eq!(forward_open_request(&hex(READ_SPEED)), None);
    assert_eq!(forward_open_reply(&hex(READ_REPLY)), None);
    let mut failed = hex(OPEN_REPLY);
    failed[wire::HEADER + 16 + 2] = 0x01;
    assert_eq!(forward_open_reply(&failed), None);
    for cut in 0..hex(OPEN_REPLY).len() {
        assert_eq!(forward_open_reply(&hex(OPEN_REPLY)[..cut]), None, "cut at {cut}");
    }
}

/// The audit writer's side on random and mutated payloads (twin of the
/// fuzz target `enip`): no panic, and every rebuilt refusal parses.
#[test]
fn trail_helpers_never_panic() {
    let mut rng = crate::xorshift::XorShift::new(0xe41_0002);
    let seeds: Vec<Vec<u8>> = [FORWARD_OPEN, OPEN_REPLY, CONNECTED_IDENTITY, READ_SPEED, WRITE_SPEED].map(hex).to_vec();
    let mutated = |rng: &mut crate::xorshift::XorShift, seed: &[u8]| {
        let mut m = seed.to_vec();
        for _ in 0..rng.below(4) {
            let i = rng.below(m.len());
            m[i] = rng.next_u64() as u8;
        }
        m.truncate(m.len() - rng.below(8));
        m
    };
    let (mut learned, mut rebuilt, mut learnt) = (Connections::default(), 0, 0);
    for _ in 0..20_000 {
        let (open, reply) = (mutated(&mut rng, &seeds[0]), mutated(&mut rng, &seeds[1]));
        if let (Some(t_to_o), Some(o_to_t)) = (forward_open_request(&open), forward_open_reply(&reply)) {
            learned.learn(o_to_t, t_to_o);
            learnt += 1;
        }
        let seed = rng.below(seeds.len());
        let m = mutated(&mut rng, &seeds[seed]);
        let mut out = [0u8; MAX_REFUSAL];
        for (service, error) in [(wire::WRITE_TAG, 0x0f), (wire::MULTIPLE_SERVICE_PACKET, 0x0f), (0, 1), (0, 3)] {
            if let Some(n) = refusal(&m, service, error, &learned, &mut out) {
                assert!(Encap::parse(&out[..n]).is_some(), "{:02x?}", &out[..n]);
                rebuilt += 1;
            }
        }
    }
    assert!(rebuilt > 1_000 && learnt > 100, "{rebuilt} refusals rebuilt, {learnt} connections learned");
}

#[test]
fn the_oldest_connection_makes_room() {
    let mut c = Connections::default();
    for k in 0..=MAX_CONNECTIONS as u32 {
        c.learn(100 + k, 200 + k);
    }
    assert_eq!(c.reply_id(100), 100, "the first was forgotten");
    assert_eq!(c.reply_id(101), 201);
    assert_eq!(c.reply_id(100 + MAX_CONNECTIONS as u32), 200 + MAX_CONNECTIONS as u32);
}

#[test]
fn operations_follow_the_table() {
    let cip = |service, class| Cip { service, class, instance: 1, symbol: &[], data: &[] };
    for (service, class, op) in [
        (wire::GET_ATTRIBUTES_ALL, wire::CLASS_IDENTITY, Op::Diagnostic),
        (wire::GET_ATTRIBUTE_SINGLE, 0x6b, Op::Read),
        (wire::READ_TAG_FRAGMENTED, 0, Op::Read),
        (wire::WRITE_TAG_FRAGMENTED, 0, Op::Write),
        (wire::READ_MODIFY_WRITE_TAG, 0, Op::Write),
        (wire::SET_ATTRIBUTE_SINGLE, 0xf5, Op::Write),
        // The member services of list attributes (found by a review: the
        // writing ones were `other`).
        (wire::GET_MEMBER, 0xf5, Op::Read),
        (wire::SET_MEMBER, 0xf5, Op::Write),
        (wire::INSERT_MEMBER, 0x6b, Op::Write),
        (wire::REMOVE_MEMBER, 0x6b, Op::Write),
        (wire::RESET, wire::CLASS_IDENTITY, Op::Control),
        (wire::STOP, 0x8e, Op::Control),
        (wire::CREATE, 0x6b, Op::Program),
        (wire::SAVE, 0xf5, Op::Program),
        (0x56, wire::CLASS_CONNECTION_MANAGER, Op::Diagnostic),
        (wire::UNCONNECTED_SEND, wire::CLASS_CONNECTION_MANAGER, Op::Other),
        (wire::FORWARD_OPEN, wire::CLASS_CONNECTION_MANAGER, Op::Connect),
        (0x4b, 0x8e, Op::Other),
        // Object-specific codes are tag services only on tags.
        (wire::READ_TAG, 0x37, Op::Other),
        (wire::WRITE_TAG, 0x6b, Op::Write),
    ] {
        assert_eq!(op_of(&cip(service, class)), op, "service {service:#x} class {class:#x}");
    }
}

/// SendRRData around a CIP message: null address item, unconnected data.
fn rr_data(message: &[u8]) -> Vec<u8> {
    let mut m = hex(RESET_IDENTITY);
    m.truncate(wire::HEADER + 14);
    m.extend((message.len() as u16).to_le_bytes());
    m.extend(message);
    let n = (m.len() - wire::HEADER) as u16;
    m[2..4].copy_from_slice(&n.to_le_bytes());
    m
}

/// An Unconnected Send (priority, ticks, size, message, pad, route) around
/// `message`.
fn unconnected_send(message: &[u8]) -> Vec<u8> {
    let mut v = vec![wire::UNCONNECTED_SEND, 2, 0x20, 6, 0x24, 1, 5, 0x9d];
    v.extend((message.len() as u16).to_le_bytes());
    v.extend(message);
    if message.len() % 2 == 1 {
        v.push(0);
    }
    v.extend([1, 0, 1, 0]);
    v
}

/// The ways round the check a review found: a write after the checked item,
/// a write two Unconnected Sends deep, a write in an Unconnected Send inside
/// a Multiple Service Packet. None reaches the target.
#[test]
fn writes_cannot_hide_from_the_check() {
    let write = [wire::WRITE_TAG, 4, 0x91, 5, b'S', b'p', b'e', b'e', b'd', 0, 0xc3, 0, 1, 0, 7, 0];
    let read = [wire::READ_TAG, 4, 0x91, 5, b'S', b'p', b'e', b'e', b'd', 0, 1, 0];
    assert_eq!(Cip::parse(&write).map(|c| c.symbol), Some(&b"Speed"[..]));
    // A third CPF item (the check saw the read, a target may run the write).
    let mut three = rr_data(&write);
    three[wire::HEADER + 6] = 3;
    three.extend([0xb2, 0, read.len() as u8, 0]);
    three.extend(read);
    let n = (three.len() - wire::HEADER) as u16;
    three[2..4].copy_from_slice(&n.to_le_bytes());
    let nested = rr_data(&unconnected_send(&unconnected_send(&write)));
    let mut data = vec![2, 0, 6, 0];
    let inner = unconnected_send(&write);
    data.extend(((6 + read.len()) as u16).to_le_bytes());
    data.extend(read);
    data.extend(&inner);
    let msp = rr_data(&[&[wire::MULTIPLE_SERVICE_PACKET, 2, 0x20, 2, 0x24, 1][..], &data].concat());
    let mut w = Wires::default();
    let seen = feed(&mut EnipInspector::new(), &mut w, &three, viewer);
    assert!(matches!(seen[0].verdict, Verdict::Malformed { .. }) && w.asset.is_empty(), "three items: {seen:?}");
    for (name, m) in [("nested sends", nested), ("send in a packet", msp)] {
        let mut w = Wires::default();
        let seen = feed(&mut EnipInspector::new(), &mut w, &m, viewer);
        assert!(w.asset.is_empty(), "{name}: forwarded {seen:?}");
        assert_eq!(
            (seen[0].op, matches!(seen[0].verdict, Verdict::Denied { .. })),
            (Op::Write, true),
            "{name}: {seen:?}"
        );
        // The operator, who may write, gets them through.
        let mut w = Wires::default();
        let seen = feed(&mut EnipInspector::new(), &mut w, &m, |_| ALLOW);
        assert_eq!((seen[0].verdict, w.asset.len()), (Verdict::Allowed { rule: 7 }, m.len()), "{name}");
    }
}

/// Paths that name a class twice, or a class and a tag, mean different
/// things to different targets: refused, never taken for the Connection
/// Manager. A packet inside a packet is refused; a packet of 40 reads is
/// fine.
#[test]
fn ambiguous_paths_and_nested_packets_are_refused() {
    let rmw_as_close = [wire::READ_MODIFY_WRITE_TAG, 5, 0x91, 3, b'a', b'b', b'c', 0, 0x20, 6, 0x24, 1];
    let two_classes = [wire::READ_MODIFY_WRITE_TAG, 4, 0x20, 0x6b, 0x24, 1, 0x20, 6, 0x24, 1];
    let read = [wire::READ_TAG, 4, 0x91, 5, b'S', b'p', b'e', b'e', b'd', 0, 1, 0];
    let packet = |requests: &[&[u8]]| {
        let mut data = (requests.len() as u16).to_le_bytes().to_vec();
        let mut offset = 2 + 2 * requests.len();
        for r in requests {
            data.extend((offset as u16).to_le_bytes());
            offset += r.len();
        }
        for r in requests {
            data.extend(*r);
        }
        [&[wire::MULTIPLE_SERVICE_PACKET, 2, 0x20, 2, 0x24, 1][..], &data].concat()
    };
    let inner = packet(&[&read]);
    let nested = packet(&[&read, &inner]);
    for (name, m) in [("rmw as close", &rmw_as_close[..]), ("two classes", &two_classes), ("nested", &nested)] {
        let mut w = Wires::default();
        let seen = feed(&mut EnipInspector::new(), &mut w, &rr_data(m), |_| ALLOW);
        assert!(matches!(seen[0].verdict, Verdict::Malformed { .. }), "{name}: {seen:?}");
        assert!(w.asset.is_empty(), "{name}");
    }
    let forty = packet(&[&read[..]; 40]);
    let mut w = Wires::default();
    let seen = feed(&mut EnipInspector::new(), &mut w, &rr_data(&forty), viewer);
    assert_eq!((seen[0].op, seen[0].verdict), (Op::Read, Verdict::Allowed { rule: 7 }));
    // Refused, each of the 40 gets its reply.
    let mut w = Wires::default();
    feed(&mut EnipInspector::new(), &mut w, &rr_data(&forty), |_| Decision::Deny(Denial::NoRule));
    let reply = &replies(&w.user)[0];
    assert_eq!((reply[2], u16::from_le_bytes([reply[4], reply[5]])), (0x1e, 40));
}

/// Requests the target never answers give their slots back after
/// EXPIRE_US: the session is not refused for ever.
#[test]
fn unanswered_requests_expire() {
    let mut insp = EnipInspector::new();
    let mut w = Wires::default();
    let stream: Vec<u8> = (0..=MAX_OUTSTANDING).flat_map(|_| hex(READ_SPEED)).collect();
    let seen = feed(&mut insp, &mut w, &stream, |_| ALLOW);
    assert_eq!(seen.last().map(|i| i.verdict), Some(Verdict::Flood { error: 2 }));
    // 30 s later the next request finds the slots free again.
    let before = w.asset.len();
    let mut seen = Vec::new();
    let m = hex(READ_SPEED);
    insp.up_spare()[..m.len()].copy_from_slice(&m);
    insp.up_filled(m.len());
    insp.requests(&mut w, &mut |_| ALLOW, EXPIRE_US, &mut |i, _| seen.push(*i)).unwrap();
    assert_eq!(seen[0].verdict, Verdict::Allowed { rule: 7 });
    assert_eq!(w.asset.len(), before + m.len());
}

#[test]
fn an_extended_port_segment_does_not_hide_the_target_class() {
    // Write Tag to Symbol instance 5 (class 0x6b), INT = 42, behind two
    // port segments with port id 15 (extended: a 16-bit port number follows,
    // then the link address; 4 bytes each, CIP Vol 1 C-1.4.1):
    //   [0f 00 20 01] port 0x2000 link 1
    //   [0f 00 2a 00] port 0x002a link 0
    //   [20 6b] class 0x6b   [24 05] instance 5
    // The gate reads each port segment as 2 bytes: it sees a class 1
    // (Identity) in the first port number and swallows the real class and
    // instance in a 32-bit member segment (2a ...) it finds in the second.
    let path = [0x0f, 0x00, 0x20, 0x01, 0x0f, 0x00, 0x2a, 0x00, 0x20, 0x6b, 0x24, 0x05];
    let mut cip = vec![wire::WRITE_TAG, (path.len() / 2) as u8];
    cip.extend(path);
    cip.extend([0xc3, 0x00, 0x01, 0x00, 42, 0]);
    let cip_parsed = Cip::parse(&cip);
    let m = rr_data(&cip);
    // A role that may do anything but write (and control, program).
    fn no_writes(op: Op) -> Decision {
        if matches!(op, Op::Write | Op::Control | Op::Program) {
            Decision::Deny(Denial::NoRule)
        } else {
            ALLOW
        }
    }
    let mut w = Wires::default();
    let seen = feed(&mut EnipInspector::new(), &mut w, &m, no_writes);
    assert!(
        w.asset.is_empty(),
        "a Write Tag reached the target as {:?} (the gate parsed the path as {:?})",
        seen[0].op,
        cip_parsed.map(|c| (c.class, c.instance))
    );
}

/// A SendUnitData reply on connection `t_to_o` with sequence count `seq`:
/// Get_Attributes_All's reply, success, no data.
fn connected_reply(t_to_o: u32, seq: u16) -> Vec<u8> {
    let mut m = vec![0x70, 0, 0, 0, 0x9f, 0x63, 0x5f, 0x34, 0, 0, 0, 0];
    m.extend(b"_pycomm_");
    m.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0xa1, 0, 4, 0]);
    m.extend(t_to_o.to_le_bytes());
    m.extend([0xb1, 0, 6, 0]);
    m.extend(seq.to_le_bytes());
    m.extend([0x81, 0, 0, 0]);
    let n = (m.len() - wire::HEADER) as u16;
    m[2..4].copy_from_slice(&n.to_le_bytes());
    m
}

/// Connected replies are matched by their connection as well as their
/// sequence count (found by a review: with the count alone, two
/// connections' requests in flight could take each other's replies), and
/// a connected item in SendRRData is answered by command and context.
#[test]
fn connected_replies_are_matched_on_their_connection() {
    let mut insp = EnipInspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &[hex(REGISTER), hex(FORWARD_OPEN)].concat(), |_| ALLOW);
    to_user(&mut insp, &mut w, &[hex(REGISTER_REPLY), hex(OPEN_REPLY)].concat(), 1);
    // Sequence 1 on O->T 0x9e58fee0, whose replies come on T->O 0x2090a037.
    feed(&mut insp, &mut w, &hex(CONNECTED_IDENTITY), |_| ALLOW);
    let other = connected_reply(0x1111_1111, 1);
    let own = connected_reply(0x2090_a037, 1);
    let answers = to_user(&mut insp, &mut w, &[other, own].concat(), 5);
    assert_eq!(answers, [Answer::Unmatched, Answer::Matched { seq: 3, latency: 5 }]);
    // The same connected request carried in SendRRData: its reply, in
    // SendRRData with the same context, is its answer.
    let mut rr = hex(CONNECTED_IDENTITY);
    rr[0] = 0x6f;
    feed(&mut insp, &mut w, &rr, |_| ALLOW);
    let mut rr_reply = connected_reply(0x2090_a037, 1);
    rr_reply[0] = 0x6f;
    assert_eq!(to_user(&mut insp, &mut w, &rr_reply, 7), [Answer::Matched { seq: 4, latency: 7 }]);
}
