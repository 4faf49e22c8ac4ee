//! Wire formats: parse and emit bytes, nothing else (no policy, no I/O).
//!
//! Each module follows smoltcp's contract: untrusted input goes through a
//! checked constructor or `parse`, after which no accessor panics.

/// What a framer found at the start of a buffer (S7comm, DNP3,
/// EtherNet/IP; Modbus has its own, which also says how much more it needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<A> {
    /// `buf[..len]` is one complete unit. Consume it and call again.
    Done { len: usize },
    /// No complete unit yet.
    NeedMore,
    /// The stream cannot be framed: drop it.
    Reject(A),
}

impl<A> Progress<A> {
    /// The unit's length (`None`: not complete yet).
    ///
    /// # Errors
    /// The stream cannot be framed.
    pub fn into_result(self) -> Result<Option<usize>, A> {
        match self {
            Self::Done { len } => Ok(Some(len)),
            Self::NeedMore => Ok(None),
            Self::Reject(a) => Err(a),
        }
    }
}

pub mod dnp3;
pub mod enip;
pub mod hello;
pub mod modbus;
pub mod s7;
