//! The immutable view of the configuration that dp cores read.
//!
//! The control thread builds a [`Snapshot`] from the config files and publishes
//! it through `arc_swap::ArcSwap`; a dp core loads it once per receive batch and
//! never writes it. Everything a per-frame decision needs is a field read or
//! one hash lookup here: no strings are compared on the hot path.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// What the dp cores share with the control thread.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// An IPv4 prefix (`100.64.3.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Net {
    /// A prefix; host bits of `addr` are kept (an interface address with its
    /// subnet, `198.18.0.1/24`). Returns `None` if `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        (len <= 32).then_some(Self { addr, len })
    }

    fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    /// The network address (host bits cleared).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) ^ u32::from(self.addr)) & self.mask() == 0
    }

    /// Whether `ip` is this prefix's network or broadcast address (no host
    /// may have them; a /31 or /32 has neither).
    pub fn is_edge(self, ip: Ipv4Addr) -> bool {
        self.len < 31 && self.contains(ip) && (ip == self.network() || u32::from(ip) | self.mask() == u32::MAX)
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn covers(self, other: Ipv4Net) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a prefix (expected a.b.c.d/len)"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let len: u8 =
            l.parse().ok().filter(|l| *l <= 32).ok_or_else(|| format!("{l:?} is not a prefix length (0..=32)"))?;
        Ok(Self { addr, len })
    }
}

/// Which side of the gate a link faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Users (the overlay endpoints live here).
    North,
    /// Assets (underlay).
    South,
}

/// The application protocol a service speaks; decides which inspector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Modbus,
    S7,
    Dnp3,
    Enip,
    /// Raw TCP (VNC, RDP, vendor tools): identity and logging, no inspection.
    Tcp,
}

impl Protocol {
    /// The name used in config files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Modbus => "modbus",
            Self::S7 => "s7",
            Self::Dnp3 => "dnp3",
            Self::Enip => "enip",
            Self::Tcp => "tcp",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "modbus" => Self::Modbus,
            "s7" => Self::S7,
            "dnp3" => Self::Dnp3,
            "enip" => Self::Enip,
            "tcp" => Self::Tcp,
            _ => return Err(()),
        })
    }
}

/// A link the gate owns (one per configured interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    pub name: String,
    pub side: Side,
}

/// One overlay segment: a /24 on the north side, an underlay subnet on the south.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpec {
    pub name: String,
    /// The overlay prefix whose endpoints this segment's north stack owns.
    pub overlay: Ipv4Net,
    /// Index into [`Snapshot::links`] of the south link.
    pub south_link: usize,
    /// The gate's own address on the segment's underlay, with its subnet.
    pub south_address: Ipv4Net,
    /// Next hop for assets outside `south_address`'s subnet.
    pub south_gateway: Option<Ipv4Addr>,
    /// 802.1Q tag of the segment on its south link.
    pub south_vlan: Option<u16>,
}

/// One proxy endpoint: an overlay (address, port) that leads to one asset service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Asset name (for logs and audit).
    pub asset: String,
    /// Service name within the asset.
    pub service: String,
    pub segment: usize,
    pub overlay: SocketAddrV4,
    pub underlay: SocketAddrV4,
    pub protocol: Protocol,
}

/// What an open session needs to know of its user: the roles the user has
/// now (only enabled users are listed) and when their tickets were last
/// revoked (`ctl revoke`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserStates {
    by_name: HashMap<String, UserState>,
}

/// One enabled user's standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserState {
    pub roles: Vec<String>,
    /// Unix time of the last revocation of the user's tickets (0: none):
    /// sessions granted up to then end.
    pub revoked_at: u64,
}

impl UserStates {
    pub fn insert(&mut self, user: &str, state: UserState) {
        self.by_name.insert(user.to_string(), state);
    }

    /// The user's standing; `None` for a user removed or disabled.
    pub fn get(&self, user: &str) -> Option<&UserState> {
        self.by_name.get(user)
    }
}

/// Everything the dp cores need, immutable once published.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Bumped by the control thread on every successful (re)load.
    pub generation: u64,
    /// The whole overlay (`100.64.0.0/16`).
    pub overlay: Option<Ipv4Net>,
    /// The gate's north address with its subnet (`198.18.0.1/24`).
    pub north_address: Option<Ipv4Net>,
    /// Next hop for users outside the north subnet.
    pub north_gateway: Option<Ipv4Addr>,
    /// 802.1Q tag on the north link, if the north side is a VLAN.
    pub north_vlan: Option<u16>,
    /// The gate's own login endpoint (`100.64.0.1:443`): tickets and
    /// endpoint lookup for `accessgate login` / `connect`.
    pub login: Option<SocketAddrV4>,
    /// Ticket lifetime handed out at login, in seconds.
    pub ticket_lifetime: u64,
    /// The compiled policy (who may do what, where, when).
    pub policy: std::sync::Arc<crate::policy::Policy>,
    /// The TLS server configuration every endpoint terminates with.
    pub tls: Option<crate::tls::TlsConfig>,
    /// The users as the control plane last published them, for the
    /// sessions already open; `None` when nothing publishes them (the
    /// sessions then keep the roles of their grant).
    pub users: Option<Arc<UserStates>>,
    /// Links by index; index 0 is the north link.
    pub links: Vec<LinkSpec>,
    pub segments: Vec<SegmentSpec>,
    pub endpoints: Vec<Endpoint>,
    /// (overlay address, port) -> index into `endpoints`.
    pub(crate) by_overlay: HashMap<(Ipv4Addr, u16), usize>,
    /// (segment, underlay address, port) -> index into `endpoints`.
    pub(crate) by_underlay: HashMap<(usize, Ipv4Addr, u16), usize>,
}

impl Snapshot {
    /// Builds the lookup tables. Call after filling the public fields.
    pub fn index(mut self) -> Self {
        self.by_overlay =
            self.endpoints.iter().enumerate().map(|(i, e)| ((*e.overlay.ip(), e.overlay.port()), i)).collect();
        self.by_underlay = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| ((e.segment, *e.underlay.ip(), e.underlay.port()), i))
            .collect();
        self
    }

    /// Whether (ip, port) is the login endpoint or an asset endpoint.
    pub fn is_endpoint(&self, ip: Ipv4Addr, port: u16) -> bool {
        self.login == Some(SocketAddrV4::new(ip, port)) || self.by_overlay.contains_key(&(ip, port))
    }

    /// The endpoint listening on an overlay (address, port).
    pub fn endpoint_at(&self, ip: Ipv4Addr, port: u16) -> Option<usize> {
        self.by_overlay.get(&(ip, port)).copied()
    }

    /// The endpoint whose asset service is (ip, port) in `segment`.
    pub fn endpoint_for_asset(&self, segment: usize, ip: Ipv4Addr, port: u16) -> Option<usize> {
        self.by_underlay.get(&(segment, ip, port)).copied()
    }

    /// The segment whose overlay prefix holds `ip`.
    pub fn segment_of_overlay(&self, ip: Ipv4Addr) -> Option<usize> {
        self.segments.iter().position(|s| s.overlay.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let n: Ipv4Net = "100.64.3.0/24".parse().unwrap();
        assert!(n.contains(Ipv4Addr::new(100, 64, 3, 7)));
        assert!(!n.contains(Ipv4Addr::new(100, 64, 4, 7)));
        let o: Ipv4Net = "100.64.0.0/16".parse().unwrap();
        assert!(o.covers(n));
        assert!(!n.covers(o));
        assert_eq!("198.18.0.1/24".parse::<Ipv4Net>().unwrap().network(), Ipv4Addr::new(198, 18, 0, 0));
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
        assert!("0.0.0.0/0".parse::<Ipv4Net>().unwrap().contains(Ipv4Addr::new(1, 2, 3, 4)));
    }
}
