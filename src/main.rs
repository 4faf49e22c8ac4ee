//! `accessgate`: parse arguments and config, pin cores, spawn, wait.
#![forbid(unsafe_code)]

mod access;
mod audit_cmd;
mod demo;
mod logger;
mod policy_cmd;
mod run;
mod user;

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
    Run(Box<run::RunArgs>),
    /// The lab story in one process on memory links (no root, no NIC).
    Demo(demo::DemoArgs),
    /// Log in at the gate (password + TOTP) and store a short-lived ticket.
    Login(access::LoginArgs),
    /// Open a local port that carries connections to an asset through the gate.
    Connect(access::ConnectArgs),
    /// Manage users (secrets file): add, list, disable, enable, reset-totp, passwd.
    User(user::UserArgs),
    /// Validate the policy, or explain one decision (rule and window).
    Policy(policy_cmd::PolicyArgs),
    /// Verify, list, show and export the audit trail.
    Audit(audit_cmd::AuditArgs),
    /// Lab certificates: a CA and a gate certificate it signs.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
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
enum CertCommand {
    /// Write ca.crt, gate.crt and gate.key (0600) into DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Names in the gate certificate (DNS names or IP addresses).
        #[arg(long = "name", default_values = ["gate.lab", "100.64.0.1"])]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Counters summed over cores, as JSON.
    Stats,
    /// Re-read the config file; a bad file keeps the running config.
    Reload,
    /// Revoke every ticket of a user (their next session is refused).
    Revoke { user: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init();
    match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Demo(args) => demo::demo(&args),
        Command::Login(args) => access::login(&args),
        Command::Audit(args) => audit_cmd::audit(&args),
        Command::Policy(args) => policy_cmd::policy(&args),
        Command::User(args) => user::user(&args),
        Command::Connect(args) => access::connect(&args),
        Command::Cert { command: CertCommand::Init { dir, names } } => {
            match control::pki::generate(&names).and_then(|p| control::pki::write(&dir, &p).map_err(|e| e.to_string()))
            {
                Ok(()) => {
                    println!("wrote {0}/ca.crt, {0}/gate.crt, {0}/gate.key for {1}", dir.display(), names.join(", "));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("accessgate cert init: {e}");
                    ExitCode::FAILURE
                }
            }
        }
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
                CtlCommand::Stats => "stats".to_string(),
                CtlCommand::Reload => "reload".to_string(),
                CtlCommand::Revoke { user } => format!("revoke {user}"),
            };
            match control::api::request(&socket, &cmd) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_fsync_interval_is_bounded_and_reaches_the_writer() {
        let run = |v: &str| {
            Cli::try_parse_from(["accessgate", "run", "--config", "gate.toml", &format!("--audit-fsync-ms={v}")])
        };
        for bad in ["0", "1001", "-5", "fast", ""] {
            let e = run(bad).err().unwrap_or_else(|| panic!("{bad} was accepted")).to_string();
            assert!(e.contains("--audit-fsync-ms"), "{bad}: {e}");
        }
        let Ok(Cli { command: Command::Run(args) }) = run("500") else { panic!("500 was refused") };
        assert_eq!(run::audit_config(&args).fsync_interval_ms, 500);
        let Ok(Cli { command: Command::Run(args) }) =
            Cli::try_parse_from(["accessgate", "run", "--config", "gate.toml"])
        else {
            panic!("defaults were refused")
        };
        assert_eq!(
            run::audit_config(&args),
            control::audit::AuditConfig {
                dir: "/var/lib/accessgate/audit".into(),
                ..control::audit::AuditConfig::default()
            }
        );
        assert!(run::audit_config(&args).pcap, "captures are on by default");
    }

    #[test]
    fn audit_captures_can_be_turned_off_and_nothing_else() {
        let run = |v: &str| Cli::try_parse_from(["accessgate", "run", "--config", "gate.toml", "--audit-pcap", v]);
        for bad in ["no", "false", "0", ""] {
            let e = run(bad).err().unwrap_or_else(|| panic!("{bad:?} was accepted")).to_string();
            assert!(e.contains("--audit-pcap"), "{bad}: {e}");
        }
        for (v, pcap) in [("on", true), ("off", false)] {
            let Ok(Cli { command: Command::Run(args) }) = run(v) else { panic!("{v} was refused") };
            assert_eq!(run::audit_config(&args).pcap, pcap, "{v}");
        }
    }
}
