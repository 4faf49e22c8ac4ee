//! EtherNet/IP over TCP (explicit messaging): the encapsulation header,
//! the common packet format (CPF) items of SendRRData and SendUnitData, and
//! the CIP message inside (service, EPATH, data), with Unconnected Send
//! unwrapped.
//!
//! ```text
//! encapsulation | command u16 | length u16 | session u32 | status u32 |
//!               | sender context [8] | options u32 | data (length) |
//! SendRRData    | interface u32 | timeout u16 | CPF: count u16, items: type u16, length u16, data |
//! CIP request   | service | path size (words) | EPATH | request data |
//! ```
//!
//! All integers are little-endian. Nothing here decides anything or
//! panics on any input.

/// The encapsulation header.
pub const HEADER: usize = 24;
/// The longest encapsulation data the gate accepts (a Large Forward Open
/// connection's 4002-byte packets fit).
pub const MAX_DATA: usize = 4096;
/// The longest message on the wire.
pub const MAX_MESSAGE: usize = HEADER + MAX_DATA;

/// Encapsulation commands.
pub const NOP: u16 = 0x0000;
pub const LIST_SERVICES: u16 = 0x0004;
pub const LIST_IDENTITY: u16 = 0x0063;
pub const LIST_INTERFACES: u16 = 0x0064;
pub const REGISTER_SESSION: u16 = 0x0065;
pub const UNREGISTER_SESSION: u16 = 0x0066;
pub const SEND_RR_DATA: u16 = 0x006f;
pub const SEND_UNIT_DATA: u16 = 0x0070;

/// Encapsulation status: invalid or unsupported command.
pub const STATUS_INVALID_COMMAND: u32 = 0x0001;
/// Encapsulation status: insufficient memory (the gate: too many requests
/// in flight).
pub const STATUS_INSUFFICIENT_MEMORY: u32 = 0x0002;
/// Encapsulation status: incorrectly formed data.
pub const STATUS_BAD_DATA: u32 = 0x0003;

/// CPF item types.
pub const ITEM_NULL: u16 = 0x0000;
pub const ITEM_CONNECTED_ADDRESS: u16 = 0x00a1;
pub const ITEM_CONNECTED_DATA: u16 = 0x00b1;
pub const ITEM_UNCONNECTED_DATA: u16 = 0x00b2;

/// CIP services.
pub const GET_ATTRIBUTES_ALL: u8 = 0x01;
pub const SET_ATTRIBUTES_ALL: u8 = 0x02;
pub const GET_ATTRIBUTE_LIST: u8 = 0x03;
pub const SET_ATTRIBUTE_LIST: u8 = 0x04;
pub const RESET: u8 = 0x05;
pub const START: u8 = 0x06;
pub const STOP: u8 = 0x07;
pub const CREATE: u8 = 0x08;
pub const DELETE: u8 = 0x09;
pub const MULTIPLE_SERVICE_PACKET: u8 = 0x0a;
pub const APPLY_ATTRIBUTES: u8 = 0x0d;
pub const GET_ATTRIBUTE_SINGLE: u8 = 0x0e;
pub const SET_ATTRIBUTE_SINGLE: u8 = 0x10;
pub const RESTORE: u8 = 0x15;
pub const SAVE: u8 = 0x16;
/// The member services of list attributes (CIP Vol 1 A-4).
pub const GET_MEMBER: u8 = 0x18;
pub const SET_MEMBER: u8 = 0x19;
pub const INSERT_MEMBER: u8 = 0x1a;
pub const REMOVE_MEMBER: u8 = 0x1b;
pub const READ_TAG: u8 = 0x4c;
pub const WRITE_TAG: u8 = 0x4d;
/// Read-Modify-Write Tag; Forward Close on the Connection Manager.
pub const READ_MODIFY_WRITE_TAG: u8 = 0x4e;
/// Read Tag Fragmented; Unconnected Send on the Connection Manager.
pub const READ_TAG_FRAGMENTED: u8 = 0x52;
pub const WRITE_TAG_FRAGMENTED: u8 = 0x53;
pub const FORWARD_OPEN: u8 = 0x54;
pub const GET_INSTANCE_ATTRIBUTE_LIST: u8 = 0x55;
pub const LARGE_FORWARD_OPEN: u8 = 0x5b;
pub const FORWARD_CLOSE: u8 = 0x4e;
pub const GET_CONNECTION_DATA: u8 = 0x56;
pub const SEARCH_CONNECTION_DATA: u8 = 0x57;
pub const GET_CONNECTION_OWNER: u8 = 0x5a;
pub const UNCONNECTED_SEND: u8 = 0x52;

/// CIP classes the gate tells apart.
pub const CLASS_IDENTITY: u16 = 0x01;
pub const CLASS_CONNECTION_MANAGER: u16 = 0x06;
/// Logix Symbol and Template objects (tag services address them, or a
/// symbolic path with no class at all).
pub const CLASS_SYMBOL: u16 = 0x6b;
pub const CLASS_TEMPLATE: u16 = 0x6c;

/// CIP general status: privilege violation (how the gate refuses).
pub const STATUS_PRIVILEGE_VIOLATION: u8 = 0x0f;
/// CIP general status: resource unavailable (too many requests in flight).
pub const STATUS_RESOURCE_UNAVAILABLE: u8 = 0x02;
/// CIP general status: embedded service error (a Multiple Service
/// Packet's requests failed).
pub const STATUS_EMBEDDED_SERVICE_ERROR: u8 = 0x1e;
/// CIP general status: not enough data / malformed request.
pub const STATUS_NOT_ENOUGH_DATA: u8 = 0x13;

/// Why a stream cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// The encapsulation length is above [`MAX_DATA`].
    TooLong(u16),
}

/// What [`Framer::next`] found.
pub type Progress = super::Progress<Anomaly>;

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits an EtherNet/IP TCP stream into encapsulation messages.
#[derive(Debug, Default, Clone, Copy)]
pub struct Framer;

impl Framer {
    pub fn next(buf: &[u8]) -> Progress {
        let Some(len) = le16(buf, 2) else { return Progress::NeedMore };
        if usize::from(len) > MAX_DATA {
            return Progress::Reject(Anomaly::TooLong(len));
        }
        let total = HEADER + usize::from(len);
        if buf.len() < total {
            Progress::NeedMore
        } else {
            Progress::Done { len: total }
        }
    }
}

/// An encapsulation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap<'a> {
    pub command: u16,
    pub session: u32,
    pub status: u32,
    pub context: [u8; 8],
    pub data: &'a [u8],
}

impl<'a> Encap<'a> {
    /// Reads a message [`Framer::next`] accepted.
    pub fn parse(msg: &'a [u8]) -> Option<Self> {
        let len = usize::from(le16(msg, 2)?);
        if msg.len() != HEADER + len {
            return None;
        }
        Some(Self {
            command: le16(msg, 0)?,
            session: le32(msg, 4)?,
            status: le32(msg, 8)?,
            context: msg.get(12..20)?.try_into().ok()?,
            data: &msg[HEADER..],
        })
    }

    /// SendRRData / SendUnitData: the CPF's address and data items (the
    /// connection id, if connected, and the data item's bytes).
    ///
    /// Exactly two items, nothing after them: a null address and
    /// unconnected data, or a connected address and connected data. Targets
    /// differ in which item of a longer list they act on, so the gate
    /// accepts no other shape (`None`).
    pub fn cpf(&self) -> Option<Cpf<'a>> {
        let d = self.data;
        if le16(d, 6)? != 2 {
            return None;
        }
        let item = |at: usize| -> Option<(u16, &'a [u8])> {
            let len = usize::from(le16(d, at + 2)?);
            Some((le16(d, at)?, d.get(at + 4..at + 4 + len)?))
        };
        let (address, body) = item(8)?;
        let (kind, data) = item(12 + body.len())?;
        if 16 + body.len() + data.len() != d.len() {
            return None;
        }
        match (address, body.len(), kind) {
            (ITEM_NULL, 0, ITEM_UNCONNECTED_DATA) => Some(Cpf { connection: None, sequence: None, message: data }),
            // Connected data starts with the connection's sequence count.
            (ITEM_CONNECTED_ADDRESS, 4, ITEM_CONNECTED_DATA) => {
                Some(Cpf { connection: Some(le32(body, 0)?), sequence: Some(le16(data, 0)?), message: data.get(2..)? })
            }
            _ => None,
        }
    }
}

/// The CPF of a SendRRData or SendUnitData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpf<'a> {
    /// The connection id of a connected message.
    pub connection: Option<u32>,
    /// A connected message's sequence count.
    pub sequence: Option<u16>,
    /// The CIP message.
    pub message: &'a [u8],
}

/// A CIP request: its service, the target named by its path, its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cip<'a> {
    pub service: u8,
    /// The logical class in the path (0 if none: a symbolic tag path).
    pub class: u16,
    pub instance: u32,
    /// The first ANSI symbolic segment (a tag name), if any.
    pub symbol: &'a [u8],
    pub data: &'a [u8],
}

impl<'a> Cip<'a> {
    /// Reads a CIP request (service without the reply bit, path, data).
    pub fn parse(msg: &'a [u8]) -> Option<Self> {
        let service = *msg.first()?;
        let words = usize::from(*msg.get(1)?);
        let path = msg.get(2..2 + 2 * words)?;
        let data = &msg[2 + 2 * words..];
        let (mut class, mut instance, mut symbol) = (0u16, 0u32, &[][..]);
        // How many class and instance segments: a path naming either twice,
        // or a class and a tag, means different things to different
        // targets, so none of them is accepted.
        let (mut classes, mut instances) = (0, 0);
        let mut at = 0;
        while at < path.len() {
            let seg = path[at];
            match seg {
                0x20 | 0x21 => classes += 1,
                0x24 | 0x25 => instances += 1,
                _ => {}
            }
            match seg {
                0x20 => class = u16::from(*path.get(at + 1)?),
                0x21 => class = le16(path, at + 2)?,
                0x24 => instance = u32::from(*path.get(at + 1)?),
                0x25 => instance = u32::from(le16(path, at + 2)?),
                0x91 => {
                    let n = usize::from(*path.get(at + 1)?);
                    if symbol.is_empty() {
                        symbol = path.get(at + 2..at + 2 + n)?;
                    }
                    at += 2 + n + n % 2;
                    continue;
                }
                _ => {}
            }
            at += match seg {
                // 8-bit logical segments (class, instance, member,
                // connection point, attribute, element).
                0x20 | 0x24 | 0x28 | 0x2c | 0x30 => 2,
                0x21 | 0x25 | 0x29 | 0x2d | 0x31 => 4,
                0x2a => 6,
                // Port segments (route paths): port, link; port 15 is
                // followed by a 16-bit port number before the link (CIP
                // Vol 1 C-1.4.1); extended link addresses are not expected
                // in a request's own path.
                0x01..=0x0e => 2,
                0x0f => 4,
                _ => return None,
            };
        }
        if classes > 1 || instances > 1 || (classes == 1 && !symbol.is_empty()) {
            return None;
        }
        Some(Self { service: service & 0x7f, class, instance, symbol, data })
    }

    /// Whether this addresses the Connection Manager (class 6, instance 1).
    pub fn is_connection_manager(&self) -> bool {
        self.class == CLASS_CONNECTION_MANAGER && self.instance == 1
    }

    /// Whether this is an Unconnected Send (a request for another target,
    /// carried inside).
    pub fn is_unconnected_send(&self) -> bool {
        self.service == UNCONNECTED_SEND && self.is_connection_manager()
    }

    /// The request an Unconnected Send finally carries, through up to four
    /// nested sends (routing over bridges); itself if it is not one. `None`
    /// if a send does not parse or nests deeper.
    pub fn target(self) -> Option<Cip<'a>> {
        let mut c = self;
        for _ in 0..=4 {
            if !c.is_unconnected_send() {
                return Some(c);
            }
            c = c.embedded()?;
        }
        None
    }

    /// An Unconnected Send's embedded request (the message it carries to
    /// the target), or `None` if this is not one.
    pub fn embedded(&self) -> Option<Cip<'a>> {
        if !self.is_unconnected_send() {
            return None;
        }
        // priority/tick, timeout ticks, message size, message ...
        let size = usize::from(le16(self.data, 2)?);
        Cip::parse(self.data.get(4..4 + size)?)
    }

    /// A Multiple Service Packet's requests, in order (at most `N`).
    /// How many requests a Multiple Service Packet carries (`None`: none,
    /// or an offset table longer than the data).
    pub fn service_count(&self) -> Option<usize> {
        let count = usize::from(le16(self.data, 0)?);
        (count > 0 && 2 + 2 * count <= self.data.len()).then_some(count)
    }

    /// A Multiple Service Packet's request `i` (of [`Cip::service_count`]).
    pub fn service(&self, i: usize) -> Option<Cip<'a>> {
        let d = self.data;
        let count = self.service_count()?;
        let start = usize::from(le16(d, 2 + 2 * i)?);
        let end = if i + 1 < count { usize::from(le16(d, 4 + 2 * i)?) } else { d.len() };
        Cip::parse(d.get(start..end)?)
    }
}

/// Writes an encapsulation header for `len` data bytes.
fn emit_header(out: &mut [u8], command: u16, len: usize, session: u32, status: u32, context: [u8; 8]) {
    out[..2].copy_from_slice(&command.to_le_bytes());
    out[2..4].copy_from_slice(&(len as u16).to_le_bytes());
    out[4..8].copy_from_slice(&session.to_le_bytes());
    out[8..12].copy_from_slice(&status.to_le_bytes());
    out[12..20].copy_from_slice(&context);
    out[20..24].copy_from_slice(&[0; 4]);
}

/// The most requests [`emit_msp_refusal`] answers one by one.
pub const MAX_MSP_REPLIES: usize = 96;

/// The most bytes an `emit_*` refusal takes (a Multiple Service Packet of
/// [`MAX_MSP_REPLIES`] requests refused).
pub const MAX_REFUSAL: usize = HEADER + 8 + 8 + 6 + 4 + 2 + 6 * MAX_MSP_REPLIES;

/// A CIP error reply to `request` (an encapsulation message carrying a CIP
/// request), as the target sends it: the same encapsulation command,
/// session and sender context; for a connected request the reply's
/// connection id `reply_connection` and the request's sequence count;
/// `service | 0x80` and general status `status`. Returns its length.
pub fn emit_cip_error(
    out: &mut [u8],
    request: &Encap<'_>,
    cpf: &Cpf<'_>,
    reply_connection: u32,
    service: u8,
    status: u8,
) -> usize {
    emit_cip_reply(out, request, cpf, reply_connection, &[service | 0x80, 0, status, 0])
}

/// A Multiple Service Packet refused whole, as a target answers one whose
/// requests failed: reply 0x8A with general status 0x1E (embedded service
/// error) and, for each of its `services` requests in order, a reply with
/// general status `status`. Returns its length. A packet of more than
/// [`MAX_MSP_REPLIES`] requests gets the general status alone.
pub fn emit_msp_refusal(
    out: &mut [u8],
    request: &Encap<'_>,
    cpf: &Cpf<'_>,
    reply_connection: u32,
    services: &[u8],
    status: u8,
) -> usize {
    if services.len() > MAX_MSP_REPLIES {
        return emit_cip_error(out, request, cpf, reply_connection, MULTIPLE_SERVICE_PACKET, status);
    }
    let n = services.len();
    let mut reply = [0u8; 6 + 6 * MAX_MSP_REPLIES];
    reply[..4].copy_from_slice(&[MULTIPLE_SERVICE_PACKET | 0x80, 0, STATUS_EMBEDDED_SERVICE_ERROR, 0]);
    reply[4..6].copy_from_slice(&(n as u16).to_le_bytes());
    for (k, service) in services.iter().enumerate() {
        // Offsets count from the service count.
        let offset = 2 + 2 * n + 4 * k;
        reply[6 + 2 * k..8 + 2 * k].copy_from_slice(&(offset as u16).to_le_bytes());
        reply[4 + offset..8 + offset].copy_from_slice(&[service | 0x80, 0, status, 0]);
    }
    emit_cip_reply(out, request, cpf, reply_connection, &reply[..6 + 6 * n])
}

/// A reply carrying the CIP message `reply` in the request's
/// encapsulation command, session and context (and, connected, on
/// `reply_connection` with the request's sequence count).
fn emit_cip_reply(out: &mut [u8], request: &Encap<'_>, cpf: &Cpf<'_>, reply_connection: u32, reply: &[u8]) -> usize {
    let mut at = HEADER;
    // Interface handle, timeout, item count.
    out[at..at + 8].copy_from_slice(&[0, 0, 0, 0, 0, 0, 2, 0]);
    at += 8;
    if let Some(seq) = cpf.sequence {
        out[at..at + 8].copy_from_slice(&[0xa1, 0, 4, 0, 0, 0, 0, 0]);
        out[at + 4..at + 8].copy_from_slice(&reply_connection.to_le_bytes());
        at += 8;
        out[at..at + 4].copy_from_slice(&[0xb1, 0, 0, 0]);
        out[at + 2..at + 4].copy_from_slice(&(2 + reply.len() as u16).to_le_bytes());
        out[at + 4..at + 6].copy_from_slice(&seq.to_le_bytes());
        at += 6;
    } else {
        out[at..at + 8].copy_from_slice(&[0, 0, 0, 0, 0xb2, 0, 0, 0]);
        out[at + 6..at + 8].copy_from_slice(&(reply.len() as u16).to_le_bytes());
        at += 8;
    }
    out[at..at + reply.len()].copy_from_slice(reply);
    at += reply.len();
    emit_header(out, request.command, at - HEADER, request.session, 0, request.context);
    at
}

/// An encapsulation-level refusal: the request's header with `status` and
/// no data. Returns its length.
pub fn emit_encap_error(out: &mut [u8], request: &Encap<'_>, status: u32) -> usize {
    emit_header(out, request.command, 0, request.session, status, request.context);
    HEADER
}

#[cfg(test)]
pub(crate) mod tests;
