//! The one file that knows rustls: TLS termination on a smoltcp socket.
//!
//! A [`Tls`] sits between the user's TCP socket and the session. TLS records
//! move between the socket's buffers and rustls ([`Tls::pull`], [`Tls::push`]);
//! plaintext moves between rustls and the session ([`Tls::read_plain`],
//! [`Tls::write_plain`]). Buffers are bounded ([`BUFFER_LIMIT`], sized for OT
//! PDUs, not web pages), so a slow reader on either side closes the TCP
//! window of the other. A TLS error ends that session only; its text is
//! returned for the log and counters.
//!
//! Defaults: TLS 1.3 only (1.2 by config), ECDSA P-256 or Ed25519 server
//! keys, optional client certificates (mTLS), resumption by stateless
//! tickets (no session cache shared between cores, so no lock).

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use smoltcp::socket::tcp;

/// A compiled server configuration, shared read-only by every core.
pub type TlsConfig = Arc<rustls::ServerConfig>;

/// Plaintext and ciphertext buffered per direction inside rustls, at most.
pub const BUFFER_LIMIT: usize = 16 * 1024;

/// TLS bytes a user may send before the handshake is done. rustls itself
/// joins a handshake message of up to 64 KiB across records and keeps the
/// records while it waits, so an unauthenticated client announcing a large
/// ClientHello and trickling it would hold ~80 KiB a session. A real
/// client's flight is a ClientHello (under 2 KiB, post-quantum key shares
/// included) and, with a client certificate, its chain and two short
/// messages: a few KiB.
pub const HANDSHAKE_LIMIT: usize = BUFFER_LIMIT;

/// Builds the server configuration from PEM bytes.
///
/// # Errors
/// A certificate or key that does not parse, a key type rustls does not
/// support, or a client CA bundle with no usable certificate.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
    allow_tls12: bool,
) -> Result<TlsConfig, String> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem).collect::<Result<_, _>>().map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("certificate: no PEM certificate found".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] =
        if allow_tls12 { &[&rustls::version::TLS13, &rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("protocol versions: {e}"))?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots.add(cert.map_err(|e| format!("client CA: {e}"))?).map_err(|e| format!("client CA: {e}"))?;
            }
            // Client certificates are optional: a user may log in with a
            // password instead. When presented, they must chain to the CA.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| format!("certificate/key: {e}"))?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("ticketer: {e}"))?;
    config.send_tls13_tickets = 1;
    config.max_fragment_size = None;
    Ok(Arc::new(config))
}

/// One server-side TLS session.
pub struct Tls {
    conn: rustls::ServerConnection,
    peer_closed: bool,
    /// TLS bytes taken in while handshaking (up to [`HANDSHAKE_LIMIT`]).
    handshake_in: usize,
}

/// Why a TLS session failed (ends that session only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Tls {
    /// A new server session.
    ///
    /// # Errors
    /// rustls refused the configuration (not expected after `server_config`).
    pub fn new(config: &TlsConfig) -> Result<Self, TlsError> {
        let mut conn = rustls::ServerConnection::new(config.clone()).map_err(|e| TlsError(e.to_string()))?;
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(Self { conn, peer_closed: false, handshake_in: 0 })
    }

    /// Feeds TLS records from `sock` to rustls while it wants them. Returns
    /// the bytes consumed.
    ///
    /// # Errors
    /// The peer sent something that is not acceptable TLS (rustls has queued
    /// an alert, so [`Tls::push`] once more before closing), or more than
    /// [`HANDSHAKE_LIMIT`] bytes before its handshake was done.
    pub fn pull(&mut self, sock: &mut tcp::Socket<'_>) -> Result<usize, TlsError> {
        let mut total = 0;
        while self.conn.wants_read() && sock.can_recv() {
            let handshaking = self.conn.is_handshaking();
            let room = if handshaking { HANDSHAKE_LIMIT - self.handshake_in } else { usize::MAX };
            if room == 0 {
                return Err(TlsError(format!("handshake larger than {HANDSHAKE_LIMIT} bytes")));
            }
            let conn = &mut self.conn;
            let read = sock.recv(|buf| {
                let mut rd: &[u8] = &buf[..buf.len().min(room)];
                match conn.read_tls(&mut rd) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                }
            });
            let n = match read {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(TlsError(format!("reading records: {e}"))),
                Err(_) => break,
            };
            if handshaking {
                self.handshake_in += n;
            }
            let state = self.conn.process_new_packets().map_err(|e| TlsError(e.to_string()))?;
            self.peer_closed |= state.peer_has_closed();
            if n == 0 {
                break;
            }
            total += n;
        }
        Ok(total)
    }

    /// Moves queued TLS records into `sock` as far as it has room. Returns
    /// the bytes written.
    pub fn push(&mut self, sock: &mut tcp::Socket<'_>) -> usize {
        let mut total = 0;
        while self.conn.wants_write() && sock.can_send() {
            let conn = &mut self.conn;
            let wrote = sock.send(|buf| {
                let mut wr: &mut [u8] = buf;
                let n = conn.write_tls(&mut wr).unwrap_or(0);
                (n, n)
            });
            match wrote {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    }

    /// Copies decrypted bytes into `out`; returns how many.
    pub fn read_plain(&mut self, out: &mut [u8]) -> usize {
        if out.is_empty() {
            return 0;
        }
        // `WouldBlock` means no plaintext yet; EOF after close_notify.
        self.conn.reader().read(out).unwrap_or(0)
    }

    /// Encrypts as much of `data` as the send buffer limit allows; returns
    /// how many bytes were taken.
    pub fn write_plain(&mut self, data: &[u8]) -> usize {
        self.conn.writer().write(data).unwrap_or(0)
    }

    /// Whether the handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the peer sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Whether ciphertext is waiting to be sent.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Queues close_notify.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// `("TLSv1_3", "TLS13_AES_256_GCM_SHA384")`, for the session record.
    pub fn negotiated(&self) -> (String, String) {
        let v = self.conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
        let s = self.conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
        (v, s)
    }

    /// SHA-256 is computed by the control side; this hands over the DER of
    /// the client certificate, if one was presented and verified.
    pub fn client_certificate(&self) -> Option<&[u8]> {
        self.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref())
    }
}
