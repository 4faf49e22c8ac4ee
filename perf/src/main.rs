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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Frames(args) => bench::frames::frames(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accessgate-perf: {e}");
            ExitCode::FAILURE
        }
    }
}
