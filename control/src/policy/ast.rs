//! The policy part of the config file as written — `[[role]]`,
//! `[[schedule]]`, `[[rule]]` with their spans — and its validation into
//! the name-resolved [`PolicyParts`] that `Policy::build` indexes.
//!
//! Validation reports every problem at once through the config's error
//! list (`file:line:column`, the thing named, a hint). Beyond names and
//! ranges it refuses rules that can never decide anything: a rule that
//! repeats an earlier one's scope and effect, and an allow rule whose whole
//! scope a deny rule covers (deny wins, so the allow is dead).

use std::collections::HashMap;
use std::ops::Range;

use dataplane::policy::{
    merge_ranges, AssetScope, ByteSet, Effect, ModbusScope, Op, OpSet, PolicyParts, RoleId, RuleSpec, ScheduleSpec,
    Table,
};
use dataplane::snapshot::Protocol;
use serde::Deserialize;
use toml::Spanned;

use super::schedule;
use crate::config::{check_name, nearest, Errors};

/// `[[role]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRole {
    name: Spanned<String>,
    #[allow(dead_code)]
    description: Option<Spanned<String>>,
}

/// `[[schedule]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    name: Spanned<String>,
    #[allow(dead_code)]
    description: Option<Spanned<String>>,
    timezone: Spanned<String>,
    windows: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    holidays: Vec<Spanned<String>>,
}

/// `[[rule]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    name: Option<Spanned<String>>,
    #[allow(dead_code)]
    description: Option<Spanned<String>>,
    effect: Option<Spanned<String>>,
    roles: Option<Vec<Spanned<String>>>,
    assets: Option<Vec<Spanned<String>>>,
    protocol: Option<Spanned<String>>,
    operations: Option<Vec<Spanned<String>>>,
    schedule: Option<Spanned<String>>,
    max_session_secs: Option<Spanned<i64>>,
    ticket_lifetime_secs: Option<Spanned<i64>>,
    modbus: Option<Spanned<RawModbus>>,
    s7: Option<Spanned<toml::Value>>,
    dnp3: Option<Spanned<toml::Value>>,
    enip: Option<Spanned<toml::Value>>,
}

/// `[rule.modbus]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModbus {
    units: Option<Vec<Spanned<i64>>>,
    functions: Option<Vec<Spanned<i64>>>,
    coils: Option<Vec<Spanned<toml::Value>>>,
    discrete: Option<Vec<Spanned<toml::Value>>>,
    input: Option<Vec<Spanned<toml::Value>>>,
    holding: Option<Vec<Spanned<toml::Value>>>,
    value_min: Option<Spanned<i64>>,
    value_max: Option<Spanned<i64>>,
    exception: Option<Spanned<i64>>,
}

/// What the rest of the config defines, for resolving rule names.
pub(crate) struct Inventory {
    /// Segment names by index.
    pub segments: Vec<String>,
    /// Assets by policy index: name, segment (`None` if it failed to
    /// validate), protocols of its services as a [`proto_bit`] mask.
    pub assets: Vec<(String, Option<u32>, u8)>,
}

/// The validated policy, ready to compile.
pub(crate) struct Validated {
    pub parts: PolicyParts,
    /// Span of each schedule's name, for warnings after compilation.
    pub schedule_spans: Vec<Range<usize>>,
}

/// A bit per protocol, for "does any asset in scope speak it".
pub(crate) fn proto_bit(p: Protocol) -> u8 {
    match p {
        Protocol::Modbus => 1,
        Protocol::S7 => 2,
        Protocol::Dnp3 => 4,
        Protocol::Enip => 8,
        Protocol::Tcp => 16,
    }
}

/// Modbus exception codes a rule may answer with (Modbus Application
/// Protocol 1.1b3 §7).
const EXCEPTION_CODES: [i64; 9] = [1, 2, 3, 4, 5, 6, 8, 10, 11];

/// The operation class and name of a function code, as the inspector
/// classifies it (`dataplane::wire::modbus::Request::access`).
pub fn modbus_function(f: u8) -> (Op, &'static str) {
    match f {
        1 => (Op::Read, "read coils"),
        2 => (Op::Read, "read discrete inputs"),
        3 => (Op::Read, "read holding registers"),
        4 => (Op::Read, "read input registers"),
        5 => (Op::Write, "write single coil"),
        6 => (Op::Write, "write single register"),
        7 => (Op::Diagnostic, "read exception status"),
        8 => (Op::Diagnostic, "diagnostics"),
        11 => (Op::Diagnostic, "get comm event counter"),
        12 => (Op::Diagnostic, "get comm event log"),
        15 => (Op::Write, "write multiple coils"),
        16 => (Op::Write, "write multiple registers"),
        17 => (Op::Diagnostic, "report server id"),
        20 => (Op::Program, "read file record"),
        21 => (Op::Program, "write file record"),
        22 => (Op::Write, "mask write register"),
        23 => (Op::Write, "read/write multiple registers"),
        24 => (Op::Read, "read FIFO queue"),
        43 => (Op::Diagnostic, "encapsulated interface transport"),
        _ => (Op::Other, "user-defined or unassigned"),
    }
}

/// Every operation a request of Modbus function `f` can be: its
/// [`modbus_function`] one, and for diagnostics (8) restart, listen-only
/// and the counter clears as `control` and unnamed sub-functions as
/// `other`, and for the encapsulated interface (43) CANopen general
/// references as `other` (the dataplane's `Request::access`).
pub fn modbus_function_ops(f: u8) -> &'static [Op] {
    match f {
        8 => &[Op::Diagnostic, Op::Control, Op::Other],
        43 => &[Op::Diagnostic, Op::Other],
        _ => match modbus_function(f).0 {
            Op::Read => &[Op::Read],
            Op::Write => &[Op::Write],
            Op::Diagnostic => &[Op::Diagnostic],
            Op::Program => &[Op::Program],
            _ => &[Op::Other],
        },
    }
}

/// Validates the policy tables against `inv`. Problems go to `err`.
pub(crate) fn validate(
    file: &str,
    inv: &Inventory,
    raw_roles: &[Spanned<RawRole>],
    raw_schedules: &[Spanned<RawSchedule>],
    raw_rules: &[Spanned<RawRule>],
    err: &mut Errors<'_>,
) -> Validated {
    let mut roles: Vec<String> = Vec::new();
    let mut role_index: HashMap<String, (RoleId, usize)> = HashMap::new();
    for r in raw_roles {
        let name = &r.get_ref().name;
        if !check_name(err, "role", name) {
            continue;
        }
        if let Some((_, line)) = role_index.get(name.get_ref()) {
            err.at(name.span(), format!("role {:?} is defined twice (first at line {line})", name.get_ref()));
            continue;
        }
        if roles.len() >= usize::from(RoleId::MAX) {
            err.at(name.span(), "too many roles (at most 65535)");
            continue;
        }
        role_index.insert(name.get_ref().clone(), (roles.len() as RoleId, err.line(name.span().start)));
        roles.push(name.get_ref().clone());
    }

    let mut schedules: Vec<ScheduleSpec> = Vec::new();
    let mut schedule_spans = Vec::new();
    let mut schedule_index: HashMap<String, (u32, usize)> = HashMap::new();
    for s in raw_schedules {
        let s = s.get_ref();
        let name = s.name.get_ref();
        check_name(err, "schedule", &s.name);
        if let Some((_, line)) = schedule_index.get(name) {
            err.at(s.name.span(), format!("schedule {name:?} is defined twice (first at line {line})"));
            continue;
        }
        if let Err(e) = schedule::time_zone(s.timezone.get_ref()) {
            err.at(s.timezone.span(), format!("schedule {name:?}: {e}"));
        }
        let mut windows = Vec::new();
        match &s.windows {
            None => err.at(s.name.span(), format!("schedule {name:?} has no `windows`: it never opens")),
            Some(list) if list.is_empty() => {
                err.at(s.name.span(), format!("schedule {name:?}: `windows = []` never opens"));
            }
            Some(list) => {
                for w in list {
                    match schedule::parse_window(w.get_ref()) {
                        Ok(w) => windows.push(w),
                        Err(e) => err.at(w.span(), format!("schedule {name:?}: {e}")),
                    }
                }
            }
        }
        let mut holidays = Vec::new();
        for h in &s.holidays {
            match schedule::parse_date(h.get_ref()) {
                Ok(d) if holidays.contains(&d) => {
                    err.at(h.span(), format!("holiday {:?} is listed twice", h.get_ref()))
                }
                Ok(d) => holidays.push(d),
                Err(e) => err.at(h.span(), format!("schedule {name:?}: {e}")),
            }
        }
        schedule_index.insert(name.clone(), (schedules.len() as u32, err.line(s.name.span().start)));
        schedule_spans.push(s.name.span());
        schedules.push(ScheduleSpec { name: name.clone(), timezone: s.timezone.get_ref().clone(), windows, holidays });
    }

    let mut resolver = Resolver::new(inv);
    let mut rules: Vec<RuleSpec> = Vec::new();
    let mut rule_spans: Vec<Range<usize>> = Vec::new();
    let mut rule_names: HashMap<String, usize> = HashMap::new();
    for raw in raw_rules {
        let rule_span = raw.span();
        let r = raw.get_ref();
        let head = r.name.as_ref().map_or(rule_span.clone(), Spanned::span);
        let line = err.line(head.start);
        let name = match &r.name {
            Some(n) => {
                let text = n.get_ref();
                if text.is_empty() || text.len() > 64 || text.chars().any(char::is_control) {
                    err.at(n.span(), format!("rule name {text:?}: 1 to 64 printable characters"));
                } else if let Some(prev) = rule_names.get(text) {
                    err.at(n.span(), format!("rule {text:?} is defined twice (first at line {prev})"));
                } else {
                    rule_names.insert(text.clone(), line);
                }
                text.clone()
            }
            None => format!("{file}:{line}"),
        };
        let what = format!("rule {name:?}");

        let effect = match &r.effect {
            None => Effect::Allow,
            Some(e) => match e.get_ref().as_str() {
                "allow" => Effect::Allow,
                "deny" => Effect::Deny,
                other => {
                    let hint = nearest(other, ["allow", "deny"].into_iter())
                        .map_or(String::new(), |n| format!(" (did you mean {n:?}?)"));
                    err.at(e.span(), format!("{what}: effect {other:?} is not \"allow\" or \"deny\"{hint}"));
                    Effect::Allow
                }
            },
        };

        let mut role_ids = Vec::new();
        match &r.roles {
            None => err.at(head.clone(), format!("{what} has no `roles`: it can never match")),
            Some(list) if list.is_empty() => err.at(head.clone(), format!("{what}: `roles = []` can never match")),
            Some(list) => {
                for role in list {
                    match role_index.get(role.get_ref()) {
                        Some((id, _)) => role_ids.push(*id),
                        None => {
                            let hint = name_hint(role.get_ref(), roles.iter().map(String::as_str), "[[role]]");
                            err.at(role.span(), format!("{what}: role {:?} is not defined{hint}", role.get_ref()));
                        }
                    }
                }
            }
        }
        role_ids.sort_unstable();
        role_ids.dedup();

        let mut scope = AssetScope::default();
        let mut scope_protocols = 0u8;
        match &r.assets {
            None => {
                err.at(head.clone(), format!("{what} has no `assets`: it can never match (\"*\" names every asset)"))
            }
            Some(list) if list.is_empty() => err.at(head.clone(), format!("{what}: `assets = []` can never match")),
            Some(list) => {
                for pattern in list {
                    match resolver.resolve(pattern.get_ref()) {
                        Ok(Target::All) => {
                            scope.all = true;
                            scope_protocols |= resolver.all_protocols;
                        }
                        Ok(Target::Segment(s)) => {
                            scope.segments.push(s);
                            scope_protocols |= resolver.segment_protocols[s as usize];
                        }
                        Ok(Target::Assets(list)) => {
                            for &a in &list {
                                scope_protocols |= inv.assets[a as usize].2;
                            }
                            scope.assets.extend(list);
                        }
                        Err(e) => err.at(pattern.span(), format!("{what}: {e}")),
                    }
                }
            }
        }
        normalize_scope(&mut scope, inv);

        let mut protocol_ok = true;
        let protocol = match &r.protocol {
            None => None,
            Some(p) if p.get_ref() == "any" => None,
            Some(p) => match p.get_ref().parse::<Protocol>() {
                Ok(proto) => {
                    if scope_protocols != 0 && scope_protocols & proto_bit(proto) == 0 {
                        err.warn(
                            p.span(),
                            format!(
                                "{what}: none of its assets has a service with protocol {:?}, so the rule can never match",
                                proto.as_str()
                            ),
                        );
                    }
                    Some(proto)
                }
                Err(()) => {
                    let hint = nearest(p.get_ref(), ["modbus", "s7", "dnp3", "enip", "tcp", "any"].into_iter())
                        .map_or(String::new(), |n| format!(" (did you mean {n:?}?)"));
                    err.at(
                        p.span(),
                        format!(
                            "{what}: unknown protocol {:?}{hint}; expected modbus, s7, dnp3, enip, tcp or any",
                            p.get_ref()
                        ),
                    );
                    protocol_ok = false;
                    None
                }
            },
        };

        let mut ops = OpSet::EMPTY;
        match &r.operations {
            None => err.at(head.clone(), format!("{what} has no `operations`: it can never match")),
            Some(list) if list.is_empty() => {
                err.at(head.clone(), format!("{what}: `operations = []` can never match"));
            }
            Some(list) => {
                for o in list {
                    match Op::from_name(o.get_ref()) {
                        Some(op) => ops = ops.with(op),
                        None => {
                            let hint = nearest(o.get_ref(), Op::ALL.iter().map(|op| op.as_str()))
                                .map_or(String::new(), |n| format!(" (did you mean {n:?}?)"));
                            err.at(
                                o.span(),
                                format!(
                                    "{what}: unknown operation {:?}{hint}; expected read, write, program, control, diagnostic, connect or other",
                                    o.get_ref()
                                ),
                            );
                        }
                    }
                }
            }
        }

        if let (Some(p), Some(span)) = (protocol, &r.protocol) {
            if !dataplane::policy::inspected(p) && !ops.is_empty() && !ops.contains(Op::Connect) {
                err.at(
                    span.span(),
                    format!(
                        "{what}: protocol {:?} is not inspected request by request, so a session is all or nothing: only \"connect\" can be granted; add it to operations",
                        p.as_str()
                    ),
                );
            }
        }

        let schedule = r.schedule.as_ref().and_then(|s| match schedule_index.get(s.get_ref()) {
            Some((i, _)) => Some(*i),
            None => {
                let hint = name_hint(s.get_ref(), schedules.iter().map(|x| x.name.as_str()), "[[schedule]]");
                err.at(s.span(), format!("{what}: schedule {:?} is not defined{hint}", s.get_ref()));
                None
            }
        });

        let mut seconds = |v: &Option<Spanned<i64>>, key: &str| -> Option<u64> {
            let v = v.as_ref()?;
            if effect == Effect::Deny {
                err.at(
                    v.span(),
                    format!("{what}: `{key}` limits what an allow rule grants; a deny rule has nothing to limit"),
                );
                return None;
            }
            match u64::try_from(*v.get_ref()) {
                Ok(s) if (60..=7 * 86_400).contains(&s) => Some(s),
                _ => {
                    err.at(
                        v.span(),
                        format!("{what}: {key} {} is out of range 60..=604800 (1 minute to 7 days)", v.get_ref()),
                    );
                    None
                }
            }
        };
        let max_session_secs = seconds(&r.max_session_secs, "max_session_secs");
        let ticket_lifetime_secs = seconds(&r.ticket_lifetime_secs, "ticket_lifetime_secs");

        for (detail, proto) in [(&r.s7, "s7"), (&r.dnp3, "dnp3"), (&r.enip, "enip")] {
            if let Some(d) = detail {
                err.at(
                    d.span(),
                    format!(
                        "{what}: [rule.{proto}] is not supported yet: {proto} is checked by operation (read, write, program, control, diagnostic), not by object: drop the table"
                    ),
                );
            }
        }
        let modbus = r.modbus.as_ref().map(|m| {
            if protocol_ok && protocol != Some(Protocol::Modbus) {
                err.at(m.span(), format!("{what}: [rule.modbus] needs protocol = \"modbus\""));
            }
            modbus_scope(m.get_ref(), m.span(), ops, &what, err)
        });

        rules.push(RuleSpec {
            name,
            origin: format!("{file}:{line}"),
            effect,
            roles: role_ids,
            scope,
            protocol,
            ops,
            schedule,
            modbus,
            max_session_secs,
            ticket_lifetime_secs,
        });
        rule_spans.push(head);
    }

    dead_rules(&rules, &rule_spans, inv, err);

    let segments = inv.segments.clone();
    let assets = inv.assets.iter().map(|(n, s, _)| (n.clone(), s.unwrap_or(0))).collect();
    Validated { parts: PolicyParts { roles, segments, assets, schedules, rules }, schedule_spans }
}

/// ` (did you mean "x"?)`, or the names defined when there are few.
fn name_hint<'a>(word: &str, names: impl Iterator<Item = &'a str> + Clone, table: &str) -> String {
    if let Some(n) = nearest(word, names.clone()) {
        return format!(" (did you mean {n:?}?)");
    }
    let all: Vec<&str> = names.collect();
    match all.len() {
        0 => format!(" (no {table} is defined)"),
        1..=8 => format!(" (defined: {})", all.join(", ")),
        _ => String::new(),
    }
}

/// Validates `[rule.modbus]`.
fn modbus_scope(m: &RawModbus, span: Range<usize>, ops: OpSet, what: &str, err: &mut Errors<'_>) -> ModbusScope {
    let mut scope = ModbusScope::default();
    if let Some(units) = &m.units {
        scope.units = ByteSet::EMPTY;
        for u in units {
            match u8::try_from(*u.get_ref()) {
                Ok(b) => scope.units.insert(b),
                Err(_) => err.at(u.span(), format!("{what}: unit id {} is out of range 0..=255", u.get_ref())),
            }
        }
        if units.is_empty() {
            err.at(span.clone(), format!("{what}: `units = []` can never match (leave `units` out for every unit)"));
        }
    }
    if let Some(functions) = &m.functions {
        scope.functions = ByteSet::EMPTY;
        for f in functions {
            match u8::try_from(*f.get_ref()).ok().filter(|f| (1..=127).contains(f)) {
                Some(code) => {
                    scope.functions.insert(code);
                    let (op, name) = modbus_function(code);
                    if !modbus_function_ops(code).iter().any(|o| ops.contains(*o)) {
                        err.at(
                            f.span(),
                            format!(
                                "{what}: function {code} ({name}) is a {} operation; add \"{}\" to operations or drop it",
                                op.as_str(),
                                op.as_str()
                            ),
                        );
                    }
                }
                None => err.at(f.span(), format!("{what}: function code {} is out of range 1..=127", f.get_ref())),
            }
        }
        if functions.is_empty() {
            err.at(
                span.clone(),
                format!("{what}: `functions = []` can never match (leave `functions` out for every function of the operations)"),
            );
        }
    }
    for (table, list) in [
        (Table::Coils, &m.coils),
        (Table::DiscreteInputs, &m.discrete),
        (Table::InputRegisters, &m.input),
        (Table::HoldingRegisters, &m.holding),
    ] {
        let Some(list) = list else { continue };
        let mut ranges = Vec::new();
        for item in list {
            match address_range(item.get_ref()) {
                Ok(r) => ranges.push(r),
                Err(e) => err.at(item.span(), format!("{what}: {}: {e}", table.as_str())),
            }
        }
        if list.is_empty() {
            err.at(
                span.clone(),
                format!("{what}: `{} = []` opens no address; list ranges or leave it out", table.as_str()),
            );
        }
        scope.tables[table as usize] = Some(merge_ranges(&ranges));
    }
    let bound = |v: &Option<Spanned<i64>>, err: &mut Errors<'_>, key: &str| -> Option<u16> {
        let v = v.as_ref()?;
        match u16::try_from(*v.get_ref()) {
            Ok(x) => Some(x),
            Err(_) => {
                err.at(v.span(), format!("{what}: {key} {} is out of range 0..=65535", v.get_ref()));
                None
            }
        }
    };
    let lo = bound(&m.value_min, err, "value_min");
    let hi = bound(&m.value_max, err, "value_max");
    if m.value_min.is_some() || m.value_max.is_some() {
        let (lo, hi) = (lo.unwrap_or(0), hi.unwrap_or(u16::MAX));
        let span = m.value_min.as_ref().or(m.value_max.as_ref()).map_or(span.clone(), Spanned::span);
        if lo > hi {
            err.at(span.clone(), format!("{what}: value_min {lo} is above value_max {hi}: no value fits"));
        }
        if !ops.contains(Op::Write) {
            err.at(
                span,
                format!("{what}: value bounds apply to register writes (6, 16, 23), but \"write\" is not among its operations"),
            );
        }
        scope.values = Some((lo, hi));
    }
    if let Some(e) = &m.exception {
        match u8::try_from(*e.get_ref()).ok().filter(|c| EXCEPTION_CODES.contains(&i64::from(*c))) {
            Some(c) => scope.exception = Some(c),
            None => err.at(
                e.span(),
                format!(
                    "{what}: exception {} is not a Modbus exception code (1, 2, 3, 4, 5, 6, 8, 10, 11)",
                    e.get_ref()
                ),
            ),
        }
    }
    scope
}

/// `"100-199"`, `"150"` or `150`.
fn address_range(v: &toml::Value) -> Result<(u16, u16), String> {
    let parse = |s: &str| -> Result<u32, String> {
        let s = s.trim();
        s.parse::<u32>().map_err(|_| format!("{s:?} is not an address (0..=65535)"))
    };
    let (a, b) = match v {
        toml::Value::Integer(i) => {
            let a = u32::try_from(*i).map_err(|_| format!("{i} is not an address (0..=65535)"))?;
            (a, a)
        }
        toml::Value::String(s) => match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let a = parse(s)?;
                (a, a)
            }
        },
        other => return Err(format!("{other} is not an address range (\"100-199\" or \"150\")")),
    };
    for x in [a, b] {
        if x > 65_535 {
            return Err(format!("address {x} is above 65535 (Modbus addresses are 0..=65535)"));
        }
    }
    if a > b {
        return Err(format!("range \"{a}-{b}\" is reversed (did you mean \"{b}-{a}\"?)"));
    }
    Ok((a as u16, b as u16))
}

/// Sorted, deduplicated; assets inside a listed segment dropped; nothing
/// listed when every asset is.
fn normalize_scope(scope: &mut AssetScope, inv: &Inventory) {
    if scope.all {
        scope.segments.clear();
        scope.assets.clear();
        return;
    }
    scope.segments.sort_unstable();
    scope.segments.dedup();
    scope.assets.sort_unstable();
    scope.assets.dedup();
    let segments = &scope.segments;
    scope.assets.retain(|a| inv.assets[*a as usize].1.is_none_or(|s| segments.binary_search(&s).is_err()));
}

enum Target {
    All,
    Segment(u32),
    Assets(Vec<u32>),
}

/// Resolves asset names and globs, caching glob expansions (a policy with
/// 100,000 rules names the same segments over and over).
struct Resolver<'a> {
    inv: &'a Inventory,
    by_name: HashMap<&'a str, u32>,
    globs: HashMap<String, Vec<u32>>,
    segment_protocols: Vec<u8>,
    all_protocols: u8,
}

impl<'a> Resolver<'a> {
    fn new(inv: &'a Inventory) -> Self {
        let mut segment_protocols = vec![0u8; inv.segments.len()];
        let mut all_protocols = 0;
        for (_, seg, protos) in &inv.assets {
            if let Some(s) = seg {
                segment_protocols[*s as usize] |= protos;
            }
            all_protocols |= protos;
        }
        Self {
            inv,
            by_name: inv.assets.iter().enumerate().map(|(i, (n, _, _))| (n.as_str(), i as u32)).collect(),
            globs: HashMap::new(),
            segment_protocols,
            all_protocols,
        }
    }

    fn segment(&self, name: &str) -> Result<u32, String> {
        self.inv.segments.iter().position(|s| s == name).map(|i| i as u32).ok_or_else(|| {
            let hint = name_hint(name, self.inv.segments.iter().map(String::as_str), "[[segment]]");
            format!("segment {name:?} is not defined{hint}")
        })
    }

    fn resolve(&mut self, pattern: &str) -> Result<Target, String> {
        let is_glob = |s: &str| s.contains(['*', '?']);
        if pattern == "*" {
            return Ok(Target::All);
        }
        if let Some((seg, name)) = pattern.split_once('/') {
            if !is_glob(seg) {
                let s = self.segment(seg)?;
                if name == "*" {
                    return Ok(Target::Segment(s));
                }
            }
        } else if !is_glob(pattern) {
            return match self.by_name.get(pattern) {
                Some(&i) => Ok(Target::Assets(vec![i])),
                None if self.inv.segments.iter().any(|s| s == pattern) => Err(format!(
                    "asset {pattern:?} is not defined; {pattern:?} is a segment: write \"{pattern}/*\" for all its assets"
                )),
                None => {
                    let hint = name_hint(pattern, self.inv.assets.iter().map(|a| a.0.as_str()), "[[asset]]");
                    Err(format!("asset {pattern:?} is not defined{hint}"))
                }
            };
        }
        if let Some(list) = self.globs.get(pattern) {
            return Ok(Target::Assets(list.clone()));
        }
        let inv = self.inv;
        let list: Vec<u32> = match pattern.split_once('/') {
            Some((seg, name)) => inv
                .assets
                .iter()
                .enumerate()
                .filter(|(_, (n, s, _))| s.is_some_and(|s| glob(seg, &inv.segments[s as usize])) && glob(name, n))
                .map(|(i, _)| i as u32)
                .collect(),
            None => {
                inv.assets.iter().enumerate().filter(|(_, (n, _, _))| glob(pattern, n)).map(|(i, _)| i as u32).collect()
            }
        };
        if list.is_empty() {
            return Err(format!("{pattern:?} matches no asset"));
        }
        self.globs.insert(pattern.to_string(), list.clone());
        Ok(Target::Assets(list))
    }
}

/// `*` any run of characters, `?` any one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// What makes two rules the same for duplicate detection.
#[derive(PartialEq, Eq, Hash)]
struct ScopeKey<'a> {
    effect: Effect,
    roles: &'a [RoleId],
    scope: &'a AssetScope,
    protocol: Option<Protocol>,
    ops: OpSet,
    schedule: Option<u32>,
    modbus: ModbusScope,
}

/// A rule's Modbus scope with "no detail" spelled out and the exception
/// (which changes the answer, not the scope) left out.
fn normal_modbus(m: &Option<ModbusScope>) -> ModbusScope {
    let mut m = m.clone().unwrap_or_default();
    m.exception = None;
    m
}

/// Refuses rules that can never decide anything: exact repeats, and allow
/// rules a deny rule covers entirely.
fn dead_rules(rules: &[RuleSpec], spans: &[Range<usize>], inv: &Inventory, err: &mut Errors<'_>) {
    let mut seen: HashMap<ScopeKey<'_>, usize> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        let key = ScopeKey {
            effect: r.effect,
            roles: &r.roles,
            scope: &r.scope,
            protocol: r.protocol,
            ops: r.ops,
            schedule: r.schedule,
            modbus: normal_modbus(&r.modbus),
        };
        if let Some(&first) = seen.get(&key) {
            err.at(
                spans[i].clone(),
                format!(
                    "rule {:?} repeats rule {:?} ({}): same effect and scope, so it can never decide anything; remove one",
                    r.name, rules[first].name, rules[first].origin
                ),
            );
        } else {
            seen.insert(key, i);
        }
    }

    let n_assets = inv.assets.len() as u32;
    let global = n_assets + inv.segments.len() as u32;
    let mut denies: HashMap<(u32, RoleId), Vec<usize>> = HashMap::new();
    for (i, r) in rules.iter().enumerate().filter(|(_, r)| r.effect == Effect::Deny) {
        let keys: Vec<u32> = if r.scope.all {
            vec![global]
        } else {
            r.scope.segments.iter().map(|s| n_assets + s).chain(r.scope.assets.iter().copied()).collect()
        };
        for k in keys {
            for &role in &r.roles {
                denies.entry((k, role)).or_default().push(i);
            }
        }
    }
    if denies.is_empty() {
        return;
    }
    for (i, a) in rules.iter().enumerate().filter(|(_, r)| r.effect == Effect::Allow) {
        let Some(&role) = a.roles.first() else { continue };
        let probes: Vec<u32> = if a.scope.all {
            vec![global]
        } else if let Some(&s) = a.scope.segments.first() {
            vec![n_assets + s, global]
        } else if let Some(&x) = a.scope.assets.first() {
            let seg = inv.assets[x as usize].1.map(|s| n_assets + s);
            [Some(x), seg, Some(global)].into_iter().flatten().collect()
        } else {
            continue;
        };
        let shadow =
            probes.iter().filter_map(|p| denies.get(&(*p, role))).flatten().find(|&&d| covers(&rules[d], a, inv));
        if let Some(&d) = shadow {
            err.at(
                spans[i].clone(),
                format!(
                    "rule {:?} can never permit anything: deny rule {:?} ({}) covers its whole scope, and deny wins",
                    a.name, rules[d].name, rules[d].origin
                ),
            );
        }
    }
}

/// Whether every request allow rule `a` permits is matched by deny rule `d`.
fn covers(d: &RuleSpec, a: &RuleSpec, inv: &Inventory) -> bool {
    let roles = a.roles.iter().all(|r| d.roles.binary_search(r).is_ok());
    let scope = d.scope.all
        || (!a.scope.all
            && a.scope.segments.iter().all(|s| d.scope.segments.binary_search(s).is_ok())
            && a.scope.assets.iter().all(|x| {
                d.scope.assets.binary_search(x).is_ok()
                    || inv.assets[*x as usize].1.is_some_and(|s| d.scope.segments.binary_search(&s).is_ok())
            }));
    let protocol = d.protocol.is_none() || d.protocol == a.protocol;
    let schedule = d.schedule.is_none() || d.schedule == a.schedule;
    if !(roles && scope && protocol && schedule && d.ops.is_superset(a.ops)) {
        return false;
    }
    let (dm, am) = (normal_modbus(&d.modbus), normal_modbus(&a.modbus));
    if !dm.units.is_superset(&am.units) || !dm.functions.is_superset(&am.functions) {
        return false;
    }
    if dm.lists_addresses() {
        // Requests without an address (diagnostics) escape an address-scoped deny.
        let addressed = OpSet::EMPTY.with(Op::Read).with(Op::Write).with(Op::Connect);
        if !am.lists_addresses() || !addressed.is_superset(a.ops) {
            return false;
        }
        for t in 0..4 {
            if let Some(allowed) = &am.tables[t] {
                let Some(denied) = &dm.tables[t] else { return false };
                if !allowed.iter().all(|&(lo, hi)| denied.iter().any(|&(dl, dh)| dl <= lo && hi <= dh)) {
                    return false;
                }
            }
        }
    }
    if let Some((dl, dh)) = dm.values {
        let registers: ByteSet = [6u8, 16, 23].into_iter().collect();
        let (al, ah) = am.values.unwrap_or((0, u16::MAX));
        if !registers.is_superset(&am.functions) || al < dl || ah > dh {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("plc-*", "plc-7"));
        assert!(glob("*", ""));
        assert!(glob("p?c-*7", "plc-107"));
        assert!(!glob("plc-?", "plc-17"));
        assert!(glob("*-7", "plc-7"));
        assert!(!glob("line3", "line4"));
    }

    #[test]
    fn address_ranges() {
        let s = |x: &str| toml::Value::String(x.into());
        assert_eq!(address_range(&s("100-199")), Ok((100, 199)));
        assert_eq!(address_range(&s("150")), Ok((150, 150)));
        assert_eq!(address_range(&toml::Value::Integer(7)), Ok((7, 7)));
        assert!(address_range(&s("200-100")).unwrap_err().contains("did you mean \"100-200\""));
        assert!(address_range(&s("0-70000")).unwrap_err().contains("above 65535"));
        assert!(address_range(&s("x")).is_err());
        assert!(address_range(&toml::Value::Integer(-1)).is_err());
    }
}
