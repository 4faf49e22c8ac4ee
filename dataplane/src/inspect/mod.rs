//! Inline inspection: turns parsed PDUs into verdicts.
//!
//! `wire/` only parses; this module decides what each request means for
//! the policy (which table, which addresses, which operation) and what the
//! gate does with it: forward it, answer it itself the way the protocol
//! expects, or end the session when the stream can no longer be framed.

pub mod modbus;
