//! Modbus/TCP wire format: MBAP framing, request/response PDUs, stream framing.
//!
//! # Contract
//!
//! Untrusted bytes enter through [`Packet::new_checked`] (or [`Framer::next`]
//! for a byte stream). Once `Packet::new_checked(buf)?` has succeeded, no
//! accessor on the packet panics, and [`Request::parse`] / [`Response::parse`]
//! never panic, never allocate, and reject anything the specification does not
//! allow with an [`Error`]. Parsed values borrow from the input buffer
//! (zero-copy). `new_unchecked` and the setters follow the smoltcp
//! convention: they may panic when the buffer is too short, which is a caller
//! bug, not an input-dependent condition.
//!
//! `emit` functions write into caller-provided buffers; a buffer of
//! [`MAX_PDU_LEN`] bytes always suffices for a PDU obtained from `parse`.
//! Parsing then emitting reproduces the input bytes exactly.
//!
//! # Specification points
//!
//! References: *MODBUS Application Protocol Specification V1.1b3* ("AP") and
//! *MODBUS Messaging on TCP/IP Implementation Guide V1.0b* ("TCP").
//!
//! * TCP §3.1.3, MBAP header: transaction identifier (2 bytes), protocol
//!   identifier (2 bytes, "0 = MODBUS protocol"), length (2 bytes, "number of
//!   following bytes", i.e. unit identifier + PDU), unit identifier (1 byte).
//! * AP §4.1: "TCP MODBUS ADU = 253 bytes + MBAP (7 bytes) = 260 bytes", so the
//!   MBAP length is at most 254 (unit id + 253-byte PDU); at least 2 (unit id
//!   + function code).
//! * AP §4.1: function code "0" is not valid; codes 128-255 are reserved for
//!   exception responses (`function | 0x80`).
//! * AP §6.5 (FC 05): "A value of FF 00 hex requests the output to be ON. A
//!   value of 00 00 requests it to be OFF. All other values are illegal".
//! * Quantity limits: FC 01/02 1..=2000 (0x7D0), FC 03/04 1..=125 (0x7D),
//!   FC 15 1..=0x7B0 with byte count N = ceil(quantity / 8), FC 16 1..=0x7B
//!   with byte count 2 x N, FC 23 read 1..=0x7D and write 1..=0x79.
//! * The data model addresses 0..=0xFFFF, so `start + quantity` must not
//!   exceed 0x10000 (rejected as [`Error::AddressOverflow`]).
//! * AP §6.14/6.15 (FC 20/21): byte count 0x07..=0xF5 (read) and 0x09..=0xFB
//!   (write); the reference type "must be specified as 6"; file number 1 to
//!   0xFFFF; record number 0x0000 to 0x270F.
//! * AP §6.21 (FC 43 / MEI 14): read device id code 01..=04.
//! * Serial-line-only functions (07, 08, 11, 12, 17) are still decoded so a
//!   policy can deny them explicitly.
//! * TCP §4.3: a TCP stream carries no message boundaries; one segment may
//!   hold several ADUs or part of one. [`Framer`] splits the stream using the
//!   MBAP length field only and never resynchronises by guessing.

use core::fmt;

/// Field offsets inside the MBAP ADU.
mod field {
    pub type Field = core::ops::Range<usize>;
    pub type Rest = core::ops::RangeFrom<usize>;

    pub const TRANSACTION_ID: Field = 0..2;
    pub const PROTOCOL_ID: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const UNIT_ID: usize = 6;
    pub const FUNCTION: usize = 7;
    pub const PAYLOAD: Rest = 8..;
}

/// Length of the MBAP header (transaction, protocol, length, unit id).
pub const MBAP_HEADER_LEN: usize = 7;
/// Maximum PDU length (function code + data), AP §4.1.
pub const MAX_PDU_LEN: usize = 253;
/// Maximum Modbus/TCP ADU length, AP §4.1.
pub const MAX_ADU_LEN: usize = MBAP_HEADER_LEN + MAX_PDU_LEN;
/// Minimum MBAP length field value (unit id + function code).
pub const MIN_MBAP_LENGTH: u16 = 2;
/// Maximum MBAP length field value (unit id + 253-byte PDU).
pub const MAX_MBAP_LENGTH: u16 = 1 + MAX_PDU_LEN as u16;
/// Smallest possible ADU: MBAP header + function code.
pub const MIN_ADU_LEN: usize = MBAP_HEADER_LEN + 1;

/// Parse errors. Every variant is produced from input only; none indicates a
/// bug in the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer ends before a field that must be present.
    Truncated,
    /// Bytes remain after a complete PDU.
    TrailingBytes { function: u8, extra: usize },
    /// MBAP protocol identifier is not 0.
    BadProtocolId(u16),
    /// MBAP length field outside 2..=254.
    BadLength(u16),
    /// Function code 0, or an exception code (>= 0x80) in a request.
    BadFunction(u8),
    /// The PDU data length is impossible for this function.
    BadDataLength { function: u8, len: usize },
    /// A quantity outside the range allowed by the specification.
    BadQuantity { function: u8, quantity: u16 },
    /// A byte count that disagrees with the quantity it describes.
    ByteCountMismatch { function: u8, byte_count: u8, expected: usize },
    /// A byte count outside the range allowed by the specification.
    BadByteCount { function: u8, byte_count: u8 },
    /// A field value the specification forbids.
    BadValue { function: u8, value: u16 },
    /// `start + quantity` exceeds the 16-bit address space.
    AddressOverflow { start: u16, quantity: u16 },
    /// File record reference type other than 6.
    BadReferenceType(u8),
    /// Encapsulated interface transport MEI type other than 13 or 14.
    BadMeiType(u8),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated => write!(f, "truncated"),
            Error::TrailingBytes { function, extra } => {
                write!(f, "function {function}: {extra} trailing byte(s)")
            }
            Error::BadProtocolId(id) => write!(f, "protocol id {id} is not 0"),
            Error::BadLength(len) => write!(f, "MBAP length {len} not in 2..=254"),
            Error::BadFunction(code) => write!(f, "invalid function code {code:#04x}"),
            Error::BadDataLength { function, len } => {
                write!(f, "function {function}: invalid data length {len}")
            }
            Error::BadQuantity { function, quantity } => {
                write!(f, "function {function}: quantity {quantity} out of range")
            }
            Error::ByteCountMismatch { function, byte_count, expected } => {
                write!(f, "function {function}: byte count {byte_count}, expected {expected}")
            }
            Error::BadByteCount { function, byte_count } => {
                write!(f, "function {function}: byte count {byte_count} out of range")
            }
            Error::BadValue { function, value } => {
                write!(f, "function {function}: illegal value {value:#06x}")
            }
            Error::AddressOverflow { start, quantity } => {
                write!(f, "address {start} + quantity {quantity} exceeds 0x10000")
            }
            Error::BadReferenceType(t) => write!(f, "file reference type {t} is not 6"),
            Error::BadMeiType(t) => write!(f, "unsupported MEI type {t}"),
        }
    }
}

impl std::error::Error for Error {}

/// Defines a `u8`-backed enum with an `Unknown(u8)` catch-all and lossless
/// `From` conversions in both directions.
macro_rules! enum_with_unknown {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $value:expr ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value with no named variant.
            Unknown(u8),
        }

        impl From<u8> for $name {
            fn from(value: u8) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

enum_with_unknown! {
    /// Public function codes (AP §5.1).
    ///
    /// `FunctionCode::Unknown(1)` converts to the same `u8` as `ReadCoils`;
    /// build values with `From<u8>` to keep them canonical.
    pub enum FunctionCode {
        ReadCoils = 1,
        ReadDiscreteInputs = 2,
        ReadHoldingRegisters = 3,
        ReadInputRegisters = 4,
        WriteSingleCoil = 5,
        WriteSingleRegister = 6,
        ReadExceptionStatus = 7,
        Diagnostics = 8,
        GetCommEventCounter = 11,
        GetCommEventLog = 12,
        WriteMultipleCoils = 15,
        WriteMultipleRegisters = 16,
        ReportServerId = 17,
        ReadFileRecord = 20,
        WriteFileRecord = 21,
        MaskWriteRegister = 22,
        ReadWriteMultipleRegisters = 23,
        ReadFifoQueue = 24,
        EncapsulatedInterfaceTransport = 43,
    }
}

enum_with_unknown! {
    /// Exception codes (AP §7).
    pub enum ExceptionCode {
        IllegalFunction = 0x01,
        IllegalDataAddress = 0x02,
        IllegalDataValue = 0x03,
        ServerDeviceFailure = 0x04,
        Acknowledge = 0x05,
        ServerDeviceBusy = 0x06,
        MemoryParityError = 0x08,
        GatewayPathUnavailable = 0x0A,
        GatewayTargetFailedToRespond = 0x0B,
    }
}

impl fmt::Display for FunctionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FunctionCode::Unknown(code) => write!(f, "Unknown({code})"),
            other => write!(f, "{other:?}({})", u8::from(*other)),
        }
    }
}

impl fmt::Display for ExceptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExceptionCode::Unknown(code) => write!(f, "Unknown({code})"),
            other => write!(f, "{other:?}({})", u8::from(*other)),
        }
    }
}

/// Reads a big-endian `u16` at `at`, or reports truncation.
fn read_u16(data: &[u8], at: usize) -> Result<u16, Error> {
    match data.get(at..).and_then(|rest| rest.get(..2)) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(Error::Truncated),
    }
}

/// Reads the byte at `at`, or reports truncation.
fn read_u8(data: &[u8], at: usize) -> Result<u8, Error> {
    data.get(at).copied().ok_or(Error::Truncated)
}

/// Requires `data` to be exactly `len` bytes long.
fn exact_len(function: u8, data: &[u8], len: usize) -> Result<(), Error> {
    match data.len() {
        n if n < len => Err(Error::Truncated),
        n if n > len => Err(Error::TrailingBytes { function, extra: n - len }),
        _ => Ok(()),
    }
}

/// Checks `1 <= quantity <= max`.
fn check_quantity(function: u8, quantity: u16, max: u16) -> Result<(), Error> {
    if quantity == 0 || quantity > max {
        Err(Error::BadQuantity { function, quantity })
    } else {
        Ok(())
    }
}

/// Checks that `start + quantity <= 0x10000`.
fn check_span(start: u16, quantity: u16) -> Result<(), Error> {
    if u32::from(start) + u32::from(quantity) > 0x1_0000 {
        Err(Error::AddressOverflow { start, quantity })
    } else {
        Ok(())
    }
}

/// Number of bytes needed to hold `bits` packed bits.
const fn bit_bytes(bits: u16) -> usize {
    (bits as usize).div_ceil(8)
}

/// A read/write view of a Modbus/TCP ADU (MBAP header + PDU).
///
/// The buffer may be longer than the ADU (for example a receive buffer that
/// already holds the start of the next pipelined request); [`Packet::pdu`]
/// only ever covers the bytes announced by the MBAP length field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors may panic on short
    /// buffers; use [`Packet::new_checked`] for untrusted input.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and validates the MBAP header: protocol id 0, length in
    /// 2..=254, and at least `6 + length` bytes present. After this succeeds
    /// no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        let protocol_id = packet.protocol_id();
        if protocol_id != 0 {
            return Err(Error::BadProtocolId(protocol_id));
        }
        Ok(packet)
    }

    /// Checks that the buffer holds the whole ADU announced by the header and
    /// that the MBAP length is in 2..=254. Does not check the protocol id.
    pub fn check_len(&self) -> Result<(), Error> {
        let data = self.buffer.as_ref();
        let length = read_u16(data, field::LENGTH.start)?;
        if !(MIN_MBAP_LENGTH..=MAX_MBAP_LENGTH).contains(&length) {
            return Err(Error::BadLength(length));
        }
        if data.len() < field::LENGTH.end + usize::from(length) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Consumes the packet, returning the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// MBAP transaction identifier.
    pub fn transaction_id(&self) -> u16 {
        let data = self.buffer.as_ref();
        u16::from_be_bytes([data[field::TRANSACTION_ID.start], data[1]])
    }

    /// MBAP protocol identifier (0 for Modbus).
    pub fn protocol_id(&self) -> u16 {
        let data = self.buffer.as_ref();
        u16::from_be_bytes([data[field::PROTOCOL_ID.start], data[3]])
    }

    /// MBAP length: number of bytes following the length field.
    pub fn length(&self) -> u16 {
        let data = self.buffer.as_ref();
        u16::from_be_bytes([data[field::LENGTH.start], data[5]])
    }

    /// MBAP unit identifier.
    pub fn unit_id(&self) -> u8 {
        self.buffer.as_ref()[field::UNIT_ID]
    }

    /// Raw function code byte (exception responses have bit 7 set).
    pub fn function(&self) -> u8 {
        self.buffer.as_ref()[field::FUNCTION]
    }

    /// Function code with the exception bit cleared.
    pub fn function_code(&self) -> FunctionCode {
        FunctionCode::from(self.function() & 0x7F)
    }

    /// Whether the function code has the exception bit (0x80) set.
    pub fn is_exception(&self) -> bool {
        self.function() & 0x80 != 0
    }

    /// Total ADU length announced by the header: `6 + length`.
    pub fn adu_len(&self) -> usize {
        field::LENGTH.end + usize::from(self.length())
    }

    /// The PDU: function code followed by data.
    pub fn pdu(&self) -> &[u8] {
        &self.buffer.as_ref()[field::FUNCTION..self.adu_len()]
    }

    /// The PDU data (everything after the function code).
    pub fn data(&self) -> &[u8] {
        let end = self.adu_len();
        &self.buffer.as_ref()[field::PAYLOAD.start..end]
    }

    /// Parses the PDU as a request.
    pub fn request(&self) -> Result<Request<'_>, Error> {
        Request::parse(self.function(), self.data())
    }

    /// Parses the PDU as a response.
    pub fn response(&self) -> Result<Response<'_>, Error> {
        Response::parse(self.function(), self.data())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_u16(&mut self, field: field::Field, value: u16) {
        self.buffer.as_mut()[field].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the MBAP transaction identifier.
    pub fn set_transaction_id(&mut self, value: u16) {
        self.set_u16(field::TRANSACTION_ID, value)
    }

    /// Sets the MBAP protocol identifier.
    pub fn set_protocol_id(&mut self, value: u16) {
        self.set_u16(field::PROTOCOL_ID, value)
    }

    /// Sets the MBAP length field.
    pub fn set_length(&mut self, value: u16) {
        self.set_u16(field::LENGTH, value)
    }

    /// Sets the MBAP unit identifier.
    pub fn set_unit_id(&mut self, value: u8) {
        self.buffer.as_mut()[field::UNIT_ID] = value
    }

    /// Sets the raw function code byte.
    pub fn set_function(&mut self, value: u8) {
        self.buffer.as_mut()[field::FUNCTION] = value
    }

    /// Writes a complete MBAP header (protocol id 0) for a PDU of `pdu_len`
    /// bytes (`pdu_len` must be in 1..=253).
    pub fn emit_header(&mut self, transaction_id: u16, unit_id: u8, pdu_len: usize) {
        debug_assert!((1..=MAX_PDU_LEN).contains(&pdu_len));
        self.set_transaction_id(transaction_id);
        self.set_protocol_id(0);
        self.set_length(1 + pdu_len as u16);
        self.set_unit_id(unit_id);
    }

    /// Mutable PDU (function code + data), sized by the length field.
    pub fn pdu_mut(&mut self) -> &mut [u8] {
        let end = self.adu_len();
        &mut self.buffer.as_mut()[field::FUNCTION..end]
    }

    /// Mutable PDU data, sized by the length field.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let end = self.adu_len();
        &mut self.buffer.as_mut()[field::PAYLOAD.start..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Reference type of every file record sub-request (AP §6.14).
pub const FILE_REFERENCE_TYPE: u8 = 6;
/// Highest record number in a file (AP §6.14: 0x0000 to 0x270F).
pub const MAX_FILE_RECORD: u16 = 0x270F;
/// MEI type for CANopen General Reference (AP §6.20).
pub const MEI_CANOPEN: u8 = 0x0D;
/// MEI type for Read Device Identification (AP §6.21).
pub const MEI_READ_DEVICE_ID: u8 = 0x0E;

/// Iterator over big-endian `u16` register values borrowed from a PDU.
#[derive(Debug, Clone)]
pub struct RegisterValues<'a> {
    single: Option<u16>,
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl<'a> RegisterValues<'a> {
    /// Values packed big-endian in `bytes`; an odd final byte is ignored.
    pub fn new(bytes: &'a [u8]) -> Self {
        RegisterValues { single: None, chunks: bytes.chunks_exact(2) }
    }

    /// A single value (used for FC 06, which carries it inline).
    pub fn single(value: u16) -> Self {
        RegisterValues { single: Some(value), chunks: [].chunks_exact(2) }
    }
}

impl Iterator for RegisterValues<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        if let Some(value) = self.single.take() {
            return Some(value);
        }
        match self.chunks.next()? {
            &[hi, lo] => Some(u16::from_be_bytes([hi, lo])),
            _ => None,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.chunks.len() + usize::from(self.single.is_some());
        (n, Some(n))
    }
}

impl ExactSizeIterator for RegisterValues<'_> {}

/// One FC 20 sub-request: read `length` registers of `file` from `record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRecordRead {
    pub file: u16,
    pub record: u16,
    pub length: u16,
}

/// One FC 21 sub-request: write `data` (2 bytes per register) to `file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRecordWrite<'a> {
    pub file: u16,
    pub record: u16,
    pub data: &'a [u8],
}

impl<'a> FileRecordWrite<'a> {
    /// Record length in registers.
    pub fn length(&self) -> u16 {
        (self.data.len() / 2) as u16
    }

    /// The register values to write.
    pub fn values(&self) -> RegisterValues<'a> {
        RegisterValues::new(self.data)
    }
}

/// Validates the common part of a file sub-request (reference type, file
/// number, record number, length) and returns `(file, record, length, rest)`.
fn split_file_header(function: u8, bytes: &[u8]) -> Result<(u16, u16, u16, &[u8]), Error> {
    let reference_type = read_u8(bytes, 0)?;
    if reference_type != FILE_REFERENCE_TYPE {
        return Err(Error::BadReferenceType(reference_type));
    }
    let file = read_u16(bytes, 1)?;
    let record = read_u16(bytes, 3)?;
    let length = read_u16(bytes, 5)?;
    if file == 0 {
        return Err(Error::BadValue { function, value: 0 });
    }
    if record > MAX_FILE_RECORD {
        return Err(Error::BadValue { function, value: record });
    }
    if length == 0 {
        return Err(Error::BadQuantity { function, quantity: 0 });
    }
    Ok((file, record, length, bytes.get(7..).unwrap_or_default()))
}

fn split_read_sub(bytes: &[u8]) -> Result<(FileRecordRead, &[u8]), Error> {
    let (file, record, length, rest) = split_file_header(20, bytes)?;
    Ok((FileRecordRead { file, record, length }, rest))
}

fn split_write_sub(bytes: &[u8]) -> Result<(FileRecordWrite<'_>, &[u8]), Error> {
    let (file, record, length, rest) = split_file_header(21, bytes)?;
    let data_len = 2 * usize::from(length);
    if rest.len() < data_len {
        return Err(Error::Truncated);
    }
    let (data, rest) = rest.split_at(data_len);
    Ok((FileRecordWrite { file, record, data }, rest))
}

macro_rules! file_sub_requests {
    ($(#[$meta:meta])* $list:ident, $iter:ident, $item:ty, $split:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $list<'a> {
            bytes: &'a [u8],
        }

        impl<'a> $list<'a> {
            /// The raw sub-request bytes (after the byte count).
            pub fn as_bytes(&self) -> &'a [u8] {
                self.bytes
            }

            /// Iterates the sub-requests lazily.
            pub fn iter(&self) -> $iter<'a> {
                $iter { rest: self.bytes }
            }
        }

        impl<'a> IntoIterator for $list<'a> {
            type Item = $item;
            type IntoIter = $iter<'a>;

            fn into_iter(self) -> $iter<'a> {
                self.iter()
            }
        }

        /// Lazy iterator over validated file sub-requests.
        #[derive(Debug, Clone)]
        pub struct $iter<'a> {
            rest: &'a [u8],
        }

        impl<'a> Iterator for $iter<'a> {
            type Item = $item;

            fn next(&mut self) -> Option<$item> {
                if self.rest.is_empty() {
                    return None;
                }
                match $split(self.rest) {
                    Ok((item, rest)) => {
                        self.rest = rest;
                        Some(item)
                    }
                    Err(_) => {
                        self.rest = &[];
                        None
                    }
                }
            }
        }
    };
}

file_sub_requests!(
    /// Validated FC 20 sub-requests (7 bytes each).
    FileReadRequests,
    FileReadIter,
    FileRecordRead,
    split_read_sub
);
file_sub_requests!(
    /// Validated FC 21 sub-requests (7 bytes + record data each).
    FileWriteRequests,
    FileWriteIter,
    FileRecordWrite<'a>,
    split_write_sub
);

/// A decoded request PDU. Slices borrow from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    ReadCoils {
        address: u16,
        quantity: u16,
    },
    ReadDiscreteInputs {
        address: u16,
        quantity: u16,
    },
    ReadHoldingRegisters {
        address: u16,
        quantity: u16,
    },
    ReadInputRegisters {
        address: u16,
        quantity: u16,
    },
    /// `value` is true for 0xFF00 (ON), false for 0x0000 (OFF).
    WriteSingleCoil {
        address: u16,
        value: bool,
    },
    WriteSingleRegister {
        address: u16,
        value: u16,
    },
    ReadExceptionStatus,
    /// `data` has an even length (may be empty).
    Diagnostics {
        sub_function: u16,
        data: &'a [u8],
    },
    GetCommEventCounter,
    GetCommEventLog,
    /// `values` holds `ceil(quantity / 8)` bytes, LSB first.
    WriteMultipleCoils {
        address: u16,
        quantity: u16,
        values: &'a [u8],
    },
    /// `values` holds `2 * quantity` bytes, big-endian.
    WriteMultipleRegisters {
        address: u16,
        quantity: u16,
        values: &'a [u8],
    },
    ReportServerId,
    ReadFileRecord(FileReadRequests<'a>),
    WriteFileRecord(FileWriteRequests<'a>),
    MaskWriteRegister {
        address: u16,
        and_mask: u16,
        or_mask: u16,
    },
    ReadWriteMultipleRegisters {
        read_address: u16,
        read_quantity: u16,
        write_address: u16,
        write_quantity: u16,
        /// `2 * write_quantity` bytes, big-endian.
        values: &'a [u8],
    },
    /// `address` is the FIFO pointer address.
    ReadFifoQueue {
        address: u16,
    },
    /// FC 43 / MEI 0x0E; `read_code` is 1..=4.
    ReadDeviceIdentification {
        read_code: u8,
        object_id: u8,
    },
    /// FC 43 / MEI 0x0D; `data` is the opaque CANopen payload.
    CanOpenGeneralReference {
        data: &'a [u8],
    },
    /// A function code in 1..=127 without a decoder.
    Unknown {
        function: u8,
        data: &'a [u8],
    },
}

/// Requires the bytes of `data` from `offset` on to be exactly `byte_count`
/// long and returns them.
fn counted(function: u8, data: &[u8], offset: usize, byte_count: u8) -> Result<&[u8], Error> {
    let rest = data.get(offset..).ok_or(Error::Truncated)?;
    exact_len(function, rest, usize::from(byte_count))?;
    Ok(rest)
}

/// Parses `address, quantity` (exactly 4 bytes) with `1 <= quantity <= max`.
fn parse_range(function: u8, data: &[u8], max: u16) -> Result<(u16, u16), Error> {
    exact_len(function, data, 4)?;
    let address = read_u16(data, 0)?;
    let quantity = read_u16(data, 2)?;
    check_quantity(function, quantity, max)?;
    check_span(address, quantity)?;
    Ok((address, quantity))
}

/// Parses `address, quantity, byte count, values` for FC 15 / FC 16.
fn parse_write_multiple(
    function: u8,
    data: &[u8],
    max: u16,
    bytes_for: fn(u16) -> usize,
) -> Result<(u16, u16, &[u8]), Error> {
    let address = read_u16(data, 0)?;
    let quantity = read_u16(data, 2)?;
    let byte_count = read_u8(data, 4)?;
    check_quantity(function, quantity, max)?;
    check_span(address, quantity)?;
    let expected = bytes_for(quantity);
    if usize::from(byte_count) != expected {
        return Err(Error::ByteCountMismatch { function, byte_count, expected });
    }
    Ok((address, quantity, counted(function, data, 5, byte_count)?))
}

const fn register_bytes(quantity: u16) -> usize {
    2 * quantity as usize
}

impl<'a> Request<'a> {
    /// Decodes a request PDU. `function` is the function code byte and
    /// `data` the PDU bytes after it; `data` must be consumed exactly.
    pub fn parse(function: u8, data: &'a [u8]) -> Result<Request<'a>, Error> {
        let f = function;
        if f == 0 || f >= 0x80 {
            return Err(Error::BadFunction(f));
        }
        if data.len() > MAX_PDU_LEN - 1 {
            return Err(Error::BadDataLength { function: f, len: data.len() });
        }
        let request = match FunctionCode::from(f) {
            FunctionCode::ReadCoils => {
                let (address, quantity) = parse_range(f, data, 2000)?;
                Request::ReadCoils { address, quantity }
            }
            FunctionCode::ReadDiscreteInputs => {
                let (address, quantity) = parse_range(f, data, 2000)?;
                Request::ReadDiscreteInputs { address, quantity }
            }
            FunctionCode::ReadHoldingRegisters => {
                let (address, quantity) = parse_range(f, data, 125)?;
                Request::ReadHoldingRegisters { address, quantity }
            }
            FunctionCode::ReadInputRegisters => {
                let (address, quantity) = parse_range(f, data, 125)?;
                Request::ReadInputRegisters { address, quantity }
            }
            FunctionCode::WriteSingleCoil => {
                exact_len(f, data, 4)?;
                let address = read_u16(data, 0)?;
                let value = match read_u16(data, 2)? {
                    0xFF00 => true,
                    0x0000 => false,
                    value => return Err(Error::BadValue { function: f, value }),
                };
                Request::WriteSingleCoil { address, value }
            }
            FunctionCode::WriteSingleRegister => {
                exact_len(f, data, 4)?;
                Request::WriteSingleRegister { address: read_u16(data, 0)?, value: read_u16(data, 2)? }
            }
            FunctionCode::ReadExceptionStatus => {
                exact_len(f, data, 0)?;
                Request::ReadExceptionStatus
            }
            FunctionCode::Diagnostics => {
                let sub_function = read_u16(data, 0)?;
                let rest = data.get(2..).unwrap_or_default();
                if rest.len() % 2 != 0 {
                    return Err(Error::BadDataLength { function: f, len: data.len() });
                }
                Request::Diagnostics { sub_function, data: rest }
            }
            FunctionCode::GetCommEventCounter => {
                exact_len(f, data, 0)?;
                Request::GetCommEventCounter
            }
            FunctionCode::GetCommEventLog => {
                exact_len(f, data, 0)?;
                Request::GetCommEventLog
            }
            FunctionCode::WriteMultipleCoils => {
                let (address, quantity, values) = parse_write_multiple(f, data, 0x7B0, bit_bytes)?;
                Request::WriteMultipleCoils { address, quantity, values }
            }
            FunctionCode::WriteMultipleRegisters => {
                let (address, quantity, values) = parse_write_multiple(f, data, 0x7B, register_bytes)?;
                Request::WriteMultipleRegisters { address, quantity, values }
            }
            FunctionCode::ReportServerId => {
                exact_len(f, data, 0)?;
                Request::ReportServerId
            }
            FunctionCode::ReadFileRecord => {
                let byte_count = read_u8(data, 0)?;
                if !(0x07..=0xF5).contains(&byte_count) || byte_count % 7 != 0 {
                    return Err(Error::BadByteCount { function: f, byte_count });
                }
                let bytes = counted(f, data, 1, byte_count)?;
                // The expected response (function code, response data length,
                // then per sub-request: length, reference type, 2 * length
                // bytes) must fit in a 253-byte PDU (AP §6.14).
                let mut response_len = 2usize;
                let mut rest = bytes;
                while !rest.is_empty() {
                    let (sub, tail) = split_read_sub(rest)?;
                    response_len += 2 + 2 * usize::from(sub.length);
                    if response_len > MAX_PDU_LEN {
                        return Err(Error::BadQuantity { function: f, quantity: sub.length });
                    }
                    rest = tail;
                }
                Request::ReadFileRecord(FileReadRequests { bytes })
            }
            FunctionCode::WriteFileRecord => {
                let byte_count = read_u8(data, 0)?;
                if !(0x09..=0xFB).contains(&byte_count) {
                    return Err(Error::BadByteCount { function: f, byte_count });
                }
                let bytes = counted(f, data, 1, byte_count)?;
                let mut rest = bytes;
                while !rest.is_empty() {
                    rest = split_write_sub(rest)?.1;
                }
                Request::WriteFileRecord(FileWriteRequests { bytes })
            }
            FunctionCode::MaskWriteRegister => {
                exact_len(f, data, 6)?;
                Request::MaskWriteRegister {
                    address: read_u16(data, 0)?,
                    and_mask: read_u16(data, 2)?,
                    or_mask: read_u16(data, 4)?,
                }
            }
            FunctionCode::ReadWriteMultipleRegisters => {
                let read_address = read_u16(data, 0)?;
                let read_quantity = read_u16(data, 2)?;
                let write_address = read_u16(data, 4)?;
                let write_quantity = read_u16(data, 6)?;
                let byte_count = read_u8(data, 8)?;
                check_quantity(f, read_quantity, 0x7D)?;
                check_quantity(f, write_quantity, 0x79)?;
                check_span(read_address, read_quantity)?;
                check_span(write_address, write_quantity)?;
                let expected = register_bytes(write_quantity);
                if usize::from(byte_count) != expected {
                    return Err(Error::ByteCountMismatch { function: f, byte_count, expected });
                }
                Request::ReadWriteMultipleRegisters {
                    read_address,
                    read_quantity,
                    write_address,
                    write_quantity,
                    values: counted(f, data, 9, byte_count)?,
                }
            }
            FunctionCode::ReadFifoQueue => {
                exact_len(f, data, 2)?;
                Request::ReadFifoQueue { address: read_u16(data, 0)? }
            }
            FunctionCode::EncapsulatedInterfaceTransport => match read_u8(data, 0)? {
                MEI_READ_DEVICE_ID => {
                    exact_len(f, data, 3)?;
                    let read_code = read_u8(data, 1)?;
                    if !(1..=4).contains(&read_code) {
                        return Err(Error::BadValue { function: f, value: read_code.into() });
                    }
                    Request::ReadDeviceIdentification { read_code, object_id: read_u8(data, 2)? }
                }
                MEI_CANOPEN => Request::CanOpenGeneralReference { data: data.get(1..).unwrap_or_default() },
                mei => return Err(Error::BadMeiType(mei)),
            },
            FunctionCode::Unknown(_) => Request::Unknown { function: f, data },
        };
        Ok(request)
    }
}

/// Sequential big-endian writer. Panics if the buffer is too short (caller
/// bug: size it with `pdu_len`).
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    fn u8(&mut self, value: u8) -> &mut Self {
        self.buf[self.pos] = value;
        self.pos += 1;
        self
    }

    fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes(&value.to_be_bytes())
    }

    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
        self
    }
}

/// Data table addressed by a request (AP §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Coils,
    DiscreteInputs,
    InputRegisters,
    HoldingRegisters,
}

/// A contiguous span of one table: `start .. start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Range {
    pub table: Table,
    pub start: u16,
    pub count: u16,
}

impl Range {
    /// Last address in the span (`count` is never 0 for parsed requests).
    pub fn end_inclusive(&self) -> u16 {
        self.start.saturating_add(self.count.saturating_sub(1))
    }
}

/// Coarse operation class for policy decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpClass {
    Read,
    Write,
    Diagnostic,
    Program,
    /// Changes the device's state without writing data (FC 08 restart,
    /// listen-only mode, counter clears).
    Control,
    Other,
}

/// What a request reads and writes, for access-control policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Access {
    pub class: OpClass,
    pub read: Option<Range>,
    pub write: Option<Range>,
}

impl<'a> Request<'a> {
    /// The function code of this request.
    pub fn function(&self) -> FunctionCode {
        FunctionCode::from(self.function_byte())
    }

    fn function_byte(&self) -> u8 {
        match *self {
            Request::ReadCoils { .. } => 1,
            Request::ReadDiscreteInputs { .. } => 2,
            Request::ReadHoldingRegisters { .. } => 3,
            Request::ReadInputRegisters { .. } => 4,
            Request::WriteSingleCoil { .. } => 5,
            Request::WriteSingleRegister { .. } => 6,
            Request::ReadExceptionStatus => 7,
            Request::Diagnostics { .. } => 8,
            Request::GetCommEventCounter => 11,
            Request::GetCommEventLog => 12,
            Request::WriteMultipleCoils { .. } => 15,
            Request::WriteMultipleRegisters { .. } => 16,
            Request::ReportServerId => 17,
            Request::ReadFileRecord(_) => 20,
            Request::WriteFileRecord(_) => 21,
            Request::MaskWriteRegister { .. } => 22,
            Request::ReadWriteMultipleRegisters { .. } => 23,
            Request::ReadFifoQueue { .. } => 24,
            Request::ReadDeviceIdentification { .. } => 43,
            Request::CanOpenGeneralReference { .. } => 43,
            Request::Unknown { function, .. } => function,
        }
    }

    /// Length of the emitted PDU (function code + data).
    pub fn pdu_len(&self) -> usize {
        1 + match *self {
            Request::ReadCoils { .. }
            | Request::ReadDiscreteInputs { .. }
            | Request::ReadHoldingRegisters { .. }
            | Request::ReadInputRegisters { .. }
            | Request::WriteSingleCoil { .. }
            | Request::WriteSingleRegister { .. } => 4,
            Request::ReadExceptionStatus
            | Request::GetCommEventCounter
            | Request::GetCommEventLog
            | Request::ReportServerId => 0,
            Request::Diagnostics { data, .. } => 2 + data.len(),
            Request::WriteMultipleCoils { values, .. } | Request::WriteMultipleRegisters { values, .. } => {
                5 + values.len()
            }
            Request::ReadFileRecord(subs) => 1 + subs.bytes.len(),
            Request::WriteFileRecord(subs) => 1 + subs.bytes.len(),
            Request::MaskWriteRegister { .. } => 6,
            Request::ReadWriteMultipleRegisters { values, .. } => 9 + values.len(),
            Request::ReadFifoQueue { .. } => 2,
            Request::ReadDeviceIdentification { .. } => 3,
            Request::CanOpenGeneralReference { data } => 1 + data.len(),
            Request::Unknown { data, .. } => data.len(),
        }
    }

    /// Writes the PDU (function code + data) into `buf` and returns its
    /// length. For a parsed request the output equals the parsed input.
    ///
    /// # Panics
    /// If `buf` is shorter than [`Request::pdu_len`] (never for a buffer of
    /// [`MAX_PDU_LEN`] bytes and a parsed request).
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let mut w = Writer::new(buf);
        w.u8(self.function_byte());
        match *self {
            Request::ReadCoils { address, quantity }
            | Request::ReadDiscreteInputs { address, quantity }
            | Request::ReadHoldingRegisters { address, quantity }
            | Request::ReadInputRegisters { address, quantity } => {
                w.u16(address).u16(quantity);
            }
            Request::WriteSingleCoil { address, value } => {
                w.u16(address).u16(if value { 0xFF00 } else { 0x0000 });
            }
            Request::WriteSingleRegister { address, value } => {
                w.u16(address).u16(value);
            }
            Request::ReadExceptionStatus
            | Request::GetCommEventCounter
            | Request::GetCommEventLog
            | Request::ReportServerId => {}
            Request::Diagnostics { sub_function, data } => {
                w.u16(sub_function).bytes(data);
            }
            Request::WriteMultipleCoils { address, quantity, values }
            | Request::WriteMultipleRegisters { address, quantity, values } => {
                w.u16(address).u16(quantity).u8(values.len() as u8);
                w.bytes(values);
            }
            Request::ReadFileRecord(FileReadRequests { bytes })
            | Request::WriteFileRecord(FileWriteRequests { bytes }) => {
                w.u8(bytes.len() as u8).bytes(bytes);
            }
            Request::MaskWriteRegister { address, and_mask, or_mask } => {
                w.u16(address).u16(and_mask).u16(or_mask);
            }
            Request::ReadWriteMultipleRegisters {
                read_address,
                read_quantity,
                write_address,
                write_quantity,
                values,
            } => {
                w.u16(read_address).u16(read_quantity);
                w.u16(write_address).u16(write_quantity);
                w.u8(values.len() as u8).bytes(values);
            }
            Request::ReadFifoQueue { address } => {
                w.u16(address);
            }
            Request::ReadDeviceIdentification { read_code, object_id } => {
                w.u8(MEI_READ_DEVICE_ID).u8(read_code).u8(object_id);
            }
            Request::CanOpenGeneralReference { data } => {
                w.u8(MEI_CANOPEN).bytes(data);
            }
            Request::Unknown { data, .. } => {
                w.bytes(data);
            }
        }
        w.pos
    }

    /// Classifies the request and the table spans it reads and writes.
    pub fn access(&self) -> Access {
        let span = |table, start, count| Some(Range { table, start, count });
        let (class, read, write) = match *self {
            Request::ReadCoils { address, quantity } => (OpClass::Read, span(Table::Coils, address, quantity), None),
            Request::ReadDiscreteInputs { address, quantity } => {
                (OpClass::Read, span(Table::DiscreteInputs, address, quantity), None)
            }
            Request::ReadHoldingRegisters { address, quantity } => {
                (OpClass::Read, span(Table::HoldingRegisters, address, quantity), None)
            }
            Request::ReadInputRegisters { address, quantity } => {
                (OpClass::Read, span(Table::InputRegisters, address, quantity), None)
            }
            Request::WriteSingleCoil { address, .. } => (OpClass::Write, None, span(Table::Coils, address, 1)),
            Request::WriteMultipleCoils { address, quantity, .. } => {
                (OpClass::Write, None, span(Table::Coils, address, quantity))
            }
            Request::WriteSingleRegister { address, .. } | Request::MaskWriteRegister { address, .. } => {
                (OpClass::Write, None, span(Table::HoldingRegisters, address, 1))
            }
            Request::WriteMultipleRegisters { address, quantity, .. } => {
                (OpClass::Write, None, span(Table::HoldingRegisters, address, quantity))
            }
            Request::ReadWriteMultipleRegisters {
                read_address, read_quantity, write_address, write_quantity, ..
            } => (
                OpClass::Write,
                span(Table::HoldingRegisters, read_address, read_quantity),
                span(Table::HoldingRegisters, write_address, write_quantity),
            ),
            // The count register and up to 31 queued registers (AP 6.18).
            Request::ReadFifoQueue { address } => {
                let count = (0x1_0000 - u32::from(address)).min(32) as u16;
                (OpClass::Read, span(Table::HoldingRegisters, address, count), None)
            }
            Request::ReadFileRecord(_) | Request::WriteFileRecord(_) => (OpClass::Program, None, None),
            // FC 08: only the sub-functions that return data are
            // diagnostics; restart (01), ASCII delimiter (03), listen-only
            // (04) and the counter clears (0A, 14) change the device.
            Request::Diagnostics { sub_function, .. } => match sub_function {
                0x00 | 0x02 | 0x0B..=0x12 => (OpClass::Diagnostic, None, None),
                0x01 | 0x03 | 0x04 | 0x0A | 0x14 => (OpClass::Control, None, None),
                _ => (OpClass::Other, None, None),
            },
            Request::ReadExceptionStatus
            | Request::GetCommEventCounter
            | Request::GetCommEventLog
            | Request::ReportServerId
            | Request::ReadDeviceIdentification { .. } => (OpClass::Diagnostic, None, None),
            // CANopen SDO reads and writes of the object dictionary: the gate
            // does not decode them.
            Request::CanOpenGeneralReference { .. } => (OpClass::Other, None, None),
            Request::Unknown { .. } => (OpClass::Other, None, None),
        };
        Access { class, read, write }
    }

    /// Start address and values written to holding registers by FC 6, 16
    /// and 23 (for value-bound checks). `None` for other functions.
    pub fn written_registers(&self) -> Option<(u16, RegisterValues<'a>)> {
        match *self {
            Request::WriteSingleRegister { address, value } => Some((address, RegisterValues::single(value))),
            Request::WriteMultipleRegisters { address, values, .. } => Some((address, RegisterValues::new(values))),
            Request::ReadWriteMultipleRegisters { write_address, values, .. } => {
                Some((write_address, RegisterValues::new(values)))
            }
            _ => None,
        }
    }
}

/// A decoded response PDU. Slices borrow from the input buffer.
///
/// Functions without a dedicated decoder are returned raw as
/// [`Response::Other`]; their content is not validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    /// `function` is the request function (exception bit cleared).
    Exception {
        function: FunctionCode,
        code: ExceptionCode,
    },
    /// Packed coil states, LSB first; the byte count is `values.len()`.
    ReadCoils {
        values: &'a [u8],
    },
    ReadDiscreteInputs {
        values: &'a [u8],
    },
    /// Big-endian registers; see [`Response::registers`].
    ReadHoldingRegisters {
        values: &'a [u8],
    },
    ReadInputRegisters {
        values: &'a [u8],
    },
    WriteSingleCoil {
        address: u16,
        value: bool,
    },
    WriteSingleRegister {
        address: u16,
        value: u16,
    },
    WriteMultipleCoils {
        address: u16,
        quantity: u16,
    },
    WriteMultipleRegisters {
        address: u16,
        quantity: u16,
    },
    ReadWriteMultipleRegisters {
        values: &'a [u8],
    },
    Other {
        function: u8,
        data: &'a [u8],
    },
}

/// Parses `byte count, values` of a read response: byte count 1..=250
/// (2000 coils or 125 registers), even for registers, consumed exactly.
fn counted_values(function: u8, data: &[u8], registers: bool) -> Result<&[u8], Error> {
    let byte_count = read_u8(data, 0)?;
    if byte_count == 0 || byte_count > 250 || (registers && byte_count % 2 != 0) {
        return Err(Error::BadByteCount { function, byte_count });
    }
    counted(function, data, 1, byte_count)
}

impl<'a> Response<'a> {
    /// Decodes a response PDU. `function` is the function code byte and
    /// `data` the PDU bytes after it; `data` must be consumed exactly.
    pub fn parse(function: u8, data: &'a [u8]) -> Result<Response<'a>, Error> {
        let f = function;
        if f == 0 {
            return Err(Error::BadFunction(f));
        }
        if data.len() > MAX_PDU_LEN - 1 {
            return Err(Error::BadDataLength { function: f, len: data.len() });
        }
        if f & 0x80 != 0 {
            exact_len(f, data, 1)?;
            return Ok(Response::Exception {
                function: FunctionCode::from(f & 0x7F),
                code: ExceptionCode::from(read_u8(data, 0)?),
            });
        }
        let response = match FunctionCode::from(f) {
            FunctionCode::ReadCoils => Response::ReadCoils { values: counted_values(f, data, false)? },
            FunctionCode::ReadDiscreteInputs => {
                Response::ReadDiscreteInputs { values: counted_values(f, data, false)? }
            }
            FunctionCode::ReadHoldingRegisters => {
                Response::ReadHoldingRegisters { values: counted_values(f, data, true)? }
            }
            FunctionCode::ReadInputRegisters => Response::ReadInputRegisters { values: counted_values(f, data, true)? },
            FunctionCode::ReadWriteMultipleRegisters => {
                Response::ReadWriteMultipleRegisters { values: counted_values(f, data, true)? }
            }
            FunctionCode::WriteSingleCoil => {
                exact_len(f, data, 4)?;
                let address = read_u16(data, 0)?;
                let value = match read_u16(data, 2)? {
                    0xFF00 => true,
                    0x0000 => false,
                    value => return Err(Error::BadValue { function: f, value }),
                };
                Response::WriteSingleCoil { address, value }
            }
            FunctionCode::WriteSingleRegister => {
                exact_len(f, data, 4)?;
                Response::WriteSingleRegister { address: read_u16(data, 0)?, value: read_u16(data, 2)? }
            }
            FunctionCode::WriteMultipleCoils => {
                let (address, quantity) = parse_range(f, data, 0x7B0)?;
                Response::WriteMultipleCoils { address, quantity }
            }
            FunctionCode::WriteMultipleRegisters => {
                let (address, quantity) = parse_range(f, data, 0x7B)?;
                Response::WriteMultipleRegisters { address, quantity }
            }
            _ => Response::Other { function: f, data },
        };
        Ok(response)
    }

    /// The function this response answers (exception bit cleared).
    pub fn function(&self) -> FunctionCode {
        match *self {
            Response::Exception { function, .. } => function,
            _ => FunctionCode::from(self.function_byte()),
        }
    }

    /// Whether this is an exception response.
    pub fn is_exception(&self) -> bool {
        matches!(self, Response::Exception { .. })
    }

    fn function_byte(&self) -> u8 {
        match *self {
            Response::Exception { function, .. } => u8::from(function) | 0x80,
            Response::ReadCoils { .. } => 1,
            Response::ReadDiscreteInputs { .. } => 2,
            Response::ReadHoldingRegisters { .. } => 3,
            Response::ReadInputRegisters { .. } => 4,
            Response::WriteSingleCoil { .. } => 5,
            Response::WriteSingleRegister { .. } => 6,
            Response::WriteMultipleCoils { .. } => 15,
            Response::WriteMultipleRegisters { .. } => 16,
            Response::ReadWriteMultipleRegisters { .. } => 23,
            Response::Other { function, .. } => function,
        }
    }

    /// Register values of FC 3, 4 and 23 responses.
    pub fn registers(&self) -> Option<RegisterValues<'a>> {
        match *self {
            Response::ReadHoldingRegisters { values }
            | Response::ReadInputRegisters { values }
            | Response::ReadWriteMultipleRegisters { values } => Some(RegisterValues::new(values)),
            _ => None,
        }
    }

    /// Length of the emitted PDU (function code + data).
    pub fn pdu_len(&self) -> usize {
        1 + match *self {
            Response::Exception { .. } => 1,
            Response::ReadCoils { values }
            | Response::ReadDiscreteInputs { values }
            | Response::ReadHoldingRegisters { values }
            | Response::ReadInputRegisters { values }
            | Response::ReadWriteMultipleRegisters { values } => 1 + values.len(),
            Response::WriteSingleCoil { .. }
            | Response::WriteSingleRegister { .. }
            | Response::WriteMultipleCoils { .. }
            | Response::WriteMultipleRegisters { .. } => 4,
            Response::Other { data, .. } => data.len(),
        }
    }

    /// Writes the PDU into `buf` and returns its length.
    ///
    /// # Panics
    /// If `buf` is shorter than [`Response::pdu_len`].
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let mut w = Writer::new(buf);
        w.u8(self.function_byte());
        match *self {
            Response::Exception { code, .. } => {
                w.u8(code.into());
            }
            Response::ReadCoils { values }
            | Response::ReadDiscreteInputs { values }
            | Response::ReadHoldingRegisters { values }
            | Response::ReadInputRegisters { values }
            | Response::ReadWriteMultipleRegisters { values } => {
                w.u8(values.len() as u8).bytes(values);
            }
            Response::WriteSingleCoil { address, value } => {
                w.u16(address).u16(if value { 0xFF00 } else { 0x0000 });
            }
            Response::WriteSingleRegister { address, value: quantity }
            | Response::WriteMultipleCoils { address, quantity }
            | Response::WriteMultipleRegisters { address, quantity } => {
                w.u16(address).u16(quantity);
            }
            Response::Other { data, .. } => {
                w.bytes(data);
            }
        }
        w.pos
    }

    /// Whether this response is a consistent answer to `request`: same
    /// function, byte counts matching the requested quantities, echoes equal.
    pub fn answers(&self, request: &Request<'_>) -> bool {
        match (*self, *request) {
            (Response::Exception { function, .. }, req) => function == req.function(),
            (Response::ReadCoils { values }, Request::ReadCoils { quantity, .. })
            | (Response::ReadDiscreteInputs { values }, Request::ReadDiscreteInputs { quantity, .. }) => {
                values.len() == bit_bytes(quantity)
            }
            (Response::ReadHoldingRegisters { values }, Request::ReadHoldingRegisters { quantity, .. })
            | (Response::ReadInputRegisters { values }, Request::ReadInputRegisters { quantity, .. })
            | (
                Response::ReadWriteMultipleRegisters { values },
                Request::ReadWriteMultipleRegisters { read_quantity: quantity, .. },
            ) => values.len() == register_bytes(quantity),
            (Response::WriteSingleCoil { address, value }, Request::WriteSingleCoil { address: a, value: v }) => {
                address == a && value == v
            }
            (
                Response::WriteSingleRegister { address, value },
                Request::WriteSingleRegister { address: a, value: v },
            ) => address == a && value == v,
            (
                Response::WriteMultipleCoils { address, quantity },
                Request::WriteMultipleCoils { address: a, quantity: q, .. },
            )
            | (
                Response::WriteMultipleRegisters { address, quantity },
                Request::WriteMultipleRegisters { address: a, quantity: q, .. },
            ) => address == a && quantity == q,
            (Response::Other { function, .. }, req) => function == req.function_byte(),
            _ => false,
        }
    }
}

/// Writes a complete 9-byte exception ADU (MBAP length 3, `function | 0x80`,
/// `code`) and returns 9, or returns 0 if `buf` is shorter than 9 bytes.
pub fn emit_exception(buf: &mut [u8], transaction_id: u16, unit_id: u8, function: u8, code: ExceptionCode) -> usize {
    const LEN: usize = MBAP_HEADER_LEN + 2;
    let Some(adu) = buf.get_mut(..LEN) else {
        return 0;
    };
    let mut packet = Packet::new_unchecked(adu);
    packet.emit_header(transaction_id, unit_id, 2);
    packet.set_function(function | 0x80);
    packet.data_mut()[0] = code.into();
    LEN
}

/// A header anomaly that makes a Modbus/TCP stream unframeable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    BadProtocolId(u16),
    BadLength(u16),
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Anomaly::BadProtocolId(id) => Error::BadProtocolId(id).fmt(f),
            Anomaly::BadLength(len) => Error::BadLength(len).fmt(f),
        }
    }
}

/// Result of one [`Framer::next`] step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// `buf[..adu_len]` is one complete ADU (`adu_len` is 8..=260). Consume
    /// it and call again with the rest.
    Done { adu_len: usize },
    /// No complete ADU yet; nothing can be decided until the buffer holds at
    /// least `at_least` bytes (counted from the start of `buf`).
    NeedMore { at_least: usize },
    /// The header is invalid. There is no resynchronisation: the stream must
    /// be dropped.
    Reject(Anomaly),
}

/// Splits a Modbus/TCP byte stream into ADUs using the MBAP header only.
///
/// The framer owns no buffer: the caller accumulates bytes and passes the
/// unconsumed part. Every step either completes an ADU of at least
/// [`MIN_ADU_LEN`] bytes, asks for more bytes, or rejects: it never
/// "consumes nothing" and never skips bytes looking for a plausible header.
/// The protocol id is rejected as soon as 4 bytes are present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Framer;

impl Framer {
    /// Creates a framer.
    pub const fn new() -> Self {
        Framer
    }

    /// Examines the start of `buf` and reports the next framing step.
    pub fn next(&mut self, buf: &[u8]) -> Progress {
        if let Ok(protocol_id) = read_u16(buf, field::PROTOCOL_ID.start) {
            if protocol_id != 0 {
                return Progress::Reject(Anomaly::BadProtocolId(protocol_id));
            }
        }
        let Ok(length) = read_u16(buf, field::LENGTH.start) else {
            return Progress::NeedMore { at_least: MIN_ADU_LEN };
        };
        if !(MIN_MBAP_LENGTH..=MAX_MBAP_LENGTH).contains(&length) {
            return Progress::Reject(Anomaly::BadLength(length));
        }
        let adu_len = field::LENGTH.end + usize::from(length);
        if buf.len() < adu_len {
            Progress::NeedMore { at_least: adu_len }
        } else {
            Progress::Done { adu_len }
        }
    }
}

/// An outstanding request awaiting its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub tid: u16,
    pub unit: u8,
    pub function: u8,
    /// Caller-defined timestamp (e.g. milliseconds).
    pub sent_at: u64,
}

/// Why [`Transactions::insert`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxError {
    /// All `N` slots are in use.
    Full,
    /// A request with the same transaction id is already outstanding.
    Duplicate,
}

impl fmt::Display for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxError::Full => write!(f, "transaction table full"),
            TxError::Duplicate => write!(f, "duplicate transaction id"),
        }
    }
}

impl std::error::Error for TxError {}

/// Fixed-capacity table of outstanding transactions keyed by transaction id
/// (TCP §3.1.3: the server copies the transaction id into the response).
/// No allocation; operations are O(N).
#[derive(Debug, Clone)]
pub struct Transactions<const N: usize> {
    slots: [Option<Entry>; N],
    len: usize,
}

impl<const N: usize> Default for Transactions<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Transactions<N> {
    /// Creates an empty table.
    pub const fn new() -> Self {
        Transactions { slots: [None; N], len: 0 }
    }

    /// Records an outstanding request.
    pub fn insert(&mut self, entry: Entry) -> Result<(), TxError> {
        if self.get(entry.tid).is_some() {
            return Err(TxError::Duplicate);
        }
        let slot = self.slots.iter_mut().find(|slot| slot.is_none()).ok_or(TxError::Full)?;
        *slot = Some(entry);
        self.len += 1;
        Ok(())
    }

    /// The outstanding entry for `tid`, if any.
    pub fn get(&self, tid: u16) -> Option<&Entry> {
        self.slots.iter().flatten().find(|entry| entry.tid == tid)
    }

    /// Removes and returns the outstanding entry for `tid`.
    pub fn take(&mut self, tid: u16) -> Option<Entry> {
        let slot = self.slots.iter_mut().find(|slot| matches!(slot, Some(entry) if entry.tid == tid))?;
        self.len -= 1;
        slot.take()
    }

    /// Removes and returns the oldest entry with `sent_at <= deadline`.
    pub fn take_expired(&mut self, deadline: u64) -> Option<Entry> {
        let slot = self
            .slots
            .iter_mut()
            .filter(|slot| matches!(slot, Some(entry) if entry.sent_at <= deadline))
            .min_by_key(|slot| slot.map_or(u64::MAX, |entry| entry.sent_at))?;
        self.len -= 1;
        slot.take()
    }

    /// Number of outstanding entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entries are outstanding.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of outstanding entries (`N`).
    pub const fn capacity(&self) -> usize {
        N
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// Builds a full ADU from a header and an emitted PDU.
    fn encode(tid: u16, unit: u8, pdu_len: usize, emit: impl FnOnce(&mut [u8]) -> usize) -> Vec<u8> {
        let mut buf = vec![0u8; MBAP_HEADER_LEN + pdu_len];
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.emit_header(tid, unit, pdu_len);
        assert_eq!(emit(packet.pdu_mut()), pdu_len);
        buf
    }

    /// Decode, encode and round-trip a request ADU.
    fn check_req(adu: &[u8], expected: Request<'_>) {
        let packet = Packet::new_checked(adu).expect("valid ADU");
        assert_eq!(packet.adu_len(), adu.len());
        let request = packet.request().expect("valid request");
        assert_eq!(request, expected, "decode");
        assert_eq!(u8::from(request.function()), packet.function());
        let tid = packet.transaction_id();
        let unit = packet.unit_id();
        let bytes = encode(tid, unit, expected.pdu_len(), |b| expected.emit(b));
        assert_eq!(bytes, adu, "encode");
        let mut out = [0u8; MAX_PDU_LEN];
        let n = request.emit(&mut out);
        assert_eq!(&out[..n], packet.pdu(), "round-trip");
    }

    /// Decode, encode and round-trip a response ADU.
    fn check_resp(adu: &[u8], expected: Response<'_>) {
        let packet = Packet::new_checked(adu).expect("valid ADU");
        assert_eq!(packet.adu_len(), adu.len());
        let response = packet.response().expect("valid response");
        assert_eq!(response, expected, "decode");
        let tid = packet.transaction_id();
        let unit = packet.unit_id();
        let bytes = encode(tid, unit, expected.pdu_len(), |b| expected.emit(b));
        assert_eq!(bytes, adu, "encode");
        let mut out = [0u8; MAX_PDU_LEN];
        let n = response.emit(&mut out);
        assert_eq!(&out[..n], packet.pdu(), "round-trip");
    }

    // Request ADUs. PDUs are the examples of AP §6 unless noted.

    #[rustfmt::skip]
    const REQ_01: &[u8] = &[
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length: unit id + 5-byte PDU
        0x11,       // unit id
        0x01,       // function: read coils
        0x00, 0x13, // starting address 19
        0x00, 0x13, // quantity of coils 19
    ];
    #[rustfmt::skip]
    const REQ_02: &[u8] = &[
        0x00, 0x02, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length
        0x11,       // unit id
        0x02,       // function: read discrete inputs
        0x00, 0xC4, // starting address 196
        0x00, 0x16, // quantity of inputs 22
    ];
    #[rustfmt::skip]
    const REQ_03: &[u8] = &[
        0x00, 0x03, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length
        0x11,       // unit id
        0x03,       // function: read holding registers
        0x00, 0x6B, // starting address 107
        0x00, 0x03, // quantity of registers 3
    ];
    #[rustfmt::skip]
    const REQ_04: &[u8] = &[
        0x00, 0x04, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length
        0x11,       // unit id
        0x04,       // function: read input registers
        0x00, 0x08, // starting address 8
        0x00, 0x01, // quantity of registers 1
    ];
    #[rustfmt::skip]
    const REQ_05: &[u8] = &[
        0x00, 0x05, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length
        0x11,       // unit id
        0x05,       // function: write single coil
        0x00, 0xAC, // output address 172
        0xFF, 0x00, // output value ON
    ];
    #[rustfmt::skip]
    const REQ_06: &[u8] = &[
        0x00, 0x06, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length
        0x11,       // unit id
        0x06,       // function: write single register
        0x00, 0x01, // register address 1
        0x00, 0x03, // register value 3
    ];
    #[rustfmt::skip]
    const REQ_07: &[u8] = &[
        0x00, 0x07, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x02, // length: unit id + function code only
        0x11,       // unit id
        0x07,       // function: read exception status (no data)
    ];
    #[rustfmt::skip]
    const REQ_08: &[u8] = &[
        0x00, 0x08, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length
        0x11,       // unit id
        0x08,       // function: diagnostics
        0x00, 0x00, // sub-function 0: return query data
        0xA5, 0x37, // data (echoed)
    ];
    #[rustfmt::skip]
    const REQ_11: &[u8] = &[
        0x00, 0x0B, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x02, // length
        0x11,       // unit id
        0x0B,       // function: get comm event counter (no data)
    ];
    #[rustfmt::skip]
    const REQ_12: &[u8] = &[
        0x00, 0x0C, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x02, // length
        0x11,       // unit id
        0x0C,       // function: get comm event log (no data)
    ];

    #[test]
    fn read_fifo_queue_reads_up_to_32_registers() {
        // FC 24 returns the FIFO count and up to 31 queued registers (AP
        // 6.18): 32 registers from the pointer address on.
        let req = Request::parse(24, &[0x00, 100]).unwrap();
        let read = req.access().read.unwrap();
        assert!(read.count >= 32, "the policy is told FC 24 reads {} register(s) at {}", read.count, read.start);
    }

    #[test]
    fn request_read_bits_and_registers() {
        check_req(REQ_01, Request::ReadCoils { address: 19, quantity: 19 });
        check_req(REQ_02, Request::ReadDiscreteInputs { address: 196, quantity: 22 });
        check_req(REQ_03, Request::ReadHoldingRegisters { address: 107, quantity: 3 });
        check_req(REQ_04, Request::ReadInputRegisters { address: 8, quantity: 1 });
    }

    #[test]
    fn request_write_single() {
        check_req(REQ_05, Request::WriteSingleCoil { address: 172, value: true });
        check_req(REQ_06, Request::WriteSingleRegister { address: 1, value: 3 });
    }

    #[test]
    fn request_serial_line_diagnostics() {
        check_req(REQ_07, Request::ReadExceptionStatus);
        check_req(REQ_08, Request::Diagnostics { sub_function: 0, data: &[0xA5, 0x37] });
        check_req(REQ_11, Request::GetCommEventCounter);
        check_req(REQ_12, Request::GetCommEventLog);
    }

    #[rustfmt::skip]
    const REQ_15: &[u8] = &[
        0x00, 0x0F, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x09, // length: unit id + 8-byte PDU
        0x11,       // unit id
        0x0F,       // function: write multiple coils
        0x00, 0x13, // starting address 19
        0x00, 0x0A, // quantity of outputs 10
        0x02,       // byte count = ceil(10 / 8)
        0xCD, 0x01, // outputs 27..20, 29..28
    ];
    #[rustfmt::skip]
    const REQ_16: &[u8] = &[
        0x00, 0x10, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x0B, // length: unit id + 10-byte PDU
        0x11,       // unit id
        0x10,       // function: write multiple registers
        0x00, 0x01, // starting address 1
        0x00, 0x02, // quantity of registers 2
        0x04,       // byte count = 2 * 2
        0x00, 0x0A, // register 1 = 10
        0x01, 0x02, // register 2 = 258
    ];
    #[rustfmt::skip]
    const REQ_17: &[u8] = &[
        0x00, 0x11, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x02, // length
        0x11,       // unit id
        0x11,       // function: report server id (no data)
    ];
    #[rustfmt::skip]
    const REQ_20: &[u8] = &[
        0x00, 0x14, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x11, // length: unit id + 16-byte PDU
        0x11,       // unit id
        0x14,       // function: read file record
        0x0E,       // byte count: 2 sub-requests * 7
        0x06,       // sub-request 1: reference type
        0x00, 0x04, //   file number 4
        0x00, 0x01, //   record number 1
        0x00, 0x02, //   record length 2
        0x06,       // sub-request 2: reference type
        0x00, 0x03, //   file number 3
        0x00, 0x09, //   record number 9
        0x00, 0x02, //   record length 2
    ];
    #[rustfmt::skip]
    const REQ_21: &[u8] = &[
        0x00, 0x15, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x10, // length: unit id + 15-byte PDU
        0x11,       // unit id
        0x15,       // function: write file record
        0x0D,       // request data length 13
        0x06,       // sub-request 1: reference type
        0x00, 0x04, //   file number 4
        0x00, 0x07, //   record number 7
        0x00, 0x03, //   record length 3
        0x06, 0xAF, //   data
        0x04, 0xBE,
        0x10, 0x0D,
    ];
    #[rustfmt::skip]
    const REQ_22: &[u8] = &[
        0x00, 0x16, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x08, // length: unit id + 7-byte PDU
        0x11,       // unit id
        0x16,       // function: mask write register
        0x00, 0x04, // reference address 4
        0x00, 0xF2, // and mask
        0x00, 0x25, // or mask
    ];
    #[rustfmt::skip]
    const REQ_23: &[u8] = &[
        0x00, 0x17, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x11, // length: unit id + 16-byte PDU
        0x11,       // unit id
        0x17,       // function: read/write multiple registers
        0x00, 0x03, // read starting address 3
        0x00, 0x06, // quantity to read 6
        0x00, 0x0E, // write starting address 14
        0x00, 0x03, // quantity to write 3
        0x06,       // write byte count = 2 * 3
        0x00, 0xFF, // write registers
        0x00, 0xFF,
        0x00, 0xFF,
    ];
    #[rustfmt::skip]
    const REQ_24: &[u8] = &[
        0x00, 0x18, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x04, // length: unit id + 3-byte PDU
        0x11,       // unit id
        0x18,       // function: read FIFO queue
        0x04, 0xDE, // FIFO pointer address 1246
    ];
    #[rustfmt::skip]
    const REQ_43_13: &[u8] = &[
        0x00, 0x2B, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x07, // length: unit id + 6-byte PDU
        0x11,       // unit id
        0x2B,       // function: encapsulated interface transport
        0x0D,       // MEI type: CANopen general reference (not from AP)
        0x00, 0x01, // opaque CANopen payload
        0x02, 0x03,
    ];
    #[rustfmt::skip]
    const REQ_43_14: &[u8] = &[
        0x00, 0x2C, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x05, // length: unit id + 4-byte PDU
        0x11,       // unit id
        0x2B,       // function: encapsulated interface transport
        0x0E,       // MEI type: read device identification
        0x01,       // read device id code: basic
        0x00,       // object id: vendor name
    ];

    /// Every request constant, for tests that iterate them.
    const ALL_REQUESTS: &[&[u8]] = &[
        REQ_01, REQ_02, REQ_03, REQ_04, REQ_05, REQ_06, REQ_07, REQ_08, REQ_11, REQ_12, REQ_15, REQ_16, REQ_17, REQ_20,
        REQ_21, REQ_22, REQ_23, REQ_24, REQ_43_13, REQ_43_14,
    ];

    /// Returns the PDU data of a request constant (after the function code).
    fn data_of(adu: &[u8]) -> &[u8] {
        &adu[8..]
    }

    #[test]
    fn request_write_multiple() {
        check_req(REQ_15, Request::WriteMultipleCoils { address: 19, quantity: 10, values: &[0xCD, 0x01] });
        check_req(
            REQ_16,
            Request::WriteMultipleRegisters { address: 1, quantity: 2, values: &[0x00, 0x0A, 0x01, 0x02] },
        );
        check_req(REQ_17, Request::ReportServerId);
    }

    #[test]
    fn request_file_records() {
        let subs = data_of(REQ_20).get(1..).unwrap();
        check_req(REQ_20, Request::ReadFileRecord(FileReadRequests { bytes: subs }));
        let Ok(Request::ReadFileRecord(list)) = Request::parse(20, data_of(REQ_20)) else {
            panic!("expected FC 20");
        };
        let items: Vec<_> = list.iter().collect();
        assert_eq!(
            items,
            [FileRecordRead { file: 4, record: 1, length: 2 }, FileRecordRead { file: 3, record: 9, length: 2 },]
        );

        let subs = data_of(REQ_21).get(1..).unwrap();
        check_req(REQ_21, Request::WriteFileRecord(FileWriteRequests { bytes: subs }));
        let Ok(Request::WriteFileRecord(list)) = Request::parse(21, data_of(REQ_21)) else {
            panic!("expected FC 21");
        };
        let items: Vec<_> = list.into_iter().collect();
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].file, items[0].record, items[0].length()), (4, 7, 3));
        assert_eq!(items[0].values().collect::<Vec<_>>(), [0x06AF, 0x04BE, 0x100D]);
    }

    #[test]
    fn request_mask_fifo_readwrite() {
        check_req(REQ_22, Request::MaskWriteRegister { address: 4, and_mask: 0xF2, or_mask: 0x25 });
        check_req(
            REQ_23,
            Request::ReadWriteMultipleRegisters {
                read_address: 3,
                read_quantity: 6,
                write_address: 14,
                write_quantity: 3,
                values: &[0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF],
            },
        );
        check_req(REQ_24, Request::ReadFifoQueue { address: 0x04DE });
    }

    #[test]
    fn request_encapsulated_interface_transport() {
        check_req(REQ_43_13, Request::CanOpenGeneralReference { data: &[0, 1, 2, 3] });
        check_req(REQ_43_14, Request::ReadDeviceIdentification { read_code: 1, object_id: 0 });
        assert_eq!(
            Request::parse(43, data_of(REQ_43_14)).map(|r| r.function()),
            Ok(FunctionCode::EncapsulatedInterfaceTransport)
        );
    }

    // Response ADUs (same transaction ids as the requests above).

    #[rustfmt::skip]
    const RSP_01: &[u8] = &[
        0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x11, // MBAP: tid 1, length 6, unit 0x11
        0x01,             // function: read coils
        0x03,             // byte count
        0xCD, 0x6B, 0x05, // coils 27..20, 35..28, 38..36
    ];
    #[rustfmt::skip]
    const RSP_02: &[u8] = &[
        0x00, 0x02, 0x00, 0x00, 0x00, 0x06, 0x11, // MBAP: tid 2, length 6
        0x02,             // function: read discrete inputs
        0x03,             // byte count
        0xAC, 0xDB, 0x35, // inputs 203..196, 211..204, 217..212
    ];
    #[rustfmt::skip]
    const RSP_03: &[u8] = &[
        0x00, 0x03, 0x00, 0x00, 0x00, 0x09, 0x11, // MBAP: tid 3, length 9
        0x03,       // function: read holding registers
        0x06,       // byte count = 2 * 3
        0x02, 0x2B, // register 107 = 555
        0x00, 0x00, // register 108 = 0
        0x00, 0x64, // register 109 = 100
    ];
    #[rustfmt::skip]
    const RSP_04: &[u8] = &[
        0x00, 0x04, 0x00, 0x00, 0x00, 0x05, 0x11, // MBAP: tid 4, length 5
        0x04,       // function: read input registers
        0x02,       // byte count
        0x00, 0x0A, // register 8 = 10
    ];
    #[rustfmt::skip]
    const RSP_05: &[u8] = &[
        0x00, 0x05, 0x00, 0x00, 0x00, 0x06, 0x11, // MBAP: tid 5, length 6
        0x05,       // function: write single coil (echo)
        0x00, 0xAC, // output address 172
        0xFF, 0x00, // output value ON
    ];
    #[rustfmt::skip]
    const RSP_06: &[u8] = &[
        0x00, 0x06, 0x00, 0x00, 0x00, 0x06, 0x11, // MBAP: tid 6, length 6
        0x06,       // function: write single register (echo)
        0x00, 0x01, // register address 1
        0x00, 0x03, // register value 3
    ];
    #[rustfmt::skip]
    const RSP_07: &[u8] = &[
        0x00, 0x07, 0x00, 0x00, 0x00, 0x03, 0x11, // MBAP: tid 7, length 3
        0x07, // function: read exception status
        0x6D, // output data
    ];
    #[rustfmt::skip]
    const RSP_08: &[u8] = &[
        0x00, 0x08, 0x00, 0x00, 0x00, 0x06, 0x11, // MBAP: tid 8, length 6
        0x08,       // function: diagnostics
        0x00, 0x00, // sub-function 0 (echo)
        0xA5, 0x37, // data (echo)
    ];
    #[rustfmt::skip]
    const RSP_11: &[u8] = &[
        0x00, 0x0B, 0x00, 0x00, 0x00, 0x06, 0x11, // MBAP: tid 11, length 6
        0x0B,       // function: get comm event counter
        0xFF, 0xFF, // status: busy
        0x01, 0x08, // event count 264
    ];
    #[rustfmt::skip]
    const RSP_12: &[u8] = &[
        0x00, 0x0C, 0x00, 0x00, 0x00, 0x0B, 0x11, // MBAP: tid 12, length 11
        0x0C,       // function: get comm event log
        0x08,       // byte count
        0x00, 0x00, // status
        0x01, 0x08, // event count 264
        0x01, 0x21, // message count 289
        0x20, 0x00, // events
    ];
    #[rustfmt::skip]
    const RSP_15: &[u8] = &[
        0x00, 0x0F, 0x00, 0x00, 0x00, 0x06, 0x11, // MBAP: tid 15, length 6
        0x0F,       // function: write multiple coils
        0x00, 0x13, // starting address 19
        0x00, 0x0A, // quantity of outputs 10
    ];
    #[rustfmt::skip]
    const RSP_16: &[u8] = &[
        0x00, 0x10, 0x00, 0x00, 0x00, 0x06, 0x11, // MBAP: tid 16, length 6
        0x10,       // function: write multiple registers
        0x00, 0x01, // starting address 1
        0x00, 0x02, // quantity of registers 2
    ];
    #[rustfmt::skip]
    const RSP_17: &[u8] = &[
        0x00, 0x11, 0x00, 0x00, 0x00, 0x06, 0x11, // MBAP: tid 17, length 6
        0x11, // function: report server id
        0x03, // byte count
        0x2A, // server id (device specific; not from AP)
        0xFF, // run indicator: ON
        0x01, // additional data
    ];
    #[rustfmt::skip]
    const RSP_20: &[u8] = &[
        0x00, 0x14, 0x00, 0x00, 0x00, 0x0F, 0x11, // MBAP: tid 20, length 15
        0x14,       // function: read file record
        0x0C,       // response data length
        0x05,       // sub-response 1: file response length
        0x06,       //   reference type
        0x0D, 0xFE, //   record data
        0x00, 0x20,
        0x05,       // sub-response 2: file response length
        0x06,       //   reference type
        0x33, 0xCD, //   record data
        0x00, 0x40,
    ];
    #[rustfmt::skip]
    const RSP_21: &[u8] = &[
        0x00, 0x15, 0x00, 0x00, 0x00, 0x10, 0x11, // MBAP: tid 21, length 16
        0x15,       // function: write file record (echo of the request)
        0x0D,       // request data length 13
        0x06,       // reference type
        0x00, 0x04, // file number 4
        0x00, 0x07, // record number 7
        0x00, 0x03, // record length 3
        0x06, 0xAF, 0x04, 0xBE, 0x10, 0x0D, // data
    ];
    #[rustfmt::skip]
    const RSP_22: &[u8] = &[
        0x00, 0x16, 0x00, 0x00, 0x00, 0x08, 0x11, // MBAP: tid 22, length 8
        0x16,       // function: mask write register (echo)
        0x00, 0x04, // reference address 4
        0x00, 0xF2, // and mask
        0x00, 0x25, // or mask
    ];
    #[rustfmt::skip]
    const RSP_23: &[u8] = &[
        0x00, 0x17, 0x00, 0x00, 0x00, 0x0F, 0x11, // MBAP: tid 23, length 15
        0x17,       // function: read/write multiple registers
        0x0C,       // byte count = 2 * 6 read registers
        0x00, 0xFE, 0x0A, 0xCD, 0x00, 0x01, // read registers 3..5
        0x00, 0x03, 0x00, 0x0D, 0x00, 0xFF, // read registers 6..8
    ];
    #[rustfmt::skip]
    const RSP_24: &[u8] = &[
        0x00, 0x18, 0x00, 0x00, 0x00, 0x0A, 0x11, // MBAP: tid 24, length 10
        0x18,       // function: read FIFO queue
        0x00, 0x06, // byte count
        0x00, 0x02, // FIFO count
        0x01, 0xB8, // FIFO value register
        0x12, 0x84, // FIFO value register
    ];
    #[rustfmt::skip]
    const RSP_43_13: &[u8] = &[
        0x00, 0x2B, 0x00, 0x00, 0x00, 0x05, 0x11, // MBAP: tid 43, length 5
        0x2B,       // function: encapsulated interface transport
        0x0D,       // MEI type: CANopen general reference
        0x00, 0x01, // opaque CANopen payload
    ];
    #[rustfmt::skip]
    const RSP_43_14: &[u8] = &[
        0x00, 0x2C, 0x00, 0x00, 0x00, 0x0D, 0x11, // MBAP: tid 44, length 13
        0x2B,             // function: encapsulated interface transport
        0x0E,             // MEI type: read device identification
        0x01,             // read device id code
        0x01,             // conformity level
        0x00,             // more follows: no
        0x00,             // next object id
        0x01,             // number of objects
        0x00,             // object id 0: vendor name
        0x03,             // object length
        0x41, 0x42, 0x43, // "ABC"
    ];

    /// Every response constant, for tests that iterate them.
    const ALL_RESPONSES: &[&[u8]] = &[
        RSP_01, RSP_02, RSP_03, RSP_04, RSP_05, RSP_06, RSP_07, RSP_08, RSP_11, RSP_12, RSP_15, RSP_16, RSP_17, RSP_20,
        RSP_21, RSP_22, RSP_23, RSP_24, RSP_43_13, RSP_43_14,
    ];

    fn other(adu: &[u8]) -> Response<'_> {
        Response::Other { function: adu[7], data: &adu[8..] }
    }

    #[test]
    fn responses_decoded() {
        check_resp(RSP_01, Response::ReadCoils { values: &[0xCD, 0x6B, 0x05] });
        check_resp(RSP_02, Response::ReadDiscreteInputs { values: &[0xAC, 0xDB, 0x35] });
        check_resp(RSP_03, Response::ReadHoldingRegisters { values: &[0x02, 0x2B, 0x00, 0x00, 0x00, 0x64] });
        check_resp(RSP_04, Response::ReadInputRegisters { values: &[0x00, 0x0A] });
        check_resp(RSP_05, Response::WriteSingleCoil { address: 172, value: true });
        check_resp(RSP_06, Response::WriteSingleRegister { address: 1, value: 3 });
        check_resp(RSP_15, Response::WriteMultipleCoils { address: 19, quantity: 10 });
        check_resp(RSP_16, Response::WriteMultipleRegisters { address: 1, quantity: 2 });
        check_resp(RSP_23, Response::ReadWriteMultipleRegisters { values: &RSP_23[9..] });
        let regs: Vec<u16> = Response::parse(3, data_of(RSP_03)).unwrap().registers().unwrap().collect();
        assert_eq!(regs, [555, 0, 100]);
    }

    #[test]
    fn responses_raw() {
        for adu in [RSP_07, RSP_08, RSP_11, RSP_12, RSP_17, RSP_20, RSP_21, RSP_22, RSP_24, RSP_43_13, RSP_43_14] {
            check_resp(adu, other(adu));
        }
    }

    #[test]
    fn responses_answer_requests() {
        for (req, rsp) in ALL_REQUESTS.iter().zip(ALL_RESPONSES) {
            let request = Request::parse(req[7], data_of(req)).unwrap();
            let response = Response::parse(rsp[7], data_of(rsp)).unwrap();
            assert!(response.answers(&request), "{request:?} / {response:?}");
            assert_eq!(response.function(), request.function());
        }
        let request = Request::parse(3, data_of(REQ_03)).unwrap();
        let wrong = Response::parse(3, &[0x02, 0x00, 0x01]).unwrap();
        assert!(!wrong.answers(&request));
        let echo = Response::parse(5, &[0x00, 0xAC, 0x00, 0x00]).unwrap();
        assert!(!echo.answers(&Request::parse(5, data_of(REQ_05)).unwrap()));
    }

    #[test]
    fn exceptions() {
        #[rustfmt::skip]
        const EXC: &[u8] = &[
            0x00, 0x01, // transaction id
            0x00, 0x00, // protocol id
            0x00, 0x03, // length: unit id + 2-byte PDU
            0x11,       // unit id
            0x81,       // function: read coils | 0x80
            0x02,       // exception: illegal data address
        ];
        check_resp(
            EXC,
            Response::Exception { function: FunctionCode::ReadCoils, code: ExceptionCode::IllegalDataAddress },
        );
        let cases = [
            (0x83, 0x01, FunctionCode::ReadHoldingRegisters, ExceptionCode::IllegalFunction),
            (0x86, 0x03, FunctionCode::WriteSingleRegister, ExceptionCode::IllegalDataValue),
            (0x90, 0x04, FunctionCode::WriteMultipleRegisters, ExceptionCode::ServerDeviceFailure),
            (0x95, 0x05, FunctionCode::WriteFileRecord, ExceptionCode::Acknowledge),
            (0x97, 0x06, FunctionCode::ReadWriteMultipleRegisters, ExceptionCode::ServerDeviceBusy),
            (0x94, 0x08, FunctionCode::ReadFileRecord, ExceptionCode::MemoryParityError),
            (0xAB, 0x0A, FunctionCode::EncapsulatedInterfaceTransport, ExceptionCode::GatewayPathUnavailable),
            (0x82, 0x0B, FunctionCode::ReadDiscreteInputs, ExceptionCode::GatewayTargetFailedToRespond),
            (0xC1, 0x7F, FunctionCode::Unknown(0x41), ExceptionCode::Unknown(0x7F)),
        ];
        for (function, code, fc, ec) in cases {
            let adu = [0x12, 0x34, 0, 0, 0, 3, 0xFF, function, code];
            check_resp(&adu, Response::Exception { function: fc, code: ec });
            let mut buf = [0u8; 16];
            assert_eq!(emit_exception(&mut buf, 0x1234, 0xFF, function & 0x7F, ec), 9);
            assert_eq!(buf[..9], adu);
        }
        // Exception PDUs carry exactly one byte.
        assert_eq!(Response::parse(0x81, &[]), Err(Error::Truncated));
        assert_eq!(Response::parse(0x81, &[1, 2]), Err(Error::TrailingBytes { function: 0x81, extra: 1 }));
        // A too-short buffer is refused without writing.
        let mut short = [0xEEu8; 8];
        assert_eq!(emit_exception(&mut short, 1, 1, 3, ExceptionCode::IllegalFunction), 0);
        assert_eq!(short, [0xEE; 8]);
    }

    #[test]
    fn code_conversions_round_trip() {
        for byte in 0..=255u8 {
            assert_eq!(u8::from(FunctionCode::from(byte)), byte);
            assert_eq!(u8::from(ExceptionCode::from(byte)), byte);
        }
        assert_eq!(FunctionCode::from(43), FunctionCode::EncapsulatedInterfaceTransport);
        assert_eq!(FunctionCode::from(9), FunctionCode::Unknown(9));
        assert_eq!(ExceptionCode::from(0x0B), ExceptionCode::GatewayTargetFailedToRespond);
        assert_eq!(ExceptionCode::from(7), ExceptionCode::Unknown(7));
        assert_eq!(FunctionCode::ReadCoils.to_string(), "ReadCoils(1)");
    }

    #[test]
    fn access_classes() {
        let hr = |start, count| Some(Range { table: Table::HoldingRegisters, start, count });
        let access = |adu: &[u8]| Packet::new_checked(adu).unwrap().request().unwrap().access();
        let a = access(REQ_01);
        assert_eq!(
            (a.class, a.read, a.write),
            (OpClass::Read, Some(Range { table: Table::Coils, start: 19, count: 19 }), None)
        );
        assert_eq!(access(REQ_02).read.unwrap().table, Table::DiscreteInputs);
        assert_eq!(access(REQ_03).read, hr(107, 3));
        assert_eq!(access(REQ_04).read.unwrap().table, Table::InputRegisters);
        assert_eq!(access(REQ_05).write, Some(Range { table: Table::Coils, start: 172, count: 1 }));
        assert_eq!(access(REQ_06).write, hr(1, 1));
        assert_eq!(access(REQ_15).write, Some(Range { table: Table::Coils, start: 19, count: 10 }));
        assert_eq!(access(REQ_16).write, hr(1, 2));
        assert_eq!(access(REQ_22).write, hr(4, 1));
        let rw = access(REQ_23);
        assert_eq!((rw.class, rw.read, rw.write), (OpClass::Write, hr(3, 6), hr(14, 3)));
        assert_eq!((access(REQ_24).class, access(REQ_24).read), (OpClass::Read, hr(0x04DE, 32)));
        for adu in [REQ_05, REQ_06, REQ_15, REQ_16, REQ_22] {
            assert_eq!(access(adu).class, OpClass::Write);
            assert_eq!(access(adu).read, None);
        }
        for adu in [REQ_20, REQ_21] {
            assert_eq!(access(adu), Access { class: OpClass::Program, read: None, write: None });
        }
        for adu in [REQ_07, REQ_08, REQ_11, REQ_12, REQ_17, REQ_43_14] {
            assert_eq!(access(adu), Access { class: OpClass::Diagnostic, read: None, write: None });
        }
        assert_eq!(access(REQ_43_13), Access { class: OpClass::Other, read: None, write: None });
        let unknown = Request::parse(0x41, &[1, 2, 3]).unwrap();
        assert_eq!(unknown, Request::Unknown { function: 0x41, data: &[1, 2, 3] });
        assert_eq!(unknown.access().class, OpClass::Other);
        assert_eq!(hr(0xFFFF, 1).unwrap().end_inclusive(), 0xFFFF);
    }

    #[test]
    fn written_register_values() {
        let written = |adu: &[u8]| {
            let packet = Packet::new_checked(adu).unwrap();
            let request = Request::parse(packet.function(), packet.data()).unwrap();
            request.written_registers().map(|(start, values)| (start, values.collect::<Vec<_>>()))
        };
        assert_eq!(written(REQ_06), Some((1, vec![3])));
        assert_eq!(written(REQ_16), Some((1, vec![10, 258])));
        assert_eq!(written(REQ_23), Some((14, vec![0xFF; 3])));
        for adu in [REQ_03, REQ_05, REQ_15, REQ_21, REQ_22] {
            assert_eq!(written(adu), None);
        }
        assert_eq!(RegisterValues::single(7).len(), 1);
        assert_eq!(RegisterValues::new(&[0, 1, 2]).len(), 1);
    }

    fn be(values: &[u16]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    /// FC 15 / 16 data with a correct byte count and zeroed values.
    fn write_multiple(function: u8, address: u16, quantity: u16) -> Vec<u8> {
        let n = if function == 15 { bit_bytes(quantity) } else { register_bytes(quantity) };
        let mut data = be(&[address, quantity]);
        data.push(n as u8);
        data.resize(5 + n, 0);
        data
    }

    /// FC 23 data with a correct byte count and zeroed values.
    fn read_write(read: (u16, u16), write: (u16, u16)) -> Vec<u8> {
        let mut data = be(&[read.0, read.1, write.0, write.1]);
        data.push((2 * write.1) as u8);
        data.resize(9 + 2 * usize::from(write.1), 0);
        data
    }

    #[test]
    fn read_quantity_bounds() {
        for (function, max) in [(1u8, 2000u16), (2, 2000), (3, 125), (4, 125)] {
            for quantity in [0, 1, max, max + 1] {
                let data = be(&[0, quantity]);
                let result = Request::parse(function, &data);
                if quantity == 0 || quantity > max {
                    assert_eq!(result, Err(Error::BadQuantity { function, quantity }));
                } else {
                    assert_eq!(result.unwrap().access().read.unwrap().count, quantity);
                }
            }
        }
    }

    #[test]
    fn write_multiple_quantity_bounds() {
        for (function, max) in [(15u8, 0x7B0u16), (16, 0x7B)] {
            for quantity in [0, 1, max] {
                let data = write_multiple(function, 0, quantity);
                let result = Request::parse(function, &data);
                if quantity == 0 {
                    assert_eq!(result, Err(Error::BadQuantity { function, quantity }));
                } else {
                    assert_eq!(result.unwrap().access().write.unwrap().count, quantity);
                }
            }
            // max + 1: header only (a full PDU would also exceed 253 bytes).
            let over = be(&[0, max + 1]);
            let mut data = over.clone();
            data.push(0);
            let quantity = max + 1;
            assert_eq!(Request::parse(function, &data), Err(Error::BadQuantity { function, quantity }));
        }
        // Byte count disagreeing with the quantity.
        let mut data = write_multiple(15, 0, 10);
        data[4] = 1;
        data.pop();
        let mismatch = Error::ByteCountMismatch { function: 15, byte_count: 1, expected: 2 };
        assert_eq!(Request::parse(15, &data), Err(mismatch));
        let mut data = write_multiple(16, 0, 2);
        data[4] = 3;
        data.pop();
        let mismatch = Error::ByteCountMismatch { function: 16, byte_count: 3, expected: 4 };
        assert_eq!(Request::parse(16, &data), Err(mismatch));
        // Byte count right, but fewer / more value bytes than announced.
        let data = write_multiple(16, 0, 2);
        assert_eq!(Request::parse(16, &data[..data.len() - 1]), Err(Error::Truncated));
        let mut long = data.clone();
        long.push(0);
        assert_eq!(Request::parse(16, &long), Err(Error::TrailingBytes { function: 16, extra: 1 }));
    }

    #[test]
    fn read_write_multiple_bounds() {
        for quantity in [0u16, 1, 125, 126] {
            let data = read_write((0, quantity), (0, 1));
            let result = Request::parse(23, &data);
            assert_eq!(result.is_ok(), (1..=125).contains(&quantity), "read {quantity}");
        }
        for quantity in [0u16, 1, 121] {
            let data = read_write((0, 1), (0, quantity));
            let result = Request::parse(23, &data);
            assert_eq!(result.is_ok(), quantity != 0, "write {quantity}");
        }
        let mut data = be(&[0, 1, 0, 122]);
        data.push(244);
        assert_eq!(Request::parse(23, &data), Err(Error::BadQuantity { function: 23, quantity: 122 }));
        let mut data = read_write((0, 1), (0, 3));
        data[8] = 4;
        data.truncate(13);
        let mismatch = Error::ByteCountMismatch { function: 23, byte_count: 4, expected: 6 };
        assert_eq!(Request::parse(23, &data), Err(mismatch));
    }

    #[test]
    fn address_overflow() {
        assert!(Request::parse(1, &be(&[0xFFFF, 1])).is_ok());
        assert_eq!(Request::parse(1, &be(&[0xFFFF, 2])), Err(Error::AddressOverflow { start: 0xFFFF, quantity: 2 }));
        assert!(Request::parse(3, &be(&[0xFF83, 125])).is_ok());
        assert_eq!(
            Request::parse(4, &be(&[0xFF84, 125])),
            Err(Error::AddressOverflow { start: 0xFF84, quantity: 125 })
        );
        assert!(Request::parse(15, &write_multiple(15, 0xFFF0, 16)).is_ok());
        assert!(Request::parse(15, &write_multiple(15, 0xFFF1, 16)).is_err());
        assert!(Request::parse(16, &write_multiple(16, 0xFFFE, 3)).is_err());
        assert!(Request::parse(23, &read_write((0xFFFF, 2), (0, 1))).is_err());
        assert!(Request::parse(23, &read_write((0, 1), (0xFFFF, 2))).is_err());
        assert!(Response::parse(16, &be(&[0xFFFF, 2])).is_err());
    }

    #[test]
    fn single_coil_values() {
        for (value, ok) in [(0x0000u16, true), (0xFF00, true), (0x0001, false), (0x00FF, false), (0xFFFF, false)] {
            let data = be(&[7, value]);
            let result = Request::parse(5, &data);
            assert_eq!(result.is_ok(), ok, "{value:#06x}");
            if !ok {
                assert_eq!(result, Err(Error::BadValue { function: 5, value }));
                assert!(Response::parse(5, &be(&[7, value])).is_err());
            }
        }
    }

    #[test]
    fn mbap_header_checks() {
        let with_length = |length: u16| {
            let mut adu = vec![0, 1, 0, 0];
            adu.extend_from_slice(&length.to_be_bytes());
            adu.push(0x11);
            adu.push(0x41); // user-defined function code
            adu.resize(6 + usize::from(length).max(2), 0);
            adu
        };
        for length in [0u16, 1, 255, 0xFFFF] {
            assert_eq!(Packet::new_checked(with_length(length)), Err(Error::BadLength(length)));
        }
        for length in [2u16, 254] {
            let adu = with_length(length);
            let packet = Packet::new_checked(&adu[..]).unwrap();
            assert_eq!(packet.adu_len(), 6 + usize::from(length));
            assert_eq!(packet.data().len(), usize::from(length) - 2);
            let request = packet.request().unwrap();
            let mut out = [0u8; MAX_PDU_LEN];
            let n = request.emit(&mut out);
            assert_eq!(&out[..n], packet.pdu());
        }
        let mut adu = REQ_03.to_vec();
        adu[3] = 1;
        assert_eq!(Packet::new_checked(&adu[..]), Err(Error::BadProtocolId(1)));
        // Truncated ADU and truncated header.
        for len in 0..REQ_03.len() {
            assert_eq!(Packet::new_checked(&REQ_03[..len]), Err(Error::Truncated), "{len}");
        }
        // A longer buffer (pipelined data) is fine; pdu() stops at the ADU end.
        let stream = [REQ_03, REQ_06].concat();
        let packet = Packet::new_checked(&stream[..]).unwrap();
        assert_eq!(packet.pdu(), &REQ_03[7..]);
        assert_eq!(packet.transaction_id(), 3);
        assert_eq!(packet.function_code(), FunctionCode::ReadHoldingRegisters);
        assert!(!packet.is_exception());
    }

    #[test]
    fn every_truncation_and_extension_rejected() {
        for adu in ALL_REQUESTS {
            let (function, data) = (adu[7], data_of(adu));
            for len in 0..data.len() {
                // Variable-length payloads: FC 8 data is any even length,
                // FC 43 / MEI 13 data is opaque.
                let variable = (function == 8 && len >= 2 && len % 2 == 0)
                    || (function == 43 && data[0] == MEI_CANOPEN && len >= 1);
                if variable {
                    continue;
                }
                assert!(Request::parse(function, &data[..len]).is_err(), "{adu:02x?} cut at {len}");
            }
            let mut long = data.to_vec();
            long.push(0);
            if !matches!(function, 8 | 43) {
                assert!(Request::parse(function, &long).is_err(), "{adu:02x?} + 1 byte");
            }
        }
        assert_eq!(Request::parse(0, &[]), Err(Error::BadFunction(0)));
        assert_eq!(Request::parse(0x83, &[2]), Err(Error::BadFunction(0x83)));
        assert_eq!(Response::parse(0, &[]), Err(Error::BadFunction(0)));
        assert!(matches!(Request::parse(0x41, &[0; 253]), Err(Error::BadDataLength { .. })));
    }

    /// FC 20 data: byte count + `n` sub-requests (file 1, record 0, `length`).
    fn read_file(n: usize, length: u16) -> Vec<u8> {
        let mut data = vec![(7 * n) as u8];
        for _ in 0..n {
            data.push(6);
            data.extend(be(&[1, 0, length]));
        }
        data
    }

    #[test]
    fn file_record_limits() {
        // Byte count 0x07..=0xF5 and a multiple of 7: 1..=35 sub-requests.
        assert!(Request::parse(20, &read_file(1, 1)).is_ok());
        assert!(Request::parse(20, &read_file(35, 1)).is_ok()); // 0xF5
        for bad in [0u8, 6, 8, 0xF6] {
            let mut data = vec![bad];
            data.resize(1 + usize::from(bad), 0);
            let err = Error::BadByteCount { function: 20, byte_count: bad };
            assert_eq!(Request::parse(20, &data), Err(err));
        }
        let mut data = read_file(1, 1);
        data[1] = 7;
        assert_eq!(Request::parse(20, &data), Err(Error::BadReferenceType(7)));
        let mut data = read_file(1, 1);
        data[3] = 0; // file number 0
        assert_eq!(Request::parse(20, &data), Err(Error::BadValue { function: 20, value: 0 }));
        let mut data = read_file(1, 1);
        data[4..6].copy_from_slice(&0x2710u16.to_be_bytes());
        assert_eq!(Request::parse(20, &data), Err(Error::BadValue { function: 20, value: 0x2710 }));
        assert!(Request::parse(20, &read_file(1, 0)).is_err());
        // Expected response: 2 + (2 + 2 * 124) = 252 fits, 2 + (2 + 2 * 125) does not.
        assert!(Request::parse(20, &read_file(1, 124)).is_ok());
        let err = Error::BadQuantity { function: 20, quantity: 125 };
        assert_eq!(Request::parse(20, &read_file(1, 125)), Err(err));
        assert!(Request::parse(20, &read_file(2, 62)).is_err());

        // FC 21: request data length 0x09..=0xFB, sub-requests tile exactly.
        let write_file = |records: &[u16]| {
            let mut subs = vec![6];
            subs.extend(be(&[1, 0, records.len() as u16]));
            subs.extend(be(records));
            let mut data = vec![subs.len() as u8];
            data.extend(subs);
            data
        };
        assert!(Request::parse(21, &write_file(&[1])).is_ok()); // 0x09
        assert!(Request::parse(21, &write_file(&[7; 122])).is_ok()); // 0xFB
                                                                     // 0xFC: checked before the data (a full PDU would exceed 253 bytes).
        let err = Error::BadByteCount { function: 21, byte_count: 0xFC };
        assert_eq!(Request::parse(21, &[0xFC]), Err(err));
        assert!(Request::parse(21, &write_file(&[7; 123])).is_err());
        let mut data = write_file(&[1, 2]);
        data[6] = 3; // record length 3 but only 2 registers present
        assert_eq!(Request::parse(21, &data), Err(Error::Truncated));
        let mut data = write_file(&[1, 2]);
        data[6] = 1; // record length 1 leaves 2 stray bytes
        assert!(Request::parse(21, &data).is_err());
        let data = [0x08, 6, 0, 1, 0, 0, 0, 0, 0];
        assert_eq!(Request::parse(21, &data), Err(Error::BadByteCount { function: 21, byte_count: 8 }));
    }

    #[test]
    fn other_request_limits() {
        for code in [0u8, 5, 0xFF] {
            let err = Error::BadValue { function: 43, value: code.into() };
            assert_eq!(Request::parse(43, &[0x0E, code, 0]), Err(err));
        }
        for code in 1..=4u8 {
            assert!(Request::parse(43, &[0x0E, code, 0x80]).is_ok());
        }
        assert_eq!(Request::parse(43, &[0x0C]), Err(Error::BadMeiType(0x0C)));
        assert_eq!(Request::parse(43, &[]), Err(Error::Truncated));
        let err = Error::BadDataLength { function: 8, len: 3 };
        assert_eq!(Request::parse(8, &[0, 1, 0]), Err(err));
        assert!(Request::parse(8, &[0, 0, 1, 2, 3, 4]).is_ok());
        for function in [7u8, 11, 12, 17] {
            let err = Error::TrailingBytes { function, extra: 1 };
            assert_eq!(Request::parse(function, &[0]), Err(err));
        }
        assert_eq!(Request::parse(22, &[0; 5]), Err(Error::Truncated));
        assert_eq!(Request::parse(24, &[0; 3]), Err(Error::TrailingBytes { function: 24, extra: 1 }));
    }

    #[test]
    fn response_limits() {
        for function in [1u8, 2, 3, 4, 23] {
            let err = Error::BadByteCount { function, byte_count: 0 };
            assert_eq!(Response::parse(function, &[0]), Err(err));
            let mut max = vec![250];
            max.resize(251, 0);
            assert!(Response::parse(function, &max).is_ok());
            let mut over = vec![251];
            over.resize(252, 0);
            assert!(Response::parse(function, &over).is_err());
            assert_eq!(Response::parse(function, &[2, 0]), Err(Error::Truncated));
            let err = Error::TrailingBytes { function, extra: 1 };
            assert_eq!(Response::parse(function, &[2, 0, 0, 0]), Err(err));
        }
        for function in [3u8, 4, 23] {
            let err = Error::BadByteCount { function, byte_count: 3 };
            assert_eq!(Response::parse(function, &[3, 0, 0, 0]), Err(err));
        }
        assert!(Response::parse(1, &[3, 0, 0, 0]).is_ok());
        assert!(Response::parse(15, &be(&[0, 0x7B0])).is_ok());
        assert!(Response::parse(15, &be(&[0, 0x7B1])).is_err());
        assert!(Response::parse(16, &be(&[0, 0])).is_err());
        assert!(Response::parse(6, &[0; 3]).is_err());
    }

    /// Three pipelined requests as captured on one TCP connection.
    fn pipelined() -> Vec<u8> {
        [REQ_03, REQ_16, REQ_23].concat()
    }

    /// Splits everything complete off the front of `buf`.
    fn drain(framer: &mut Framer, buf: &mut Vec<u8>, out: &mut Vec<Vec<u8>>) {
        loop {
            match framer.next(buf) {
                Progress::Done { adu_len } => {
                    out.push(buf.drain(..adu_len).collect());
                }
                Progress::NeedMore { at_least } => {
                    assert!(at_least > buf.len());
                    return;
                }
                Progress::Reject(anomaly) => panic!("unexpected reject {anomaly:?}"),
            }
        }
    }

    #[test]
    fn framer_every_prefix() {
        let stream = pipelined();
        let mut framer = Framer::new();
        for len in 0..REQ_03.len() {
            match framer.next(&stream[..len]) {
                Progress::NeedMore { at_least } => {
                    assert!(at_least > len && at_least <= REQ_03.len(), "{len}: {at_least}");
                }
                other => panic!("prefix {len}: {other:?}"),
            }
        }
        for len in REQ_03.len()..=stream.len() {
            assert_eq!(framer.next(&stream[..len]), Progress::Done { adu_len: REQ_03.len() });
        }
    }

    #[test]
    fn framer_split_at_every_offset() {
        let stream = pipelined();
        let expected = vec![REQ_03.to_vec(), REQ_16.to_vec(), REQ_23.to_vec()];
        for split in 0..=stream.len() {
            let mut framer = Framer;
            let (mut buf, mut out) = (Vec::new(), Vec::new());
            buf.extend_from_slice(&stream[..split]);
            drain(&mut framer, &mut buf, &mut out);
            buf.extend_from_slice(&stream[split..]);
            drain(&mut framer, &mut buf, &mut out);
            assert_eq!(out, expected, "split at {split}");
            assert!(buf.is_empty());
        }
        // Byte-at-a-time delivery yields the same ADUs.
        let (mut framer, mut buf, mut out) = (Framer, Vec::new(), Vec::new());
        for byte in &stream {
            buf.push(*byte);
            drain(&mut framer, &mut buf, &mut out);
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn framer_rejects() {
        let mut framer = Framer;
        let reject = Progress::Reject(Anomaly::BadProtocolId(0x0100));
        assert_eq!(framer.next(&[0, 1, 1, 0]), reject);
        assert_eq!(framer.next(&[0, 1, 0]), Progress::NeedMore { at_least: 8 });
        for length in [0u16, 1, 255, 0xFFFF] {
            let [hi, lo] = length.to_be_bytes();
            let reject = Progress::Reject(Anomaly::BadLength(length));
            assert_eq!(framer.next(&[0, 1, 0, 0, hi, lo]), reject);
        }
        assert_eq!(framer.next(&[0, 1, 0, 0, 0, 254]), Progress::NeedMore { at_least: 260 });
        assert_eq!(Anomaly::BadLength(1).to_string(), Error::BadLength(1).to_string());
    }

    #[test]
    fn transactions_table() {
        let entry = |tid| Entry { tid, unit: 1, function: 3, sent_at: u64::from(tid) * 10 };
        let mut table: Transactions<3> = Transactions::new();
        assert!(table.is_empty());
        assert_eq!(table.capacity(), 3);
        for tid in 1..=3 {
            assert_eq!(table.insert(entry(tid)), Ok(()));
        }
        assert_eq!(table.insert(entry(2)), Err(TxError::Duplicate));
        assert_eq!(table.insert(entry(4)), Err(TxError::Full));
        assert_eq!(table.len(), 3);
        assert_eq!(table.take(2), Some(entry(2)));
        assert_eq!(table.take(2), None);
        assert_eq!(table.len(), 2);
        assert_eq!(table.insert(entry(4)), Ok(()));
        assert_eq!(table.get(4), Some(&entry(4)));
        assert_eq!(table.take_expired(35), Some(entry(1)));
        assert_eq!(table.take_expired(35), Some(entry(3)));
        assert_eq!(table.take_expired(35), None);
        assert_eq!(table.len(), 1);
        assert_eq!(table.take(4), Some(entry(4)));
        assert!(table.is_empty());
        assert_eq!(Transactions::<0>::default().insert(entry(1)), Err(TxError::Full));
    }

    #[test]
    fn error_display() {
        let errors = [
            Error::Truncated,
            Error::TrailingBytes { function: 3, extra: 1 },
            Error::BadProtocolId(1),
            Error::BadLength(0),
            Error::BadFunction(0),
            Error::BadDataLength { function: 8, len: 3 },
            Error::BadQuantity { function: 3, quantity: 0 },
            Error::ByteCountMismatch { function: 16, byte_count: 3, expected: 4 },
            Error::BadByteCount { function: 20, byte_count: 6 },
            Error::BadValue { function: 5, value: 1 },
            Error::AddressOverflow { start: 0xFFFF, quantity: 2 },
            Error::BadReferenceType(7),
            Error::BadMeiType(1),
        ];
        for error in errors {
            assert!(!error.to_string().is_empty());
        }
        assert_eq!(TxError::Full.to_string(), "transaction table full");
    }

    #[derive(Default)]
    struct Stats {
        requests: usize,
        responses: usize,
        adus: usize,
        /// Successful decodes per function code, excluding `Request::Unknown`.
        decoded: Vec<usize>,
    }

    /// Parses one PDU both ways; every success must re-emit identically and
    /// yield sane policy data.
    fn check_pdu(function: u8, data: &[u8], stats: &mut Stats) {
        let mut out = [0u8; MAX_PDU_LEN];
        if let Ok(request) = Request::parse(function, data) {
            stats.requests += 1;
            if !matches!(request, Request::Unknown { .. }) {
                stats.decoded[usize::from(function)] += 1;
            }
            let n = request.emit(&mut out);
            assert_eq!(n, request.pdu_len());
            assert_eq!(out[0], function);
            assert_eq!(&out[1..n], data, "request re-emit");
            let access = request.access();
            for range in [access.read, access.write].into_iter().flatten() {
                assert!(range.count >= 1);
                assert!(u32::from(range.start) + u32::from(range.count) <= 0x1_0000);
            }
            if let Some((_, values)) = request.written_registers() {
                assert!(values.len() >= 1);
            }
            match request {
                Request::ReadFileRecord(subs) => {
                    assert_eq!(subs.iter().count() * 7, subs.as_bytes().len());
                }
                Request::WriteFileRecord(subs) => {
                    let total: usize = subs.iter().map(|s| 7 + s.data.len()).sum();
                    assert_eq!(total, subs.as_bytes().len());
                }
                _ => {}
            }
        }
        if let Ok(response) = Response::parse(function, data) {
            stats.responses += 1;
            let n = response.emit(&mut out);
            assert_eq!(n, response.pdu_len());
            assert_eq!(out[0], function);
            assert_eq!(&out[1..n], data, "response re-emit");
            let _ = response.registers().map(Iterator::count);
        }
    }

    /// Runs the framer, the packet view and the PDU parsers over `buf`.
    fn exercise(buf: &[u8], stats: &mut Stats) {
        let mut framer = Framer::new();
        let mut rest = buf;
        loop {
            match framer.next(rest) {
                Progress::Done { adu_len } => {
                    assert!((MIN_ADU_LEN..=MAX_ADU_LEN).contains(&adu_len));
                    assert!(adu_len <= rest.len());
                    let (adu, tail) = rest.split_at(adu_len);
                    let packet = Packet::new_checked(adu).expect("framed ADU is valid");
                    assert_eq!(packet.adu_len(), adu_len);
                    stats.adus += 1;
                    check_pdu(packet.function(), packet.data(), stats);
                    rest = tail;
                }
                Progress::NeedMore { at_least } => {
                    assert!(at_least > rest.len() && at_least <= MAX_ADU_LEN);
                    break;
                }
                Progress::Reject(_) => {
                    assert!(Packet::new_checked(rest).is_err());
                    break;
                }
            }
        }
        if let Ok(packet) = Packet::new_checked(buf) {
            let _ = (packet.transaction_id(), packet.unit_id(), packet.function_code());
            assert_eq!(packet.pdu().len(), packet.adu_len() - 7);
            let _ = (packet.request(), packet.response());
        }
        if let Some((&function, data)) = buf.split_first() {
            check_pdu(function, data, stats);
        }
    }

    /// Applies one random mutation to `buf`.
    fn mutate(rng: &mut crate::xorshift::XorShift, buf: &mut Vec<u8>) {
        const INTERESTING: [u16; 10] = [0, 1, 2, 0x79, 0x7B, 0x7D, 0x7B0, 0x7D0, 0xFF00, 0xFFFF];
        let at = if buf.is_empty() { 0 } else { rng.below(buf.len()) };
        match rng.below(7) {
            0 if !buf.is_empty() => buf[at] = rng.byte(),
            1 if !buf.is_empty() => buf[at] ^= 1 << rng.below(8),
            2 => buf.truncate(at),
            3 => buf.extend((0..rng.below(8)).map(|_| rng.byte())),
            4 => buf.insert(at, rng.byte()),
            5 if !buf.is_empty() => {
                buf.remove(at);
            }
            _ if buf.len() >= at + 2 => {
                let value = INTERESTING[rng.below(INTERESTING.len())];
                buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
            }
            _ => {}
        }
    }

    /// Makes the MBAP header consistent with the buffer so parsing goes deep.
    fn fix_header(buf: &mut [u8]) {
        if buf.len() >= 8 {
            let length = (buf.len() - 6).min(0xFFFF) as u16;
            buf[2..4].fill(0);
            buf[4..6].copy_from_slice(&length.to_be_bytes());
        }
    }

    #[test]
    fn fuzz_no_panic_and_exact_reemit() {
        const ITERATIONS: usize = 200_000;
        let mut rng = crate::xorshift::XorShift::new(0x9E37_79B9_7F4A_7C15);
        let mut stats = Stats { decoded: vec![0; 256], ..Stats::default() };
        let seeds: Vec<&[u8]> = ALL_REQUESTS.iter().chain(ALL_RESPONSES).copied().collect();
        let mut buf = Vec::with_capacity(600);
        for _ in 0..ITERATIONS {
            // Random bytes, sometimes behind a plausible MBAP header.
            buf.clear();
            let len = rng.below(270);
            buf.extend((0..len).map(|_| rng.byte()));
            if rng.below(2) == 0 {
                fix_header(&mut buf);
            }
            exercise(&buf, &mut stats);

            // A mutated valid ADU, sometimes followed by a second one.
            buf.clear();
            buf.extend_from_slice(seeds[rng.below(seeds.len())]);
            for _ in 0..=rng.below(4) {
                mutate(&mut rng, &mut buf);
            }
            if rng.below(3) != 0 {
                fix_header(&mut buf);
            }
            if rng.below(4) == 0 {
                buf.extend_from_slice(seeds[rng.below(seeds.len())]);
            }
            exercise(&buf, &mut stats);
        }
        eprintln!(
            "fuzz: {} ADUs framed, {} requests, {} responses parsed",
            stats.adus, stats.requests, stats.responses
        );
        // The generator must actually reach every decoder.
        for function in [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43] {
            let hits = stats.decoded[function];
            eprintln!("fuzz: function {function}: {hits} valid requests");
            assert!(hits > 0, "function {function} never decoded");
        }
        assert!(stats.adus > ITERATIONS / 2, "framed {}", stats.adus);
        assert!(stats.requests > ITERATIONS / 10, "requests {}", stats.requests);
        assert!(stats.responses > ITERATIONS / 10, "responses {}", stats.responses);
    }
}
