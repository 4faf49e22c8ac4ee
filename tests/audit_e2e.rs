//! The audit trail end to end: the writer thread fed through the dp cores'
//! queues and the control sink, `accessgate audit` on what it wrote, a disk
//! that fills up (tmpfs, root), a disk slow to sync (FUSE under a loop
//! device, root), a writer killed with SIGKILL mid-write, and
//! a real rsyslog receiving the records over TLS.
//!
//! Tests that need root or a package skip with a message saying so.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::audit::{self, AuditConfig, AuditQueue, AuditRecord, AuthEvent, SyslogConfig};
use dataplane::audit::{unix_micros, Decoded, Name, Note, SessionOpen, Text, Verdict};
use serde_json::Value;

fn accessgate() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_accessgate"))
}

fn tempdir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "accessgate-audit-e2e-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// utime + stime (clock ticks) of this process's thread named `name`.
fn thread_cpu_ticks(name: &str) -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        if std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == name) {
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
            // Fields after the parenthesised name: state is the 3rd field,
            // utime and stime the 14th and 15th.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<u64> = rest.split(' ').skip(11).take(2).map(|v| v.parse().unwrap()).collect();
            return f[0] + f[1];
        }
    }
    panic!("no thread named {name}");
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Pushes like a dp core: a full queue is retried, never dropped.
fn push(q: &AuditQueue, mut rec: AuditRecord) {
    loop {
        match q.try_push(rec) {
            Ok(()) => return,
            Err(back) => {
                rec = back;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

fn open_record(id: u64) -> AuditRecord {
    AuditRecord::session_open(
        id,
        unix_micros(),
        SessionOpen {
            user: Name::new("alice"),
            roles: Note::join(["operator"], ","),
            client: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 40000 + (id % 20000) as u16),
            endpoint: SocketAddrV4::new(Ipv4Addr::new(100, 64, 3, 7), 802),
            asset_name: Name::new("plc-7"),
            asset: SocketAddrV4::new(Ipv4Addr::new(198, 19, 3, 7), 502),
            protocol: Text::new("modbus"),
            tls_version: Text::new("TLSv1_3"),
            tls_cipher: Text::new("TLS13_AES_128_GCM_SHA256"),
            ticket: Name::EMPTY,
        },
    )
}

/// One session of `requests` reads (every 5th write denied) on `q`.
fn session(q: &AuditQueue, id: u64, requests: u32) {
    push(q, open_record(id));
    for k in 1..=requests {
        let tid = (k as u16).to_be_bytes();
        if k % 5 == 0 {
            let adu = [tid[0], tid[1], 0, 0, 0, 6, 1, 6, 0, 9, 0, 1];
            let d = Decoded::modbus(&adu).unwrap();
            push(q, AuditRecord::request(id, k, unix_micros(), d, Verdict::Deny, None, "", Some(1), &adu));
        } else {
            let adu = [tid[0], tid[1], 0, 0, 0, 6, 1, 3, 0, 0, 0, 4];
            let d = Decoded::modbus(&adu).unwrap();
            push(q, AuditRecord::request(id, k, unix_micros(), d, Verdict::Allow, Some(0), "ops-read", None, &adu));
            let rsp = [tid[0], tid[1], 0, 0, 0, 11, 1, 3, 8, 0, 1, 0, 2, 0, 3, 0, 4];
            push(q, AuditRecord::response(id, k, unix_micros(), 350, &rsp));
        }
    }
    push(q, AuditRecord::session_close(id, unix_micros(), "client_closed", None, 12 * u64::from(requests), 17, 5000));
}

fn records(dir: &Path) -> Vec<serde_json::Map<String, Value>> {
    let mut out = Vec::new();
    for f in audit::writer::journal_files(dir).unwrap() {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            if let Ok(Value::Object(m)) = serde_json::from_str(line) {
                out.push(m);
            }
        }
    }
    out
}

fn count(recs: &[serde_json::Map<String, Value>], event: &str) -> usize {
    recs.iter().filter(|r| r["event"] == event).count()
}

/// Asserts that `sessions` sessions of `requests` requests each, as
/// [`session`] makes them, are in the journal once each and that every
/// capture verifies.
fn all_recorded(dir: &Path, sessions: usize, requests: usize) -> audit::verify::Verified {
    let v = audit::verify::verify(dir).unwrap();
    let recs = records(dir);
    assert_eq!(count(&recs, "session_open"), sessions);
    assert_eq!(count(&recs, "request"), sessions * requests);
    assert_eq!(count(&recs, "response"), sessions * (requests - requests / 5), "every 5th request is denied");
    assert_eq!(count(&recs, "session_close"), sessions);
    assert_eq!(v.captures, sessions as u64, "every session's capture is whole");
    v
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(accessgate()).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn a_paced_writer_takes_turns_and_loses_nothing() {
    let dir = tempdir("paced");
    let q = Arc::new(AuditQueue::new(4096));
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = AuditConfig { dir: dir.clone(), ..AuditConfig::default() };
    let handle = audit::spawn_paced(cfg, vec![q.clone()], stop, Some(0)).unwrap();
    let pacer = handle.pacer().expect("a writer sharing a dp CPU has a pacer");
    // A dp core's passes without work, every 20 µs, while another thread
    // produces 30 sessions of 200 requests.
    let producing = Arc::new(AtomicBool::new(true));
    let core = {
        let (pacer, producing) = (pacer.clone(), producing.clone());
        std::thread::spawn(move || {
            let mut turns = 0u64;
            while producing.load(Ordering::Acquire) {
                turns += u64::from(pacer.core_idle());
                std::thread::sleep(Duration::from_micros(20));
            }
            turns
        })
    };
    // Sessions come 2 ms apart: the queue stays under half full, where the
    // writer stops waiting for turns to catch up.
    for id in 1..=30u64 {
        session(&q, id, 200);
        std::thread::sleep(Duration::from_millis(2));
    }
    // Everything queued is taken before the core stops giving turns.
    let t0 = Instant::now();
    while !q.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the writer did not drain the queue");
        std::thread::sleep(Duration::from_millis(1));
    }
    producing.store(false, Ordering::Release);
    let turns = core.join().unwrap();
    handle.shutdown();
    let v = all_recorded(&dir, 30, 200);
    // 10,860 records take the writer far more than one 50 µs slice: it
    // waited for turns, and the idle passes gave them.
    assert!(turns >= 10, "the core gave the writer {turns} turns");
    eprintln!("paced writer: {} records, {turns} turns given by idle passes", v.records);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn audit_cli_verify_sessions_show_export() {
    let (ok, _, err) = run(&["audit", "--help"]);
    assert!(ok, "src/main.rs must wire `Command::Audit(audit_cmd::AuditArgs)`: {err}");
    let dir = tempdir("cli");
    let q = Arc::new(AuditQueue::new(256));
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = AuditConfig { dir: dir.clone(), ..AuditConfig::default() };
    let handle = audit::spawn(cfg, vec![q.clone()], stop).unwrap();
    assert!(handle.healthy());
    let sink = handle.sink();
    let auth = AuthEvent {
        session: 0x1_0000_0000_0003,
        user: "alice".into(),
        source: "198.18.0.2".parse().unwrap(),
        endpoint: "100.64.3.7:802".parse().unwrap(),
        method: "ticket".into(),
        purpose: "connect".into(),
        asset: Some("plc-7".into()),
        service: Some("modbus".into()),
        success: true,
        reason: None,
        roles: vec!["operator".into()],
        ticket_id: Some("t-42".into()),
        expires_unix: Some(1_900_000_000),
    };
    sink.auth(auth).unwrap();
    session(&q, 0x1_0000_0000_0003, 10);
    sink.policy_reload(2, Path::new("/etc/accessgate/gate.toml"), Some("ab".repeat(32)), vec![]).unwrap();
    handle.shutdown();

    let d = dir.to_str().unwrap();
    let (ok, out, err) = run(&["audit", "verify", d]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("1 session capture(s) match"), "{out}");
    let (ok, out, _) = run(&["audit", "sessions", d]);
    assert!(ok && out.contains("0001000000000003") && out.contains("alice") && out.contains("client_closed"), "{out}");
    let (ok, out, _) = run(&["audit", "show", d, "0x1000000000003"]);
    assert!(ok, "{out}");
    assert!(out.contains("auth      alice success"), "{out}");
    assert!(out.contains("ReadHoldingRegisters(3) holding_registers 0..=3  ALLOW (rule ops-read)"), "{out}");
    assert!(out.contains("DENY (rule default, answered with exception 1)"), "{out}");
    let export = dir.join("export").join("s.pcapng");
    std::fs::create_dir_all(export.parent().unwrap()).unwrap();
    let (ok, out, err) = run(&["audit", "export", d, "--session", "1000000000003", "--out", export.to_str().unwrap()]);
    assert!(ok && out.contains("matches its session-close record"), "{out}{err}");
    let slice = std::fs::read_to_string(export.with_extension("jsonl")).unwrap();
    assert_eq!(slice.lines().count(), 1 + 1 + 10 + 8 + 1, "auth + open + requests + responses + close");
    if Command::new("tshark").arg("--version").output().is_ok() {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&export)
            .args(["-Y", "modbus", "-T", "fields", "-e", "modbus.func_code"])
            .output()
            .unwrap();
        let codes = String::from_utf8_lossy(&out.stdout);
        assert_eq!(codes.lines().filter(|c| *c == "3").count(), 16, "{codes}");
        assert_eq!(codes.lines().filter(|c| *c == "6").count(), 4, "{codes}");
    }

    // Tampering: one flipped byte fails verify, naming file, line and seq.
    let file = audit::writer::journal_files(&dir).unwrap().pop().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let line5 = bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').nth(3).unwrap().0 + 1;
    let at = line5 + bytes[line5..].windows(9).position(|w| w == b"\"payload\"").unwrap() + 13;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&file, bytes).unwrap();
    let (ok, _, err) = run(&["audit", "verify", d]);
    assert!(!ok);
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(&format!("{name}:5: seq 5: hash does not match")), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn audit_disk_full_holds_records_and_recovers() {
    if !is_root() {
        eprintln!("SKIP audit_disk_full_holds_records_and_recovers: needs root to mount a tmpfs");
        return;
    }
    let dir = tempdir("diskfull");
    let status = Command::new("mount").args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"]).arg(&dir).status().unwrap();
    if !status.success() {
        eprintln!("SKIP audit_disk_full_holds_records_and_recovers: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(dir.clone());
    let q = Arc::new(AuditQueue::new(256));
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = AuditConfig { dir: dir.clone(), max_pending_bytes: 512 << 10, retry_ms: 20, ..AuditConfig::default() };
    let handle = audit::spawn(cfg, vec![q.clone()], stop).unwrap();
    let health = handle.health_flag();
    // A first small session reaches the disk.
    session(&q, 1, 2);
    let t0 = Instant::now();
    // audit_start + the 6 records of session 1, synced (flushed but unsynced
    // lines are cut back when a later write fails).
    while handle.status().synced_seq.load(Ordering::Relaxed) < 7 {
        assert!(t0.elapsed() < Duration::from_secs(10), "nothing was synced");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A "core" writing sessions until the disk is full, then some more.
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            for id in 2..=40 {
                session(&q, id, 50);
            }
        })
    };
    let t0 = Instant::now();
    while health.load(Ordering::Acquire) {
        assert!(t0.elapsed() < Duration::from_secs(20), "the writer never noticed the full disk");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Unhealthy: new sessions must be refused (the auth worker checks the
    // flag); auth events are still accepted and held.
    assert!(!handle.healthy() && !handle.sink().healthy());
    handle.sink().auth(auth_failure()).unwrap();
    assert!(handle.status().last_error.lock().unwrap().as_deref().unwrap_or("").contains("No space left"));
    // Once it holds max_pending_bytes it takes nothing more, not even the
    // queued auth event: it must wait, not spin (it may share a dp CPU).
    let t0 = Instant::now();
    while handle.status().pending_bytes.load(Ordering::Relaxed) < 512 << 10 {
        assert!(t0.elapsed() < Duration::from_secs(20), "the writer never held max_pending_bytes");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (cpu0, wall0) = (thread_cpu_ticks("audit"), Instant::now());
    std::thread::sleep(Duration::from_millis(400));
    let (cpu, wall) = (thread_cpu_ticks("audit") - cpu0, wall0.elapsed());
    // Clock ticks are 10 ms: a spinning writer shows ~40 here.
    assert!(cpu <= 8, "the held-back writer used {cpu} ticks of CPU in {wall:?}");
    // What is on disk verifies while the disk is full (whole lines only).
    std::thread::sleep(Duration::from_millis(200));
    let on_disk = audit::verify::walk(&dir, |_| Ok(())).unwrap();
    eprintln!(
        "disk full after {} records on disk; writer unhealthy; {} pushes refused by the full queue so far",
        on_disk.records,
        q.full()
    );
    assert!(on_disk.records >= 7);
    // Space returns.
    assert!(Command::new("mount").args(["-o", "remount,size=64m"]).arg(&dir).status().unwrap().success());
    producer.join().unwrap();
    let t0 = Instant::now();
    while !health.load(Ordering::Acquire) {
        assert!(t0.elapsed() < Duration::from_secs(20), "the writer did not recover");
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.shutdown();
    let v = audit::verify::verify(&dir).unwrap();
    let recs = records(&dir);
    // Nothing accepted is missing: session 1 (2 reads) and 39 sessions of
    // 50 requests (40 answered, 10 denied), each opened and closed.
    assert_eq!(count(&recs, "session_open"), 40);
    assert_eq!(count(&recs, "request"), 2 + 39 * 50);
    assert_eq!(count(&recs, "response"), 2 + 39 * 40);
    assert_eq!(count(&recs, "session_close"), 40);
    assert_eq!(count(&recs, "auth"), 1, "the refused auth was recorded after recovery");
    assert!(count(&recs, "audit_outage") >= 1);
    assert_eq!(v.captures, 40);
    drop(_guard);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sessions` sessions of 50 requests (92 records each) on `q` at 4,000
/// records a second, like a busy core; returns the records pushed and the
/// most that ever waited for a sync (`status`: seq - synced_seq).
fn steady_sessions(q: &AuditQueue, status: &audit::Status, sessions: u64) -> (u64, u64) {
    let t0 = Instant::now();
    let (mut produced, mut behind) = (0u64, 0u64);
    for id in 1..=sessions {
        // 50 requests, every 5th denied: 1 + 50 + 40 + 1 = 92 records.
        session(q, id, 50);
        produced += 92;
        let due = Duration::from_micros(produced * 250);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        behind = behind.max(status.seq.load(Ordering::Relaxed) - status.synced_seq.load(Ordering::Relaxed));
    }
    (produced, behind)
}

/// An ext4 file system on a loop device whose image is served by
/// `scripts/slowdisk.py`: every cache flush (each `fdatasync`, each journal
/// commit) waits `delay_ms`, page-cache writes do not. Torn down on drop.
struct SlowDisk {
    root: PathBuf,
    loop_dev: Option<String>,
    daemon: Option<std::process::Child>,
}

impl SlowDisk {
    /// The mounted file system's directory.
    fn dir(&self) -> PathBuf {
        self.root.join("mnt")
    }

    /// A slow disk for `test`, or `None` after saying why the test skips.
    fn for_test(test: &str, delay_ms: u32) -> Option<Self> {
        Self::new(test, delay_ms).map_err(|why| eprintln!("SKIP {test}: {why}")).ok()
    }

    /// Each flush waits `ms` from now on.
    fn set_delay(&self, ms: u32) {
        std::fs::write(self.root.join("delay_ms"), ms.to_string()).unwrap();
    }

    /// `Err`: why this machine cannot have one (the test skips).
    fn new(name: &str, delay_ms: u32) -> Result<Self, String> {
        if !is_root() {
            return Err("needs root (FUSE, losetup, mount)".into());
        }
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        let has = Command::new(&python).args(["-c", "import mfusepy"]).output();
        if !has.is_ok_and(|o| o.status.success()) || !Path::new("/dev/fuse").exists() {
            return Err("needs /dev/fuse and mfusepy in .venv (run scripts/bootstrap)".into());
        }
        let root = tempdir(name);
        let mut disk = Self { root: root.clone(), loop_dev: None, daemon: None };
        for d in ["back", "fuse", "mnt"] {
            std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
        }
        let img = root.join("back/disk.img");
        let sh = |cmd: &mut Command| -> Result<String, String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if !out.status.success() {
                return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        sh(Command::new("truncate").args(["-s", "128M"]).arg(&img))?;
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))?;
        let daemon = Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slowdisk.py"))
            .arg(root.join("back"))
            .arg(root.join("fuse"))
            .args(["--fsync-delay-ms", &delay_ms.to_string()])
            .arg("--delay-file")
            .arg(root.join("delay_ms"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("slowdisk.py: {e}"))?;
        disk.daemon = Some(daemon);
        let served = root.join("fuse/disk.img");
        let t0 = Instant::now();
        while !served.exists() {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err("slowdisk.py did not serve the image within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        disk.loop_dev = Some(sh(Command::new("losetup").args(["-f", "--show"]).arg(&served))?);
        sh(Command::new("mount").arg(disk.loop_dev.as_deref().unwrap_or_default()).arg(disk.dir()))?;
        Ok(disk)
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir()).status();
        if let Some(dev) = &self.loop_dev {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
        // The loop device lets go of the image asynchronously: retry, then
        // detach lazily rather than leave a dead FUSE mount behind.
        let fuse = self.root.join("fuse");
        let t0 = Instant::now();
        while !Command::new("umount").arg(&fuse).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
            if t0.elapsed() > Duration::from_secs(5) {
                let _ = Command::new("umount").arg("-l").arg(&fuse).status();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn a_slow_disk_does_not_hold_sessions() {
    let Some(disk) = SlowDisk::for_test("a_slow_disk_does_not_hold_sessions", 300) else { return };
    // The disk is slow to make data durable, and only that.
    let probe = disk.dir().join("probe");
    let f = std::fs::File::create(&probe).unwrap();
    std::io::Write::write_all(&mut &f, &[7u8; 4096]).unwrap();
    let t0 = Instant::now();
    f.sync_data().unwrap();
    let sync = t0.elapsed();
    assert!(sync >= Duration::from_millis(300), "an fdatasync took {sync:?}: the disk is not slow");
    // A core's queue of 1,024 records, filled at 4,000 records a second:
    // a writer that waits for each sync (at least 300 ms) would let it fill.
    let q = Arc::new(AuditQueue::new(1024));
    let stop = Arc::new(AtomicBool::new(false));
    let dir = disk.dir().join("audit");
    let cfg = AuditConfig { dir: dir.clone(), ..AuditConfig::default() };
    let handle = audit::spawn(cfg, vec![q.clone()], stop).unwrap();
    let t0 = Instant::now();
    let (produced, behind) = steady_sessions(&q, handle.status(), 70);
    let held = q.full();
    let took = t0.elapsed();
    disk.set_delay(0);
    handle.shutdown();
    eprintln!(
        "slow disk: fdatasync {sync:?}; {produced} records in {took:?}; up to {behind} records waited for a sync; \
         {held} pushes refused by a full queue"
    );
    // Records waited for the slow syncs beyond what the queue holds, in
    // the writer, not in the queue.
    assert!(behind > 1024, "only {behind} records were ever waiting for a sync");
    assert_eq!(held, 0, "the queue filled while the disk synced: sessions were held");
    all_recorded(&dir, 70, 50);
}

/// The audit module's warnings, kept for the test that looks for them.
struct Warnings(std::sync::Mutex<Vec<String>>);

impl log::Log for Warnings {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) && r.target().starts_with("control::audit") {
            self.0.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

static WARNINGS: Warnings = Warnings(std::sync::Mutex::new(Vec::new()));

#[test]
fn a_sync_the_disk_does_not_confirm_is_logged() {
    let Some(disk) = SlowDisk::for_test("a_sync_the_disk_does_not_confirm_is_logged", 1500) else { return };
    // The first logger set in a process stays (nextest runs each test in
    // its own); only this test looks at it.
    let _ = log::set_logger(&WARNINGS);
    log::set_max_level(log::LevelFilter::Warn);
    let q = Arc::new(AuditQueue::new(1024));
    let dir = disk.dir().join("audit");
    let cfg = AuditConfig { dir: dir.clone(), ..AuditConfig::default() };
    let handle = audit::spawn(cfg, vec![q.clone()], Arc::new(AtomicBool::new(false))).unwrap();
    // One session: its first commit (syncfs, the journal's fdatasync and
    // its directory, audit.head: some seven flushes of 1.5 s) runs past
    // the 5 s mark.
    session(&q, 1, 5);
    let t0 = Instant::now();
    let said = |what: &str| WARNINGS.0.lock().unwrap().iter().any(|w| w.contains(what));
    while !said("has not confirmed a sync for") {
        assert!(t0.elapsed() < Duration::from_secs(20), "no warning of the stuck sync: {:?}", WARNINGS.0.lock());
        std::thread::sleep(Duration::from_millis(50));
    }
    let warned_at = t0.elapsed();
    // Still in that commit, with no core traffic: the control side posts
    // 6,000 login results at 4,000 a second, more than its channel holds
    // (4,096). The writer must take them while it waits for the disk, or
    // logins are refused while it is healthy.
    let sink = handle.sink();
    let posting = Instant::now();
    let mut refused = 0;
    for k in 0..6000u64 {
        refused += u64::from(sink.auth(auth_failure()).is_err());
        if let Some(wait) = Duration::from_micros(k * 250).checked_sub(posting.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    assert!(!said("confirmed the sync after"), "the commit ended before the events were posted");
    assert_eq!(refused, 0, "the sink refused events while a commit ran");
    while !said("confirmed the sync after") {
        assert!(t0.elapsed() < Duration::from_secs(40), "no word of the sync's end: {:?}", WARNINGS.0.lock());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(warned_at >= Duration::from_secs(4), "warned after {warned_at:?}, before 5 s of waiting");
    assert_eq!(q.full(), 0);
    disk.set_delay(0);
    handle.shutdown();
    all_recorded(&dir, 1, 5);
    assert_eq!(count(&records(&dir), "auth"), 6000);
}

#[test]
fn a_syslog_collector_that_never_answers_does_not_hold_sessions() {
    // A collector whose accept queue is full: the kernel drops further
    // SYNs, so a connect to it waits until its timeout, every attempt.
    let mut listener = KillOnDrop(
        Command::new("python3")
            .args([
                "-c",
                "import socket, time\n\
                 s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)\n\
                 print(s.getsockname()[1], flush=True); time.sleep(120)",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut port = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(listener.0.stdout.as_mut().unwrap()), &mut port).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", port.trim()).parse().unwrap();
    let fillers: Vec<TcpStream> =
        (0..3).filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()).collect();
    let t0 = Instant::now();
    let hung = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(hung.is_err() && t0.elapsed() >= Duration::from_millis(250), "the collector's accept queue is not full");
    let dir = tempdir("syslog-silent");
    let pki = control::pki::generate(&["127.0.0.1".into()]).unwrap();
    control::pki::write(&dir, &pki).unwrap();
    let syslog = SyslogConfig {
        address: addr.to_string(),
        ca_file: dir.join("ca.crt"),
        connect_timeout_ms: 500,
        ..SyslogConfig::default()
    };
    let audit_dir = dir.join("audit");
    let cfg = AuditConfig { dir: audit_dir.clone(), syslog: Some(syslog), ..AuditConfig::default() };
    // As with the slow disk: a 1,024-record queue at 4,000 records a second
    // fills in a quarter of a second if the writer waits for a connect.
    let q = Arc::new(AuditQueue::new(1024));
    let handle = audit::spawn(cfg, vec![q.clone()], Arc::new(AtomicBool::new(false))).unwrap();
    let t0 = Instant::now();
    let (produced, _) = steady_sessions(&q, handle.status(), 40);
    let (held, took) = (q.full(), t0.elapsed());
    let forwarded = handle.status().forwarded.load(Ordering::Relaxed);
    handle.shutdown();
    drop(listener);
    drop(fillers);
    eprintln!("silent collector: {produced} records in {took:?}; {forwarded} forwarded; {held} pushes refused");
    assert_eq!(forwarded, 0, "nothing can have reached that collector");
    assert_eq!(held, 0, "the queue filled while the writer waited for the collector: sessions were held");
    all_recorded(&audit_dir, 40, 50);
    let _ = std::fs::remove_dir_all(&dir);
}

fn auth_failure() -> AuthEvent {
    AuthEvent {
        session: 99,
        user: "mallory".into(),
        source: "198.18.0.66".parse().unwrap(),
        endpoint: "100.64.3.7:802".parse().unwrap(),
        method: "password".into(),
        purpose: "connect".into(),
        asset: Some("plc-7".into()),
        service: Some("modbus".into()),
        success: false,
        reason: Some("bad_credentials".into()),
        roles: vec![],
        ticket_id: None,
        expires_unix: None,
    }
}

/// The child of `audit_kill9_mid_write_recovers`: writes until killed.
#[test]
#[ignore = "run by audit_kill9_mid_write_recovers in a child process"]
fn audit_e2e_child_writer() {
    let Ok(dir) = std::env::var("ACCESSGATE_AUDIT_CHILD_DIR") else { return };
    let q = Arc::new(AuditQueue::new(4096));
    let cfg = AuditConfig { dir: dir.into(), fsync_interval_ms: 2, ..AuditConfig::default() };
    let _handle = audit::spawn(cfg, vec![q.clone()], Arc::new(AtomicBool::new(false))).unwrap();
    // Killed long before either bound (the parent waits 60 s at most); the
    // bounds keep a child whose parent failed from writing for ever.
    let t0 = Instant::now();
    for id in 1..=1_000_000 {
        if t0.elapsed() > Duration::from_secs(120) {
            break;
        }
        session(&q, id, 20);
    }
}

/// A child process that is killed and reaped when this goes out of scope,
/// also when the test fails before it meant to stop it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn audit_kill9_mid_write_recovers() {
    let dir = tempdir("kill9");
    let mut torn = 0;
    for round in 0..4 {
        let mut child = KillOnDrop(
            Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", "audit_e2e_child_writer", "--nocapture"])
                .env("ACCESSGATE_AUDIT_CHILD_DIR", &dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        // Let it write a while (it must not have finished), then SIGKILL.
        let t0 = Instant::now();
        loop {
            let lines: usize = audit::writer::journal_files(&dir)
                .unwrap_or_default()
                .iter()
                .map(|f| std::fs::read(f).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()))
                .sum();
            if lines > 2000 * (round + 1) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "the child wrote only {lines} lines");
            std::thread::sleep(Duration::from_millis(3 + 7 * round as u64));
        }
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        // Recovery: a writer starts on the same directory, cuts a torn tail
        // if there is one, records it, continues the chain.
        let handle = audit::spawn(
            AuditConfig { dir: dir.clone(), ..AuditConfig::default() },
            vec![],
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        handle.shutdown();
        let v = audit::verify::verify(&dir).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let recs = records(&dir);
        torn = recs.iter().filter(|r| r["event"] == "anomaly" && r["kind"] == "torn_tail").count();
        eprintln!("round {round}: {} records verify; torn tails cut so far: {torn}", v.records);
    }
    // The CLI agrees.
    let (ok, out, err) = run(&["audit", "verify", dir.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let _ = torn;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn audit_syslog_tls_reaches_rsyslog() {
    let Some(rsyslogd) = rsyslogd() else {
        // CI runs scripts/bootstrap first: there a missing collector is a
        // failure, not a skip nobody reads.
        assert!(std::env::var_os("CI").is_none(), "rsyslog and rsyslog-gnutls are missing: run scripts/bootstrap");
        eprintln!("SKIP audit_syslog_tls_reaches_rsyslog: rsyslog and rsyslog-gnutls are not installed (scripts/bootstrap installs them)");
        return;
    };
    let dir = tempdir("syslog");
    let pki = control::pki::generate(&["127.0.0.1".into(), "localhost".into()]).unwrap();
    control::pki::write(&dir, &pki).unwrap();
    std::fs::create_dir_all(dir.join("work")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let received = dir.join("received.log");
    let conf = format!(
        r#"global(workDirectory="{d}/work"
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="{d}/ca.crt"
  DefaultNetstreamDriverCertFile="{d}/gate.crt"
  DefaultNetstreamDriverKeyFile="{d}/gate.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="audit" type="string" string="%pri% %msgid% %structured-data% %msg%\n")
action(type="omfile" file="{r}" template="audit")
"#,
        d = dir.display(),
        r = received.display()
    );
    std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
    let mut daemon = KillOnDrop(
        Command::new(&rsyslogd)
            .args(["-n", "-f"])
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rsyslogd.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!(
                "rsyslogd exited ({status}): {}",
                std::fs::read_to_string(dir.join("rsyslogd.err")).unwrap_or_default()
            );
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "rsyslogd does not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let q = Arc::new(AuditQueue::new(256));
    let cfg = AuditConfig {
        dir: dir.join("audit"),
        syslog: Some(SyslogConfig {
            address: format!("127.0.0.1:{port}"),
            ca_file: dir.join("ca.crt"),
            ..SyslogConfig::default()
        }),
        ..AuditConfig::default()
    };
    let handle = audit::spawn(cfg, vec![q.clone()], Arc::new(AtomicBool::new(false))).unwrap();
    session(&q, 0x42, 5);
    handle.sink().auth(auth_failure()).unwrap();
    let status = handle.status().clone();
    handle.shutdown();
    let recs = records(&dir.join("audit"));
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        let got = text.lines().count();
        if got >= recs.len() {
            // Every record arrived, as RFC 5424 with its seq and the JSON line.
            for r in &recs {
                let seq = r["seq"].as_u64().unwrap();
                let line = text
                    .lines()
                    .find(|l| l.contains(&format!("seq=\"{seq}\"")))
                    .unwrap_or_else(|| panic!("seq {seq} missing in {text}"));
                assert!(line.contains(&format!("hash=\"{}\"", r["hash"].as_str().unwrap())), "{line}");
                assert!(line.contains(&format!(" {} ", r["event"].as_str().unwrap())), "{line}");
                let json = &line[line.find("] {").unwrap() + 2..];
                let sealed = control::audit::chain::check_line(json.as_bytes()).unwrap();
                assert_eq!(sealed.seq, seq);
            }
            let failure = text.lines().find(|l| l.contains(" auth ")).unwrap();
            assert!(failure.starts_with("108 "), "auth failure is log-audit.warning (108): {failure}");
            drop(daemon);
            let _ = std::fs::remove_dir_all(&dir);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "rsyslog received {got} of {} records (forwarded {}): {}",
            recs.len(),
            status.forwarded.load(Ordering::Relaxed),
            std::fs::read_to_string(dir.join("rsyslogd.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// rsyslogd with its TLS module (Debian packages rsyslog and
/// rsyslog-gnutls, which `scripts/bootstrap` installs; a test installs
/// nothing and reaches no network).
fn rsyslogd() -> Option<PathBuf> {
    let gtls = || Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists() || gtls_module_anywhere();
    let find = || ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"].iter().map(PathBuf::from).find(|p| p.exists());
    find().filter(|_| gtls())
}

fn gtls_module_anywhere() -> bool {
    Command::new("sh")
        .args(["-c", "ls /usr/lib/*/rsyslog/lmnsd_gtls.so /usr/lib/rsyslog/lmnsd_gtls.so 2>/dev/null"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
}
