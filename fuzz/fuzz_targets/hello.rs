//! Fuzz the access hello: framing, parse, and emit round trip.
//!
//! Properties: nothing panics; `frame_len` never asks for zero more bytes;
//! a frame that parses emits to the same length and parses back to the same
//! message (byte identity too when its tags were in ascending order, which
//! the unit test `random_and_mutated_frames_never_panic` also checks).
#![no_main]

use dataplane::wire::hello::{frame_len, Framing, Message, MAX_FRAME_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whatever the bytes, parsing them whole must not panic.
    let _ = Message::parse(data);
    let n = match frame_len(data) {
        Framing::Complete(n) => n,
        Framing::NeedMore(k) => {
            assert!(k > 0, "NeedMore(0) would stall the reader");
            return;
        }
        Framing::Reject(_) => return,
    };
    assert!(n <= MAX_FRAME_LEN && n <= data.len());
    let Ok(msg) = Message::parse(&data[..n]) else {
        return;
    };
    let len = msg.buffer_len();
    assert_eq!(len, n, "emit length differs from the parsed frame");
    let mut out = [0u8; MAX_FRAME_LEN];
    assert_eq!(msg.emit(&mut out), len);
    assert_eq!(frame_len(&out[..len]), Framing::Complete(len));
    assert_eq!(Message::parse(&out[..len]), Ok(msg));
    assert_eq!(msg.check(), Ok(()));
});
