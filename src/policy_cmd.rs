//! `accessgate policy check|explain`: validate a policy file, and ask it
//! one question with the rule and the window behind the answer.
//!
//! `check` prints every error with `file:line:column` and exits 1, or a
//! summary (and any warnings) and exits 0. `explain` takes the user's roles
//! from the secrets file (or `--role`), the asset, the operation and the
//! time, and for Modbus optionally the function, address and values; it
//! prints the decision, the rule and the window and exits 0 for a permit,
//! 1 for a denial, 2 when the question cannot be asked.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use control::identity::users::{UserDb, DEFAULT_SECRETS};
use control::policy::{self, Decision, ModbusDetail, Op, Question};

/// Validate the policy, or explain one decision.
#[derive(Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Validate a config file with its policy: every error with
    /// file:line:column; exit 0 or 1.
    Check {
        /// The config file (gate, segments, assets, roles, schedules, rules).
        file: PathBuf,
    },
    /// Decide one request and show the rule and the window behind it
    /// (exit 0 permit, 1 deny, 2 error).
    Explain(ExplainArgs),
}

#[derive(Args, Debug)]
struct ExplainArgs {
    /// The config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The user whose roles to use (from --secrets).
    #[arg(long, required_unless_present = "roles", conflicts_with = "roles")]
    user: Option<String>,
    /// The secrets file holding the user.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_SECRETS)]
    secrets: PathBuf,
    /// Roles to ask for instead of a user's (repeat for several).
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
    /// The asset.
    #[arg(long)]
    asset: String,
    /// The asset's service (default: its first).
    #[arg(long)]
    service: Option<String>,
    /// read, write, program, control, diagnostic, connect or other
    /// (default: what --function does, else connect).
    #[arg(long, value_parser = parse_op)]
    op: Option<Op>,
    /// When: 2026-12-01T10:00:00+01:00, 2026-12-01T09:00:00Z,
    /// 2026-12-01T10:00[Europe/Berlin] or @UNIX (default: now).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Modbus unit id.
    #[arg(long, default_value_t = 1)]
    unit: u8,
    /// Modbus function code.
    #[arg(long)]
    function: Option<u8>,
    /// First Modbus address the function reads or writes.
    #[arg(long)]
    address: Option<u16>,
    /// Number of coils or registers (default: the number of values, or 1).
    #[arg(long)]
    quantity: Option<u16>,
    /// A register value written (repeat for several).
    #[arg(long = "value")]
    values: Vec<u16>,
}

fn parse_op(text: &str) -> Result<Op, String> {
    Op::from_name(text)
        .ok_or_else(|| format!("{text:?}: expected read, write, program, control, diagnostic, connect or other"))
}

/// Runs `accessgate policy ...`.
pub fn policy(args: &PolicyArgs) -> ExitCode {
    match &args.command {
        PolicyCommand::Check { file } => check(file),
        PolicyCommand::Explain(a) => match explain(a) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("accessgate policy explain: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn check(file: &Path) -> ExitCode {
    match control::config::load(file) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            let p = &c.snapshot.policy;
            println!(
                "{}: ok ({} segments, {} endpoints; {} roles, {} schedules, {} rules)",
                file.display(),
                c.snapshot.segments.len(),
                c.snapshot.endpoints.len(),
                p.roles.len(),
                p.schedules().len(),
                p.rules.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s)", errors.0.len());
            ExitCode::FAILURE
        }
    }
}

/// Prints the explanation; `Ok(true)` for a permit.
fn explain(a: &ExplainArgs) -> Result<bool, String> {
    let at = match &a.at {
        Some(t) => policy::parse_time(t)?,
        None => control::identity::unix_now(),
    };
    let config = control::config::load(&a.config).map_err(|e| format!("{} has errors:\n{e}", a.config.display()))?;
    let (who, roles) = match &a.user {
        Some(name) => {
            let db = UserDb::load(&a.secrets).map_err(|e| e.to_string())?;
            let user = db.get(name).ok_or_else(|| format!("user {name:?} is not in {}", a.secrets.display()))?;
            if user.disabled {
                println!("note:     user {name:?} is disabled: the gate refuses their logins and tickets");
            }
            (format!("{name} (roles {})", user.roles.join(",")), user.roles.clone())
        }
        None => (format!("roles {}", a.roles.join(",")), a.roles.clone()),
    };
    let function_op = a.function.map(|f| policy::ast::modbus_function(f).0);
    let op = a.op.or(function_op).unwrap_or(Op::Connect);
    if let (Some(f), Some(fop)) = (a.function, function_op) {
        if fop != op {
            println!(
                "note:     function {f} is a {} request; the gate would ask about {}, not {}",
                fop.as_str(),
                fop.as_str(),
                op.as_str()
            );
        }
    }
    let request = a.function.map(|f| policy::modbus_request(f, a.address, a.quantity, &a.values)).transpose()?;
    let modbus = a.function.zip(request.as_ref()).map(|(function, r)| ModbusDetail {
        unit: a.unit,
        function,
        read: r.read,
        write: r.write,
        values: &r.values,
    });
    let q = Question { roles: &roles, asset: &a.asset, service: a.service.as_deref(), op, modbus, at };
    let e = policy::explain(&config, &q)?;
    print!("{e}");
    println!("asked as: {who}");
    Ok(matches!(e.decision, Decision::Permit(_)))
}
