//! `scripts/wire-latency` on captures whose timings are known: it must find
//! the round trips, the PLC's service times and which slow round trips a
//! slow PLC answer explains, counting messages rather than segments.

use std::io::Write;
use std::path::Path;
use std::process::Command;

/// One Ethernet/IPv4/TCP frame with `payload`, from `src` to `dst` port.
fn frame(src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
    let total = (20 + 20 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.1.to_be_bytes());
    f.extend_from_slice(&dst.1.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&0u32.to_be_bytes());
    f.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A classic pcap file of `(microseconds, frame)`, each frame cut to 160
/// bytes as `scripts/bench --capture` takes them.
fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (us, f) in frames {
        let base = 1_800_000_000u64 * 1_000_000 + us;
        out.extend_from_slice(&((base / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((base % 1_000_000) as u32).to_le_bytes());
        let kept = f.len().min(160);
        out.extend_from_slice(&(kept as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&f[..kept]);
    }
    std::fs::File::create(path).and_then(|mut file| file.write_all(&out)).expect("write pcap");
}

#[test]
fn round_trips_plc_service_and_overlap_come_out_of_known_captures() {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("SKIP: tshark is not installed (scripts/bootstrap installs it)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("wire-latency-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (user, proxy, plc) = (([198, 18, 0, 2], 40_000), ([198, 18, 0, 1], 802), ([198, 19, 3, 7], 502));
    let (south, plc_port) = (([198, 19, 3, 1], 50_000), plc);

    // 120 requests 10 ms apart: round trip 100 µs, but 5 ms for #30 and #80.
    // The PLC answers in 10 µs, but in 3 ms for #30 (inside its round trip).
    // #60 comes with a second request 50 µs later, and the proxy answers
    // both in one segment 150 µs after the first; the PLC gets both in one
    // segment and answers both in one. #20 the same, but the proxy writes
    // both answers in one TLS record. #90's answer arrives in two segments,
    // the second 100 µs after the request; #50's too, its record header cut
    // after 3 bytes. #40's request is sent again 40 µs later (a tail-loss
    // probe). #70's answer is missing from the capture: #70 and #71 give no
    // round trip, and the pairing goes on right after. #10 comes with five
    // more requests 20 to 60 µs later, and the six answers come in one
    // segment 150 µs after the first, of which the capture keeps two and a
    // half.
    let mut client = Vec::new();
    let mut at_plc = Vec::new();
    let (mut up, mut down, mut ask_seq, mut answer_seq) = (0u32, 0u32, 0u32, 0u32);
    let send = |at: &mut Vec<(u64, Vec<u8>)>, t: u64, from, to, seq: &mut u32, payload: &[u8]| {
        at.push((t, frame(from, to, *seq, payload)));
        *seq += payload.len() as u32;
    };
    // A TLS record of application data with `n` bytes after its header.
    let record = |n: u16| [vec![23, 3, 3, (n >> 8) as u8, n as u8], vec![0xAB; usize::from(n)]].concat();
    let (request, answer) = (record(35), record(34));
    // Before the load, as the gate's sessions start: the client's TLS
    // Finished and its hello, one answer to both (records of other sizes;
    // the Finished's content is twice a request's, which must not make it
    // two requests).
    send(&mut client, 1, user, proxy, &mut up, &record(53));
    send(&mut client, 2, user, proxy, &mut up, &record(75));
    send(&mut client, 3, proxy, user, &mut down, &record(65));
    for i in 0..120u32 {
        let t = 1_000 + u64::from(i) * 10_000;
        let rtt = if i == 30 || i == 80 { 5_000 } else { 100 };
        let service = if i == 30 { 3_000 } else { 10 };
        send(&mut client, t, user, proxy, &mut up, &request);
        let modbus = |tid: u16| {
            let tid = tid.to_be_bytes();
            ([tid[0], tid[1], 0, 0, 0, 6, 1, 3, 0, 0, 0, 1], [tid[0], tid[1], 0, 0, 0, 5, 1, 3, 2, 0, 0])
        };
        let (ask, reply) = modbus(i as u16);
        if i == 60 || i == 20 {
            send(&mut client, t + 50, user, proxy, &mut up, &request);
            // One answer is 17 bytes of content in a 39-byte record.
            let both = if i == 60 { answer.repeat(2) } else { record(51) };
            send(&mut client, t + 150, proxy, user, &mut down, &both);
            let (ask2, reply2) = modbus(1_000 + i as u16);
            send(&mut at_plc, t + 70, south, plc_port, &mut ask_seq, &[ask, ask2].concat());
            send(&mut at_plc, t + 80, plc_port, south, &mut answer_seq, &[reply, reply2].concat());
            continue;
        }
        match i {
            10 => {
                for d in [20, 30, 40, 50, 60] {
                    send(&mut client, t + d, user, proxy, &mut up, &request);
                }
                send(&mut client, t + 150, proxy, user, &mut down, &answer.repeat(6));
            }
            90 | 50 => {
                let cut = if i == 90 { 20 } else { 3 };
                send(&mut client, t + 60, proxy, user, &mut down, &answer[..cut]);
                send(&mut client, t + rtt, proxy, user, &mut down, &answer[cut..]);
            }
            40 => {
                client.push((t + 40, frame(user, proxy, up - request.len() as u32, &request)));
                send(&mut client, t + rtt, proxy, user, &mut down, &answer);
            }
            // Not captured.
            70 => down += answer.len() as u32,
            _ => send(&mut client, t + rtt, proxy, user, &mut down, &answer),
        }
        send(&mut at_plc, t + 20, south, plc_port, &mut ask_seq, &ask);
        send(&mut at_plc, t + 20 + service, plc_port, south, &mut answer_seq, &reply);
    }
    // An idle session: its handshake only, which must not count.
    client.push((500, frame(([198, 18, 0, 2], 40_001), proxy, 0, &[0x16; 200])));
    client.sort_by_key(|(t, _)| *t);
    at_plc.sort_by_key(|(t, _)| *t);
    let (c, p) = (dir.join("client.pcap"), dir.join("plc.pcap"));
    write_pcap(&c, &client);
    write_pcap(&p, &at_plc);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/wire-latency");
    let out = Command::new(script).arg(&c).arg(&p).output().expect("run scripts/wire-latency");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    // 127 requests; #70's and #71's give none; #20's and #60's first wait
    // 150, #10's six 150 down to 90.
    assert_eq!(
        lines[0],
        "wire round trip at the client's interface (port 802): p50 100  p90 100  p99 5000  p99.9 5000  max 5000 µs  (125 samples)"
    );
    assert_eq!(
        lines[3],
        "pairing at the client's interface: 127 requests, 126 answers; without a request waiting 1, never answered 0, dropped at a capture gap 2"
    );
    assert_eq!(
        lines[1],
        "PLC service time at the PLC's interface (port 502): p50 10  p90 10  p99 10  p99.9 3000  max 3000 µs  (122 samples)"
    );
    assert_eq!(lines[2], "round trips over 1000 µs: 2, of which 1 overlap a PLC answer over 1000 µs (1 such answers)");

    // Plain Modbus/TCP (the `direct` target) is counted in ADUs: the PLC's
    // own capture as the client side reads the service times again.
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/wire-latency"))
        .arg(&p)
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(
            "wire round trip at the client's interface (port 502): p50 10  p90 10  p99 10  p99.9 3000  max 3000 µs  (122 samples)"
        ),
        "{text}"
    );

    // A file tshark cannot read is an error that names it.
    let bad = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/wire-latency"))
        .arg(dir.join("missing.pcap"))
        .arg(&p)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("missing.pcap"));
    let _ = std::fs::remove_dir_all(&dir);
}
