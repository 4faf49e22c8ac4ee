//! Frames the input as a Modbus/TCP byte stream and decodes every ADU.
//!
//! Invariants checked: the framer and `Packet::new_checked` agree, nothing
//! panics, and every PDU that decodes as a request (or response) re-emits
//! byte-for-byte identical.
//!
//! Run with `cargo +nightly fuzz run modbus_framer`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use dataplane::wire::modbus::{
    Framer, Packet, Progress, Request, Response, MAX_ADU_LEN, MAX_PDU_LEN, MIN_ADU_LEN,
};

fuzz_target!(|data: &[u8]| {
    let mut framer = Framer::new();
    let mut rest = data;
    let mut out = [0u8; MAX_PDU_LEN];
    loop {
        match framer.next(rest) {
            Progress::Done { adu_len } => {
                assert!((MIN_ADU_LEN..=MAX_ADU_LEN).contains(&adu_len));
                assert!(adu_len <= rest.len());
                let (adu, tail) = rest.split_at(adu_len);
                let packet = Packet::new_checked(adu).expect("framer accepted an invalid ADU");
                if let Ok(request) = Request::parse(packet.function(), packet.data()) {
                    let n = request.emit(&mut out);
                    assert_eq!(&out[..n], packet.pdu(), "request re-emit differs");
                    let _ = request.access();
                    let _ = request
                        .written_registers()
                        .map(|(_, values)| values.count());
                }
                if let Ok(response) = Response::parse(packet.function(), packet.data()) {
                    let n = response.emit(&mut out);
                    assert_eq!(&out[..n], packet.pdu(), "response re-emit differs");
                }
                rest = tail;
            }
            Progress::NeedMore { at_least } => {
                assert!(at_least > rest.len());
                break;
            }
            Progress::Reject(_) => {
                assert!(Packet::new_checked(rest).is_err());
                break;
            }
        }
    }
});
