//! `accessgate audit`: verify the trail, list sessions, show one session as
//! a transcript, export one session (capture + records) for an engineer or
//! an auditor. Reads only; works on a copy of the directory as well.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use control::audit::verify::{self, Line, SessionSummary};
use control::audit::writer::PCAP_DIR;
use serde_json::{Map, Value};

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand)]
enum AuditCommand {
    /// Check the hash chain across files, audit.head and every session
    /// capture; exit 1 naming the first bad record (file, line, seq).
    Verify {
        /// The audit directory.
        dir: PathBuf,
    },
    /// One line per session: who, what, when, how it ended.
    Sessions {
        /// The audit directory.
        dir: PathBuf,
    },
    /// A readable transcript of one session.
    Show {
        /// The audit directory.
        dir: PathBuf,
        /// Session id (hex, as `sessions` prints it; leading zeros and 0x optional).
        session: String,
    },
    /// Copy a session's pcapng and its JSONL records next to each other.
    Export {
        /// The audit directory.
        dir: PathBuf,
        /// Session id (hex).
        #[arg(long)]
        session: String,
        /// The capture to write (the records go beside it as .jsonl);
        /// default ./session-<id>.pcapng.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn audit(args: &AuditArgs) -> ExitCode {
    let result = match &args.command {
        AuditCommand::Verify { dir } => return verify_cmd(dir),
        AuditCommand::Sessions { dir } => sessions_cmd(dir),
        AuditCommand::Show { dir, session } => show_cmd(dir, session),
        AuditCommand::Export { dir, session, out } => export_cmd(dir, session, out.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accessgate audit: {e}");
            ExitCode::from(2)
        }
    }
}

fn verify_cmd(dir: &Path) -> ExitCode {
    if !dir.is_dir() {
        eprintln!("accessgate audit verify: {}: not a directory", dir.display());
        return ExitCode::from(2);
    }
    match verify::verify(dir) {
        Ok(v) if v.records == 0 => {
            println!("{}: no audit records", dir.display());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            println!(
                "{}: ok: {} record(s) in {} file(s), seq {}..={}, {} session capture(s) match their digests{}",
                dir.display(),
                v.records,
                v.files,
                v.first_seq,
                v.last_seq,
                v.captures,
                if v.open_sessions > 0 {
                    format!(", {} session(s) not closed", v.open_sessions)
                } else {
                    String::new()
                }
            );
            println!("head {}", v.last_hash);
            ExitCode::SUCCESS
        }
        Err(bad) => {
            eprintln!("audit verify FAILED: {bad}");
            ExitCode::FAILURE
        }
    }
}

fn sessions_cmd(dir: &Path) -> Result<(), String> {
    let list = verify::sessions(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    println!(
        "{:<16}  {:<27}  {:<12}  {:<16}  {:<21}  {:>5}  {:>6}  {:>9}  REASON",
        "SESSION", "OPENED", "USER", "ASSET", "CLIENT", "REQS", "DENIED", "SECONDS"
    );
    for s in &list {
        println!(
            "{:<16}  {:<27}  {:<12}  {:<16}  {:<21}  {:>5}  {:>6}  {:>9}  {}",
            s.session,
            s.opened,
            s.user,
            s.asset,
            s.client,
            s.requests,
            s.denied,
            if s.closed.is_some() { format!("{:.3}", s.duration_us as f64 / 1e6) } else { "-".into() },
            s.reason.as_deref().unwrap_or("(open)")
        );
    }
    println!("{} session(s)", list.len());
    Ok(())
}

fn records(dir: &Path, session: &str) -> Result<(String, Vec<Line>), String> {
    let id = verify::parse_session(session).ok_or_else(|| format!("{session:?} is not a session id (hex)"))?;
    let recs = verify::session_records(dir, &id).map_err(|e| format!("{}: {e}", dir.display()))?;
    if recs.is_empty() {
        return Err(format!("no records of session {id} in {} (see `accessgate audit sessions`)", dir.display()));
    }
    Ok((id, recs))
}

fn show_cmd(dir: &Path, session: &str) -> Result<(), String> {
    let (id, recs) = records(dir, session)?;
    let opens = recs.iter().filter(|r| r.record.get("event").and_then(Value::as_str) == Some("session_open")).count();
    if opens > 1 {
        println!("note: session id {id} was used {opens} times (the gate restarted); all are shown\n");
    }
    for r in &recs {
        println!("{}", transcript_line(&r.record));
    }
    Ok(())
}

/// One record as a line of a transcript.
fn transcript_line(r: &Map<String, Value>) -> String {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let u = |k: &str| r.get(k).and_then(Value::as_u64);
    let ts = s("ts");
    let seq = u("seq").unwrap_or(0);
    let what = match s("event").as_str() {
        "auth" => format!(
            "auth      {} {} ({} {}{}){}",
            s("user"),
            s("result"),
            s("method"),
            s("purpose"),
            r.get("asset").and_then(Value::as_str).map(|a| format!(" {a}")).unwrap_or_default(),
            r.get("reason").and_then(Value::as_str).map(|x| format!(": {x}")).unwrap_or_default()
        ),
        "session_open" => format!(
            "open      user {} (roles {}) {} -> {} {} via {} [{} {}]{}",
            s("user"),
            r.get("roles")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            s("client"),
            s("asset"),
            s("asset_addr"),
            s("endpoint"),
            s("tls_version"),
            s("tls_cipher"),
            r.get("ticket").and_then(Value::as_str).map(|t| format!(" ticket {t}")).unwrap_or_default()
        ),
        "request" => {
            let span = match (r.get("table").and_then(Value::as_str), u("address"), u("count")) {
                (Some(t), Some(a), Some(c)) if c > 1 => format!(" {t} {a}..={}", a.saturating_add(c - 1)),
                (Some(t), Some(a), _) => format!(" {t} {a}"),
                _ => String::new(),
            };
            let verdict = s("verdict").to_uppercase();
            let rule = r.get("rule_name").and_then(Value::as_str).unwrap_or("default");
            let exception = u("exception").map(|e| format!(", answered with exception {e}")).unwrap_or_default();
            format!(
                "request   #{} unit {} {}({}){span}  {verdict} (rule {rule}{exception})  {} bytes",
                u("req").unwrap_or(0),
                u("unit").unwrap_or(0),
                r.get("function_name").and_then(Value::as_str).unwrap_or("function"),
                u("function").unwrap_or(0),
                u("bytes").unwrap_or(0)
            )
        }
        "response" => format!(
            "response  #{} after {} us, {} bytes{}",
            u("req").unwrap_or(0),
            u("latency_us").unwrap_or(0),
            u("bytes").unwrap_or(0),
            u("exception").map(|e| format!(", exception {e}")).unwrap_or_default()
        ),
        "data" => format!("data      {} {} bytes", s("dir"), u("bytes").unwrap_or(0)),
        "session_close" => format!(
            "close     {}{}: {} bytes up, {} bytes down, {:.3} s, {} request(s), {} denied; capture {} sha256 {}",
            s("reason"),
            r.get("detail").and_then(Value::as_str).map(|d| format!(" ({d})")).unwrap_or_default(),
            u("bytes_up").unwrap_or(0),
            u("bytes_down").unwrap_or(0),
            u("duration_us").unwrap_or(0) as f64 / 1e6,
            u("requests").unwrap_or(0),
            u("denied").unwrap_or(0),
            r.get("pcap").and_then(Value::as_str).map(|p| format!("{PCAP_DIR}/{p}")).unwrap_or_else(|| "-".into()),
            r.get("pcap_sha256").and_then(Value::as_str).unwrap_or("-")
        ),
        "anomaly" => format!("anomaly   {}: {}", s("kind"), s("detail")),
        other => other.to_string(),
    };
    format!("{ts}  {seq:>8}  {what}")
}

fn export_cmd(dir: &Path, session: &str, out: Option<&Path>) -> Result<(), String> {
    let (id, recs) = records(dir, session)?;
    let pcap_out = out.map_or_else(|| PathBuf::from(format!("session-{id}.pcapng")), Path::to_path_buf);
    let jsonl_out = pcap_out.with_extension("jsonl");
    // The latest capture of this id and the digest its close record holds.
    let summary: Option<SessionSummary> =
        verify::sessions(dir).map_err(|e| e.to_string())?.into_iter().rev().find(|s| s.session == id);
    let mut text = String::new();
    for r in &recs {
        text.push_str(&r.text);
        text.push('\n');
    }
    std::fs::write(&jsonl_out, text).map_err(|e| format!("{}: {e}", jsonl_out.display()))?;
    println!("{}: {} record(s) of session {id}", jsonl_out.display(), recs.len());
    match summary.as_ref().and_then(|s| s.pcap.clone()) {
        Some(name) => {
            let src = dir.join(PCAP_DIR).join(&name);
            std::fs::copy(&src, &pcap_out).map_err(|e| format!("{} -> {}: {e}", src.display(), pcap_out.display()))?;
            let bytes = std::fs::read(&pcap_out).map_err(|e| format!("{}: {e}", pcap_out.display()))?;
            let digest = sha256_hex(&bytes);
            let check = match summary.as_ref().and_then(|s| s.pcap_sha256.as_deref()) {
                Some(d) if d == digest => "matches its session-close record".to_string(),
                Some(d) => format!("DOES NOT match its session-close record ({d})"),
                None => "the session is not closed: no digest to compare".to_string(),
            };
            println!("{}: capture {name}, sha256 {digest} {check}", pcap_out.display());
            if summary.as_ref().and_then(|s| s.pcap_sha256.as_deref()).is_some_and(|d| d != digest) {
                return Err("the capture was changed after the session closed".into());
            }
        }
        None => println!("session {id} has no capture"),
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    // The control crate owns the hashing; a capture is small.
    control::audit::chain::hex(&control::audit::sha256(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transcript line never overflows on a record's numbers (found by a
    /// review: a debug build panicked on `address + count - 1`).
    #[test]
    fn a_transcript_line_takes_any_numbers() {
        let record = |address: u64, count: u64| {
            serde_json::json!({"event": "request", "table": "holding", "address": address, "count": count,
                "verdict": "allow", "ts": "t"})
            .as_object()
            .cloned()
            .unwrap()
        };
        assert!(transcript_line(&record(u64::MAX, 2)).contains(&format!("holding {}..={}", u64::MAX, u64::MAX)));
        assert!(transcript_line(&record(10, 3)).contains("holding 10..=12"));
    }
}
