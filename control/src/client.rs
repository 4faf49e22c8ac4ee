//! The user's side of the access protocol (architecture §5): the TLS client
//! configuration and the hello exchange, over any byte stream. Used by
//! `accessgate login` / `connect`, the in-memory lab and the benchmarks.

use std::io::{Read, Write};
use std::sync::Arc;

use dataplane::wire::hello::{self, Auth, Framing, Message, Reason};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Builds a client configuration trusting `ca_pem`.
///
/// # Errors
/// The CA bundle has no usable certificate, or the client certificate/key
/// do not parse.
pub fn client_config(
    ca_pem: &[u8],
    tls12_only: bool,
    client_cert: Option<(&[u8], &[u8])>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.map_err(|e| format!("CA: {e}"))?).map_err(|e| format!("CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("CA: no certificate found".into());
    }
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls12_only { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| format!("client certificate: {e}"))?
        }
    };
    Ok(Arc::new(config))
}

/// A TLS client session for `server_name` (a DNS name or IP in the gate's
/// certificate).
///
/// # Errors
/// The name is not a valid server name.
pub fn connection(config: &Arc<rustls::ClientConfig>, server_name: &str) -> Result<rustls::ClientConnection, String> {
    let name =
        ServerName::try_from(server_name.to_string()).map_err(|e| format!("server name {server_name:?}: {e}"))?;
    rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())
}

/// The gate's answer to a hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Accept { session_id: u64, expires_unix: u64, granted: String, ticket: Option<[u8; 32]> },
    Refuse { reason: Reason, retry_after: Option<u32> },
}

/// Encodes a hello frame.
pub fn hello_frame(auth: Auth<'_>, target: Option<(&str, &str)>) -> Vec<u8> {
    let msg = Message::Hello { auth, target };
    let mut buf = vec![0u8; msg.buffer_len()];
    let n = msg.emit(&mut buf);
    buf.truncate(n);
    buf
}

/// Encodes a hello frame the gate will be able to read, or says what to
/// fix (a TOTP code that is not six digits, a password over 256 bytes, a
/// name with control characters) instead of sending one it refuses as
/// malformed.
///
/// # Errors
/// What the gate's parser would refuse, in words for the user.
pub fn checked_hello(auth: Auth<'_>, target: Option<(&str, &str)>) -> Result<Vec<u8>, String> {
    Message::Hello { auth, target }.check().map_err(|e| format!("cannot send this request: {e}"))?;
    Ok(hello_frame(auth, target))
}

/// Decodes the gate's reply from the start of `buf`: `Ok(Some((answer,
/// consumed)))`, `Ok(None)` if more bytes are needed.
///
/// # Errors
/// The bytes are not a valid reply.
pub fn parse_answer(buf: &[u8]) -> Result<Option<(Answer, usize)>, String> {
    match hello::frame_len(buf) {
        Framing::NeedMore(_) => Ok(None),
        Framing::Reject(e) => Err(format!("bad reply from the gate: {e}")),
        Framing::Complete(n) => match Message::parse(&buf[..n]).map_err(|e| format!("bad reply from the gate: {e}"))? {
            Message::Accept { session_id, expires_unix, granted, ticket } => Ok(Some((
                Answer::Accept { session_id, expires_unix, granted: granted.to_string(), ticket: ticket.copied() },
                n,
            ))),
            Message::Refuse { reason, retry_after } => Ok(Some((Answer::Refuse { reason, retry_after }, n))),
            Message::Hello { .. } => Err("bad reply from the gate: a hello".into()),
        },
    }
}

/// Sends `hello` over an established TLS stream and reads the answer, and
/// not a byte more: what follows it (an asset that speaks first, a DNP3
/// outstation's unsolicited response) stays in `stream` for the caller.
///
/// # Errors
/// I/O errors, or the gate closed without a valid answer.
pub fn exchange<S: Read + Write>(stream: &mut S, hello: &[u8]) -> Result<Answer, String> {
    stream.write_all(hello).map_err(|e| format!("sending hello: {e}"))?;
    stream.flush().map_err(|e| format!("sending hello: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    loop {
        let want = match hello::frame_len(&buf) {
            Framing::NeedMore(n) => n,
            _ => match parse_answer(&buf)? {
                Some((answer, _)) => return Ok(answer),
                None => return Err("bad reply from the gate".into()),
            },
        };
        let at = buf.len();
        buf.resize(at + want, 0);
        stream.read_exact(&mut buf[at..]).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the gate closed the connection without answering".to_string(),
            _ => format!("reading the gate's answer: {e}"),
        })?;
    }
}
