use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use dataplane::audit::{AuditRecord, Decoded, Name, Note, SessionOpen, Text, Verdict};

use super::*;
use crate::audit::sink::AuthEvent;
use crate::audit::verify::{self, verify};
use crate::audit::{testdir, AuditConfig, Status};

const DAY1: u64 = 1_767_225_000_000_000; // 2025-12-31T23:50:00Z
const DAY2: u64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

pub(crate) fn writer(dir: &Path, now_us: u64) -> Writer {
    let cfg = AuditConfig { dir: dir.to_path_buf(), ..AuditConfig::default() };
    Writer::open(cfg, Arc::new(AtomicBool::new(true)), Arc::new(Status::default()), now_us).unwrap()
}

/// A session left open: the open record and one allowed read.
fn opened(w: &mut Writer, id: u64, t: u64) {
    opened_by(w, id, "alice", t);
}

/// [`opened`] for `user`.
fn opened_by(w: &mut Writer, id: u64, user: &str, t: u64) {
    let client = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 40000 + id as u16);
    let open = SessionOpen {
        user: Name::new(user),
        roles: Note::join(["operator", "viewer"], ","),
        client,
        endpoint: SocketAddrV4::new(Ipv4Addr::new(100, 64, 3, 7), 802),
        asset_name: Name::new("plc-7"),
        asset: SocketAddrV4::new(Ipv4Addr::new(198, 19, 3, 7), 502),
        protocol: Text::new("modbus"),
        tls_version: Text::new("TLSv1_3"),
        tls_cipher: Text::new("TLS13_AES_256_GCM_SHA384"),
        ticket: Name::new("t-1234"),
    };
    w.ingest(&AuditRecord::session_open(id, t, open), t);
    let read = [0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2];
    let d = Decoded::modbus(&read).unwrap();
    w.ingest(&AuditRecord::request(id, 1, t + 10, d, Verdict::Allow, Some(0), "ops-read", None, &read), t);
}

/// A session with an allowed read, a denied write, and the close.
pub(crate) fn session(w: &mut Writer, id: u64, t: u64) {
    opened(w, id, t);
    w.ingest(&AuditRecord::response(id, 1, t + 900, 890, &[0, 1, 0, 0, 0, 7, 1, 3, 4, 0, 10, 0, 20]), t);
    let write = [0, 2, 0, 0, 0, 6, 1, 6, 0, 1, 0, 99];
    w.ingest(
        &AuditRecord::request(
            id,
            2,
            t + 1000,
            Decoded::modbus(&write).unwrap(),
            Verdict::Deny,
            None,
            "",
            Some(1),
            &write,
        ),
        t,
    );
    w.ingest(&AuditRecord::session_close(id, t + 2000, "client_closed", None, 24, 13, 2000), t);
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(String::from).collect()
}

fn record(line: &str) -> Map<String, Value> {
    match serde_json::from_str(line).unwrap() {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[test]
fn audit_writer_records_a_session_that_verifies() {
    let dir = testdir("writer-session");
    let mut w = writer(&dir, DAY1);
    let req = dataplane::auth::AuthRequest {
        core: 0,
        session: 7,
        source: Ipv4Addr::new(198, 18, 0, 2),
        endpoint: SocketAddrV4::new(Ipv4Addr::new(100, 64, 3, 7), 802),
        credentials: dataplane::auth::Credentials::Password {
            user: "alice".into(),
            password: vec![],
            totp: String::new(),
        },
        purpose: dataplane::auth::Purpose::Connect { asset: "plc-7".into(), service: "modbus".into() },
        client_cert: None,
    };
    let verdict = dataplane::auth::AuthVerdict::Refuse {
        session: 7,
        reason: dataplane::wire::hello::Reason::BadCredentials,
        retry_after: None,
    };
    w.ingest_control(DAY1, ControlEvent::Auth(AuthEvent::request(&req).verdict(&verdict)), DAY1);
    session(&mut w, 7, DAY1);
    assert!(w.sync(DAY1));
    let file = dir.join("audit-2025-12-31.jsonl");
    let l = lines(&file);
    let events: Vec<String> = l.iter().map(|x| record(x)["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events, ["audit_start", "auth", "session_open", "request", "response", "request", "session_close"]);
    let auth = record(&l[1]);
    assert_eq!(
        (auth["user"].as_str(), auth["result"].as_str(), auth["reason"].as_str()),
        (Some("alice"), Some("failure"), Some("bad_credentials"))
    );
    let req = record(&l[3]);
    assert_eq!(req["function_name"], "ReadHoldingRegisters");
    assert_eq!(req["table"], "holding_registers");
    assert_eq!((req["address"].as_u64(), req["count"].as_u64()), (Some(0), Some(2)));
    assert_eq!(req["payload"], "000100000006010300000002");
    let deny = record(&l[5]);
    assert_eq!((deny["verdict"].as_str(), deny["exception"].as_u64()), (Some("deny"), Some(1)));
    let close = record(&l[6]);
    assert_eq!((close["requests"].as_u64(), close["denied"].as_u64()), (Some(2), Some(1)));
    let pcap = dir.join("pcap").join(close["pcap"].as_str().unwrap());
    assert_eq!(
        close["pcap_sha256"].as_str().unwrap(),
        chain::hex(&sha2::Sha256::digest(std::fs::read(&pcap).unwrap()))
    );
    use sha2::Digest;
    let v = verify(&dir).unwrap();
    assert_eq!((v.records, v.captures, v.open_sessions), (7, 1, 0));
    let s = verify::sessions(&dir).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].user.as_str(), s[0].requests, s[0].denied), ("alice", 2, 1));
    assert_eq!(verify::session_records(&dir, "0000000000000007").unwrap().len(), 6);
    assert_eq!(verify::parse_session("0x7").as_deref(), Some("0000000000000007"));
}

#[test]
fn without_captures_the_journal_keeps_every_payload_and_verifies() {
    let dir = testdir("writer-nopcap");
    let cfg = AuditConfig { dir: dir.clone(), pcap: false, ..AuditConfig::default() };
    let mut w = Writer::open(cfg, Arc::new(AtomicBool::new(true)), Arc::new(Status::default()), DAY1).unwrap();
    session(&mut w, 7, DAY1);
    assert!(w.sync(DAY1));
    let l = lines(&dir.join("audit-2025-12-31.jsonl"));
    let events: Vec<String> = l.iter().map(|x| record(x)["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events, ["audit_start", "session_open", "request", "response", "request", "session_close"]);
    assert_eq!(record(&l[1])["pcap"], Value::Null);
    assert_eq!(record(&l[2])["payload"], "000100000006010300000002");
    assert_eq!(record(&l[3])["payload"], "000100000007010304000a0014");
    let close = record(&l[5]);
    assert_eq!((close["pcap"].clone(), close["pcap_sha256"].clone()), (Value::Null, Value::Null));
    let pcaps = std::fs::read_dir(dir.join("pcap")).map_or(0, |d| d.count());
    assert_eq!(pcaps, 0, "no capture files");
    let v = verify(&dir).unwrap();
    assert_eq!((v.records, v.captures, v.open_sessions), (6, 0, 0));
}

#[test]
fn audit_rotation_carries_the_chain() {
    let dir = testdir("writer-rotation");
    let mut w = writer(&dir, DAY1);
    session(&mut w, 1, DAY1);
    w.flush(DAY1);
    // Midnight passes: the next record opens the next day's file.
    session(&mut w, 2, DAY2);
    assert!(w.sync(DAY2));
    let a = lines(&dir.join("audit-2025-12-31.jsonl"));
    let b = lines(&dir.join("audit-2026-01-01.jsonl"));
    assert_eq!((a.len(), b.len()), (6, 5));
    let last = record(a.last().unwrap());
    let first = record(&b[0]);
    assert_eq!(first["prev"], last["hash"]);
    assert_eq!(first["seq"].as_u64(), Some(7));
    verify(&dir).unwrap();
    // A restart continues the chain in the newest file.
    drop(w);
    let mut w = writer(&dir, DAY2 + 1);
    w.sync(DAY2 + 1);
    let b = lines(&dir.join("audit-2026-01-01.jsonl"));
    assert_eq!(record(b.last().unwrap())["continues_seq"].as_u64(), Some(11));
    let v = verify(&dir).unwrap();
    assert_eq!((v.files, v.records), (2, 12));
}

/// A writer with its threads, one session recorded on DAY1, and the group
/// commit of it running on the sync thread.
fn committing(dir: &Path) -> Writer {
    let mut w = writer(dir, DAY1);
    w.start_threads(Arc::new(dataplane::io::Doorbell::new().unwrap()));
    session(&mut w, 1, DAY1);
    w.start_sync(DAY1);
    assert!(w.in_flight.is_some(), "the commit runs on the sync thread");
    w
}

#[test]
fn midnight_during_a_commit_on_the_sync_thread() {
    let dir = testdir("writer-rotation-flight");
    let mut w = committing(&dir);
    // The next record is past midnight: the commit lands before the file
    // changes, and the chain goes on in the next day's file.
    session(&mut w, 2, DAY2);
    assert!(w.in_flight.is_none());
    assert!(w.sync(DAY2));
    let a = lines(&dir.join("audit-2025-12-31.jsonl"));
    let b = lines(&dir.join("audit-2026-01-01.jsonl"));
    assert_eq!((a.len(), b.len()), (6, 5));
    assert_eq!(record(&b[0])["prev"], record(a.last().unwrap())["hash"]);
    assert_eq!(head(&dir)["file"], "audit-2026-01-01.jsonl");
    assert_eq!(head(&dir)["seq"], 11);
    let v = verify(&dir).unwrap();
    assert_eq!((v.files, v.records, v.captures), (2, 11, 2));
}

#[test]
fn nothing_is_written_while_a_commit_runs_elsewhere() {
    let dir = testdir("writer-flight-nowrite");
    let mut w = committing(&dir);
    let file = dir.join("audit-2025-12-31.jsonl");
    let on_disk = std::fs::metadata(&file).unwrap().len();
    // A write now could fail and cut the journal back to its last synced
    // length, under the commit that is about to name those records in
    // audit.head: the flush waits for the commit to land.
    session(&mut w, 2, DAY1);
    w.flush(DAY1);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), on_disk, "written while a commit ran");
    w.settle();
    w.flush(DAY1);
    assert!(std::fs::metadata(&file).unwrap().len() > on_disk);
    assert!(w.sync(DAY1));
    assert_eq!(verify(&dir).unwrap().records, 11);
}

#[test]
fn audit_torn_tail_is_cut_and_recorded() {
    let dir = testdir("writer-torn");
    let mut w = writer(&dir, DAY1);
    session(&mut w, 1, DAY1);
    assert!(w.sync(DAY1));
    drop(w);
    let file = dir.join("audit-2025-12-31.jsonl");
    // A crash in the middle of a write: half a line.
    let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
    f.write_all(b"{\"event\":\"request\",\"payload\":\"0001").unwrap();
    drop(f);
    let err = verify(&dir).unwrap_err();
    assert_eq!((err.line, err.seq), (7, Some(7)), "{err}");
    assert!(err.what.contains("cut short"), "{err}");
    let mut w = writer(&dir, DAY1 + 5);
    assert!(w.sync(DAY1 + 5));
    let l = lines(&file);
    let torn = record(l.last().unwrap());
    assert_eq!((torn["event"].as_str(), torn["kind"].as_str()), (Some("anomaly"), Some("torn_tail")));
    assert_eq!(torn["bytes"].as_u64(), Some(34));
    assert_eq!(record(&l[l.len() - 2])["event"], "audit_start");
    assert_eq!(verify(&dir).unwrap().records, 8);
}

/// A writer with one session synced, whose journal then fails: it points
/// at a path under a regular file (replacing the open journal by a
/// directory is not possible, and root writes anything else). Returns
/// the directory, the writer and the good journal.
fn writer_whose_disk_fails(test: &str) -> (crate::audit::TestDir, Writer, DurableFile) {
    let dir = testdir(test);
    let mut w = writer(&dir, DAY1);
    session(&mut w, 1, DAY1);
    assert!(w.sync(DAY1));
    let blocker = dir.join("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    let good = std::mem::replace(&mut w.file, DurableFile::lazy(&blocker.join("audit-2025-12-31.jsonl")));
    (dir, w, good)
}

#[test]
fn audit_writer_holds_records_while_the_disk_fails() {
    let (dir, mut w, good) = writer_whose_disk_fails("writer-fail");
    session(&mut w, 2, DAY1);
    w.flush(DAY1);
    assert!(!w.healthy());
    assert!(!w.sync(DAY1));
    assert!(!w.healthy.load(Ordering::Acquire));
    assert!(w.pending_bytes() > 0);
    // The disk "recovers": the held bytes go to the real file.
    let held = std::mem::replace(&mut w.file, good);
    w.file.append(&held.buf_for_test());
    assert!(w.sync(DAY1 + 1));
    assert!(w.healthy());
    let l = lines(&dir.join("audit-2025-12-31.jsonl"));
    assert_eq!(record(l.last().unwrap())["event"], "audit_outage");
    assert_eq!(verify(&dir).unwrap().records, 12);
}

fn head(dir: &Path) -> Map<String, Value> {
    record(std::fs::read_to_string(dir.join(HEAD)).unwrap().trim())
}

#[test]
fn a_group_commit_elsewhere_covers_what_it_was_handed() {
    let dir = testdir("writer-flight");
    let mut w = writer(&dir, DAY1);
    session(&mut w, 1, DAY1);
    opened(&mut w, 2, DAY1);
    // audit_start, 5 records of session 1, 2 of session 2.
    let (job, flight) = w.prepare(true).unwrap();
    assert_eq!(flight.chain.seq, 8);
    let covered = w.file.unsynced();
    assert_eq!(flight.journal.map(|m| m.bytes()), Some(covered));
    // While the sync runs: session 2 closes (its capture moves to the
    // closed ones) and session 3 comes and goes; written, not synced.
    w.ingest(&AuditRecord::session_close(2, DAY1 + 50, "client_closed", None, 12, 0, 50), DAY1);
    session(&mut w, 3, DAY1);
    w.flush(DAY1);
    let later = w.file.unsynced();
    assert!(later > 0);
    job.run().unwrap();
    w.land(flight, Ok(())).unwrap();
    assert_eq!(w.status.synced_seq.load(Ordering::Relaxed), 8);
    assert_eq!(head(&dir)["seq"], 8, "audit.head names the group commit's last record");
    assert_eq!(w.file.unsynced(), later - covered, "the journal bytes after the commit still wait");
    assert!(w.dirty_with(w.pending_bytes()));
    assert!(w.sync(DAY1));
    assert_eq!(w.pending_bytes(), 0);
    assert_eq!(head(&dir)["seq"], 14);
    let v = verify(&dir).unwrap();
    assert_eq!((v.records, v.captures, v.open_sessions), (14, 3, 0));
}

#[test]
fn open_captures_are_committed_at_their_turn_closed_ones_with_their_close() {
    let dir = testdir("writer-capture-turn");
    let mut w = writer(&dir, DAY1);
    let capture_len = |w: &mut Writer, id: u64| {
        let path = w.capture_of(id).unwrap().file().path().to_path_buf();
        std::fs::metadata(path).map_or(0, |m| m.len())
    };
    let commit = |w: &mut Writer, all: bool| {
        let (job, flight) = w.prepare(all).unwrap();
        job.run().unwrap();
        w.land(flight, Ok(())).unwrap();
    };
    opened(&mut w, 1, DAY1);
    session(&mut w, 2, DAY1);
    // A commit between turns: the journal and the closed session's capture
    // (named by its close record) are synced; the open one waits, kept.
    commit(&mut w, false);
    assert_eq!(w.status.synced_seq.load(Ordering::Relaxed), w.chain.seq);
    assert_eq!(capture_len(&mut w, 1), 0, "an open capture waits for its turn");
    let waiting = w.capture_of(1).unwrap().pending();
    assert!(waiting > 0);
    assert_eq!(w.pending_bytes(), waiting, "only the open capture waits");
    let v = verify(&dir).unwrap();
    assert_eq!((v.captures, v.open_sessions), (1, 1), "the closed session's capture verifies");
    // Its turn: written and synced; nothing waits.
    commit(&mut w, true);
    assert_eq!(capture_len(&mut w, 1), waiting as u64);
    assert_eq!(w.pending_bytes(), 0);
    // A capture that grew large is written before its turn.
    let read = [0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2];
    let d = Decoded::modbus(&read).unwrap();
    let mut seq = 2;
    while w.capture_of(1).unwrap().pending() < CAPTURE_WRITE_BYTES {
        w.ingest(&AuditRecord::request(1, seq, DAY1 + 100, d, Verdict::Allow, Some(0), "ops-read", None, &read), DAY1);
        seq += 1;
    }
    let before = capture_len(&mut w, 1);
    commit(&mut w, false);
    assert!(capture_len(&mut w, 1) > before, "a large capture is written between turns");
    // The writer's own loop: the open capture's turn is CAPTURE_COMMIT
    // away, longer than the journal's interval, so no commit is wanted for
    // it alone until then.
    let now = Instant::now();
    w.captures_due = now + CAPTURE_COMMIT;
    let (pending, interval) = (w.pending_bytes(), Duration::from_millis(50));
    assert!(pending > 0);
    let wait = w.commit_wait(pending, interval, interval, now).unwrap();
    assert!(wait > interval && wait >= CAPTURE_COMMIT - Duration::from_millis(10), "{wait:?}");
    w.ingest(&AuditRecord::response(1, 2, DAY1 + 200, 10, &[0, 1, 0, 0, 0, 3, 1, 3, 0]), DAY1);
    assert_eq!(w.commit_wait(w.pending_bytes(), interval, interval, now), Some(Duration::ZERO), "a record is");
    assert!(w.sync(DAY1));
    assert_eq!(w.commit_wait(w.pending_bytes(), interval, interval, now), None);
    assert_eq!(verify(&dir).unwrap().open_sessions, 1);
}

#[test]
fn a_failed_group_commit_elsewhere_is_written_again() {
    let dir = testdir("writer-flight-fail");
    let mut w = writer(&dir, DAY1);
    session(&mut w, 1, DAY1);
    assert!(w.sync(DAY1));
    let synced = std::fs::metadata(dir.join("audit-2025-12-31.jsonl")).unwrap().len();
    let first_capture = std::fs::read_dir(dir.join(PCAP_DIR)).unwrap().next().unwrap().unwrap().file_name();
    opened(&mut w, 2, DAY1);
    session(&mut w, 3, DAY1);
    let (job, flight) = w.prepare(true).unwrap();
    assert_eq!(flight.closing.len(), 1, "session 3's capture rides with the commit");
    w.ingest(&AuditRecord::session_close(2, DAY1 + 50, "client_closed", None, 12, 0, 50), DAY1);
    w.flush(DAY1);
    drop(job);
    // The sync failed (EIO): nothing it covered is trusted to be on disk.
    let e = w.land(flight, Err(std::io::Error::other("EIO"))).unwrap_err();
    w.fail(DAY1, e);
    assert!(!w.healthy());
    assert_eq!(w.status.synced_seq.load(Ordering::Relaxed), 6);
    assert!(w.pending_bytes() > 0);
    // After a failed sync the kernel may have dropped the dirty pages: the
    // files end where the last good sync left them.
    std::fs::OpenOptions::new().write(true).open(dir.join("audit-2025-12-31.jsonl")).unwrap().set_len(synced).unwrap();
    for e in std::fs::read_dir(dir.join(PCAP_DIR)).unwrap() {
        let p = e.unwrap().path();
        if !p.ends_with(&first_capture) {
            std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(0).unwrap();
        }
    }
    // The next sync writes it all again from the last good one: whole,
    // once, in order.
    assert!(w.sync(DAY1 + 1));
    assert!(w.healthy());
    let l = lines(&dir.join("audit-2025-12-31.jsonl"));
    assert_eq!(record(l.last().unwrap())["event"], "audit_outage");
    let v = verify(&dir).unwrap();
    assert_eq!((v.records, v.captures, v.open_sessions), (15, 3, 0));
}

#[test]
fn the_idle_wait_ends_when_a_group_commit_is_due() {
    // Nothing to commit: the plain wait.
    assert_eq!(idle_wait_ms(None), IDLE_WAIT_MS);
    // A commit due later than the plain wait does not stretch it.
    assert_eq!(idle_wait_ms(Some(Duration::from_millis(50))), IDLE_WAIT_MS);
    // `--audit-fsync-ms 2`: the writer wakes when the commit is due,
    // rounded up, so it does not wake early and wait a whole round again.
    assert_eq!(idle_wait_ms(Some(Duration::from_micros(1_200))), 2);
    assert_eq!(idle_wait_ms(Some(Duration::from_millis(2))), 2);
    // Due now (or overdue): the shortest wait poll(2) takes, not 0 (a spin).
    assert_eq!(idle_wait_ms(Some(Duration::ZERO)), 1);
    assert_eq!(idle_wait_ms(Some(Duration::from_micros(10))), 1);
}

/// Bytes from lowercase hex (test vectors).
fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn an_enip_capture_shows_a_connected_refusal_on_the_connection_the_gate_answered_on() {
    // pycomm3's Large Forward Open (T->O id 37a09020), the target's reply
    // (O->T id e0fe589e), and a connected Reset of the Identity object on
    // O->T, which the gate refuses on T->O.
    let open = unhex(concat!(
        "6f0042009f635f34000000005f7079636f6d6d5f00000000000000000a00020000000000b20032005b0220062401",
        "0a050000000037a09020270409102ecae7f80700000001402000a00f004201402000a00f0042a30220022401"
    ));
    let reply = unhex(concat!(
        "6f002e009f635f34000000005f7079636f6d6d5f00000000000000000a00020000000000b2001e00db000000",
        "e0fe589e37a09020270409102ecae7f801402000014020000000"
    ));
    // The same Forward Open with a route 300 bytes longer: the trail keeps
    // its first 260 bytes, and the ids are among them.
    let mut long_open = open.clone();
    long_open.extend([0x01; 300]);
    let encap = u16::from_le_bytes([open[2], open[3]]) + 300;
    long_open[2..4].copy_from_slice(&encap.to_le_bytes());
    let item = u16::from_le_bytes([open[38], open[39]]) + 300;
    long_open[38..40].copy_from_slice(&item.to_le_bytes());
    assert_eq!(dataplane::inspect::enip::forward_open_request(&long_open), Some(0x2090_a037));
    for (name, open) in [("short", &open), ("long", &long_open)] {
        refused_on_the_learned_connection(name, open, &reply);
    }
}

/// A session with the Forward Open `open`, its `reply`, and a refused
/// connected Reset on the connection they opened.
fn refused_on_the_learned_connection(name: &str, open: &[u8], reply: &[u8]) {
    use dataplane::inspect::{Inspected, Verdict as V};
    use dataplane::policy::{Denial, Op};
    let reset = unhex(concat!(
        "70001c009f635f34000000005f7079636f6d6d5f00000000000000000a000200a1000400e0fe589eb1000800",
        "0100050220012401"
    ));
    let dir = testdir(&format!("writer-enip-refusal-{name}"));
    let mut w = writer(&dir, DAY1);
    let t = DAY1;
    let client = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 40001);
    let asset = SocketAddrV4::new(Ipv4Addr::new(198, 19, 3, 9), 44818);
    let session = SessionOpen {
        user: Name::new("bob"),
        roles: Note::join(["viewer"], ","),
        client,
        endpoint: SocketAddrV4::new(Ipv4Addr::new(100, 64, 3, 9), 44818),
        asset_name: Name::new("plc-9"),
        asset,
        protocol: Text::new("enip"),
        tls_version: Text::new("TLSv1_3"),
        tls_cipher: Text::new("TLS13_AES_256_GCM_SHA384"),
        ticket: Name::new(""),
    };
    w.ingest(&AuditRecord::session_open(9, t, session), t);
    let opened = Inspected { function: 0x5b, op: Op::Connect, ..Inspected::UNKNOWN };
    let d = Decoded::unit(&opened);
    w.ingest(&AuditRecord::request(9, 1, t + 10, d, Verdict::Allow, None, "", None, open), t);
    w.ingest(&AuditRecord::response(9, 1, t + 20, 10, reply), t);
    let refused = Inspected {
        function: 0x05,
        op: Op::Control,
        verdict: V::Denied { denial: Denial::NoRule, error: 0x0f },
        ..Inspected::UNKNOWN
    };
    let d = Decoded::unit(&refused);
    w.ingest(&AuditRecord::request(9, 2, t + 30, d, Verdict::Deny, None, "", None, &reset), t);
    w.ingest(&AuditRecord::session_close(9, t + 40, "client_closed", None, 0, 0, 40), t);
    assert!(w.sync(DAY1));
    let close = record(lines(&dir.join("audit-2025-12-31.jsonl")).last().unwrap());
    let pcap = std::fs::read(dir.join("pcap").join(close["pcap"].as_str().unwrap())).unwrap();
    let has = |needle: &[u8]| pcap.windows(needle.len()).any(|w| w == needle);
    // The request went on O->T; the refusal (Reset reply 0x85, privilege
    // violation) came back on T->O, with the request's sequence count.
    assert!(has(&[0xa1, 0, 4, 0, 0xe0, 0xfe, 0x58, 0x9e, 0xb1, 0, 8, 0, 1, 0, 5]), "{name}: the request");
    let refusal = [0xa1, 0, 4, 0, 0x37, 0xa0, 0x90, 0x20, 0xb1, 0, 6, 0, 1, 0, 0x85, 0, 0x0f, 0];
    assert!(has(&refusal), "{name}: the refusal");
    assert_eq!(verify(&dir).unwrap().captures, 1);
}

/// Every session is logged with its whole user name: two valid names (up
/// to 64 characters, `identity::users::check_name`) that share their first
/// 32 are two users (found by a review: names were cut at 32).
#[test]
fn a_valid_user_name_is_logged_whole() {
    let a = "maintenance.contractor.siemens-a.anna";
    let b = "maintenance.contractor.siemens-a.bert";
    crate::identity::users::check_name(a).unwrap();
    crate::identity::users::check_name(b).unwrap();
    let dir = testdir("writer-user-name");
    let mut w = writer(&dir, DAY1);
    opened_by(&mut w, 1, a, DAY1);
    opened_by(&mut w, 2, b, DAY1);
    assert!(w.sync(DAY1));
    let s = verify::sessions(&dir).unwrap();
    let users: Vec<&str> = s.iter().map(|s| s.user.as_str()).collect();
    assert_eq!(users, [a, b], "the trail names the sessions' users");
}

/// `audit.head` is rewritten in place, one 512-byte block, at every group
/// commit: the same inode each time (a new file renamed over the old freed
/// a block a commit, a discard request each on a file system mounted with
/// `discard`), and the trail still verifies against it; a longer head left
/// by an older version is cut to the block.
#[test]
fn the_head_is_rewritten_in_place() {
    use std::os::unix::fs::MetadataExt;
    let dir = testdir("writer-head-in-place");
    std::fs::write(dir.join(HEAD), " ".repeat(2000)).unwrap();
    let mut w = writer(&dir, DAY1);
    session(&mut w, 1, DAY1);
    assert!(w.sync(DAY1));
    let first = std::fs::metadata(dir.join(HEAD)).unwrap();
    assert_eq!(first.len(), 512);
    let seq1 = head(&dir)["seq"].as_u64().unwrap();
    session(&mut w, 2, DAY1 + 1);
    assert!(w.sync(DAY1 + 1));
    let second = std::fs::metadata(dir.join(HEAD)).unwrap();
    assert_eq!((second.ino(), second.len()), (first.ino(), 512), "the same file, the same size");
    assert!(head(&dir)["seq"].as_u64().unwrap() > seq1);
    assert!(!dir.join(".audit.head.tmp").exists());
    assert_eq!(verify(&dir).unwrap().records, head(&dir)["seq"].as_u64().unwrap());
}

/// A journal that cannot be synced at midnight is an outage from then on
/// (found by a review: the failed sync of the rotation left the writer
/// healthy, trying a full sync again at every record until the next
/// group commit failed too).
#[test]
fn a_rotation_that_cannot_sync_starts_the_outage() {
    let (_, mut w, _) = writer_whose_disk_fails("writer-rotation-fail");
    session(&mut w, 2, DAY1);
    assert!(w.healthy(), "nothing written yet");
    let day2 = DAY1 + 86_400_000_000;
    session(&mut w, 3, day2);
    assert!(!w.healthy(), "the rotation's sync failed: an outage");
    assert!(!w.healthy.load(Ordering::Acquire), "sessions are refused");
    assert!(w.pending_bytes() > 0, "the records are held");
}
