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

use crate::snapshot::Protocol;

/// An index into [`Policy::roles`].
pub type RoleId = u16;
/// An index into [`Policy::rules`].
pub type RuleId = u32;

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
}

/// A Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Coils,
    DiscreteInputs,
    InputRegisters,
    HoldingRegisters,
}

/// The Modbus detail of a request, for rules that constrain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusDetail<'a> {
    pub unit: u8,
    pub function: u8,
    /// The table and address range read, if any.
    pub read: Option<(Table, u16, u16)>,
    /// The table and address range written, if any.
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
}

/// What allowed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    pub rule: RuleId,
    /// Unix time the permitting window closes (`u64::MAX`: always open).
    pub until: u64,
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Permit(Permit),
    Deny(Denial),
}

/// The compiled policy. The control crate builds it; see `control::policy`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Role names by [`RoleId`].
    pub roles: Vec<String>,
    /// Asset names by index (the same order as the snapshot's endpoints'
    /// `asset` names resolve to).
    pub assets: Vec<String>,
    /// Rule names (or `file:line`) by [`RuleId`], for audit and explain.
    pub rules: Vec<String>,
    /// The compiled rule tables (filled by the compiler).
    pub compiled: Compiled,
}

/// Opaque compiled tables; the compiler owns their layout.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    pub(crate) _private: (),
}

impl Policy {
    /// Decides one query. Allocation-free.
    pub fn check(&self, _q: &Query<'_>) -> Decision {
        Decision::Deny(Denial::NoRule)
    }

    /// The role ids of role names (unknown names are skipped).
    pub fn role_ids(&self, names: &[String]) -> Vec<RoleId> {
        names.iter().filter_map(|n| self.roles.iter().position(|r| r == n).map(|i| i as RoleId)).collect()
    }

    /// The asset index of a name.
    pub fn asset_id(&self, name: &str) -> Option<u32> {
        self.assets.iter().position(|a| a == name).map(|i| i as u32)
    }
}
