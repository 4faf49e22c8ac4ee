//! S7comm over ISO-on-TCP: RFC 1006 TPKT, ISO 8073 COTP class 0, and the
//! S7comm PDU inside (protocol id 0x32).
//!
//! ```text
//! TPKT  | 03 | 00 | length (u16, whole TPKT) |
//! COTP  | LI | code | ... LI bytes in all ... |  DT: 02 F0 (EOT<<7 | nr)
//! S7    | 32 | ROSCTR | 00 00 | PDU ref | param len | data len | [err class | err code] |
//!       | parameters ... | data ... |
//! ```
//!
//! A stream is split into *units*: one connection TPDU (CR, CC, DR, DC,
//! ER) or the data TPDUs that carry one S7 PDU (DT ... DT with EOT set).
//! Nothing here decides anything: [`Framer::next`] frames, [`Unit::parse`]
//! reads a unit's TPDU kind and S7 PDU, [`Pdu::parse`] reads the S7 header
//! and [`Request::parse`] a request's function, and the `emit_*` functions
//! build the refusals a PLC would send. Every accessor is checked; no input
//! makes any of them panic.

/// TPKT version (RFC 1006).
const TPKT_VERSION: u8 = 3;
/// A TPKT header.
const TPKT_HEADER: usize = 4;
/// A DT TPDU's COTP header: LI (2), code, EOT/number.
const DT_HEADER: usize = 3;
/// S7comm's protocol id.
pub const PROTOCOL_ID: u8 = 0x32;

/// The largest S7 PDU a connection through the gate may negotiate: the
/// gate lowers a larger proposal in *setup communication* to it (960 is
/// what S7-300/400/1500 CPUs offer at most on S7comm).
pub const MAX_PDU: usize = 960;
/// The largest TPKT accepted: a DT carrying a whole [`MAX_PDU`], with room
/// to spare for connection TPDUs and their parameters.
pub const MAX_TPKT: usize = 1024;
/// The most bytes one unit may span on the wire (a PDU sent in several DTs).
pub const MAX_UNIT: usize = 2 * MAX_TPKT;

/// ROSCTR (message type).
pub const JOB: u8 = 0x01;
pub const ACK: u8 = 0x02;
pub const ACK_DATA: u8 = 0x03;
pub const USERDATA: u8 = 0x07;

/// Job functions.
pub const READ_VAR: u8 = 0x04;
pub const WRITE_VAR: u8 = 0x05;
pub const REQUEST_DOWNLOAD: u8 = 0x1a;
pub const DOWNLOAD_BLOCK: u8 = 0x1b;
pub const DOWNLOAD_ENDED: u8 = 0x1c;
pub const START_UPLOAD: u8 = 0x1d;
pub const UPLOAD: u8 = 0x1e;
pub const END_UPLOAD: u8 = 0x1f;
pub const PI_SERVICE: u8 = 0x28;
pub const PLC_STOP: u8 = 0x29;
pub const SETUP_COMMUNICATION: u8 = 0xf0;

/// Header error (class << 8 | code) the gate answers a refused job with:
/// 0x8703 "access to object refused".
pub const ERR_ACCESS_REFUSED: u16 = 0x8703;
/// 0x8500 "wrong frames" (a job whose parameters do not parse).
pub const ERR_WRONG_FRAMES: u16 = 0x8500;
/// 0x8302 "too few resources" (too many jobs outstanding).
pub const ERR_NO_RESOURCES: u16 = 0x8302;
/// Userdata parameter error 0xD241 "function not permitted in the current
/// protection level".
pub const ERR_PROTECTION: u16 = 0xd241;
/// Data item return code 0x03 "accessing the object not allowed".
pub const ITEM_ACCESS_DENIED: u8 = 0x03;
/// Data item return code 0x0a "object does not exist".
pub const ITEM_NO_OBJECT: u8 = 0x0a;

/// Why a stream cannot be framed: nothing after it can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// TPKT version byte is not 3 (or the reserved byte is not 0).
    BadVersion(u8),
    /// TPKT length below a header plus a COTP header, or above [`MAX_TPKT`].
    BadLength(u16),
    /// A COTP header that does not fit its TPKT, or an unknown TPDU code.
    BadTpdu(u8),
    /// A PDU split over DTs is longer than [`MAX_PDU`] (or [`MAX_UNIT`] on
    /// the wire), or a connection TPDU interrupts it.
    BadSegmentation,
    /// A data TPDU carries another protocol than S7comm (its first byte is
    /// not 0x32; 0x72 is S7comm+).
    NotS7comm(u8),
}

/// What [`Framer::next`] found at the start of a buffer.
pub type Progress = super::Progress<Anomaly>;

/// A COTP TPDU kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tpdu {
    ConnectRequest,
    ConnectConfirm,
    DisconnectRequest,
    DisconnectConfirm,
    Error,
    Data { eot: bool },
}

impl Tpdu {
    fn from_code(code: u8, li: usize, tpdu: &[u8]) -> Option<Self> {
        Some(match code & 0xf0 {
            0xe0 => Self::ConnectRequest,
            0xd0 => Self::ConnectConfirm,
            0x80 => Self::DisconnectRequest,
            0xc0 => Self::DisconnectConfirm,
            0x70 => Self::Error,
            // Class 0 DT: LI is exactly 2 (code, EOT/number).
            0xf0 if li == 2 => Self::Data { eot: tpdu.get(2)? & 0x80 != 0 },
            _ => return None,
        })
    }
}

/// One TPKT at the start of `buf`: its length and TPDU kind.
fn tpkt(buf: &[u8]) -> Result<Option<(usize, Tpdu)>, Anomaly> {
    let Some(head) = buf.get(..TPKT_HEADER) else { return Ok(None) };
    if head[0] != TPKT_VERSION || head[1] != 0 {
        return Err(Anomaly::BadVersion(head[0]));
    }
    let len = u16::from_be_bytes([head[2], head[3]]);
    if usize::from(len) < TPKT_HEADER + DT_HEADER || usize::from(len) > MAX_TPKT {
        return Err(Anomaly::BadLength(len));
    }
    let Some(whole) = buf.get(..usize::from(len)) else { return Ok(None) };
    let cotp = &whole[TPKT_HEADER..];
    let li = usize::from(cotp[0]);
    if li < 2 || li + 1 > cotp.len() {
        return Err(Anomaly::BadTpdu(cotp[0]));
    }
    let kind = Tpdu::from_code(cotp[1], li, cotp).ok_or(Anomaly::BadTpdu(cotp[1]))?;
    Ok(Some((usize::from(len), kind)))
}

/// Splits an ISO-on-TCP byte stream into units (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct Framer;

impl Framer {
    /// The unit at the start of `buf`.
    pub fn next(buf: &[u8]) -> Progress {
        let mut at = 0;
        let mut payload = 0;
        loop {
            let (len, kind) = match tpkt(&buf[at..]) {
                Ok(Some(t)) => t,
                Ok(None) => {
                    return if buf.len() >= MAX_UNIT {
                        Progress::Reject(Anomaly::BadSegmentation)
                    } else {
                        Progress::NeedMore
                    }
                }
                Err(a) => return Progress::Reject(a),
            };
            match kind {
                Tpdu::Data { eot } => {
                    payload += len - TPKT_HEADER - DT_HEADER;
                    at += len;
                    if payload > MAX_PDU || at > MAX_UNIT {
                        return Progress::Reject(Anomaly::BadSegmentation);
                    }
                    if eot {
                        return Progress::Done { len: at };
                    }
                }
                // A connection TPDU stands alone; it may not cut a PDU.
                _ if at == 0 => return Progress::Done { len },
                _ => return Progress::Reject(Anomaly::BadSegmentation),
            }
        }
    }
}

/// A framed unit: a connection TPDU, or the S7 PDU its DTs carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit<'a> {
    Connection(Tpdu),
    Data(&'a [u8]),
}

impl<'a> Unit<'a> {
    /// Reads a unit [`Framer::next`] accepted. A PDU in one DT is borrowed
    /// from `unit`; one in several DTs is gathered into `scratch`. `None`
    /// for bytes the framer did not accept.
    pub fn parse(unit: &'a [u8], scratch: &'a mut [u8; MAX_PDU]) -> Option<Self> {
        let (len, kind) = tpkt(unit).ok()??;
        match kind {
            Tpdu::Data { eot: true } if len == unit.len() => Some(Self::Data(&unit[TPKT_HEADER + DT_HEADER..])),
            Tpdu::Data { .. } => {
                let (mut at, mut n) = (0, 0);
                while at < unit.len() {
                    let (len, kind) = tpkt(&unit[at..]).ok()??;
                    let Tpdu::Data { eot } = kind else { return None };
                    let part = &unit[at + TPKT_HEADER + DT_HEADER..at + len];
                    scratch.get_mut(n..n + part.len())?.copy_from_slice(part);
                    n += part.len();
                    at += len;
                    if eot {
                        break;
                    }
                }
                (at == unit.len()).then_some(Self::Data(&scratch[..n]))
            }
            other => (len == unit.len()).then_some(Self::Connection(other)),
        }
    }
}

/// Why an S7 PDU (inside a well-framed unit) is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its header, or the lengths disagree with the PDU.
    BadLength,
    /// Protocol id is not 0x32.
    BadProtocol(u8),
    /// An unknown ROSCTR.
    BadType(u8),
    /// Parameters too short for the function, or an item list that does not
    /// add up.
    BadParameters,
}

/// An S7comm PDU's header and sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pdu<'a> {
    pub rosctr: u8,
    pub pdu_ref: u16,
    /// Header error (class << 8 | code): acknowledgements only.
    pub error: u16,
    pub param: &'a [u8],
    pub data: &'a [u8],
}

impl<'a> Pdu<'a> {
    pub fn parse(pdu: &'a [u8]) -> Result<Self, Error> {
        let head = pdu.get(..10).ok_or(Error::BadLength)?;
        if head[0] != PROTOCOL_ID {
            return Err(Error::BadProtocol(head[0]));
        }
        let rosctr = head[1];
        let hlen = match rosctr {
            JOB | USERDATA => 10,
            ACK | ACK_DATA => 12,
            other => return Err(Error::BadType(other)),
        };
        let be = |i: usize| u16::from_be_bytes([head[i], head[i + 1]]);
        let (pdu_ref, plen, dlen) = (be(4), usize::from(be(6)), usize::from(be(8)));
        if pdu.len() != hlen + plen + dlen {
            return Err(Error::BadLength);
        }
        let error = if hlen == 12 { u16::from_be_bytes([pdu[10], pdu[11]]) } else { 0 };
        Ok(Self { rosctr, pdu_ref, error, param: &pdu[hlen..hlen + plen], data: &pdu[hlen + plen..] })
    }

    /// A userdata PDU's function group, subfunction and type nibble
    /// (0 push, 4 request, 8 response).
    pub fn userdata(&self) -> Option<Userdata> {
        // 00 01 12 LL | method | type<<4|group | subfunction | sequence
        let p = self.param;
        if self.rosctr != USERDATA || p.len() < 8 || p[2] != 0x12 || usize::from(p[3]) + 4 != p.len() {
            return None;
        }
        Some(Userdata { kind: p[5] >> 4, group: p[5] & 0x0f, subfunction: p[6], sequence: p[7] })
    }
}

/// The function of a userdata PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Userdata {
    /// 0 push, 4 request, 8 response.
    pub kind: u8,
    pub group: u8,
    pub subfunction: u8,
    pub sequence: u8,
}

/// Userdata function groups.
pub const GROUP_PROGRAMMER: u8 = 0x1;
pub const GROUP_CYCLIC: u8 = 0x2;
pub const GROUP_BLOCKS: u8 = 0x3;
pub const GROUP_CPU: u8 = 0x4;
pub const GROUP_SECURITY: u8 = 0x5;
pub const GROUP_TIME: u8 = 0x7;

/// The first variable of a read or write (S7ANY addressing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// Area: 0x81 inputs, 0x82 outputs, 0x83 flags, 0x84 data blocks, ...
    pub area: u8,
    pub db: u16,
    /// Start address in bits (byte * 8 + bit).
    pub bit_address: u32,
    pub transport: u8,
    pub count: u16,
}

/// The PI services the gate tells apart, by their names in the job's
/// parameters (tools lay the parameters out differently, the names are
/// fixed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiService {
    /// `P_PROGRAM`: warm or cold start (run).
    Start,
    /// `_GARB`: compress memory.
    Compress,
    /// `_MODU`: copy RAM to ROM.
    CopyRamToRom,
    /// `_INSE`: activate downloaded blocks.
    InsertBlock,
    /// `_DELE`: delete blocks.
    DeleteBlock,
    Other,
}

impl PiService {
    const NAMES: [(&'static [u8], Self); 5] = [
        (b"P_PROGRAM", Self::Start),
        (b"_GARB", Self::Compress),
        (b"_MODU", Self::CopyRamToRom),
        (b"_INSE", Self::InsertBlock),
        (b"_DELE", Self::DeleteBlock),
    ];

    /// The service a PI job's parameters name, read where the PLC reads
    /// it: after the parameter block (`28 | 7 bytes | block length u16 |
    /// block | name length | name`), or in the layout python-snap7 sends
    /// deletes in (`28 | 5 bytes | block length | name length | 00 | block
    /// | name`), only when the standard name-length byte lies beyond the
    /// parameters. Anything else is `Other`: a name found elsewhere in the
    /// bytes, or a standard layout whose lengths do not add up, proves
    /// nothing.
    fn find(param: &[u8]) -> Self {
        let standard = param.get(8..10).map(|b| 10 + usize::from(u16::from_be_bytes([b[0], b[1]])));
        let name = match standard {
            Some(at) if at < param.len() => {
                let len = usize::from(param[at]);
                (at + 1 + len == param.len()).then(|| &param[at + 1..])
            }
            _ => param.get(6..9).and_then(|b| {
                let (block, len) = (usize::from(b[0]), usize::from(b[1]));
                (b[2] == 0 && 9 + block + len == param.len()).then(|| &param[9 + block..])
            }),
        };
        let name = name.unwrap_or(&[]);
        Self::NAMES.iter().find(|(n, _)| *n == name).map_or(Self::Other, |&(_, s)| s)
    }
}

/// What a user's PDU asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Setup communication: the PDU size the caller proposes.
    Setup {
        pdu_len: u16,
    },
    /// Read or write variables: `items` variables, the first one if it is
    /// S7ANY-addressed.
    Variables {
        function: u8,
        items: u8,
        first: Option<Item>,
    },
    /// A PI service (program invocation: start, compress, block insert
    /// or delete ...).
    Pi(PiService),
    /// Any other job: download, upload, stop, unknown.
    Job {
        function: u8,
    },
    Userdata(Userdata),
}

impl Request {
    /// Reads a request PDU (a job or a userdata request).
    pub fn parse(pdu: &Pdu<'_>) -> Result<Self, Error> {
        if pdu.rosctr == USERDATA {
            return match pdu.userdata() {
                Some(u) if u.kind == 0x4 => Ok(Self::Userdata(u)),
                _ => Err(Error::BadParameters),
            };
        }
        if pdu.rosctr != JOB {
            return Err(Error::BadType(pdu.rosctr));
        }
        let p = pdu.param;
        let function = *p.first().ok_or(Error::BadParameters)?;
        match function {
            SETUP_COMMUNICATION => {
                let p = p.get(..8).ok_or(Error::BadParameters)?;
                Ok(Self::Setup { pdu_len: u16::from_be_bytes([p[6], p[7]]) })
            }
            READ_VAR | WRITE_VAR => {
                let items = *p.get(1).ok_or(Error::BadParameters)?;
                let mut at = 2;
                let mut first = None;
                for i in 0..items {
                    // 12 LL (spec type, length of the rest) ...
                    let head = p.get(at..at + 2).ok_or(Error::BadParameters)?;
                    let len = usize::from(head[1]);
                    let item = p.get(at + 2..at + 2 + len).ok_or(Error::BadParameters)?;
                    if head[0] != 0x12 || len < 1 {
                        return Err(Error::BadParameters);
                    }
                    // S7ANY: 10 | transport | count | db | area | address (3).
                    if i == 0 && item[0] == 0x10 && len == 10 {
                        first = Some(Item {
                            transport: item[1],
                            count: u16::from_be_bytes([item[2], item[3]]),
                            db: u16::from_be_bytes([item[4], item[5]]),
                            area: item[6],
                            bit_address: u32::from_be_bytes([0, item[7], item[8], item[9]]),
                        });
                    }
                    at += 2 + len;
                }
                if items == 0 || at != p.len() {
                    return Err(Error::BadParameters);
                }
                Ok(Self::Variables { function, items, first })
            }
            PI_SERVICE => Ok(Self::Pi(PiService::find(p))),
            f => Ok(Self::Job { function: f }),
        }
    }
}

/// Writes a TPKT + COTP DT header for an S7 PDU of `pdu_len` bytes.
fn emit_frame(out: &mut [u8], pdu_len: usize) -> usize {
    let total = TPKT_HEADER + DT_HEADER + pdu_len;
    out[..7].copy_from_slice(&[TPKT_VERSION, 0, (total >> 8) as u8, total as u8, 0x02, 0xf0, 0x80]);
    7
}

/// An S7 header (ROSCTR 2/3 with an error, or 7).
fn emit_header(out: &mut [u8], rosctr: u8, pdu_ref: u16, plen: usize, dlen: usize, error: u16) -> usize {
    let r = pdu_ref.to_be_bytes();
    out[..10].copy_from_slice(&[PROTOCOL_ID, rosctr, 0, 0, r[0], r[1], 0, plen as u8, (dlen >> 8) as u8, dlen as u8]);
    if rosctr == USERDATA {
        return 10;
    }
    out[10..12].copy_from_slice(&error.to_be_bytes());
    12
}

/// The most bytes an `emit_*` refusal takes: one PDU. (A refusal item by
/// item of a read naming more items than an answer PDU holds is not sent;
/// the job is refused whole instead.)
pub const MAX_REFUSAL: usize = 7 + MAX_PDU;

/// Whether an item-by-item refusal of `items` variables of `function` fits
/// an answer PDU.
pub fn item_refusal_fits(function: u8, items: u8) -> bool {
    let per = if function == READ_VAR { 4 } else { 1 };
    12 + 2 + per * usize::from(items) <= MAX_PDU
}

/// A read or write refused item by item, as a CPU refuses a protected area:
/// Ack_Data, no header error, every item's return code `code` (for a read
/// with no data). Returns the TPKT's length. `out` must hold [`MAX_REFUSAL`].
pub fn emit_item_refusal(out: &mut [u8], pdu_ref: u16, function: u8, items: u8, code: u8) -> usize {
    let per = if function == READ_VAR { 4 } else { 1 };
    let dlen = per * usize::from(items);
    let mut at = emit_frame(out, 12 + 2 + dlen);
    at += emit_header(&mut out[at..], ACK_DATA, pdu_ref, 2, dlen, 0);
    out[at..at + 2].copy_from_slice(&[function, items]);
    at += 2;
    for _ in 0..items {
        let item: &[u8] = if per == 4 { &[code, 0, 0, 0] } else { &[code] };
        out[at..at + per].copy_from_slice(item);
        at += per;
    }
    at
}

/// A job refused as a whole: Ack_Data with header error `error` and the
/// function echoed. Returns the TPKT's length.
pub fn emit_job_error(out: &mut [u8], pdu_ref: u16, function: u8, error: u16) -> usize {
    let mut at = emit_frame(out, 12 + 1);
    at += emit_header(&mut out[at..], ACK_DATA, pdu_ref, 1, 0, error);
    out[at] = function;
    at + 1
}

/// A userdata request refused: the response parameters carry `error`, the
/// data item "object does not exist". Returns the TPKT's length.
pub fn emit_userdata_error(out: &mut [u8], pdu_ref: u16, u: Userdata, error: u16) -> usize {
    let mut at = emit_frame(out, 10 + 12 + 4);
    at += emit_header(&mut out[at..], USERDATA, pdu_ref, 12, 4, 0);
    let e = error.to_be_bytes();
    out[at..at + 12].copy_from_slice(&[
        0,
        1,
        0x12,
        0x08,
        0x12,
        0x80 | u.group,
        u.subfunction,
        u.sequence,
        0,
        0,
        e[0],
        e[1],
    ]);
    at += 12;
    out[at..at + 4].copy_from_slice(&[ITEM_NO_OBJECT, 0, 0, 0]);
    at + 4
}

/// Lowers the PDU size a setup-communication unit proposes to [`MAX_PDU`],
/// in place. `unit` is one DT carrying a setup job; returns whether it
/// changed anything.
pub fn clamp_setup(unit: &mut [u8]) -> bool {
    // TPKT 4 + DT 3 + S7 header 10 + F0 00 amq amq = offset 23.
    let at = TPKT_HEADER + DT_HEADER + 10 + 6;
    match unit.get_mut(at..at + 2) {
        Some(len) if usize::from(u16::from_be_bytes([len[0], len[1]])) > MAX_PDU => {
            len.copy_from_slice(&(MAX_PDU as u16).to_be_bytes());
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
