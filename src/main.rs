//! `accessgate`: parse arguments and config, pin cores, spawn, wait.
#![forbid(unsafe_code)]

mod demo;
mod logger;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Access Gate: an identity-aware proxy appliance in front of OT assets.
#[derive(Parser)]
#[command(name = "accessgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gate on real interfaces (AF_XDP or AF_PACKET).
    Run(run::RunArgs),
    /// The lab story in one process on memory links (no root, no NIC).
    Demo(demo::DemoArgs),
    /// Validate a config file: every error with file:line:column; exit 0 or 1.
    Check {
        /// The config file.
        config: PathBuf,
    },
    /// Talk to a running gate over its management socket.
    Ctl {
        /// The gate's management socket (`run --ctl`).
        #[arg(long, default_value = run::DEFAULT_CTL)]
        socket: PathBuf,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Counters summed over cores, as JSON.
    Stats,
    /// Re-read the config file; a bad file keeps the running config.
    Reload,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init();
    match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Demo(args) => demo::demo(&args),
        Command::Check { config } => match control::config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} segments, {} endpoints, interfaces {})",
                    config.display(),
                    c.snapshot.segments.len(),
                    c.snapshot.endpoints.len(),
                    c.interfaces.join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} error(s)", errors.0.len());
                ExitCode::FAILURE
            }
        },
        Command::Ctl { socket, command } => {
            let cmd = match command {
                CtlCommand::Stats => "stats",
                CtlCommand::Reload => "reload",
            };
            match control::api::request(&socket, cmd) {
                Ok(answer) => {
                    print!("{answer}");
                    if answer.starts_with("error") {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("accessgate ctl: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
