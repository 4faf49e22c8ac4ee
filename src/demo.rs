//! `accessgate demo`: the lab story on memory links, in one process.
//!
//! A user host, the gate's dp core (classification, segment stacks, session
//! proxy: the same code `run` uses) and a simulated PLC, joined by in-process
//! frame links. No root, no NIC. The config is the lab's unless `--config`.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use control::client::Answer;
use dataplane::core::CoreOptions;
use dataplane::wire::hello::Auth;
use perf::memlab::{MemLab, PASSWORD};
use perf::sim::{read_holding, request};

/// The lab config, embedded so the demo runs anywhere.
pub const LAB_CONFIG: &str = include_str!("../config/lab.toml");

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Use this config instead of the embedded lab config.
    #[arg(long)]
    config: Option<PathBuf>,
}

const WAIT: Duration = Duration::from_secs(5);

pub fn demo(args: &DemoArgs) -> ExitCode {
    if std::env::var_os("ACCESSGATE_LOG").is_none() {
        // The story prints the gate's log itself; keep stderr quiet.
        log::set_max_level(log::LevelFilter::Off);
    }
    match story(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accessgate demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn story(args: &DemoArgs) -> Result<(), String> {
    let config = match &args.config {
        Some(p) => control::config::load(p).map_err(|e| e.to_string())?,
        None => control::config::parse("config/lab.toml (embedded)", LAB_CONFIG).map_err(|e| e.to_string())?,
    };
    let mut lab = MemLab::new(&config, CoreOptions::default()).map_err(|e| e.to_string())?;
    let snap = lab.control.snapshot();
    let ep = snap.endpoints.first().ok_or("no endpoint")?;
    println!("Access Gate demo (memory links, one dp core, same dataplane as `accessgate run`)");
    println!(
        "  user {} --> gate north {} | overlay endpoint {} ({} \"{}\")",
        lab.user.address,
        snap.north_address.map(|n| n.to_string()).unwrap_or_default(),
        ep.overlay,
        ep.protocol.as_str(),
        ep.asset
    );
    println!("  gate south {} --> asset {} at {}", snap.segments[ep.segment].south_address, ep.asset, ep.underlay);
    println!();

    println!("Identity first: alice logs in at the gate's own endpoint {} (TLS 1.3, password + TOTP):", lab.login);
    let code = lab.totp_code();
    let ticket = lab.login("alice", WAIT)?;
    println!("  TOTP {code} accepted; ticket issued (held by the gate only as a SHA-256 hash)");
    for (what, auth, target) in
        [("the same TOTP code again (replay)", Some(code.clone()), None), ("a wrong password", None, None)]
    {
        let h = match &auth {
            Some(c) => {
                lab.open(lab.login, Auth::Credentials { user: "alice", password: PASSWORD.as_bytes(), totp: c }, target)
            }
            None => lab.open(
                lab.login,
                Auth::Credentials { user: "alice", password: b"not the password", totp: &code },
                target,
            ),
        }?;
        println!("  {what:<38} -> {}", answer_text(lab.answer(h, WAIT)));
    }
    lab.advance(30);
    let carol = lab.login("carol", WAIT)?;
    let h = lab.open(lab.endpoint, Auth::Ticket(&carol), Some((&ep.asset, &ep.service)))?;
    println!("  {:<38} -> {}", "carol (role guest) opens plc-7", answer_text(lab.answer(h, WAIT)));
    println!();
    let h = lab.session(&ticket, WAIT)?;
    let mut adu = [0u8; 260];
    let mut tid = 0u16;
    let mut ask = |lab: &mut MemLab, what: &str, function: u8, body: &[u8]| -> Result<Vec<u8>, String> {
        tid += 1;
        let n = request(&mut adu, tid, 1, function, body);
        let resp = lab.transact(h, &adu[..n], WAIT).ok_or_else(|| format!("{what}: no answer through the gate"))?;
        println!("  {what:<38} -> {}", render(function, &resp));
        Ok(resp)
    };
    println!(
        "Modbus/TCP through the gate to {} (alice's ticket, TLS to the gate, plain Modbus to the PLC):",
        lab.endpoint
    );
    ask(&mut lab, "read holding registers 0..10", 3, &read_holding(0, 10))?;
    ask(&mut lab, "write holding register 100 = 1234", 6, &[0, 100, 0x04, 0xD2])?;
    let back = ask(&mut lab, "read holding register 100", 3, &read_holding(100, 1))?;
    ask(&mut lab, "read coils 0..8", 1, &read_holding(0, 8))?;
    ask(&mut lab, "read holding register 20000", 3, &read_holding(20000, 1))?;
    if back.get(9..11) != Some(&[0x04, 0xD2][..]) {
        return Err("the written value did not read back".into());
    }

    println!();
    let wrong = SocketAddrV4::new(*lab.endpoint.ip(), 503);
    println!("A connection to {wrong} (not an endpoint): deny by default, no SYN-ACK:");
    let w = lab.user.connect(wrong, 1024);
    lab.run_until(Duration::from_millis(300), |_| false);
    println!("  user socket state after 300 ms: {}", lab.user.socket(w).state());
    lab.user.socket(w).abort();

    if let Some(c) = lab.clients.get_mut(&h) {
        c.conn.send_close_notify();
    }
    lab.user.socket(h).close();
    lab.run_until(WAIT, |l| l.control.totals().sessions_active == 0);
    println!();
    println!("Gate log:");
    lab.control.drain_events(|e| println!("  {}", control::describe(e)));
    println!();
    println!(
        "PLC saw {} requests: {:?}",
        lab.sim.log.len(),
        lab.sim.log.iter().map(|s| (s.function, s.address)).collect::<Vec<_>>()
    );
    println!("Gate counters (non-zero):");
    for (k, v) in lab.control.totals().to_pairs() {
        if v != 0 && k != "loops" && k != "sleeps" {
            println!("  {k:<24} {v}");
        }
    }
    Ok(())
}

fn answer_text(a: Option<Answer>) -> String {
    match a {
        Some(Answer::Accept { .. }) => "accepted".into(),
        Some(Answer::Refuse { reason, retry_after }) => {
            format!(
                "refused: {}{}",
                reason.as_str(),
                retry_after.map(|s| format!(" (retry after {s} s)")).unwrap_or_default()
            )
        }
        None => "no answer".into(),
    }
}

/// A one-line reading of a Modbus response.
fn render(function: u8, resp: &[u8]) -> String {
    let Some(&fc) = resp.get(7) else {
        return format!("{resp:02x?}");
    };
    if fc & 0x80 != 0 {
        let code = resp.get(8).copied().unwrap_or(0);
        let name = match code {
            1 => "illegal function",
            2 => "illegal data address",
            3 => "illegal data value",
            _ => "exception",
        };
        return format!("exception {code:02} ({name})");
    }
    match function {
        3 | 4 => {
            let regs: Vec<u16> = resp[9..].chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            format!("{regs:?}")
        }
        1 | 2 => {
            let bits: Vec<u8> = resp[9..].iter().flat_map(|b| (0..8).map(move |i| (b >> i) & 1)).collect();
            format!("{bits:?}")
        }
        _ => "ok".to_string(),
    }
}
