//! The user side of a gate session on a smoltcp socket: a rustls client
//! pumped over the socket's buffers, and the hello exchange.

use control::client::{self, Answer};
use dataplane::wire::hello::Auth;
use smoltcp::socket::tcp;
use std::io::{Read, Write};
use std::sync::Arc;

/// A TLS client session riding on one smoltcp socket.
pub struct TlsClient {
    pub conn: rustls::ClientConnection,
    inbox: Vec<u8>,
    /// The gate's answer to our hello, once it came.
    pub answer: Option<Answer>,
    /// Set when TLS failed (alert, bad certificate, ...).
    pub error: Option<String>,
}

impl TlsClient {
    /// A session that will send `hello` as soon as TLS is up.
    ///
    /// # Errors
    /// The server name is invalid.
    pub fn new(
        config: &Arc<rustls::ClientConfig>,
        server_name: &str,
        auth: Auth<'_>,
        target: Option<(&str, &str)>,
    ) -> Result<Self, String> {
        let mut conn = client::connection(config, server_name)?;
        let frame = client::hello_frame(auth, target);
        // rustls holds early plaintext until the handshake completes.
        conn.writer().write_all(&frame).map_err(|e| e.to_string())?;
        Ok(Self { conn, inbox: Vec::new(), answer: None, error: None })
    }

    /// Moves records both ways over `sock`; collects plaintext. Returns
    /// whether anything moved.
    pub fn pump(&mut self, sock: &mut tcp::Socket<'_>) -> bool {
        let mut moved = false;
        while self.conn.wants_read() && sock.can_recv() {
            let conn = &mut self.conn;
            let n = sock
                .recv(|buf| {
                    let mut rd: &[u8] = buf;
                    let n = conn.read_tls(&mut rd).unwrap_or(0);
                    (n, n)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            moved = true;
            if let Err(e) = self.conn.process_new_packets() {
                self.error = Some(e.to_string());
                break;
            }
        }
        let mut chunk = [0u8; 2048];
        loop {
            match self.conn.reader().read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.inbox.extend_from_slice(&chunk[..n]);
                    moved = true;
                }
            }
        }
        if self.answer.is_none() {
            match client::parse_answer(&self.inbox) {
                Ok(Some((answer, used))) => {
                    self.answer = Some(answer);
                    self.inbox.drain(..used);
                }
                Ok(None) => {}
                Err(e) => self.error = Some(e),
            }
        }
        while self.conn.wants_write() && sock.can_send() {
            let conn = &mut self.conn;
            let n = sock
                .send(|buf| {
                    let mut wr: &mut [u8] = buf;
                    let n = conn.write_tls(&mut wr).unwrap_or(0);
                    (n, n)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            moved = true;
        }
        moved
    }

    /// Queues application bytes (sent on the next pump).
    pub fn send(&mut self, data: &[u8]) {
        let _ = self.conn.writer().write_all(data);
    }

    /// Takes the application bytes received after the answer.
    pub fn take_received(&mut self) -> Vec<u8> {
        if self.answer.is_none() {
            return Vec::new();
        }
        std::mem::take(&mut self.inbox)
    }

    /// Whether the answer was an accept.
    pub fn accepted(&self) -> bool {
        matches!(self.answer, Some(Answer::Accept { .. }))
    }
}
