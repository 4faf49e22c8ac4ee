//! The gate's TOML config: interfaces, segments, assets and their services,
//! and the policy over them (roles, schedules, rules: see
//! [`crate::policy`]).
//!
//! Loading collects every error before failing and reports each with
//! `file:line:column`, the thing named, and a hint (nearest existing name,
//! the allowed range). A config that loads becomes a [`Snapshot`] for the dp
//! cores, carrying the compiled policy; nothing else of the file reaches the
//! hot path.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;

use dataplane::snapshot::{Endpoint, Ipv4Net, LinkSpec, Protocol, SegmentSpec, Side, Snapshot};
use serde::Deserialize;
use toml::Spanned;

use crate::policy;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// Every error of one load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gate: Spanned<RawGate>,
    #[serde(default)]
    segment: Vec<Spanned<RawSegment>>,
    #[serde(default)]
    asset: Vec<Spanned<RawAsset>>,
    #[serde(default)]
    role: Vec<Spanned<policy::ast::RawRole>>,
    #[serde(default)]
    schedule: Vec<Spanned<policy::ast::RawSchedule>>,
    #[serde(default)]
    rule: Vec<Spanned<policy::ast::RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    overlay: Spanned<String>,
    north_interface: Spanned<String>,
    north_address: Spanned<String>,
    north_gateway: Option<Spanned<String>>,
    north_vlan: Option<Spanned<i64>>,
    /// The gate's own login endpoint, `ip:port` (default: overlay .1, port 443).
    login: Option<Spanned<String>>,
    /// Lifetime of tickets minted at login (default 8 h, at most 7 days).
    ticket_lifetime_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSegment {
    name: Spanned<String>,
    overlay: Spanned<String>,
    south_interface: Spanned<String>,
    south_address: Spanned<String>,
    south_gateway: Option<Spanned<String>>,
    vlan: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsset {
    name: Spanned<String>,
    segment: Spanned<String>,
    overlay: Spanned<String>,
    underlay: Spanned<String>,
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    protocol: Spanned<String>,
    /// Port on the endpoint; defaults to the protocol's IANA secure port
    /// (Modbus/TCP Security 802, DNP3-TLS 19999, EtherNet/IP-TLS 2221).
    port: Option<Spanned<i64>>,
    asset_port: Option<Spanned<i64>>,
    /// Obsolete: who may connect is a `[[rule]]` now. Accepted only to
    /// say so.
    roles: Option<Spanned<toml::Value>>,
}

/// A loaded, validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Interface names by link index (0 = north).
    pub interfaces: Vec<String>,
    /// The dp cores' view, with the compiled policy in `snapshot.policy`.
    pub snapshot: Snapshot,
    /// Things that load but deserve a look (a schedule that stays closed
    /// for the days ahead), with positions; `policy check` prints them.
    pub warnings: Vec<ConfigError>,
}

/// Reads and validates `path`; the policy is compiled for now.
///
/// # Errors
/// Every problem found, each with its position.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_at(path, crate::identity::unix_now())
}

/// [`load`] with the policy's schedules compiled around `now` (Unix
/// seconds).
///
/// # Errors
/// Every problem found, each with its position.
pub fn load_at(path: &Path, now: u64) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError { file: file.clone(), line: 0, column: 0, message: format!("cannot read: {e}") }])
    })?;
    parse_at(&file, &text, now)
}

/// The errors (and warnings) of one parse, positioned in `text`.
pub(crate) struct Errors<'a> {
    file: &'a str,
    text: &'a str,
    /// Byte offset of each line's start (a policy of 100,000 rules asks
    /// for a line per rule: no rescanning the text).
    line_starts: Vec<usize>,
    list: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Errors<'_> {
    /// An error at the start of `span`.
    pub(crate) fn at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let e = self.error(span, message);
        self.list.push(e);
    }

    /// A warning at the start of `span`.
    pub(crate) fn warn(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let e = self.error(span, message);
        self.warnings.push(e);
    }

    fn error(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.line_col(span.start);
        ConfigError { file: self.file.to_string(), line, column, message: message.into() }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|s| *s <= offset);
        let start = self.line_starts[line - 1];
        (line, self.text[start..offset].chars().count() + 1)
    }

    /// The line of a byte offset.
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.line_col(offset).0
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |nl| nl + 1)..].chars().count() + 1;
    (line, column)
}

/// Parses config text; `file` names it in errors. The policy is compiled
/// for now.
///
/// # Errors
/// Every problem found, each with its position.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    parse_at(file, text, crate::identity::unix_now())
}

/// [`parse`] with the policy's schedules compiled around `now` (Unix
/// seconds): tests and `policy explain --at`.
///
/// # Errors
/// Every problem found, each with its position.
pub fn parse_at(file: &str, text: &str, now: u64) -> Result<Config, ConfigErrors> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }])
    })?;
    let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
    let mut err = Errors { file, text, line_starts, list: Vec::new(), warnings: Vec::new() };

    let gate = raw.gate.get_ref();
    let overlay = prefix(&mut err, &gate.overlay, "gate overlay");
    if let Some(o) = overlay {
        if !Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10).is_some_and(|cgnat| cgnat.covers(o)) {
            err.at(gate.overlay.span(), format!("overlay {o} is outside 100.64.0.0/10 (the shared address space reserved for overlays; the lab uses 100.64.0.0/16)"));
        }
    }
    let north_address = prefix(&mut err, &gate.north_address, "north address");
    if let (Some(o), Some(n)) = (overlay, north_address) {
        if o.contains(n.addr) {
            err.at(
                gate.north_address.span(),
                format!(
                    "north address {} is inside the overlay {o}; it must be an underlay address users can reach",
                    n.addr
                ),
            );
        }
    }
    let north_gateway = gate.north_gateway.as_ref().and_then(|g| address(&mut err, g, "north gateway"));
    if let Some(n) = north_address {
        let gateway = north_gateway.zip(gate.north_gateway.as_ref().map(Spanned::span));
        check_interface(&mut err, "north", n, gate.north_address.span(), gateway);
    }
    let north_vlan = gate.north_vlan.as_ref().and_then(|v| vlan(&mut err, v));
    let north_if = gate.north_interface.get_ref().clone();
    if north_if.is_empty() {
        err.at(gate.north_interface.span(), "north_interface is empty");
    }

    let mut interfaces = vec![north_if.clone()];
    let mut links = vec![LinkSpec { name: north_if.clone(), side: Side::North }];
    let mut segments = Vec::new();
    let mut seg_index: HashMap<String, usize> = HashMap::new();
    for s in &raw.segment {
        let s = s.get_ref();
        let name = s.name.get_ref().clone();
        if seg_index.contains_key(&name) {
            err.at(s.name.span(), format!("segment {name:?} is defined twice"));
            continue;
        }
        let seg_overlay = prefix(&mut err, &s.overlay, "segment overlay");
        if let (Some(o), Some(so)) = (overlay, seg_overlay) {
            if !o.covers(so) {
                err.at(s.overlay.span(), format!("segment {name:?} overlay {so} is outside the gate overlay {o}"));
            }
        }
        if let Some(so) = seg_overlay {
            if let Some(other) = segments.iter().find(|x: &&SegmentSpec| x.overlay.covers(so) || so.covers(x.overlay)) {
                err.at(
                    s.overlay.span(),
                    format!("segment {name:?} overlay {so} overlaps segment {:?} ({})", other.name, other.overlay),
                );
            }
        }
        let south_address = prefix(&mut err, &s.south_address, "south address");
        if let (Some(o), Some(sa)) = (overlay, south_address) {
            if o.contains(sa.addr) {
                err.at(s.south_address.span(), format!("south address {} is inside the overlay {o}", sa.addr));
            }
        }
        let south_gateway = s.south_gateway.as_ref().and_then(|g| address(&mut err, g, "south gateway"));
        if let Some(sa) = south_address {
            let gateway = south_gateway.zip(s.south_gateway.as_ref().map(Spanned::span));
            check_interface(&mut err, &format!("segment {name:?}: south"), sa, s.south_address.span(), gateway);
        }
        let seg_vlan = s.vlan.as_ref().and_then(|v| vlan(&mut err, v));
        let ifname = s.south_interface.get_ref().clone();
        if ifname == north_if && north_vlan == seg_vlan {
            err.at(s.south_interface.span(), format!("segment {name:?} uses the north interface {ifname:?} without a VLAN of its own; north and south must be separate links or VLANs"));
        }
        let link = match interfaces.iter().position(|i| *i == ifname) {
            Some(0) if ifname == north_if => {
                // Same NIC as north, separated by VLAN: not supported by this build.
                err.at(s.south_interface.span(), "north and south on one interface (VLAN-separated) is not supported yet; use a separate south interface");
                0
            }
            Some(i) => i,
            None => {
                interfaces.push(ifname.clone());
                links.push(LinkSpec { name: ifname, side: Side::South });
                interfaces.len() - 1
            }
        };
        if let Some(sa) = south_address {
            // The dataplane tells segments on one link apart by their south
            // address: an asset's reply would go to the first one.
            let same_link = segments.iter().find(|x: &&SegmentSpec| {
                x.south_link == link
                    && x.south_vlan == seg_vlan
                    && (x.south_address.contains(sa.addr) || sa.contains(x.south_address.addr))
            });
            if let Some(other) = same_link {
                err.at(
                    s.south_address.span(),
                    format!(
                        "segment {name:?}: south subnet {sa} overlaps segment {:?} ({}) on the same link; give each segment its own subnet or VLAN",
                        other.name, other.south_address
                    ),
                );
            }
        }
        if let (Some(o), Some(sa)) = (seg_overlay, south_address) {
            seg_index.insert(name.clone(), segments.len());
            segments.push(SegmentSpec {
                name,
                overlay: o,
                south_link: link,
                south_address: sa,
                south_gateway,
                south_vlan: seg_vlan,
            });
        } else {
            seg_index.insert(name, usize::MAX);
        }
    }
    if raw.segment.is_empty() {
        err.at(raw.gate.span(), "no [[segment]] defined: the gate would have nothing to protect");
    }

    let mut endpoints: Vec<Endpoint> = Vec::new();
    let mut asset_names = HashSet::new();
    // Every defined segment, valid or not, so a rule naming a segment with
    // errors does not add one more; with no errors this is `segments`.
    let mut inventory = policy::ast::Inventory { segments: Vec::new(), assets: Vec::new() };
    for s in &raw.segment {
        let name = s.get_ref().name.get_ref();
        if !inventory.segments.contains(name) {
            inventory.segments.push(name.clone());
        }
    }
    let mut endpoint_spans: HashMap<(Ipv4Addr, u16), String> = HashMap::new();
    let mut underlay_users: HashMap<(usize, Ipv4Addr, u16), (String, String)> = HashMap::new();
    for a in &raw.asset {
        let a = a.get_ref();
        let name = a.name.get_ref().clone();
        check_name(&mut err, "asset name", &a.name);
        let first_definition = asset_names.insert(name.clone());
        if !first_definition {
            err.at(a.name.span(), format!("asset {name:?} is defined twice"));
        }
        let seg_name = a.segment.get_ref();
        let seg = match seg_index.get(seg_name) {
            Some(&i) => Some(i),
            None => {
                let hint = nearest(seg_name, seg_index.keys().map(String::as_str))
                    .map_or(String::new(), |n| format!(" (did you mean {n:?}?)"));
                err.at(a.segment.span(), format!("asset {name:?}: segment {seg_name:?} is not defined{hint}"));
                None
            }
        };
        let ov = address(&mut err, &a.overlay, "asset overlay address");
        let un = address(&mut err, &a.underlay, "asset underlay address");
        if let (Some(spec), Some(un)) = (seg.and_then(|i| segments.get(i)), un) {
            let south = spec.south_address;
            let why = if un == south.addr {
                Some(format!("{un} is the gate's own south address"))
            } else if south.contains(un) {
                not_a_host(south, un)
            } else if spec.south_gateway.is_none() {
                Some(format!(
                    "{un} is outside segment {:?}'s south subnet {south} and the segment has no south_gateway: the gate could not reach it",
                    spec.name
                ))
            } else {
                None
            };
            if let Some(why) = why {
                err.at(a.underlay.span(), format!("asset {name:?}: underlay address {why}"));
            }
        }
        if let (Some(i), Some(ov)) = (seg, ov) {
            if let Some(spec) = segments.get(i) {
                if !spec.overlay.contains(ov) {
                    err.at(
                        a.overlay.span(),
                        format!(
                            "asset {name:?}: overlay address {ov} is outside its segment {:?} ({})",
                            spec.name, spec.overlay
                        ),
                    );
                } else if ov == spec.overlay.network() || spec.overlay.is_edge(ov) {
                    err.at(
                        a.overlay.span(),
                        format!("asset {name:?}: {ov} is the network or broadcast address of {}", spec.overlay),
                    );
                }
            }
        }
        if a.service.is_empty() {
            err.at(a.name.span(), format!("asset {name:?} has no [[asset.service]]: nothing to connect to"));
        }
        let mut service_names = HashSet::new();
        let mut protocols = 0u8;
        for svc in &a.service {
            let svc = svc.get_ref();
            check_name(&mut err, &format!("asset {name:?}: service name"), &svc.name);
            if !service_names.insert(svc.name.get_ref().clone()) {
                err.at(svc.name.span(), format!("asset {name:?}: service {:?} is defined twice", svc.name.get_ref()));
            }
            let protocol = match svc.protocol.get_ref().parse::<Protocol>() {
                Ok(p) => {
                    protocols |= policy::ast::proto_bit(p);
                    Some(p)
                }
                Err(()) => {
                    let p = svc.protocol.get_ref();
                    let hint = nearest(p, ["modbus", "s7", "dnp3", "enip", "tcp"].into_iter())
                        .map_or(String::new(), |n| format!(" (did you mean {n:?}?)"));
                    err.at(
                        svc.protocol.span(),
                        format!("unknown protocol {p:?}{hint}; expected modbus, s7, dnp3, enip or tcp"),
                    );
                    None
                }
            };
            let port = match (&svc.port, protocol) {
                (Some(p), _) => tcp_port(&mut err, p, "port").unwrap_or(0),
                (None, Some(p)) => match secure_port(p) {
                    Some(port) => port,
                    None => {
                        err.at(
                            svc.name.span(),
                            format!(
                                "service {:?}: protocol {} has no standard secure port; set `port`",
                                svc.name.get_ref(),
                                p.as_str()
                            ),
                        );
                        0
                    }
                },
                (None, None) => 0,
            };
            let port_span = svc.port.as_ref().map_or(svc.name.span(), Spanned::span);
            let asset_port = match &svc.asset_port {
                Some(p) => Some(tcp_port(&mut err, p, "asset_port").unwrap_or(0)),
                None => protocol.and_then(plain_port),
            };
            let Some(asset_port) = asset_port else {
                err.at(
                    svc.name.span(),
                    format!("service {:?}: set `asset_port` (the port the asset listens on)", svc.name.get_ref()),
                );
                continue;
            };
            if let Some(r) = &svc.roles {
                err.at(
                    r.span(),
                    format!(
                        "service {:?}: `roles` on a service is obsolete; write a [[rule]] with roles = {}, assets = [{name:?}] and the operations they need (see config/lab.toml)",
                        svc.name.get_ref(),
                        r.get_ref()
                    ),
                );
            }
            if let Some(ov) = ov {
                if let Some(prev) = endpoint_spans.insert((ov, port), name.clone()) {
                    err.at(port_span.clone(), format!("endpoint {ov}:{port} is already used by asset {prev:?}"));
                }
            }
            // Two endpoints to one asset service would be two names for it,
            // and a rule written for one would not cover the other.
            if let (Some(segment), Some(un)) = (seg, un) {
                let svc_name = svc.name.get_ref();
                if let Some((prev, prev_svc)) =
                    underlay_users.insert((segment, un, asset_port), (name.clone(), svc_name.clone()))
                {
                    err.at(
                        svc.asset_port.as_ref().map_or(svc.name.span(), Spanned::span),
                        format!(
                            "asset {name:?} service {svc_name:?}: {un}:{asset_port} is already asset {prev:?} service {prev_svc:?}; one asset service has one endpoint"
                        ),
                    );
                }
            }
            if let (Some(segment), Some(ov), Some(un), Some(protocol)) = (seg, ov, un, protocol) {
                if segment != usize::MAX && port != 0 && asset_port != 0 {
                    endpoints.push(Endpoint {
                        asset: name.clone(),
                        service: svc.name.get_ref().clone(),
                        segment,
                        overlay: SocketAddrV4::new(ov, port),
                        underlay: SocketAddrV4::new(un, asset_port),
                        protocol,
                    });
                }
            }
        }
        if first_definition {
            let segment = inventory.segments.iter().position(|s| s == seg_name).map(|s| s as u32);
            inventory.assets.push((name, segment, protocols));
        }
    }
    let validated = policy::ast::validate(file, &inventory, &raw.role, &raw.schedule, &raw.rule, &mut err);

    let login = match (&gate.login, overlay) {
        (Some(l), _) => match l.get_ref().parse::<SocketAddrV4>() {
            Ok(a) if a.port() == 0 => {
                err.at(l.span(), "login: port 0 is not a TCP port; use 443");
                None
            }
            Ok(a) => Some((a, l.span())),
            Err(_) => {
                err.at(l.span(), format!("login: {:?} is not an ip:port", l.get_ref()));
                None
            }
        },
        // The overlay's first address; a /32 at 255.255.255.255 has none.
        (None, Some(o)) => match u32::from(o.network()).checked_add(1) {
            Some(first) => Some((SocketAddrV4::new(Ipv4Addr::from(first), 443), raw.gate.span())),
            None => {
                err.at(raw.gate.span(), format!("overlay {o} leaves no address for the login endpoint: set `login`"));
                None
            }
        },
        (None, None) => None,
    };
    if let Some((l, span)) = &login {
        if let Some(o) = overlay {
            if !o.contains(*l.ip()) {
                err.at(span.clone(), format!("login endpoint {l} is outside the overlay {o}"));
            }
        }
        if let Some(seg) = segments.iter().find(|s| s.overlay.contains(*l.ip())) {
            err.at(
                span.clone(),
                format!("login endpoint {l} is inside segment {:?}: give the gate an address of its own", seg.name),
            );
        }
    }
    let ticket_lifetime = match &gate.ticket_lifetime_secs {
        Some(t) if !(60..=7 * 86_400).contains(t.get_ref()) => {
            err.at(
                t.span(),
                format!("ticket_lifetime_secs {} is out of range 60..=604800 (1 minute to 7 days)", t.get_ref()),
            );
            0
        }
        Some(t) => *t.get_ref(),
        None => 8 * 3600,
    };

    if !err.list.is_empty() {
        err.list.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(err.list));
    }
    let compiled = policy::compile(validated.parts, now);
    for (s, span) in validated.schedule_spans.into_iter().enumerate() {
        let (from, to) = compiled.horizon();
        if compiled.next_opening(s as u32, from).is_none() {
            let spec = &compiled.schedules()[s];
            err.warn(
                span,
                format!(
                    "schedule {:?} stays closed from {} to {}: every window in that time falls on a holiday",
                    spec.name,
                    policy::format_time(from, Some(&spec.timezone)),
                    policy::format_time(to, Some(&spec.timezone))
                ),
            );
        }
    }
    for w in &err.warnings {
        log::warn!("{w}");
    }
    let mut snapshot = Snapshot::default();
    snapshot.overlay = overlay;
    snapshot.north_address = north_address;
    snapshot.north_gateway = north_gateway;
    snapshot.north_vlan = north_vlan;
    snapshot.links = links;
    snapshot.segments = segments;
    snapshot.endpoints = endpoints;
    snapshot.login = login.map(|(l, _)| l);
    snapshot.ticket_lifetime = ticket_lifetime;
    snapshot.policy = Arc::new(compiled);
    let snapshot = snapshot.index();
    Ok(Config { interfaces, snapshot, warnings: err.warnings })
}

/// The IANA port of the protocol's TLS flavour, where there is one.
fn secure_port(p: Protocol) -> Option<u16> {
    match p {
        Protocol::Modbus => Some(802),
        Protocol::Dnp3 => Some(19999),
        Protocol::Enip => Some(2221),
        Protocol::S7 | Protocol::Tcp => None,
    }
}

/// The port assets speak the protocol on, where there is a standard one.
fn plain_port(p: Protocol) -> Option<u16> {
    match p {
        Protocol::Modbus => Some(502),
        Protocol::Dnp3 => Some(20000),
        Protocol::Enip => Some(44818),
        Protocol::S7 => Some(102),
        Protocol::Tcp => None,
    }
}

/// User, role and service names: letters, digits, `-`, `_`, 1..=32.
pub fn valid_name(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Reports `name` unless it is a [`valid_name`]; `what` says whose
/// (`"role"`, `"asset \"plc-7\": service name"`). Returns whether it is.
pub(crate) fn check_name(err: &mut Errors<'_>, what: &str, name: &Spanned<String>) -> bool {
    let ok = valid_name(name.get_ref());
    if !ok {
        err.at(name.span(), format!("{what} {:?}: use 1..=32 letters, digits, '-' or '_'", name.get_ref()));
    }
    ok
}

fn prefix(err: &mut Errors<'_>, s: &Spanned<String>, what: &str) -> Option<Ipv4Net> {
    match s.get_ref().parse::<Ipv4Net>() {
        Ok(p) => Some(p),
        Err(e) => {
            err.at(s.span(), format!("{what}: {e}"));
            None
        }
    }
}

fn address(err: &mut Errors<'_>, s: &Spanned<String>, what: &str) -> Option<Ipv4Addr> {
    match s.get_ref().parse::<Ipv4Addr>() {
        Ok(a) => Some(a),
        Err(_) => {
            err.at(s.span(), format!("{what}: {:?} is not an IPv4 address", s.get_ref()));
            None
        }
    }
}

fn vlan(err: &mut Errors<'_>, v: &Spanned<i64>) -> Option<u16> {
    let id = *v.get_ref();
    match u16::try_from(id) {
        Ok(id) if (1..=4094).contains(&id) => Some(id),
        _ => {
            err.at(v.span(), format!("VLAN id {id} is out of range 1..=4094"));
            None
        }
    }
}

/// A TCP port (1..=65535); `what` names it in the error.
fn tcp_port(err: &mut Errors<'_>, v: &Spanned<i64>, what: &str) -> Option<u16> {
    match u16::try_from(*v.get_ref()) {
        Ok(0) => {
            err.at(v.span(), format!("{what} 0 is not a TCP port (1..=65535)"));
            None
        }
        Ok(p) => Some(p),
        Err(_) => {
            err.at(v.span(), format!("{what} {} is out of range 1..=65535", v.get_ref()));
            None
        }
    }
}

/// Checks a gate interface's address `net` (written at `at`) and its
/// gateway, if any; `side` names them in the errors.
fn check_interface(
    err: &mut Errors<'_>,
    side: &str,
    net: Ipv4Net,
    at: std::ops::Range<usize>,
    gateway: Option<(Ipv4Addr, std::ops::Range<usize>)>,
) {
    if let Some(why) = not_a_host(net, net.addr) {
        err.at(at, format!("{side} address: {why}"));
    }
    if let Some((g, span)) = gateway {
        if let Some(why) = gateway_problem(net, g) {
            err.at(span, format!("{side} gateway: {why}"));
        }
    }
}

/// Why `g` cannot be the gateway of the gate's interface `net`, if it
/// cannot: outside the subnet, an edge address, or the gate itself.
fn gateway_problem(net: Ipv4Net, g: Ipv4Addr) -> Option<String> {
    if !net.contains(g) {
        Some(format!("{g} is outside the interface's subnet {net}: the gate could not reach it"))
    } else if g == net.addr {
        Some(format!("{g} is the gate's own address"))
    } else {
        not_a_host(net, g)
    }
}

/// Why `ip` cannot be a host's address in `net`, if it cannot.
fn not_a_host(net: Ipv4Net, ip: Ipv4Addr) -> Option<String> {
    net.is_edge(ip).then(|| format!("{ip} is the network or broadcast address of {net}"))
}

/// The closest name within edit distance 2, for "did you mean" hints.
pub fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates.map(|c| (edit_distance(word, c), c)).filter(|(d, _)| *d <= 2).min_by_key(|(d, _)| *d).map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = include_str!("../../config/lab.toml");

    #[test]
    fn lab_config_loads() {
        let c = parse("lab.toml", LAB).unwrap();
        assert_eq!(c.interfaces, ["north0", "south0"]);
        let s = &c.snapshot;
        assert_eq!(s.segments.len(), 1);
        let e = s.endpoint_at(Ipv4Addr::new(100, 64, 3, 7), 802).expect("plc-7 endpoint");
        assert_eq!(s.endpoints[e].underlay, "198.19.3.7:502".parse().unwrap());
        assert_eq!(s.endpoints[e].asset, "plc-7");
        assert!(s.endpoint_at(Ipv4Addr::new(100, 64, 3, 7), 503).is_none());
        let s7 = s.endpoint_at(Ipv4Addr::new(100, 64, 3, 7), 102).expect("plc-7's S7 endpoint");
        assert_eq!(
            (s.endpoints[s7].underlay, s.endpoints[s7].protocol),
            ("198.19.3.7:102".parse().unwrap(), Protocol::S7)
        );
        assert_eq!(s.policy.roles, ["operator", "viewer", "guest"]);
        assert_eq!(
            s.policy.rules,
            [
                "line3-read",
                "operator-setpoints",
                "line3-s7-read",
                "operator-s7-writes",
                "line3-dnp3-read",
                "operator-dnp3-control",
                "line3-enip-read",
                "operator-enip-writes",
                "operator-sessions"
            ]
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let bad = LAB
            .replace("segment = \"line3\"", "segment = \"line4\"")
            .replace("overlay = \"100.64.3.7\"", "overlay = \"100.64.9.7\"")
            .replacen("protocol = \"modbus\"", "protocol = \"modbsu\"", 1)
            .replace("south_address = \"198.19.3.1/24\"", "south_address = \"198.19.3.1/33\"");
        let errs = parse("lab.toml", &bad).unwrap_err();
        let text = errs.to_string();
        assert_eq!(errs.0.len(), 3, "{text}");
        let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
        assert!(text.contains(&format!("lab.toml:{}:", line_of("line4"))), "{text}");
        assert!(text.contains("segment \"line4\" is not defined (did you mean \"line3\"?)"), "{text}");
        assert!(text.contains(&format!("lab.toml:{}:", line_of("modbsu"))), "{text}");
        assert!(text.contains("did you mean \"modbus\""), "{text}");
        assert!(text.contains(&format!("lab.toml:{}:", line_of("/33"))), "{text}");
    }

    #[test]
    fn duplicate_endpoints_and_bad_addresses() {
        let dup = format!("{LAB}\n[[asset]]\nname = \"plc-8\"\nsegment = \"line3\"\noverlay = \"100.64.3.7\"\nunderlay = \"198.19.3.8\"\n[[asset.service]]\nname = \"modbus\"\nprotocol = \"modbus\"\nport = 802\n");
        let text = parse("x.toml", &dup).unwrap_err().to_string();
        assert!(text.contains("endpoint 100.64.3.7:802 is already used by asset \"plc-7\""), "{text}");
        let outside = LAB.replace("overlay = \"100.64.0.0/16\"", "overlay = \"10.0.0.0/16\"");
        let text = parse("x.toml", &outside).unwrap_err().to_string();
        assert!(text.contains("outside 100.64.0.0/10"), "{text}");
        // The top of the address space has no address after it (found by a
        // review: a debug build overflowed here).
        let top = LAB
            .replace("overlay = \"100.64.0.0/16\"", "overlay = \"255.255.255.255/32\"")
            .replace("login = \"100.64.0.1:443\"\n", "");
        let text = parse("x.toml", &top).unwrap_err().to_string();
        assert!(text.contains("outside 100.64.0.0/10") && text.contains("no address for the login endpoint"), "{text}");
        let bcast = LAB.replace("overlay = \"100.64.3.7\"", "overlay = \"100.64.3.255\"");
        assert!(parse("x.toml", &bcast).unwrap_err().to_string().contains("broadcast"));
    }

    #[test]
    fn syntax_and_unknown_keys_have_positions() {
        let e = parse("x.toml", "[gate]\noverlay = \n").unwrap_err();
        assert_eq!(e.0[0].line, 2, "{e}");
        let e = parse("x.toml", &LAB.replace("north_interface", "north_iface")).unwrap_err();
        assert!(e.to_string().contains("north_iface"), "{e}");
        assert!(e.0[0].line > 0);
    }

    /// The stable-toolchain twin of `fuzz/fuzz_targets/config.rs`: mutated
    /// lab configs (bytes flipped, lines cut, lines repeated) always end in a
    /// config or in positioned errors, never a panic.
    #[test]
    fn mutated_configs_never_panic() {
        let mut rng = dataplane::xorshift::XorShift::new(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next_u64();
        let lines: Vec<&str> = LAB.lines().collect();
        for _ in 0..3000 {
            let mut bytes = LAB.as_bytes().to_vec();
            match next() % 3 {
                0 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % bytes.len();
                        bytes[i] = (next() % 128) as u8;
                    }
                }
                1 => {
                    let cut = (next() as usize) % lines.len();
                    bytes = lines[..cut].join("\n").into_bytes();
                }
                _ => {
                    let i = (next() as usize) % lines.len();
                    let mut l = lines.clone();
                    l.insert(i, lines[(next() as usize) % lines.len()]);
                    bytes = l.join("\n").into_bytes();
                }
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                if let Err(e) = parse("fuzz.toml", text) {
                    assert!(!e.0.is_empty());
                }
            }
        }
    }

    /// Each of these configs loaded, and each would have made a gate that
    /// cannot work or a policy that says less than it reads (found by a
    /// review of config validation); each is refused with its line and the
    /// fix.
    #[test]
    fn configs_the_dataplane_could_not_serve_are_refused() {
        let line3 = "[[segment]]\nname = \"line4\"\noverlay = \"100.64.4.0/24\"\nsouth_interface = \"south0\"\n";
        let plc8 = "[[asset]]\nname = \"plc-8\"\nsegment = \"line4\"\noverlay = \"100.64.4.8\"\nunderlay = \"198.19.3.8\"\n[[asset.service]]\nname = \"modbus\"\nprotocol = \"modbus\"\n\n[[asset]]";
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "two segments on one link with one south subnet (the second's replies went to the first)",
                LAB.replacen("[[asset]]", &format!("{line3}south_address = \"198.19.3.1/24\"\n\n{plc8}"), 1),
                "overlaps segment \"line3\"",
            ),
            ("the gate's own south address as an asset", LAB.replace("underlay = \"198.19.3.7\"", "underlay = \"198.19.3.1\""), "the gate's own south address"),
            ("a broadcast underlay", LAB.replace("underlay = \"198.19.3.7\"", "underlay = \"198.19.3.255\""), "network or broadcast"),
            ("an underlay with no route", LAB.replace("underlay = \"198.19.3.7\"", "underlay = \"10.9.9.9\""), "no south_gateway"),
            (
                "a second endpoint for one asset service (a rule for one would not cover the other)",
                format!("{LAB}\n[[asset]]\nname = \"plc-7b\"\nsegment = \"line3\"\noverlay = \"100.64.3.17\"\nunderlay = \"198.19.3.7\"\n[[asset.service]]\nname = \"modbus\"\nprotocol = \"modbus\"\n"),
                "is already asset \"plc-7\" service \"modbus\"",
            ),
            ("a south gateway off the subnet", LAB.replace("south_address = \"198.19.3.1/24\"", "south_address = \"198.19.3.1/24\"\nsouth_gateway = \"10.0.0.1\""), "outside the interface's subnet"),
            ("a north gateway off the subnet", LAB.replace("north_address = \"198.18.0.1/24\"", "north_address = \"198.18.0.1/24\"\nnorth_gateway = \"10.0.0.1\""), "outside the interface's subnet"),
            ("a south address that is the network", LAB.replace("south_address = \"198.19.3.1/24\"", "south_address = \"198.19.3.0/24\""), "network or broadcast"),
            ("login on port 0", LAB.replace("login = \"100.64.0.1:443\"", "login = \"100.64.0.1:0\""), "port 0 is not a TCP port"),
            ("an asset named like a glob (a rule for it matched every plc-)", LAB.replace("name = \"plc-7\"", "name = \"plc-*\"").replace("assets = [\"plc-7\"]", "assets = [\"plc-*\"]"), "asset name \"plc-*\""),
            ("a newline in an asset name (forged log lines)", LAB.replace("name = \"plc-7\"", "name = \"plc 7\\nforged\""), "use 1..=32 letters"),
            ("an empty service name", LAB.replace("name = \"s7\"", "name = \"\""), "service name \"\""),
            ("a port out of range, with the range", LAB.replace("port = 802 ", "port = 70000 "), "port 70000 is out of range 1..=65535"),
            ("a VLAN out of u16, with the range", LAB.replace("south_address = \"198.19.3.1/24\"", "south_address = \"198.19.3.1/24\"\nvlan = 70000"), "VLAN id 70000 is out of range 1..=4094"),
        ];
        for (what, text, says) in cases {
            let e = parse("lab.toml", &text).err().unwrap_or_else(|| panic!("{what}: accepted"));
            assert!(e.to_string().contains(says), "{what}: {e}");
            assert!(e.0.iter().all(|x| x.line > 0), "{what}: {e}");
        }
    }

    /// A syntax error's column counts characters, as every other error's
    /// does (found by a review: it counted bytes).
    #[test]
    fn a_syntax_error_column_counts_characters() {
        let text = LAB.replace("name = \"line3\"\n", "name = \"L\u{e4}ne3\" x\n");
        let e = parse("lab.toml", &text).unwrap_err();
        assert_eq!(e.0[0].column, 16, "{e}");
    }
}
