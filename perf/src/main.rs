//! `accessgate-perf`: Access Gate's benchmarks.
//!
//! `accessgate-perf frames` measures per-core frame rates on the memory
//! backend (drop path, proxy path, classifier micro) and writes a JSON result
//! to `perf/results/`. See `perf/README.md`.
#![forbid(unsafe_code)]

mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "accessgate-perf", about = "Access Gate benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Frames per second per core on the memory backend: drop path, proxy
    /// path and the classifier, measured in the same run.
    Frames(bench::frames::FramesArgs),
    /// TLS 1.3 handshakes per second against a TLS server (closed loop, full
    /// or resumed), and `tls report` to compare servers side by side.
    Tls(bench::tls::TlsArgs),
    /// Policy load (parse + validate + compile) and per-request check cost
    /// on a generated policy (10,000 assets, 100,000 rules).
    Policy(bench::policy::PolicyArgs),
    /// Audit records per second the writer sustains (JSONL chain, fsync,
    /// pcapng per session).
    Audit(bench::audit::AuditArgs),
    /// Request latency through the whole in-memory dataplane: as is, with 10
    /// policy reloads per second, and with the audit trail on (same run).
    Latency(bench::latency::LatencyArgs),
    /// Modbus request latency at a fixed open-loop rate over N sessions
    /// (gate, TLS proxy or direct), HdrHistogram percentiles, sweeps; and
    /// `load report` to compare targets.
    Load(bench::load::LoadArgs),
    /// Modbus parse + policy verdict cost per request (the inspector alone).
    Inspect(bench::inspect::InspectArgs),
    /// How late a thread sleeping on one CPU runs after another CPU wakes
    /// it: the machine's floor under every proxy's tail.
    Wake(bench::wake::WakeArgs),
    /// What one dp pass costs when it carries a single frame, with the
    /// caches warm and with them cleared first (as after a sleep).
    Pass(bench::pass::PassArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Frames(args) => bench::frames::frames(args),
        Command::Tls(args) => bench::tls::tls(args),
        Command::Policy(args) => bench::policy::policy(args),
        Command::Audit(args) => bench::audit::audit(args),
        Command::Latency(args) => bench::latency::latency(args),
        Command::Load(args) => bench::load::load(args),
        Command::Inspect(args) => bench::inspect::inspect(args),
        Command::Wake(args) => bench::wake::wake(args),
        Command::Pass(args) => bench::pass::pass(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accessgate-perf: {e}");
            ExitCode::FAILURE
        }
    }
}
