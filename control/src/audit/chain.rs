//! The hash chain: canonical JSON, record hashes, and the time format.
//!
//! # Canonical JSON
//! A record is a JSON object whose values are strings, integers, booleans,
//! `null`, arrays and objects (never floating-point numbers). Its canonical
//! form is:
//! - no whitespace anywhere;
//! - object members sorted by key, comparing the keys' UTF-8 bytes;
//! - strings: `"` and `\` escaped as `\"` and `\\`; U+0008, U+0009, U+000A,
//!   U+000C, U+000D as `\b \t \n \f \r`; other characters below U+0020 as
//!   `\u00xx` (lowercase hex); every other character as its UTF-8 bytes;
//! - integers in decimal, no leading zeros, `-` only for negatives.
//!
//! For this subset it is the same as RFC 8785 (JCS).
//!
//! # The chain
//! Every record has `seq` (1, 2, ... across all files), `ts` (RFC 3339 UTC
//! with microseconds, `2025-01-02T03:04:05.123456Z`), `event`, `prev` and
//! `hash`. `prev` is the previous record's `hash` (64 `0`s for seq 1), and
//!
//! ```text
//! hash = lowercase hex SHA-256( prev || canonical(record without "hash") )
//! ```
//!
//! where `prev` is its 64 ASCII hex characters and the record still carries
//! its `prev` member. A file line is `canonical(record with "hash")` plus
//! `\n`. A verifier recomputes every hash, checks each line is byte for byte
//! canonical, that `seq` counts up by one and `prev` links, across files in
//! name order (`audit-YYYY-MM-DD.jsonl`).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The digits of lowercase hex.
pub(crate) const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    into_text(s)
}

/// Records are built as bytes: every piece is ASCII or comes from a `&str`,
/// so the result is UTF-8 without a check per push (those checks, and the
/// per-`char` pushes of a `String`, were 8 % of the writer's profile).
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    // Sized once, then filled in place: no capacity check per digit.
    let start = out.len();
    out.resize(start + bytes.len() * 2, 0);
    for (pair, b) in out[start..].chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(b >> 4)];
        pair[1] = HEX_DIGITS[usize::from(b & 15)];
    }
}

/// Writes `bytes` as lowercase hex at the start of `buf` (at least twice
/// as long) and returns that text.
fn hex_into<'b>(buf: &'b mut [u8], bytes: &[u8]) -> &'b str {
    for (pair, b) in buf.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(b >> 4)];
        pair[1] = HEX_DIGITS[usize::from(b & 15)];
    }
    // Hex digits are ASCII: this never fails.
    std::str::from_utf8(&buf[..bytes.len() * 2]).unwrap_or_default()
}

/// Appends the canonical form of `value` to `out`.
///
/// # Errors
/// `value` holds a floating-point number (not allowed in a record).
pub fn canonical_into(value: &Value, out: &mut Vec<u8>) -> Result<(), NotCanonical> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                push_int(out, u, false);
            } else if let Some(i) = n.as_i64() {
                push_int(out, i.unsigned_abs(), i < 0);
            } else {
                return Err(NotCanonical);
            }
        }
        Value::String(s) => push_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_into(v, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => push_object(map, None, out)?,
    }
    Ok(())
}

/// The canonical form of `value` as text.
///
/// # Errors
/// `value` holds a floating-point number.
pub fn canonical(value: &Value) -> Result<String, NotCanonical> {
    let mut out = Vec::with_capacity(256);
    canonical_into(value, &mut out)?;
    Ok(into_text(out))
}

/// A record had a number that is not an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotCanonical;

fn push_object(map: &Map<String, Value>, skip: Option<&str>, out: &mut Vec<u8>) -> Result<(), NotCanonical> {
    let mut keys: Vec<&String> = map.keys().filter(|k| Some(k.as_str()) != skip).collect();
    keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    out.push(b'{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_string(out, k);
        out.push(b':');
        canonical_into(&map[k], out)?;
    }
    out.push(b'}');
    Ok(())
}

fn push_int(out: &mut Vec<u8>, u: u64, negative: bool) {
    if negative {
        out.push(b'-');
    }
    push_digits(out, u, 1);
}

/// "00", "01", ... "99": two digits per division.
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Appends `x` in decimal, zero-padded to at least `width` digits (at most
/// 20).
fn push_digits(out: &mut Vec<u8>, x: u64, width: usize) {
    // The digits go into a stack buffer, then the whole buffer is appended
    // and the tail cut: a copy of a constant 20 bytes is a few moves, where
    // a copy of the digits' own length was a `memcpy` call (with the other
    // short copies, 16 % of the writer's profile).
    let n = (x.checked_ilog10().unwrap_or(0) as usize + 1).max(width).min(20);
    let mut buf = [b'0'; 20];
    put_digits(&mut buf[..n], x);
    let len = out.len();
    out.extend_from_slice(&buf);
    out.truncate(len + n);
}

/// Writes the last `dst.len()` decimal digits of `x` into `dst`, two per
/// division, zero-padded.
#[inline]
fn put_digits(dst: &mut [u8], mut x: u64) {
    let mut i = dst.len();
    while i >= 2 {
        let r = (x % 100) as usize * 2;
        x /= 100;
        dst[i - 2..i].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
        i -= 2;
    }
    if i == 1 {
        dst[0] = b'0' + (x % 10) as u8;
    }
}

/// Whether canonical JSON escapes byte `b` of a string.
#[inline]
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Nearly every string (names, hex ids, the previous hash) has nothing
    // to escape: one branch-free pass, then one copy.
    if !bytes.iter().fold(false, |any, &b| any | escaped(b)) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    // Byte by byte: everything escaped is ASCII, and no byte of a multi-byte
    // UTF-8 sequence is below 0x80, so every cut is on a char boundary.
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            b if b < 0x20 => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&[HEX_DIGITS[usize::from(b >> 4)], HEX_DIGITS[usize::from(b & 15)]]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The canonical form of a record without its `hash` member.
///
/// # Errors
/// A floating-point number.
pub fn canonical_without_hash(record: &Map<String, Value>) -> Result<String, NotCanonical> {
    let mut out = Vec::with_capacity(512);
    push_object(record, Some("hash"), &mut out)?;
    Ok(into_text(out))
}

/// `hex(SHA-256(prev || canonical))`.
pub fn record_hash(prev: &str, canonical: &str) -> String {
    hex(&record_digest(prev, canonical.as_bytes()))
}

fn record_digest(prev: &str, canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(canonical);
    h.finalize().into()
}

/// The first eight bytes of a key, big-endian, zero-padded: keys compare
/// as their ranks do unless the ranks are equal (a shared eight-byte
/// prefix), so ordering members rarely reaches a byte-wise compare (those
/// were 6 % of the writer's profile, as `memcmp` calls). Keys hold no NUL,
/// so a key that is a prefix of another ranks below it, as it sorts.
const fn key_rank(key: &str) -> u64 {
    let b = key.as_bytes();
    let mut rank = 0u64;
    let mut i = 0;
    while i < 8 {
        rank <<= 8;
        if i < b.len() {
            rank |= b[i] as u64;
        }
        i += 1;
    }
    rank
}

/// Whether key `a` (of rank `ra`) sorts before key `b` (of rank `rb`).
#[inline]
fn key_lt((ra, a): (u64, &str), (rb, b): (u64, &str)) -> bool {
    ra < rb || (ra == rb && a.as_bytes() < b.as_bytes())
}

/// A member value of a record being built (borrowed where possible).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    U64(u64),
    Str(std::borrow::Cow<'a, str>),
    /// Unix microseconds written as [`rfc3339_micros`] does.
    Time(u64),
    /// Bytes written as a lowercase hex string.
    Hex(&'a [u8]),
    List(Vec<std::borrow::Cow<'a, str>>),
}

impl<'a> From<&'a str> for Val<'a> {
    fn from(s: &'a str) -> Self {
        Val::Str(s.into())
    }
}
impl From<String> for Val<'_> {
    fn from(s: String) -> Self {
        Val::Str(s.into())
    }
}
impl From<bool> for Val<'_> {
    fn from(b: bool) -> Self {
        Val::Bool(b)
    }
}
macro_rules! val_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Val<'_> {
            fn from(x: $t) -> Self {
                Val::U64(x as u64)
            }
        }
    )*};
}
val_from_int!(u8, u16, u32, u64, usize);
impl<'a, T: Into<Val<'a>>> From<Option<T>> for Val<'a> {
    fn from(x: Option<T>) -> Self {
        x.map_or(Val::Null, Into::into)
    }
}

/// The members of a record being built, written straight to canonical
/// JSON by [`Chain::seal`] (no intermediate JSON tree: this is the writer's
/// hot path). Keys are unique ASCII names.
#[derive(Debug, Clone, Default)]
pub struct Fields<'a> {
    /// (rank of the key, key, value), in key order.
    items: Vec<(u64, &'static str, Val<'a>)>,
}

impl<'a> Fields<'a> {
    /// A record of kind `event`.
    pub fn new(event: &'static str) -> Self {
        // 16 members fit every dp record; at 56 bytes each the allocation
        // stays in malloc's per-thread cache (at most 1032 bytes).
        let mut f = Self { items: Vec::with_capacity(16) };
        f.put("event", event);
        f
    }

    /// Sets member `key` (replacing an earlier value). Members are kept in
    /// canonical order as they are put, so sealing does not sort (sorting
    /// ~20 keys per record was 6 % of the writer's profile).
    pub fn put(&mut self, key: &'static str, value: impl Into<Val<'a>>) -> &mut Self {
        debug_assert!(plain_key(key), "record key {key:?} must be printable ASCII with nothing to escape");
        let value = value.into();
        let rank = key_rank(key);
        if self.items.last().is_none_or(|(r, k, _)| key_lt((*r, k), (rank, key))) {
            self.items.push((rank, key, value));
            return self;
        }
        let at = self.items.iter().position(|(r, k, _)| !key_lt((*r, k), (rank, key))).unwrap_or(self.items.len());
        match self.items.get_mut(at) {
            Some(item) if item.1 == key => item.2 = value,
            _ => self.items.insert(at, (rank, key, value)),
        }
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Val<'a>> {
        self.items.iter().find(|(_, k, _)| *k == key).map(|(_, _, v)| v)
    }

    /// The `event` member.
    pub fn event(&self) -> &str {
        match self.get("event") {
            Some(Val::Str(s)) => s,
            _ => "",
        }
    }
}

/// A key [`push_key`] can write as is.
fn plain_key(key: &str) -> bool {
    key.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// `"key":` for a record key: keys are names from this code ([`Fields::put`]
/// checks them in debug builds), so nothing in them needs escaping.
fn push_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn push_val(out: &mut Vec<u8>, v: &Val<'_>) {
    match v {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Val::U64(u) => push_int(out, *u, false),
        Val::Str(s) => push_string(out, s),
        Val::Time(t) => {
            out.push(b'"');
            push_rfc3339_micros(out, *t);
            out.push(b'"');
        }
        Val::Hex(b) => {
            out.push(b'"');
            push_hex(out, b);
            out.push(b'"');
        }
        Val::List(items) => {
            out.push(b'[');
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_string(out, s);
            }
            out.push(b']');
        }
    }
}

/// The chain's head: the last record's `seq` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub seq: u64,
    pub hash: String,
}

impl Default for Chain {
    fn default() -> Self {
        Self { seq: 0, hash: GENESIS.to_string() }
    }
}

impl Chain {
    /// Seals `fields` as the next record: adds `seq`, `ts`, `prev` and
    /// `hash`, and returns the file line (with `\n`).
    pub fn seal(&mut self, ts_us: u64, fields: Fields<'_>) -> String {
        let (mut body, mut line) = (Vec::with_capacity(768), Vec::new());
        self.seal_into(ts_us, fields, &mut body, &mut line);
        into_text(line)
    }

    /// [`Chain::seal`] into `line` (cleared first), with `body` as scratch:
    /// the writer's hot path reuses both, so a record costs no allocation
    /// beyond its `Fields`.
    /// The line is UTF-8 (everything in it comes from `&str`s or is ASCII).
    pub fn seal_into(&mut self, ts_us: u64, fields: Fields<'_>, body: &mut Vec<u8>, line: &mut Vec<u8>) {
        let seq = self.seq + 1;
        // The chain's own members, in key order, merged with the caller's
        // (which are in order already and lose any of these four).
        const OWN: [(u64, &str); 3] = [(key_rank("prev"), "prev"), (key_rank("seq"), "seq"), (key_rank("ts"), "ts")];
        const HASH: (u64, &str) = (key_rank("hash"), "hash");
        let own_vals = [Val::Str(self.hash.as_str().into()), Val::U64(seq), Val::Time(ts_us)];
        let theirs = fields.items.iter().filter(|(_, k, _)| !matches!(*k, "hash" | "prev" | "seq" | "ts"));
        let mut theirs = theirs.map(|(r, k, v)| (*r, *k, v)).peekable();
        let mut own = OWN.iter().zip(&own_vals).map(|(&(r, k), v)| (r, k, v)).peekable();
        // Canonical body without "hash", noting where "hash" sorts in.
        body.clear();
        body.push(b'{');
        let mut at = None;
        let mut first = true;
        loop {
            let take_own = match (own.peek(), theirs.peek()) {
                (Some(a), Some(b)) => key_lt((a.0, a.1), (b.0, b.1)),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let Some((r, k, v)) = (if take_own { own.next() } else { theirs.next() }) else { break };
            if at.is_none() && key_lt(HASH, (r, k)) {
                at = Some(body.len());
            }
            if !first {
                body.push(b',');
            }
            first = false;
            push_key(body, k);
            push_val(body, v);
        }
        body.push(b'}');
        let digest = record_digest(&self.hash, body);
        let mut hex_buf = [0u8; 64];
        let hash = hex_into(&mut hex_buf, &digest);
        line.clear();
        line.reserve(body.len() + 80);
        match at {
            // Before the member at `at`: `body[at..]` starts with its comma,
            // or `at` is 1 (right after `{`) when it is the first member.
            Some(pos) if pos > 1 => {
                line.extend_from_slice(&body[..pos]);
                line.extend_from_slice(b",\"hash\":\"");
                line.extend_from_slice(hash.as_bytes());
                line.push(b'"');
                line.extend_from_slice(&body[pos..]);
            }
            Some(_) => {
                line.extend_from_slice(b"{\"hash\":\"");
                line.extend_from_slice(hash.as_bytes());
                line.extend_from_slice(b"\",");
                line.extend_from_slice(&body[1..]);
            }
            None => {
                line.extend_from_slice(&body[..body.len() - 1]);
                line.extend_from_slice(b",\"hash\":\"");
                line.extend_from_slice(hash.as_bytes());
                line.extend_from_slice(b"\"}");
            }
        }
        line.push(b'\n');
        self.seq = seq;
        self.hash.clear();
        self.hash.push_str(hash);
    }
}

/// Why one line is not a valid link of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Not JSON, or not an object.
    NotJson(String),
    /// A required member is missing or of the wrong type.
    Missing(&'static str),
    /// Valid JSON but not in canonical form (whitespace, key order, ...).
    NotCanonical,
    /// The stored hash is not the hash of the content: the record was edited.
    HashMismatch,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotJson(e) => write!(f, "not a JSON record ({e})"),
            Self::Missing(m) => write!(f, "member {m:?} missing or of the wrong type"),
            Self::NotCanonical => write!(f, "not in canonical form (the line was re-encoded or edited)"),
            Self::HashMismatch => write!(f, "hash does not match the content (the record was edited)"),
        }
    }
}

/// A line that checked out on its own (links are checked by the caller).
#[derive(Debug, Clone)]
pub struct Sealed {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    pub record: Map<String, Value>,
}

/// Checks one line (without its `\n`) on its own: JSON, canonical, hash.
///
/// # Errors
/// What is wrong with it.
pub fn check_line(line: &[u8]) -> Result<Sealed, LineError> {
    let value: Value = serde_json::from_slice(line).map_err(|e| LineError::NotJson(e.to_string()))?;
    let Value::Object(record) = value else {
        return Err(LineError::NotJson("not an object".into()));
    };
    let seq = record.get("seq").and_then(Value::as_u64).ok_or(LineError::Missing("seq"))?;
    let prev = record.get("prev").and_then(Value::as_str).ok_or(LineError::Missing("prev"))?.to_string();
    let hash = record.get("hash").and_then(Value::as_str).ok_or(LineError::Missing("hash"))?.to_string();
    record.get("ts").and_then(Value::as_str).ok_or(LineError::Missing("ts"))?;
    let mut full = Vec::with_capacity(line.len());
    push_object(&record, None, &mut full).map_err(|_| LineError::NotCanonical)?;
    if full != line {
        return Err(LineError::NotCanonical);
    }
    let body = canonical_without_hash(&record).map_err(|_| LineError::NotCanonical)?;
    if record_hash(&prev, &body) != hash {
        return Err(LineError::HashMismatch);
    }
    Ok(Sealed { seq, prev, hash, record })
}

/// `YYYY-MM-DD` of a Unix time in microseconds (UTC).
pub fn date(ts_us: u64) -> String {
    let (y, m, d) = civil((ts_us / 86_400_000_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// RFC 3339 UTC with microseconds: `2025-01-02T03:04:05.123456Z`.
pub fn rfc3339_micros(ts_us: u64) -> String {
    let mut out = Vec::with_capacity(27);
    push_rfc3339_micros(&mut out, ts_us);
    into_text(out)
}

/// Appends [`rfc3339_micros`] of `ts_us`.
fn push_rfc3339_micros(out: &mut Vec<u8>, ts_us: u64) {
    let secs = ts_us / 1_000_000;
    let (y, m, d) = civil((secs / 86_400) as i64);
    let rem = secs % 86_400;
    if y <= 9999 {
        // Filled in place and appended in one constant-size copy.
        let mut t = *b"0000-00-00T00:00:00.000000Z";
        put_digits(&mut t[0..4], y as u64);
        put_digits(&mut t[5..7], m as u64);
        put_digits(&mut t[8..10], d as u64);
        put_digits(&mut t[11..13], rem / 3600);
        put_digits(&mut t[14..16], rem % 3600 / 60);
        put_digits(&mut t[17..19], rem % 60);
        put_digits(&mut t[20..26], ts_us % 1_000_000);
        out.extend_from_slice(&t);
        return;
    }
    push_digits(out, y as u64, 4);
    out.push(b'-');
    push_digits(out, m as u64, 2);
    out.push(b'-');
    push_digits(out, d as u64, 2);
    out.push(b'T');
    push_digits(out, rem / 3600, 2);
    out.push(b':');
    push_digits(out, rem % 3600 / 60, 2);
    out.push(b':');
    push_digits(out, rem % 60, 2);
    out.push(b'.');
    push_digits(out, ts_us % 1_000_000, 6);
    out.push(b'Z');
}

/// Parses what [`rfc3339_micros`] writes back to Unix microseconds.
pub fn parse_rfc3339_micros(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 27 || b[4] != b'-' || b[10] != b'T' || b[19] != b'.' || b[26] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    let days = days_from_civil(y as i64, mo as i64, d as i64);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + se;
    Some(secs * 1_000_000 + us)
}

/// Howard Hinnant's civil_from_days: (year, month, day) of a day count
/// since 1970-01-01 (proleptic Gregorian). Shared by every UTC formatter.
pub fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn audit_canonical_json_sorts_and_escapes() {
        let v = json!({"b": 1, "a": [true, null, -3], "é": "x\"y\\z\n\u{1}\u{7f}é", "A": {"z": 0, "y": "ü"}});
        let mut out = Vec::new();
        canonical_into(&v, &mut out).unwrap();
        assert_eq!(
            into_text(out),
            "{\"A\":{\"y\":\"ü\",\"z\":0},\"a\":[true,null,-3],\"b\":1,\"é\":\"x\\\"y\\\\z\\n\\u0001\u{7f}é\"}"
        );
        assert_eq!(canonical_into(&json!({"f": 1.5}), &mut Vec::new()), Err(NotCanonical));
    }

    #[test]
    fn audit_chain_links_and_checks() {
        let mut chain = Chain::default();
        let l1 = chain.seal(1_700_000_000_000_001, Fields::new("test").put("n", 1u64).clone());
        let l2 = chain.seal(1_700_000_000_000_002, Fields::new("test").put("n", 2u64).clone());
        let s1 = check_line(l1.trim_end().as_bytes()).unwrap();
        let s2 = check_line(l2.trim_end().as_bytes()).unwrap();
        assert_eq!((s1.seq, s1.prev.as_str()), (1, GENESIS));
        assert_eq!((s2.seq, &s2.prev), (2, &s1.hash));
        assert_eq!(chain.hash, s2.hash);
        // The hash is over prev + the canonical record without "hash".
        let body = canonical_without_hash(&s1.record).unwrap();
        assert_eq!(body, format!("{{\"event\":\"test\",\"n\":1,\"prev\":\"{GENESIS}\",\"seq\":1,\"ts\":\"2023-11-14T22:13:20.000001Z\"}}"));
        let mut h = Sha256::new();
        h.update(GENESIS.as_bytes());
        h.update(body.as_bytes());
        assert_eq!(s1.hash, hex(&h.finalize()));
        // Edits are caught.
        let edited = l1.trim_end().replace("\"n\":1", "\"n\":7");
        assert_eq!(check_line(edited.as_bytes()).unwrap_err(), LineError::HashMismatch);
        let spaced = l1.trim_end().replacen(',', ", ", 1);
        assert_eq!(check_line(spaced.as_bytes()).unwrap_err(), LineError::NotCanonical);
        assert!(matches!(check_line(b"{\"seq\":1"), Err(LineError::NotJson(_))));
    }

    /// What makes the journal tamper-evident line by line, and the
    /// stable-toolchain twin of `fuzz/fuzz_targets/audit_line.rs`: every
    /// one-byte edit of a sealed line is refused, and cut or garbled lines
    /// end in an error, never a panic.
    #[test]
    fn every_one_byte_edit_of_a_sealed_line_is_refused() {
        let mut chain = Chain::default();
        let mut f = Fields::new("request");
        f.put("session", 7u64).put("user", "alice").put("verdict", "allow");
        f.put("payload", Val::Hex(&[0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10]));
        let line = chain.seal(1_767_225_599_999_999, f);
        let line = line.trim_end().as_bytes();
        check_line(line).unwrap();
        let mut rng = dataplane::xorshift::XorShift::new(0x7a3e_0b5d_1c2f_4e69);
        for i in 0..line.len() {
            for _ in 0..4 {
                let mut edited = line.to_vec();
                edited[i] = loop {
                    let b = rng.byte();
                    if b != line[i] {
                        break b;
                    }
                };
                assert!(
                    check_line(&edited).is_err(),
                    "an edit at byte {i} passed: {}",
                    String::from_utf8_lossy(&edited)
                );
            }
        }
        for _ in 0..5000 {
            let mut bytes = line[..rng.below(line.len() + 1)].to_vec();
            for _ in 0..rng.below(3) {
                if !bytes.is_empty() {
                    let i = rng.below(bytes.len());
                    bytes[i] = rng.byte();
                }
            }
            let _ = check_line(&bytes);
        }
        // Any timestamp before the year 10000 formats and parses back.
        for _ in 0..5000 {
            let ts = rng.next_u64() % 253_402_300_800_000_000;
            assert_eq!(parse_rfc3339_micros(&rfc3339_micros(ts)), Some(ts), "{ts}");
        }
    }

    /// Seals `f` and checks the line is serde's canonical form of itself
    /// and a valid link; returns the record.
    fn seal_canonical(chain: &mut Chain, ts_us: u64, f: Fields<'_>) -> Value {
        let line = chain.seal(ts_us, f);
        let value: Value = serde_json::from_str(&line).unwrap();
        let mut canonical = Vec::new();
        canonical_into(&value, &mut canonical).unwrap();
        assert_eq!(format!("{}\n", into_text(canonical)), line);
        check_line(line.trim_end().as_bytes()).unwrap();
        value
    }

    #[test]
    fn audit_fast_seal_matches_the_canonical_form() {
        // Members before, around and after "hash"; escapes; lists; hex.
        let mut chain = Chain::default();
        let mut f = Fields::new("x\"y");
        f.put("a", "é\n\u{1}").put("hasg", 1u8).put("hasi", Val::Hex(&[0, 255]));
        f.put("roles", Val::List(vec!["a".into(), "b\\".into()])).put("z", None::<u64>).put("b", true);
        let value = seal_canonical(&mut chain, 5, f);
        assert_eq!(value["hasi"], "00ff");
        // Keys that share their first eight bytes (or are a prefix of
        // another), put out of order and one twice; hex longer than one
        // 32-byte chunk.
        let long: Vec<u8> = (0..=69).collect();
        let mut f = Fields::new("e");
        f.put("function_name", "n").put("functionx", 2u8).put("function", 1u8).put("function_", 3u8);
        f.put("payload", Val::Hex(&long)).put("function", 4u8);
        let value = seal_canonical(&mut chain, 6, f);
        assert_eq!(value["function"], 4);
        assert_eq!(value["payload"], long.iter().map(|b| format!("{b:02x}")).collect::<String>());
        assert_eq!(hex(&long).len(), 140);
        assert!(hex(&long).starts_with("000102") && hex(&long).ends_with("4445"));
        // "hash" first or last in sort order.
        for key in ["a", "zz"] {
            let mut c = Chain::default();
            let mut f = Fields::default();
            f.put(key, 1u8);
            let line = c.seal(0, f);
            check_line(line.trim_end().as_bytes()).unwrap();
        }
        let _ = obj(json!({}));
    }

    #[test]
    fn audit_integers_are_written_as_decimal() {
        // Two digits per step: every length, the pair boundaries, the extremes.
        let mut rng = dataplane::xorshift::XorShift::new(0x51de_77a1_0c3b_9e25);
        let mut xs = vec![0, 9, 10, 99, 100, 101, 999, 1000, 65_535, u64::from(u32::MAX), u64::MAX - 1, u64::MAX];
        xs.extend((0..20).map(|k| 10u64.pow(k)));
        xs.extend((0..1000).map(|_| rng.next_u64() >> rng.below(64)));
        for x in xs {
            assert_eq!(canonical(&json!(x)).unwrap(), x.to_string());
            let mut out = Vec::new();
            push_digits(&mut out, x, 6);
            assert_eq!(into_text(out), format!("{x:06}"));
        }
        assert_eq!(canonical(&json!(-7)).unwrap(), "-7");
        assert_eq!(canonical(&json!(i64::MIN)).unwrap(), i64::MIN.to_string());
    }

    #[test]
    fn audit_time_formats() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339_micros(951_782_400_000_007), "2000-02-29T00:00:00.000007Z");
        assert_eq!(rfc3339_micros(1_767_225_599_999_999), "2025-12-31T23:59:59.999999Z");
        assert_eq!(date(1_767_225_599_999_999), "2025-12-31");
        for t in [0, 951_782_400_000_007, 1_767_225_599_999_999, 4_102_444_800_123_456] {
            assert_eq!(parse_rfc3339_micros(&rfc3339_micros(t)), Some(t));
        }
        assert_eq!(parse_rfc3339_micros("2025-12-31T23:59:59Z"), None);
        // Past year 9999 the year just gets longer.
        assert_eq!(rfc3339_micros(253_402_300_800_000_000), "10000-01-01T00:00:00.000000Z");
    }

    #[test]
    fn audit_fields_stay_in_key_order_and_the_chain_owns_its_members() {
        let mut f = Fields::new("e");
        f.put("zeta", 1u8).put("alpha", 2u8).put("mid", 3u8).put("alpha", 4u8);
        let keys: Vec<&str> = f.items.iter().map(|(_, k, _)| *k).collect();
        assert_eq!(keys, ["alpha", "event", "mid", "zeta"]);
        assert_eq!(f.get("alpha"), Some(&Val::U64(4)));
        // A caller's seq, ts, prev or hash never reaches the line.
        f.put("seq", 99u8).put("ts", "then").put("prev", "forged").put("hash", "forged");
        let mut chain = Chain::default();
        let line = chain.seal(1, f);
        let sealed = check_line(line.trim_end().as_bytes()).unwrap();
        assert_eq!((sealed.seq, sealed.prev.as_str()), (1, GENESIS));
        assert_eq!(sealed.record["ts"], "1970-01-01T00:00:00.000001Z");
        assert_eq!(sealed.record["alpha"], 4);
        assert_eq!(line.matches("forged").count(), 0);
    }
}
