//! Inline inspection: turns parsed PDUs into verdicts.
//!
//! `wire/` only parses; this module decides what each request means for
//! the policy (which table, which addresses, which operation) and what the
//! gate does with it: forward it, answer it itself the way the protocol
//! expects, or end the session when the stream can no longer be framed.

pub mod modbus;
pub mod s7;

/// Where inspected bytes go. The session implements this over the asset's
/// TCP socket (`to_asset`) and the user's TLS session (`to_user`); both
/// return `false` when there is no room for the whole unit (ADU, TPKT)
/// right now.
pub trait Sink {
    fn to_asset(&mut self, unit: &[u8]) -> bool;
    fn to_user(&mut self, unit: &[u8]) -> bool;
}

/// A fixed byte buffer for partial protocol units.
pub(crate) struct Buf<const N: usize> {
    pub(crate) data: [u8; N],
    pub(crate) len: usize,
}

impl<const N: usize> Buf<N> {
    pub(crate) const fn new() -> Self {
        Self { data: [0; N], len: 0 }
    }

    pub(crate) fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.len..]
    }

    /// `n` bytes were written into [`Buf::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.len = (self.len + n).min(N);
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.data.copy_within(n..self.len, 0);
        self.len -= n;
    }
}
