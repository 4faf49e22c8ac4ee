use super::*;
use crate::xorshift::XorShift;

/// A TPKT + DT (EOT set) around an S7 PDU.
fn dt(pdu: &[u8]) -> Vec<u8> {
    dt_part(pdu, true)
}

fn dt_part(pdu: &[u8], eot: bool) -> Vec<u8> {
    let len = 7 + pdu.len();
    let mut v = vec![3, 0, (len >> 8) as u8, len as u8, 2, 0xf0, if eot { 0x80 } else { 0 }];
    v.extend_from_slice(pdu);
    v
}

/// A job PDU: header + parameters + data.
fn job(pdu_ref: u16, param: &[u8], data: &[u8]) -> Vec<u8> {
    let r = pdu_ref.to_be_bytes();
    let (p, d) = (param.len() as u16, data.len() as u16);
    let mut v = vec![0x32, JOB, 0, 0, r[0], r[1]];
    v.extend_from_slice(&p.to_be_bytes());
    v.extend_from_slice(&d.to_be_bytes());
    v.extend_from_slice(param);
    v.extend_from_slice(data);
    v
}

/// A read of DB1.DBB0, 4 bytes, as python-snap7 builds it.
const READ_DB1: [u8; 14] = [READ_VAR, 1, 0x12, 0x0a, 0x10, 0x02, 0, 4, 0, 1, 0x84, 0, 0, 0];

/// COTP connection request as snap7 sends it (TSAPs 0100/0102, TPDU 1024).
const CR: [u8; 22] = [3, 0, 0, 22, 17, 0xe0, 0, 0, 0, 1, 0, 0xc0, 1, 0x0a, 0xc1, 2, 1, 0, 0xc2, 2, 1, 2];

#[test]
fn a_connection_request_is_one_unit() {
    assert_eq!(Framer::next(&CR), Progress::Done { len: 22 });
    let mut scratch = [0; MAX_PDU];
    assert_eq!(Unit::parse(&CR, &mut scratch), Some(Unit::Connection(Tpdu::ConnectRequest)));
}

#[test]
fn units_are_framed_across_every_split() {
    let read = dt(&job(7, &READ_DB1, &[]));
    let mut stream = CR.to_vec();
    stream.extend_from_slice(&read);
    stream.extend_from_slice(&dt_part(&job(8, &READ_DB1, &[])[..10], false));
    stream.extend_from_slice(&dt(&job(8, &READ_DB1, &[])[10..]));
    // Byte by byte, each unit appears exactly when its last byte arrives.
    let mut seen = Vec::new();
    let mut start = 0;
    for end in 0..=stream.len() {
        match Framer::next(&stream[start..end]) {
            Progress::Done { len } => {
                assert_eq!(start + len, end, "a unit completes at its last byte");
                seen.push(len);
                start += len;
            }
            Progress::NeedMore => {}
            Progress::Reject(a) => panic!("{a:?} at {end}"),
        }
    }
    assert_eq!(seen, vec![22, read.len(), stream.len() - 22 - read.len()]);
    assert_eq!(start, stream.len());
}

#[test]
fn a_pdu_split_over_data_tpdus_is_gathered() {
    let pdu = job(9, &READ_DB1, &[]);
    let mut unit = dt_part(&pdu[..5], false);
    unit.extend(dt_part(&pdu[5..11], false));
    unit.extend(dt(&pdu[11..]));
    assert_eq!(Framer::next(&unit), Progress::Done { len: unit.len() });
    let mut scratch = [0; MAX_PDU];
    let Some(Unit::Data(got)) = Unit::parse(&unit, &mut scratch) else { panic!() };
    assert_eq!(got, &pdu[..]);
    let p = Pdu::parse(got).unwrap();
    assert_eq!((p.rosctr, p.pdu_ref), (JOB, 9));
}

#[test]
fn bad_headers_are_refused() {
    let good = dt(&job(1, &READ_DB1, &[]));
    let mut v = good.clone();
    v[0] = 2;
    assert_eq!(Framer::next(&v), Progress::Reject(Anomaly::BadVersion(2)));
    let mut v = good.clone();
    v[1] = 1;
    assert!(matches!(Framer::next(&v), Progress::Reject(Anomaly::BadVersion(_))));
    for len in [0u16, 6, (MAX_TPKT + 1) as u16, 0xffff] {
        let mut v = good.clone();
        v[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(Framer::next(&v), Progress::Reject(Anomaly::BadLength(len)), "{len}");
    }
    // COTP: an LI past the TPKT, an LI too small, a DT whose LI is not 2,
    // an unknown code.
    for (at, byte) in [(4, 200), (4, 1), (4, 3), (5, 0x10)] {
        let mut v = good.clone();
        v[at] = byte;
        assert!(matches!(Framer::next(&v), Progress::Reject(Anomaly::BadTpdu(_))), "{at}={byte}");
    }
}

#[test]
fn segmentation_abuse_is_refused() {
    // A connection TPDU inside a split PDU.
    let mut v = dt_part(&[0x32, 1], false);
    v.extend_from_slice(&CR);
    assert_eq!(Framer::next(&v), Progress::Reject(Anomaly::BadSegmentation));
    // More than MAX_PDU in DTs that never end.
    let part = dt_part(&[0; 500], false);
    let v: Vec<u8> = part.iter().chain(&part).chain(&part).copied().collect();
    assert_eq!(Framer::next(&v), Progress::Reject(Anomaly::BadSegmentation));
    // Tiny DTs that never end: refused once a unit's worth is buffered.
    let tiny = dt_part(&[0], false);
    let v: Vec<u8> = tiny.iter().cycle().take(MAX_UNIT + 8).copied().collect();
    assert!(matches!(Framer::next(&v), Progress::Reject(Anomaly::BadSegmentation)));
}

#[test]
fn pdu_headers_are_checked() {
    let pdu = job(3, &READ_DB1, &[]);
    let p = Pdu::parse(&pdu).unwrap();
    assert_eq!((p.rosctr, p.pdu_ref, p.error, p.param, p.data), (JOB, 3, 0, &READ_DB1[..], &[][..]));
    assert_eq!(Pdu::parse(&pdu[..9]), Err(Error::BadLength));
    assert_eq!(Pdu::parse(&pdu[..pdu.len() - 1]), Err(Error::BadLength));
    let mut long = pdu.clone();
    long.push(0);
    assert_eq!(Pdu::parse(&long), Err(Error::BadLength));
    let mut v = pdu.clone();
    v[0] = 0x72;
    assert_eq!(Pdu::parse(&v), Err(Error::BadProtocol(0x72)));
    let mut v = pdu;
    v[1] = 5;
    assert_eq!(Pdu::parse(&v), Err(Error::BadType(5)));
}

#[test]
fn requests_are_read() {
    let pdu = job(1, &READ_DB1, &[]);
    let item = Item { area: 0x84, db: 1, bit_address: 0, transport: 2, count: 4 };
    assert_eq!(
        Request::parse(&Pdu::parse(&pdu).unwrap()),
        Ok(Request::Variables { function: READ_VAR, items: 1, first: Some(item) })
    );
    // A write of DB1.DBB8 = 2 bytes.
    let mut param = READ_DB1;
    param[0] = WRITE_VAR;
    param[11..14].copy_from_slice(&[0, 0, 64]);
    let pdu = job(2, &param, &[0, 4, 0, 16, 0xbe, 0xef]);
    let Ok(Request::Variables { function: WRITE_VAR, items: 1, first: Some(i) }) =
        Request::parse(&Pdu::parse(&pdu).unwrap())
    else {
        panic!()
    };
    assert_eq!(i.bit_address, 64);
    // Setup communication proposing 480 bytes.
    let pdu = job(0, &[SETUP_COMMUNICATION, 0, 0, 1, 0, 1, 1, 0xe0], &[]);
    assert_eq!(Request::parse(&Pdu::parse(&pdu).unwrap()), Ok(Request::Setup { pdu_len: 480 }));
    // Stop, hot start and delete in their tools' layouts.
    let stop = [&[PLC_STOP, 0, 0, 0, 0, 0, 9][..], b"P_PROGRAM"].concat();
    assert_eq!(Request::parse(&Pdu::parse(&job(1, &stop, &[])).unwrap()), Ok(Request::Job { function: PLC_STOP }));
    let start = [&[PI_SERVICE, 0, 0, 0, 0, 0, 0, 0xfd, 0, 0, 9][..], b"P_PROGRAM"].concat();
    assert_eq!(Request::parse(&Pdu::parse(&job(1, &start, &[])).unwrap()), Ok(Request::Pi(PiService::Start)));
    let delete = [&[PI_SERVICE, 0, 0, 0, 0, 0, 8, 5, 0][..], b"0A00001P_DELE"].concat();
    assert_eq!(Request::parse(&Pdu::parse(&job(1, &delete, &[])).unwrap()), Ok(Request::Pi(PiService::DeleteBlock)));
    let odd = [PI_SERVICE, 0, 0];
    assert_eq!(Request::parse(&Pdu::parse(&job(1, &odd, &[])).unwrap()), Ok(Request::Pi(PiService::Other)));
    // The name is read where the PLC reads it, not found anywhere: a
    // delete whose block parameters spell P_PROGRAM is still a delete, and
    // a start with trailing bytes is not a start.
    let pi = |p: &[u8]| Request::parse(&Pdu::parse(&job(1, p, &[])).unwrap());
    let sneaky = [&[PI_SERVICE, 0, 0, 0, 0, 0, 0, 0xfd, 0, 9][..], b"P_PROGRAM", &[5], b"_DELE"].concat();
    assert_eq!(pi(&sneaky), Ok(Request::Pi(PiService::DeleteBlock)));
    let trailing = [&start[..], b"_GARB"].concat();
    assert_eq!(pi(&trailing), Ok(Request::Pi(PiService::Other)));
    let cold = [&[PI_SERVICE, 0, 0, 0, 0, 0, 0, 0xfd, 0, 2, b'C', b' ', 9][..], b"P_PROGRAM"].concat();
    assert_eq!(pi(&cold), Ok(Request::Pi(PiService::Start)));
    // A standard layout whose lengths do not add up is not read the other
    // way (the review's: the PLC would read _DELE, the fallback P_PROGRAM).
    let both = [&[PI_SERVICE, 0, 0, 0, 0, 0, 9, 9, 0, 2, b'x', b'y', 5][..], b"_DELE", b"P_PROGRAM"].concat();
    assert_eq!(pi(&both), Ok(Request::Pi(PiService::Other)));
    // python-snap7 3.3's compress and copy RAM to ROM.
    let compress = [&[PI_SERVICE, 0, 0, 0, 0, 0, 0, 0xfd, 0, 0, 5][..], b"_GARB"].concat();
    assert_eq!(pi(&compress), Ok(Request::Pi(PiService::Compress)));
    let copy = [&[PI_SERVICE, 0, 0, 0, 0, 0, 0, 0xfd, 0, 2, b'E', b'P', 5][..], b"_MODU"].concat();
    assert_eq!(pi(&copy), Ok(Request::Pi(PiService::CopyRamToRom)));
    // A userdata SZL read.
    let mut ud = job(4, &[0, 1, 0x12, 4, 0x11, 0x44, 1, 0], &[0xff, 9, 0, 4, 0, 0x1c, 0, 0]);
    ud[1] = USERDATA;
    let u = Userdata { kind: 4, group: GROUP_CPU, subfunction: 1, sequence: 0 };
    assert_eq!(Request::parse(&Pdu::parse(&ud).unwrap()), Ok(Request::Userdata(u)));
}

#[test]
fn malformed_requests_are_errors() {
    for param in [
        &[][..],
        &[READ_VAR],
        &[READ_VAR, 0],
        &[READ_VAR, 1, 0x12],
        &[READ_VAR, 1, 0x12, 0x0a, 0x10],
        &[READ_VAR, 2, 0x12, 0x0a, 0x10, 2, 0, 4, 0, 1, 0x84, 0, 0, 0],
        &[READ_VAR, 1, 0x11, 0x0a, 0x10, 2, 0, 4, 0, 1, 0x84, 0, 0, 0],
        &[READ_VAR, 1, 0x12, 0x0a, 0x10, 2, 0, 4, 0, 1, 0x84, 0, 0, 0, 0],
        &[SETUP_COMMUNICATION, 0, 0, 1],
    ] {
        let pdu = job(1, param, &[]);
        assert_eq!(Request::parse(&Pdu::parse(&pdu).unwrap()), Err(Error::BadParameters), "{param:02x?}");
    }
    // Userdata that is not a request, or whose parameter length lies.
    let mut ud = job(4, &[0, 1, 0x12, 4, 0x12, 0x84, 1, 0], &[]);
    ud[1] = USERDATA;
    assert_eq!(Request::parse(&Pdu::parse(&ud).unwrap()), Err(Error::BadParameters));
    ud[13] = 5;
    assert_eq!(Request::parse(&Pdu::parse(&ud).unwrap()), Err(Error::BadParameters));
    // An acknowledgement is not a request.
    let mut ack = job(1, &[READ_VAR, 1], &[]);
    ack[1] = ACK_DATA;
    ack.extend([0, 0]);
    assert_eq!(Request::parse(&Pdu::parse(&ack).unwrap()), Err(Error::BadType(ACK_DATA)));
}

/// Frames and reads back what an emitter wrote.
fn read_back(out: &[u8]) -> Pdu<'_> {
    assert_eq!(Framer::next(out), Progress::Done { len: out.len() });
    Pdu::parse(&out[7..]).unwrap()
}

#[test]
fn refusals_are_what_a_cpu_sends() {
    let mut out = [0u8; MAX_REFUSAL];
    let n = emit_item_refusal(&mut out, 0x1234, READ_VAR, 2, ITEM_ACCESS_DENIED);
    let p = read_back(&out[..n]);
    assert_eq!((p.rosctr, p.pdu_ref, p.error), (ACK_DATA, 0x1234, 0));
    assert_eq!((p.param, p.data), (&[READ_VAR, 2][..], &[3, 0, 0, 0, 3, 0, 0, 0][..]));
    let n = emit_item_refusal(&mut out, 5, WRITE_VAR, 3, ITEM_ACCESS_DENIED);
    let p = read_back(&out[..n]);
    assert_eq!((p.param, p.data), (&[WRITE_VAR, 3][..], &[3, 3, 3][..]));
    let n = emit_job_error(&mut out, 6, PLC_STOP, ERR_ACCESS_REFUSED);
    let p = read_back(&out[..n]);
    assert_eq!((p.rosctr, p.pdu_ref, p.error, p.param, p.data), (ACK_DATA, 6, 0x8703, &[PLC_STOP][..], &[][..]));
    let u = Userdata { kind: 4, group: GROUP_TIME, subfunction: 2, sequence: 0 };
    let n = emit_userdata_error(&mut out, 7, u, ERR_PROTECTION);
    let p = read_back(&out[..n]);
    let back = p.userdata().unwrap();
    assert_eq!((p.rosctr, p.pdu_ref, back.kind, back.group, back.subfunction), (USERDATA, 7, 8, GROUP_TIME, 2));
    assert_eq!(&p.param[10..], &[0xd2, 0x41]);
    assert_eq!(p.data, &[ITEM_NO_OBJECT, 0, 0, 0]);
    // The largest read a PDU can carry fits the refusal buffer.
    let most = (MAX_PDU / 12) as u8;
    let n = emit_item_refusal(&mut out, 1, READ_VAR, most, ITEM_ACCESS_DENIED);
    assert_eq!(read_back(&out[..n]).data.len(), 4 * usize::from(most));
}

#[test]
fn setup_proposals_above_the_gates_pdu_are_lowered() {
    let mut unit = dt(&job(0, &[SETUP_COMMUNICATION, 0, 0, 1, 0, 1, 0x07, 0x80], &[]));
    assert!(clamp_setup(&mut unit));
    let p = Pdu::parse(&unit[7..]).unwrap();
    assert_eq!(Request::parse(&p), Ok(Request::Setup { pdu_len: MAX_PDU as u16 }));
    assert!(!clamp_setup(&mut unit), "960 stays");
    let mut small = dt(&job(0, &[SETUP_COMMUNICATION, 0, 0, 1, 0, 1, 0x01, 0xe0], &[]));
    let before = small.clone();
    assert!(!clamp_setup(&mut small));
    assert_eq!(small, before);
    assert!(!clamp_setup(&mut [0u8; 10]), "too short: untouched");
}

/// Random and mutated streams: no panic anywhere, and whatever the framer
/// accepts reads back.
#[test]
fn fuzz_never_panics() {
    let mut rng = XorShift::new(0x57c0_4417);
    let seeds = [CR.to_vec(), dt(&job(1, &READ_DB1, &[])), dt(&job(2, &[PI_SERVICE, 0, 0, 0, 0, 0, 9], &[]))];
    let mut scratch = [0; MAX_PDU];
    let (mut units, mut requests) = (0, 0);
    for round in 0..20_000 {
        let mut buf: Vec<u8> = if round % 4 == 0 {
            (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].iter().chain(&seeds[rng.below(seeds.len())]).copied().collect()
        };
        for _ in 0..rng.below(4) {
            if !buf.is_empty() {
                let i = rng.below(buf.len());
                buf[i] = rng.next_u64() as u8;
            }
        }
        let mut at = 0;
        while let Progress::Done { len } = Framer::next(&buf[at..]) {
            units += 1;
            let unit = Unit::parse(&buf[at..at + len], &mut scratch);
            assert!(unit.is_some(), "an accepted unit reads back: {:02x?}", &buf[at..at + len]);
            if let Some(Unit::Data(pdu)) = unit {
                if let Ok(p) = Pdu::parse(pdu) {
                    let _ = p.userdata();
                    requests += usize::from(Request::parse(&p).is_ok());
                }
            }
            at += len;
        }
        let _ = clamp_setup(&mut buf);
    }
    assert!(units > 10_000 && requests > 5_000, "{units} units, {requests} requests");
}
