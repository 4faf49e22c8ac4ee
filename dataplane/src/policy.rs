//! The compiled policy the dp cores consult: who may do what, where, when.
//!
//! Built by the control thread (`control::policy`) from the policy file and
//! published inside the [`crate::snapshot::Snapshot`]. Names are indices
//! here; a check is a few array reads and a range search, with no
//! allocation and no time-zone arithmetic (schedules are precompiled into
//! sorted UTC intervals for the days ahead and refreshed by the control
//! thread).
//!
//! Deny by default: no matching allow rule is a denial; an explicit deny
//! rule wins over any allow.
//!
//! # Layout
//! Rules are indexed by *scope* and role: a rule naming assets is listed
//! under each asset, a rule naming a segment (`line3/*`) under the segment,
//! a rule naming every asset (`*`) once, globally. A query reads at most
//! three such lists (its asset's, its asset's segment's, the global one),
//! each sorted by role so a user's role is found by binary search; the
//! rules found are then checked field by field. Nothing in
//! [`Policy::check`] allocates or locks, and nothing scans all rules.
//!
//! # What a rule matches
//! - `protocol` (or any), and the request's [`Op`]. [`Op::Connect`] to a
//!   Modbus service is permitted by any allow rule whose asset, role,
//!   protocol and window match (an operation implies the connection it
//!   needs; each request is then checked on its own). A protocol the gate
//!   does not inspect request by request (raw TCP; S7, DNP3 and EtherNet/IP
//!   in this build) makes a session all-or-nothing, so only a rule listing
//!   `connect` opens it. A deny rule stops connections only if it lists
//!   `connect`.
//! - Modbus detail: unit ids and function codes (when listed); address
//!   ranges per table: an allow rule that lists ranges for any table
//!   permits only requests whose every span lies inside one listed range of
//!   its table (a table it does not list is closed); a deny rule that lists
//!   ranges matches requests touching any of them. Value bounds: an allow
//!   rule permits register writes (6, 16, 23) only with every value inside
//!   the bounds, and no mask write (22), whose result the gate cannot know;
//!   a deny rule with bounds matches writes carrying a value inside them.
//! - The schedule: the rule is in force only while one of its windows is
//!   open. Outside the compiled horizon every window counts as closed (the
//!   control thread refreshes the horizon daily, see
//!   [`Policy::needs_refresh`]).
//!
//! # Which answer
//! A matching deny rule wins (the lowest [`RuleId`]). Otherwise the
//! permitting allow rule whose window stays open longest (then the lowest
//! id). Otherwise the denial that came closest: a value out of bounds, then
//! an address out of range, then a closed window, then no rule at all.

use std::collections::HashMap;
use std::sync::Arc;

use crate::snapshot::Protocol;

/// An index into [`Policy::roles`].
pub type RoleId = u16;
/// An index into [`Policy::rules`].
pub type RuleId = u32;

/// The horizon the control thread compiles schedules for: one day back.
pub const HORIZON_BEFORE: u64 = 86_400;
/// The horizon ahead: eight days, refreshed when fewer than seven are left.
pub const HORIZON_AHEAD: u64 = 8 * 86_400;

/// What a request does, in the policy's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Read,
    Write,
    Program,
    Control,
    Diagnostic,
    /// Opening a session (no operation yet).
    Connect,
    Other,
}

impl Op {
    /// Every operation, in policy-file order.
    pub const ALL: [Op; 7] = [Op::Read, Op::Write, Op::Program, Op::Control, Op::Diagnostic, Op::Connect, Op::Other];

    /// The name in policy files and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Program => "program",
            Self::Control => "control",
            Self::Diagnostic => "diagnostic",
            Self::Connect => "connect",
            Self::Other => "other",
        }
    }

    /// The operation a policy file names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OpSet(u8);

impl OpSet {
    pub const EMPTY: OpSet = OpSet(0);

    /// The set with `op` added.
    #[must_use]
    pub fn with(self, op: Op) -> Self {
        Self(self.0 | op.bit())
    }

    pub fn contains(self, op: Op) -> bool {
        self.0 & op.bit() != 0
    }

    pub fn is_superset(self, other: OpSet) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The operations in the set, in policy-file order.
    pub fn iter(self) -> impl Iterator<Item = Op> {
        Op::ALL.into_iter().filter(move |op| self.contains(*op))
    }
}

/// A set of byte values (Modbus unit ids, function codes): 256 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    pub const EMPTY: ByteSet = ByteSet([0; 4]);
    pub const ALL: ByteSet = ByteSet([u64::MAX; 4]);

    pub fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    pub fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    pub fn is_superset(&self, other: &ByteSet) -> bool {
        self.0.iter().zip(other.0).all(|(a, b)| a & b == b)
    }

    pub fn is_all(&self) -> bool {
        *self == Self::ALL
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::EMPTY
    }

    /// The members, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|b| self.contains(*b))
    }
}

impl FromIterator<u8> for ByteSet {
    fn from_iter<I: IntoIterator<Item = u8>>(iter: I) -> Self {
        let mut s = Self::EMPTY;
        for b in iter {
            s.insert(b);
        }
        s
    }
}

/// A Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Coils,
    DiscreteInputs,
    InputRegisters,
    HoldingRegisters,
}

impl Table {
    /// Every table, in [`ModbusScope::tables`] order.
    pub const ALL: [Table; 4] = [Table::Coils, Table::DiscreteInputs, Table::InputRegisters, Table::HoldingRegisters];

    /// The key in `[rule.modbus]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coils => "coils",
            Self::DiscreteInputs => "discrete",
            Self::InputRegisters => "input",
            Self::HoldingRegisters => "holding",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The Modbus detail of a request, for rules that constrain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusDetail<'a> {
    pub unit: u8,
    pub function: u8,
    /// The table, first address and count read, if any.
    pub read: Option<(Table, u16, u16)>,
    /// The table, first address and count written, if any.
    pub write: Option<(Table, u16, u16)>,
    /// Register values written (big-endian u16 pairs), for value bounds.
    pub values: &'a [u8],
}

/// One authorization question.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The user's roles, as indices (resolved once per session).
    pub roles: &'a [RoleId],
    /// The asset, as an index into [`Policy::assets`].
    pub asset: u32,
    pub protocol: Protocol,
    pub op: Op,
    pub modbus: Option<ModbusDetail<'a>>,
    /// Unix time (seconds) of the request.
    pub now: u64,
    /// The session asking, for the rules' `max_session_secs` and
    /// `ticket_lifetime_secs`: a rule whose limit has passed for it permits
    /// nothing more, whichever rule let the session connect. `None` (a
    /// question about no session, as `policy explain` asks): not applied.
    pub since: Option<Since>,
}

/// When a session was granted and when the ticket it used was issued
/// (unix seconds; both the grant's time for a password login).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since {
    pub granted: u64,
    pub ticket_issued: u64,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No allow rule matched (deny by default).
    NoRule,
    /// An explicit deny rule matched.
    DenyRule(RuleId),
    /// A rule would allow it, but not at this time.
    OutsideWindow(RuleId),
    /// A rule allows the function but not this address range.
    AddressOutOfRange(RuleId),
    /// A rule allows the write but a value is out of its bounds.
    ValueOutOfBounds(RuleId),
    /// A rule would allow it, but its `max_session_secs` or
    /// `ticket_lifetime_secs` has passed for this session.
    LimitReached(RuleId),
}

impl Denial {
    /// The rule the denial names, if any.
    pub fn rule(self) -> Option<RuleId> {
        match self {
            Self::NoRule => None,
            Self::DenyRule(r)
            | Self::OutsideWindow(r)
            | Self::AddressOutOfRange(r)
            | Self::ValueOutOfBounds(r)
            | Self::LimitReached(r) => Some(r),
        }
    }

    /// A short name for logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRule => "no_rule",
            Self::DenyRule(_) => "deny_rule",
            Self::OutsideWindow(_) => "outside_window",
            Self::AddressOutOfRange(_) => "address_out_of_range",
            Self::ValueOutOfBounds(_) => "value_out_of_bounds",
            Self::LimitReached(_) => "session_limit",
        }
    }

    /// The Modbus exception code it is answered with when no rule overrides
    /// it (Modbus Application Protocol 1.1b3 §7): 01 (illegal function) for
    /// a function not allowed, 02 (illegal data address) for an address out
    /// of range, 03 (illegal data value) for a value out of bounds.
    pub fn modbus_exception(self) -> u8 {
        match self {
            Self::AddressOutOfRange(_) => 0x02,
            Self::ValueOutOfBounds(_) => 0x03,
            Self::NoRule | Self::DenyRule(_) | Self::OutsideWindow(_) | Self::LimitReached(_) => 0x01,
        }
    }

    /// How close the request came to being permitted (for choosing which
    /// denial to report).
    fn rank(self) -> u8 {
        match self {
            Self::NoRule | Self::DenyRule(_) => 0,
            Self::OutsideWindow(_) | Self::LimitReached(_) => 1,
            Self::AddressOutOfRange(_) => 2,
            Self::ValueOutOfBounds(_) => 3,
        }
    }
}

/// What allowed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    pub rule: RuleId,
    /// Unix time the permitting window closes (`u64::MAX`: always open).
    /// At most the end of the compiled horizon: a session re-checks then,
    /// against the refreshed policy.
    pub until: u64,
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Permit(Permit),
    Deny(Denial),
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Which assets a rule covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AssetScope {
    /// Every asset (`*`).
    pub all: bool,
    /// Whole segments (`line3/*`), as indices into the segment list.
    pub segments: Vec<u32>,
    /// Single assets, as indices into [`Policy::assets`].
    pub assets: Vec<u32>,
}

/// The Modbus detail of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModbusScope {
    /// Unit ids ([`ByteSet::ALL`]: any).
    pub units: ByteSet,
    /// Function codes ([`ByteSet::ALL`]: any of the rule's operations).
    pub functions: ByteSet,
    /// Inclusive address ranges per table, in [`Table::ALL`] order, sorted
    /// and merged; `None`: the table is not listed. No table listed: any
    /// address.
    pub tables: [Option<Vec<(u16, u16)>>; 4],
    /// Inclusive bounds of register values written (6, 16, 23).
    pub values: Option<(u16, u16)>,
    /// Exception code answered instead of the default.
    pub exception: Option<u8>,
}

impl Default for ModbusScope {
    fn default() -> Self {
        Self { units: ByteSet::ALL, functions: ByteSet::ALL, tables: Default::default(), values: None, exception: None }
    }
}

impl ModbusScope {
    /// Whether any table lists address ranges.
    pub fn lists_addresses(&self) -> bool {
        self.tables.iter().any(Option::is_some)
    }
}

/// One rule, names resolved, as the compiler hands it to [`Policy::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// Its name (or `file:line`).
    pub name: String,
    /// Where it is written (`policy.toml:42`), for explain and audit.
    pub origin: String,
    pub effect: Effect,
    pub roles: Vec<RoleId>,
    pub scope: AssetScope,
    /// `None`: any protocol.
    pub protocol: Option<Protocol>,
    pub ops: OpSet,
    /// An index into [`Policy::schedules`]; `None`: always in force.
    pub schedule: Option<u32>,
    pub modbus: Option<ModbusScope>,
    /// Sessions permitted by this rule last at most this long.
    pub max_session_secs: Option<u64>,
    /// Tickets used for this rule's sessions live at most this long.
    pub ticket_lifetime_secs: Option<u64>,
}

impl RuleSpec {
    /// When a session this rule permits must end: `max_session_secs` after
    /// it was granted, and when its ticket (issued at `ticket_issued`)
    /// reaches `ticket_lifetime_secs`; `u64::MAX` without either limit.
    pub fn session_end(&self, granted: u64, ticket_issued: u64) -> u64 {
        let by_session = self.max_session_secs.map_or(u64::MAX, |s| granted.saturating_add(s));
        let by_ticket = self.ticket_lifetime_secs.map_or(u64::MAX, |s| ticket_issued.saturating_add(s));
        by_session.min(by_ticket)
    }
}

/// A weekly window in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WeeklyWindow {
    /// The days it opens on: bit 0 Monday .. bit 6 Sunday.
    pub days: u8,
    /// Minutes after local midnight, `0..1440`.
    pub start: u16,
    /// Minutes after local midnight, `1..=1440`; at or before `start`: the
    /// window ends the next day (overnight).
    pub end: u16,
}

/// A schedule as written: what the control thread compiles into UTC
/// intervals (the dp cores never read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub name: String,
    /// An IANA time zone name (`Europe/Berlin`).
    pub timezone: String,
    pub windows: Vec<WeeklyWindow>,
    /// Local dates (year, month, day) on which the schedule stays closed.
    pub holidays: Vec<(i16, i8, i8)>,
}

/// Schedules compiled for a horizon: what changes when time passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleTimes {
    /// Unix time the compiled intervals start.
    pub from: u64,
    /// Unix time they end (exclusive).
    pub to: u64,
    /// Per schedule: its open `[start, end)` intervals inside the horizon,
    /// sorted and merged, or `None` when it is always open.
    pub schedules: Vec<Option<Vec<(u64, u64)>>>,
}

/// The compiled policy. The control crate builds it; see `control::policy`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Role names by [`RoleId`].
    pub roles: Vec<String>,
    /// Asset names by index, in config-file order; an endpoint's `asset`
    /// name resolves through [`Policy::asset_id`]. Indices (like role ids)
    /// hold for this policy only: re-resolve after a reload.
    pub assets: Vec<String>,
    /// Rule names (or `file:line`) by [`RuleId`], for audit and explain.
    pub rules: Vec<String>,
    /// The compiled rule tables (filled by the compiler).
    pub compiled: Compiled,
}

/// The compiled tables: built once per policy file ([`Tables`]) plus the
/// schedule intervals, replaced when the horizon moves.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    tables: Arc<Tables>,
    times: Arc<Times>,
}

/// What the policy file fixes.
#[derive(Debug, Default)]
struct Tables {
    segments: Vec<String>,
    /// Segment of each asset.
    asset_segment: Vec<u32>,
    asset_index: HashMap<String, u32>,
    role_index: HashMap<String, RoleId>,
    /// Scope `k`'s entries are `entries[scope_start[k]..scope_start[k + 1]]`:
    /// scopes are the assets, then the segments, then one global scope.
    scope_start: Vec<u32>,
    /// Sorted by (role, rule) within each scope.
    entries: Vec<Entry>,
    rules: Vec<Rule>,
    details: Vec<Detail>,
    /// Address ranges of all details, each detail's per-table slice sorted.
    ranges: Vec<(u16, u16)>,
    specs: Vec<RuleSpec>,
    schedules: Vec<ScheduleSpec>,
}

/// One rule listed under a scope for a role, with what is needed to skip
/// it without reading the rule (8 bytes, as `(RoleId, RuleId)` would be).
#[derive(Debug, Clone, Copy)]
struct Entry {
    role: RoleId,
    ops: OpSet,
    /// Bit 0: allow; bits 1..: the protocol + 1 (0: any).
    flags: u8,
    rule: RuleId,
}

impl Entry {
    fn new(role: RoleId, rule: RuleId, spec: &RuleSpec) -> Self {
        let protocol = spec.protocol.map_or(0, |p| p as u8 + 1);
        Entry { role, ops: spec.ops, flags: u8::from(spec.effect == Effect::Allow) | protocol << 1, rule }
    }

    /// Whether the rule can apply to `q` at all (protocol and operation).
    #[inline]
    fn may_apply(self, q: &Query<'_>) -> bool {
        let protocol = self.flags >> 1;
        if protocol != 0 && protocol != q.protocol as u8 + 1 {
            return false;
        }
        if q.op == Op::Connect {
            self.ops.contains(Op::Connect) || (self.flags & 1 == 1 && inspected(q.protocol))
        } else {
            self.ops.contains(q.op)
        }
    }
}

/// The hot part of a rule.
#[derive(Debug, Clone, Copy)]
struct Rule {
    allow: bool,
    /// `None`: any protocol.
    protocol: Option<Protocol>,
    ops: OpSet,
    schedule: Option<u32>,
    detail: Option<u32>,
    /// It has `max_session_secs` or `ticket_lifetime_secs`.
    limited: bool,
}

/// The hot part of a rule's Modbus detail.
#[derive(Debug, Clone, Copy)]
struct Detail {
    units: ByteSet,
    functions: ByteSet,
    /// Per table: `ranges[start..end]`, or `None` when not listed.
    tables: [Option<(u32, u32)>; 4],
    any_table: bool,
    values: Option<(u16, u16)>,
}

/// What the horizon fixes.
#[derive(Debug, Default)]
struct Times {
    from: u64,
    to: u64,
    always: Vec<bool>,
    /// Schedule `s`'s intervals are `intervals[start[s]..start[s + 1]]`.
    start: Vec<u32>,
    intervals: Vec<(u64, u64)>,
}

/// Everything [`Policy::build`] needs.
#[derive(Debug, Clone, Default)]
pub struct PolicyParts {
    pub roles: Vec<String>,
    pub segments: Vec<String>,
    /// Asset names with their segment index.
    pub assets: Vec<(String, u32)>,
    pub schedules: Vec<ScheduleSpec>,
    pub rules: Vec<RuleSpec>,
}

/// An open window: when it opened (or the horizon start) and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    /// `u64::MAX`: never closes.
    pub end: u64,
}

impl Policy {
    /// Indexes `parts` and puts `times` (from `control::policy`) in force.
    ///
    /// # Panics
    /// If a spec refers to a role, asset, segment or schedule index out of
    /// range, or `times` does not have one entry per schedule: the compiler
    /// resolved every name, so that is a compiler bug.
    pub fn build(parts: PolicyParts, times: ScheduleTimes) -> Policy {
        let n_assets = parts.assets.len();
        let n_segments = parts.segments.len();
        let global = n_assets + n_segments;
        let mut keyed: Vec<(u32, RoleId, RuleId)> = Vec::new();
        let mut rules = Vec::with_capacity(parts.rules.len());
        let mut details = Vec::new();
        let mut ranges = Vec::new();
        for (id, spec) in parts.rules.iter().enumerate() {
            let id = id as RuleId;
            let mut scopes: Vec<usize> = Vec::new();
            if spec.scope.all {
                scopes.push(global);
            } else {
                scopes.extend(spec.scope.segments.iter().map(|s| {
                    assert!((*s as usize) < n_segments, "segment index out of range");
                    n_assets + *s as usize
                }));
                scopes.extend(spec.scope.assets.iter().map(|a| {
                    assert!((*a as usize) < n_assets, "asset index out of range");
                    *a as usize
                }));
            }
            for &scope in &scopes {
                for &role in &spec.roles {
                    assert!(usize::from(role) < parts.roles.len(), "role index out of range");
                    keyed.push((scope as u32, role, id));
                }
            }
            if let Some(s) = spec.schedule {
                assert!((s as usize) < parts.schedules.len(), "schedule index out of range");
            }
            let detail = spec.modbus.as_ref().map(|m| {
                let mut tables = [None; 4];
                for (t, list) in m.tables.iter().enumerate() {
                    if let Some(list) = list {
                        let start = ranges.len() as u32;
                        ranges.extend(merge_ranges(list));
                        tables[t] = Some((start, ranges.len() as u32));
                    }
                }
                details.push(Detail {
                    units: m.units,
                    functions: m.functions,
                    tables,
                    any_table: m.lists_addresses(),
                    values: m.values,
                });
                (details.len() - 1) as u32
            });
            rules.push(Rule {
                allow: spec.effect == Effect::Allow,
                protocol: spec.protocol,
                ops: spec.ops,
                schedule: spec.schedule,
                detail,
                limited: spec.max_session_secs.is_some() || spec.ticket_lifetime_secs.is_some(),
            });
        }
        keyed.sort_unstable();
        keyed.dedup();
        let mut scope_start = vec![0u32; global + 2];
        for (scope, _, _) in &keyed {
            scope_start[*scope as usize + 1] += 1;
        }
        for k in 1..scope_start.len() {
            scope_start[k] += scope_start[k - 1];
        }
        let entries =
            keyed.into_iter().map(|(_, role, rule)| Entry::new(role, rule, &parts.rules[rule as usize])).collect();
        let tables = Tables {
            asset_segment: parts.assets.iter().map(|(_, s)| *s).collect(),
            asset_index: parts.assets.iter().enumerate().map(|(i, (n, _))| (n.clone(), i as u32)).collect(),
            role_index: parts.roles.iter().enumerate().map(|(i, r)| (r.clone(), i as RoleId)).collect(),
            segments: parts.segments,
            scope_start,
            entries,
            rules,
            details,
            ranges,
            specs: parts.rules,
            schedules: parts.schedules,
        };
        let mut policy = Policy {
            roles: parts.roles,
            assets: parts.assets.into_iter().map(|(n, _)| n).collect(),
            rules: tables.specs.iter().map(|s| s.name.clone()).collect(),
            compiled: Compiled { tables: Arc::new(tables), times: Arc::default() },
        };
        policy.compiled.times = Arc::new(Times::new(times, policy.compiled.tables.schedules.len()));
        policy
    }

    /// The same policy with schedules compiled for another horizon (the
    /// rule tables are shared, not copied; names and indices are kept).
    ///
    /// # Panics
    /// If `times` does not have one entry per schedule.
    #[must_use]
    pub fn with_times(&self, times: ScheduleTimes) -> Policy {
        let mut p = self.clone();
        p.compiled.times = Arc::new(Times::new(times, self.compiled.tables.schedules.len()));
        p
    }

    /// Decides one query. Allocation-free: a few array reads, one binary
    /// search per (scope, role), and the candidate rules' fields.
    ///
    /// Measured with `accessgate-perf policy` (release, 10,000 assets,
    /// 100,000 rules, a shared 2-core VM): ~60 ns per request of one
    /// session (tables in cache), ~260 ns for random requests over all
    /// assets (cache misses).
    pub fn check(&self, q: &Query<'_>) -> Decision {
        let mut best = Best::default();
        self.candidates(q, true, |rule| self.consider(rule, q, &mut best));
        best.decision()
    }

    /// Calls `f` with every rule listed for the query's asset (directly,
    /// through its segment, or globally) and one of its roles; with
    /// `prefilter`, only those whose protocol and operation can match.
    #[inline]
    fn candidates(&self, q: &Query<'_>, prefilter: bool, mut f: impl FnMut(RuleId)) {
        let t = &*self.compiled.tables;
        let Some(&segment) = t.asset_segment.get(q.asset as usize) else { return };
        let n_assets = t.asset_segment.len();
        let scopes = [q.asset as usize, n_assets + segment as usize, n_assets + t.segments.len()];
        for scope in scopes {
            let (Some(&lo), Some(&hi)) = (t.scope_start.get(scope), t.scope_start.get(scope + 1)) else {
                continue;
            };
            let entries = &t.entries[lo as usize..hi as usize];
            for &role in q.roles {
                let first = entries.partition_point(|e| e.role < role);
                for e in &entries[first..] {
                    if e.role != role {
                        break;
                    }
                    if !prefilter || e.may_apply(q) {
                        f(e.rule);
                    }
                }
            }
        }
    }

    /// The operations some allow rule in force grants on the query's asset
    /// and protocol at `q.now`, less those a deny rule without detail takes
    /// away: what a user is told at connect. `q.op` and `q.modbus` are
    /// ignored; each request is still checked on its own. An allow rule
    /// whose limit has passed for `q.since` grants nothing.
    pub fn granted(&self, q: &Query<'_>) -> OpSet {
        let t = &*self.compiled.tables;
        let (mut allowed, mut denied) = (OpSet::EMPTY, OpSet::EMPTY);
        self.candidates(q, false, |id| {
            let rule = &t.rules[id as usize];
            let in_force = rule.schedule.is_none_or(|s| self.compiled.times.open_until(s as usize, q.now).is_some());
            if !in_force || rule.protocol.is_some_and(|p| p != q.protocol) {
                return;
            }
            if !inspected(q.protocol) && !rule.ops.contains(Op::Connect) {
                return;
            }
            if rule.allow && self.session_end(id, q).is_some_and(|end| q.now >= end) {
                return;
            }
            if rule.allow {
                allowed = OpSet(allowed.0 | rule.ops.0);
            } else if rule.detail.is_none() {
                denied = OpSet(denied.0 | rule.ops.0);
            }
        });
        OpSet(allowed.0 & !denied.0)
    }

    /// Folds one candidate rule into `best`.
    fn consider(&self, id: RuleId, q: &Query<'_>, best: &mut Best) {
        let t = &*self.compiled.tables;
        let rule = &t.rules[id as usize];
        if rule.protocol.is_some_and(|p| p != q.protocol) {
            return;
        }
        let connect = q.op == Op::Connect;
        if connect {
            if !rule.ops.contains(Op::Connect) && (!rule.allow || !inspected(q.protocol)) {
                return;
            }
        } else if !rule.ops.contains(q.op) {
            return;
        }
        // Connecting carries no detail: only the operations do.
        let detail = if connect { None } else { rule.detail.map(|d| &t.details[d as usize]) };
        if let Some(d) = detail {
            match &q.modbus {
                // Detail the request does not carry cannot be checked:
                // an allow does not apply, a deny does.
                None if rule.allow => return,
                None => {}
                Some(m) if !d.units.contains(m.unit) || !d.functions.contains(m.function) => return,
                Some(_) => {}
            }
        }
        let mut until = match rule.schedule {
            None => u64::MAX,
            Some(s) => match self.compiled.times.open_until(s as usize, q.now) {
                Some(until) => until,
                None => {
                    if rule.allow {
                        best.deny(Denial::OutsideWindow(id));
                    }
                    return;
                }
            },
        };
        if let (Some(d), Some(m)) = (detail, &q.modbus) {
            if rule.allow {
                if d.any_table && !(self.inside(d, m.read) && self.inside(d, m.write)) {
                    best.deny(Denial::AddressOutOfRange(id));
                    return;
                }
                if let Some((lo, hi)) = d.values {
                    let in_bounds = match m.function {
                        6 | 16 | 23 => values(m.values).all(|v| (lo..=hi).contains(&v)),
                        22 => false,
                        _ => true,
                    };
                    if !in_bounds {
                        best.deny(Denial::ValueOutOfBounds(id));
                        return;
                    }
                }
            } else {
                if d.any_table && !(self.touches(d, m.read) || self.touches(d, m.write)) {
                    return;
                }
                if let Some((lo, hi)) = d.values {
                    // A mask write (22) can set any value: it may hit.
                    let hit = match m.function {
                        6 | 16 | 23 => values(m.values).any(|v| (lo..=hi).contains(&v)),
                        22 => true,
                        _ => false,
                    };
                    if !hit {
                        return;
                    }
                }
            }
        }
        if rule.allow {
            if let Some(end) = self.session_end(id, q) {
                if q.now >= end {
                    best.deny(Denial::LimitReached(id));
                    return;
                }
                until = until.min(end);
            }
            best.permit(Permit { rule: id, until });
        } else {
            best.deny_rule(id);
        }
    }

    /// When allow rule `id` stops permitting the query's session (its
    /// `max_session_secs` and `ticket_lifetime_secs`), if it has a limit
    /// and the query names a session.
    #[inline]
    fn session_end(&self, id: RuleId, q: &Query<'_>) -> Option<u64> {
        let t = &*self.compiled.tables;
        if !t.rules[id as usize].limited {
            return None;
        }
        let (since, spec) = (q.since?, t.specs.get(id as usize)?);
        Some(spec.session_end(since.granted, since.ticket_issued))
    }

    /// Whether the span lies inside one listed range of its table.
    fn inside(&self, d: &Detail, span: Option<(Table, u16, u16)>) -> bool {
        let Some((table, first, count)) = span else { return true };
        let Some((lo, hi)) = d.tables[table.index()] else { return false };
        let ranges = &self.compiled.tables.ranges[lo as usize..hi as usize];
        let last = u32::from(first) + u32::from(count.max(1)) - 1;
        let i = ranges.partition_point(|r| r.0 <= first);
        i > 0 && u32::from(ranges[i - 1].1) >= last
    }

    /// Whether the span overlaps a listed range of its table.
    fn touches(&self, d: &Detail, span: Option<(Table, u16, u16)>) -> bool {
        let Some((table, first, count)) = span else { return false };
        let Some((lo, hi)) = d.tables[table.index()] else { return false };
        let ranges = &self.compiled.tables.ranges[lo as usize..hi as usize];
        let last = u32::from(first) + u32::from(count.max(1)) - 1;
        let i = ranges.partition_point(|r| r.1 < first);
        i < ranges.len() && u32::from(ranges[i].0) <= last
    }

    /// The Modbus exception code a denial is answered with: the rule's
    /// override, else 01 (illegal function) for a function not allowed,
    /// 02 (illegal data address) for an address out of range, 03 (illegal
    /// data value) for a value out of bounds (Modbus Application Protocol
    /// 1.1b3 §7).
    pub fn exception(&self, denial: Denial) -> u8 {
        denial
            .rule()
            .and_then(|r| self.compiled.tables.specs.get(r as usize))
            .and_then(|s| s.modbus.as_ref())
            .and_then(|m| m.exception)
            .unwrap_or_else(|| denial.modbus_exception())
    }

    /// The role ids of role names (unknown names are skipped).
    pub fn role_ids(&self, names: &[String]) -> Vec<RoleId> {
        let mut ids: Vec<RoleId> =
            names.iter().filter_map(|n| self.compiled.tables.role_index.get(n).copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The asset index of a name.
    pub fn asset_id(&self, name: &str) -> Option<u32> {
        self.compiled.tables.asset_index.get(name).copied()
    }

    /// The rule as compiled.
    pub fn rule(&self, id: RuleId) -> Option<&RuleSpec> {
        self.compiled.tables.specs.get(id as usize)
    }

    /// The schedules, by index.
    pub fn schedules(&self) -> &[ScheduleSpec] {
        &self.compiled.tables.schedules
    }

    /// The segment names, by index.
    pub fn segments(&self) -> &[String] {
        &self.compiled.tables.segments
    }

    /// The segment an asset is in.
    pub fn asset_segment(&self, asset: u32) -> Option<u32> {
        self.compiled.tables.asset_segment.get(asset as usize).copied()
    }

    /// The compiled horizon `[from, to)`.
    pub fn horizon(&self) -> (u64, u64) {
        (self.compiled.times.from, self.compiled.times.to)
    }

    /// Whether the control thread should recompile the schedules: fewer
    /// than seven days of horizon are left, or the clock went back before
    /// it. Cheap: call it every few seconds.
    pub fn needs_refresh(&self, now: u64) -> bool {
        let t = &self.compiled.times;
        !self.compiled.tables.schedules.is_empty()
            && (now < t.from || now.saturating_add(HORIZON_AHEAD - 86_400) > t.to)
    }

    /// The window of `schedule` open at `now`, if any.
    pub fn window(&self, schedule: u32, now: u64) -> Option<Window> {
        let t = &self.compiled.times;
        let s = schedule as usize;
        if *t.always.get(s)? {
            return Some(Window { start: 0, end: u64::MAX });
        }
        let iv = t.intervals(s);
        let i = iv.partition_point(|w| w.0 <= now);
        (i > 0 && now < iv[i - 1].1).then(|| Window { start: iv[i - 1].0, end: iv[i - 1].1 })
    }

    /// The next time `schedule` opens after `now`, inside the horizon.
    pub fn next_opening(&self, schedule: u32, now: u64) -> Option<u64> {
        let t = &self.compiled.times;
        let s = schedule as usize;
        if *t.always.get(s)? {
            return Some(now);
        }
        let iv = t.intervals(s);
        iv.get(iv.partition_point(|w| w.0 <= now)).map(|w| w.0)
    }
}

impl Times {
    fn new(times: ScheduleTimes, schedules: usize) -> Self {
        assert_eq!(times.schedules.len(), schedules, "one entry per schedule");
        let mut t = Times { from: times.from, to: times.to, start: vec![0], ..Times::default() };
        for s in times.schedules {
            t.always.push(s.is_none());
            if let Some(list) = s {
                let mut list: Vec<(u64, u64)> = list
                    .into_iter()
                    .map(|(a, b)| (a.max(times.from), b.min(times.to)))
                    .filter(|(a, b)| a < b)
                    .collect();
                list.sort_unstable();
                let mut merged: Vec<(u64, u64)> = Vec::with_capacity(list.len());
                for (a, b) in list {
                    match merged.last_mut() {
                        Some(last) if a <= last.1 => last.1 = last.1.max(b),
                        _ => merged.push((a, b)),
                    }
                }
                t.intervals.extend(merged);
            }
            t.start.push(t.intervals.len() as u32);
        }
        t
    }

    fn intervals(&self, s: usize) -> &[(u64, u64)] {
        match (self.start.get(s), self.start.get(s + 1)) {
            (Some(&a), Some(&b)) => &self.intervals[a as usize..b as usize],
            _ => &[],
        }
    }

    /// When the window open at `now` closes, or `None` if closed.
    fn open_until(&self, s: usize, now: u64) -> Option<u64> {
        if *self.always.get(s)? {
            return Some(u64::MAX);
        }
        let iv = self.intervals(s);
        let i = iv.partition_point(|w| w.0 <= now);
        (i > 0 && now < iv[i - 1].1).then(|| iv[i - 1].1)
    }
}

/// The best answer so far while the candidates are folded in.
#[derive(Debug, Default)]
struct Best {
    deny: Option<RuleId>,
    permit: Option<Permit>,
    denial: Option<Denial>,
}

impl Best {
    fn deny_rule(&mut self, id: RuleId) {
        self.deny = Some(self.deny.map_or(id, |d| d.min(id)));
    }

    fn permit(&mut self, p: Permit) {
        let better = match self.permit {
            None => true,
            Some(b) => p.until > b.until || (p.until == b.until && p.rule < b.rule),
        };
        if better {
            self.permit = Some(p);
        }
    }

    fn deny(&mut self, d: Denial) {
        let better = match self.denial {
            None => true,
            Some(b) => d.rank() > b.rank() || (d.rank() == b.rank() && d.rule() < b.rule()),
        };
        if better {
            self.denial = Some(d);
        }
    }

    fn decision(&self) -> Decision {
        match (self.deny, self.permit) {
            (Some(r), _) => Decision::Deny(Denial::DenyRule(r)),
            (None, Some(p)) => Decision::Permit(p),
            (None, None) => Decision::Deny(self.denial.unwrap_or(Denial::NoRule)),
        }
    }
}

/// Whether the gate checks this protocol request by request (else a
/// session is all-or-nothing and needs an explicit `connect`).
pub fn inspected(p: Protocol) -> bool {
    p != Protocol::Tcp
}

/// Register values of a write, big-endian pairs.
fn values(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes.chunks_exact(2).map(|v| u16::from_be_bytes([v[0], v[1]]))
}

/// Sorts inclusive ranges and merges overlapping or adjacent ones.
pub fn merge_ranges(list: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut v: Vec<(u16, u16)> = list.iter().copied().filter(|(a, b)| a <= b).collect();
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two assets in one segment, roles r0 and r1; the control crate's
    /// tests cover the policy language, these the index and the folding.
    fn policy(rules: Vec<RuleSpec>) -> Policy {
        let parts = PolicyParts {
            roles: vec!["r0".into(), "r1".into()],
            segments: vec!["s".into()],
            assets: vec![("a0".into(), 0), ("a1".into(), 0)],
            schedules: vec![ScheduleSpec {
                name: "w".into(),
                timezone: "UTC".into(),
                windows: vec![],
                holidays: vec![],
            }],
            rules,
        };
        Policy::build(parts, ScheduleTimes { from: 0, to: 1000, schedules: vec![Some(vec![(100, 200), (200, 300)])] })
    }

    fn rule(effect: Effect, scope: AssetScope, ops: &[Op]) -> RuleSpec {
        RuleSpec {
            name: String::new(),
            origin: String::new(),
            effect,
            roles: vec![0],
            scope,
            protocol: None,
            ops: ops.iter().fold(OpSet::EMPTY, |s, o| s.with(*o)),
            schedule: None,
            modbus: None,
            max_session_secs: None,
            ticket_lifetime_secs: None,
        }
    }

    fn q(roles: &[RoleId], asset: u32, op: Op, now: u64) -> Query<'_> {
        Query { roles, asset, protocol: Protocol::Modbus, op, modbus: None, now, since: None }
    }

    #[test]
    fn scopes_roles_deny_wins_and_windows() {
        let asset = |a| AssetScope { assets: vec![a], ..AssetScope::default() };
        let seg = AssetScope { segments: vec![0], ..AssetScope::default() };
        let all = AssetScope { all: true, ..AssetScope::default() };
        let mut windowed = rule(Effect::Allow, asset(1), &[Op::Write]);
        windowed.schedule = Some(0);
        let p = policy(vec![
            rule(Effect::Allow, seg, &[Op::Read]),
            windowed,
            rule(Effect::Deny, all, &[Op::Program]),
            rule(Effect::Allow, asset(0), &[Op::Program]),
        ]);
        let permit = |rule, until| Decision::Permit(Permit { rule, until });
        assert_eq!(p.check(&q(&[0], 0, Op::Read, 0)), permit(0, u64::MAX));
        assert_eq!(p.check(&q(&[1], 0, Op::Read, 0)), Decision::Deny(Denial::NoRule));
        assert_eq!(p.check(&q(&[1, 0], 1, Op::Read, 0)), permit(0, u64::MAX));
        assert_eq!(p.check(&q(&[0], 7, Op::Read, 0)), Decision::Deny(Denial::NoRule), "unknown asset");
        // Adjacent intervals merge: open [100, 300).
        assert_eq!(p.check(&q(&[0], 1, Op::Write, 99)), Decision::Deny(Denial::OutsideWindow(1)));
        assert_eq!(p.check(&q(&[0], 1, Op::Write, 100)), permit(1, 300));
        assert_eq!(p.check(&q(&[0], 1, Op::Write, 299)), permit(1, 300));
        assert_eq!(p.check(&q(&[0], 1, Op::Write, 300)), Decision::Deny(Denial::OutsideWindow(1)));
        assert_eq!(p.check(&q(&[0], 0, Op::Write, 150)), Decision::Deny(Denial::NoRule));
        // Deny wins over the asset's allow; connect is not denied by it.
        assert_eq!(p.check(&q(&[0], 0, Op::Program, 0)), Decision::Deny(Denial::DenyRule(2)));
        assert_eq!(p.check(&q(&[0], 0, Op::Connect, 0)), permit(0, u64::MAX));
        // Connect during the window only, through the windowed rule; the
        // read rule keeps it open longer.
        assert_eq!(p.check(&q(&[0], 1, Op::Connect, 150)), permit(0, u64::MAX));
        let day = 86_400;
        let fresh = p.with_times(ScheduleTimes { from: 9 * day, to: 18 * day, schedules: vec![None] });
        assert!(p.needs_refresh(500) && !fresh.needs_refresh(10 * day) && fresh.needs_refresh(11 * day + 1));
        assert!(fresh.needs_refresh(9 * day - 1), "the clock went back");
        assert_eq!(fresh.check(&q(&[0], 1, Op::Write, 5)), permit(1, u64::MAX), "always open");
    }

    #[test]
    fn a_deny_rule_with_value_bounds_also_stops_mask_writes() {
        // Operators may write holding registers; a deny rule forbids
        // setpoints 500..=1000 (e.g. a resonance band).
        let all = AssetScope { all: true, ..AssetScope::default() };
        let allow = rule(Effect::Allow, all.clone(), &[Op::Write]);
        let mut deny = rule(Effect::Deny, all, &[Op::Write]);
        deny.modbus = Some(ModbusScope { values: Some((500, 1000)), ..ModbusScope::default() });
        let p = policy(vec![allow, deny]);
        let check = |function, values: &'static [u8]| {
            let d =
                ModbusDetail { unit: 1, function, read: None, write: Some((Table::HoldingRegisters, 10, 1)), values };
            p.check(&Query { modbus: Some(d), ..q(&[0], 0, Op::Write, 0) })
        };
        // FC 6 with 700: denied, as intended.
        assert_eq!(check(6, &[0x02, 0xbc]), Decision::Deny(Denial::DenyRule(1)));
        // FC 22 (and_mask 0x0000, or_mask 700) writes exactly the same 700.
        assert_eq!(check(22, &[]), Decision::Deny(Denial::DenyRule(1)), "a mask write slips past the deny rule");
    }

    #[test]
    fn ranges_merge_and_search() {
        assert_eq!(merge_ranges(&[(150, 199), (100, 149), (10, 20), (15, 30)]), [(10, 30), (100, 199)]);
        let mut m = ModbusScope::default();
        m.tables[3] = Some(vec![(100, 149), (150, 199), (300, 300)]);
        let mut allow = rule(Effect::Allow, AssetScope { all: true, ..AssetScope::default() }, &[Op::Write]);
        allow.modbus = Some(m);
        let p = policy(vec![allow]);
        let write = |first, count| ModbusDetail {
            unit: 1,
            function: 16,
            read: None,
            write: Some((Table::HoldingRegisters, first, count)),
            values: &[],
        };
        let check = |d| p.check(&Query { modbus: Some(d), ..q(&[0], 0, Op::Write, 0) });
        assert!(matches!(check(write(100, 100)), Decision::Permit(_)), "merged across 149/150");
        assert_eq!(check(write(199, 2)), Decision::Deny(Denial::AddressOutOfRange(0)));
        assert!(matches!(check(write(300, 1)), Decision::Permit(_)));
        assert_eq!(check(write(65535, 1)), Decision::Deny(Denial::AddressOutOfRange(0)));
        let coil = ModbusDetail { write: Some((Table::Coils, 100, 1)), ..write(0, 0) };
        assert_eq!(check(coil), Decision::Deny(Denial::AddressOutOfRange(0)), "unlisted table is closed");
    }
}
