//! DNP3 (IEEE 1815-2012) over TCP: link-layer frames (FT3 with CRCs), the
//! transport header, and the application header of a fragment's first
//! segment.
//!
//! ```text
//! link    | 05 64 | LEN | CTRL | DEST (LE) | SRC (LE) | CRC |  (header, 10 bytes)
//!         | up to 16 user bytes | CRC | ... (LEN - 5 user bytes in all)
//! user    | transport: FIN FIR SEQ(6) | application: AC (FIR FIN CON UNS SEQ(4)) |
//!         | FC | [IIN1 IIN2 for responses] | objects ...
//! ```
//!
//! [`Framer::next`] frames a stream into link frames and checks every CRC;
//! [`Frame::parse`] reads one (its user data gathered out of the CRC
//! blocks); [`Segment::parse`] reads the transport header and, on a
//! fragment's first segment, the application header. The `emit_*`
//! functions build the frames the gate answers with. Nothing panics on any
//! input.

/// The start bytes of every link frame.
const START: [u8; 2] = [0x05, 0x64];
/// A link header with its CRC.
const HEADER: usize = 10;
/// User data bytes per CRC block.
const BLOCK: usize = 16;
/// The most user data bytes in one frame (LEN 255 - 5).
pub const MAX_USER: usize = 250;
/// The longest link frame: header, 250 user bytes, 16 block CRCs.
pub const MAX_FRAME: usize = HEADER + MAX_USER + 2 * MAX_USER.div_ceil(BLOCK);

/// Link control: direction (set on frames from the master), primary.
pub const DIR: u8 = 0x80;
pub const PRM: u8 = 0x40;
/// Primary link control: frame count bit, and whether it is valid (set on
/// the frames the receiver must count: confirmed user data, test link).
pub const FCB: u8 = 0x20;
pub const FCV: u8 = 0x10;
/// Primary link functions.
pub const LINK_RESET_LINK_STATES: u8 = 0;
pub const LINK_CONFIRMED_USER_DATA: u8 = 3;
pub const LINK_UNCONFIRMED_USER_DATA: u8 = 4;
/// Destination addresses 0xFFFD..=0xFFFF are broadcasts.
pub const BROADCAST_MIN: u16 = 0xfffd;
/// Secondary link function: ACK.
pub const LINK_ACK: u8 = 0;

/// Application function codes.
pub const CONFIRM: u8 = 0x00;
pub const READ: u8 = 0x01;
pub const WRITE: u8 = 0x02;
pub const SELECT: u8 = 0x03;
pub const OPERATE: u8 = 0x04;
pub const DIRECT_OPERATE: u8 = 0x05;
pub const DIRECT_OPERATE_NR: u8 = 0x06;
pub const IMMED_FREEZE_NR: u8 = 0x08;
pub const FREEZE_CLEAR_NR: u8 = 0x0a;
pub const FREEZE_AT_TIME_NR: u8 = 0x0c;
pub const COLD_RESTART: u8 = 0x0d;
pub const SAVE_CONFIG: u8 = 0x13;
pub const ENABLE_UNSOLICITED: u8 = 0x14;
pub const DISABLE_UNSOLICITED: u8 = 0x15;
pub const ASSIGN_CLASS: u8 = 0x16;
pub const DELAY_MEASURE: u8 = 0x17;
pub const RECORD_CURRENT_TIME: u8 = 0x18;
pub const OPEN_FILE: u8 = 0x19;
pub const ABORT_FILE: u8 = 0x1e;
pub const ACTIVATE_CONFIG: u8 = 0x1f;
pub const AUTH_REQUEST_NO_ACK: u8 = 0x21;
pub const RESPONSE: u8 = 0x81;
pub const UNSOLICITED_RESPONSE: u8 = 0x82;
pub const AUTH_RESPONSE: u8 = 0x83;

/// IIN2 bit 0: function code not supported (how an outstation refuses a
/// function it does not perform; the gate refuses with it).
pub const IIN2_NO_FUNC_CODE_SUPPORT: u8 = 0x01;
/// IIN2 bit 2: parameter error (a request the outstation cannot parse).
pub const IIN2_PARAMETER_ERROR: u8 = 0x04;
/// Control status 9, not authorized (IEEE 1815-2012 table 11-13): how an
/// outstation answers a select or operate it will not perform for this
/// master, in the status byte of each control object it echoes.
pub const STATUS_NOT_AUTHORIZED: u8 = 9;

/// CRC-16/DNP (polynomial 0x3D65 reflected, init 0, output inverted).
pub fn crc(data: &[u8]) -> u16 {
    const TABLE: [u16; 256] = {
        let mut t = [0u16; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u16;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0xa6bc } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data.iter().fold(0u16, |c, &b| (c >> 8) ^ TABLE[usize::from((c ^ u16::from(b)) as u8)])
}

fn crc_ok(block: &[u8], check: &[u8]) -> bool {
    check.len() == 2 && crc(block).to_le_bytes() == [check[0], check[1]]
}

/// Why a stream cannot be framed: nothing after it can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// The frame does not start with 05 64.
    BadStart,
    /// LEN below 5 (a header's control and addresses).
    BadLength(u8),
    /// The header's CRC is wrong.
    HeaderCrc,
    /// A user data block's CRC is wrong.
    DataCrc,
}

/// What [`Framer::next`] found at the start of a buffer.
pub type Progress = super::Progress<Anomaly>;

/// The wire length of a frame whose LEN byte is `len` (at least 5).
fn frame_len(len: u8) -> usize {
    let user = usize::from(len) - 5;
    HEADER + user + 2 * user.div_ceil(BLOCK)
}

/// Splits a DNP3-over-TCP stream into link frames.
#[derive(Debug, Default, Clone, Copy)]
pub struct Framer;

impl Framer {
    pub fn next(buf: &[u8]) -> Progress {
        // Refuse a bad start or length as early as it shows.
        if buf.iter().zip(START).any(|(a, b)| *a != b) {
            return Progress::Reject(Anomaly::BadStart);
        }
        if let Some(&len) = buf.get(2).filter(|&&l| l < 5) {
            return Progress::Reject(Anomaly::BadLength(len));
        }
        let Some(head) = buf.get(..HEADER) else { return Progress::NeedMore };
        if !crc_ok(&head[..8], &head[8..]) {
            return Progress::Reject(Anomaly::HeaderCrc);
        }
        let len = frame_len(head[2]);
        let Some(frame) = buf.get(..len) else { return Progress::NeedMore };
        for block in frame[HEADER..].chunks(BLOCK + 2) {
            let (data, check) = block.split_at(block.len() - 2);
            if !crc_ok(data, check) {
                return Progress::Reject(Anomaly::DataCrc);
            }
        }
        Progress::Done { len }
    }
}

/// A link frame's header fields and user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub control: u8,
    pub dest: u16,
    pub src: u16,
    pub user: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Reads a frame [`Framer::next`] accepted, gathering its user data
    /// into `user` (CRCs dropped). `None` for anything else.
    pub fn parse(frame: &[u8], user: &'a mut [u8; MAX_USER]) -> Option<Self> {
        let head = frame.get(..HEADER)?;
        if head[..2] != START || head[2] < 5 || frame.len() != frame_len(head[2]) {
            return None;
        }
        let mut n = 0;
        for block in frame[HEADER..].chunks(BLOCK + 2) {
            let data = &block[..block.len().checked_sub(2)?];
            user.get_mut(n..n + data.len())?.copy_from_slice(data);
            n += data.len();
        }
        Some(Self {
            control: head[3],
            dest: u16::from_le_bytes([head[4], head[5]]),
            src: u16::from_le_bytes([head[6], head[7]]),
            user: &user[..n],
        })
    }

    /// The link function (low four bits of the control byte).
    pub fn function(&self) -> u8 {
        self.control & 0x0f
    }

    /// A primary frame carrying user data (a transport segment).
    pub fn carries_data(&self) -> bool {
        self.control & PRM != 0
            && matches!(self.function(), LINK_CONFIRMED_USER_DATA | LINK_UNCONFIRMED_USER_DATA)
            && !self.user.is_empty()
    }
}

/// A transport segment and, on a fragment's first one, its application
/// header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Transport: last / first segment of the fragment, sequence.
    pub fin: bool,
    pub fir: bool,
    pub seq: u8,
    /// The first segment's application header.
    pub app: Option<AppHeader>,
}

/// An application fragment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppHeader {
    /// Application control: first / final fragment, confirm wanted,
    /// unsolicited, sequence (4 bits).
    pub fir: bool,
    pub fin: bool,
    pub con: bool,
    pub uns: bool,
    pub seq: u8,
    pub function: u8,
    /// A response's internal indications (IIN1, IIN2); zero for requests.
    pub iin: [u8; 2],
}

impl Segment {
    /// Reads a segment from a frame's user data (at least its transport
    /// byte; an application header needs two more).
    pub fn parse(user: &[u8]) -> Option<Self> {
        let th = *user.first()?;
        let (fin, fir, seq) = (th & 0x80 != 0, th & 0x40 != 0, th & 0x3f);
        let app = match (fir, user.get(1..3)) {
            (true, Some(&[ac, function])) => {
                // Responses carry IIN1/IIN2 before their objects.
                let response = function >= RESPONSE;
                let iin = match user.get(3..5) {
                    Some(&[a, b]) if response => [a, b],
                    _ => [0, 0],
                };
                Some(AppHeader {
                    fir: ac & 0x80 != 0,
                    fin: ac & 0x40 != 0,
                    con: ac & 0x20 != 0,
                    uns: ac & 0x10 != 0,
                    seq: ac & 0x0f,
                    function,
                    iin,
                })
            }
            _ => None,
        };
        Some(Self { fin, fir, seq, app })
    }
}

/// Whether a WRITE's objects are exactly one piece of housekeeping, and
/// nothing else: the time (g50v1 or g50v3, one object, qualifier 07) or IIN
/// bits (g80v1, qualifier 00, start..stop, packed bits), as masters write
/// them to synchronise the clock and clear the restart bit.
pub fn housekeeping(objects: &[u8]) -> bool {
    match objects {
        [50, 1 | 3, 0x07, 1, time @ ..] => time.len() == 6,
        [80, 1, 0x00, start, stop, bits @ ..] if stop >= start => {
            bits.len() == (usize::from(stop - start) + 1).div_ceil(8)
        }
        _ => false,
    }
}

/// Sets or clears the frame count bit of the link frame `frame` (one
/// [`Framer::next`] accepted) and writes its header CRC again.
pub fn set_fcb(frame: &mut [u8], fcb: bool) {
    if let Some(head) = frame.get_mut(..HEADER) {
        head[3] = if fcb { head[3] | FCB } else { head[3] & !FCB };
        let c = crc(&head[..8]).to_le_bytes();
        head[8..10].copy_from_slice(&c);
    }
}

/// Writes one link frame with `control` carrying `user`
/// (at most [`MAX_USER`] bytes); returns its length. `out` must hold
/// [`MAX_FRAME`].
pub fn emit_frame(out: &mut [u8], control: u8, dest: u16, src: u16, user: &[u8]) -> usize {
    let (d, s) = (dest.to_le_bytes(), src.to_le_bytes());
    out[..8].copy_from_slice(&[START[0], START[1], (user.len() + 5) as u8, control, d[0], d[1], s[0], s[1]]);
    let c = crc(&out[..8]).to_le_bytes();
    out[8..10].copy_from_slice(&c);
    let mut at = HEADER;
    for block in user.chunks(BLOCK) {
        out[at..at + block.len()].copy_from_slice(block);
        at += block.len();
        out[at..at + 2].copy_from_slice(&crc(block).to_le_bytes());
        at += 2;
    }
    at
}

/// The gate's answer to a refused request, as an outstation at address
/// `outstation` answers master `master`: one frame, one segment, a response
/// (0x81) with the request's application sequence, `[iin1, iin2]` (IIN1 as
/// the outstation last reported it) and `objects` (at most
/// [`MAX_USER`] - 5 bytes; more are cut). Returns its length; `out` must
/// hold [`MAX_FRAME`].
pub fn emit_refusal(out: &mut [u8], master: u16, outstation: u16, app_seq: u8, iin: [u8; 2], objects: &[u8]) -> usize {
    // Transport FIN|FIR seq 0; application FIR|FIN seq; 0x81; IIN1; IIN2.
    let mut user = [0u8; MAX_USER];
    user[..5].copy_from_slice(&[0xc0, 0xc0 | (app_seq & 0x0f), RESPONSE, iin[0], iin[1]]);
    let n = objects.len().min(MAX_USER - 5);
    user[5..5 + n].copy_from_slice(&objects[..n]);
    emit_frame(out, PRM | LINK_UNCONFIRMED_USER_DATA, master, outstation, &user[..5 + n])
}

/// The size of one control object, its status byte last: a control relay
/// output block (g12v1) or an analog output block (g41v1 32-bit, v2
/// 16-bit, v3 float, v4 double).
fn control_object_size(group: u8, variation: u8) -> Option<usize> {
    match (group, variation) {
        (12, 1) => Some(11),
        (41, 1 | 3) => Some(5),
        (41, 2) => Some(3),
        (41, 4) => Some(9),
        _ => None,
    }
}

/// How an outstation answers a select or operate it does not accept: the
/// request's objects echoed, each object's status byte set to `status`.
/// Writes the echo into `out` and returns its length. `None` unless the
/// objects are only control relay output blocks and analog output blocks,
/// each header with a count (qualifiers 0x07, 0x08) or index-prefixed
/// objects (0x17, 0x28) of at least one, all of them whole and nothing
/// after them, and the echo fits in `out`.
pub fn echo_controls(objects: &[u8], status: u8, out: &mut [u8]) -> Option<usize> {
    let out = out.get_mut(..objects.len())?;
    out.copy_from_slice(objects);
    let byte = |at: usize| objects.get(at).copied().map(usize::from);
    let mut at = 0;
    while at < objects.len() {
        let (group, variation, qualifier) = (objects[at], *objects.get(at + 1)?, *objects.get(at + 2)?);
        let size = control_object_size(group, variation)?;
        at += 3;
        // (count, index prefix, width of the count)
        let (count, prefix, width) = match qualifier {
            0x07 => (byte(at)?, 0, 1),
            0x08 => (byte(at)? | byte(at + 1)? << 8, 0, 2),
            0x17 => (byte(at)?, 1, 1),
            0x28 => (byte(at)? | byte(at + 1)? << 8, 2, 2),
            _ => return None,
        };
        if count == 0 {
            return None;
        }
        at += width;
        for _ in 0..count {
            at += prefix + size;
            *out.get_mut(at.checked_sub(1)?)? = status;
        }
    }
    Some(objects.len())
}

/// A link-layer ACK from `outstation` to `master` (the answer to a
/// confirmed user data frame the gate does not forward).
pub fn emit_link_ack(out: &mut [u8], master: u16, outstation: u16) -> usize {
    emit_frame(out, LINK_ACK, master, outstation, &[])
}

#[cfg(test)]
mod tests;
