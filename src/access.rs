//! `accessgate login` and `accessgate connect`: the user's side.
//!
//! `login` proves password + TOTP to the gate's own endpoint over TLS and
//! stores the short-lived ticket it gets (mode 0600, in the user's config
//! dir). `connect` opens a local port for the engineering tool and carries
//! each local connection over TLS to the asset's endpoint, presenting the
//! ticket in the hello. Errors say what to do next.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use control::client::{self, Answer};
use dataplane::wire::hello::{Auth, Reason};

#[derive(clap::Args)]
pub struct LoginArgs {
    /// The gate's login endpoint (`ip` or `ip:port`, port 443 by default).
    #[arg(long, default_value = "100.64.0.1")]
    gate: String,
    #[arg(long)]
    user: String,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    /// The current TOTP code (prompted for when absent).
    #[arg(long)]
    totp: Option<String>,
    /// CA certificate that signed the gate's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Name in the gate's certificate.
    #[arg(long, default_value = "gate.lab")]
    server_name: String,
    /// Where the ticket is stored (default: $XDG_CONFIG_HOME/accessgate or ~/.config/accessgate).
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Client certificate (PEM) enrolled for the user (`accessgate user
    /// add-cert`): it replaces the password, which is then not asked for.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ConnectArgs {
    /// The asset's name (as in the gate's config).
    asset: String,
    /// The asset's service (default: its first one in the gate's config).
    #[arg(long, default_value = "*")]
    service: String,
    /// Local address the engineering tool connects to. Whoever connects
    /// there uses your session (and the trail names you): keep it on
    /// loopback, on a machine only you use.
    #[arg(long, default_value = "127.0.0.1:5020")]
    listen: SocketAddr,
    /// Allow --listen on an address other than loopback (the session is
    /// then open to whoever reaches that address).
    #[arg(long)]
    allow_remote: bool,
    /// Serve one local connection, then exit (scripts, tests).
    #[arg(long)]
    once: bool,
    #[arg(long)]
    config_dir: Option<PathBuf>,
}

/// What `login` stores.
struct TicketFile {
    gate: SocketAddrV4,
    server_name: String,
    ca: PathBuf,
    user: String,
    ticket: [u8; 32],
    expires_unix: u64,
}

impl TicketFile {
    fn path(dir: &Option<PathBuf>) -> PathBuf {
        let base = dir.clone().unwrap_or_else(|| {
            std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
                .unwrap_or_else(|| PathBuf::from("."))
                .join("accessgate")
        });
        base.join("ticket")
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let hex: String = self.ticket.iter().map(|b| format!("{b:02x}")).collect();
        let text = format!(
            "gate={}\nserver_name={}\nca={}\nuser={}\nticket={hex}\nexpires_unix={}\n",
            self.gate,
            self.server_name,
            self.ca.display(),
            self.user,
            self.expires_unix
        );
        let tmp = path.with_extension("tmp");
        // A leftover temporary file would keep its permissions: start anew.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    }

    fn load(path: &Path) -> Result<Self, String> {
        use std::os::unix::fs::MetadataExt;
        let meta =
            std::fs::metadata(path).map_err(|_| format!("no ticket at {}: run accessgate login", path.display()))?;
        // A ticket file names the gate, its CA and its name: one planted by
        // someone else would send the tool's traffic to their endpoint.
        let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        if meta.mode() & 0o077 != 0 || me.is_some_and(|uid| uid != meta.uid()) {
            return Err(format!(
                "{} is not private to you (owner uid {}, mode {:o}): remove it and run accessgate login",
                path.display(),
                meta.uid(),
                meta.mode() & 0o777
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|_| format!("no ticket at {}: run accessgate login", path.display()))?;
        let get = |k: &str| {
            text.lines().find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('='))).map(str::to_string)
        };
        let bad = || format!("{} is damaged: run accessgate login", path.display());
        let hex = get("ticket").ok_or_else(bad)?;
        let mut ticket = [0u8; 32];
        // 64 hex digits, nothing else (a multi-byte character would not
        // split into byte pairs; `from_str_radix` alone takes a sign).
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        for (b, pair) in ticket.iter_mut().zip(hex.as_bytes().chunks(2)) {
            let digit = |c: u8| char::from(c).to_digit(16).unwrap_or(0) as u8;
            *b = digit(pair[0]) << 4 | digit(pair[1]);
        }
        Ok(Self {
            gate: get("gate").and_then(|g| g.parse().ok()).ok_or_else(bad)?,
            server_name: get("server_name").ok_or_else(bad)?,
            ca: get("ca").map(PathBuf::from).ok_or_else(bad)?,
            user: get("user").ok_or_else(bad)?,
            ticket,
            expires_unix: get("expires_unix").and_then(|e| e.parse().ok()).ok_or_else(bad)?,
        })
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A TLS stream to the gate (blocking).
fn tls_to(
    addr: SocketAddrV4,
    server_name: &str,
    ca: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let ca_pem = read(ca)?;
    let pair = match client_cert {
        Some((cert, key)) => Some((read(cert)?, read(key)?)),
        None => None,
    };
    let config = client::client_config(&ca_pem, false, pair.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())))?;
    let conn = client::connection(&config, server_name)?;
    let tcp = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5))
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// What a refusal means for the user.
fn advice(reason: Reason, retry_after: Option<u32>, asset: &str) -> String {
    match reason {
        Reason::TicketExpired => "ticket expired: run accessgate login".into(),
        Reason::BadCredentials => "refused: bad credentials (password, TOTP code or ticket)".into(),
        Reason::MfaRequired => "refused: a TOTP code is required (--totp)".into(),
        Reason::Locked => format!(
            "refused: too many failed attempts; locked{}",
            retry_after.map(|s| format!(" for {s} s")).unwrap_or_default()
        ),
        Reason::NotAuthorized => format!("refused: not authorized for {asset}"),
        Reason::OutsideWindow => format!("refused: {asset} is outside your access window now"),
        Reason::AuditUnavailable => "refused: the gate cannot record sessions right now (audit unavailable)".into(),
        Reason::UnknownAsset => format!("refused: no asset/service {asset} behind this endpoint"),
        Reason::MalformedHello => "refused: the gate could not read the request: check the TOTP code (6 digits), \
             the password (at most 256 bytes) and the asset and service names, or update accessgate"
            .into(),
        other => format!("refused: {}", other.as_str()),
    }
}

fn prompt(label: &str) -> Result<String, String> {
    eprint!("{label}");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub fn login(args: &LoginArgs) -> ExitCode {
    match do_login(args) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("accessgate login: {e}");
            ExitCode::FAILURE
        }
    }
}

fn do_login(args: &LoginArgs) -> Result<String, String> {
    let gate: SocketAddrV4 = match args.gate.parse() {
        Ok(a) => a,
        Err(_) => SocketAddrV4::new(
            args.gate.parse().map_err(|_| format!("--gate {:?} is not an IPv4 address", args.gate))?,
            443,
        ),
    };
    let password = if args.password_stdin {
        prompt("")?
    } else if args.cert.is_some() {
        // The certificate is the first factor.
        String::new()
    } else {
        rpassword::prompt_password(format!("password for {}: ", args.user)).map_err(|e| e.to_string())?
    };
    // "123 456" as an authenticator app shows it is the code 123456.
    let totp: String = match &args.totp {
        Some(t) => t.clone(),
        None => prompt("TOTP code: ")?,
    }
    .chars()
    .filter(|c| !c.is_whitespace())
    .collect();
    let cert = args.cert.as_deref().zip(args.key.as_deref());
    let mut stream = tls_to(gate, &args.server_name, &args.ca, cert)?;
    // What the gate would refuse as malformed is said here, with the fix.
    let hello = client::checked_hello(
        Auth::Credentials { user: &args.user, password: password.as_bytes(), totp: &totp },
        None,
    )?;
    match client::exchange(&mut stream, &hello)? {
        Answer::Accept { expires_unix, ticket: Some(ticket), .. } => {
            let file = TicketFile {
                gate,
                server_name: args.server_name.clone(),
                ca: std::fs::canonicalize(&args.ca).unwrap_or(args.ca.clone()),
                user: args.user.clone(),
                ticket,
                expires_unix,
            };
            let path = TicketFile::path(&args.config_dir);
            file.save(&path).map_err(|e| format!("saving the ticket to {}: {e}", path.display()))?;
            Ok(format!(
                "logged in as {} at {gate}; ticket valid for {} min (stored in {})",
                args.user,
                expires_unix.saturating_sub(now_unix()) / 60,
                path.display()
            ))
        }
        Answer::Accept { .. } => Err("the gate accepted but sent no ticket".into()),
        Answer::Refuse { reason, retry_after } => Err(advice(reason, retry_after, "the gate")),
    }
}

pub fn connect(args: &ConnectArgs) -> ExitCode {
    match do_connect(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accessgate connect: {e}");
            ExitCode::FAILURE
        }
    }
}

fn do_connect(args: &ConnectArgs) -> Result<(), String> {
    let ticket = TicketFile::load(&TicketFile::path(&args.config_dir))?;
    if ticket.expires_unix <= now_unix() {
        return Err("ticket expired: run accessgate login".into());
    }
    // Ask the gate where the asset's endpoint is (and whether we may go there).
    let mut stream = tls_to(ticket.gate, &ticket.server_name, &ticket.ca, None)?;
    let hello = client::hello_frame(Auth::Ticket(&ticket.ticket), Some((&args.asset, &args.service)));
    let endpoint: SocketAddrV4 = match client::exchange(&mut stream, &hello)? {
        Answer::Accept { granted, .. } => {
            granted.parse().map_err(|_| format!("the gate answered an unusable endpoint {granted:?}"))?
        }
        Answer::Refuse { reason, retry_after } => return Err(advice(reason, retry_after, &args.asset)),
    };
    drop(stream);
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        return Err(format!(
            "--listen {}: not a loopback address; whoever reaches it would use your session (add --allow-remote to mean it)",
            args.listen
        ));
    }
    let listener = TcpListener::bind(args.listen).map_err(|e| format!("--listen {}: {e}", args.listen))?;
    eprintln!(
        "accessgate connect: {} ({}) via {endpoint} as {}; listening on {}",
        args.asset, args.service, ticket.user, args.listen
    );
    let ticket = Arc::new(ticket);
    for local in listener.incoming() {
        let Ok(local) = local else { continue };
        let (ticket, asset, service) = (ticket.clone(), args.asset.clone(), args.service.clone());
        let worker = std::thread::spawn(move || {
            if let Err(e) = carry(local, endpoint, &ticket, &asset, &service) {
                eprintln!("accessgate connect: {e}");
            }
        });
        if args.once {
            let _ = worker.join();
            break;
        }
    }
    Ok(())
}

/// Moves the plaintext rustls holds into `out`; whether the gate closed
/// (close_notify: no more will come).
fn take_plaintext(c: &mut rustls::ClientConnection, out: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match c.reader().read(&mut chunk) {
            Ok(0) => return true,
            Ok(k) => out.extend_from_slice(&chunk[..k]),
            Err(_) => return false,
        }
    }
}

/// Carries one local connection over TLS to the asset's endpoint.
fn carry(
    local: TcpStream,
    endpoint: SocketAddrV4,
    ticket: &TicketFile,
    asset: &str,
    service: &str,
) -> Result<(), String> {
    local.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut stream = tls_to(endpoint, &ticket.server_name, &ticket.ca, None)?;
    let hello = client::hello_frame(Auth::Ticket(&ticket.ticket), Some((asset, service)));
    match client::exchange(&mut stream, &hello)? {
        Answer::Accept { .. } => {}
        Answer::Refuse { reason, retry_after } => return Err(advice(reason, retry_after, asset)),
    }
    let rustls::StreamOwned { mut conn, sock } = stream;
    sock.set_read_timeout(None).map_err(|e| e.to_string())?;
    // What the asset sent with the accept (it may speak first) goes to the
    // tool now, not when the next record comes.
    let mut first = Vec::new();
    let closed = take_plaintext(&mut conn, &mut first);
    let mut local = local;
    local.write_all(&first).map_err(|e| e.to_string())?;
    if closed {
        let _ = local.shutdown(std::net::Shutdown::Write);
    }
    let conn = Arc::new(Mutex::new(conn));
    let (mut tls_rd, mut tls_wr) = (sock.try_clone().map_err(|e| e.to_string())?, sock);
    let (mut local_rd, mut local_wr) = (local.try_clone().map_err(|e| e.to_string())?, local);

    // No socket is written while the TLS state is locked: a write that
    // blocks (the gate or the tool not reading) would stop the other
    // direction from draining, and both would wait for good (found by a
    // review). Only this thread writes TLS records, so they leave in the
    // order rustls sealed them; what the gate's records ask back (a key
    // update) leaves with the next write, or at the close.
    let down_conn = conn.clone();
    let down = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut plain = Vec::with_capacity(32 * 1024);
        loop {
            let n = match tls_rd.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // rustls takes at most 4 KiB a call and holds at most 16 KiB of
            // plaintext: the plaintext is taken after every call, or a burst
            // of records fills it and reading fails (found by a review).
            let (closed, failed) = {
                let Ok(mut c) = down_conn.lock() else { break };
                let mut rd: &[u8] = &buf[..n];
                let (mut closed, mut failed) = (false, false);
                while !rd.is_empty() && !closed {
                    if c.read_tls(&mut rd).is_err() || c.process_new_packets().is_err() {
                        failed = true;
                        break;
                    }
                    closed = take_plaintext(&mut c, &mut plain);
                }
                (closed, failed)
            };
            if !plain.is_empty() && local_wr.write_all(&plain).is_err() {
                return;
            }
            plain.clear();
            if closed || failed {
                break;
            }
        }
        let _ = local_wr.shutdown(std::net::Shutdown::Write);
    });

    // Tool -> gate.
    let mut buf = [0u8; 16 * 1024];
    let mut sealed = Vec::with_capacity(32 * 1024);
    loop {
        let n = match local_rd.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let Ok(mut c) = conn.lock() else { break };
            if c.writer().write_all(&buf[..n]).is_err() {
                break;
            }
            while c.wants_write() && c.write_tls(&mut sealed).is_ok() {}
        }
        if tls_wr.write_all(&sealed).is_err() {
            break;
        }
        sealed.clear();
    }
    if let Ok(mut c) = conn.lock() {
        c.send_close_notify();
        while c.wants_write() && c.write_tls(&mut sealed).is_ok() {}
    }
    let _ = tls_wr.write_all(&sealed);
    let _ = down.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ticket file with `ticket=` set to `hex`, loaded.
    fn load_with(hex: &str) -> Result<TicketFile, String> {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ag-ticket-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ticket");
        let text =
            format!("gate=100.64.0.1:443\nserver_name=gate.lab\nca=/x\nuser=alice\nticket={hex}\nexpires_unix=1\n");
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = TicketFile::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        loaded
    }

    /// A TLS "gate" on loopback that accepts one hello, answers Accept
    /// followed by `first` (an asset that speaks first), then echoes
    /// everything; and the CA file to trust it.
    fn echo_gate(name: &str, first: &'static [u8]) -> (SocketAddrV4, PathBuf) {
        let pki = control::pki::generate(&["gate.lab".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("ag-echo-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, &pki.ca_cert).unwrap();
        // The gate's own TLS configuration (TLS 1.3, its certificate).
        let config =
            dataplane::tls::server_config(pki.gate_cert.as_bytes(), pki.gate_key.as_bytes(), None, false).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = listener.local_addr().unwrap() else { unreachable!() };
        std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            // The client read the CA before it connected.
            let _ = std::fs::remove_dir_all(&dir);
            let mut s = rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), tcp);
            let (mut hello, mut b) = (Vec::new(), [0u8; 1]);
            while !matches!(dataplane::wire::hello::frame_len(&hello), dataplane::wire::hello::Framing::Complete(_)) {
                s.read_exact(&mut b).unwrap();
                hello.push(b[0]);
            }
            let accept = dataplane::wire::hello::Message::Accept {
                session_id: 1,
                expires_unix: u64::MAX,
                granted: "read,write",
                ticket: None,
            };
            let mut frame = vec![0u8; accept.buffer_len()];
            let n = accept.emit(&mut frame);
            frame.truncate(n);
            frame.extend_from_slice(first);
            s.write_all(&frame).unwrap();
            s.flush().unwrap();
            let mut buf = [0u8; 16 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).and_then(|()| s.flush()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        (addr, ca)
    }

    /// `carry` between a local tool and the echo gate, the tool's socket.
    fn carried(name: &str, first: &'static [u8]) -> TcpStream {
        let (gate, ca) = echo_gate(name, first);
        let ticket = TicketFile {
            gate,
            server_name: "gate.lab".into(),
            ca,
            user: "alice".into(),
            ticket: [7; 32],
            expires_unix: u64::MAX,
        };
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let tool = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (local, _) = l.accept().unwrap();
        std::thread::spawn(move || carry(local, gate, &ticket, "plc-7", "tcp"));
        tool
    }

    /// Both directions busy at once do not stall the forwarder (found by a
    /// review: it wrote to a socket while holding the TLS state, and with
    /// both sides' buffers full neither direction moved again, after 4 to
    /// 28 MB).
    #[test]
    fn a_busy_session_in_both_directions_does_not_stall() {
        let tool = carried("busy", b"");
        const TOTAL: usize = 256 << 20;
        let mut wr = tool.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = [0x55u8; 16 * 1024];
            for _ in 0..TOTAL / chunk.len() {
                if wr.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let mut rd = tool;
        std::thread::spawn(move || {
            let (mut buf, mut got) = ([0u8; 64 * 1024], 0usize);
            while let Ok(n @ 1..) = rd.read(&mut buf) {
                got += n;
                let _ = tx.send(got);
            }
        });
        let mut got = 0;
        while let Ok(n) = rx.recv_timeout(Duration::from_secs(10)) {
            got = n;
            if got >= 64 << 20 {
                break;
            }
        }
        assert!(got >= 64 << 20, "stalled: {got} bytes echoed back, then nothing for 10 s");
    }

    /// What the asset sends with the accept (it speaks first) reaches the
    /// tool at once (found by a review: `exchange` read past the answer and
    /// dropped it, or it waited in rustls for the next record).
    #[test]
    fn the_assets_first_bytes_reach_the_tool() {
        let mut tool = carried("first", b"BANNER");
        tool.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = [0u8; 6];
        tool.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"BANNER");
    }

    /// A ticket file others can read or write is refused: one planted by
    /// someone else names their gate, CA and server name, and the tool's
    /// traffic would go there (found by a review).
    #[test]
    fn a_ticket_file_others_can_touch_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ag-ticket-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ticket");
        let mut file = load_with(&"0".repeat(64)).unwrap();
        file.ticket[0] = 1;
        file.save(&path).unwrap();
        assert!(TicketFile::load(&path).is_ok(), "saved 0600: good");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = TicketFile::load(&path).map(|_| ()).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("is not private to you") && e.contains("mode 644"), "{e}");
    }

    /// What a user types as an authenticator app shows it ("123 456"), or a
    /// password too long, is fixed or refused before sending, with the
    /// reason, rather than refused by the gate as malformed (found by a
    /// review); the malformed refusal itself says what to check.
    #[test]
    fn the_client_sends_only_hellos_the_gate_reads() {
        let long = vec![b'p'; 300];
        let send = |password: &[u8], totp: &str| {
            client::checked_hello(Auth::Credentials { user: "alice", password, totp }, None)
        };
        let ok = send(b"s3cret!!", "123456").unwrap();
        assert!(dataplane::wire::hello::Message::parse(&ok).is_ok());
        assert!(send(b"s3cret!!", "123 456").unwrap_err().contains("TOTP code"));
        assert!(send(&long, "123456").is_err());
        let advice = advice(Reason::MalformedHello, None, "plc-7");
        assert!(advice.contains("TOTP code (6 digits)"), "{advice}");
    }

    #[test]
    fn a_saved_ticket_is_private_even_over_a_leftover_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ag-ticket-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ticket");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, "old").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut file = load_with(&"0".repeat(64)).unwrap();
        file.ticket[0] = 0x5a;
        file.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let back = TicketFile::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(mode, 0o600);
        assert_eq!(back.ticket[0], 0x5a);
    }

    #[test]
    fn a_damaged_ticket_is_an_error_not_a_panic() {
        // 64 bytes that are not 64 hex digits: a multi-byte character
        // (found by a review: it panicked slicing inside it), and a sign.
        let wide = format!("a{}", "€".repeat(21));
        assert_eq!(wide.len(), 64);
        for hex in [wide, format!("+f{}", "0".repeat(62)), "0".repeat(63)] {
            let e = load_with(&hex).map(|_| ()).unwrap_err();
            assert!(e.contains("is damaged: run accessgate login"), "{e}");
        }
        let good = load_with(&format!("0aFf{}", "0".repeat(60))).unwrap();
        assert_eq!(good.ticket[..2], [0x0a, 0xff]);
        assert_eq!(good.user, "alice");
    }
}
