//! Table tests of the policy language: decisions (windows, overnight,
//! holidays, daylight-saving days, deny-wins, globs, Modbus detail,
//! connect) and validation (each error class, with its line).
//!
//! `Policy::check` must not allocate; that is kept obvious in its code
//! (slices, binary searches, a `Copy` accumulator) rather than tested here.

use std::sync::Arc;

use super::*;
use crate::config;
use dataplane::policy::Since;

const BASE: &str = r#"
[gate]
overlay = "100.64.0.0/16"
north_interface = "north0"
north_address = "198.18.0.1/24"

[[segment]]
name = "line3"
overlay = "100.64.3.0/24"
south_interface = "south0"
south_address = "198.19.3.1/24"

[[segment]]
name = "line4"
overlay = "100.64.4.0/24"
south_interface = "south1"
south_address = "198.19.4.1/24"

[[asset]]
name = "plc-7"
segment = "line3"
overlay = "100.64.3.7"
underlay = "198.19.3.7"
[[asset.service]]
name = "modbus"
protocol = "modbus"

[[asset]]
name = "plc-8"
segment = "line3"
overlay = "100.64.3.8"
underlay = "198.19.3.8"
[[asset.service]]
name = "modbus"
protocol = "modbus"

[[asset]]
name = "plc-41"
segment = "line4"
overlay = "100.64.4.41"
underlay = "198.19.4.41"
[[asset.service]]
name = "modbus"
protocol = "modbus"

[[asset]]
name = "hmi-4"
segment = "line4"
overlay = "100.64.4.4"
underlay = "198.19.4.4"
[[asset.service]]
name = "vnc"
protocol = "tcp"
port = 5900
asset_port = 5900
"#;

const POLICY: &str = r#"
[[role]]
name = "operator"
[[role]]
name = "viewer"
[[role]]
name = "engineer"
[[role]]
name = "night"
[[role]]
name = "guest"

[[schedule]]
name = "day"
timezone = "Europe/Berlin"
windows = ["Mon-Fri 06:00-14:00"]
holidays = ["2026-12-25"]

[[schedule]]
name = "nights"
timezone = "Europe/Berlin"
windows = ["Sun-Thu 22:00-06:00"]
holidays = ["2026-12-24"]

[[schedule]]
name = "berlin-sunday"
timezone = "Europe/Berlin"
windows = ["Sun 00:00-06:00"]

[[schedule]]
name = "chicago-sunday"
timezone = "America/Chicago"
windows = ["Sun 00:00-06:00"]

[[rule]]
name = "read-all"
roles = ["viewer", "operator"]
assets = ["*"]
protocol = "modbus"
operations = ["read"]

[[rule]]
name = "op-write-day"
roles = ["operator"]
assets = ["line3/*"]
protocol = "modbus"
operations = ["write"]
schedule = "day"
[rule.modbus]
units = [1]
holding = ["100-149", "150-199"]
coils = ["0-15"]
value_min = 0
value_max = 1000

[[rule]]
name = "night-write"
roles = ["night"]
assets = ["plc-7"]
protocol = "modbus"
operations = ["write"]
schedule = "nights"

[[rule]]
name = "dst-berlin"
roles = ["engineer"]
assets = ["plc-7"]
protocol = "modbus"
operations = ["diagnostic"]
schedule = "berlin-sunday"

[[rule]]
name = "dst-chicago"
roles = ["engineer"]
assets = ["plc-8"]
protocol = "modbus"
operations = ["diagnostic"]
schedule = "chicago-sunday"

[[rule]]
name = "no-writes-plc-8"
effect = "deny"
roles = ["operator"]
assets = ["plc-8"]
protocol = "modbus"
operations = ["write"]

[[rule]]
name = "engineer-program"
roles = ["engineer"]
assets = ["line4/plc-*"]
protocol = "modbus"
operations = ["program", "read"]
[rule.modbus]
functions = [20, 3]

[[rule]]
name = "guard-coils"
effect = "deny"
roles = ["operator"]
assets = ["plc-7"]
protocol = "modbus"
operations = ["write"]
[rule.modbus]
coils = ["8-15"]
exception = 4

[[rule]]
name = "hmi-read"
roles = ["viewer"]
assets = ["hmi-4"]
protocol = "any"
operations = ["read"]

[[rule]]
name = "vnc"
roles = ["operator"]
assets = ["hmi-4"]
protocol = "tcp"
operations = ["connect"]
max_session_secs = 3600
"#;

fn at(text: &str) -> u64 {
    parse_time(text).unwrap()
}

fn load(policy: &str, now: u64) -> Result<Config, ConfigErrors> {
    config::parse_at("p.toml", &format!("{BASE}{policy}"), now)
}

fn compiled() -> Arc<Policy> {
    load(POLICY, at("2026-11-30T00:00:00Z")).unwrap_or_else(|e| panic!("{e}")).snapshot.policy
}

/// A request: (function, table, first, count, values) or none.
type Modbus = Option<(u8, u8, Option<(Table, u16, u16)>, Option<(Table, u16, u16)>, &'static [u8])>;

fn decide(p: &Policy, roles: &[&str], asset: &str, op: Op, modbus: Modbus, when: &str) -> String {
    let now = at(when);
    let p = refresh(p, now);
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    let ids = p.role_ids(&roles);
    let protocol = if asset == "hmi-4" { Protocol::Tcp } else { Protocol::Modbus };
    let modbus =
        modbus.map(|(unit, function, read, write, values)| ModbusDetail { unit, function, read, write, values });
    let q = Query { roles: &ids, asset: p.asset_id(asset).unwrap(), protocol, op, modbus, now, since: None };
    let name = |r: RuleId| p.rules[r as usize].clone();
    match p.check(&q) {
        Decision::Permit(pm) if pm.until == u64::MAX => format!("permit {} always", name(pm.rule)),
        Decision::Permit(pm) => format!("permit {} until {}", name(pm.rule), format_time(pm.until, None)),
        Decision::Deny(d) => {
            let exception = if modbus.is_some() { format!(" {:02}", p.exception(d)) } else { String::new() };
            match d.rule() {
                Some(r) => format!("deny {} {}{exception}", d.as_str(), name(r)),
                None => format!("deny {}{exception}", d.as_str()),
            }
        }
    }
}

const HR: Table = Table::HoldingRegisters;

/// What, roles, asset, operation, Modbus detail, when, the expected answer.
type Case<'a> = (&'a str, &'a [&'a str], &'a str, Op, Modbus, &'a str, &'a str);

#[test]
fn decisions() {
    let p = compiled();
    let read = |first, count| -> Modbus { Some((1, 3, Some((HR, first, count)), None, &[])) };
    let write1 = |addr, values: &'static [u8]| -> Modbus { Some((1, 6, None, Some((HR, addr, 1)), values)) };
    let write16 =
        |addr, count, values: &'static [u8]| -> Modbus { Some((1, 16, None, Some((HR, addr, count)), values)) };
    let coil = |addr| -> Modbus { Some((1, 5, None, Some((Table::Coils, addr, 1)), &[0xff, 0])) };
    let diag: Modbus = Some((1, 8, None, None, &[]));
    let monday = "2026-11-30T10:00:00+01:00";
    #[rustfmt::skip]
    let table: &[Case] = &[
        // what, roles, asset, op, detail, when, expected
        ("viewer reads", &["viewer"], "plc-7", Op::Read, read(0, 10), monday, "permit read-all always"),
        ("viewer writes: no rule, 01", &["viewer"], "plc-7", Op::Write, write1(150, &[0, 42]), monday, "deny no_rule 01"),
        ("unknown role grants nothing", &["visitor"], "plc-7", Op::Read, read(0, 1), monday, "deny no_rule 01"),
        ("guest connects: no rule", &["guest"], "plc-7", Op::Connect, None, monday, "deny no_rule"),
        ("viewer connects through read-all", &["viewer"], "plc-7", Op::Connect, None, monday, "permit read-all always"),
        // Window edges: Mon-Fri 06:00-14:00 Berlin (UTC+1 in winter).
        ("window start is inclusive", &["operator"], "plc-7", Op::Write, write1(150, &[0, 42]), "2026-11-30T06:00:00+01:00", "permit op-write-day until 2026-11-30T13:00:00Z"),
        ("a second before the start", &["operator"], "plc-7", Op::Write, write1(150, &[0, 42]), "2026-11-30T05:59:59+01:00", "deny outside_window op-write-day 01"),
        ("last second of the window", &["operator"], "plc-7", Op::Write, write1(150, &[0, 42]), "2026-11-30T13:59:59+01:00", "permit op-write-day until 2026-11-30T13:00:00Z"),
        ("window end is exclusive", &["operator"], "plc-7", Op::Write, write1(150, &[0, 42]), "2026-11-30T14:00:00+01:00", "deny outside_window op-write-day 01"),
        ("Saturday", &["operator"], "plc-7", Op::Write, write1(150, &[0, 42]), "2026-12-05T10:00:00+01:00", "deny outside_window op-write-day 01"),
        ("the day before the holiday", &["operator"], "plc-7", Op::Write, write1(150, &[0, 42]), "2026-12-24T10:00:00+01:00", "permit op-write-day until 2026-12-24T13:00:00Z"),
        ("holiday (a Friday)", &["operator"], "plc-7", Op::Write, write1(150, &[0, 42]), "2026-12-25T10:00:00+01:00", "deny outside_window op-write-day 01"),
        // Modbus detail.
        ("ranges 100-149 and 150-199 merge", &["operator"], "plc-7", Op::Write, write16(140, 20, &[0, 1, 0, 2]), monday, "permit op-write-day until 2026-11-30T13:00:00Z"),
        ("address 200: 02", &["operator"], "plc-7", Op::Write, write1(200, &[0, 42]), monday, "deny address_out_of_range op-write-day 02"),
        ("span 195..204 leaves the range", &["operator"], "plc-7", Op::Write, write16(195, 10, &[]), monday, "deny address_out_of_range op-write-day 02"),
        ("value 1001 above the bound: 03", &["operator"], "plc-7", Op::Write, write16(100, 2, &[0, 5, 0x03, 0xE9]), monday, "deny value_out_of_bounds op-write-day 03"),
        ("values at the bounds", &["operator"], "plc-7", Op::Write, write16(100, 2, &[0, 0, 0x03, 0xE8]), monday, "permit op-write-day until 2026-11-30T13:00:00Z"),
        ("mask write escapes value bounds: refused", &["operator"], "plc-7", Op::Write, Some((1, 22, None, Some((HR, 100, 1)), &[])), monday, "deny value_out_of_bounds op-write-day 03"),
        ("unit 2 is not listed", &["operator"], "plc-7", Op::Write, Some((2, 6, None, Some((HR, 150, 1)), &[0, 1])), monday, "deny no_rule 01"),
        ("input registers are not listed", &["operator"], "plc-7", Op::Write, Some((1, 6, None, Some((Table::InputRegisters, 150, 1)), &[0, 1])), monday, "deny address_out_of_range op-write-day 02"),
        ("coil 3", &["operator"], "plc-7", Op::Write, coil(3), monday, "permit op-write-day until 2026-11-30T13:00:00Z"),
        ("coil 9: deny rule, exception override 04", &["operator"], "plc-7", Op::Write, coil(9), monday, "deny deny_rule guard-coils 04"),
        // Deny wins; it does not stop connections it does not name.
        ("deny wins over the segment's allow", &["operator"], "plc-8", Op::Write, write1(150, &[0, 42]), monday, "deny deny_rule no-writes-plc-8 01"),
        ("deny of writes leaves connect", &["operator"], "plc-8", Op::Connect, None, monday, "permit read-all always"),
        ("operator reads plc-8", &["operator"], "plc-8", Op::Read, read(0, 1), monday, "permit read-all always"),
        // Globs: line4/plc-* is plc-41, not hmi-4 nor line3.
        ("glob: program on plc-41", &["engineer"], "plc-41", Op::Program, Some((1, 20, None, None, &[])), monday, "permit engineer-program always"),
        ("glob: fc 3 listed", &["engineer"], "plc-41", Op::Read, read(0, 1), monday, "permit engineer-program always"),
        ("glob: fc 4 not listed", &["engineer"], "plc-41", Op::Read, Some((1, 4, Some((Table::InputRegisters, 0, 1)), None, &[])), monday, "deny no_rule 01"),
        ("glob does not reach line3", &["engineer"], "plc-7", Op::Read, read(0, 1), monday, "deny no_rule 01"),
        // Overnight: Sun-Thu 22:00-06:00, holiday 2026-12-24 (Thursday).
        ("overnight opens Sunday 22:00", &["night"], "plc-7", Op::Write, None, "2026-11-29T22:00:00+01:00", "permit night-write until 2026-11-30T05:00:00Z"),
        ("overnight still open Monday 05:59", &["night"], "plc-7", Op::Write, None, "2026-11-30T05:59:59+01:00", "permit night-write until 2026-11-30T05:00:00Z"),
        ("overnight closed Monday 06:00", &["night"], "plc-7", Op::Write, None, "2026-11-30T06:00:00+01:00", "deny outside_window night-write"),
        ("Thursday night runs into Friday", &["night"], "plc-7", Op::Write, None, "2026-12-04T03:00:00+01:00", "permit night-write until 2026-12-04T05:00:00Z"),
        ("no Friday night", &["night"], "plc-7", Op::Write, None, "2026-12-04T23:00:00+01:00", "deny outside_window night-write"),
        ("no Saturday small hours", &["night"], "plc-7", Op::Write, None, "2026-12-05T02:00:00+01:00", "deny outside_window night-write"),
        ("the holiday cuts the night before at midnight", &["night"], "plc-7", Op::Write, None, "2026-12-23T23:30:00+01:00", "permit night-write until 2026-12-23T23:00:00Z"),
        ("holiday small hours closed", &["night"], "plc-7", Op::Write, None, "2026-12-24T02:00:00+01:00", "deny outside_window night-write"),
        ("holiday evening closed", &["night"], "plc-7", Op::Write, None, "2026-12-24T23:00:00+01:00", "deny outside_window night-write"),
        ("the day after the holiday opens at midnight", &["night"], "plc-7", Op::Write, None, "2026-12-25T02:00:00+01:00", "permit night-write until 2026-12-25T05:00:00Z"),
        ("night connects during its window", &["night"], "plc-7", Op::Connect, None, "2026-11-29T23:00:00+01:00", "permit night-write until 2026-11-30T05:00:00Z"),
        ("night cannot connect by day", &["night"], "plc-7", Op::Connect, None, monday, "deny outside_window night-write"),
        // Europe/Berlin, 2026-03-29: 02:00 CET -> 03:00 CEST. Sun 00:00-06:00 is 5 h.
        ("Berlin spring: opens 23:00Z", &["engineer"], "plc-7", Op::Diagnostic, diag, "2026-03-28T23:00:00Z", "permit dst-berlin until 2026-03-29T04:00:00Z"),
        ("Berlin spring: not before", &["engineer"], "plc-7", Op::Diagnostic, diag, "2026-03-28T22:59:59Z", "deny outside_window dst-berlin 01"),
        ("Berlin spring: 05:59 CEST", &["engineer"], "plc-7", Op::Diagnostic, diag, "2026-03-29T03:59:59Z", "permit dst-berlin until 2026-03-29T04:00:00Z"),
        ("Berlin spring: 06:00 CEST closed", &["engineer"], "plc-7", Op::Diagnostic, diag, "2026-03-29T04:00:00Z", "deny outside_window dst-berlin 01"),
        // 2026-10-25: 03:00 CEST -> 02:00 CET. Sun 00:00-06:00 is 7 h.
        ("Berlin autumn: opens 22:00Z", &["engineer"], "plc-7", Op::Diagnostic, diag, "2026-10-24T22:00:00Z", "permit dst-berlin until 2026-10-25T05:00:00Z"),
        ("Berlin autumn: 05:59 CET", &["engineer"], "plc-7", Op::Diagnostic, diag, "2026-10-25T04:59:59Z", "permit dst-berlin until 2026-10-25T05:00:00Z"),
        ("Berlin autumn: 06:00 CET closed", &["engineer"], "plc-7", Op::Diagnostic, diag, "2026-10-25T05:00:00Z", "deny outside_window dst-berlin 01"),
        // America/Chicago, 2026-03-08: 02:00 CST -> 03:00 CDT; 2026-11-01: 02:00 CDT -> 01:00 CST.
        ("Chicago spring: opens 06:00Z", &["engineer"], "plc-8", Op::Diagnostic, diag, "2026-03-08T06:00:00Z", "permit dst-chicago until 2026-03-08T11:00:00Z"),
        ("Chicago spring: 06:00 CDT closed", &["engineer"], "plc-8", Op::Diagnostic, diag, "2026-03-08T11:00:00Z", "deny outside_window dst-chicago 01"),
        ("Chicago autumn: opens 05:00Z", &["engineer"], "plc-8", Op::Diagnostic, diag, "2026-11-01T05:00:00Z", "permit dst-chicago until 2026-11-01T12:00:00Z"),
        ("Chicago autumn: 05:59 CST", &["engineer"], "plc-8", Op::Diagnostic, diag, "2026-11-01T11:59:59Z", "permit dst-chicago until 2026-11-01T12:00:00Z"),
        ("Chicago autumn: 06:00 CST closed", &["engineer"], "plc-8", Op::Diagnostic, diag, "2026-11-01T12:00:00Z", "deny outside_window dst-chicago 01"),
        // Connect: protocol must match the service's.
        ("operator connects to the HMI", &["operator"], "hmi-4", Op::Connect, None, monday, "permit vnc always"),
        ("viewer's read-all is Modbus only", &["viewer"], "hmi-4", Op::Connect, None, monday, "deny no_rule"),
        ("raw TCP is all or nothing: read does not open it", &["viewer"], "hmi-4", Op::Connect, None, monday, "deny no_rule"),
        ("connect picks the longest window", &["operator"], "plc-7", Op::Connect, None, monday, "permit read-all always"),
    ];
    let mut failures = Vec::new();
    for (what, roles, asset, op, modbus, when, expected) in table {
        let got = decide(&p, roles, asset, *op, *modbus, when);
        if got != *expected {
            failures.push(format!("{what}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn granted_operations_and_rule_limits() {
    let p = refresh(&compiled(), at("2026-11-30T10:00:00+01:00"));
    let roles = p.role_ids(&["operator".to_string()]);
    let q = |asset: &str| Query {
        roles: &roles,
        asset: p.asset_id(asset).unwrap(),
        protocol: Protocol::Modbus,
        op: Op::Connect,
        modbus: None,
        now: at("2026-11-30T10:00:00+01:00"),
        since: None,
    };
    let ops = |asset| p.granted(&q(asset)).iter().map(Op::as_str).collect::<Vec<_>>();
    assert_eq!(ops("plc-7"), ["read", "write"]);
    assert_eq!(ops("plc-8"), ["read"], "the deny takes writes away");
    let vnc = p.rules.iter().position(|r| r == "vnc").unwrap() as RuleId;
    assert_eq!(p.rule(vnc).unwrap().max_session_secs, Some(3600));
}

#[test]
fn refresh_moves_the_horizon_and_keeps_indices() {
    let now = at("2026-11-30T00:00:00Z");
    let p = compiled();
    assert_eq!(p.horizon(), (now - 86_400, now + 8 * 86_400));
    assert!(!p.needs_refresh(now + 3600));
    assert!(p.needs_refresh(now + 86_400 + 1), "a day later fewer than seven days are left");
    assert!(p.needs_refresh(now - 86_400 - 1), "the clock went back before the horizon");
    let monday_in_a_month = at("2026-12-28T10:00:00+01:00");
    let later = refresh(&p, monday_in_a_month);
    assert_eq!(
        (later.roles.clone(), later.assets.clone(), later.rules.clone()),
        (p.roles.clone(), p.assets.clone(), p.rules.clone())
    );
    // Beyond the horizon a window counts as closed (fail safe) until refreshed.
    let roles = p.role_ids(&["operator".into()]);
    let q = Query {
        roles: &roles,
        asset: p.asset_id("plc-7").unwrap(),
        protocol: Protocol::Modbus,
        op: Op::Write,
        modbus: Some(ModbusDetail { unit: 1, function: 6, read: None, write: Some((HR, 150, 1)), values: &[0, 1] }),
        now: monday_in_a_month,
        since: None,
    };
    assert!(matches!(p.check(&q), Decision::Deny(Denial::OutsideWindow(_))));
    assert!(matches!(later.check(&q), Decision::Permit(_)));
}

#[test]
fn lab_policy() {
    let lab = include_str!("../../../config/lab.toml");
    let c = config::parse_at("lab.toml", lab, at("2026-11-29T12:00:00Z")).unwrap();
    let p = &c.snapshot.policy;
    let ask = |role: &str, op, function, addr, value: u16, when: &str| {
        let values = value.to_be_bytes();
        let roles = p.role_ids(&[role.to_string()]);
        let write = matches!(function, 5 | 6).then_some((if function == 5 { Table::Coils } else { HR }, addr, 1));
        let read = (function == 3).then_some((HR, addr, 1));
        let modbus = (op != Op::Connect).then_some(ModbusDetail { unit: 1, function, read, write, values: &values });
        let q = Query { roles: &roles, asset: 0, protocol: Protocol::Modbus, op, modbus, now: at(when), since: None };
        refresh(p, at(when)).check(&q)
    };
    let t = "2026-11-29T12:00:00Z";
    let permit = |d: Decision| matches!(d, Decision::Permit(_));
    assert!(permit(ask("operator", Op::Connect, 0, 0, 0, t)));
    assert!(permit(ask("viewer", Op::Connect, 0, 0, 0, t)));
    assert_eq!(ask("guest", Op::Connect, 0, 0, 0, t), Decision::Deny(Denial::NoRule));
    assert!(permit(ask("viewer", Op::Read, 3, 0, 0, t)));
    assert_eq!(ask("viewer", Op::Write, 6, 150, 42, t), Decision::Deny(Denial::NoRule));
    assert_eq!(
        ask("operator", Op::Write, 6, 150, 42, t),
        Decision::Permit(Permit { rule: 1, until: u64::MAX }),
        "the lab shift never closes"
    );
    assert_eq!(ask("operator", Op::Write, 6, 200, 42, t), Decision::Deny(Denial::AddressOutOfRange(1)));
    assert_eq!(ask("operator", Op::Write, 6, 160, 60000, t), Decision::Deny(Denial::ValueOutOfBounds(1)));
    assert_eq!(ask("operator", Op::Write, 5, 3, 0xff00, t), Decision::Deny(Denial::AddressOutOfRange(1)));
    assert_eq!(ask("operator", Op::Diagnostic, 8, 0, 0, t), Decision::Deny(Denial::NoRule));
    // Always open, whatever the season.
    assert!(permit(ask("operator", Op::Write, 6, 150, 42, "2026-03-29T01:30:00Z")));
}

/// A rule's `ticket_lifetime_secs` and `max_session_secs` hold for every
/// request it would permit, whichever rule let the session connect (found
/// by a review: a write rule requiring a fresh login was bypassed by a
/// session opened through the read rule, which has no limit).
#[test]
fn a_rules_session_limits_hold_per_request_whichever_rule_connected() {
    let write = "operations = [\"write\"]\nschedule = \"shift\"\n[rule.modbus]";
    let lab = include_str!("../../../config/lab.toml");
    assert_eq!(lab.matches(write).count(), 1);
    let limits = "ticket_lifetime_secs = 60\nmax_session_secs = 600\n[rule.modbus]";
    let text = lab.replace(write, &write.replace("[rule.modbus]", limits));
    let now = at("2026-11-29T12:00:00Z");
    let p = refresh(&config::parse_at("lab.toml", &text, now).unwrap().snapshot.policy, now);
    let roles = p.role_ids(&["operator".to_string()]);
    let values = 42u16.to_be_bytes();
    let ask = |op: Op, since: Option<Since>| {
        let (function, read, write) =
            if op == Op::Write { (6, None, Some((HR, 150, 1))) } else { (3, Some((HR, 150, 1)), None) };
        let modbus = Some(ModbusDetail { unit: 1, function, read, write, values: &values });
        p.check(&Query { roles: &roles, asset: 0, protocol: Protocol::Modbus, op, modbus, now, since })
    };
    let setpoints = 1;
    // A fresh ticket, a new session: the write is permitted until the
    // ticket is 60 s old.
    let fresh = Some(Since { granted: now - 10, ticket_issued: now - 10 });
    assert_eq!(ask(Op::Write, fresh), Decision::Permit(Permit { rule: setpoints, until: now + 50 }));
    // An hour-old ticket (the session connected through line3-read): no
    // write, reads go on.
    let old_ticket = Some(Since { granted: now - 10, ticket_issued: now - 3600 });
    assert_eq!(ask(Op::Write, old_ticket), Decision::Deny(Denial::LimitReached(setpoints)));
    assert!(matches!(ask(Op::Read, old_ticket), Decision::Permit(_)));
    // A fresh ticket but a session open for longer than max_session_secs.
    let long_session = Some(Since { granted: now - 601, ticket_issued: now - 30 });
    assert_eq!(ask(Op::Write, long_session), Decision::Deny(Denial::LimitReached(setpoints)));
    // `policy explain` asks about no session: the limits are not applied.
    assert!(matches!(ask(Op::Write, None), Decision::Permit(_)));
}

#[test]
fn example_configs_load() {
    for (name, text, rules) in [
        ("lab.toml", include_str!("../../../config/lab.toml"), 9),
        ("plant.toml", include_str!("../../../config/plant.toml"), 7),
    ] {
        let c = config::parse_at(name, text, at("2026-11-30T00:00:00Z")).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.snapshot.policy.rules.len(), rules, "{name}");
    }
}

#[test]
fn explain_names_the_rule_and_the_window() {
    let c = load(POLICY, at("2026-11-30T00:00:00Z")).unwrap();
    let roles = ["operator".to_string()];
    let q =
        |op, modbus, when: &str| Question { roles: &roles, asset: "plc-7", service: None, op, modbus, at: at(when) };
    let write =
        |addr| Some(ModbusDetail { unit: 1, function: 6, read: None, write: Some((HR, addr, 1)), values: &[0, 42] });
    let text = explain(&c, &q(Op::Write, write(150), "2026-12-01T10:00:00+01:00")).unwrap().to_string();
    assert!(text.starts_with("decision: permit\n"), "{text}");
    assert!(text.contains("rule:     \"op-write-day\" at p.toml:"), "{text}");
    assert!(text.contains("schedule \"day\" (Europe/Berlin; Mon-Fri 06:00-14:00): open since 2026-12-01T06:00:00+01:00, until 2026-12-01T14:00:00+01:00"), "{text}");
    let text = explain(&c, &q(Op::Write, write(200), "2026-12-01T10:00:00+01:00")).unwrap().to_string();
    assert!(text.contains("decision: deny: address out of the rule's ranges; Modbus exception 02"), "{text}");
    let text = explain(&c, &q(Op::Write, write(150), "2026-12-05T10:00:00+01:00")).unwrap().to_string();
    assert!(text.contains("closed; opens next at 2026-12-07T06:00:00+01:00"), "{text}");
    let text = explain(&c, &q(Op::Connect, None, "2026-12-05T10:00:00+01:00")).unwrap().to_string();
    assert!(text.contains("\"read-all\"") && text.contains("window:   always"), "{text}");
    let viewer = ["viewer".to_string(), "nobody".to_string()];
    let e = explain(&c, &Question { roles: &viewer, ..q(Op::Write, write(150), "2026-12-01T10:00:00+01:00") }).unwrap();
    assert_eq!(e.decision, Decision::Deny(Denial::NoRule));
    assert!(e.to_string().contains("rule:     none") && e.to_string().contains("grant nothing: nobody"), "{e}");
    assert!(explain(&c, &Question { asset: "plc-77", ..q(Op::Read, None, "2026-12-01T10:00:00Z") })
        .unwrap_err()
        .contains("did you mean \"plc-7\""));
}

/// Every error class of the policy, all in one file, each with its line.
#[test]
fn validation_reports_every_error_with_its_line() {
    let bad = r#"
[[role]]
name = "operator"
[[role]]
name = "viewer"

[[schedule]]
name = "day"
timezone = "Europe/Berln"                      # E-tz
windows = ["Mon-Fri 06:00-14:00", "Mon 06:00-06:00", "Mno 06:00-07:00"]   # E-window
holidays = ["2026-02-30"]                      # E-holiday

[[rule]]
name = "typos"
roles = ["operater"]                           # E-role
assets = ["plc-77", "line3/robot-*", "line9/*"] # E-asset
protocol = "modbus"
operations = ["read", "wirte"]                 # E-op
schedule = "dya"                               # E-schedule

[[rule]]
name = "ranges"
roles = ["operator"]
assets = ["plc-7"]
protocol = "modbus"
operations = ["read", "write"]
[rule.modbus]
units = [1, 300]                               # E-unit
functions = [3, 8]                             # E-function
holding = ["200-100", "0-70000", "100-199"]    # E-range
value_min = 500                                # E-values
value_max = 100

[[rule]]
name = "tcp-detail"
roles = ["operator"]
assets = ["plc-7"]
protocol = "tcp"                               # E-tcp-connect
operations = ["read"]
[rule.enip]                                    # E-detail-enip
tags = ["Line3_Speed"]

[[rule]]
name = "allow-writes"                          # E-shadowed
roles = ["viewer"]
assets = ["line3/*"]
protocol = "modbus"
operations = ["write"]

[[rule]]
name = "deny-writes"
effect = "deny"
roles = ["viewer", "operator"]
assets = ["*"]
protocol = "any"
operations = ["write", "program"]

[[rule]]
name = "read-twice"
roles = ["viewer"]
assets = ["plc-7", "plc-8"]
protocol = "modbus"
operations = ["read"]

[[rule]]
name = "read-again"                            # E-duplicate
roles = ["viewer"]
assets = ["plc-8", "plc-7"]
protocol = "modbus"
operations = ["read"]

[[rule]]
name = "limits"
effect = "deny"
roles = ["viewer"]
assets = ["plc-41"]
protocol = "modbus"
operations = ["write"]
max_session_secs = 600                         # E-deny-limit
"#;
    let text = format!("{BASE}{bad}");
    let errs = config::parse_at("p.toml", &text, at("2026-11-30T00:00:00Z")).unwrap_err();
    let all = errs.to_string();
    let line = |marker: &str| text.lines().position(|l| l.contains(marker)).unwrap_or_else(|| panic!("{marker}")) + 1;
    let expect = [
        ("E-tz", "time zone \"Europe/Berln\" is not in the time-zone database (did you mean \"Europe/Berlin\"?)"),
        ("E-window", "window \"Mon 06:00-06:00\" never opens"),
        ("E-window", "\"Mno\" is not a day (did you mean \"Mon\"?)"),
        ("E-holiday", "holiday \"2026-02-30\" is not a date"),
        ("E-role", "role \"operater\" is not defined (did you mean \"operator\"?)"),
        ("E-asset", "asset \"plc-77\" is not defined (did you mean \"plc-7\"?)"),
        ("E-asset", "\"line3/robot-*\" matches no asset"),
        ("E-asset", "segment \"line9\" is not defined (did you mean"),
        ("E-op", "unknown operation \"wirte\" (did you mean \"write\"?)"),
        ("E-schedule", "schedule \"dya\" is not defined (did you mean \"day\"?)"),
        ("E-unit", "unit id 300 is out of range 0..=255"),
        ("E-function", "function 8 (diagnostics) is a diagnostic operation; add \"diagnostic\""),
        ("E-range", "range \"200-100\" is reversed (did you mean \"100-200\"?)"),
        ("E-range", "address 70000 is above 65535"),
        ("E-values", "value_min 500 is above value_max 100"),
        ("E-tcp-connect", "protocol \"tcp\" is not inspected request by request"),
        ("E-detail-enip", "[rule.enip] is not supported yet"),
        ("E-shadowed", "rule \"allow-writes\" can never permit anything: deny rule \"deny-writes\""),
        ("E-duplicate", "rule \"read-again\" repeats rule \"read-twice\""),
        ("E-deny-limit", "a deny rule has nothing to limit"),
    ];
    let mut missing = Vec::new();
    for (marker, message) in expect {
        let want = format!("p.toml:{}:", line(marker));
        if !errs.0.iter().any(|e| e.to_string().starts_with(&want) && e.message.contains(message)) {
            missing.push(format!("{want} ... {message}"));
        }
    }
    assert!(missing.is_empty(), "missing:\n{}\n\ngot:\n{all}", missing.join("\n"));
    assert_eq!(errs.0.len(), expect.len(), "{all}");
}

#[test]
fn identical_scope_allow_and_deny_and_config_errors() {
    let pair = r#"
[[role]]
name = "viewer"
[[rule]]
name = "allow"
roles = ["viewer"]
assets = ["plc-7"]
operations = ["read"]
[[rule]]
name = "deny"                                  # the deny line
effect = "deny"
roles = ["viewer"]
assets = ["plc-7"]
operations = ["read"]
"#;
    let text = format!("{BASE}{pair}");
    let e = config::parse_at("p.toml", &text, 0).unwrap_err();
    let allow_line = text.lines().position(|l| l.contains("name = \"allow\"")).unwrap() + 1;
    let deny_line = text.lines().position(|l| l.contains("the deny line")).unwrap() + 1;
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(e.to_string().starts_with(&format!("p.toml:{allow_line}:")), "{e}");
    assert!(e.to_string().contains(&format!("deny rule \"deny\" (p.toml:{deny_line}) covers its whole scope")), "{e}");

    // A deny scoped to some registers does not shadow the allow.
    let scoped = r#"
[[role]]
name = "viewer"
[[rule]]
name = "allow"
roles = ["viewer"]
assets = ["plc-7"]
protocol = "modbus"
operations = ["read"]
[[rule]]
name = "deny-low-registers"
effect = "deny"
roles = ["viewer"]
assets = ["plc-7"]
protocol = "modbus"
operations = ["read"]
[rule.modbus]
holding = ["0-9"]
"#;
    assert!(load(scoped, 0).is_ok(), "{:?}", load(scoped, 0).err().map(|e| e.to_string()));

    // The service key `roles` is gone, with a pointer to rules.
    let old = BASE.replacen("protocol = \"modbus\"\n", "protocol = \"modbus\"\nroles = [\"operator\"]\n", 1);
    let e = config::parse_at("p.toml", &old, 0).unwrap_err();
    let line = old.lines().position(|l| l.starts_with("roles =")).unwrap() + 1;
    assert!(e.to_string().starts_with(&format!("p.toml:{line}:")), "{e}");
    assert!(e.to_string().contains("`roles` on a service is obsolete; write a [[rule]]"), "{e}");

    // Overlay addresses and endpoints are still checked beside the policy.
    let outside = format!("{BASE}{pair}").replace("overlay = \"100.64.3.8\"", "overlay = \"100.64.9.8\"");
    assert!(config::parse_at("p.toml", &outside, 0).unwrap_err().to_string().contains("outside its segment"));
}

#[test]
fn a_schedule_closed_by_holidays_for_the_horizon_is_a_warning() {
    let xmas = r#"
[[role]]
name = "viewer"
[[schedule]]
name = "fridays"
timezone = "Europe/Berlin"
windows = ["Fri 08:00-12:00"]
holidays = ["2026-12-25"]
[[rule]]
name = "friday-reads"
roles = ["viewer"]
assets = ["plc-7"]
operations = ["read"]
schedule = "fridays"
"#;
    let c = load(xmas, at("2026-12-22T12:00:00Z")).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert_eq!(
        c.warnings[0].line,
        format!("{BASE}{xmas}").lines().position(|l| l.contains("\"fridays\"")).unwrap() + 1
    );
    assert!(c.warnings[0].message.contains("schedule \"fridays\" stays closed from 2026-12-21"), "{}", c.warnings[0]);
    assert!(load(xmas, at("2026-11-30T12:00:00Z")).unwrap().warnings.is_empty());
    // A rule for a protocol none of its assets speaks loads, with a warning.
    let dnp3 = xmas.replace("operations = [\"read\"]", "protocol = \"dnp3\"\noperations = [\"connect\"]");
    let c = load(&dnp3, at("2026-11-30T12:00:00Z")).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].message.contains("none of its assets has a service with protocol \"dnp3\""),
        "{}",
        c.warnings[0]
    );
}

#[test]
fn schedules_parse() {
    use dataplane::policy::WeeklyWindow;
    let w = |d, s, e| WeeklyWindow { days: d, start: s, end: e };
    assert_eq!(schedule::parse_window("Mon-Fri 06:00-14:00"), Ok(w(0b001_1111, 360, 840)));
    assert_eq!(schedule::parse_window("Sun-Thu 22:00-06:00"), Ok(w(0b100_1111, 1320, 360)));
    assert_eq!(schedule::parse_window("Fri-Mon 00:00-24:00"), Ok(w(0b111_0001, 0, 1440)));
    assert_eq!(schedule::parse_window("sat,SUN 08:30-12:00"), Ok(w(0b110_0000, 510, 720)));
    assert_eq!(schedule::parse_window("daily 22:00-00:00"), Ok(w(0x7f, 1320, 1440)));
    for bad in ["Mon 06:00", "Mon 6-14", "Mon 25:00-26:00", "Mon 24:00-06:00", "Mon 06:00-06:00", "Xyz 06:00-07:00"] {
        assert!(schedule::parse_window(bad).is_err(), "{bad}");
    }
    let spec = |windows, holidays| ScheduleSpec { name: "s".into(), timezone: "UTC".into(), windows, holidays };
    assert!(schedule::always_open(&spec(vec![w(0x7f, 0, 1440)], vec![])));
    assert!(schedule::always_open(&spec(vec![w(0x7f, 720, 720 - 1), w(0x7f, 719, 720)], vec![])));
    assert!(!schedule::always_open(&spec(vec![w(0x7f, 0, 1440)], vec![(2026, 12, 25)])));
    assert!(!schedule::always_open(&spec(vec![w(0b011_1111, 0, 1440)], vec![])));
    assert_eq!(parse_time("2026-12-01T10:00:00+01:00"), Ok(1_796_115_600));
    assert_eq!(parse_time("2026-12-01T10:00[Europe/Berlin]"), Ok(1_796_115_600));
    assert_eq!(parse_time("2026-12-01T09:00:00Z"), Ok(1_796_115_600));
    assert_eq!(parse_time("@1796115600"), Ok(1_796_115_600));
    assert!(parse_time("tomorrow").is_err());
    for (text, described) in [
        ("Mon-Fri 06:00-14:00", "Mon-Fri 06:00-14:00"),
        ("Sun-Thu 22:00-06:00", "Sun-Thu 22:00-06:00"),
        ("Mon,Wed,Fri 08:00-09:00", "Mon,Wed,Fri 08:00-09:00"),
        ("Fri-Mon 00:00-24:00", "Fri-Mon 00:00-24:00"),
        ("daily 00:00-24:00", "Mon-Sun 00:00-24:00"),
        ("Sat 08:00-16:00", "Sat 08:00-16:00"),
        ("Mon,Tue,Thu,Sat,Sun 01:00-02:00", "Sat-Tue,Thu 01:00-02:00"),
    ] {
        assert_eq!(schedule::describe_window(&schedule::parse_window(text).unwrap()), described);
    }
}

/// Function 8's restart, listen-only and counter clears are `control`
/// (and 43's CANopen references `other`): a rule listing function 8 may
/// name `control` alone, and one that names neither of 8's operations is
/// still refused.
#[test]
fn a_function_validates_against_every_operation_it_can_be() {
    let rule = |ops: &str, functions: &str| {
        format!(
            "[[role]]\nname = \"maint\"\n[[rule]]\nname = \"r\"\nroles = [\"maint\"]\nassets = [\"plc-7\"]\n\
             protocol = \"modbus\"\noperations = [{ops}]\n[rule.modbus]\nfunctions = [{functions}]\n"
        )
    };
    load(&rule("\"control\"", "8"), 0).unwrap_or_else(|e| panic!("{e}"));
    load(&rule("\"other\"", "43"), 0).unwrap_or_else(|e| panic!("{e}"));
    let e = load(&rule("\"read\"", "8"), 0).unwrap_err().to_string();
    assert!(e.contains("function 8 (diagnostics) is a diagnostic operation"), "{e}");
    let e = load(&rule("\"control\"", "43"), 0).unwrap_err().to_string();
    assert!(e.contains("function 43"), "{e}");
}
