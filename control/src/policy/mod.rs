//! The policy: who may do what, where and when, in the config file
//! operators review in git, compiled into the [`Policy`] the dp cores read.
//!
//! ```toml
//! [[role]]
//! name = "operator"
//!
//! [[schedule]]
//! name = "day-shift"
//! timezone = "Europe/Berlin"
//! windows = ["Mon-Fri 06:00-14:00", "Sun-Thu 22:00-06:00"]
//! holidays = ["2026-12-25"]
//!
//! [[rule]]
//! name = "operators-write-setpoints"
//! effect = "allow"                # or "deny"; deny wins, deny by default
//! roles = ["operator"]
//! assets = ["plc-7", "line3/*"]   # names, segment globs, "*"
//! protocol = "modbus"             # modbus, s7, dnp3, enip, tcp, any
//! operations = ["read", "write"]  # + program, control, diagnostic, connect, other
//! schedule = "day-shift"
//! max_session_secs = 3600
//! [rule.modbus]
//! units = [1]
//! functions = [3, 6, 16]          # default: every function of the operations
//! holding = ["100-199"]           # also coils, input, discrete
//! value_min = 0                   # register writes (6, 16, 23)
//! value_max = 1000
//! exception = 4                   # instead of 01 / 02 / 03
//! ```
//!
//! - [`ast`]: the tables as written and their validation (every error at
//!   once, `file:line:column`, with hints).
//! - [`schedule`]: windows and time zones into UTC intervals.
//! - [`compile`]: validated parts into a [`Policy`] for the horizon around
//!   now; [`refresh`] moves the horizon (the control thread calls it when
//!   [`Policy::needs_refresh`] says so, about once a day; no dp core ever
//!   does time-zone work).
//! - [`explain`]: the decision for one question, with the rule and window
//!   behind it (`accessgate policy explain`).
//!
//! Loading goes through [`crate::config::load`], which puts the compiled
//! policy into `Snapshot::policy`; [`load`] hands it out separately.

pub mod ast;
pub mod schedule;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use dataplane::policy::{
    Decision, Denial, Effect, ModbusDetail, Op, Permit, Policy, PolicyParts, Query, RuleId, RuleSpec, ScheduleSpec,
    Table, Window,
};
use dataplane::snapshot::Protocol;
pub use schedule::{format_time, parse_time};

use crate::config::{self, nearest, Config, ConfigErrors};

/// Reads `path`, validates it, compiles its policy for now.
///
/// # Errors
/// Every problem of the file, each with its position.
pub fn load(path: &Path) -> Result<(Config, Arc<Policy>), ConfigErrors> {
    let config = config::load(path)?;
    let policy = config.snapshot.policy.clone();
    Ok((config, policy))
}

/// Indexes validated parts and compiles their schedules for the horizon
/// around `now`.
pub fn compile(parts: PolicyParts, now: u64) -> Policy {
    let times = schedule::compile_times(&parts.schedules, now);
    Policy::build(parts, times)
}

/// `policy` with its schedules compiled for the horizon around `now`: the
/// same rules, roles and asset indices (sessions keep their resolved ids).
pub fn refresh(policy: &Policy, now: u64) -> Policy {
    policy.with_times(schedule::compile_times(policy.schedules(), now))
}

/// One question for [`explain`].
#[derive(Debug, Clone)]
pub struct Question<'a> {
    /// The user's roles (names).
    pub roles: &'a [String],
    pub asset: &'a str,
    /// The service; `None`: the asset's first.
    pub service: Option<&'a str>,
    pub op: Op,
    pub modbus: Option<ModbusDetail<'a>>,
    /// Unix seconds.
    pub at: u64,
}

/// The answer with its reasons.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub decision: Decision,
    pub at: u64,
    pub asset: String,
    pub service: String,
    pub protocol: Protocol,
    pub op: Op,
    /// Role names the policy does not define (they grant nothing).
    pub unknown_roles: Vec<String>,
    /// The rule that decided (or came closest), as compiled.
    pub rule: Option<RuleSpec>,
    /// Its schedule, if it has one.
    pub schedule: Option<ScheduleSpec>,
    /// The rule's window open at `at` (`end == u64::MAX`: always).
    pub window: Option<Window>,
    /// When the rule's schedule next opens, if it is closed at `at`.
    pub next_opening: Option<u64>,
    /// The compiled horizon `[start, end)` (windows outside it are not
    /// known).
    pub horizon: (u64, u64),
    /// The Modbus exception a denied request is answered with.
    pub exception: Option<u8>,
}

/// Decides `q` against `config`'s policy, compiled around `q.at`.
///
/// # Errors
/// The asset or service is not in the config (with a hint).
pub fn explain(config: &Config, q: &Question<'_>) -> Result<Explanation, String> {
    let snap = &config.snapshot;
    let endpoints: Vec<_> = snap.endpoints.iter().filter(|e| e.asset == q.asset).collect();
    if endpoints.is_empty() {
        let hint = nearest(q.asset, snap.endpoints.iter().map(|e| e.asset.as_str()))
            .map_or(String::new(), |n| format!(" (did you mean {n:?}?)"));
        return Err(format!("asset {:?} is not in the config{hint}", q.asset));
    }
    let endpoint = match q.service {
        None => endpoints[0],
        Some(s) => *endpoints.iter().find(|e| e.service == s).ok_or_else(|| {
            let names: Vec<&str> = endpoints.iter().map(|e| e.service.as_str()).collect();
            format!("asset {:?} has no service {s:?} (it has {})", q.asset, names.join(", "))
        })?,
    };
    let policy = refresh(&snap.policy, q.at);
    let roles = policy.role_ids(q.roles);
    let unknown_roles = q.roles.iter().filter(|r| !policy.roles.contains(r)).cloned().collect();
    let decision = match policy.asset_id(q.asset) {
        Some(asset) => policy.check(&Query {
            roles: &roles,
            asset,
            protocol: endpoint.protocol,
            op: q.op,
            modbus: q.modbus,
            now: q.at,
            // A question about no session: the rules' session limits are
            // shown, not applied.
            since: None,
        }),
        None => Decision::Deny(Denial::NoRule),
    };
    let rule_id = match decision {
        Decision::Permit(p) => Some(p.rule),
        Decision::Deny(d) => d.rule(),
    };
    let rule = rule_id.and_then(|r| policy.rule(r)).cloned();
    let schedule_id = rule.as_ref().and_then(|r| r.schedule);
    let schedule = schedule_id.and_then(|s| policy.schedules().get(s as usize)).cloned();
    let window = match (&rule, schedule_id) {
        (Some(_), Some(s)) => policy.window(s, q.at),
        (Some(_), None) => Some(Window { start: 0, end: u64::MAX }),
        (None, _) => None,
    };
    let next_opening = match window {
        None => schedule_id.and_then(|s| policy.next_opening(s, q.at)),
        Some(_) => None,
    };
    let exception = match (decision, q.modbus) {
        (Decision::Deny(d), Some(_)) => Some(policy.exception(d)),
        _ => None,
    };
    Ok(Explanation {
        decision,
        at: q.at,
        asset: endpoint.asset.clone(),
        service: endpoint.service.clone(),
        protocol: endpoint.protocol,
        op: q.op,
        unknown_roles,
        rule,
        schedule,
        window,
        next_opening,
        horizon: policy.horizon(),
        exception,
    })
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tz = self.schedule.as_ref().map(|s| s.timezone.as_str());
        let time = |t: u64| format_time(t, tz);
        match self.decision {
            Decision::Permit(_) => writeln!(f, "decision: permit")?,
            Decision::Deny(d) => {
                let why = match d {
                    Denial::NoRule => "no rule allows it (deny by default)",
                    Denial::DenyRule(_) => "a deny rule matches",
                    Denial::OutsideWindow(_) => "outside the rule's schedule",
                    Denial::AddressOutOfRange(_) => "address out of the rule's ranges",
                    Denial::ValueOutOfBounds(_) => "value out of the rule's bounds",
                    Denial::LimitReached(_) => "the rule's session or ticket limit has passed",
                };
                write!(f, "decision: deny: {why}")?;
                if let Some(e) = self.exception {
                    write!(f, "; Modbus exception {e:02}")?;
                }
                writeln!(f)?;
            }
        }
        writeln!(
            f,
            "request:  {} {}/{} ({}) at {}",
            self.op.as_str(),
            self.asset,
            self.service,
            self.protocol.as_str(),
            format_time(self.at, None)
        )?;
        if !self.unknown_roles.is_empty() {
            writeln!(f, "note:     roles not defined in the policy grant nothing: {}", self.unknown_roles.join(", "))?;
        }
        match &self.rule {
            None => writeln!(f, "rule:     none")?,
            Some(r) => {
                let ops: Vec<&str> = r.ops.iter().map(Op::as_str).collect();
                writeln!(f, "rule:     {:?} at {} ({} {})", r.name, r.origin, r.effect.as_str(), ops.join(", "))?;
            }
        }
        match (&self.schedule, &self.rule) {
            (_, None) => {}
            (None, Some(_)) => writeln!(f, "window:   always (the rule has no schedule)")?,
            (Some(s), Some(_)) => {
                let windows: Vec<String> = s.windows.iter().map(schedule::describe_window).collect();
                write!(f, "window:   schedule {:?} ({}; {})", s.name, s.timezone, windows.join(", "))?;
                let (from, to) = self.horizon;
                match (self.window, self.next_opening) {
                    (Some(w), _) if w.end == u64::MAX => writeln!(f, ": always open")?,
                    (Some(w), _) => {
                        let since = if w.start <= from { "before " } else { "" };
                        let until = if w.end >= to { "at least " } else { "" };
                        writeln!(f, ": open since {since}{}, {until}until {}", time(w.start), time(w.end))?;
                    }
                    (None, Some(t)) => writeln!(f, ": closed; opens next at {}", time(t))?,
                    (None, None) => writeln!(f, ": closed until after {}", time(to))?,
                }
            }
        }
        if let (Decision::Permit(_), Some(r)) = (self.decision, &self.rule) {
            if let Some(s) = r.max_session_secs {
                writeln!(f, "limit:    sessions last at most {s} s")?;
            }
            if let Some(s) = r.ticket_lifetime_secs {
                writeln!(f, "limit:    tickets at most {s} s old")?;
            }
        }
        Ok(())
    }
}

/// The spans and values of a Modbus request, as `policy explain` builds
/// them (borrowed by a [`ModbusDetail`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModbusRequest {
    pub read: Option<(Table, u16, u16)>,
    pub write: Option<(Table, u16, u16)>,
    /// Register values written, big-endian pairs.
    pub values: Vec<u8>,
}

/// The Modbus request `policy explain` describes: function, first address,
/// values (or a quantity).
///
/// # Errors
/// The function needs an address, or the span runs past 65535.
pub fn modbus_request(
    function: u8,
    address: Option<u16>,
    quantity: Option<u16>,
    values: &[u16],
) -> Result<ModbusRequest, String> {
    let count = quantity.unwrap_or_else(|| values.len().max(1) as u16);
    let span = |t: Table| -> Result<Option<(Table, u16, u16)>, String> {
        let a = address.ok_or_else(|| format!("function {function} needs --address"))?;
        if count == 0 || u32::from(a) + u32::from(count) > 65_536 {
            return Err(format!("{count} addresses from {a} run past 65535"));
        }
        Ok(Some((t, a, count)))
    };
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    let (read, write, values) = match function {
        1 => (span(Table::Coils)?, None, Vec::new()),
        2 => (span(Table::DiscreteInputs)?, None, Vec::new()),
        3 | 24 => (span(Table::HoldingRegisters)?, None, Vec::new()),
        4 => (span(Table::InputRegisters)?, None, Vec::new()),
        5 | 15 => (None, span(Table::Coils)?, Vec::new()),
        6 | 16 | 22 => (None, span(Table::HoldingRegisters)?, bytes),
        // Read and write the same registers.
        23 => (span(Table::HoldingRegisters)?, span(Table::HoldingRegisters)?, bytes),
        _ => (None, None, Vec::new()),
    };
    Ok(ModbusRequest { read, write, values })
}
