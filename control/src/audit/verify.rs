//! Reading an audit directory: verify the chain, list sessions, pick one
//! session's records. What `accessgate audit` runs.
//!
//! [`verify`] fails on the first record that is not what the writer wrote:
//! an edited byte (hash or canonical form), a deleted, inserted or swapped
//! line (`seq` or `prev` does not link), a line cut short (no `\n`), a
//! removed file (the next file does not link, or the trail does not start
//! at seq 1, or ends before the record `audit.head` names), and a session
//! capture whose SHA-256 is not the one its session-close record carries.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::chain::{self, GENESIS};
use super::writer::{journal_files, HEAD, PCAP_DIR};

/// The first bad record: where, which, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    pub file: PathBuf,
    /// 1-based line number (0: about the file or the directory as a whole).
    pub line: u64,
    /// The record's seq as written, or the one expected there.
    pub seq: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(seq) = self.seq {
            write!(f, ": seq {seq}")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// What a successful verification covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    pub files: usize,
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hash: String,
    /// Session captures whose digest matched.
    pub captures: u64,
    /// Sessions opened and not closed (the gate is running or crashed).
    pub open_sessions: u64,
}

/// One line of a journal, checked on its own.
pub struct Line {
    pub file: PathBuf,
    pub line: u64,
    pub text: String,
    pub record: Map<String, Value>,
}

/// Calls `f` with every record of `dir` in order, stopping at the first
/// that is not a valid link of the chain.
///
/// # Errors
/// The first bad record.
pub fn walk(dir: &Path, mut f: impl FnMut(&Line) -> Result<(), String>) -> Result<Verified, BadRecord> {
    let files = journal_files(dir).map_err(|e| BadRecord {
        file: dir.to_path_buf(),
        line: 0,
        seq: None,
        what: format!("cannot list the directory: {e}"),
    })?;
    let mut v = Verified { last_hash: GENESIS.into(), ..Verified::default() };
    let mut expected = 1u64;
    for path in &files {
        v.files += 1;
        let bad = |line: u64, seq: Option<u64>, what: String| BadRecord { file: path.clone(), line, seq, what };
        let file = File::open(path).map_err(|e| bad(0, None, format!("cannot read: {e}")))?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::with_capacity(1024);
        let mut n = 0u64;
        loop {
            buf.clear();
            let got = reader.read_until(b'\n', &mut buf).map_err(|e| bad(n + 1, None, format!("cannot read: {e}")))?;
            if got == 0 {
                break;
            }
            n += 1;
            if buf.last() != Some(&b'\n') {
                return Err(bad(
                    n,
                    Some(expected),
                    format!("line cut short ({got} bytes, no line end): the file was truncated mid-record"),
                ));
            }
            let body = &buf[..buf.len() - 1];
            let sealed = chain::check_line(body).map_err(|e| {
                let seq = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("seq")?.as_u64());
                bad(n, Some(seq.unwrap_or(expected)), e.to_string())
            })?;
            if sealed.seq != expected {
                let what = if v.records == 0 && expected == 1 {
                    format!(
                        "the trail starts at seq {} instead of 1: an earlier file or its first records were removed",
                        sealed.seq
                    )
                } else if sealed.seq > expected {
                    format!("found seq {} where seq {expected} belongs: records were deleted or moved", sealed.seq)
                } else {
                    format!(
                        "found seq {} where seq {expected} belongs: records were reordered or duplicated",
                        sealed.seq
                    )
                };
                return Err(bad(n, Some(sealed.seq), what));
            }
            if sealed.prev != v.last_hash {
                return Err(bad(
                    n,
                    Some(sealed.seq),
                    "prev does not match the previous record's hash: a record before it was changed or replaced".into(),
                ));
            }
            if v.records == 0 {
                v.first_seq = sealed.seq;
            }
            v.records += 1;
            v.last_seq = sealed.seq;
            v.last_hash.clone_from(&sealed.hash);
            expected = sealed.seq + 1;
            let line = Line {
                file: path.clone(),
                line: n,
                text: String::from_utf8_lossy(body).into_owned(),
                record: sealed.record,
            };
            f(&line).map_err(|what| bad(n, Some(sealed.seq), what))?;
        }
    }
    Ok(v)
}

/// Verifies the whole directory: the chain, `audit.head`, and every closed
/// session's capture digest.
///
/// # Errors
/// The first bad record (or a missing or mismatched capture or head).
pub fn verify(dir: &Path) -> Result<Verified, BadRecord> {
    let mut open: HashMap<String, ()> = HashMap::new();
    let mut captures = 0;
    let mut v = walk(dir, |line| {
        let event = line.record.get("event").and_then(Value::as_str).unwrap_or("");
        let session = line.record.get("session").and_then(Value::as_str).unwrap_or("").to_string();
        match event {
            "session_open" => {
                open.insert(session, ());
            }
            "session_close" => {
                open.remove(&session);
                let name = line.record.get("pcap").and_then(Value::as_str);
                let digest = line.record.get("pcap_sha256").and_then(Value::as_str);
                if let (Some(name), Some(digest)) = (name, digest) {
                    let path = dir.join(PCAP_DIR).join(name);
                    let bytes = std::fs::read(&path)
                        .map_err(|e| format!("capture {PCAP_DIR}/{name} of session {session}: {e}"))?;
                    if chain::hex(&Sha256::digest(&bytes)) != digest {
                        return Err(format!(
                            "capture {PCAP_DIR}/{name} of session {session} does not match the SHA-256 in its session-close record (changed or truncated)"
                        ));
                    }
                    captures += 1;
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    v.captures = captures;
    v.open_sessions = open.len() as u64;
    check_head(dir, &v)?;
    Ok(v)
}

/// The chain must reach the record `audit.head` names, with the same hash.
fn check_head(dir: &Path, v: &Verified) -> Result<(), BadRecord> {
    let path = dir.join(HEAD);
    let bad = |what: String| BadRecord { file: path.clone(), line: 0, seq: None, what };
    if v.records == 0 && !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad(format!("{e}: without it, records removed from the end of the trail cannot be detected")))?;
    let head: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let seq = head.get("seq").and_then(Value::as_u64).ok_or_else(|| bad("no seq".into()))?;
    let hash = head.get("hash").and_then(Value::as_str).unwrap_or("");
    let file = head.get("file").and_then(Value::as_str).unwrap_or("?");
    if seq > v.last_seq {
        return Err(BadRecord {
            file: dir.join(file),
            line: 0,
            seq: Some(v.last_seq + 1),
            what: format!(
                "the trail ends at seq {} but {HEAD} says seq {seq} (in {file}) was written: records or files were removed from the end",
                v.last_seq
            ),
        });
    }
    // The head's record is in the chain: compare its hash.
    let mut found = None;
    if seq == v.last_seq {
        found = Some(v.last_hash.clone());
    } else {
        let _ = walk(dir, |line| {
            if line.record.get("seq").and_then(Value::as_u64) == Some(seq) {
                found = line.record.get("hash").and_then(Value::as_str).map(String::from);
                return Err(String::new());
            }
            Ok(())
        });
    }
    if found.as_deref() != Some(hash) {
        return Err(bad(format!(
            "seq {seq} in the trail does not have the hash {HEAD} names: the trail was rewritten"
        )));
    }
    Ok(())
}

/// One session as the journal tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSummary {
    pub session: String,
    pub user: String,
    pub asset: String,
    pub asset_addr: String,
    pub client: String,
    pub protocol: String,
    pub opened: String,
    pub closed: Option<String>,
    pub reason: Option<String>,
    pub requests: u64,
    pub denied: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_us: u64,
    pub pcap: Option<String>,
    pub pcap_sha256: Option<String>,
}

/// Every session opened in `dir`, in order of opening. Records are read
/// without checking the chain (run [`verify`] for that).
///
/// # Errors
/// A file cannot be read.
pub fn sessions(dir: &Path) -> std::io::Result<Vec<SessionSummary>> {
    let mut out: Vec<SessionSummary> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    for_each_record(dir, |_, _, _, r| {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let u = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
        let sid = s("session");
        match r.get("event").and_then(Value::as_str) {
            Some("session_open") => {
                open.insert(sid.clone(), out.len());
                out.push(SessionSummary {
                    session: sid,
                    user: s("user"),
                    asset: s("asset"),
                    asset_addr: s("asset_addr"),
                    client: s("client"),
                    protocol: s("protocol"),
                    opened: s("ts"),
                    pcap: r.get("pcap").and_then(Value::as_str).map(String::from),
                    ..SessionSummary::default()
                });
            }
            Some("request") => {
                if let Some(&i) = open.get(&sid) {
                    out[i].requests += 1;
                    out[i].denied += u64::from(r.get("verdict").and_then(Value::as_str) == Some("deny"));
                }
            }
            Some("session_close") => {
                if let Some(i) = open.remove(&sid) {
                    let x = &mut out[i];
                    x.closed = Some(s("ts"));
                    x.reason = Some(s("reason"));
                    x.bytes_up = u("bytes_up");
                    x.bytes_down = u("bytes_down");
                    x.duration_us = u("duration_us");
                    x.pcap_sha256 = r.get("pcap_sha256").and_then(Value::as_str).map(String::from);
                }
            }
            _ => {}
        }
    })?;
    Ok(out)
}

/// Normalises a session id as a user types it (`0x1000000000003`,
/// `0001000000000003`) to the journal's form.
pub fn parse_session(id: &str) -> Option<String> {
    let t = id.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    u64::from_str_radix(t, 16).ok().map(super::writer::session_text)
}

/// The lines about `session` (auth, open, requests, ..., close), unchecked.
///
/// # Errors
/// A file cannot be read.
pub fn session_records(dir: &Path, session: &str) -> std::io::Result<Vec<Line>> {
    let mut out = Vec::new();
    for_each_record(dir, |file, n, text, r| {
        if r.get("session").and_then(Value::as_str) == Some(session) {
            out.push(Line { file: file.to_path_buf(), line: n, text: text.to_string(), record: r.clone() });
        }
    })?;
    Ok(out)
}

/// Every parseable record, unchecked: (file, line number, text, record).
fn for_each_record(dir: &Path, mut f: impl FnMut(&Path, u64, &str, &Map<String, Value>)) -> std::io::Result<()> {
    for path in journal_files(dir)? {
        let reader = BufReader::new(File::open(&path)?);
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line?;
            if let Ok(Value::Object(r)) = serde_json::from_slice::<Value>(&line) {
                f(&path, i as u64 + 1, &String::from_utf8_lossy(&line), &r);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testdir;
    use crate::audit::writer::tests::{session, writer};

    const DAY1: u64 = 1_767_225_000_000_000;
    const DAY2: u64 = 1_767_225_600_000_000;

    /// Two files: 2025-12-31 (seq 1..=6) and 2026-01-01 (seq 7..=11).
    fn trail(name: &str) -> (crate::audit::TestDir, PathBuf, PathBuf) {
        let dir = testdir(name);
        let mut w = writer(&dir, DAY1);
        session(&mut w, 1, DAY1);
        w.flush(DAY1);
        session(&mut w, 2, DAY2);
        assert!(w.sync(DAY2));
        verify(&dir).unwrap();
        let (a, b) = (dir.join("audit-2025-12-31.jsonl"), dir.join("audit-2026-01-01.jsonl"));
        (dir, a, b)
    }

    fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = std::fs::read(path).unwrap();
        f(&mut bytes);
        std::fs::write(path, bytes).unwrap();
    }

    fn line_start(bytes: &[u8], line: usize) -> usize {
        if line == 1 {
            return 0;
        }
        bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').nth(line - 2).unwrap().0 + 1
    }

    #[test]
    fn audit_tamper_flipped_byte() {
        let (dir, a, _) = trail("tamper-flip");
        // Flip one byte inside line 3's payload hex: still valid JSON.
        edit(&a, |b| {
            let at = line_start(b, 3) + 20;
            b[at] ^= 0x01;
        });
        let e = verify(&dir).unwrap_err();
        assert_eq!((e.file.as_path(), e.line, e.seq), (a.as_path(), 3, Some(3)), "{e}");
    }

    #[test]
    fn audit_tamper_flipped_byte_anywhere() {
        let (dir, a, _) = trail("tamper-flip-all");
        let original = std::fs::read(&a).unwrap();
        // Every single-bit flip of every byte of line 2 is detected at line 2.
        let (start, end) = (line_start(&original, 2), line_start(&original, 3));
        for at in start..end {
            for bit in [0x01, 0x20, 0x80] {
                edit(&a, |b| b[at] ^= bit);
                let e = verify(&dir).unwrap_err();
                assert!(e.line == 2 || (e.line == 3 && original[at] == b'\n'), "byte {at} bit {bit:#x}: {e}");
                std::fs::write(&a, &original).unwrap();
            }
        }
    }

    #[test]
    fn audit_tamper_deleted_line() {
        let (dir, a, _) = trail("tamper-delete");
        edit(&a, |b| {
            let (s, e) = (line_start(b, 4), line_start(b, 5));
            b.drain(s..e);
        });
        let e = verify(&dir).unwrap_err();
        assert_eq!((e.line, e.seq), (4, Some(5)), "{e}");
        assert!(e.what.contains("seq 4 belongs"), "{e}");
    }

    #[test]
    fn audit_tamper_swapped_lines() {
        let (dir, _, b) = trail("tamper-swap");
        edit(&b, |x| {
            let (s2, s3, s4) = (line_start(x, 2), line_start(x, 3), line_start(x, 4));
            let two = x[s2..s3].to_vec();
            let three = x[s3..s4].to_vec();
            x.splice(s2..s4, three.into_iter().chain(two));
        });
        let e = verify(&dir).unwrap_err();
        assert_eq!((e.file.as_path(), e.line, e.seq), (b.as_path(), 2, Some(9)), "{e}");
    }

    #[test]
    fn audit_tamper_truncated_mid_line() {
        let (dir, _, b) = trail("tamper-truncate");
        edit(&b, |x| {
            let cut = line_start(x, 5) + 40;
            x.truncate(cut);
        });
        let e = verify(&dir).unwrap_err();
        assert_eq!((e.file.as_path(), e.line, e.seq), (b.as_path(), 5, Some(11)), "{e}");
    }

    #[test]
    fn audit_tamper_truncated_whole_lines() {
        let (dir, _, b) = trail("tamper-truncate-lines");
        edit(&b, |x| {
            let cut = line_start(x, 4);
            x.truncate(cut);
        });
        let e = verify(&dir).unwrap_err();
        assert_eq!(e.seq, Some(10), "{e}");
        assert!(e.what.contains("audit.head says seq 11"), "{e}");
    }

    #[test]
    fn audit_tamper_removed_rotated_file() {
        let (dir, a, b) = trail("tamper-remove");
        let saved = std::fs::read(&a).unwrap();
        std::fs::remove_file(&a).unwrap();
        let e = verify(&dir).unwrap_err();
        assert_eq!((e.file.as_path(), e.line, e.seq), (b.as_path(), 1, Some(7)), "{e}");
        assert!(e.what.contains("starts at seq 7"), "{e}");
        // The newest file removed: audit.head catches it.
        std::fs::write(&a, saved).unwrap();
        std::fs::remove_file(&b).unwrap();
        let e = verify(&dir).unwrap_err();
        assert!(e.what.contains("says seq 11"), "{e}");
        // A middle file: the next one does not link.
        let (dir, _, _) = trail("tamper-remove-middle");
        let mut w = writer(&dir, DAY2 + 86_400_000_000);
        session(&mut w, 3, DAY2 + 86_400_000_000);
        assert!(w.sync(DAY2 + 86_400_000_000));
        verify(&dir).unwrap();
        std::fs::remove_file(dir.join("audit-2026-01-01.jsonl")).unwrap();
        let e = verify(&dir).unwrap_err();
        assert_eq!((e.line, e.seq), (1, Some(12)), "{e}");
        assert!(e.file.ends_with("audit-2026-01-02.jsonl"), "{e}");
    }

    #[test]
    fn audit_tamper_changed_capture() {
        let (dir, a, _) = trail("tamper-pcap");
        let pcap = dir.join(PCAP_DIR).join("0000000000000001.pcapng");
        edit(&pcap, |x| {
            let n = x.len();
            x[n - 30] ^= 1;
        });
        let e = verify(&dir).unwrap_err();
        assert_eq!((e.file.as_path(), e.line, e.seq), (a.as_path(), 6, Some(6)), "{e}");
        assert!(e.what.contains("capture"), "{e}");
    }
}
