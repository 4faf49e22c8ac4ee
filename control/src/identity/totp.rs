//! TOTP (RFC 6238): HMAC-SHA1, 6 digits, 30-second steps, one step of clock
//! skew either way; and the RFC 4648 base32 that authenticator apps use for
//! the secret.
//!
//! [`verify`] returns the step a code matched so the caller can refuse a
//! code whose step is not newer than the last one it accepted (single use,
//! RFC 6238 §5.2). Codes are compared in constant time; the three candidate
//! steps are always all computed.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::{Choice, ConstantTimeEq};

/// Digits in a production code.
pub const DIGITS: u32 = 6;
/// Seconds per step.
pub const PERIOD: u64 = 30;
/// Bytes in a generated secret (160 bits, RFC 4226's recommendation).
pub const SECRET_LEN: usize = 20;
/// Fewest bytes a stored secret may have (80 bits, what most apps accept).
pub const MIN_SECRET_LEN: usize = 10;
/// The issuer shown in authenticator apps.
pub const ISSUER: &str = "AccessGate";

/// A TOTP shared secret. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

/// A secret that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// A character outside the base32 alphabet.
    #[error("TOTP secret is not base32 (RFC 4648: A-Z and 2-7): bad character {0:?}")]
    BadCharacter(char),
    /// A length no base32 encoding has.
    #[error("TOTP secret has a truncated base32 length")]
    BadLength,
    /// Fewer than [`MIN_SECRET_LEN`] bytes.
    #[error("TOTP secret is {0} bytes; at least {MIN_SECRET_LEN} are needed")]
    TooShort(usize),
}

impl Secret {
    /// A fresh random secret of [`SECRET_LEN`] bytes from the OS.
    ///
    /// # Errors
    /// The OS random source failed.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut key = vec![0u8; SECRET_LEN];
        getrandom::fill(&mut key)?;
        Ok(Self(key))
    }

    /// A secret from raw bytes (tests, RFC vectors).
    pub fn from_bytes(key: &[u8]) -> Self {
        Self(key.to_vec())
    }

    /// Decodes base32 (case-insensitive; spaces and trailing `=` ignored).
    ///
    /// # Errors
    /// Not base32, or shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn from_base32(text: &str) -> Result<Self, SecretError> {
        let key = base32_decode(text)?;
        if key.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort(key.len()));
        }
        Ok(Self(key))
    }

    /// The base32 text (upper case, no padding) for the secrets file and
    /// the otpauth URI.
    pub fn to_base32(&self) -> String {
        base32_encode(&self.0)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The step number at `unix_time`.
pub const fn step(unix_time: u64) -> u64 {
    unix_time / PERIOD
}

/// HOTP (RFC 4226 §5.3): the `digits`-digit value for `counter`.
/// `digits` is clamped to 1..=9.
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    let digits = digits.clamp(1, 9);
    // HMAC takes keys of any length; this cannot fail.
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(key) else {
        return 0;
    };
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[h.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([h[offset], h[offset + 1], h[offset + 2], h[offset + 3]]) & 0x7fff_ffff;
    bin % 10u32.pow(digits)
}

/// The code for `counter` as zero-padded ASCII digits in `out[..digits]`.
fn code_bytes(key: &[u8], counter: u64, digits: u32, out: &mut [u8; 9]) -> usize {
    let digits = digits.clamp(1, 9) as usize;
    let mut v = hotp(key, counter, digits as u32);
    for slot in out[..digits].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    digits
}

/// The code at `unix_time`, zero-padded (what the user's app shows).
pub fn code_at(secret: &Secret, unix_time: u64, digits: u32) -> String {
    let mut out = [0u8; 9];
    let n = code_bytes(&secret.0, step(unix_time), digits, &mut out);
    out[..n].iter().map(|&b| char::from(b)).collect()
}

/// Checks a 6-digit `code` at `unix_time` against steps t-1, t and t+1.
/// Returns the step it matched (the latest, should two match).
pub fn verify(secret: &Secret, code: &str, unix_time: u64) -> Option<u64> {
    verify_digits(secret, code, unix_time, DIGITS)
}

/// [`verify`] with a digit count (RFC 6238's test vectors use 8).
pub fn verify_digits(secret: &Secret, code: &str, unix_time: u64, digits: u32) -> Option<u64> {
    let code = code.as_bytes();
    // The length and the digit-ness of the code are not secret.
    if code.len() != digits as usize || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let t = step(unix_time);
    let mut matched = None;
    for s in [t.checked_sub(1), Some(t), t.checked_add(1)].into_iter().flatten() {
        let mut want = [0u8; 9];
        let n = code_bytes(&secret.0, s, digits, &mut want);
        let eq: Choice = want[..n].ct_eq(code);
        // Which step matched is time, not secret; all three are computed.
        if bool::from(eq) {
            matched = Some(s);
        }
    }
    matched
}

/// The `otpauth://` URI an authenticator app scans.
pub fn otpauth_uri(account: &str, secret: &Secret) -> String {
    format!(
        "otpauth://totp/{ISSUER}:{}?secret={}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={PERIOD}",
        percent_encode(account),
        secret.to_base32()
    )
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, upper case, no padding.
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// RFC 4648 base32 decode: case-insensitive, spaces and trailing `=` ignored.
///
/// # Errors
/// A character outside the alphabet, or a length no encoding produces.
pub fn base32_decode(text: &str) -> Result<Vec<u8>, SecretError> {
    let text = text.trim_end_matches(|c: char| c == '=' || c.is_whitespace());
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut acc, mut bits, mut chars) = (0u32, 0u32, 0usize);
    for c in text.chars() {
        if c == ' ' {
            continue;
        }
        let v = match c.to_ascii_uppercase() {
            u @ 'A'..='Z' => u as u32 - 'A' as u32,
            d @ '2'..='7' => d as u32 - '2' as u32 + 26,
            other => return Err(SecretError::BadCharacter(other)),
        };
        acc = (acc << 5) | v;
        bits += 5;
        chars += 1;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // 8 characters carry 5 bytes; 1, 3 or 6 leftover characters carry none.
    if matches!(chars % 8, 1 | 3 | 6) {
        return Err(SecretError::BadLength);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows: the ASCII key "12345678901234567890".
    const RFC_KEY: &[u8] = b"12345678901234567890";
    const RFC_VECTORS: [(u64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn rfc6238_sha1_vectors() {
        let secret = Secret::from_bytes(RFC_KEY);
        for (t, want) in RFC_VECTORS {
            assert_eq!(code_at(&secret, t, 8), want, "T = {t}");
            assert_eq!(verify_digits(&secret, want, t, 8), Some(step(t)), "T = {t}");
        }
    }

    #[test]
    fn rfc4226_hotp_vectors() {
        // RFC 4226 Appendix D: same key, counters 0..9, 6 digits.
        let want = [755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489];
        for (counter, w) in want.into_iter().enumerate() {
            assert_eq!(hotp(RFC_KEY, counter as u64, 6), w);
        }
    }

    #[test]
    fn six_digit_production_path() {
        let secret = Secret::from_bytes(RFC_KEY);
        // The 6-digit code is the last six digits of the 8-digit one.
        for (t, eight) in RFC_VECTORS {
            let six = &eight[2..];
            assert_eq!(code_at(&secret, t, DIGITS), six);
            assert_eq!(verify(&secret, six, t), Some(step(t)), "T = {t}");
            assert_eq!(verify(&secret, eight, t), None, "8 digits to a 6-digit check");
        }
    }

    #[test]
    fn accepts_one_step_of_skew_and_no_more() {
        let secret = Secret::from_bytes(RFC_KEY);
        let now = 1_234_567_890;
        let t = step(now);
        let code = |s: u64| code_at(&secret, s * PERIOD, DIGITS);
        assert_eq!(verify(&secret, &code(t - 1), now), Some(t - 1));
        assert_eq!(verify(&secret, &code(t), now), Some(t));
        assert_eq!(verify(&secret, &code(t + 1), now), Some(t + 1));
        assert_eq!(verify(&secret, &code(t - 2), now), None);
        assert_eq!(verify(&secret, &code(t + 2), now), None);
        // Step 0 has no predecessor.
        assert_eq!(verify(&secret, &code(0), 5), Some(0));
    }

    #[test]
    fn malformed_codes_never_match() {
        let secret = Secret::from_bytes(RFC_KEY);
        for bad in ["", "12345", "1234567", "12a456", " 12345", "１２３４５６"] {
            assert_eq!(verify(&secret, bad, 59), None, "{bad:?}");
        }
    }

    #[test]
    fn base32_round_trip_and_rfc4648_vectors() {
        // RFC 4648 §10 (without padding).
        for (plain, enc) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), enc);
            assert_eq!(base32_decode(enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(base32_decode("mzxw6ytboi======").unwrap(), b"foobar");
        assert_eq!(base32_decode("MZXW 6YTB OI").unwrap(), b"foobar");
        assert_eq!(base32_decode("MZXW1"), Err(SecretError::BadCharacter('1')));
        assert_eq!(base32_decode("MZX"), Err(SecretError::BadLength));
        let s = Secret::generate().unwrap();
        assert_eq!(s.as_bytes().len(), SECRET_LEN);
        assert_eq!(Secret::from_base32(&s.to_base32()).unwrap(), s);
        // The example secret from the docs: 10 bytes, the accepted minimum.
        assert_eq!(Secret::from_base32("JBSWY3DPEHPK3PXP").unwrap().as_bytes(), b"Hello!\xde\xad\xbe\xef");
        assert_eq!(Secret::from_base32("JBSWY3DP"), Err(SecretError::TooShort(5)));
    }

    #[test]
    fn otpauth_uri_format() {
        let s = Secret::from_base32("JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(
            otpauth_uri("alice", &s),
            "otpauth://totp/AccessGate:alice?secret=JBSWY3DPEHPK3PXP&issuer=AccessGate&algorithm=SHA1&digits=6&period=30"
        );
        assert!(otpauth_uri("a b", &s).contains("AccessGate:a%20b?"));
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }
}
