//! Pregenerated frames for the drop path and the classifier micro.
//!
//! Every address is taken from the snapshot the gate runs on, so the mix
//! stays "denied by the classifier" whatever the config says; [`drop_mix`]
//! checks each frame's disposition before a benchmark uses it.

use std::net::Ipv4Addr;

use dataplane::classify::{classify, Disposition, DropReason};
use dataplane::snapshot::{Side, Snapshot};
use etherparse::PacketBuilder;

/// How many frames the drop mix holds (four kinds, interleaved).
pub const MIX_LEN: usize = 64;

/// The gate's north MAC in [`perf::memlab::MemLab`] (the classifier does not
/// look at destination MACs; this only makes the frames look addressed).
const GATE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];

/// One kind of frame in the drop mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP SYN to a port of an endpoint's overlay address that is not an endpoint.
    TcpNoEndpoint,
    /// UDP to an endpoint's overlay address.
    Udp,
    /// IPv6 (TCP over IPv6) on the north link.
    Ipv6,
    /// ARP request for a north-subnet address that is not the gate's.
    ArpOther,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::TcpNoEndpoint, Kind::Udp, Kind::Ipv6, Kind::ArpOther];

    /// The drop reason the classifier must give this kind.
    pub fn expected(self) -> DropReason {
        match self {
            Kind::TcpNoEndpoint => DropReason::NoEndpoint,
            Kind::Udp => DropReason::NotTcp,
            Kind::Ipv6 => DropReason::EtherType,
            Kind::ArpOther => DropReason::ArpNotForGate,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::TcpNoEndpoint => "tcp_to_non_endpoint_port",
            Kind::Udp => "udp",
            Kind::Ipv6 => "ipv6_ethertype",
            Kind::ArpOther => "arp_for_other_address",
        }
    }
}

/// A frame of the mix.
pub struct MixFrame {
    pub kind: Kind,
    pub bytes: Vec<u8>,
}

/// Builds [`MIX_LEN`] frames the classifier denies on the north link, sent by
/// `user` (`user_mac`) on the north subnet. Fails if any frame would not be
/// dropped with its kind's reason (the bench would measure something else).
pub fn drop_mix(snap: &Snapshot, user: Ipv4Addr, user_mac: [u8; 6]) -> Result<Vec<MixFrame>, String> {
    let north = snap.north_address.ok_or("the config has no north address")?;
    let ep = snap.endpoints.first().ok_or("the config has no endpoint")?;
    let target = *ep.overlay.ip();
    let closed_ports: Vec<u16> =
        (1..=u16::MAX).filter(|&p| snap.endpoint_at(target, p).is_none()).take(MIX_LEN).collect();
    // ARP targets: north-subnet host addresses that are not the gate's.
    let base = u32::from(north.network());
    let others: Vec<Ipv4Addr> = (3..255u32)
        .map(|h| Ipv4Addr::from(base + h))
        .filter(|a| *a != north.addr && *a != user && north.contains(*a))
        .take(MIX_LEN)
        .collect();
    if others.is_empty() {
        return Err("the north subnet has no spare address for the ARP frames".into());
    }
    let mut out = Vec::with_capacity(MIX_LEN);
    for i in 0..MIX_LEN {
        let kind = Kind::ALL[i % Kind::ALL.len()];
        let sport = 40_000 + i as u16;
        let mut bytes = Vec::with_capacity(128);
        match kind {
            Kind::TcpNoEndpoint => PacketBuilder::ethernet2(user_mac, GATE_MAC)
                .ipv4(user.octets(), target.octets(), 64)
                .tcp(sport, closed_ports[i % closed_ports.len()], 1000 + i as u32, 64240)
                .syn()
                .write(&mut bytes, &[])
                .map_err(|e| e.to_string())?,
            Kind::Udp => PacketBuilder::ethernet2(user_mac, GATE_MAC)
                .ipv4(user.octets(), target.octets(), 64)
                .udp(sport, ep.overlay.port())
                .write(&mut bytes, &[0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10])
                .map_err(|e| e.to_string())?,
            Kind::Ipv6 => {
                let mut src = [0u8; 16];
                src[..2].copy_from_slice(&[0xfe, 0x80]);
                src[15] = 2;
                let mut dst = src;
                dst[15] = 1;
                PacketBuilder::ethernet2(user_mac, GATE_MAC)
                    .ipv6(src, dst, 64)
                    .tcp(sport, ep.overlay.port(), 1000, 64240)
                    .syn()
                    .write(&mut bytes, &[])
                    .map_err(|e| e.to_string())?
            }
            Kind::ArpOther => {
                bytes = arp_request(user_mac, user, others[i % others.len()]);
            }
        }
        out.push(MixFrame { kind, bytes });
    }
    for f in &out {
        let got = classify(&f.bytes, Side::North, 0, snap);
        if got != Disposition::Drop(f.kind.expected()) {
            return Err(format!(
                "mix frame {:?} classified as {got:?}, expected Drop({:?})",
                f.kind,
                f.kind.expected()
            ));
        }
    }
    Ok(out)
}

/// A frame the classifier admits: TCP ACK (with a 12-byte Modbus request)
/// from `user` to the first endpoint. For the classifier micro only.
pub fn admit_frame(snap: &Snapshot, user: Ipv4Addr, user_mac: [u8; 6]) -> Result<Vec<u8>, String> {
    let ep = snap.endpoints.first().ok_or("the config has no endpoint")?;
    let mut bytes = Vec::with_capacity(128);
    PacketBuilder::ethernet2(user_mac, GATE_MAC)
        .ipv4(user.octets(), ep.overlay.ip().octets(), 64)
        .tcp(40_000, ep.overlay.port(), 1000, 64240)
        .ack(1)
        .psh()
        .write(&mut bytes, &[0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10])
        .map_err(|e| e.to_string())?;
    match classify(&bytes, Side::North, 0, snap) {
        Disposition::North { .. } => Ok(bytes),
        other => Err(format!("the admit frame classified as {other:?}")),
    }
}

fn arp_request(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&[0x08, 0x06]);
    // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4, op 1 (request)
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}
