//! End to end in network namespaces, through AF_XDP (and AF_PACKET), with
//! real peers: a pymodbus PLC, the pymodbus client and libmodbus' `mbpoll`
//! behind `accessgate login` + `accessgate connect`, `openssl s_client`,
//! `oathtool` as the user's authenticator app, and Python's `ssl` for
//! hostile clients.
//!
//! Each test builds its own lab with `scripts/lab` under a unique prefix,
//! its own CA and users, starts the gate binary in the gate namespace, and
//! tears everything down in `Drop`, even when an assertion fails. Needs root
//! and the peers `scripts/bootstrap` installs; without root the tests say so
//! and pass.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const GATE: &str = env!("CARGO_BIN_EXE_accessgate");
const PASSWORD: &str = "lab password for alice";
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// `n` in base 36 (lowercase).
fn base36(mut n: u32) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit(n % 36, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

struct Lab {
    prefix: String,
    run: PathBuf,
    ctl: PathBuf,
    gate: Option<Child>,
    /// How the gate was started (`restart_gate` starts it again so).
    gate_args: Vec<std::ffi::OsString>,
    helpers: Vec<Child>,
    /// TOTP secrets by user.
    secrets: Vec<(String, String)>,
    /// A tmpfs mounted for the audit trail (unmounted on drop).
    tmpfs: Option<PathBuf>,
}

impl Lab {
    /// Brings up a lab, a CA, users alice (operator), bob (viewer), carol (guest), and a
    /// gate on `backend`; `None` when not root.
    fn up(backend: &str) -> Option<Self> {
        Self::up_with(backend, None)
    }

    /// The same, with the gate reading `config` (a copy in the lab's run
    /// directory, so a test may edit it) instead of config/lab.toml.
    fn up_with(backend: &str, config: Option<&str>) -> Option<Self> {
        Self::up_full(backend, config, None)
    }

    /// The same, with the audit directory on a tmpfs of `audit_kib` KiB.
    fn up_full(backend: &str, config: Option<&str>, audit_kib: Option<u32>) -> Option<Self> {
        if !is_root() {
            eprintln!("SKIP: namespace tests need root (CI runs them as root)");
            return None;
        }
        assert!(repo().join(".venv/bin/python").exists(), ".venv missing: run scripts/bootstrap first");
        for tool in ["mbpoll", "oathtool", "openssl"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(found, "{tool} missing: run scripts/bootstrap first");
        }
        // Unique per process and lab: the full pid in base 36 and a
        // separator (12 characters at most, as `scripts/lab` wants).
        let prefix = format!("agt{}.{}-", base36(std::process::id()), NEXT.fetch_add(1, Ordering::SeqCst));
        let run = PathBuf::from(format!("/run/accessgate-lab/{prefix}"));
        let mut lab = Self {
            ctl: run.join("ctl.sock"),
            prefix,
            run,
            gate: None,
            gate_args: Vec::new(),
            helpers: Vec::new(),
            secrets: Vec::new(),
            tmpfs: None,
        };
        // The watchdog takes the lab down if this process dies without
        // running `Drop` (a signal, nextest's timeout).
        let owner = std::process::id().to_string();
        let out = Command::new(repo().join("scripts/lab"))
            .args(["up", "--prefix", &lab.prefix, "--owner-pid", &owner])
            .output()
            .unwrap();
        assert!(out.status.success(), "lab up failed:\n{}", text(&out));
        let out = Command::new(GATE).args(["cert", "init", "--dir"]).arg(lab.run.join("tls")).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        for (user, role) in [("alice", "operator"), ("bob", "viewer"), ("carol", "guest")] {
            let mut add = Command::new(GATE)
                .args(["user", "--secrets"])
                .arg(lab.run.join("secrets.toml"))
                .args(["add", user, "--role", role, "--password-stdin", "--json"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            writeln!(add.stdin.take().unwrap(), "{PASSWORD}").unwrap();
            let out = add.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            lab.secrets.push((user.to_string(), v["totp_secret"].as_str().unwrap().to_string()));
        }
        if let Some(kib) = audit_kib {
            let dir = lab.run.join("audit");
            std::fs::create_dir_all(&dir).unwrap();
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
                .arg(&dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "mount tmpfs: {}", text(&out));
            lab.tmpfs = Some(dir);
        }
        let config_path = match config {
            Some(text) => {
                let p = lab.run.join("policy.toml");
                std::fs::write(&p, text).unwrap();
                p
            }
            None => repo().join("config/lab.toml"),
        };
        let mut args: Vec<std::ffi::OsString> =
            ["netns", "exec", &format!("{}gate", lab.prefix), GATE, "run", "--config"].iter().map(Into::into).collect();
        args.push(config_path.into());
        // Sleep as soon as a pass finds no work: the strictest mode for
        // work a session leaves behind with no frame to wake it (a hello
        // read in two steps stalled here 6 times in 8 before the fix).
        args.extend(["--backend", backend, "--cores", "0", "--idle", "adaptive:0:0"].iter().map(Into::into));
        args.extend(["--ctl".into(), lab.ctl.clone().into(), "--secrets".into(), lab.run.join("secrets.toml").into()]);
        args.extend(["--cert".into(), lab.run.join("tls/gate.crt").into()]);
        args.extend(["--key".into(), lab.run.join("tls/gate.key").into()]);
        args.extend(["--audit-dir".into(), lab.run.join("audit").into()]);
        lab.gate_args = args;
        lab.start_gate();
        Some(lab)
    }

    /// Starts the gate (its log appended to gate.log) and waits for its
    /// management socket.
    fn start_gate(&mut self) {
        let _ = std::fs::remove_file(&self.ctl);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.run.join("gate.log")).unwrap();
        let gate =
            Command::new("ip").args(&self.gate_args).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        self.gate = Some(gate);
        let start = Instant::now();
        while !self.ctl.exists() {
            assert!(start.elapsed() < Duration::from_secs(15), "gate did not start:\n{}", self.gate_log());
            if let Some(status) = self.gate.as_mut().unwrap().try_wait().unwrap() {
                panic!("gate exited with {status}:\n{}", self.gate_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the gate (SIGINT) and starts it again with the same arguments.
    fn restart_gate(&mut self) {
        if let Some(mut g) = self.gate.take() {
            let _ = Command::new("kill").args(["-INT", &g.id().to_string()]).status();
            let t0 = Instant::now();
            let status = loop {
                if let Some(status) = g.try_wait().unwrap() {
                    break status;
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    let _ = g.kill();
                    let _ = g.wait();
                    panic!("gate did not stop within 10 s of SIGINT:\n{}", self.gate_log());
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(status.success(), "gate stopped with {status}:\n{}", self.gate_log());
        }
        self.start_gate();
    }

    fn gate_log(&self) -> String {
        std::fs::read_to_string(self.run.join("gate.log")).unwrap_or_default()
    }

    fn ns(&self, ns: &str) -> String {
        format!("{}{ns}", self.prefix)
    }

    /// Runs a command in one of the lab's namespaces, bounded by `timeout`.
    fn exec(&self, ns: &str, timeout: u32, cmd: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns), "timeout", &timeout.to_string()])
            .args(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            let _ = input.write_all(s.as_bytes());
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn python(&self, ns: &str, script: &str, args: &[&str]) -> Output {
        let py = repo().join(".venv/bin/python");
        let mut cmd = vec![py.to_str().unwrap().to_string(), script.to_string()];
        cmd.extend(args.iter().map(|s| s.to_string()));
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.exec(ns, 30, &cmd, None)
    }

    /// The Modbus client started in the background in the user namespace,
    /// bounded by `timeout` seconds, its stdout piped.
    fn background_client(&self, timeout: u32, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns("user"), "timeout", &timeout.to_string()])
            .arg(repo().join(".venv/bin/python"))
            .arg(repo().join("scripts/modbus_client.py"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn client(&self, args: &[&str]) -> Output {
        self.python("user", repo().join("scripts/modbus_client.py").to_str().unwrap(), args)
    }

    /// The current TOTP code of `user`, from oathtool (an independent RFC 6238
    /// implementation), `steps` periods from now.
    fn totp(&self, user: &str, steps: i64) -> String {
        let secret = &self.secrets.iter().find(|(u, _)| u == user).unwrap().1;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let at = format!("@{}", now + steps * 30);
        let out = Command::new("oathtool").args(["--totp", "-b", "--now", &at, secret]).output().unwrap();
        assert!(out.status.success(), "oathtool: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `accessgate login` in the user namespace.
    fn login(&self, user: &str, password: &str, totp: &str) -> Output {
        self.login_with(user, totp, &["--password-stdin"], Some(&format!("{password}\n")))
    }

    /// `accessgate login` for `user` with `totp`, `extra` arguments and
    /// `stdin`.
    fn login_with(&self, user: &str, totp: &str, extra: &[&str], stdin: Option<&str>) -> Output {
        let ca = self.run.join("tls/ca.crt");
        let dir = self.run.join(format!("home-{user}"));
        let mut args =
            vec![GATE, "login", "--gate", "100.64.0.1", "--user", user, "--totp", totp, "--ca", ca.to_str().unwrap()];
        args.extend(["--config-dir", dir.to_str().unwrap()]);
        args.extend(extra);
        self.exec("user", 20, &args, stdin)
    }

    /// Starts `accessgate connect` for `user` on 127.0.0.1:`port` in the user
    /// namespace and waits until it listens.
    fn connect(&mut self, user: &str, port: u16) {
        self.connect_to(user, port, "*");
    }

    /// The same for plc-7's `service`.
    fn connect_to(&mut self, user: &str, port: u16, service: &str) {
        let dir = self.run.join(format!("home-{user}"));
        let log = self.run.join(format!("connect-{user}-{port}.log"));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("user"),
                GATE,
                "connect",
                "plc-7",
                "--service",
                service,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config-dir",
            ])
            .arg(&dir)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.helpers.push(child);
        let start = Instant::now();
        loop {
            let l = std::fs::read_to_string(&log).unwrap_or_default();
            if l.contains("listening on") {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "connect did not start: {l}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stats(&self) -> serde_json::Value {
        let out = Command::new(GATE).args(["ctl", "--socket"]).arg(&self.ctl).arg("stats").output().unwrap();
        assert!(out.status.success(), "ctl stats: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn counter(&self, name: &str) -> u64 {
        self.stats()[name].as_u64().unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// What the PLC logged (requests, connects, disconnects).
    fn plc_log(&self) -> Vec<serde_json::Value> {
        self.log_lines("plc-requests.jsonl")
    }

    /// Logs each of `users` in and starts `connect` to plc-7's `service` for
    /// each on its port.
    fn sign_in(&mut self, users: &[(&str, u16)], service: &str) {
        for &(user, port) in users {
            let out = self.login(user, PASSWORD, &self.totp(user, 0));
            assert!(out.status.success(), "{}", text(&out));
            self.connect_to(user, port, service);
        }
    }

    /// Runs a JSON-lines client script (scripts/s7_client.py, ...) in the
    /// user namespace against `connect` on `port`: one result per operation
    /// (a leading connect line is checked and dropped).
    fn client_ops(&self, script: &str, port: u16, ops: &[&str]) -> Vec<serde_json::Value> {
        let script = repo().join("scripts").join(script);
        let port = port.to_string();
        let out = self.python("user", script.to_str().unwrap(), &[&["--port", port.as_str()][..], ops].concat());
        assert!(out.status.success(), "{}: {}", script.display(), text(&out));
        let mut lines: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.first().is_some_and(|l| l["op"] == "connect") {
            assert_eq!(lines.remove(0)["ok"], true, "connected: {}", text(&out));
        }
        assert_eq!(lines.len(), ops.len(), "{}", text(&out));
        lines
    }

    /// The audit trail once the writer has synced, after `audit verify`
    /// passed on it.
    fn verified_audit(&self) -> Vec<serde_json::Value> {
        std::thread::sleep(Duration::from_millis(300));
        let out = Command::new(GATE).args(["audit", "verify"]).arg(self.run.join("audit")).output().unwrap();
        assert!(out.status.success(), "audit verify: {}", text(&out));
        self.audit_records()
    }

    /// tshark's `fields` (comma-separated) for the packets matching
    /// `filter` in the pcapngs of every session of `user`.
    fn tshark(&self, records: &[serde_json::Value], user: &str, filter: &str, fields: &[&str]) -> String {
        let mut rows = String::new();
        for open in records.iter().filter(|r| r["event"] == "session_open" && r["user"] == user) {
            let pcap = self.run.join("audit/pcap").join(open["pcap"].as_str().unwrap());
            let mut cmd = Command::new("tshark");
            cmd.args(["-r", pcap.to_str().unwrap(), "-Y", filter, "-T", "fields", "-E", "separator=,"]);
            for f in fields {
                cmd.args(["-e", f]);
            }
            rows.push_str(&String::from_utf8_lossy(&cmd.output().unwrap().stdout));
        }
        rows
    }

    /// The JSON lines of a log in the lab's run directory.
    fn log_lines(&self, name: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.run.join(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every record of the gate's audit trail, in order.
    fn audit_records(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<_> = std::fs::read_dir(self.run.join("audit"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>()
            })
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    /// PLC log entries of `event` from the gate (the lab's own readiness
    /// probe connects from the PLC's address and is not counted).
    fn plc_events(&self, event: &str) -> usize {
        self.plc_log()
            .iter()
            .filter(|r| r["event"] == event && r["peer"].as_str().is_some_and(|p| p.starts_with("198.19.3.1:")))
            .count()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut h in self.helpers.drain(..) {
            let _ = h.kill();
            let _ = h.wait();
        }
        if let Some(mut g) = self.gate.take() {
            let _ = Command::new("kill").args(["-INT", &g.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && g.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = g.kill();
            let _ = g.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- gate log ({}) ---\n{}", self.prefix, self.gate_log());
        }
        if let Some(dir) = self.tmpfs.take() {
            let _ = Command::new("umount").arg(&dir).status();
        }
        let _ = Command::new(repo().join("scripts/lab")).args(["down", "--prefix", &self.prefix]).output();
    }
}

fn clients_read_and_write(backend: &str) {
    let Some(mut lab) = Lab::up(backend) else { return };
    let out = lab.login("alice", PASSWORD, &lab.totp("alice", 0));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("logged in as alice"), "{}", text(&out));
    lab.connect("alice", 5020);
    let local = ["--host", "127.0.0.1", "--port", "5020"];

    // pymodbus through `connect`: reads, a write, read-back, coils.
    let out = lab.client(&[&local[..], &["script"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"), "{}", text(&out));
    assert!(text(&out).contains("check: register 100 == 1234, ok"), "{}", text(&out));

    // mbpoll (libmodbus) through `connect`: read 5 registers, write register 101.
    let out = lab.exec(
        "user",
        20,
        &["mbpoll", "-m", "tcp", "-p", "5020", "-a", "1", "-r", "1", "-c", "5", "-1", "127.0.0.1"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    for (i, v) in (1..=5).zip(0..5) {
        assert!(text(&out).contains(&format!("[{i}]: \t{v}")), "{}", text(&out));
    }
    let out = lab.exec(
        "user",
        20,
        &["mbpoll", "-m", "tcp", "-p", "5020", "-a", "1", "-r", "102", "-1", "127.0.0.1", "4321"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.client(&[&local[..], &["--json", "read-holding", "101", "1"]].concat());
    assert!(out.status.success() && text(&out).contains("[4321]"), "{}", text(&out));

    // The PLC saw every request, only from the gate's south address.
    let requests: Vec<_> = lab.plc_log().into_iter().filter(|r| r["event"] == "request").collect();
    assert!(requests.len() >= 7, "{requests:?}");
    assert!(requests.iter().all(|r| r["peer"].as_str().unwrap_or("").starts_with("198.19.3.1:")), "{requests:?}");
    assert!(requests.iter().any(|r| r["function_code"] == 6 && r["address"] == 101 && r["value"] == 4321));

    // The gate's log names the user, the asset and the TLS parameters.
    let log = lab.gate_log();
    assert!(log.contains("open: user alice (roles operator)"), "{log}");
    assert!(log.contains("-> 100.64.3.7:802 -> asset 198.19.3.7:502 [TLSv1_3"), "{log}");
    assert!(!log.contains(PASSWORD), "a password reached the log");
    let s = lab.stats();
    assert!(s["bytes_up"].as_u64().unwrap() > 0 && s["bytes_down"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn xsk_login_connect_and_real_modbus_clients() {
    clients_read_and_write("xsk");
}

#[test]
fn packet_backend_carries_the_same_sessions() {
    clients_read_and_write("packet");
}

#[test]
fn xsk_every_refusal_has_its_reason_and_the_plc_sees_nothing() {
    let Some(lab) = Lab::up("xsk") else { return };
    let refused = |out: &Output, what: &str| {
        assert!(!out.status.success(), "{}", text(out));
        assert!(text(out).contains(what), "expected {what:?}: {}", text(out));
    };
    // Wrong password, wrong TOTP.
    refused(&lab.login("alice", "not the password", &lab.totp("alice", 0)), "refused: bad credentials");
    let wrong = if lab.totp("alice", 0) == "123456" { "654321" } else { "123456" };
    refused(&lab.login("alice", PASSWORD, wrong), "refused: bad credentials");
    // A good login, then the same code again: replayed.
    let code = lab.totp("alice", 0);
    assert!(lab.login("alice", PASSWORD, &code).status.success());
    refused(&lab.login("alice", PASSWORD, &code), "refused: bad credentials");
    // carol (guest) is not authorized for plc-7.
    assert!(lab.login("carol", PASSWORD, &lab.totp("carol", 0)).status.success());
    let dir = lab.run.join("home-carol");
    let out = lab.exec("user", 10, &[GATE, "connect", "plc-7", "--once", "--config-dir", dir.to_str().unwrap()], None);
    refused(&out, "refused: not authorized for plc-7");
    // A revoked ticket: alice's connect is refused after `ctl revoke`.
    let out = Command::new(GATE).args(["ctl", "--socket"]).arg(&lab.ctl).args(["revoke", "alice"]).output().unwrap();
    assert!(text(&out).contains("ok revoked 1 ticket(s) of alice"), "{}", text(&out));
    let dir = lab.run.join("home-alice");
    let out = lab.exec("user", 10, &[GATE, "connect", "plc-7", "--once", "--config-dir", dir.to_str().unwrap()], None);
    refused(&out, "refused: bad credentials");
    // Locked: five failures, then even the right password (with a fresh code) is refused.
    for _ in 0..5 {
        let _ = lab.login("bob", "guessing wrong", &lab.totp("bob", 1));
    }
    refused(&lab.login("bob", PASSWORD, &lab.totp("bob", 1)), "locked for");

    // Plaintext Modbus to :802: TLS fails, nothing is forwarded.
    let out = lab.client(&["--host", "100.64.3.7", "--port", "802", "--timeout", "2", "read-holding", "0", "1"]);
    assert!(!out.status.success(), "{}", text(&out));
    // TLS 1.2 only: refused with a protocol_version alert. TLS 1.3: negotiated.
    let ca = lab.run.join("tls/ca.crt");
    let s_client = |v: &str| {
        lab.exec(
            "user",
            10,
            &[
                "openssl",
                "s_client",
                "-connect",
                "100.64.3.7:802",
                v,
                "-CAfile",
                ca.to_str().unwrap(),
                "-servername",
                "gate.lab",
                "-brief",
            ],
            Some(""),
        )
    };
    let out = s_client("-tls1_2");
    assert!(text(&out).contains("alert protocol version"), "{}", text(&out));
    let out = s_client("-tls1_3");
    assert!(text(&out).contains("Protocol version: TLSv1.3"), "{}", text(&out));
    assert!(text(&out).contains("Verification: OK"), "{}", text(&out));
    // Garbage after TLS, and an oversized hello: refused as malformed_hello.
    let probe = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1]); ctx.minimum_version = ssl.TLSVersion.TLSv1_3
for payload in (b"GET / HTTP/1.1\r\n\r\n", b"AG\x01\x01\x04\x01" + b"\0" * 1025):
    with socket.create_connection(("100.64.3.7", 802), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="gate.lab") as s:
            s.sendall(payload)
            reply = s.recv(64)
            # Refuse frame: magic, version 1, kind 3, tag 20 reason 8 (malformed_hello).
            print("refused" if reply[:2] == b"AG" and reply[3] == 3 and reply[9] == 8 else f"unexpected {reply!r}")
"#;
    let script = lab.run.join("probe.py");
    std::fs::write(&script, probe).unwrap();
    let out = lab.python("user", script.to_str().unwrap(), &[ca.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("refused").count(), 2, "{}", text(&out));

    // Counted by reason, and the PLC never saw a connection.
    let s = lab.stats();
    assert!(s["close_auth_refused"].as_u64().unwrap() >= 4, "{s}");
    assert!(s["close_tls_failed"].as_u64().unwrap() >= 2, "{s}");
    assert!(s["close_hello_malformed"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(lab.plc_events("connect"), 0, "{:?}", lab.plc_log());
    assert_eq!(lab.plc_events("request"), 0);
}

#[test]
fn xsk_non_endpoint_gets_no_syn_ack_and_is_counted() {
    let Some(lab) = Lab::up("xsk") else { return };
    let before = lab.counter("drop_no_endpoint");
    // Plain Modbus port on the endpoint's address, and an overlay address with no asset.
    for (host, port) in [("100.64.3.7", "502"), ("100.64.3.9", "802")] {
        let out = lab.client(&["--host", host, "--port", port, "--timeout", "1", "read-holding", "0", "1"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        // Timed out: no SYN-ACK and no RST came back (a RST would say "refused").
        assert!(text(&out).contains("timed out"), "{}", text(&out));
    }
    let after = lab.counter("drop_no_endpoint");
    assert!(after >= before + 2, "drop_no_endpoint {before} -> {after}");
    assert_eq!(lab.counter("sessions_opened"), 0);
    assert_eq!(lab.plc_events("connect"), 0);
    // The audit trail summarises denied flows per source, destination and
    // reason (every 5 s).
    let start = Instant::now();
    let denied = loop {
        let found: Vec<_> = lab
            .audit_records()
            .into_iter()
            .filter(|r| r["event"] == "denied_flow" && r["source"] == "198.18.0.2" && r["reason"] == "no_endpoint")
            .collect();
        // The two flows may fall into different 5 s summaries: wait for both.
        let both = [("100.64.3.7", 502), ("100.64.3.9", 802)]
            .iter()
            .all(|(d, p)| found.iter().any(|r| r["destination"] == *d && r["port"] == *p));
        if both || start.elapsed() > Duration::from_secs(12) {
            break found;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(denied.iter().any(|r| r["destination"] == "100.64.3.7" && r["port"] == 502), "{denied:?}");
    assert!(denied.iter().any(|r| r["destination"] == "100.64.3.9" && r["port"] == 802), "{denied:?}");
}

#[test]
fn xsk_plc_cannot_reach_users_through_the_gate() {
    let Some(lab) = Lab::up("xsk") else { return };
    // A compromised PLC routes users and the overlay via the gate.
    for net in ["198.18.0.0/24", "100.64.0.0/16"] {
        let out = lab.exec("plc", 5, &["ip", "route", "add", net, "via", "198.19.3.1"], None);
        assert!(out.status.success(), "{}", text(&out));
    }
    let before = lab.counter("drop_asset_originated");
    for target in ["198.18.0.2/22", "100.64.3.7/802", "198.19.3.1/502"] {
        let out = lab.exec("plc", 3, &["bash", "-c", &format!("exec 3<>/dev/tcp/{target}")], None);
        assert!(!out.status.success(), "PLC reached {target}");
    }
    let after = lab.counter("drop_asset_originated");
    assert!(after >= before + 3, "drop_asset_originated {before} -> {after}");
    assert_eq!(lab.counter("sessions_opened"), 0);
}

/// Modbus inspection with real peers: the viewer's reads pass and every
/// write gets exception 01; the operator writes 100-199, gets 02 at 200 and
/// 03 above the setpoint bound; the PLC's own log shows only what was allowed.
#[test]
fn xsk_modbus_inspection_with_real_clients() {
    let Some(mut lab) = Lab::up("xsk") else { return };
    for (user, port) in [("bob", 5030), ("alice", 5031)] {
        let out = lab.login(user, PASSWORD, &lab.totp(user, 0));
        assert!(out.status.success(), "{}", text(&out));
        lab.connect(user, port);
    }
    let viewer = ["--host", "127.0.0.1", "--port", "5030", "--json"];
    let operator = ["--host", "127.0.0.1", "--port", "5031", "--json"];

    // Viewer (bob): reads succeed; writes (pymodbus and mbpoll) get exception 01.
    let out = lab.client(&[&viewer[..], &["read-holding", "100", "5"]].concat());
    assert!(out.status.success() && text(&out).contains("[100, 101, 102, 103, 104]"), "{}", text(&out));
    for cmd in [&["write-register", "150", "7"][..], &["write-registers", "120", "1", "2"], &["write-coil", "3", "1"]] {
        let out = lab.client(&[&viewer[..], cmd].concat());
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("\"exception_code\": 1") || text(&out).contains("exception 01"), "{}", text(&out));
    }
    let out = lab.exec(
        "user",
        20,
        &["mbpoll", "-m", "tcp", "-p", "5030", "-a", "1", "-r", "151", "-1", "127.0.0.1", "9"],
        None,
    );
    assert!(!out.status.success() && text(&out).to_lowercase().contains("illegal function"), "{}", text(&out));

    // Operator (alice): 100-199 written, 200 -> 02, a setpoint above its bound -> 03.
    let out = lab.client(&[&operator[..], &["write-register", "150", "42"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.client(&[&operator[..], &["write-register", "200", "42"]].concat());
    assert!(text(&out).contains("\"exception_code\": 2") || text(&out).contains("exception 02"), "{}", text(&out));
    let out = lab.client(&[&operator[..], &["write-register", "160", "60000"]].concat());
    assert!(text(&out).contains("\"exception_code\": 3") || text(&out).contains("exception 03"), "{}", text(&out));
    let out = lab.client(&[&operator[..], &["read-holding", "150", "1"]].concat());
    assert!(text(&out).contains("[42]"), "{}", text(&out));

    // The PLC saw only allowed requests: no write to 200, none from the viewer.
    let writes: Vec<_> =
        lab.plc_log().into_iter().filter(|r| r["event"] == "request" && r["function_code"] != 3).collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!((writes[0]["address"].as_u64(), writes[0]["value"].as_u64()), (Some(150), Some(42)));
    let s = lab.stats();
    assert!(s["modbus_denied"].as_u64().unwrap() >= 6, "{s}");

    // The audit trail: it verifies, names the users, and its request
    // records agree with what the PLC saw (allowed) and what it did not.
    std::thread::sleep(Duration::from_millis(300));
    let audit = lab.run.join("audit");
    let out = Command::new(GATE).args(["audit", "verify"]).arg(&audit).output().unwrap();
    assert!(out.status.success(), "audit verify: {}", text(&out));
    let records = lab.audit_records();
    let requests: Vec<_> = records.iter().filter(|r| r["event"] == "request").collect();
    let allowed_writes: Vec<_> = requests
        .iter()
        .filter(|r| r["verdict"] == "allow" && r["function"] != 3)
        .map(|r| r["address"].as_u64())
        .collect();
    assert_eq!(allowed_writes, [Some(150)], "the only allowed write is the one the PLC logged");
    assert!(
        requests.iter().any(|r| r["verdict"] == "deny" && r["address"] == 200 && r["exception"] == 2),
        "{requests:?}"
    );
    assert!(requests.iter().filter(|r| r["verdict"] == "deny").count() >= 6);
    let opens: Vec<_> = records.iter().filter(|r| r["event"] == "session_open").collect();
    assert!(opens.iter().any(|r| r["user"] == "alice") && opens.iter().any(|r| r["user"] == "bob"), "{opens:?}");
    // tshark dissects alice's decrypted session as Modbus: the write to 150
    // and the refused write to 200 (answered by the gate with 0x86 02).
    // (Each client run is its own session, so its own pcapng.)
    let mut fields = String::new();
    for alice in opens.iter().filter(|r| r["user"] == "alice") {
        let pcap = audit.join("pcap").join(alice["pcap"].as_str().unwrap());
        let out = Command::new("tshark")
            .args([
                "-r",
                pcap.to_str().unwrap(),
                "-Y",
                "modbus",
                "-T",
                "fields",
                "-e",
                "modbus.func_code",
                "-e",
                "modbus.reference_num",
            ])
            .output()
            .unwrap();
        fields.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    assert!(fields.lines().any(|l| l.starts_with("6\t150")), "tshark: {fields}");
    assert!(fields.lines().any(|l| l.starts_with("6\t200")), "tshark: {fields}");
}

/// Hot reload under load: a pymodbus session polls every 10 ms while the
/// policy file is rewritten 100 times (inotify): not one allowed request
/// fails. A broken file changes nothing. Removing the operator's rules ends
/// alice's session within one request (`policy_revoked`).
#[test]
fn xsk_policy_hot_reload_under_polling() {
    let lab_toml = std::fs::read_to_string(repo().join("config/lab.toml")).unwrap();
    let Some(mut lab) = Lab::up_with("xsk", Some(&lab_toml)) else { return };
    let policy = lab.run.join("policy.toml");
    let out = lab.login("alice", PASSWORD, &lab.totp("alice", 0));
    assert!(out.status.success(), "{}", text(&out));
    lab.connect("alice", 5040);
    let generation0 = lab.counter("generation");

    // 1500 reads at 10 ms (15 s) on one connection, in the background.
    let poller = lab.background_client(
        60,
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "5040",
            "--json",
            "poll",
            "--interval-ms",
            "10",
            "--count",
            "1500",
            "100",
            "1",
        ],
    );
    // 100 reloads, one every ~100 ms: the file alternates between two
    // equivalent versions (the second adds a harmless viewer rule).
    let extra = "\n[[rule]]\nname = \"viewer-coils\"\nroles = [\"viewer\"]\nassets = [\"plc-7\"]\nprotocol = \"modbus\"\noperations = [\"read\"]\n";
    for i in 0..100 {
        let text = if i % 2 == 0 { format!("{lab_toml}{extra}") } else { lab_toml.clone() };
        std::fs::write(&policy, text).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = poller.wait_with_output().unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(summary["successes"], 1500, "{summary}");
    assert_eq!(summary["failures"], 0, "{summary}");
    let generation1 = lab.counter("generation");
    assert!(generation1 >= generation0 + 90, "reloads seen: {generation0} -> {generation1}");

    // A broken file: refused, the running policy stays.
    let failures = lab.counter("reload_failures");
    std::fs::write(&policy, lab_toml.replace("roles = [\"operator\", \"viewer\"]", "roles = [\"operater\"]")).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(lab.counter("generation"), generation1, "a broken file must not be published");
    assert!(lab.counter("reload_failures") > failures);
    assert!(lab.gate_log().contains("did you mean \"operator\""), "{}", lab.gate_log());
    let out = lab.client(&["--host", "127.0.0.1", "--port", "5040", "read-holding", "100", "1"]);
    assert!(out.status.success(), "still served by the running policy: {}", text(&out));

    // Remove every rule of the operator role: alice's session ends at her next request.
    let no_operator = lab_toml
        .replace("roles = [\"operator\", \"viewer\"]", "roles = [\"viewer\"]")
        .replace("roles = [\"operator\"]", "roles = [\"viewer\"]");
    assert_ne!(no_operator, lab_toml);
    let poller = lab.background_client(
        30,
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "5040",
            "--json",
            "poll",
            "--interval-ms",
            "50",
            "--count",
            "60",
            "100",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(&policy, &no_operator).unwrap();
    let out = poller.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let first_bad = lines.iter().position(|r| r["ok"] == false).expect("the session should have ended");
    assert!(lines[..first_bad].iter().all(|r| r["ok"] == true));
    assert!(lab.counter("close_policy_revoked") >= 1, "{}", lab.stats());
}

/// The audit trail on a full disk (a 256 KiB tmpfs): once the writer cannot
/// write, new sessions are refused with `audit_unavailable`; when space
/// returns, everything accepted is in the log and it verifies.
#[test]
fn xsk_full_audit_disk_refuses_new_sessions_and_loses_nothing() {
    let Some(mut lab) = Lab::up_full("xsk", None, Some(256)) else { return };
    let out = lab.login("alice", PASSWORD, &lab.totp("alice", 0));
    assert!(out.status.success(), "{}", text(&out));
    lab.connect("alice", 5050);
    // Fill the disk with audited requests (each read is two records, and
    // the pcapng grows too) until the writer reports it unhealthy.
    let start = Instant::now();
    while lab.counter("audit_healthy") == 1 {
        assert!(start.elapsed() < Duration::from_secs(60), "the audit disk never filled: {}", lab.stats());
        let _ = lab.client(&[
            "--host",
            "127.0.0.1",
            "--port",
            "5050",
            "--timeout",
            "2",
            "poll",
            "--interval-ms",
            "1",
            "--count",
            "200",
            "0",
            "100",
        ]);
    }
    // A new session is refused with audit_unavailable (the PLC sees nothing of it).
    let connects = lab.plc_events("connect");
    let dir = lab.run.join("home-alice");
    let out = lab.exec("user", 10, &[GATE, "connect", "plc-7", "--once", "--config-dir", dir.to_str().unwrap()], None);
    assert!(text(&out).contains("audit unavailable"), "{}", text(&out));
    assert_eq!(lab.plc_events("connect"), connects);
    // `ctl stats` shows what waits for the disk.
    assert!(lab.counter("audit_pending_bytes") > 0, "{}", lab.stats());
    assert!(lab.counter("audit_synced_seq") < lab.counter("audit_seq"), "{}", lab.stats());
    // Space returns: the writer catches up, and nothing accepted is missing.
    let audit = lab.run.join("audit");
    let out = Command::new("mount").args(["-o", "remount,size=64m"]).arg(&audit).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let start = Instant::now();
    while lab.counter("audit_healthy") == 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "the writer did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
    let allowed = lab.counter("modbus_allowed");
    // Everything sealed reaches the disk, and audit.head names the last.
    let start = Instant::now();
    while lab.counter("audit_synced_seq") != lab.counter("audit_seq") || lab.counter("audit_pending_bytes") > 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "the writer did not sync everything: {}", lab.stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    let head: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.run.join("audit/audit.head")).unwrap()).unwrap();
    assert_eq!(head["seq"].as_u64(), Some(lab.counter("audit_synced_seq")));
    let requests =
        lab.audit_records().into_iter().filter(|r| r["event"] == "request" && r["verdict"] == "allow").count() as u64;
    assert_eq!(requests, allowed, "every forwarded request is in the audit trail");
    let out = Command::new(GATE).args(["audit", "verify"]).arg(&audit).output().unwrap();
    assert!(out.status.success(), "audit verify: {}", text(&out));
}

/// A TOTP code is good once across a restart of the gate too: the gate
/// keeps each user's last step next to the secrets and reads it at start.
#[test]
fn xsk_a_totp_code_is_not_good_again_after_a_restart() {
    let Some(mut lab) = Lab::up("xsk") else { return };
    let code = lab.totp("alice", 0);
    let out = lab.login("alice", PASSWORD, &code);
    assert!(out.status.success(), "{}", text(&out));
    let steps = std::fs::read_to_string(lab.run.join("secrets.toml.totp-steps")).unwrap();
    assert!(steps.lines().any(|l| l.starts_with("alice ")), "{steps}");
    lab.restart_gate();
    let out = lab.login("alice", PASSWORD, &code);
    assert!(!out.status.success(), "the same code logged in again after a restart: {}", text(&out));
    assert!(text(&out).contains("refused: bad credentials"), "{}", text(&out));
    // The next step's code is new, and works.
    let out = lab.login("alice", PASSWORD, &lab.totp("alice", 1));
    assert!(out.status.success(), "{}", text(&out));
}

/// Certificate + TOTP: a user whose client certificate is enrolled (`user
/// add-cert`) and chains to the gate's `--client-ca` logs in without a
/// password; a certificate from the same CA that is not theirs is refused,
/// and so is a login with neither password nor certificate.
#[test]
fn xsk_client_certificate_and_totp_log_in_without_a_password() {
    let Some(mut lab) = Lab::up("xsk") else { return };
    let tls = lab.run.join("tls");
    let sh = |script: &str| {
        let out = Command::new("sh").arg("-c").arg(script).current_dir(&tls).output().unwrap();
        assert!(out.status.success(), "{script}: {}", text(&out));
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    sh(&format!("openssl req -x509 {ec} -keyout cca.key -out cca.crt -subj /CN=lab-client-ca -days 1"));
    sh("printf 'extendedKeyUsage=clientAuth\\n' > client-ext.cnf");
    for who in ["alice", "other"] {
        sh(&format!(
            "openssl req {ec} -keyout {who}.key -out {who}.csr -subj /CN={who} && openssl x509 -req -in {who}.csr \
             -CA cca.crt -CAkey cca.key -CAcreateserial -out {who}.crt -days 1 -extfile client-ext.cnf"
        ));
    }
    let out = Command::new(GATE)
        .arg("user")
        .arg("--secrets")
        .arg(lab.run.join("secrets.toml"))
        .args(["add-cert", "alice", "--cert"])
        .arg(tls.join("alice.crt"))
        .output()
        .unwrap();
    assert!(out.status.success() && text(&out).contains("enrolled"), "{}", text(&out));
    lab.gate_args.extend(["--client-ca".into(), tls.join("cca.crt").into()]);
    lab.restart_gate();

    let login_with = |who: &str, totp: &str| {
        let (cert, key) = (tls.join(format!("{who}.crt")), tls.join(format!("{who}.key")));
        let cert_args = ["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()];
        lab.login_with("alice", totp, &cert_args, None)
    };
    // Someone else's certificate (same CA) is no factor for alice.
    let out = login_with("other", &lab.totp("alice", 0));
    assert!(!out.status.success() && text(&out).contains("refused: bad credentials"), "{}", text(&out));
    // Her own certificate + TOTP, no password: logged in, and the ticket works.
    let out = login_with("alice", &lab.totp("alice", 0));
    assert!(out.status.success() && text(&out).contains("logged in as alice"), "{}", text(&out));
    lab.connect("alice", 5021);
    let out = lab.client(&["--host", "127.0.0.1", "--port", "5021", "--json", "read-holding", "0", "2"]);
    assert!(out.status.success() && text(&out).contains("[0, 1]"), "{}", text(&out));
    let log = lab.gate_log();
    assert!(log.contains("login ok: user \"alice\"") && log.contains("(client certificate + TOTP)"), "{log}");
    // No certificate and an empty password: refused.
    let out = lab.login("alice", "", &lab.totp("alice", 1));
    assert!(!out.status.success() && text(&out).contains("refused: bad credentials"), "{}", text(&out));
}

/// The refused requests of an audit trail: (function name, operation).
fn refused_requests(records: &[serde_json::Value]) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r["event"] == "request" && r["verdict"] == "deny")
        .map(|r| (r["function_name"].as_str().unwrap_or("").into(), r["op"].as_str().unwrap_or("").into()))
        .collect()
}

/// S7comm through the gate with python-snap7 at both ends (a real S7comm
/// client and server): reads, diagnostics and the operator's data-block
/// writes pass; the viewer's write, everyone's clock change and CPU stop
/// are refused the way a protected CPU refuses them (item 0x03, userdata
/// 0xD241, header 0x8703), and the PLC never sees a refused request. With
/// `program` granted, the operator's block download (where the PLC pulls
/// the block from the user) goes through; the viewer's is refused.
#[test]
fn xsk_s7_inspection_with_real_snap7_peers() {
    let lab_toml = std::fs::read_to_string(repo().join("config/lab.toml")).unwrap();
    let program = "\n[[rule]]\nname = \"operator-s7-program\"\nroles = [\"operator\"]\nassets = [\"plc-7\"]\nprotocol = \"s7\"\noperations = [\"program\"]\n";
    let Some(mut lab) = Lab::up_with("xsk", Some(&format!("{lab_toml}{program}"))) else { return };
    lab.sign_in(&[("bob", 5070), ("alice", 5071)], "s7");
    let s7 = |port, ops: &[&str]| lab.client_ops("s7_client.py", port, ops);
    let ok = |r: &serde_json::Value| r["ok"] == true;
    let refused = |r: &serde_json::Value, what: &str| {
        r["ok"] == false && r["error"].as_str().is_some_and(|e| e.to_lowercase().contains(what))
    };

    // The operator (alice): reads, writes DB1, reads it back, reads an SZL
    // and the clock; setting the clock and stopping the CPU are refused.
    // python-snap7's get_cpu_state() sends a read job without items: not
    // S7comm, answered "wrong frames".
    let a = s7(
        5071,
        &["read:1:0:4", "write:1:0:beef", "read:1:0:4", "szl:0x001c:0", "get-clock", "set-clock", "stop", "cpu-state"],
    );
    assert_eq!(a[0]["value"], "00010203", "{a:?}");
    assert!(ok(&a[1]), "{a:?}");
    assert_eq!(a[2]["value"], "beef0203", "{a:?}");
    assert!(ok(&a[3]) && ok(&a[4]), "diagnostics pass: {a:?}");
    assert!(refused(&a[5], "protection level"), "set-clock: {:?}", a[5]);
    assert!(refused(&a[6], "access to object refused"), "stop: {:?}", a[6]);
    assert!(refused(&a[7], "wrong frames"), "{:?}", a[7]);

    // The viewer (bob): reads pass, the write is refused item by item.
    let b = s7(5070, &["read:1:0:4", "write:1:2:0000", "read:1:0:4", "stop"]);
    assert_eq!(b[0]["value"], "beef0203", "{b:?}");
    assert!(refused(&b[1], "not allowed"), "write: {:?}", b[1]);
    assert_eq!(b[2]["value"], "beef0203", "the refused write changed nothing: {b:?}");
    assert!(refused(&b[3], "access to object refused"), "{b:?}");

    // Downloads: the PLC pulls the operator's block through the gate and
    // DB1 holds it afterwards; the viewer's request download is refused.
    let block: String = [0x70u8, 0x70, 0, 0, 0, 0, 0, 1].iter().chain(&[9u8; 24]).map(|b| format!("{b:02x}")).collect();
    let download = format!("download:1:{block}");
    let a = s7(5071, &[&download, "read:1:8:4"]);
    assert!(ok(&a[0]), "{a:?}");
    assert_eq!(a[1]["value"], "09090909", "{a:?}");
    let b = s7(5070, &[&download]);
    assert!(refused(&b[0], "access to object refused"), "{b:?}");

    // The PLC saw one write (alice's), no stop, no clock change.
    let plc: Vec<_> = lab.log_lines("s7-requests.jsonl").into_iter().filter(|r| r["event"] == "request").collect();
    let functions: Vec<_> = plc.iter().filter_map(|r| r["function"].as_u64()).collect();
    assert_eq!(functions.iter().filter(|&&f| f == 0x05).count(), 1, "{plc:?}");
    assert!(!functions.contains(&0x29), "the PLC never saw a stop: {plc:?}");
    assert_eq!(functions.iter().filter(|&&f| f == 0x77).count(), 1, "only get-clock reached it: {plc:?}");
    let pulled: Vec<_> = plc.iter().filter(|r| r["rosctr"] == 3).filter_map(|r| r["function"].as_u64()).collect();
    assert_eq!(functions.iter().filter(|&&f| f == 0x1a).count(), 1, "one request download: {plc:?}");
    assert_eq!(pulled, [0x1b, 0x1c], "the block and the end, acknowledged by alice: {plc:?}");
    let s = lab.stats();
    assert_eq!((s["s7_denied"].as_u64(), s["s7_malformed"].as_u64()), (Some(5), Some(1)), "{s}");

    // The audit trail names each request's operation and verdict.
    let records = lab.verified_audit();
    let requests: Vec<_> = records.iter().filter(|r| r["event"] == "request").collect();
    assert_eq!(
        refused_requests(&records),
        [
            ("UserdataSetClock", "control"),
            ("PlcStop", "control"),
            ("ReadVar", "other"),
            ("WriteVar", "write"),
            ("PlcStop", "control"),
            ("RequestDownload", "program")
        ]
        .map(|(f, o)| (f.to_string(), o.to_string())),
        "{requests:?}"
    );
    let write = requests.iter().find(|r| r["function_name"] == "WriteVar" && r["verdict"] == "allow").unwrap();
    assert_eq!(
        (write["area"].as_str(), write["db"].as_u64(), write["address"].as_u64()),
        (Some("db"), Some(1), Some(0))
    );
    assert_eq!(write["rule_name"], "operator-s7-writes");
    let block = requests.iter().find(|r| r["function_name"] == "DownloadBlock").unwrap();
    assert_eq!((block["verdict"].as_str(), block["rule_name"].as_str()), (Some("allow"), Some("operator-s7-program")));
    // tshark dissects alice's decrypted session as S7comm: her write, her
    // stop, and the gate's refusal of it (Ack_Data, error class 0x87).
    let fields = ["s7comm.header.rosctr", "s7comm.param.func", "s7comm.header.errcls"];
    let rows = lab.tshark(&records, "alice", "s7comm", &fields);
    for want in ["1,0x05,", "1,0x29,", "3,0x29,0x87"] {
        assert!(rows.lines().any(|l| l == want), "tshark has no {want}: {rows}");
    }
}

/// DNP3 through the gate with dnp3py at both ends (a real IEEE 1815 master
/// and outstation): polls and time synchronisation pass for both roles;
/// the operator operates an output; the viewer's operate and select are
/// refused the way an outstation refuses a control (its objects echoed with
/// status 9, not authorized), her cold restart and everyone's
/// save-configuration the way it refuses a function (IIN2.0, function code
/// not supported); the outstation never sees a refused request.
#[test]
fn xsk_dnp3_inspection_with_real_dnp3py_peers() {
    let Some(mut lab) = Lab::up("xsk") else { return };
    lab.sign_in(&[("bob", 5080), ("alice", 5081)], "dnp3");
    let master = |port, ops: &[&str]| lab.client_ops("dnp3_master.py", port, ops);
    let refused =
        |r: &serde_json::Value, why: &str| r["ok"] == false && r["error"].as_str().is_some_and(|e| e.contains(why));
    let (function, control) = ("IIN2: NO_FUNC_CODE_SUPPORT", "control status: NOT_AUTHORIZED");

    let a = master(5081, &["poll", "operate:1", "delay-measure", "save-config"]);
    assert_eq!(a[0]["value"], serde_json::json!([0.0, 100.0, 200.0, 300.0]), "{a:?}");
    assert_eq!((a[1]["ok"].as_bool(), a[2]["ok"].as_bool()), (Some(true), Some(true)), "{a:?}");
    assert!(refused(&a[3], function), "save-config: {:?}", a[3]);
    let b = master(5080, &["poll", "operate:2", "select:3", "cold-restart", "poll"]);
    assert!(b[0]["ok"] == true && b[4]["ok"] == true, "{b:?}");
    assert!(refused(&b[1], control) && refused(&b[2], control) && refused(&b[3], function), "{b:?}");

    // The outstation executed alice's operate only; it never saw a save,
    // a restart or bob's selects.
    let log = lab.log_lines("dnp3-requests.jsonl");
    let operated: Vec<_> = log.iter().filter(|r| r["event"] == "operate").map(|r| r["index"].as_u64()).collect();
    assert_eq!(operated, [Some(1)], "{log:?}");
    let functions: Vec<_> =
        log.iter().filter(|r| r["event"] == "request").filter_map(|r| r["function"].as_u64()).collect();
    assert!(!functions.iter().any(|f| [0x03, 0x0d, 0x13].contains(f)), "{functions:?}");
    assert_eq!(functions.iter().filter(|&&f| f == 0x01).count(), 3, "three polls: {functions:?}");
    let s = lab.stats();
    assert_eq!((s["dnp3_denied"].as_u64(), s["dnp3_malformed"].as_u64()), (Some(4), Some(0)), "{s}");

    // The audit trail: each refusal with its function, operation and IIN2.
    let records = lab.verified_audit();
    assert_eq!(
        refused_requests(&records),
        [
            ("SaveConfiguration", "program"),
            ("DirectOperate", "control"),
            ("Select", "control"),
            ("ColdRestart", "control")
        ]
        .map(|(f, o)| (f.to_string(), o.to_string()))
    );
    let operate = records
        .iter()
        .find(|r| r["event"] == "request" && r["function_name"] == "DirectOperate" && r["verdict"] == "allow")
        .unwrap();
    assert_eq!(operate["rule_name"], "operator-dnp3-control");
    for (function, why) in [
        ("DirectOperate", "control status 9 (not authorized)"),
        ("Select", "control status 9 (not authorized)"),
        ("ColdRestart", "IIN2 0x01 (function code not supported)"),
    ] {
        let r = records.iter().find(|r| r["function_name"] == function && r["verdict"] == "deny").unwrap();
        assert_eq!(r["dnp3_error"], why, "{r}");
    }
    // tshark dissects bob's session: the gate's answer to his operate and
    // select echoes the control with status 9.
    let rows = lab.tshark(&records, "bob", "dnp3.al.ctrlstatus", &["dnp3.al.func", "dnp3.al.ctrlstatus"]);
    assert_eq!(rows.lines().filter(|l| *l == "129,9").count(), 2, "tshark: {rows}");
    // tshark dissects alice's decrypted session as DNP3: her operate, her
    // save-configuration and the gate's response to it (IIN2.0 set).
    let rows = lab.tshark(&records, "alice", "dnp3.al.func", &["dnp3.al.func", "dnp3.al.iin.fcni"]);
    for want in ["5,", "19,"] {
        assert!(rows.lines().any(|l| l == want), "tshark has no {want}: {rows}");
    }
    assert!(rows.lines().any(|l| l == "129,1" || l == "129,True"), "tshark: {rows}");
}

/// EtherNet/IP-CIP through the gate with real stacks at both ends (cpppo's
/// Logix simulator as the target; cpppo's client for tags, pycomm3 for the
/// Identity object, connected and unconnected): tag reads and identity
/// pass for both roles, the operator's tag write passes, the viewer's write
/// and everyone's Reset are refused as a target refuses them (CIP general
/// status 0x0F, privilege violation), and the target never sees them.
#[test]
fn xsk_enip_inspection_with_real_cpppo_and_pycomm3_peers() {
    let Some(mut lab) = Lab::up("xsk") else { return };
    lab.sign_in(&[("bob", 5090), ("alice", 5091)], "enip");
    let run = |port, ops: &[&str]| lab.client_ops("enip_client.py", port, ops);
    let ok = |r: &serde_json::Value| r["ok"] == true;

    let a = run(5091, &["read:Speed[0-3]", "write:Speed[1]=(INT)42", "read:Speed[0-3]", "identity", "name", "reset"]);
    assert_eq!(a[0]["value"], serde_json::json!([0, 0, 0, 0]), "{a:?}");
    assert!(ok(&a[1]) && ok(&a[3]) && ok(&a[4]), "{a:?}");
    assert_eq!(a[2]["value"], serde_json::json!([0, 42, 0, 0]), "{a:?}");
    let privilege = |r: &serde_json::Value| {
        r["ok"] == false
            // cpppo reports the status number, pycomm3 names 0x0F.
            && (r["status"] == 15 || r["error"] == "Permission denied")
    };
    assert!(privilege(&a[5]), "reset: {:?}", a[5]);
    let b = run(
        5090,
        &["read:Speed[0-3]", "write:Speed[2]=(INT)7", "read:Speed[0-3]", "identity", "reset", "reset-connected"],
    );
    assert!(ok(&b[0]) && ok(&b[3]), "{b:?}");
    assert!(privilege(&b[1]), "write: {:?}", b[1]);
    assert_eq!(b[2]["value"], serde_json::json!([0, 42, 0, 0]), "the refused write changed nothing: {b:?}");
    assert!(privilege(&b[4]), "reset: {:?}", b[4]);
    assert!(privilege(&b[5]), "connected reset: {:?}", b[5]);

    // The target wrote once (alice's) and was never asked to reset.
    let log = lab.log_lines("enip-requests.jsonl");
    let writes: Vec<_> = log.iter().filter(|r| r["event"] == "write").collect();
    assert_eq!(writes.len(), 1, "{log:?}");
    assert_eq!((writes[0]["index"].as_u64(), writes[0]["value"].clone()), (Some(1), serde_json::json!([42])));
    assert!(!log.iter().any(|r| r["event"] == "identity" && r["service"] == 5), "{log:?}");
    let s = lab.stats();
    assert_eq!((s["enip_denied"].as_u64(), s["enip_malformed"].as_u64()), (Some(4), Some(0)), "{s}");

    // The audit trail: each refusal with its service, tag and operation.
    let records = lab.verified_audit();
    assert_eq!(
        refused_requests(&records),
        [("Reset", "control"), ("WriteTag", "write"), ("Reset", "control"), ("Reset", "control")]
            .map(|(f, o)| (f.to_string(), o.to_string())),
        "{records:?}"
    );
    let tags: Vec<_> = records.iter().filter(|r| r["verdict"] == "deny").map(|r| r["tag"].as_str()).collect();
    assert_eq!(tags, [None, Some("Speed"), None, None]);
    let write = records.iter().find(|r| r["function_name"] == "WriteTag" && r["verdict"] == "allow").unwrap();
    assert_eq!((write["rule_name"].as_str(), write["tag"].as_str()), (Some("operator-enip-writes"), Some("Speed")));
    // tshark dissects bob's decrypted session as CIP: the refused write
    // and the gate's reply with status 0x0f.
    // (Every client operation is its own connection, so its own pcapng.)
    let rows = lab.tshark(&records, "bob", "cip", &["cip.sc", "cip.genstat"]);
    assert!(rows.lines().any(|l| l.contains("0x4d")), "tshark: {rows}");
    assert!(rows.lines().any(|l| l.contains("0x4d") && l.ends_with("0x0f")), "tshark: {rows}");
    // The connected Reset went on the O->T id the target chose; the gate
    // refused it on the T->O id pycomm3 chose in its Forward Open, and the
    // capture shows that refusal as it was sent.
    let opened = lab.tshark(&records, "bob", "cip.cm.to_connid", &["cip.cm.to_connid"]);
    let t_to_o: Vec<&str> = opened.lines().filter(|l| !l.is_empty()).collect();
    let resets =
        lab.tshark(&records, "bob", "cip.sc == 0x05 && enip.cpf.cai.connid", &["enip.cpf.cai.connid", "cip.genstat"]);
    let (refusal, request): (Vec<&str>, Vec<&str>) = resets.lines().partition(|l| l.ends_with(",0x0f"));
    assert_eq!((refusal.len(), request.len()), (1, 1), "tshark: {resets}");
    let on = refusal[0].split(',').next().unwrap();
    assert!(t_to_o.contains(&on), "the refusal went on {on}, not a T->O id of {t_to_o:?}: {resets}");
    assert!(!request[0].starts_with(on), "the request and its refusal share a connection id: {resets}");
}

/// A lab's prefix is unique per process and lab, and fits `scripts/lab`'s
/// 12 characters with the largest pid Linux hands out (found by a review:
/// without a separator, pid 1234's lab 10 and pid 12341's lab 0 were one
/// name, and `lab up` tears an existing lab down).
#[test]
fn lab_prefixes_are_unique_and_short() {
    let prefix = |pid, n| format!("agt{}.{n}-", base36(pid));
    assert_ne!(prefix(1234, 10), prefix(12341, 0));
    assert!(prefix(4_194_304, 99).len() <= 12, "{}", prefix(4_194_304, 99));
    assert_eq!(base36(36 * 36 + 35), "10z");
}
