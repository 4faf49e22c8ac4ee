use super::*;
use crate::audit::Decoded;
use crate::inspect::testing::{every_split_agrees, feed, viewer, Wires, ALLOW};
use crate::inspect::Downstream;
use crate::policy::Denial;
use crate::wire::Progress;

fn dt(pdu: &[u8]) -> Vec<u8> {
    let len = 7 + pdu.len();
    [&[3, 0, (len >> 8) as u8, len as u8, 2, 0xf0, 0x80][..], pdu].concat()
}

fn pdu(rosctr: u8, pdu_ref: u16, param: &[u8], data: &[u8]) -> Vec<u8> {
    let r = pdu_ref.to_be_bytes();
    let (p, d) = ((param.len() as u16).to_be_bytes(), (data.len() as u16).to_be_bytes());
    let mut v = vec![0x32, rosctr, 0, 0, r[0], r[1], p[0], p[1], d[0], d[1]];
    if rosctr == wire::ACK || rosctr == wire::ACK_DATA {
        v.extend([0, 0]);
    }
    [v, param.to_vec(), data.to_vec()].concat()
}

const CR: [u8; 22] = [3, 0, 0, 22, 17, 0xe0, 0, 0, 0, 1, 0, 0xc0, 1, 0x0a, 0xc1, 2, 1, 0, 0xc2, 2, 1, 2];
const CC: [u8; 22] = [3, 0, 0, 22, 17, 0xd0, 0, 1, 0, 1, 0, 0xc0, 1, 0x0a, 0xc1, 2, 1, 0, 0xc2, 2, 1, 2];
const READ_DB1: [u8; 14] = [wire::READ_VAR, 1, 0x12, 0x0a, 0x10, 0x02, 0, 4, 0, 1, 0x84, 0, 0, 0];

fn read(pdu_ref: u16) -> Vec<u8> {
    dt(&pdu(wire::JOB, pdu_ref, &READ_DB1, &[]))
}

fn write(pdu_ref: u16) -> Vec<u8> {
    let mut p = READ_DB1;
    p[0] = wire::WRITE_VAR;
    dt(&pdu(wire::JOB, pdu_ref, &p, &[0, 4, 0, 16, 0xbe, 0xef]))
}

fn setup(pdu_len: u16) -> Vec<u8> {
    let l = pdu_len.to_be_bytes();
    dt(&pdu(wire::JOB, 0, &[wire::SETUP_COMMUNICATION, 0, 0, 1, 0, 1, l[0], l[1]], &[]))
}

fn szl(pdu_ref: u16) -> Vec<u8> {
    dt(&pdu(wire::USERDATA, pdu_ref, &[0, 1, 0x12, 4, 0x11, 0x44, 1, 0], &[0xff, 9, 0, 4, 0, 0x1c, 0, 0]))
}

fn set_clock(pdu_ref: u16) -> Vec<u8> {
    dt(&pdu(wire::USERDATA, pdu_ref, &[0, 1, 0x12, 4, 0x11, 0x47, 2, 0], &[0xff, 9, 0, 2, 0, 0]))
}

fn stop(pdu_ref: u16) -> Vec<u8> {
    dt(&pdu(wire::JOB, pdu_ref, &[&[wire::PLC_STOP, 0, 0, 0, 0, 0, 9][..], b"P_PROGRAM"].concat(), &[]))
}

/// The S7 PDUs in a stream of whole TPKTs.
fn pdus(mut stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Progress::Done { len } = Framer::next(stream) {
        out.push(stream[7..len].to_vec());
        stream = &stream[len..];
    }
    assert!(stream.is_empty());
    out
}

#[test]
fn a_viewer_reads_and_is_refused_the_rest_as_a_cpu_would() {
    let mut insp = S7Inspector::new();
    let mut w = Wires::default();
    let stream = [CR.to_vec(), setup(480), read(1), write(2), stop(3), szl(4), set_clock(5)].concat();
    let seen = feed(&mut insp, &mut w, &stream, viewer);
    let verdicts: Vec<_> = seen.iter().map(|i| (i.op, i.verdict)).collect();
    let no = |error| Verdict::Denied { denial: Denial::NoRule, error };
    assert_eq!(
        verdicts,
        vec![
            (Op::Connect, Verdict::Transport),
            (Op::Connect, Verdict::Transport),
            (Op::Read, Verdict::Allowed { rule: 7 }),
            (Op::Write, no(3)),
            (Op::Control, no(0x8703)),
            (Op::Diagnostic, Verdict::Allowed { rule: 7 }),
            (Op::Control, no(0xd241)),
        ]
    );
    assert_eq!(seen.iter().map(|i| i.seq).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    assert_eq!(seen[2].item.map(|i| (i.area, i.db, i.count)), Some((0x84, 1, 4)));
    // The PLC saw exactly the allowed units, unchanged.
    assert_eq!(w.asset, [CR.to_vec(), setup(480), read(1), szl(4)].concat());
    // The user got one refusal per denial, each for its own PDU reference.
    let refusals = pdus(&w.user);
    assert_eq!(refusals.len(), 3);
    let p: Vec<Pdu<'_>> = refusals.iter().map(|r| Pdu::parse(r).unwrap()).collect();
    assert_eq!((p[0].rosctr, p[0].pdu_ref, p[0].param, p[0].data), (wire::ACK_DATA, 2, &[5, 1][..], &[3][..]));
    assert_eq!((p[1].pdu_ref, p[1].error, p[1].param), (3, 0x8703, &[wire::PLC_STOP][..]));
    assert_eq!((p[2].rosctr, p[2].pdu_ref, &p[2].param[10..]), (wire::USERDATA, 5, &[0xd2, 0x41][..]));
    assert_eq!(insp.stats.requests, 7);
    assert_eq!((insp.stats.allowed, insp.stats.denied, insp.stats.malformed), (4, 3, 0));
}

#[test]
fn every_split_of_the_stream_gives_the_same_verdicts_and_bytes() {
    let stream = [CR.to_vec(), setup(480), read(1), write(2), stop(3), szl(4)].concat();
    every_split_agrees::<S7Inspector>(&stream, viewer);
}

#[test]
fn a_setup_proposing_more_than_the_gate_takes_is_lowered() {
    let mut w = Wires::default();
    feed(&mut S7Inspector::new(), &mut w, &setup(1920), viewer);
    let p = pdus(&w.asset);
    assert_eq!(&p[0][16..18], &(wire::MAX_PDU as u16).to_be_bytes());
}

#[test]
fn malformed_requests_are_answered_wrong_frames() {
    let mut w = Wires::default();
    // Item count 2 with one item; a header whose lengths lie; an
    // acknowledgement sent by the user.
    let mut two = READ_DB1;
    two[1] = 2;
    let mut bad_len = pdu(wire::JOB, 9, &READ_DB1, &[]);
    bad_len[7] = 13;
    let stream = [dt(&pdu(wire::JOB, 8, &two, &[])), dt(&bad_len), dt(&pdu(wire::ACK_DATA, 10, &[4, 1], &[]))].concat();
    let seen = feed(&mut S7Inspector::new(), &mut w, &stream, |_| ALLOW);
    assert!(seen.iter().all(|i| i.verdict == Verdict::Malformed { error: 0x8500 }), "{seen:?}");
    assert!(w.asset.is_empty());
    let refs: Vec<_> =
        pdus(&w.user).iter().map(|p| (Pdu::parse(p).unwrap().pdu_ref, Pdu::parse(p).unwrap().error)).collect();
    assert_eq!(refs, vec![(8, 0x8500), (9, 0x8500), (10, 0x8500)]);
}

#[test]
fn responses_are_matched_and_strays_dropped() {
    let mut insp = S7Inspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &[CR.to_vec(), read(1), szl(2)].concat(), |_| ALLOW);
    w.user.clear();
    let answer_read = dt(&pdu(wire::ACK_DATA, 1, &[4, 1], &[0xff, 4, 0, 32, 1, 2, 3, 4]));
    let answer_szl = dt(&pdu(wire::USERDATA, 2, &[0, 1, 0x12, 8, 0x12, 0x84, 1, 0, 0, 0, 0, 0], &[0xff, 9, 0, 0]));
    let push = dt(&pdu(wire::USERDATA, 0, &[0, 1, 0x12, 8, 0x12, 0x04, 3, 0, 0, 0, 0, 0], &[0xff, 9, 0, 0]));
    let stray = dt(&pdu(wire::ACK_DATA, 1, &[4, 1], &[0xff, 4, 0, 8, 9]));
    let stream = [CC.to_vec(), answer_read.clone(), push.clone(), answer_szl.clone(), stray].concat();
    let mut answers = Vec::new();
    let spare = insp.down_spare();
    spare[..stream.len()].copy_from_slice(&stream);
    insp.down_filled(stream.len());
    insp.responses(&mut w, 250, &mut |a, _| answers.push(a)).unwrap();
    assert_eq!(
        answers,
        vec![
            Answer::Unsolicited,
            Answer::Matched { seq: 2, latency: 250 },
            Answer::Unsolicited,
            Answer::Matched { seq: 3, latency: 250 },
            Answer::Unmatched,
        ]
    );
    assert_eq!(w.user, [CC.to_vec(), answer_read, push, answer_szl].concat(), "the stray is not forwarded");
    assert_eq!((insp.stats.responses, insp.stats.unmatched), (2, 1));
}

#[test]
fn too_many_jobs_in_flight_are_answered_busy() {
    let mut insp = S7Inspector::new();
    let mut w = Wires::default();
    let stream: Vec<u8> = (0..=MAX_OUTSTANDING as u16).flat_map(read).collect();
    let seen = feed(&mut insp, &mut w, &stream, |_| ALLOW);
    assert_eq!(seen.iter().filter(|i| i.verdict == Verdict::Flood { error: 0x8302 }).count(), 1);
    assert_eq!(seen.last().map(|i| i.verdict), Some(Verdict::Flood { error: 0x8302 }));
    let busy = pdus(&w.user);
    assert_eq!(Pdu::parse(&busy[0]).unwrap().error, wire::ERR_NO_RESOURCES);
    // A reference already in flight cannot be matched: busy too.
    let mut insp = S7Inspector::new();
    let seen = feed(&mut insp, &mut Wires::default(), &[read(5), read(5)].concat(), |_| ALLOW);
    assert_eq!(seen[1].verdict, Verdict::Flood { error: 0x8302 });
}

/// Jobs the PLC never answers give their slots back after EXPIRE_US: a
/// PLC that drops requests does not leave the session refused busy for
/// ever (found by a review: Modbus and CIP expired theirs, S7 did not).
/// The expired job's answer, if it comes after all, is a stray.
#[test]
fn unanswered_jobs_expire() {
    let mut insp = S7Inspector::new();
    let mut w = Wires::default();
    let stream: Vec<u8> = (0..=MAX_OUTSTANDING as u16).flat_map(read).collect();
    let seen = feed(&mut insp, &mut w, &stream, |_| ALLOW);
    assert_eq!(seen.last().map(|i| i.verdict), Some(Verdict::Flood { error: 0x8302 }));
    let before = w.asset.len();
    let again = read(100);
    insp.up_spare()[..again.len()].copy_from_slice(&again);
    insp.up_filled(again.len());
    let mut seen = Vec::new();
    insp.requests(&mut w, &mut |_| ALLOW, crate::inspect::EXPIRE_US, &mut |i, _| seen.push(*i)).unwrap();
    assert_eq!(seen[0].verdict, Verdict::Allowed { rule: 7 });
    assert_eq!(w.asset.len(), before + again.len());
}

#[test]
fn no_room_at_the_asset_keeps_the_unit_for_later() {
    let mut insp = S7Inspector::new();
    let mut w = Wires { asset_room: Some(0), ..Wires::default() };
    assert!(feed(&mut insp, &mut w, &read(1), |_| ALLOW).is_empty());
    assert_eq!(insp.up_pending(), read(1).len());
    w.asset_room = None;
    let mut seen = Vec::new();
    insp.requests(&mut w, &mut |_| ALLOW, 0, &mut |i, _| seen.push(*i)).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(w.asset, read(1));
}

#[test]
fn streams_that_cannot_be_framed_end_the_session() {
    let mut insp = S7Inspector::new();
    let spare = insp.up_spare();
    spare[..4].copy_from_slice(&[4, 0, 0, 20]);
    insp.up_filled(4);
    let r = insp.requests(&mut Wires::default(), &mut |_| ALLOW, 0, &mut |_, _| {});
    assert_eq!(r, Err(Anomaly::BadVersion(4)));
    // A user confirming a connection.
    let mut insp = S7Inspector::new();
    let r = {
        let spare = insp.up_spare();
        spare[..CC.len()].copy_from_slice(&CC);
        insp.up_filled(CC.len());
        insp.requests(&mut Wires::default(), &mut |_| ALLOW, 0, &mut |_, _| {})
    };
    assert_eq!(r, Err(Anomaly::BadTpdu(0xd0)));
    // S7comm+ (protocol id 0x72): not a language the gate can answer in.
    let mut insp = S7Inspector::new();
    let mut plus = pdu(wire::JOB, 1, &READ_DB1, &[]);
    plus[0] = 0x72;
    let plus = dt(&plus);
    insp.up_spare()[..plus.len()].copy_from_slice(&plus);
    insp.up_filled(plus.len());
    let r = insp.requests(&mut Wires::default(), &mut |_| ALLOW, 0, &mut |_, _| {});
    assert_eq!(r, Err(Anomaly::NotS7comm(0x72)));
    // A PLC asking to connect.
    let mut insp = S7Inspector::new();
    let spare = insp.down_spare();
    spare[..CR.len()].copy_from_slice(&CR);
    insp.down_filled(CR.len());
    assert_eq!(insp.responses(&mut Wires::default(), 0, &mut |_, _| {}), Err(Anomaly::BadTpdu(0xe0)));
}

#[test]
fn userdata_operations_follow_the_table() {
    let u = |group, subfunction| Userdata { kind: 4, group, subfunction, sequence: 0 };
    assert_eq!(userdata_op(u(wire::GROUP_CYCLIC, 1)), Op::Read);
    assert_eq!(userdata_op(u(wire::GROUP_BLOCKS, 3)), Op::Diagnostic);
    assert_eq!(userdata_op(u(wire::GROUP_CPU, 1)), Op::Diagnostic);
    assert_eq!(userdata_op(u(wire::GROUP_PROGRAMMER, 1)), Op::Control);
    assert_eq!(userdata_op(u(wire::GROUP_TIME, 1)), Op::Diagnostic);
    assert_eq!(userdata_op(u(wire::GROUP_TIME, 2)), Op::Control);
    assert_eq!(userdata_op(u(wire::GROUP_SECURITY, 1)), Op::Other);
    // Alarm lock, unlock and acknowledge change the CPU's state: not a
    // viewer's diagnostic (review of 2026-12-07). Unknown subfunctions of
    // known groups are `other`, not the group's reading operation.
    for sub in [0x07, 0x08, 0x0b] {
        assert_eq!(userdata_op(u(wire::GROUP_CPU, sub)), Op::Control, "{sub:#x}");
    }
    for sub in [0x02, 0x13] {
        assert_eq!(userdata_op(u(wire::GROUP_CPU, sub)), Op::Diagnostic, "{sub:#x}");
    }
    assert_eq!(userdata_op(u(wire::GROUP_CPU, 0x03)), Op::Other);
    assert_eq!(userdata_op(u(wire::GROUP_BLOCKS, 4)), Op::Other);
    assert_eq!(userdata_op(u(wire::GROUP_TIME, 3)), Op::Diagnostic);
    assert_eq!(userdata_op(u(wire::GROUP_TIME, 4)), Op::Control);
    assert_eq!(userdata_op(u(wire::GROUP_TIME, 5)), Op::Other);
}

/// A viewer's alarm lock, unlock or acknowledge never reaches the PLC: it
/// is answered by the gate.
#[test]
fn a_viewers_alarm_lock_is_refused() {
    for sub in [0x07u8, 0x08, 0x0b] {
        let lock = dt(&pdu(wire::USERDATA, 9, &[0, 1, 0x12, 4, 0x11, 0x44, sub, 0], &[0xff, 9, 0, 4, 0, 0, 0, 1]));
        let mut w = Wires::default();
        let seen = feed(&mut S7Inspector::new(), &mut w, &lock, viewer);
        assert_eq!(seen[0].op, Op::Control, "subfunction {sub:#x}");
        assert!(matches!(seen[0].verdict, Verdict::Denied { .. }), "{:?}", seen[0].verdict);
        assert!(w.asset.is_empty(), "a viewer's alarm {sub:#x} request reached the PLC");
        assert!(!w.user.is_empty(), "the gate answers it");
    }
}

/// The download exchange as python-snap7 and its server run it: the PLC's
/// jobs reach the user, and the user's acknowledgements the PLC, only while
/// an allowed download runs.
#[test]
fn an_allowed_download_lets_the_plc_pull_the_block_and_nothing_else() {
    let request_download = dt(&pdu(wire::JOB, 2, &[wire::REQUEST_DOWNLOAD, 0, 1, 0, 0, 0, 0, 0, 9, b'_'], &[]));
    let plc_job = |pdu_ref, function| dt(&pdu(wire::JOB, pdu_ref, &[function, 0, 1, 0, 0, 0, 0, 0, 9, b'_'], &[]));
    let user_ack = |pdu_ref, function: u8, data: &[u8]| dt(&pdu(wire::ACK_DATA, pdu_ref, &[function, 0], data));
    let to_plc = |insp: &mut S7Inspector, w: &mut Wires, bytes: &[u8]| {
        let mut answers = Vec::new();
        insp.down_spare()[..bytes.len()].copy_from_slice(bytes);
        insp.down_filled(bytes.len());
        insp.responses(w, 0, &mut |a, _| answers.push(a)).unwrap();
        answers
    };
    let programmer = |op: Op| if op == Op::Program { ALLOW } else { Decision::Deny(Denial::NoRule) };

    let mut insp = S7Inspector::new();
    let mut w = Wires::default();
    let seen = feed(&mut insp, &mut w, &request_download, programmer);
    assert_eq!((seen[0].op, seen[0].verdict), (Op::Program, Verdict::Allowed { rule: 7 }));
    // The PLC acknowledges, then asks for the block.
    let ack = dt(&pdu(wire::ACK_DATA, 2, &[wire::REQUEST_DOWNLOAD], &[]));
    let pull = plc_job(3, wire::DOWNLOAD_BLOCK);
    let answers = to_plc(&mut insp, &mut w, &[ack.clone(), pull.clone()].concat());
    assert_eq!(answers, [Answer::Matched { seq: 1, latency: 0 }, Answer::Unsolicited]);
    assert_eq!(w.user, [ack, pull].concat());
    // The user's data goes up under the download's rule; so does the end.
    let data = user_ack(3, wire::DOWNLOAD_BLOCK, &[0, 4, 0, 8, 1, 2, 3, 4]);
    let seen = feed(&mut insp, &mut w, &data, |_| Decision::Deny(Denial::NoRule));
    assert_eq!(
        (seen[0].function, seen[0].op, seen[0].verdict),
        (wire::DOWNLOAD_BLOCK, Op::Program, Verdict::Allowed { rule: 7 })
    );
    assert_eq!(to_plc(&mut insp, &mut w, &plc_job(4, wire::DOWNLOAD_ENDED)), [Answer::Unsolicited]);
    let end = user_ack(4, wire::DOWNLOAD_ENDED, &[]);
    feed(&mut insp, &mut w, &end, |_| Decision::Deny(Denial::NoRule));
    assert_eq!(w.asset, [request_download, data, end].concat());
    // Over: another pull is dropped, another acknowledgement is malformed.
    assert_eq!(to_plc(&mut insp, &mut w, &plc_job(5, wire::DOWNLOAD_BLOCK)), [Answer::Unmatched]);
    let seen = feed(&mut insp, &mut w, &user_ack(5, wire::DOWNLOAD_BLOCK, &[]), |_| ALLOW);
    assert!(matches!(seen[0].verdict, Verdict::Malformed { .. }));

    // Without an allowed download the PLC cannot pull anything from a user.
    let mut insp = S7Inspector::new();
    let mut w = Wires::default();
    let seen = feed(&mut insp, &mut w, &request_download_denied(), viewer);
    assert!(matches!(seen[0].verdict, Verdict::Denied { error: 0x8703, .. }));
    assert_eq!(to_plc(&mut insp, &mut w, &plc_job(3, wire::DOWNLOAD_BLOCK)), [Answer::Unmatched]);
    assert!(w.asset.is_empty());
}

fn request_download_denied() -> Vec<u8> {
    dt(&pdu(wire::JOB, 2, &[wire::REQUEST_DOWNLOAD, 0, 1, 0, 0, 0, 0, 0, 9, b'_'], &[]))
}

/// What the capture shows for a refused request is what the user got.
#[test]
fn refusals_rebuilt_for_the_capture_are_the_ones_sent() {
    let big_write = {
        let mut p = READ_DB1;
        p[0] = wire::WRITE_VAR;
        p[6..8].copy_from_slice(&300u16.to_be_bytes());
        let mut data = vec![0, 4, 0x09, 0x60];
        data.extend([7; 300]);
        dt(&pdu(wire::JOB, 11, &p, &data))
    };
    for (unit, policy) in [
        (write(2), viewer as fn(Op) -> Decision),
        (stop(3), viewer),
        (set_clock(5), viewer),
        (big_write.clone(), viewer),
        (dt(&pdu(wire::JOB, 8, &[wire::READ_VAR, 2, 0x12], &[])), viewer),
    ] {
        let mut insp = S7Inspector::new();
        let mut w = Wires::default();
        let seen = feed(&mut insp, &mut w, &unit, policy);
        let audit = Decoded::unit(&seen[0]);
        let error = audit.unit_op.unwrap().error;
        let mut out = [0u8; MAX_REFUSAL];
        // As the audit record keeps it: at most PAYLOAD_LEN bytes.
        let kept = &unit[..unit.len().min(crate::audit::PAYLOAD_LEN)];
        let n = refusal(kept, audit.function, error, &mut out).unwrap();
        assert_eq!(&out[..n], &w.user[..], "{:?}", seen[0]);
    }
    assert!(big_write.len() > crate::audit::PAYLOAD_LEN);
    let mut out = [0u8; MAX_REFUSAL];
    assert_eq!(refusal(&CR, 0xe0, 0x8703, &mut out), None);
}

/// A read of 255 three-byte items (the most the count byte allows) refused:
/// item by item it would not fit an answer PDU, so the job is refused
/// whole; nothing panics.
#[test]
fn the_largest_read_is_refused_whole() {
    let mut param = vec![wire::READ_VAR, 255];
    for _ in 0..255 {
        param.extend([0x12, 1, 0xb0]);
    }
    let unit = dt(&pdu(wire::JOB, 9, &param, &[]));
    assert!(unit.len() <= wire::MAX_TPKT);
    let mut w = Wires::default();
    let seen = feed(&mut S7Inspector::new(), &mut w, &unit, |_| Decision::Deny(Denial::NoRule));
    assert!(matches!(seen[0].verdict, Verdict::Denied { error: 0x8703, .. }));
    let p = pdus(&w.user);
    let back = Pdu::parse(&p[0]).unwrap();
    assert_eq!((back.error, back.param, back.data.len()), (0x8703, &[wire::READ_VAR][..], 0));
    assert!(w.asset.is_empty());
    // The capture rebuilds the same answer from the record's first bytes.
    let mut out = [0u8; MAX_REFUSAL];
    let kept = &unit[..crate::audit::PAYLOAD_LEN];
    let n = refusal(kept, wire::READ_VAR, 0x8703, &mut out).unwrap();
    assert_eq!(&out[..n], &w.user[..]);
    // 236 items still fit an answer item by item.
    assert!(wire::item_refusal_fits(wire::READ_VAR, 236) && !wire::item_refusal_fits(wire::READ_VAR, 237));
}

/// A download the PLC refuses never starts: its later "download block" jobs
/// do not reach the user.
#[test]
fn a_download_the_plc_refuses_lets_nothing_through() {
    let request_download = dt(&pdu(wire::JOB, 2, &[wire::REQUEST_DOWNLOAD, 0, 1, 0, 0, 0, 0, 0, 9, b'_'], &[]));
    let mut insp = S7Inspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &request_download, |_| ALLOW);
    let mut refused = pdu(wire::ACK_DATA, 2, &[wire::REQUEST_DOWNLOAD], &[]);
    refused[10..12].copy_from_slice(&0x8104u16.to_be_bytes());
    let pull = dt(&pdu(wire::JOB, 3, &[wire::DOWNLOAD_BLOCK, 0, 1, 0, 0, 0, 0, 0, 9, b'_'], &[]));
    let answers = crate::inspect::testing::answers(&mut insp, &mut w, &[dt(&refused), pull].concat(), 0);
    assert_eq!(answers, [Answer::Matched { seq: 1, latency: 0 }, Answer::Unmatched]);
}
