//! Classifies arbitrary bytes as a frame from either side of the lab's
//! gate. Invariant: classification never panics and admits only ARP/TCP;
//! the sharded stacks' flow-key parse never panics and reads real ports.
#![no_main]

use dataplane::classify::{classify, Disposition};
use dataplane::shard::FlowKey;
use dataplane::snapshot::{Endpoint, LinkSpec, Protocol, SegmentSpec, Side, Snapshot};
use libfuzzer_sys::fuzz_target;

fn lab() -> Snapshot {
    let mut s = Snapshot::default();
    s.overlay = "100.64.0.0/16".parse().ok();
    s.north_address = "198.18.0.1/24".parse().ok();
    s.login = "100.64.0.1:443".parse().ok();
    s.links = vec![
        LinkSpec { name: "north0".into(), side: Side::North },
        LinkSpec { name: "south0".into(), side: Side::South },
    ];
    s.segments = vec![SegmentSpec {
        name: "line3".into(),
        overlay: "100.64.3.0/24".parse().unwrap(),
        south_link: 1,
        south_address: "198.19.3.1/24".parse().unwrap(),
        south_gateway: None,
        south_vlan: Some(30),
    }];
    s.endpoints = vec![Endpoint {
        asset: "plc-7".into(),
        service: "modbus".into(),
        segment: 0,
        overlay: "100.64.3.7:802".parse().unwrap(),
        underlay: "198.19.3.7:502".parse().unwrap(),
        protocol: Protocol::Modbus,
    }];
    s.index()
}

fuzz_target!(|data: &[u8]| {
    thread_local!(static SNAP: Snapshot = lab());
    SNAP.with(|snap| {
        for (side, link) in [(Side::North, 0), (Side::South, 1)] {
            if let Disposition::North { .. } | Disposition::South { .. } | Disposition::NorthAll { .. } = classify(data, side, link, snap) {
                // Admitted frames are ARP or IPv4 (possibly tagged).
                let et = if data.len() >= 18 && data[12..14] == [0x81, 0x00] { &data[16..18] } else { &data[12..14] };
                assert!(et == [0x08, 0x06] || et == [0x08, 0x00]);
            }
        }
    });
    // The sharded stacks' frame-to-bucket parse sees every admitted frame.
    if let Some((key, _syn)) = FlowKey::of_frame(data) {
        let ihl = usize::from(data[14] & 0x0f) * 4;
        assert!(data.len() >= 14 + ihl + 14, "a key needs the TCP ports and flags");
        assert_eq!(key.remote_port, u16::from_be_bytes([data[14 + ihl], data[15 + ihl]]));
        assert_eq!(key.local_port, u16::from_be_bytes([data[16 + ihl], data[17 + ihl]]));
    }
});
