use super::*;
use crate::inspect::testing::{answers as to_master, every_split_agrees, feed, viewer, Wires, ALLOW};
use crate::inspect::Downstream;
use crate::policy::Denial;
use crate::wire::dnp3::{DIR, PRM};
use crate::wire::Progress;

/// Master 2 -> outstation 1: one frame carrying `user`.
fn frame(control: u8, user: &[u8]) -> Vec<u8> {
    let mut out = [0u8; MAX_FRAME];
    let n = wire::emit_frame(&mut out, control, 1, 2, user);
    out[..n].to_vec()
}

/// Outstation 1 -> master 2.
fn from_outstation(user: &[u8]) -> Vec<u8> {
    let mut out = [0u8; MAX_FRAME];
    let n = wire::emit_frame(&mut out, PRM | wire::LINK_UNCONFIRMED_USER_DATA, 2, 1, user);
    out[..n].to_vec()
}

const DATA: u8 = DIR | PRM | wire::LINK_UNCONFIRMED_USER_DATA;
const CONFIRMED: u8 = DIR | PRM | wire::LINK_CONFIRMED_USER_DATA;

/// A one-segment request: transport FIN|FIR, application FIR|FIN + seq.
fn request(app_seq: u8, function: u8, objects: &[u8]) -> Vec<u8> {
    frame(DATA, &[&[0xc0, 0xc0 | app_seq, function][..], objects].concat())
}

const POLL: [u8; 12] = [60, 2, 6, 60, 3, 6, 60, 4, 6, 60, 1, 6];
/// CROB index 1, latch on.
const CROB: [u8; 16] = [12, 1, 0x17, 1, 1, 0x03, 1, 100, 0, 0, 0, 100, 0, 0, 0, 0];
/// Time and date, g50v1, one object.
const TIME: [u8; 10] = [50, 1, 0x07, 1, 0, 0, 0, 0, 0, 0];
/// A 16-bit analog output status write, g40 ... (a process value).
const ANALOG: [u8; 8] = [41, 2, 0x17, 1, 3, 0x10, 0x27, 0];

/// The application layers (transport byte dropped) of a stream of frames.
fn apps(mut stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut user = [0; MAX_USER];
    while let Progress::Done { len } = Framer::next(stream) {
        let f = Frame::parse(&stream[..len], &mut user).unwrap();
        out.push(f.user.get(1..).unwrap_or(&[]).to_vec());
        stream = &stream[len..];
    }
    assert!(stream.is_empty());
    out
}

#[test]
fn a_viewer_polls_and_syncs_time_and_is_refused_the_rest() {
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    let link_status = frame(DIR | PRM | 9, &[]);
    let stream = [
        link_status.clone(),
        request(1, wire::READ, &POLL),
        request(2, wire::WRITE, &TIME),
        request(3, wire::DIRECT_OPERATE, &CROB),
        request(4, wire::WRITE, &ANALOG),
        request(5, wire::DIRECT_OPERATE_NR, &CROB),
        request(6, wire::CONFIRM, &[]),
        request(7, wire::COLD_RESTART, &[]),
    ]
    .concat();
    let seen = feed(&mut insp, &mut w, &stream, viewer);
    let got: Vec<_> = seen.iter().map(|i| (i.function, i.op, i.verdict)).collect();
    let no = Verdict::Denied { denial: Denial::NoRule, error: 1 };
    // A refused control is echoed: no IIN2 bit.
    let echoed = Verdict::Denied { denial: Denial::NoRule, error: 0 };
    assert_eq!(
        got,
        [
            (0xf9, Op::Other, Verdict::Transport),
            (wire::READ, Op::Read, Verdict::Allowed { rule: 7 }),
            (wire::WRITE, Op::Diagnostic, Verdict::Allowed { rule: 7 }),
            (wire::DIRECT_OPERATE, Op::Control, echoed),
            (wire::WRITE, Op::Write, no),
            (wire::DIRECT_OPERATE_NR, Op::Control, no),
            (wire::CONFIRM, Op::Other, Verdict::Transport),
            (wire::COLD_RESTART, Op::Control, no),
        ]
    );
    assert_eq!(
        w.asset,
        [link_status, request(1, wire::READ, &POLL), request(2, wire::WRITE, &TIME), request(6, wire::CONFIRM, &[])]
            .concat()
    );
    // One response per refused request that expects one (not the _NR),
    // each with its sequence: the operate's echoes its CROB with status 9
    // (not authorized), the others carry IIN2.0.
    let mut crob = CROB.to_vec();
    crob[15] = wire::STATUS_NOT_AUTHORIZED;
    let operate = [&[0xc3, 0x81, 0, 0][..], &crob].concat();
    assert_eq!(apps(&w.user), [operate, vec![0xc4, 0x81, 0, 1], vec![0xc7, 0x81, 0, 1]],);
    assert_eq!((insp.stats.allowed, insp.stats.denied), (4, 4));
}

/// A viewer cannot silence or re-route the outstation's event reports:
/// enable/disable unsolicited and assign class are control (found by a
/// review: they were reads, so a read-only user could turn off the alarms
/// the SCADA master depends on).
#[test]
fn a_viewer_cannot_change_what_the_outstation_reports() {
    // Classes 1-3 (g60v2..v4, all objects).
    let classes = [60, 2, 6, 60, 3, 6, 60, 4, 6];
    let stream = [
        request(1, wire::DISABLE_UNSOLICITED, &classes),
        request(2, wire::ENABLE_UNSOLICITED, &classes),
        // Binary inputs (g1, all) to class 0: no more events from them.
        request(3, wire::ASSIGN_CLASS, &[60, 1, 6, 1, 0, 6]),
    ]
    .concat();
    let mut w = Wires::default();
    let seen = feed(&mut Dnp3Inspector::new(), &mut w, &stream, viewer);
    let no = Verdict::Denied { denial: Denial::NoRule, error: 1 };
    let got: Vec<_> = seen.iter().map(|i| (i.op, i.verdict)).collect();
    assert_eq!(got, [(Op::Control, no); 3]);
    assert!(w.asset.is_empty(), "the outstation was reconfigured");
    // Each refused with IIN2.0 (function not supported), its own sequence.
    assert_eq!(apps(&w.user), [vec![0xc1, 0x81, 0, 1], vec![0xc2, 0x81, 0, 1], vec![0xc3, 0x81, 0, 1]]);
}

#[test]
fn every_split_gives_the_same_verdicts_and_bytes() {
    let stream =
        [request(1, wire::READ, &POLL), request(3, wire::DIRECT_OPERATE, &CROB), request(2, wire::WRITE, &TIME)]
            .concat();
    every_split_agrees::<Dnp3Inspector>(&stream, viewer);
}

#[test]
fn a_fragment_in_several_segments_shares_the_first_ones_fate() {
    // Transport: FIR seq 0 (with the application header), then FIN seq 1.
    let first = frame(DATA, &[&[0x40, 0xc9, wire::DIRECT_OPERATE][..], &CROB[..8]].concat());
    let last = frame(DATA, &[&[0x81][..], &CROB[8..]].concat());
    let stream = [first.clone(), last.clone()].concat();
    let mut w = Wires::default();
    let seen = feed(&mut Dnp3Inspector::new(), &mut w, &stream, |_| ALLOW);
    assert!(seen.iter().all(|i| i.verdict == Verdict::Allowed { rule: 7 } && i.function == wire::DIRECT_OPERATE));
    assert_eq!(w.asset, stream);
    let mut w = Wires::default();
    let seen = feed(&mut Dnp3Inspector::new(), &mut w, &stream, viewer);
    assert!(seen.iter().all(|i| matches!(i.verdict, Verdict::Denied { .. })), "{seen:?}");
    assert!(w.asset.is_empty());
    assert_eq!(apps(&w.user), [vec![0xc9, 0x81, 0, 1]], "one answer for the fragment");
    // A later segment with no first one: dropped as malformed.
    let mut w = Wires::default();
    let seen = feed(&mut Dnp3Inspector::new(), &mut w, &last, |_| ALLOW);
    assert!(matches!(seen[0].verdict, Verdict::Malformed { .. }));
    assert!(w.asset.is_empty() && w.user.is_empty());
}

/// In confirmed mode every frame of a refused fragment gets its link ACK
/// (the master's link layer retries, then fails, without one); the last
/// also gets the response; the capture's rebuild agrees.
#[test]
fn every_confirmed_frame_of_a_refused_fragment_gets_its_link_ack() {
    let first = frame(CONFIRMED, &[&[0x40, 0xc9, wire::DIRECT_OPERATE][..], &CROB[..8]].concat());
    let last = frame(CONFIRMED, &[&[0x81][..], &CROB[8..]].concat());
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    let seen = feed(&mut insp, &mut w, &[first.clone(), last.clone()].concat(), viewer);
    assert!(w.asset.is_empty());
    let mut user = [0; MAX_USER];
    let mut stream = &w.user[..];
    let mut sent = Vec::new();
    while let Progress::Done { len } = Framer::next(stream) {
        let f = Frame::parse(&stream[..len], &mut user).unwrap();
        sent.push((f.control, f.user.get(2).copied()));
        stream = &stream[len..];
    }
    // ACK; ACK and the response (IIN2.0: the objects span two segments)
    // once the fragment is whole, as an outstation answers it.
    let response = PRM | wire::LINK_UNCONFIRMED_USER_DATA;
    assert_eq!(sent, [(wire::LINK_ACK, None), (wire::LINK_ACK, None), (response, Some(wire::RESPONSE))]);
    assert_eq!(apps(&w.user), [vec![], vec![], vec![0xc9, 0x81, 0, 1]]);
    // What the capture shows for each frame is what was sent.
    let mut rebuilt = Vec::new();
    for (req, i) in [first, last].iter().zip(&seen) {
        let Verdict::Denied { error, .. } = i.verdict else { panic!("{i:?}") };
        let mut out = [0u8; MAX_REFUSAL];
        let n = refusal(req, i.function, i.pdu_ref as u8, error, &mut out).unwrap_or(0);
        rebuilt.extend_from_slice(&out[..n]);
    }
    assert_eq!(rebuilt, w.user);
    // The same frames unconfirmed: one answer, the response.
    let mut w = Wires::default();
    let unconfirmed = [
        frame(DATA, &[&[0x40, 0xc9, wire::DIRECT_OPERATE][..], &CROB[..8]].concat()),
        frame(DATA, &[&[0x81][..], &CROB[8..]].concat()),
    ];
    feed(&mut Dnp3Inspector::new(), &mut w, &unconfirmed.concat(), viewer);
    assert_eq!(apps(&w.user), [vec![0xc9, 0x81, 0, 1]]);
}

#[test]
fn a_refused_confirmed_frame_gets_its_link_ack() {
    let mut w = Wires::default();
    let req = frame(CONFIRMED, &[0xc0, 0xc1, wire::DIRECT_OPERATE, 12, 1]);
    feed(&mut Dnp3Inspector::new(), &mut w, &req, viewer);
    let mut user = [0; MAX_USER];
    let mut stream = &w.user[..];
    let mut controls = Vec::new();
    while let Progress::Done { len } = Framer::next(stream) {
        controls.push(Frame::parse(&stream[..len], &mut user).unwrap().control);
        stream = &stream[len..];
    }
    assert_eq!(controls, [wire::LINK_ACK, PRM | wire::LINK_UNCONFIRMED_USER_DATA]);
}

#[test]
fn responses_are_matched_by_sequence_and_strays_dropped() {
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &request(5, wire::READ, &POLL), |_| ALLOW);
    // A stray response (wrong sequence), the response in two segments, an
    // unsolicited response, a link ACK.
    let stray = from_outstation(&[0xc0, 0xc9, wire::RESPONSE, 0, 0]);
    let part1 = from_outstation(&[0x41, 0xc5, wire::RESPONSE, 0, 0, 1, 2]);
    let part2 = from_outstation(&[0x82, 3, 4]);
    let unsolicited = from_outstation(&[0xc3, 0xf0, wire::UNSOLICITED_RESPONSE, 0, 0]);
    let mut ack = [0u8; MAX_FRAME];
    let n = wire::emit_link_ack(&mut ack, 2, 1);
    let ack = ack[..n].to_vec();
    let answers = to_master(
        &mut insp,
        &mut w,
        &[stray, part1.clone(), part2.clone(), unsolicited.clone(), ack.clone()].concat(),
        40,
    );
    assert_eq!(
        answers,
        [
            Answer::Unmatched,
            Answer::Matched { seq: 1, latency: 40 },
            Answer::Unsolicited,
            Answer::Unsolicited,
            Answer::Unsolicited
        ]
    );
    assert_eq!(w.user, [part1, part2, unsolicited, ack].concat());
    assert_eq!((insp.stats.responses, insp.stats.unmatched), (1, 1));
    // Once answered, a second response to the same sequence is a stray.
    let again = from_outstation(&[0xc0, 0xc5, wire::RESPONSE, 0, 0]);
    assert_eq!(to_master(&mut insp, &mut w, &again, 50), [Answer::Unmatched]);
}

#[test]
fn a_response_in_several_fragments_passes_whole() {
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &request(2, wire::READ, &POLL), |_| ALLOW);
    // Fragment 1 (FIR, not FIN, confirm wanted), the master's confirm,
    // fragment 2 (FIN).
    let f1 = from_outstation(&[0xc0, 0xa2, wire::RESPONSE, 0, 0, 1]);
    let f2 = from_outstation(&[0xc1, 0x43, wire::RESPONSE, 0, 0, 2]);
    assert_eq!(to_master(&mut insp, &mut w, &f1, 10), [Answer::Matched { seq: 1, latency: 10 }]);
    let seen = feed(&mut insp, &mut w, &request(2, wire::CONFIRM, &[]), |_| Decision::Deny(Denial::NoRule));
    assert_eq!(seen[0].verdict, Verdict::Transport, "confirms always pass");
    assert_eq!(to_master(&mut insp, &mut w, &f2, 20), [Answer::Unsolicited]);
    assert_eq!(w.user, [f1, f2].concat());
}

#[test]
fn damaged_frames_end_the_session() {
    let mut bad = request(1, wire::READ, &POLL);
    bad[12] ^= 1;
    let mut insp = Dnp3Inspector::new();
    insp.up_spare()[..bad.len()].copy_from_slice(&bad);
    insp.up_filled(bad.len());
    let r = insp.requests(&mut Wires::default(), &mut |_| ALLOW, 0, &mut |_, _| {});
    assert_eq!(r, Err(Anomaly::DataCrc));
    let mut insp = Dnp3Inspector::new();
    insp.down_spare()[..4].copy_from_slice(&[0x05, 0x64, 2, 0]);
    insp.down_filled(4);
    assert!(insp.responses(&mut Wires::default(), 0, &mut |_, _| {}).is_err());
}

#[test]
fn no_room_at_the_asset_keeps_the_frame() {
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires { asset_room: Some(0), ..Wires::default() };
    assert!(feed(&mut insp, &mut w, &request(1, wire::READ, &POLL), |_| ALLOW).is_empty());
    w.asset_room = None;
    let mut seen = Vec::new();
    insp.requests(&mut w, &mut |_| ALLOW, 0, &mut |i, _| seen.push(*i)).unwrap();
    assert_eq!((seen.len(), w.asset.len()), (1, request(1, wire::READ, &POLL).len()));
}

#[test]
fn operations_follow_the_table() {
    let app = |function| AppHeader { fir: true, fin: true, con: false, uns: false, seq: 0, function, iin: [0, 0] };
    // Housekeeping writes, and the same with more after them.
    let time = [50, 1, 0x07, 1, 0, 0, 0, 0, 0, 0];
    let restart = [80, 1, 0x00, 7, 7, 0];
    let time_then_deadband = [&time[..], &[34, 1, 0x17, 1, 0, 5, 0]].concat();
    for (objects, op) in [
        (Some(&time[..]), Op::Diagnostic),
        (Some(&restart[..]), Op::Diagnostic),
        (Some(&time_then_deadband[..]), Op::Write),
        (Some(&time[..9]), Op::Write),
        (None, Op::Write),
    ] {
        assert_eq!(op_of(&app(wire::WRITE), objects), op, "{objects:?}");
    }
    for (function, op) in [
        (wire::READ, Op::Read),
        (wire::DISABLE_UNSOLICITED, Op::Control),
        (wire::ENABLE_UNSOLICITED, Op::Control),
        (wire::ASSIGN_CLASS, Op::Control),
        (wire::WRITE, Op::Write),
        (wire::SELECT, Op::Control),
        (wire::OPERATE, Op::Control),
        (0x0b, Op::Control),
        (wire::COLD_RESTART, Op::Control),
        (0x12, Op::Control),
        (wire::SAVE_CONFIG, Op::Program),
        (wire::OPEN_FILE, Op::Program),
        (wire::ACTIVATE_CONFIG, Op::Program),
        (wire::DELAY_MEASURE, Op::Diagnostic),
        (0x20, Op::Other),
        (0x7f, Op::Other),
    ] {
        assert_eq!(op_of(&app(function), None), op, "function {function:#x}");
    }
}

/// What the capture shows for a refused request is what the master got.
#[test]
fn refusals_rebuilt_for_the_capture_are_the_ones_sent() {
    let select = [&[0xc0, 0xc2, wire::SELECT][..], &CROB, &ANALOG].concat();
    for (req, iin2) in [
        (request(3, wire::DIRECT_OPERATE, &CROB), 0),
        (frame(CONFIRMED, &select), 0),
        // Not a control object: refused as a function.
        (request(4, wire::OPERATE, &TIME), 1),
        (frame(CONFIRMED, &[0xc0, 0xc1, wire::COLD_RESTART]), 1),
        (frame(CONFIRMED, &[0xc0, 0xc1, wire::DIRECT_OPERATE_NR, 12, 1]), 1),
    ] {
        let mut insp = Dnp3Inspector::new();
        let mut w = Wires::default();
        // The outstation has reported a restart and that it needs time.
        to_master(&mut insp, &mut w, &from_outstation(&[0xc0, 0xd0, wire::UNSOLICITED_RESPONSE, 0x90, 0]), 0);
        w.user.clear();
        let seen = feed(&mut insp, &mut w, &req, viewer);
        let Verdict::Denied { error, .. } = seen[0].verdict else { panic!() };
        assert_eq!(error, 0x9000 | iin2);
        let mut out = [0u8; MAX_REFUSAL];
        let n = refusal(&req, seen[0].function, seen[0].pdu_ref as u8, error, &mut out).unwrap_or(0);
        assert_eq!(&out[..n], &w.user[..]);
    }
    let mut out = [0u8; MAX_REFUSAL];
    let nr = request(1, wire::DIRECT_OPERATE_NR, &CROB);
    assert_eq!(refusal(&nr, wire::DIRECT_OPERATE_NR, 1, 1, &mut out), None, "no answer was sent");
}

/// Random frames with good CRCs (random controls, transport and
/// application bytes) both ways: nothing panics, what the gate writes is
/// whole frames, and every refusal is a link ACK or an IIN2.0 response.
#[test]
fn random_valid_frames_never_panic() {
    let mut rng = crate::xorshift::XorShift::new(0xd4_0004);
    let (mut forwarded, mut refused) = (0, 0);
    for _ in 0..3_000 {
        let mut stream = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let len = rng.below(40);
            let mut user: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if len > 0 && rng.below(2) == 0 {
                user[0] |= 0x40; // often a first segment
            }
            let control = [DATA, CONFIRMED, DIR | PRM | 9, 0, rng.next_u64() as u8][rng.below(5)];
            let mut out = [0u8; MAX_FRAME];
            let n = wire::emit_frame(&mut out, control, 1, 2, &user);
            stream.extend_from_slice(&out[..n]);
        }
        let mut insp = Dnp3Inspector::new();
        let mut w = Wires::default();
        let seen = feed(&mut insp, &mut w, &stream, viewer);
        let _ = to_master(&mut insp, &mut w, &stream, 1);
        forwarded += seen.iter().filter(|i| matches!(i.verdict, Verdict::Allowed { .. } | Verdict::Transport)).count();
        refused += seen.iter().filter(|i| matches!(i.verdict, Verdict::Denied { .. })).count();
        let mut user = [0; MAX_USER];
        for part in [&w.asset[..], &w.user[..]] {
            let mut rest = part;
            while !rest.is_empty() {
                let Progress::Done { len } = Framer::next(rest) else { panic!("a partial frame written") };
                Frame::parse(&rest[..len], &mut user).unwrap();
                rest = &rest[len..];
            }
        }
    }
    assert!(forwarded > 1_000 && refused > 1_000, "{forwarded} forwarded, {refused} refused");
}

/// A time write whose fragment goes on in another segment is a write: its
/// later objects cannot be seen when the first segment is decided.
#[test]
fn housekeeping_spread_over_segments_is_a_write() {
    let first = frame(DATA, &[0x40, 0xc5, wire::WRITE, 50, 1, 0x07, 1, 0, 0, 0, 0, 0, 0]);
    let rest = frame(DATA, &[0x81, 34, 1, 0x17, 1, 0, 5, 0]);
    let mut w = Wires::default();
    let seen = feed(&mut Dnp3Inspector::new(), &mut w, &[first, rest].concat(), viewer);
    assert!(seen.iter().all(|i| i.op == Op::Write && matches!(i.verdict, Verdict::Denied { .. })), "{seen:?}");
    assert!(w.asset.is_empty());
}

/// A request to a broadcast address gets no answer from an outstation, so
/// none from the gate either.
#[test]
fn refused_broadcasts_are_not_answered() {
    let mut out = [0u8; MAX_FRAME];
    let n = wire::emit_frame(&mut out, DATA, 0xffff, 2, &[0xc0, 0xc1, wire::DIRECT_OPERATE, 12, 1]);
    let mut w = Wires::default();
    let seen = feed(&mut Dnp3Inspector::new(), &mut w, &out[..n], viewer);
    assert!(matches!(seen[0].verdict, Verdict::Denied { .. }));
    assert!(w.user.is_empty() && w.asset.is_empty());
}

/// A segment after its fragment's last, or out of sequence, belongs to no
/// fragment: dropped, whatever the fragment before it was allowed to do.
#[test]
fn stray_segments_share_no_fate() {
    let time_write = request(5, wire::WRITE, &[50, 1, 0x07, 1, 0, 0, 0, 0, 0, 0]);
    let after_last = frame(DATA, &[0x01, 41, 2, 0x17, 1, 3, 0x10, 0x27, 0]);
    let mut w = Wires::default();
    let seen = feed(&mut Dnp3Inspector::new(), &mut w, &[time_write.clone(), after_last].concat(), viewer);
    assert_eq!(seen[0].verdict, Verdict::Allowed { rule: 7 });
    assert!(matches!(seen[1].verdict, Verdict::Malformed { .. }), "{seen:?}");
    assert_eq!(w.asset, time_write, "only the allowed write went on");
    // Out of sequence inside a fragment: first seq 0, then seq 2.
    let first = frame(DATA, &[0x40, 0xc6, wire::READ, 60, 2, 6]);
    let skipped = frame(DATA, &[0x82, 60, 3, 6]);
    let mut w = Wires::default();
    let seen = feed(&mut Dnp3Inspector::new(), &mut w, &[first.clone(), skipped].concat(), |_| ALLOW);
    assert!(matches!(seen[1].verdict, Verdict::Malformed { .. }), "{seen:?}");
    assert_eq!(w.asset, first);
}

/// Confirmed user data from the master 2 -> 1 with frame count bit `fcb`.
fn counted(fcb: bool, app_seq: u8, function: u8, objects: &[u8]) -> Vec<u8> {
    let control = DIR | PRM | wire::FCV | if fcb { wire::FCB } else { 0 } | wire::LINK_CONFIRMED_USER_DATA;
    frame(control, &[&[0xc0, 0xc0 | app_seq, function][..], objects].concat())
}

/// Each frame's FCB and its application sequence (None for link frames),
/// every CRC checked.
fn counts(mut stream: &[u8]) -> Vec<(bool, Option<u8>)> {
    let mut out = Vec::new();
    let mut user = [0; MAX_USER];
    while let Progress::Done { len } = Framer::next(stream) {
        let f = Frame::parse(&stream[..len], &mut user).unwrap();
        out.push((f.control & wire::FCB != 0, f.user.get(1).map(|ac| ac & 0x0f)));
        stream = &stream[len..];
    }
    assert!(stream.is_empty(), "a frame with a bad CRC");
    out
}

/// The outstation's frame count stays in step although it never sees the
/// frames the gate answers: the forwarded frames' FCBs are rewritten to
/// what it expects, and a repeat gets the same FCB as its original.
#[test]
fn the_outstations_frame_count_survives_refused_confirmed_frames() {
    let reset = frame(DIR | PRM | wire::LINK_RESET_LINK_STATES, &[]);
    let stream = [
        reset.clone(),
        counted(true, 1, wire::READ, &POLL),
        counted(false, 2, wire::COLD_RESTART, &[]),
        counted(true, 3, wire::READ, &POLL),
        // The master missed the ACK and sends it again.
        counted(true, 3, wire::READ, &POLL),
        counted(false, 4, wire::READ, &POLL),
        // Unconfirmed frames are not counted, nor touched.
        request(5, wire::READ, &POLL),
    ]
    .concat();
    let mut w = Wires::default();
    feed(&mut Dnp3Inspector::new(), &mut w, &stream, viewer);
    assert_eq!(
        counts(&w.asset),
        [(false, None), (true, Some(1)), (false, Some(3)), (false, Some(3)), (true, Some(4)), (false, Some(5))]
    );
    assert!(w.asset.ends_with(&request(5, wire::READ, &POLL)));
    // In step without refusals: the frames pass unchanged.
    let clean = [reset, counted(true, 1, wire::READ, &POLL), counted(false, 2, wire::READ, &POLL)].concat();
    let mut w = Wires::default();
    feed(&mut Dnp3Inspector::new(), &mut w, &clean, viewer);
    assert_eq!(w.asset, clean);
}

/// A frame whose FCB the gate rewrites and that first finds no room at the
/// asset is rewritten once, not once per try.
#[test]
fn a_rewritten_frame_that_waits_for_room_is_rewritten_once() {
    let head = [
        frame(DIR | PRM | wire::LINK_RESET_LINK_STATES, &[]),
        counted(true, 1, wire::READ, &POLL),
        counted(false, 2, wire::COLD_RESTART, &[]),
    ]
    .concat();
    // An odd and an even number of tries.
    for tries in [2, 3] {
        let mut insp = Dnp3Inspector::new();
        let mut w = Wires::default();
        feed(&mut insp, &mut w, &head, viewer);
        w.asset_room = Some(w.asset.len());
        assert!(feed(&mut insp, &mut w, &counted(true, 3, wire::READ, &POLL), viewer).is_empty());
        for _ in 1..tries {
            insp.requests(&mut w, &mut viewer, 0, &mut |_, _| {}).unwrap();
        }
        w.asset_room = None;
        insp.requests(&mut w, &mut viewer, 0, &mut |_, _| {}).unwrap();
        assert_eq!(counts(&w.asset), [(false, None), (true, Some(1)), (false, Some(3))], "{tries} tries");
    }
}

/// Confirmed user data from the master carrying `user` (transport byte
/// first) with frame count bit `fcb`.
fn counted_user(fcb: bool, user: &[u8]) -> Vec<u8> {
    frame(DIR | PRM | wire::FCV | if fcb { wire::FCB } else { 0 } | wire::LINK_CONFIRMED_USER_DATA, user)
}

/// The master's link layer sends a frame again when it missed the ACK. A
/// repeated later segment is that repeat, not a stray: a forwarded one
/// goes to the outstation again with its original's FCB (which ACKs and
/// discards it), a refused one gets its link ACK and its response again
/// (the master may have missed both); the transport goes on where it was
/// (review of 2026-12-07).
#[test]
fn a_repeated_later_segment_is_the_link_layers_repeat() {
    let reset = frame(DIR | PRM | wire::LINK_RESET_LINK_STATES, &[]);
    let first = counted_user(true, &[&[0x40, 0xc1, wire::READ][..], &POLL[..6]].concat());
    let last = counted_user(false, &[&[0x81][..], &POLL[6..]].concat());
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &[reset.clone(), first, last.clone()].concat(), |_| ALLOW);
    let forwarded = w.asset.len();
    let original = w.asset[forwarded - last.len()..].to_vec();
    let seen = feed(&mut insp, &mut w, &last, |_| ALLOW);
    assert_eq!(seen[0].verdict, Verdict::Allowed { rule: 7 }, "{seen:?}");
    assert_eq!(w.asset[forwarded..], original[..], "the repeat goes on as its original went");
    // The next fragment is counted on from there.
    feed(&mut insp, &mut w, &counted(true, 2, wire::READ, &POLL), |_| ALLOW);
    assert_eq!(counts(&w.asset).last(), Some(&(true, Some(2))));
    // A refused fragment's repeated last segment: what its original got.
    let first = counted_user(true, &[&[0x40, 0xc9, wire::DIRECT_OPERATE][..], &CROB[..8]].concat());
    let last = counted_user(false, &[&[0x81][..], &CROB[8..]].concat());
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &[reset, first, last.clone()].concat(), viewer);
    let answered = w.user.len();
    let seen = feed(&mut insp, &mut w, &last, viewer);
    assert!(matches!(seen[0].verdict, Verdict::Denied { .. }), "{seen:?}");
    let (before, again) = w.user.split_at(answered);
    assert!(!again.is_empty() && before.ends_with(again), "the repeat got {again:?}");
    assert_eq!(apps(again), [vec![], vec![0xc9, 0x81, 0, 1]], "a link ACK and the response");
    // Unconfirmed, or with the FCB alternated, the same segment is a stray.
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    let first = frame(DATA, &[&[0x40, 0xc1, wire::READ][..], &POLL[..6]].concat());
    let last = frame(DATA, &[&[0x81][..], &POLL[6..]].concat());
    let seen = feed(&mut insp, &mut w, &[first, last.clone(), last].concat(), |_| ALLOW);
    assert!(matches!(seen[2].verdict, Verdict::Malformed { .. }), "{seen:?}");
}

/// A segment after the last of a forwarded response belongs to nothing: it
/// is dropped and counted, not forwarded as unsolicited (review of
/// 2026-12-07).
#[test]
fn a_segment_after_a_responses_last_is_dropped() {
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &request(5, wire::READ, &POLL), |_| ALLOW);
    let part1 = from_outstation(&[0x40, 0xc5, wire::RESPONSE, 0, 0, 1, 2]);
    let part2 = from_outstation(&[0x81, 3, 4]);
    let stray = from_outstation(&[0x82, 9, 9, 9]);
    let answers = to_master(&mut insp, &mut w, &[part1.clone(), part2.clone(), stray].concat(), 1);
    assert_eq!(answers, [Answer::Matched { seq: 1, latency: 1 }, Answer::Unsolicited, Answer::Unmatched]);
    assert_eq!(w.user, [part1, part2].concat());
}

/// A confirmed frame decided again after waiting for room (a reload between
/// the tries) is counted by its new fate: refused now, it is not counted
/// as the outstation's, and the next forwarded frame carries the FCB the
/// outstation expects (review of 2026-12-07).
#[test]
fn a_frame_decided_again_is_counted_by_its_new_fate() {
    let head = [frame(DIR | PRM | wire::LINK_RESET_LINK_STATES, &[]), counted(true, 1, wire::READ, &POLL)].concat();
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &head, |_| ALLOW);
    // Allowed, but no room at the outstation.
    w.asset_room = Some(w.asset.len());
    assert!(feed(&mut insp, &mut w, &counted(false, 2, wire::COLD_RESTART, &[]), |_| ALLOW).is_empty());
    // The new policy refuses it on the retry.
    w.asset_room = None;
    let mut seen = Vec::new();
    insp.requests(&mut w, &mut viewer, 0, &mut |i, _| seen.push(*i)).unwrap();
    assert!(matches!(seen[0].verdict, Verdict::Denied { .. }), "{seen:?}");
    feed(&mut insp, &mut w, &counted(true, 3, wire::READ, &POLL), viewer);
    assert_eq!(counts(&w.asset), [(false, None), (true, Some(1)), (false, Some(3))]);
    // And the other way: refused first (no room for the answer at the
    // user), allowed on the retry: forwarded with the FCB the outstation
    // expects, and counted.
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &head, |_| ALLOW);
    w.user_room = Some(w.user.len());
    assert!(feed(&mut insp, &mut w, &counted(false, 2, wire::COLD_RESTART, &[]), viewer).is_empty());
    w.user_room = None;
    insp.requests(&mut w, &mut |_| ALLOW, 0, &mut |_, _| {}).unwrap();
    feed(&mut insp, &mut w, &counted(true, 3, wire::READ, &POLL), |_| ALLOW);
    assert_eq!(counts(&w.asset), [(false, None), (true, Some(1)), (false, Some(2)), (true, Some(3))]);
}

/// A link-layer repeat of a later segment that waits for room at the
/// outstation is still a repeat on its next try, and goes on as its
/// original went (found by a review: the first try rewrote its FCB to the
/// outstation's count, the second took the rewritten FCB for the master's,
/// saw no repeat, and dropped the frame as a stray segment).
#[test]
fn a_rewritten_repeat_that_waits_for_room_is_still_a_repeat() {
    let reset = frame(DIR | PRM | wire::LINK_RESET_LINK_STATES, &[]);
    // Refused and ACKed by the gate: the master's count moves, the
    // outstation's does not, so later FCBs are rewritten.
    let refused = counted(true, 1, wire::COLD_RESTART, &[]);
    let first = counted_user(false, &[&[0x40, 0xc2, wire::READ][..], &POLL[..6]].concat());
    let last = counted_user(true, &[&[0x81][..], &POLL[6..]].concat());
    let mut insp = Dnp3Inspector::new();
    let mut w = Wires::default();
    feed(&mut insp, &mut w, &[reset, refused, first, last.clone()].concat(), viewer);
    let forwarded = w.asset.len();
    let original = w.asset[forwarded - last.len()..].to_vec();
    assert_ne!(original, last, "the FCB was rewritten");
    // The master missed the ACK of `last` and sends it again; no room at
    // the outstation on the first try.
    w.asset_room = Some(forwarded);
    assert!(feed(&mut insp, &mut w, &last, viewer).is_empty());
    w.asset_room = None;
    let mut seen = Vec::new();
    insp.requests(&mut w, &mut viewer, 0, &mut |i, _| seen.push(*i)).unwrap();
    assert_eq!(seen[0].verdict, Verdict::Allowed { rule: 7 }, "{seen:?}");
    assert_eq!(w.asset[forwarded..], original[..], "the repeat goes on as its original went");
}
