use super::*;
use crate::xorshift::XorShift;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// An integrity poll (class 0-3 read), master 2 -> outstation 1, as dnp3py
/// 0.6 builds it (an independent implementation, CRCs included).
const POLL: &str = "056414c4010002004aa2c0c0013c02063c03063c04063c01068a51";
/// A direct operate of CROB 1 (two CRC blocks), app seq 3.
const OPERATE: &str = "056418c401000200f875c1c3050c01170100030164000000640021d8000000ffff";

#[test]
fn crc_matches_the_standard_check_value() {
    // The CRC catalogue's CRC-16/DNP check value (sent low byte first: 82 EA).
    assert_eq!(crc(b"123456789"), 0xea82);
}

#[test]
fn frames_from_another_implementation_parse() {
    let poll = hex(POLL);
    assert_eq!(Framer::next(&poll), Progress::Done { len: poll.len() });
    let mut user = [0; MAX_USER];
    let f = Frame::parse(&poll, &mut user).unwrap();
    assert_eq!((f.control, f.dest, f.src, f.function()), (0xc4, 1, 2, LINK_UNCONFIRMED_USER_DATA));
    assert!(f.carries_data());
    let s = Segment::parse(f.user).unwrap();
    assert!(s.fin && s.fir);
    let app = s.app.unwrap();
    assert_eq!((app.fir, app.fin, app.seq, app.function), (true, true, 0, READ));
    assert!(housekeeping(&[50, 1, 0x07, 1, 1, 2, 3, 4, 5, 6]) && !housekeeping(&f.user[3..]));
    let op = hex(OPERATE);
    assert_eq!(Framer::next(&op), Progress::Done { len: op.len() });
    let f = Frame::parse(&op, &mut user).unwrap();
    assert_eq!(f.user.len(), 19);
    let app = Segment::parse(f.user).unwrap().app.unwrap();
    assert_eq!((app.seq, app.function), (3, DIRECT_OPERATE));
}

#[test]
fn frames_are_found_across_every_split() {
    let stream = [hex(POLL), hex(OPERATE), hex(POLL)].concat();
    let mut seen = Vec::new();
    let mut start = 0;
    for end in 0..=stream.len() {
        match Framer::next(&stream[start..end]) {
            Progress::Done { len } => {
                assert_eq!(start + len, end);
                seen.push(len);
                start += len;
            }
            Progress::NeedMore => {}
            Progress::Reject(a) => panic!("{a:?} at {end}"),
        }
    }
    assert_eq!(seen, [27, 33, 27]);
}

#[test]
fn damaged_frames_are_refused() {
    let poll = hex(POLL);
    let mut v = poll.clone();
    v[1] = 0x65;
    assert_eq!(Framer::next(&v), Progress::Reject(Anomaly::BadStart));
    assert_eq!(Framer::next(&[0x05, 0x00]), Progress::Reject(Anomaly::BadStart));
    assert_eq!(Framer::next(&[0x05]), Progress::NeedMore);
    let mut v = poll.clone();
    v[2] = 4;
    assert_eq!(Framer::next(&v), Progress::Reject(Anomaly::BadLength(4)));
    for at in [3, 4, 7, 8, 9] {
        let mut v = poll.clone();
        v[at] ^= 0x10;
        assert_eq!(Framer::next(&v), Progress::Reject(Anomaly::HeaderCrc), "byte {at}");
    }
    for at in [10, 20, 25, 26] {
        let mut v = poll.clone();
        v[at] ^= 0x01;
        assert_eq!(Framer::next(&v), Progress::Reject(Anomaly::DataCrc), "byte {at}");
    }
    let mut user = [0; MAX_USER];
    assert_eq!(Frame::parse(&poll[..poll.len() - 1], &mut user), None);
}

#[test]
fn refusals_are_responses_a_master_accepts() {
    let mut out = [0u8; MAX_FRAME];
    let n = emit_refusal(&mut out, 2, 1, 3, [0x90, IIN2_NO_FUNC_CODE_SUPPORT], &[]);
    assert_eq!(Framer::next(&out[..n]), Progress::Done { len: n });
    let mut user = [0; MAX_USER];
    let f = Frame::parse(&out[..n], &mut user).unwrap();
    assert_eq!((f.control & DIR, f.dest, f.src), (0, 2, 1), "outstation -> master");
    assert_eq!(f.user, &[0xc0, 0xc3, RESPONSE, 0x90, 1]);
    let app = Segment::parse(f.user).unwrap().app.unwrap();
    assert_eq!((app.function, app.seq, app.fir, app.fin, app.iin), (RESPONSE, 3, true, true, [0x90, 1]));
    let n = emit_link_ack(&mut out, 2, 1);
    assert_eq!(Framer::next(&out[..n]), Progress::Done { len: 10 });
    let f = Frame::parse(&out[..n], &mut user).unwrap();
    assert_eq!((f.control, f.user.len()), (LINK_ACK, 0));
    assert!(!f.carries_data());
}

/// CROB (g12v1) for index 1, latch on, 100 ms, status 0; then a 16-bit
/// analog output (g41v2) for index 3, value 10000.
const CONTROLS: [u8; 26] =
    [12, 1, 0x17, 1, 1, 0x03, 1, 100, 0, 0, 0, 100, 0, 0, 0, 0, 41, 2, 0x28, 1, 0, 3, 0, 0x10, 0x27, 0];

#[test]
fn refused_controls_are_echoed_with_their_status() {
    let objects = CONTROLS;
    let mut out = [0u8; MAX_USER];
    assert_eq!(echo_controls(&objects, STATUS_NOT_AUTHORIZED, &mut out), Some(objects.len()));
    // Only the status bytes changed.
    let changed: Vec<usize> = (0..objects.len()).filter(|&i| out[i] != objects[i]).collect();
    assert_eq!(changed, [15, 25]);
    assert_eq!((out[15], out[25]), (9, 9));
    // Counts without indexes, and several objects under one header.
    let two = [41, 1, 0x07, 2, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0];
    assert_eq!(echo_controls(&two, 9, &mut out), Some(14));
    assert_eq!((out[8], out[13]), (9, 9));
    let wide = [41, 4, 0x08, 1, 0, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0];
    assert_eq!(echo_controls(&wide, 9, &mut out), Some(14));
    assert_eq!(out[13], 9);
    // The response carries the echo after its IIN.
    let mut frame = [0u8; MAX_FRAME];
    let n = emit_refusal(&mut frame, 2, 1, 5, [0x80, 0], &out[..14]);
    let mut user = [0; MAX_USER];
    let f = Frame::parse(&frame[..n], &mut user).unwrap();
    assert_eq!(&f.user[..5], &[0xc0, 0xc5, RESPONSE, 0x80, 0]);
    assert_eq!(&f.user[5..], &out[..14]);
}

#[test]
fn what_cannot_be_echoed_is_not() {
    let mut out = [0u8; MAX_USER];
    let cases: [&[u8]; 9] = [
        // Pattern control block, binary output, unknown qualifier, zero count.
        &[12, 2, 0x07, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[10, 2, 0x17, 1, 0, 0],
        &[12, 1, 0x5b, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[12, 1, 0x17, 0],
        // A header cut short, a count cut short, an object cut short.
        &[12, 1],
        &[41, 2, 0x28, 1],
        &CONTROLS[..25],
        // Something after the objects.
        &[41, 2, 0x17, 1, 3, 0x10, 0x27, 0, 60],
        &[],
    ];
    for (i, objects) in cases.iter().enumerate() {
        let expected = objects.is_empty().then_some(0);
        assert_eq!(echo_controls(objects, 9, &mut out), expected, "case {i}: {objects:?}");
    }
    // No room.
    assert_eq!(echo_controls(&CONTROLS, 9, &mut out[..25]), None);
    // Every prefix and random bytes never panic.
    for n in 0..=CONTROLS.len() {
        let _ = echo_controls(&CONTROLS[..n], 9, &mut out);
    }
    let mut rng = crate::xorshift::XorShift::new(12);
    for _ in 0..20_000 {
        let len = rng.below(40);
        let mut objects: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if len >= 3 {
            objects[..3].copy_from_slice(&[[12, 41][rng.below(2)], 1 + rng.below(4) as u8, 0x17]);
        }
        if let Some(n) = echo_controls(&objects, 9, &mut out) {
            assert_eq!(n, objects.len());
        }
    }
}

#[test]
fn the_longest_frame_fits() {
    let mut out = [0u8; MAX_FRAME];
    let user = [0x5a; MAX_USER];
    let n = emit_frame(&mut out, PRM | LINK_UNCONFIRMED_USER_DATA, 1, 2, &user);
    assert_eq!((n, Framer::next(&out[..n])), (MAX_FRAME, Progress::Done { len: MAX_FRAME }));
    let mut back = [0; MAX_USER];
    assert_eq!(Frame::parse(&out, &mut back).unwrap().user, &user[..]);
}

#[test]
fn segments_without_an_application_header() {
    assert_eq!(Segment::parse(&[]), None);
    assert_eq!(Segment::parse(&[0x41]).unwrap().app, None, "first segment cut short");
    let s = Segment::parse(&[0x05, 1, 2, 3]).unwrap();
    assert_eq!((s.fin, s.fir, s.seq, s.app), (false, false, 5, None));
}

/// Random and mutated streams: no panic; what the framer accepts parses.
#[test]
fn fuzz_never_panics() {
    let mut rng = XorShift::new(0xd4_0003);
    let seeds = [hex(POLL), hex(OPERATE)];
    let mut user = [0; MAX_USER];
    let (mut frames, mut segments) = (0, 0);
    for round in 0..20_000 {
        let mut buf: Vec<u8> = if round % 4 == 0 {
            (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect()
        } else {
            seeds[rng.below(2)].iter().chain(&seeds[rng.below(2)]).copied().collect()
        };
        for _ in 0..rng.below(3) {
            if !buf.is_empty() {
                let i = rng.below(buf.len());
                buf[i] = rng.next_u64() as u8;
            }
        }
        let mut at = 0;
        while let Progress::Done { len } = Framer::next(&buf[at..]) {
            frames += 1;
            let f = Frame::parse(&buf[at..at + len], &mut user).expect("an accepted frame parses");
            segments += usize::from(Segment::parse(f.user).is_some());
            at += len;
        }
    }
    assert!(frames > 10_000 && segments > 10_000, "{frames} frames, {segments} segments");
}
