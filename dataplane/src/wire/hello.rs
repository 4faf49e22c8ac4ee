//! The access hello: one framed message each way inside TLS, before the OT
//! stream (architecture §5).
//!
//! The client sends one [`Message::Hello`]; the gate answers one
//! [`Message::Accept`] or [`Message::Refuse`]; then the stream is the OT
//! protocol (or, at the gate's own login endpoint, the connection closes).
//!
//! ```text
//! frame   = magic "AG" (2) | version u8 = 1 | kind u8 | length u16 BE | payload
//! payload = *( tag u8 | len u16 BE | value )          length <= MAX_PAYLOAD
//! ```
//!
//! Contract (smoltcp's): bytes from the network go through [`frame_len`]
//! (which reads only the 6-byte header) and [`Message::parse`]; neither
//! panics, allocates nor copies on any input, and a parsed message borrows
//! its strings and ticket from the frame. Parsing is strict: an unknown tag
//! for the frame's kind, a repeated tag, a value of the wrong size or shape,
//! or a field combination the protocol does not allow is an [`Error`] (the
//! gate answers `malformed_hello`). Tags may come in any order; [`Message::emit`]
//! writes them in ascending order, so a canonical frame round-trips byte for
//! byte. Which direction a kind may travel (the gate accepts only `Hello`) is
//! the caller's check, not the parser's.
//!
//! Text fields are UTF-8 and may not contain control characters (nor line
//! separators, bidi controls or zero-width characters), so a name
//! from the wire can be logged as is. A credentials hello may leave out the
//! TOTP code (tag 3): [`Auth::Credentials`] then has `totp: ""` and the gate
//! answers `mfa_required` if the password was right. It may also leave out
//! the password (tag 2), which then reads as `password: b""`: the client
//! presented a TLS client certificate as its first factor (the gate refuses
//! it as `bad_credentials` unless that certificate is enrolled for the user).
//! A password that is present is 1..=256 bytes.
//!
//! Cost (release, one core, a 64-byte credentials + target hello):
//! `frame_len` ~5 ns, `parse` ~36 ns, `emit` ~11 ns.

use core::fmt;

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"AG";
/// The only protocol version.
pub const VERSION: u8 = 1;
/// Magic, version, kind and length.
pub const HEADER_LEN: usize = 6;
/// The largest payload a frame may declare.
pub const MAX_PAYLOAD: usize = 1024;
/// The largest frame: a receive buffer of this size always holds a hello.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_PAYLOAD;
/// An access ticket: 32 opaque random bytes.
pub const TICKET_LEN: usize = 32;
/// A TOTP code on the wire: exactly six ASCII digits.
pub const TOTP_LEN: usize = 6;
/// User names: 1..=64 bytes of UTF-8.
pub const MAX_USER_LEN: usize = 64;
/// Passwords: 1..=256 bytes, any bytes.
pub const MAX_PASSWORD_LEN: usize = 256;
/// Asset names: 1..=64 bytes of UTF-8.
pub const MAX_ASSET_LEN: usize = 64;
/// Service names: 1..=32 bytes of UTF-8.
pub const MAX_SERVICE_LEN: usize = 32;
/// Granted operations (comma-separated): 0..=256 bytes of UTF-8.
pub const MAX_GRANTED_LEN: usize = 256;

const TLV_HEADER_LEN: usize = 3;

mod field {
    pub type Field = core::ops::Range<usize>;

    pub const MAGIC: Field = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const LENGTH: Field = 4..6;
}

/// Field tags. A tag is only valid in the kind it is listed under.
pub mod tag {
    /// Hello: user name.
    pub const USER: u8 = 1;
    /// Hello: password.
    pub const PASSWORD: u8 = 2;
    /// Hello: TOTP code.
    pub const TOTP: u8 = 3;
    /// Hello: ticket.
    pub const TICKET: u8 = 4;
    /// Hello: asset name.
    pub const ASSET: u8 = 5;
    /// Hello: service name.
    pub const SERVICE: u8 = 6;
    /// Accept: session id, u64 BE.
    pub const SESSION_ID: u8 = 10;
    /// Accept: expiry, unix seconds, u64 BE.
    pub const EXPIRES: u8 = 11;
    /// Accept: granted operations.
    pub const GRANTED: u8 = 12;
    /// Accept: a fresh ticket (reply to a login only).
    pub const NEW_TICKET: u8 = 13;
    /// Refuse: reason code, u8.
    pub const REASON: u8 = 20;
    /// Refuse: seconds to wait before retrying, u32 BE.
    pub const RETRY_AFTER: u8 = 21;
}

/// The frame kind (byte 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Client to gate.
    Hello,
    /// Gate to client: admitted.
    Accept,
    /// Gate to client: refused, with a reason.
    Refuse,
}

impl Kind {
    /// The kind for a wire byte, if it is one.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Hello),
            2 => Some(Self::Accept),
            3 => Some(Self::Refuse),
            _ => None,
        }
    }

    /// The wire byte.
    pub const fn code(self) -> u8 {
        match self {
            Self::Hello => 1,
            Self::Accept => 2,
            Self::Refuse => 3,
        }
    }
}

/// Why the gate refused (tag 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Unknown user, wrong password or code, unknown or revoked ticket.
    BadCredentials,
    /// The password was right; a TOTP code is needed.
    MfaRequired,
    /// Too many failures; see `retry_after`.
    Locked,
    /// The ticket has expired: log in again.
    TicketExpired,
    /// No rule grants this user this asset and service.
    NotAuthorized,
    /// A rule would, but not at this time.
    OutsideWindow,
    /// The audit log cannot record the session, so none is opened.
    AuditUnavailable,
    /// The hello did not parse.
    MalformedHello,
    /// No such asset or service.
    UnknownAsset,
    /// A code this version does not know.
    Unknown(u8),
}

impl Reason {
    /// The reason for a wire byte (every byte maps to a variant).
    pub const fn from_code(code: u8) -> Self {
        match code {
            1 => Self::BadCredentials,
            2 => Self::MfaRequired,
            3 => Self::Locked,
            4 => Self::TicketExpired,
            5 => Self::NotAuthorized,
            6 => Self::OutsideWindow,
            7 => Self::AuditUnavailable,
            8 => Self::MalformedHello,
            9 => Self::UnknownAsset,
            other => Self::Unknown(other),
        }
    }

    /// The wire byte.
    pub const fn code(self) -> u8 {
        match self {
            Self::BadCredentials => 1,
            Self::MfaRequired => 2,
            Self::Locked => 3,
            Self::TicketExpired => 4,
            Self::NotAuthorized => 5,
            Self::OutsideWindow => 6,
            Self::AuditUnavailable => 7,
            Self::MalformedHello => 8,
            Self::UnknownAsset => 9,
            Self::Unknown(code) => code,
        }
    }

    /// The name in logs, counters and the client's message.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadCredentials => "bad_credentials",
            Self::MfaRequired => "mfa_required",
            Self::Locked => "locked",
            Self::TicketExpired => "ticket_expired",
            Self::NotAuthorized => "not_authorized",
            Self::OutsideWindow => "outside_window",
            Self::AuditUnavailable => "audit_unavailable",
            Self::MalformedHello => "malformed_hello",
            Self::UnknownAsset => "unknown_asset",
            Self::Unknown(_) => "unknown",
        }
    }
}

impl From<u8> for Reason {
    fn from(code: u8) -> Self {
        Self::from_code(code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(code) => write!(f, "unknown ({code})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Why bytes are not a valid frame or message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The first two bytes are not `"AG"`.
    BadMagic,
    /// A version other than 1.
    BadVersion(u8),
    /// A kind other than 1, 2 or 3.
    UnknownKind(u8),
    /// The header declares more than [`MAX_PAYLOAD`] bytes.
    PayloadTooLong(usize),
    /// The frame is shorter than its header says.
    Truncated,
    /// The frame is longer than its header says.
    TrailingBytes,
    /// A field's header or value runs past the end of the payload.
    TruncatedField,
    /// A tag that this kind does not have.
    UnknownTag {
        /// The frame's kind.
        kind: Kind,
        /// The tag.
        tag: u8,
    },
    /// A tag that appears twice.
    DuplicateTag(u8),
    /// A value whose length is out of the tag's range.
    BadLength {
        /// The tag.
        tag: u8,
        /// The value's length.
        len: usize,
    },
    /// A text value that is not UTF-8 or holds a control character.
    BadText(u8),
    /// A TOTP code that is not six ASCII digits.
    BadTotp,
    /// A required field is absent.
    MissingField(u8),
    /// A hello with both credentials and a ticket.
    CredentialsAndTicket,
    /// A hello with neither credentials nor a ticket.
    NoAuth,
    /// A hello with an asset but no service, or a service but no asset.
    IncompleteTarget,
    /// A message that would not parse back as itself (check before emit).
    NotCanonical,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => write!(f, "not an access hello (magic is not \"AG\")"),
            Self::BadVersion(v) => write!(f, "hello version {v} (this gate speaks 1)"),
            Self::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            Self::PayloadTooLong(n) => {
                write!(f, "payload of {n} bytes (at most {MAX_PAYLOAD})")
            }
            Self::Truncated => write!(f, "frame shorter than its header says"),
            Self::TrailingBytes => write!(f, "frame longer than its header says"),
            Self::TruncatedField => write!(f, "field runs past the end of the payload"),
            Self::UnknownTag { kind, tag } => write!(f, "tag {tag} is not a {kind:?} field"),
            Self::DuplicateTag(t) => write!(f, "tag {t} appears twice"),
            Self::BadLength { tag, len } => write!(f, "tag {tag}: length {len} out of range"),
            Self::BadText(t) => write!(f, "tag {t}: not UTF-8 text without control characters"),
            Self::BadTotp => write!(f, "TOTP code is not {TOTP_LEN} ASCII digits"),
            Self::MissingField(t) => write!(f, "required tag {t} is missing"),
            Self::CredentialsAndTicket => write!(f, "hello carries both credentials and a ticket"),
            Self::NoAuth => write!(f, "hello carries neither credentials nor a ticket"),
            Self::IncompleteTarget => write!(f, "hello names an asset or a service but not both"),
            Self::NotCanonical => write!(f, "message does not survive emit and parse"),
        }
    }
}

impl std::error::Error for Error {}

/// How far a receive buffer is from holding one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The first `n` bytes are one frame (more may follow: the OT stream).
    Complete(usize),
    /// At least `n` more bytes are needed (never 0).
    NeedMore(usize),
    /// The header is invalid: no amount of further bytes makes a frame.
    Reject(Error),
}

/// How the client proves who it is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth<'a> {
    /// Password and TOTP. `totp` is `""` when the client sent no code (the
    /// gate answers `mfa_required` if the password was right).
    Credentials { user: &'a str, password: &'a [u8], totp: &'a str },
    /// A ticket from an earlier login.
    Ticket(&'a [u8; TICKET_LEN]),
}

/// Secrets stay out of logs: `Debug` shows the user name only.
impl fmt::Debug for Auth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Credentials { user, totp, .. } => f
                .debug_struct("Credentials")
                .field("user", user)
                .field("password", &"<redacted>")
                .field("totp", &if totp.is_empty() { "" } else { "<redacted>" })
                .finish(),
            Self::Ticket(_) => f.write_str("Ticket(<redacted>)"),
        }
    }
}

/// One access-protocol message, borrowing from its frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// Client to gate. `target` is `(asset, service)` to connect, `None` to
    /// log in and receive a ticket.
    Hello { auth: Auth<'a>, target: Option<(&'a str, &'a str)> },
    /// Gate to client: admitted.
    Accept { session_id: u64, expires_unix: u64, granted: &'a str, ticket: Option<&'a [u8; TICKET_LEN]> },
    /// Gate to client: refused.
    Refuse { reason: Reason, retry_after: Option<u32> },
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hello { auth, target } => {
                f.debug_struct("Hello").field("auth", auth).field("target", target).finish()
            }
            Self::Accept { session_id, expires_unix, granted, ticket } => f
                .debug_struct("Accept")
                .field("session_id", session_id)
                .field("expires_unix", expires_unix)
                .field("granted", granted)
                .field("ticket", &ticket.map(|_| "<redacted>"))
                .finish(),
            Self::Refuse { reason, retry_after } => {
                f.debug_struct("Refuse").field("reason", reason).field("retry_after", retry_after).finish()
            }
        }
    }
}

/// Reads the header at the front of a receive buffer.
///
/// Only the first [`HEADER_LEN`] bytes are looked at, and each is checked
/// as soon as it is there, so a stream that is not a hello is rejected from
/// its first wrong byte and an oversized frame from its header.
pub fn frame_len(buf: &[u8]) -> Framing {
    match header(buf) {
        Err(e) => Framing::Reject(e),
        Ok(None) => Framing::NeedMore(HEADER_LEN - buf.len()),
        Ok(Some((_, payload_len))) => {
            let total = HEADER_LEN + payload_len;
            if buf.len() >= total {
                Framing::Complete(total)
            } else {
                Framing::NeedMore(total - buf.len())
            }
        }
    }
}

/// The header's kind and payload length, `Ok(None)` while it is incomplete.
fn header(buf: &[u8]) -> Result<Option<(Kind, usize)>, Error> {
    if buf.iter().zip(MAGIC).any(|(&got, want)| got != want) {
        return Err(Error::BadMagic);
    }
    if let Some(&v) = buf.get(field::VERSION) {
        if v != VERSION {
            return Err(Error::BadVersion(v));
        }
    }
    let kind = match buf.get(field::KIND) {
        Some(&k) => Kind::from_code(k).ok_or(Error::UnknownKind(k))?,
        None => return Ok(None),
    };
    match buf.get(field::LENGTH) {
        Some(&[hi, lo]) => {
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if len > MAX_PAYLOAD {
                Err(Error::PayloadTooLong(len))
            } else {
                Ok(Some((kind, len)))
            }
        }
        _ => Ok(None),
    }
}

/// The TLV fields of a payload, in wire order.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u8, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = self.rest.split_first_chunk::<TLV_HEADER_LEN>().and_then(|(&[tag, hi, lo], after)| {
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            let value = after.get(..len)?;
            let rest = after.get(len..)?;
            Some((tag, value, rest))
        });
        match parsed {
            Some((tag, value, rest)) => {
                self.rest = rest;
                Some(Ok((tag, value)))
            }
            None => {
                self.rest = &[];
                Some(Err(Error::TruncatedField))
            }
        }
    }
}

/// Fills `slot`, refusing a second occurrence.
fn put<'a>(slot: &mut Option<&'a [u8]>, tag: u8, value: &'a [u8]) -> Result<(), Error> {
    match slot.replace(value) {
        Some(_) => Err(Error::DuplicateTag(tag)),
        None => Ok(()),
    }
}

fn text(tag: u8, value: &[u8], min: usize, max: usize) -> Result<&str, Error> {
    if !(min..=max).contains(&value.len()) {
        return Err(Error::BadLength { tag, len: value.len() });
    }
    let s = core::str::from_utf8(value).map_err(|_| Error::BadText(tag))?;
    if s.chars().any(|c| c.is_control() || rewrites_a_line(c)) {
        return Err(Error::BadText(tag));
    }
    Ok(s)
}

/// Characters that break or reorder a log line without being `Cc`: line and
/// paragraph separators, bidi embeddings, overrides and isolates, and the
/// invisible zero-width ones.
fn rewrites_a_line(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

fn fixed<const N: usize>(tag: u8, value: &[u8]) -> Result<&[u8; N], Error> {
    <&[u8; N]>::try_from(value).map_err(|_| Error::BadLength { tag, len: value.len() })
}

fn totp(value: &[u8]) -> Result<&str, Error> {
    if value.len() != TOTP_LEN || !value.iter().all(u8::is_ascii_digit) {
        return Err(Error::BadTotp);
    }
    core::str::from_utf8(value).map_err(|_| Error::BadTotp)
}

impl<'a> Message<'a> {
    /// Parses exactly one complete frame (as delimited by [`frame_len`]).
    ///
    /// # Errors
    /// The frame is malformed; see [`Error`]. Never panics.
    pub fn parse(frame: &'a [u8]) -> Result<Self, Error> {
        let (kind, payload_len) = header(frame)?.ok_or(Error::Truncated)?;
        let total = HEADER_LEN + payload_len;
        if frame.len() < total {
            return Err(Error::Truncated);
        }
        if frame.len() > total {
            return Err(Error::TrailingBytes);
        }
        let payload = frame.get(HEADER_LEN..).ok_or(Error::Truncated)?;
        let fields = Fields { rest: payload };
        match kind {
            Kind::Hello => Self::parse_hello(fields),
            Kind::Accept => Self::parse_accept(fields),
            Kind::Refuse => Self::parse_refuse(fields),
        }
    }

    fn parse_hello(fields: Fields<'a>) -> Result<Self, Error> {
        let (mut user, mut password, mut code, mut ticket, mut asset, mut service) =
            (None, None, None, None, None, None);
        for f in fields {
            let (t, v) = f?;
            let slot = match t {
                tag::USER => &mut user,
                tag::PASSWORD => &mut password,
                tag::TOTP => &mut code,
                tag::TICKET => &mut ticket,
                tag::ASSET => &mut asset,
                tag::SERVICE => &mut service,
                _ => return Err(Error::UnknownTag { kind: Kind::Hello, tag: t }),
            };
            put(slot, t, v)?;
        }
        let user = user.map(|v| text(tag::USER, v, 1, MAX_USER_LEN)).transpose()?;
        let password = password
            .map(|v| {
                if (1..=MAX_PASSWORD_LEN).contains(&v.len()) {
                    Ok(v)
                } else {
                    Err(Error::BadLength { tag: tag::PASSWORD, len: v.len() })
                }
            })
            .transpose()?;
        let code = code.map(totp).transpose()?;
        let ticket = ticket.map(|v| fixed::<TICKET_LEN>(tag::TICKET, v)).transpose()?;
        let asset = asset.map(|v| text(tag::ASSET, v, 1, MAX_ASSET_LEN)).transpose()?;
        let service = service.map(|v| text(tag::SERVICE, v, 1, MAX_SERVICE_LEN)).transpose()?;

        let has_credentials = user.is_some() || password.is_some() || code.is_some();
        let auth = match (user, password, ticket) {
            (_, _, Some(_)) if has_credentials => return Err(Error::CredentialsAndTicket),
            (_, _, Some(t)) => Auth::Ticket(t),
            (Some(user), password, None) => {
                Auth::Credentials { user, password: password.unwrap_or(b""), totp: code.unwrap_or("") }
            }
            (None, None, None) if !has_credentials => return Err(Error::NoAuth),
            (None, _, None) => return Err(Error::MissingField(tag::USER)),
        };
        let target = match (asset, service) {
            (Some(a), Some(s)) => Some((a, s)),
            (None, None) => None,
            _ => return Err(Error::IncompleteTarget),
        };
        Ok(Self::Hello { auth, target })
    }

    fn parse_accept(fields: Fields<'a>) -> Result<Self, Error> {
        let (mut session_id, mut expires, mut granted, mut ticket) = (None, None, None, None);
        for f in fields {
            let (t, v) = f?;
            let slot = match t {
                tag::SESSION_ID => &mut session_id,
                tag::EXPIRES => &mut expires,
                tag::GRANTED => &mut granted,
                tag::NEW_TICKET => &mut ticket,
                _ => return Err(Error::UnknownTag { kind: Kind::Accept, tag: t }),
            };
            put(slot, t, v)?;
        }
        let session_id = session_id.ok_or(Error::MissingField(tag::SESSION_ID))?;
        let expires = expires.ok_or(Error::MissingField(tag::EXPIRES))?;
        let granted = granted.ok_or(Error::MissingField(tag::GRANTED))?;
        Ok(Self::Accept {
            session_id: u64::from_be_bytes(*fixed::<8>(tag::SESSION_ID, session_id)?),
            expires_unix: u64::from_be_bytes(*fixed::<8>(tag::EXPIRES, expires)?),
            granted: text(tag::GRANTED, granted, 0, MAX_GRANTED_LEN)?,
            ticket: ticket.map(|v| fixed::<TICKET_LEN>(tag::NEW_TICKET, v)).transpose()?,
        })
    }

    fn parse_refuse(fields: Fields<'a>) -> Result<Self, Error> {
        let (mut reason, mut retry_after) = (None, None);
        for f in fields {
            let (t, v) = f?;
            let slot = match t {
                tag::REASON => &mut reason,
                tag::RETRY_AFTER => &mut retry_after,
                _ => return Err(Error::UnknownTag { kind: Kind::Refuse, tag: t }),
            };
            put(slot, t, v)?;
        }
        let reason = reason.ok_or(Error::MissingField(tag::REASON))?;
        let [code] = *fixed::<1>(tag::REASON, reason)?;
        Ok(Self::Refuse {
            reason: Reason::from_code(code),
            retry_after: retry_after
                .map(|v| fixed::<4>(tag::RETRY_AFTER, v).map(|b| u32::from_be_bytes(*b)))
                .transpose()?,
        })
    }

    /// The frame's kind.
    pub const fn kind(&self) -> Kind {
        match self {
            Self::Hello { .. } => Kind::Hello,
            Self::Accept { .. } => Kind::Accept,
            Self::Refuse { .. } => Kind::Refuse,
        }
    }

    /// Calls `f(tag, value)` for each field, in ascending tag order.
    fn for_each_field(&self, mut f: impl FnMut(u8, &[u8])) {
        match *self {
            Self::Hello { auth, target } => {
                match auth {
                    Auth::Credentials { user, password, totp } => {
                        f(tag::USER, user.as_bytes());
                        if !password.is_empty() {
                            f(tag::PASSWORD, password);
                        }
                        if !totp.is_empty() {
                            f(tag::TOTP, totp.as_bytes());
                        }
                    }
                    Auth::Ticket(t) => f(tag::TICKET, t),
                }
                if let Some((asset, service)) = target {
                    f(tag::ASSET, asset.as_bytes());
                    f(tag::SERVICE, service.as_bytes());
                }
            }
            Self::Accept { session_id, expires_unix, granted, ticket } => {
                f(tag::SESSION_ID, &session_id.to_be_bytes());
                f(tag::EXPIRES, &expires_unix.to_be_bytes());
                f(tag::GRANTED, granted.as_bytes());
                if let Some(t) = ticket {
                    f(tag::NEW_TICKET, t);
                }
            }
            Self::Refuse { reason, retry_after } => {
                f(tag::REASON, &[reason.code()]);
                if let Some(secs) = retry_after {
                    f(tag::RETRY_AFTER, &secs.to_be_bytes());
                }
            }
        }
    }

    /// The length of the emitted frame, header included.
    pub fn buffer_len(&self) -> usize {
        let mut len = HEADER_LEN;
        self.for_each_field(|_, v| len += TLV_HEADER_LEN + v.len());
        len
    }

    /// Writes the frame into `buf[..buffer_len()]` and returns that length.
    ///
    /// A message built by the caller (not parsed) should pass
    /// [`Message::check`] first: emit writes lengths as given.
    ///
    /// # Panics
    /// If `buf` is shorter than [`Message::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let len = self.buffer_len();
        let payload_len = u16::try_from(len - HEADER_LEN).unwrap_or(u16::MAX);
        let frame = &mut buf[..len];
        frame[field::MAGIC].copy_from_slice(&MAGIC);
        frame[field::VERSION] = VERSION;
        frame[field::KIND] = self.kind().code();
        frame[field::LENGTH].copy_from_slice(&payload_len.to_be_bytes());
        let mut at = HEADER_LEN;
        self.for_each_field(|t, v| {
            let vlen = u16::try_from(v.len()).unwrap_or(u16::MAX);
            frame[at] = t;
            frame[at + 1..at + TLV_HEADER_LEN].copy_from_slice(&vlen.to_be_bytes());
            at += TLV_HEADER_LEN;
            frame[at..at + v.len()].copy_from_slice(v);
            at += v.len();
        });
        len
    }

    /// Whether the message, emitted, is a valid frame that parses back as
    /// itself (all lengths and shapes within the limits `parse` enforces).
    ///
    /// # Errors
    /// The first limit the message breaks.
    pub fn check(&self) -> Result<(), Error> {
        let len = self.buffer_len();
        if len > MAX_FRAME_LEN {
            return Err(Error::PayloadTooLong(len - HEADER_LEN));
        }
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = self.emit(&mut buf);
        let frame = buf.get(..n).ok_or(Error::Truncated)?;
        if Message::parse(frame)? == *self {
            Ok(())
        } else {
            Err(Error::NotCanonical)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Login: alice, password "s3cret!!", code 123456, no target.
    #[rustfmt::skip]
    const HELLO_LOGIN: [u8; 34] = [
        0x41, 0x47,                                         // magic "AG"
        0x01,                                               // version 1
        0x01,                                               // kind 1 = Hello
        0x00, 0x1c,                                         // payload length 28
        0x01, 0x00, 0x05, b'a', b'l', b'i', b'c', b'e',     // tag 1 user, len 5, "alice"
        0x02, 0x00, 0x08,                                   // tag 2 password, len 8
        b's', b'3', b'c', b'r', b'e', b't', b'!', b'!',     //   "s3cret!!"
        0x03, 0x00, 0x06,                                   // tag 3 totp, len 6
        b'1', b'2', b'3', b'4', b'5', b'6',                 //   "123456"
    ];

    /// Connect with a ticket (32 x 0xa5) to plc-7 / modbus.
    #[rustfmt::skip]
    const HELLO_CONNECT: [u8; 58] = [
        0x41, 0x47,                                         // magic "AG"
        0x01,                                               // version 1
        0x01,                                               // kind 1 = Hello
        0x00, 0x34,                                         // payload length 52
        0x04, 0x00, 0x20,                                   // tag 4 ticket, len 32
        0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5,     //   ticket bytes 0..8
        0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5,     //   ticket bytes 8..16
        0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5,     //   ticket bytes 16..24
        0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5,     //   ticket bytes 24..32
        0x05, 0x00, 0x05, b'p', b'l', b'c', b'-', b'7',     // tag 5 asset, len 5, "plc-7"
        0x06, 0x00, 0x06,                                   // tag 6 service, len 6
        b'm', b'o', b'd', b'b', b'u', b's',                 //   "modbus"
    ];

    /// Accept: session 0x0102030405060708, expires 1_700_000_000, "read,write".
    #[rustfmt::skip]
    const ACCEPT: [u8; 41] = [
        0x41, 0x47,                                         // magic "AG"
        0x01,                                               // version 1
        0x02,                                               // kind 2 = Accept
        0x00, 0x23,                                         // payload length 35
        0x0a, 0x00, 0x08,                                   // tag 10 session id, len 8
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,     //   0x0102030405060708
        0x0b, 0x00, 0x08,                                   // tag 11 expires, len 8
        0x00, 0x00, 0x00, 0x00, 0x65, 0x53, 0xf1, 0x00,     //   1_700_000_000
        0x0c, 0x00, 0x0a,                                   // tag 12 granted, len 10
        b'r', b'e', b'a', b'd', b',',                       //   "read,
        b'w', b'r', b'i', b't', b'e',                       //    write"
    ];

    /// Refuse: locked, retry after 30 s.
    #[rustfmt::skip]
    const REFUSE: [u8; 17] = [
        0x41, 0x47,                                         // magic "AG"
        0x01,                                               // version 1
        0x03,                                               // kind 3 = Refuse
        0x00, 0x0b,                                         // payload length 11
        0x14, 0x00, 0x01, 0x03,                             // tag 20 reason, len 1, 3 = locked
        0x15, 0x00, 0x04, 0x00, 0x00, 0x00, 0x1e,           // tag 21 retry after, len 4, 30
    ];

    const TICKET: [u8; TICKET_LEN] = [0xa5; TICKET_LEN];
    const NEW_TICKET: [u8; TICKET_LEN] = [0x5a; TICKET_LEN];

    fn fixtures() -> [&'static [u8]; 4] {
        [&HELLO_LOGIN, &HELLO_CONNECT, &ACCEPT, &REFUSE]
    }

    /// Every message shape the protocol has.
    fn shapes() -> Vec<Message<'static>> {
        let creds = Auth::Credentials { user: "alice", password: b"s3cret!!", totp: "123456" };
        let no_code = Auth::Credentials { user: "bob", password: b"\x00\xffbinary", totp: "" };
        // A client-certificate login: no password field at all.
        let cert_login = Auth::Credentials { user: "carol", password: b"", totp: "654321" };
        let ticket = Auth::Ticket(&TICKET);
        let mut v = Vec::new();
        for auth in [creds, no_code, cert_login, ticket] {
            v.push(Message::Hello { auth, target: None });
            v.push(Message::Hello { auth, target: Some(("plc-7", "modbus")) });
        }
        for ticket in [None, Some(&NEW_TICKET)] {
            v.push(Message::Accept {
                session_id: u64::MAX,
                expires_unix: 1_700_000_000,
                granted: "read,write",
                ticket,
            });
        }
        v.push(Message::Accept { session_id: 0, expires_unix: 0, granted: "", ticket: Some(&NEW_TICKET) });
        for code in [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 200] {
            for retry_after in [None, Some(900)] {
                v.push(Message::Refuse { reason: Reason::from_code(code), retry_after });
            }
        }
        v
    }

    fn emit_vec(m: &Message<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; m.buffer_len()];
        assert_eq!(m.emit(&mut buf), buf.len());
        buf
    }

    #[test]
    fn decodes_fixtures() {
        assert_eq!(
            Message::parse(&HELLO_LOGIN),
            Ok(Message::Hello {
                auth: Auth::Credentials { user: "alice", password: b"s3cret!!", totp: "123456" },
                target: None,
            })
        );
        assert_eq!(
            Message::parse(&HELLO_CONNECT),
            Ok(Message::Hello { auth: Auth::Ticket(&TICKET), target: Some(("plc-7", "modbus")) })
        );
        assert_eq!(
            Message::parse(&ACCEPT),
            Ok(Message::Accept {
                session_id: 0x0102_0304_0506_0708,
                expires_unix: 1_700_000_000,
                granted: "read,write",
                ticket: None,
            })
        );
        assert_eq!(Message::parse(&REFUSE), Ok(Message::Refuse { reason: Reason::Locked, retry_after: Some(30) }));
    }

    #[test]
    fn encodes_fixtures() {
        for f in fixtures() {
            let m = Message::parse(f).unwrap();
            assert_eq!(m.buffer_len(), f.len());
            assert_eq!(emit_vec(&m), f);
        }
    }

    #[test]
    fn every_shape_round_trips() {
        for m in shapes() {
            let bytes = emit_vec(&m);
            assert_eq!(frame_len(&bytes), Framing::Complete(bytes.len()), "{m:?}");
            assert_eq!(Message::parse(&bytes), Ok(m), "{m:?}");
            assert_eq!(m.check(), Ok(()), "{m:?}");
        }
    }

    #[test]
    fn every_prefix_needs_more_then_completes() {
        for f in fixtures() {
            for n in 0..f.len() {
                match frame_len(&f[..n]) {
                    Framing::NeedMore(k) => assert!(k > 0 && n + k <= f.len(), "{n}: {k}"),
                    other => panic!("prefix {n} of {}: {other:?}", f.len()),
                }
                assert!(Message::parse(&f[..n]).is_err());
            }
            assert_eq!(frame_len(f), Framing::Complete(f.len()));
            // The OT stream may follow in the same read.
            let mut more = f.to_vec();
            more.extend_from_slice(&[0x00, 0x01, 0x00, 0x00, 0x00, 0x06]);
            assert_eq!(frame_len(&more), Framing::Complete(f.len()));
            assert_eq!(Message::parse(&more), Err(Error::TrailingBytes));
        }
    }

    /// A reader that appends segments to a fixed buffer until a frame is in.
    fn reassemble<'b>(segments: &[&[u8]], buf: &'b mut [u8]) -> Option<(usize, &'b [u8])> {
        let mut have = 0;
        for seg in segments {
            buf[have..have + seg.len()].copy_from_slice(seg);
            have += seg.len();
            match frame_len(&buf[..have]) {
                Framing::Complete(n) => return Some((n, &buf[..have])),
                Framing::NeedMore(_) => {}
                Framing::Reject(e) => panic!("rejected: {e}"),
            }
        }
        None
    }

    #[test]
    fn split_at_every_offset() {
        // The hello followed by the first Modbus request, as one stream.
        let mut stream = HELLO_CONNECT.to_vec();
        let modbus = [0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x00, 0x00, 0x00, 0x0a];
        stream.extend_from_slice(&modbus);
        for cut in 0..=stream.len() {
            let mut buf = [0u8; MAX_FRAME_LEN + 64];
            let (a, b) = stream.split_at(cut);
            let (n, data) = reassemble(&[a, b], &mut buf).expect("frame completes");
            assert_eq!(n, HELLO_CONNECT.len());
            assert_eq!(Message::parse(&data[..n]), Message::parse(&HELLO_CONNECT), "cut {cut}");
            assert_eq!(data, &stream[..data.len()], "cut {cut}: bytes after the frame kept");
        }
        // Two cuts: header, payload and trailing stream in three reads.
        for i in 0..HELLO_LOGIN.len() {
            for j in i..=HELLO_LOGIN.len() {
                let mut buf = [0u8; MAX_FRAME_LEN];
                let segs = [&HELLO_LOGIN[..i], &HELLO_LOGIN[i..j], &HELLO_LOGIN[j..]];
                let (n, _) = reassemble(&segs, &mut buf).expect("frame completes");
                assert_eq!(n, HELLO_LOGIN.len());
            }
        }
    }

    fn with_payload(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b'A', b'G', VERSION, kind];
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
        v.extend_from_slice(value);
        v
    }

    fn hello(fields: &[Vec<u8>]) -> Vec<u8> {
        with_payload(1, &fields.concat())
    }

    #[test]
    fn malformed_frames_are_rejected() {
        let user = tlv(tag::USER, b"alice");
        let pass = tlv(tag::PASSWORD, b"pw");
        let code = tlv(tag::TOTP, b"123456");
        let ticket = tlv(tag::TICKET, &TICKET);
        let asset = tlv(tag::ASSET, b"plc-7");
        let service = tlv(tag::SERVICE, b"modbus");

        // Header errors, from the header alone.
        let mut bad_magic = HELLO_LOGIN;
        bad_magic[1] = b'H';
        assert_eq!(frame_len(&bad_magic[..2]), Framing::Reject(Error::BadMagic));
        assert_eq!(frame_len(b"G"), Framing::Reject(Error::BadMagic));
        assert_eq!(frame_len(b"GET / HTTP/1.1\r\n"), Framing::Reject(Error::BadMagic));
        assert_eq!(Message::parse(&bad_magic), Err(Error::BadMagic));
        let mut v2 = HELLO_LOGIN;
        v2[2] = 2;
        assert_eq!(frame_len(&v2[..3]), Framing::Reject(Error::BadVersion(2)));
        assert_eq!(Message::parse(&v2), Err(Error::BadVersion(2)));
        let mut kind9 = HELLO_LOGIN;
        kind9[3] = 9;
        assert_eq!(frame_len(&kind9[..4]), Framing::Reject(Error::UnknownKind(9)));
        // Length 1025: rejected from the six header bytes, before any payload.
        let big = [b'A', b'G', 1, 1, 0x04, 0x01];
        assert_eq!(frame_len(&big), Framing::Reject(Error::PayloadTooLong(1025)));
        assert_eq!(Message::parse(&big), Err(Error::PayloadTooLong(1025)));
        let max = with_payload(1, &[0u8; MAX_PAYLOAD]);
        assert_eq!(frame_len(&max), Framing::Complete(MAX_FRAME_LEN));

        // Framing errors.
        assert_eq!(Message::parse(&HELLO_LOGIN[..20]), Err(Error::Truncated));
        assert_eq!(Message::parse(&HELLO_LOGIN[..4]), Err(Error::Truncated));

        let cases: Vec<(&str, Vec<u8>, Error)> = vec![
            (
                "duplicate tag",
                hello(&[user.clone(), user.clone(), pass.clone(), code.clone()]),
                Error::DuplicateTag(tag::USER),
            ),
            (
                "unknown tag",
                hello(&[user.clone(), pass.clone(), tlv(7, b"x")]),
                Error::UnknownTag { kind: Kind::Hello, tag: 7 },
            ),
            (
                "accept tag in a hello",
                hello(&[user.clone(), pass.clone(), tlv(tag::GRANTED, b"read")]),
                Error::UnknownTag { kind: Kind::Hello, tag: tag::GRANTED },
            ),
            ("truncated TLV header", hello(&[user.clone(), vec![tag::PASSWORD, 0x00]]), Error::TruncatedField),
            (
                "truncated TLV value",
                hello(&[user.clone(), vec![tag::PASSWORD, 0x00, 0x09, b'a', b'b']]),
                Error::TruncatedField,
            ),
            ("totp 12a456", hello(&[user.clone(), pass.clone(), tlv(tag::TOTP, b"12a456")]), Error::BadTotp),
            ("totp of 5 digits", hello(&[user.clone(), pass.clone(), tlv(tag::TOTP, b"12345")]), Error::BadTotp),
            (
                "ticket of 31 bytes",
                hello(&[tlv(tag::TICKET, &[0xa5; 31])]),
                Error::BadLength { tag: tag::TICKET, len: 31 },
            ),
            (
                "credentials and ticket",
                hello(&[user.clone(), pass.clone(), code.clone(), ticket.clone()]),
                Error::CredentialsAndTicket,
            ),
            ("totp and ticket", hello(&[code.clone(), ticket.clone()]), Error::CredentialsAndTicket),
            ("asset without service", hello(&[ticket.clone(), asset.clone()]), Error::IncompleteTarget),
            ("service without asset", hello(&[ticket.clone(), service.clone()]), Error::IncompleteTarget),
            ("no auth", hello(&[asset.clone(), service.clone()]), Error::NoAuth),
            ("empty hello", hello(&[]), Error::NoAuth),
            ("password without user", hello(std::slice::from_ref(&pass)), Error::MissingField(tag::USER)),
            (
                "empty password field (leave it out for a certificate login)",
                hello(&[user.clone(), tlv(tag::PASSWORD, b"")]),
                Error::BadLength { tag: tag::PASSWORD, len: 0 },
            ),
            ("empty user", hello(&[tlv(tag::USER, b""), pass.clone()]), Error::BadLength { tag: tag::USER, len: 0 }),
            (
                "user of 65 bytes",
                hello(&[tlv(tag::USER, &[b'a'; 65]), pass.clone()]),
                Error::BadLength { tag: tag::USER, len: 65 },
            ),
            ("user not UTF-8", hello(&[tlv(tag::USER, b"al\xffce"), pass.clone()]), Error::BadText(tag::USER)),
            (
                "user with a newline (log injection)",
                hello(&[tlv(tag::USER, b"alice\nok"), pass.clone()]),
                Error::BadText(tag::USER),
            ),
            // Not `Cc`, but they break or reorder a log line all the same
            // (found by a review).
            (
                "user with a line separator",
                hello(&[tlv(tag::USER, "alice\u{2028}auth: root ok".as_bytes()), pass.clone()]),
                Error::BadText(tag::USER),
            ),
            (
                "user with a bidi override",
                hello(&[tlv(tag::USER, "\u{202e}ecila".as_bytes()), pass.clone()]),
                Error::BadText(tag::USER),
            ),
            (
                "user with a bidi isolate",
                hello(&[tlv(tag::USER, "al\u{2066}ice".as_bytes()), pass.clone()]),
                Error::BadText(tag::USER),
            ),
            (
                "user with a zero-width space",
                hello(&[tlv(tag::USER, "ali\u{200b}ce".as_bytes()), pass.clone()]),
                Error::BadText(tag::USER),
            ),
            (
                "password of 257 bytes",
                hello(&[user.clone(), tlv(tag::PASSWORD, &[b'x'; 257])]),
                Error::BadLength { tag: tag::PASSWORD, len: 257 },
            ),
            (
                "service of 33 bytes",
                hello(&[ticket.clone(), asset.clone(), tlv(tag::SERVICE, &[b's'; 33])]),
                Error::BadLength { tag: tag::SERVICE, len: 33 },
            ),
            (
                "accept without granted",
                with_payload(2, &[tlv(tag::SESSION_ID, &[0; 8]), tlv(tag::EXPIRES, &[0; 8])].concat()),
                Error::MissingField(tag::GRANTED),
            ),
            (
                "accept with a 4-byte session id",
                with_payload(
                    2,
                    &[tlv(tag::SESSION_ID, &[0; 4]), tlv(tag::EXPIRES, &[0; 8]), tlv(tag::GRANTED, b"")].concat(),
                ),
                Error::BadLength { tag: tag::SESSION_ID, len: 4 },
            ),
            (
                "granted of 257 bytes",
                with_payload(
                    2,
                    &[tlv(tag::SESSION_ID, &[0; 8]), tlv(tag::EXPIRES, &[0; 8]), tlv(tag::GRANTED, &[b'r'; 257])]
                        .concat(),
                ),
                Error::BadLength { tag: tag::GRANTED, len: 257 },
            ),
            (
                "refuse without reason",
                with_payload(3, &tlv(tag::RETRY_AFTER, &[0, 0, 0, 1])),
                Error::MissingField(tag::REASON),
            ),
            (
                "refuse with a 2-byte retry",
                with_payload(3, &[tlv(tag::REASON, &[3]), tlv(tag::RETRY_AFTER, &[0, 1])].concat()),
                Error::BadLength { tag: tag::RETRY_AFTER, len: 2 },
            ),
            (
                "hello tag in a refuse",
                with_payload(3, &[tlv(tag::REASON, &[3]), user.clone()].concat()),
                Error::UnknownTag { kind: Kind::Refuse, tag: tag::USER },
            ),
        ];
        for (what, frame, want) in cases {
            assert_eq!(frame_len(&frame), Framing::Complete(frame.len()), "{what}: framing");
            assert_eq!(Message::parse(&frame), Err(want), "{what}");
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn tags_in_any_order_parse_and_emit_canonically() {
        let f = hello(&[
            tlv(tag::SERVICE, b"modbus"),
            tlv(tag::TOTP, b"000000"),
            tlv(tag::ASSET, b"plc-7"),
            tlv(tag::PASSWORD, b"pw"),
            tlv(tag::USER, b"alice"),
        ]);
        let m = Message::parse(&f).unwrap();
        let canonical = hello(&[
            tlv(tag::USER, b"alice"),
            tlv(tag::PASSWORD, b"pw"),
            tlv(tag::TOTP, b"000000"),
            tlv(tag::ASSET, b"plc-7"),
            tlv(tag::SERVICE, b"modbus"),
        ]);
        assert_eq!(emit_vec(&m), canonical);
    }

    #[test]
    fn check_catches_what_parse_would_refuse() {
        let long = "x".repeat(300);
        let bad = [
            Message::Accept { session_id: 1, expires_unix: 2, granted: &long, ticket: None },
            Message::Hello { auth: Auth::Credentials { user: "alice", password: b"pw", totp: "12a456" }, target: None },
            Message::Hello { auth: Auth::Ticket(&TICKET), target: Some(("", "modbus")) },
            Message::Refuse { reason: Reason::Unknown(1), retry_after: None },
        ];
        for m in bad {
            assert!(m.check().is_err(), "{m:?}");
        }
        let huge = vec![0u8; 70_000];
        let m = Message::Hello { auth: Auth::Credentials { user: "alice", password: &huge, totp: "" }, target: None };
        assert!(matches!(m.check(), Err(Error::PayloadTooLong(_))));
    }

    #[test]
    fn reasons_have_names_and_codes() {
        let names = [
            "bad_credentials",
            "mfa_required",
            "locked",
            "ticket_expired",
            "not_authorized",
            "outside_window",
            "audit_unavailable",
            "malformed_hello",
            "unknown_asset",
        ];
        for (i, name) in names.iter().enumerate() {
            let code = i as u8 + 1;
            let r = Reason::from_code(code);
            assert_eq!(r.as_str(), *name);
            assert_eq!(r.code(), code);
            assert_eq!(Reason::from(code), r);
        }
        assert_eq!(Reason::from_code(0), Reason::Unknown(0));
        assert_eq!(Reason::from_code(77).code(), 77);
        assert_eq!(Reason::Unknown(77).to_string(), "unknown (77)");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let m = Message::parse(&HELLO_LOGIN).unwrap();
        let s = format!("{m:?}");
        assert!(s.contains("alice"), "{s}");
        assert!(!s.contains("s3cret") && !s.contains("123456"), "{s}");
        let m = Message::parse(&HELLO_CONNECT).unwrap();
        assert!(!format!("{m:?}").contains("165"), "ticket bytes shown");
    }

    fn tags_ascending(frame: &[u8]) -> bool {
        let mut last = None;
        for f in (Fields { rest: &frame[HEADER_LEN..] }) {
            let Ok((t, _)) = f else { return false };
            if last.is_some_and(|l| l >= t) {
                return false;
            }
            last = Some(t);
        }
        true
    }

    /// What the fuzz target checks, as a deterministic unit test.
    fn exercise(data: &[u8]) -> bool {
        let n = match frame_len(data) {
            Framing::Complete(n) => n,
            Framing::NeedMore(k) => {
                assert!(k > 0);
                return false;
            }
            Framing::Reject(_) => return false,
        };
        let _ = Message::parse(data);
        let Ok(m) = Message::parse(&data[..n]) else {
            return false;
        };
        let len = m.buffer_len();
        assert_eq!(len, n, "{m:?}");
        let mut out = [0u8; MAX_FRAME_LEN];
        assert_eq!(m.emit(&mut out), len);
        assert_eq!(Message::parse(&out[..len]), Ok(m));
        if tags_ascending(&data[..n]) {
            assert_eq!(&out[..len], &data[..n], "{m:?}");
        }
        assert_eq!(m.check(), Ok(()));
        true
    }

    #[test]
    fn random_and_mutated_frames_never_panic() {
        let mut rng = crate::xorshift::XorShift::new(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<Vec<u8>> = shapes().iter().map(emit_vec).collect();
        let mut accepted = 0;
        let mut buf = Vec::with_capacity(MAX_FRAME_LEN + 16);
        for _ in 0..100_000 {
            buf.clear();
            if rng.below(8) == 0 {
                // Pure noise, sometimes behind a valid header.
                let len = rng.below(80);
                if rng.below(2) == 0 {
                    buf.extend_from_slice(&[b'A', b'G', 1, 1 + rng.below(3) as u8, 0, len as u8]);
                }
                buf.extend((0..len).map(|_| rng.byte()));
            } else {
                buf.extend_from_slice(&seeds[rng.below(seeds.len())]);
                for _ in 0..1 + rng.below(3) {
                    let len = buf.len();
                    match rng.below(6) {
                        0 if len > 0 => {
                            let i = rng.below(len);
                            buf[i] ^= 1 << rng.below(8);
                        }
                        1 if len > 0 => {
                            let i = rng.below(len);
                            buf[i] = rng.byte();
                        }
                        2 if len > 0 => {
                            buf.truncate(rng.below(len));
                        }
                        3 => {
                            let at = rng.below(len + 1);
                            buf.insert(at, rng.byte());
                        }
                        4 if len > HEADER_LEN => {
                            // Re-declare the payload length to match (or not).
                            let declared = (len - HEADER_LEN + rng.below(3)).saturating_sub(1);
                            buf[4..6].copy_from_slice(&(declared as u16).to_be_bytes());
                        }
                        _ => {
                            // Append a random TLV and fix the header length.
                            let t = rng.below(24) as u8;
                            let vlen = rng.below(40);
                            buf.push(t);
                            buf.extend_from_slice(&(vlen as u16).to_be_bytes());
                            buf.extend((0..vlen).map(|_| b'0' + rng.below(10) as u8));
                            if buf.len() >= HEADER_LEN {
                                let p = (buf.len() - HEADER_LEN) as u16;
                                buf[4..6].copy_from_slice(&p.to_be_bytes());
                            }
                        }
                    }
                }
            }
            if exercise(&buf) {
                accepted += 1;
            }
        }
        // The loop must reach the accepting paths, not just the rejects.
        assert!(accepted > 5_000, "only {accepted} accepted");
    }
}
