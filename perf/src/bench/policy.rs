//! `accessgate-perf policy`: what the policy costs at plant scale, on a
//! generated config of 10,000 assets and 100,000 rules (by default).
//!
//! - load: parse + validate + compile the whole file (what a reload costs
//!   the control thread; the dp cores keep the old snapshot meanwhile);
//! - refresh: schedules recompiled for a new horizon (once a day);
//! - check: `Policy::check` per request on one core, over a fixed set of
//!   queries (random asset, one or two roles, Modbus read or write with an
//!   address and values, a time within the horizon).
//!
//! Each is measured `--runs` times; medians are printed.

use std::hint::black_box;
use std::time::Instant;

use clap::Args;
use control::config;
use control::policy;
use dataplane::policy::{Decision, ModbusDetail, Op, Query, RoleId, Since, Table};
use dataplane::snapshot::Protocol;

use super::{build_profile, median, si};

/// Policy load and check costs.
#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// Assets (100 per segment).
    #[arg(long, default_value_t = 10_000)]
    assets: usize,
    /// Rules.
    #[arg(long, default_value_t = 100_000)]
    rules: usize,
    /// Roles.
    #[arg(long, default_value_t = 64)]
    roles: usize,
    /// Repetitions of each measurement (medians are printed).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Checks per repetition.
    #[arg(long, default_value_t = 2_000_000)]
    checks: usize,
}

/// A small deterministic generator (xorshift64*), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TIME_ZONES: [&str; 8] = [
    "Europe/Berlin",
    "America/Chicago",
    "Asia/Tokyo",
    "Europe/London",
    "America/Sao_Paulo",
    "Australia/Sydney",
    "Asia/Kolkata",
    "America/New_York",
];

/// The generated config: segments of 100 assets, roles, eight schedules in
/// as many time zones, and `rules` rules: per-asset reads and writes with
/// their own register ranges (most), segment-wide reads, name globs, a few
/// global diagnostics rules and deny rules on coils. It validates: no rule
/// repeats or is shadowed.
pub fn generate(assets: usize, rules: usize, roles: usize) -> String {
    use std::fmt::Write;
    let segments = assets.div_ceil(100);
    let mut t = String::with_capacity(rules * 160 + assets * 200);
    t.push_str(
        "[gate]\noverlay = \"100.64.0.0/16\"\nnorth_interface = \"north0\"\nnorth_address = \"198.18.0.1/24\"\n\n",
    );
    for k in 1..=segments {
        let _ = write!(
            t,
            "[[segment]]\nname = \"line{k}\"\noverlay = \"100.64.{k}.0/24\"\nsouth_interface = \"south0\"\nsouth_address = \"172.16.{k}.1/24\"\n\n"
        );
    }
    for a in 0..assets {
        let (k, j) = (a / 100 + 1, a % 100);
        let _ = write!(
            t,
            "[[asset]]\nname = \"plc-{k}-{j}\"\nsegment = \"line{k}\"\noverlay = \"100.64.{k}.{}\"\nunderlay = \"172.16.{k}.{}\"\n[[asset.service]]\nname = \"modbus\"\nprotocol = \"modbus\"\n\n",
            j + 1,
            j + 2
        );
    }
    for r in 0..roles {
        let _ = write!(t, "[[role]]\nname = \"role-{r}\"\n");
    }
    for (s, tz) in TIME_ZONES.iter().enumerate() {
        let _ = write!(
            t,
            "[[schedule]]\nname = \"shift-{s}\"\ntimezone = \"{tz}\"\nwindows = [\"Mon-Fri 06:00-14:00\", \"Mon-Fri 14:00-22:00\", \"Sun-Thu 22:00-06:00\"]\nholidays = [\"2026-12-25\", \"2027-01-01\"]\n\n"
        );
    }
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for i in 0..rules {
        let role = rng.below(roles);
        let role2 = (role + 1 + rng.below(roles - 1)) % roles;
        let kind = i % 100;
        // Distinct register ranges per rule keep every rule's scope unique.
        let base = (i / assets) * 40 % 60_000;
        let _ = write!(t, "[[rule]]\nname = \"r{i}\"\n");
        match kind {
            // Global diagnostics for two roles (rare).
            0 if i < 100 * 16 => {
                let _ = write!(
                    t,
                    "roles = [\"role-{role}\"]\nassets = [\"*\"]\nprotocol = \"modbus\"\noperations = [\"diagnostic\"]\n[rule.modbus]\nunits = [{}]\n",
                    i / 100 + 1
                );
            }
            // Deny rules on coils of one asset.
            1..=2 => {
                let _ = write!(
                    t,
                    "effect = \"deny\"\nroles = [\"role-{role}\"]\nassets = [\"plc-{}-{}\"]\nprotocol = \"modbus\"\noperations = [\"write\"]\n[rule.modbus]\ncoils = [\"{base}-{}\"]\n",
                    i % assets / 100 + 1,
                    i % 100,
                    base + 9
                );
            }
            // Segment-wide reads.
            3..=10 => {
                let (k, base) = (i / 100 % segments + 1, (i / 100 / segments * 8 + kind - 3) * 40 % 65_000);
                let _ = write!(
                    t,
                    "roles = [\"role-{role}\", \"role-{role2}\"]\nassets = [\"line{k}/*\"]\nprotocol = \"modbus\"\noperations = [\"read\"]\n[rule.modbus]\nholding = [\"{base}-{}\"]\ninput = [\"{base}-{}\"]\n",
                    base + 39,
                    base + 39
                );
            }
            // Name globs within a segment (plc-K-1, plc-K-10..19).
            11..=12 => {
                let (k, base) = (i / 100 % segments + 1, (i / 100 / segments * 2 + kind - 11) * 40 % 65_000);
                let _ = write!(
                    t,
                    "roles = [\"role-{role}\"]\nassets = [\"line{k}/plc-{k}-1*\"]\nprotocol = \"modbus\"\noperations = [\"write\"]\nschedule = \"shift-{}\"\n[rule.modbus]\nholding = [\"{base}-{}\"]\n",
                    rng.below(TIME_ZONES.len()),
                    base + 39
                );
            }
            // Per-asset writes (with a schedule and value bounds) and reads.
            _ => {
                let a = i % assets;
                let (k, j) = (a / 100 + 1, a % 100);
                if i % 2 == 0 {
                    let _ = write!(
                        t,
                        "roles = [\"role-{role}\"]\nassets = [\"plc-{k}-{j}\"]\nprotocol = \"modbus\"\noperations = [\"write\"]\nschedule = \"shift-{}\"\n[rule.modbus]\nunits = [1]\nholding = [\"{base}-{}\"]\nvalue_min = 0\nvalue_max = 1000\n",
                        rng.below(TIME_ZONES.len()),
                        base + 39
                    );
                } else {
                    let _ = write!(
                        t,
                        "roles = [\"role-{role}\", \"role-{role2}\"]\nassets = [\"plc-{k}-{j}\"]\nprotocol = \"modbus\"\noperations = [\"read\", \"write\"]\n[rule.modbus]\nholding = [\"{base}-{}\"]\n",
                        base + 39
                    );
                }
            }
        }
        t.push('\n');
    }
    t
}

/// Runs the benchmark and prints medians.
///
/// # Errors
/// The generated config does not load (a generator bug).
pub fn policy(args: &PolicyArgs) -> Result<(), String> {
    if args.roles < 2 || args.assets == 0 || args.assets > 25_400 || args.runs == 0 {
        return Err("need --roles >= 2, 1..=25400 assets and --runs >= 1".into());
    }
    let now = super::unix_time();
    let text = generate(args.assets, args.rules, args.roles);
    println!(
        "accessgate-perf policy ({} build): {} assets, {} rules, {} roles, {} schedules; {:.1} MB of TOML",
        build_profile(),
        args.assets,
        args.rules,
        args.roles,
        TIME_ZONES.len(),
        text.len() as f64 / 1e6
    );

    let mut loads = Vec::new();
    let mut cfg = None;
    for _ in 0..args.runs {
        let start = Instant::now();
        let c = config::parse_at("generated.toml", &text, now).map_err(|e| {
            let mut s = e.to_string();
            s.truncate(2000);
            s
        })?;
        loads.push(start.elapsed().as_secs_f64());
        cfg = Some(c);
    }
    let Some(cfg) = cfg else { return Err("no run".into()) };
    let p = cfg.snapshot.policy.clone();
    println!("load (parse + validate + compile): median {:.3} s  (runs: {})", median(&loads), list(&loads, 3));

    let mut refreshes = Vec::new();
    for i in 0..args.runs {
        let start = Instant::now();
        black_box(policy::refresh(&p, now + 86_400 * (i as u64 + 1)));
        refreshes.push(start.elapsed().as_secs_f64() * 1e3);
    }
    println!("refresh (schedules for a new horizon): median {:.2} ms", median(&refreshes));

    // The queries: prepared up front, so the loop only calls check().
    struct Q {
        roles: [RoleId; 2],
        n_roles: usize,
        asset: u32,
        op: Op,
        function: u8,
        address: u16,
        values: [u8; 4],
        now: u64,
    }
    let mut rng = Rng(0x0bad_cafe_f00d_0002);
    // Half at random (mostly denied by default), half aimed at a rule: its
    // role, its asset, an address inside its registers.
    let queries: Vec<Q> = (0..65_536)
        .map(|n| {
            let mut write = rng.below(2) == 0;
            let mut q = Q {
                roles: [rng.below(args.roles) as RoleId, rng.below(args.roles) as RoleId],
                n_roles: 1 + rng.below(2),
                asset: rng.below(args.assets) as u32,
                op: Op::Read,
                function: 3,
                address: (rng.below(2_000)) as u16,
                values: [0, rng.below(4) as u8, 0, 7],
                now: now - 3_600 + rng.below(7 * 86_400) as u64,
            };
            if n % 2 == 1 {
                if let Some(r) = p.rule(rng.below(p.rules.len()) as u32) {
                    q.roles[0] = r.roles[0];
                    q.asset = r.scope.assets.first().copied().unwrap_or(q.asset);
                    write = r.ops.contains(Op::Write);
                    let holding = r.modbus.as_ref().and_then(|m| m.tables[3].as_ref()).and_then(|t| t.first());
                    q.address = holding.map_or(q.address, |h| h.0 + 3);
                }
            }
            if write {
                (q.op, q.function) = (Op::Write, 16);
            }
            q
        })
        .collect();
    fn ask(q: &Q) -> Query<'_> {
        let span = Some((Table::HoldingRegisters, q.address, 2));
        let (read, write) = if q.op == Op::Write { (None, span) } else { (span, None) };
        Query {
            roles: &q.roles[..q.n_roles],
            asset: q.asset,
            protocol: Protocol::Modbus,
            op: q.op,
            modbus: Some(ModbusDetail { unit: 1, function: q.function, read, write, values: &q.values }),
            now: q.now,
            // As a session asks.
            since: Some(Since { granted: q.now, ticket_issued: q.now }),
        }
    }
    let permits = queries.iter().filter(|q| matches!(p.check(&ask(q)), Decision::Permit(_))).count();
    let mut per_check = Vec::new();
    for _ in 0..args.runs {
        let start = Instant::now();
        for i in 0..args.checks {
            let q = &queries[i & (queries.len() - 1)];
            black_box(p.check(black_box(&ask(q))));
        }
        per_check.push(start.elapsed().as_nanos() as f64 / args.checks as f64);
    }
    println!(
        "check, random queries: median {:.1} ns/request ({} checks/s on one core; runs: {}); {:.0}% permitted",
        median(&per_check),
        si(1e9 / median(&per_check)),
        list(&per_check, 1),
        permits as f64 * 100.0 / queries.len() as f64
    );
    // One session's stream: the same user and asset, reads and writes
    // (what a dp core sees per connection; the tables stay in cache).
    let Some(aimed) = queries.iter().skip(1).step_by(2).find(|q| matches!(p.check(&ask(q)), Decision::Permit(_)))
    else {
        return Err("no permitted query to build a session from".into());
    };
    let session: Vec<Q> = (0..64u16)
        .map(|i| Q {
            roles: aimed.roles,
            n_roles: aimed.n_roles,
            asset: aimed.asset,
            op: if i % 4 == 0 { Op::Write } else { Op::Read },
            function: if i % 4 == 0 { 16 } else { 3 },
            address: aimed.address.wrapping_add(i % 8),
            values: aimed.values,
            now: aimed.now,
        })
        .collect();
    let mut per_session_check = Vec::new();
    for _ in 0..args.runs {
        let start = Instant::now();
        for i in 0..args.checks {
            black_box(p.check(black_box(&ask(&session[i & 63]))));
        }
        per_session_check.push(start.elapsed().as_nanos() as f64 / args.checks as f64);
    }
    println!(
        "check, one session's requests: median {:.1} ns/request (runs: {})",
        median(&per_session_check),
        list(&per_session_check, 1)
    );
    Ok(())
}

fn list(xs: &[f64], digits: usize) -> String {
    xs.iter().map(|x| format!("{x:.digits$}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_policy_loads() {
        let text = generate(250, 2_000, 8);
        let c = config::parse_at("generated.toml", &text, 1_796_115_600).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.snapshot.policy.rules.len(), 2_000);
        assert_eq!(c.snapshot.policy.assets.len(), 250);
    }
}
