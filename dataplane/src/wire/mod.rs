//! Wire formats: parse and emit bytes, nothing else (no policy, no I/O).
//!
//! Each module follows smoltcp's contract: untrusted input goes through a
//! checked constructor or `parse`, after which no accessor panics.

pub mod dnp3;
pub mod enip;
pub mod hello;
pub mod modbus;
pub mod s7;
