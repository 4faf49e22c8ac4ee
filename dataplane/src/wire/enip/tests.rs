use super::*;
use crate::xorshift::XorShift;

pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

// Captured from cpppo 5.2 and pycomm3 1.2 talking to cpppo's simulator.
/// cpppo: RegisterSession.
pub const REGISTER: &str = "65000400000000000000000000000000000000000000000001000000";
/// cpppo: Unconnected Send wrapping Read Tag "Speed" (2 elements).
pub const READ_SPEED: &str = "6f002c00606d733400000000300000000000000000000000000000000800020000000000b2001c00520220062401059d0e004c0591055370656564002800020001000100";
/// cpppo: Unconnected Send wrapping Write Tag "Speed[1]" = (INT) 42.
pub const WRITE_SPEED: &str = "6f003000606d733400000000310000000000000000000000000000000800020000000000b2002000520220062401059d12004d0591055370656564002801c30001002a0001000100";
/// pycomm3: Large Forward Open.
pub const FORWARD_OPEN: &str = "6f0042009f635f34000000005f7079636f6d6d5f00000000000000000a00020000000000b20032005b02200624010a050000000037a09020270409102ecae7f80700000001402000a00f004201402000a00f0042a30220022401";
/// pycomm3: connected Get_Attributes_All of the Identity object.
pub const CONNECTED_IDENTITY: &str =
    "70001c009f635f34000000005f7079636f6d6d5f00000000000000000a000200a1000400e0fe589eb10008000100010220012401";
/// pycomm3: unconnected Reset of the Identity object.
pub const RESET_IDENTITY: &str =
    "6f0018009f635f34000000005f7079636f6d6d5f00000000000000000a00020000000000b20008000502200124010000";

#[test]
fn messages_from_real_clients_parse() {
    let m = hex(READ_SPEED);
    assert_eq!(Framer::next(&m), Progress::Done { len: m.len() });
    let e = Encap::parse(&m).unwrap();
    assert_eq!((e.command, e.session, e.status), (SEND_RR_DATA, 0x3473_6d60, 0));
    let cpf = e.cpf().unwrap();
    assert_eq!((cpf.connection, cpf.sequence), (None, None));
    let cip = Cip::parse(cpf.message).unwrap();
    assert_eq!((cip.service, cip.class, cip.instance), (UNCONNECTED_SEND, CLASS_CONNECTION_MANAGER, 1));
    let inner = cip.embedded().unwrap();
    assert_eq!((inner.service, inner.class, inner.symbol, inner.data), (READ_TAG, 0, &b"Speed"[..], &[2, 0][..]));

    let e = hex(WRITE_SPEED);
    let inner = Cip::parse(Encap::parse(&e).unwrap().cpf().unwrap().message).unwrap().embedded().unwrap();
    assert_eq!((inner.service, inner.symbol), (WRITE_TAG, &b"Speed"[..]));

    let c = hex(CONNECTED_IDENTITY);
    let e = Encap::parse(&c).unwrap();
    let cpf = e.cpf().unwrap();
    assert_eq!((e.command, cpf.connection, cpf.sequence), (SEND_UNIT_DATA, Some(0x9e58_fee0), Some(1)));
    let cip = Cip::parse(cpf.message).unwrap();
    assert_eq!((cip.service, cip.class, cip.instance, cip.embedded()), (GET_ATTRIBUTES_ALL, CLASS_IDENTITY, 1, None));

    let f = hex(FORWARD_OPEN);
    let cip = Cip::parse(Encap::parse(&f).unwrap().cpf().unwrap().message).unwrap();
    assert_eq!((cip.service, cip.class), (LARGE_FORWARD_OPEN, CLASS_CONNECTION_MANAGER));
    let r = hex(RESET_IDENTITY);
    let cip = Cip::parse(Encap::parse(&r).unwrap().cpf().unwrap().message).unwrap();
    assert_eq!((cip.service, cip.class), (RESET, CLASS_IDENTITY));
    let reg = hex(REGISTER);
    let e = Encap::parse(&reg).unwrap();
    assert_eq!((e.command, e.cpf()), (REGISTER_SESSION, None));
}

#[test]
fn messages_are_framed_across_every_split() {
    let stream = [hex(REGISTER), hex(READ_SPEED), hex(CONNECTED_IDENTITY)].concat();
    let mut seen = Vec::new();
    let mut start = 0;
    for end in 0..=stream.len() {
        if let Progress::Done { len } = Framer::next(&stream[start..end]) {
            assert_eq!(start + len, end);
            seen.push(len);
            start += len;
        }
    }
    assert_eq!(seen, [28, hex(READ_SPEED).len(), hex(CONNECTED_IDENTITY).len()]);
}

#[test]
fn bad_messages_are_refused_or_do_not_parse() {
    let mut m = hex(READ_SPEED);
    m[2..4].copy_from_slice(&4097u16.to_le_bytes());
    assert_eq!(Framer::next(&m), Progress::Reject(Anomaly::TooLong(4097)));
    let m = hex(READ_SPEED);
    assert_eq!(Encap::parse(&m[..m.len() - 1]), None);
    // A CPF item longer than the data, a path longer than the message, an
    // unknown path segment, an embedded message cut short.
    let mut m = hex(READ_SPEED);
    m[38] = 0x30;
    assert_eq!(Encap::parse(&m).unwrap().cpf(), None);
    assert_eq!(Cip::parse(&[0x4c, 9, 0x91, 1, b'x', 0]), None);
    assert_eq!(Cip::parse(&[0x4c, 1, 0x77, 0]), None);
    let cut = [0x52, 2, 0x20, 6, 0x24, 1, 5, 0x9d, 40, 0, 0x4c, 1];
    assert_eq!(Cip::parse(&cut).unwrap().embedded(), None);
}

#[test]
fn multiple_service_packets_are_split() {
    // Two requests: Get_Attribute_Single identity attr 7; Write Tag "A".
    let get = [GET_ATTRIBUTE_SINGLE, 3, 0x20, 1, 0x24, 1, 0x30, 7];
    let write = [WRITE_TAG, 2, 0x91, 1, b'A', 0, 0xc3, 0, 1, 0, 5, 0];
    let mut data = vec![2, 0, 6, 0, 6 + get.len() as u8, 0];
    data.extend(get);
    data.extend(write);
    let msp = [&[MULTIPLE_SERVICE_PACKET, 2, 0x20, 2, 0x24, 1][..], &data].concat();
    let cip = Cip::parse(&msp).unwrap();
    assert_eq!(cip.service_count(), Some(2));
    assert_eq!(cip.service(0).map(|c| (c.service, c.class)), Some((GET_ATTRIBUTE_SINGLE, CLASS_IDENTITY)));
    assert_eq!(cip.service(1).map(|c| (c.service, c.symbol)), Some((WRITE_TAG, &b"A"[..])));
    assert_eq!(cip.service(2), None);
}

#[test]
fn refusals_are_replies_a_client_reads() {
    let m = hex(WRITE_SPEED);
    let e = Encap::parse(&m).unwrap();
    let cpf = e.cpf().unwrap();
    let mut out = [0u8; MAX_REFUSAL];
    let n = emit_cip_error(&mut out, &e, &cpf, 0, WRITE_TAG, STATUS_PRIVILEGE_VIOLATION);
    assert_eq!(Framer::next(&out[..n]), Progress::Done { len: n });
    let r = Encap::parse(&out[..n]).unwrap();
    assert_eq!((r.command, r.session, r.context), (SEND_RR_DATA, e.session, e.context));
    assert_eq!(r.cpf().unwrap().message, &[0xcd, 0, 0x0f, 0]);
    let c = hex(CONNECTED_IDENTITY);
    let e = Encap::parse(&c).unwrap();
    let n = emit_cip_error(&mut out, &e, &e.cpf().unwrap(), 0x2090_a037, RESET, STATUS_PRIVILEGE_VIOLATION);
    let r = Encap::parse(&out[..n]).unwrap();
    let cpf = r.cpf().unwrap();
    assert_eq!((cpf.connection, cpf.sequence, cpf.message), (Some(0x2090_a037), Some(1), &[0x85, 0, 0x0f, 0][..]));
    let n = emit_encap_error(&mut out, &e, STATUS_INVALID_COMMAND);
    let r = Encap::parse(&out[..n]).unwrap();
    assert_eq!((r.command, r.status, r.data.len()), (SEND_UNIT_DATA, 1, 0));
}

/// Random and mutated messages: no panic anywhere.
#[test]
fn fuzz_never_panics() {
    let mut rng = XorShift::new(0xe41_0001);
    let seeds: Vec<Vec<u8>> =
        [READ_SPEED, WRITE_SPEED, FORWARD_OPEN, CONNECTED_IDENTITY, RESET_IDENTITY].map(hex).to_vec();
    let (mut framed, mut cips) = (0, 0);
    for _ in 0..20_000 {
        let mut m = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(m.len());
            m[i] = rng.next_u64() as u8;
        }
        if let Progress::Done { len } = Framer::next(&m) {
            framed += 1;
            if let Some(e) = Encap::parse(&m[..len]) {
                if let Some(cpf) = e.cpf() {
                    if let Some(c) = Cip::parse(cpf.message) {
                        cips += 1;
                        let _ = c.embedded();
                        for k in 0..c.service_count().unwrap_or(0) {
                            let _ = c.service(k);
                        }
                    }
                }
            }
        }
    }
    assert!(framed > 1_000 && cips > 1_000, "{framed} framed, {cips} CIP requests");
}
