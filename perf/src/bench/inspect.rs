//! Inspection cost per request: the inspector framing a stream of mixed
//! requests and asking the compiled lab policy about each, then matching the
//! asset's answers, with sinks that only count. Release build, one thread.
//!
//! Modbus (default): a pipelined mix of reads, writes inside and outside the
//! operator's range and diagnostics. `--protocol s7|dnp3|enip`: four
//! requests each, one of them refused, as real clients send them (bytes
//! captured from python-snap7, dnp3py, cpppo and pycomm3), each followed by
//! its answer.

use std::time::Instant;

use dataplane::inspect::dnp3::Dnp3;
use dataplane::inspect::enip::Enip;
use dataplane::inspect::modbus::{exception_for, ModbusInspector};
use dataplane::inspect::s7::S7;
use dataplane::inspect::{Downstream, Protocol as UnitProtocol, Sink, Units};
use dataplane::policy::{ModbusDetail, Op, Query, Since};
use dataplane::snapshot::Protocol;
use dataplane::wire::{dnp3 as dnp3w, enip as enipw, s7 as s7w};
use perf::sim::{read_holding, request};

use super::{build_profile, median};

const LAB_CONFIG: &str = include_str!("../../../config/lab.toml");

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Requests per run.
    #[arg(long, default_value_t = 1_000_000)]
    requests: usize,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// modbus, s7, dnp3 or enip.
    #[arg(long, default_value = "modbus", value_parser = ["modbus", "s7", "dnp3", "enip"])]
    protocol: String,
}

struct Count {
    asset: usize,
    user: usize,
}

impl Sink for Count {
    fn to_asset(&mut self, adu: &[u8]) -> bool {
        self.asset += adu.len();
        true
    }
    fn to_user(&mut self, adu: &[u8]) -> bool {
        self.user += adu.len();
        true
    }
}

/// Runs the measurement and prints it.
///
/// # Errors
/// The lab config does not load.
pub fn inspect(args: &InspectArgs) -> Result<(), String> {
    let config = control::config::parse("config/lab.toml", LAB_CONFIG).map_err(|e| e.to_string())?;
    let policy = config.snapshot.policy.clone();
    let roles = policy.role_ids(&["operator".to_string()]);
    let asset = policy.asset_id("plc-7").ok_or("plc-7 is not in the lab policy")?;
    let lab = Lab { policy: &policy, roles: &roles, asset };
    match args.protocol.as_str() {
        "s7" => return units::<S7, { s7w::MAX_UNIT }>(args, &lab, Protocol::S7, &S7_MIX),
        "dnp3" => return units::<Dnp3, { 2 * dnp3w::MAX_FRAME }>(args, &lab, Protocol::Dnp3, &DNP3_MIX),
        "enip" => return units::<Enip, { 2 * enipw::MAX_MESSAGE }>(args, &lab, Protocol::Enip, &ENIP_MIX),
        _ => {}
    }
    // A stream of eight requests, repeated: 6 forwarded, 2 answered by the
    // gate (write to 250: 02; diagnostics: 01); and the PLC's answers to
    // the forwarded six, fed back so responses are matched too.
    let mut pattern = Vec::new();
    let mut answers = Vec::new();
    let mut adu = [0u8; 260];
    let bodies: [(u8, Vec<u8>); 8] = [
        (3, read_holding(0, 10).to_vec()),
        (3, read_holding(150, 2).to_vec()),
        (6, vec![0, 150, 0, 42]),
        (6, vec![0, 250, 0, 42]),
        (16, vec![0, 120, 0, 2, 4, 0, 1, 0, 2]),
        (4, read_holding(7, 3).to_vec()),
        (8, vec![0, 0, 0xAB, 0xCD]),
        (1, read_holding(0, 16).to_vec()),
    ];
    for (i, (f, body)) in bodies.iter().enumerate() {
        let tid = i as u16 + 1;
        let n = request(&mut adu, tid, 1, *f, body);
        pattern.extend_from_slice(&adu[..n]);
        let answer: Vec<u8> = match f {
            3 | 4 => {
                let count = u16::from_be_bytes([body[2], body[3]]) as usize;
                [&[*f, (2 * count) as u8][..], &vec![0u8; 2 * count]].concat()
            }
            1 => vec![1, 2, 0xAA, 0x55],
            6 | 16 => [&[*f][..], &body[..4]].concat(),
            _ => continue,
        };
        if *f == 6 && body[1] == 250 {
            continue;
        }
        let n = request(&mut adu, tid, 1, answer[0], &answer[1..]);
        answers.extend_from_slice(&adu[..n]);
    }
    let mut results = Vec::new();
    let mut forwarded = 0;
    for _ in 0..args.runs.max(1) {
        let mut insp = ModbusInspector::new();
        let mut sink = Count { asset: 0, user: 0 };
        let mut done = 0usize;
        let start = Instant::now();
        while done < args.requests {
            // One pattern in (as a TLS record would deliver it), decided...
            for chunk in pattern.chunks(insp.up_spare().len().max(1)) {
                insp.up_spare()[..chunk.len()].copy_from_slice(chunk);
                insp.up_filled(chunk.len());
                let mut decide = |op: Op, d: &ModbusDetail<'_>| {
                    policy.check(&Query {
                        roles: &roles,
                        asset,
                        protocol: Protocol::Modbus,
                        op,
                        modbus: Some(*d),
                        now: 1_800_000_000,
                        // As a session asks (the lab's rules have no limits).
                        since: Some(Since { granted: 1_800_000_000, ticket_issued: 1_800_000_000 }),
                    })
                };
                done += insp
                    .requests(&mut sink, &mut decide, &exception_for, 0, &mut |_, _| {})
                    .map_err(|e| format!("{e:?}"))?;
            }
            // ...and the PLC's answers matched.
            insp.down_spare()[..answers.len()].copy_from_slice(&answers);
            insp.down_filled(answers.len());
            insp.responses(&mut sink, 1, &mut |_, _, _| {}).map_err(|e| format!("{e:?}"))?;
        }
        if insp.stats.unmatched != 0 || insp.stats.denied != insp.stats.requests / 4 {
            return Err(format!("inspect bench: unexpected verdicts {:?}", insp.stats));
        }
        let ns = start.elapsed().as_nanos() as f64 / done as f64;
        results.push(ns);
        forwarded = insp.stats.allowed;
        std::hint::black_box(&sink);
    }
    let ns = median(&results);
    println!(
        "accessgate-perf inspect: {} build, lab policy (operator), 8-request mix (6 forwarded and their responses matched, 2 answered by the gate)",
        build_profile()
    );
    println!(
        "  parse + verdict + response match: {ns:.1} ns/request, median of {} runs ({:.2} M requests/s on one core)",
        results.len(),
        1e3 / ns
    );
    let _ = forwarded;
    Ok(())
}

/// The compiled lab policy as the operator sees plc-7.
struct Lab<'a> {
    policy: &'a dataplane::policy::Policy,
    roles: &'a [dataplane::policy::RoleId],
    asset: u32,
}

/// (request, its answer), hex; `None`: the gate refuses it.
type Mix = [(&'static str, Option<&'static str>); 4];

/// python-snap7: read DB1.DBB0[4], write DB1.DBB0 = beef, PLC stop
/// (refused: control), SZL 0x001C; and the CPU's answers.
const S7_MIX: Mix = [
    (
        "0300001f02f080320100000001000e00000401120a10020004000184000000",
        Some("0300001d02f0803203000000010002000800000401ff04002000010203"),
    ),
    (
        "0300002502f080320100000002000e00060501120a1002000200018400000000040010beef",
        Some("0300001602f0803203000000020002000100000501ff"),
    ),
    ("0300002102f0803201000000030010000029000000000009505f50524f4752414d", None),
    (
        "0300002102f080320700000004000800080001120411440100ff090004001c0000",
        Some("0300002502f080320700000004000c0008000112081284010000000000ff090004001c0000"),
    ),
];

/// dnp3py: integrity poll, direct operate, save configuration (refused:
/// program), delay measure; and the outstation's responses.
const DNP3_MIX: Mix = [
    (
        "056414c4010002004aa2c0c1013c02063c03063c04063c01067a6f",
        Some("056417440200010084eac0c18100001e01000001010000000200b7ce0000ffff"),
    ),
    (
        "056418c401000200f875c1c2050c011701010301640000006400f868000000ffff",
        Some("05641a4402000100d188c1c28100000c01170101030164000000d9426400000000005b"),
    ),
    ("056408c401000200390dc2c31361fd", None),
    ("056408c401000200390dc3c417c0ba", Some("0564104402000100ba34c2c4810000340207010500b856")),
];

/// cpppo and pycomm3: read tag Speed, write tag Speed[1], Identity reset
/// (refused: control), Identity product name; and the target's replies.
const ENIP_MIX: Mix = [
    (
        "6f002c00606d733400000000300000000000000000000000000000000800020000000000b2001c00520220062401059d0e004c0591055370656564002800020001000100",
        Some("6f001a00606d733400000000300000000000000000000000000000000800020000000000b2000a00cc000000c30000002a00"),
    ),
    (
        "6f003000606d733400000000310000000000000000000000000000000800020000000000b2002000520220062401059d12004d0591055370656564002801c30001002a0001000100",
        Some("6f001400606d733400000000310000000000000000000000000000000800020000000000b2000400cd000000"),
    ),
    ("6f0018009f635f34000000005f7079636f6d6d5f00000000000000000a00020000000000b20008000502200124010000", None),
    (
        "6f001a009f635f34000000005f7079636f6d6d5f00000000000000000a00020000000000b2000a000e032001240130070000",
        Some("6f0029009f635f34000000005f7079636f6d6d5f00000000000000000a00020000000000b20019008e00000014313735362d4c36312f42204c4f47495835353631"),
    ),
];

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    s.as_bytes()
        .chunks(2)
        .map(|p| std::str::from_utf8(p).ok().and_then(|h| u8::from_str_radix(h, 16).ok()).filter(|_| p.len() == 2))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("inspect bench: bad hex {s:?}"))
}

/// The mix through one protocol's inspector: each request in, decided, and
/// (when forwarded) its answer matched before the next, as these clients
/// wait for one.
fn units<P: UnitProtocol + Default, const N: usize>(
    args: &InspectArgs,
    lab: &Lab<'_>,
    protocol: Protocol,
    mix: &Mix,
) -> Result<(), String> {
    let mut units = Vec::new();
    for (q, a) in mix {
        units.push((unhex(q)?, a.map(unhex).transpose()?));
    }
    let mix = units;
    let mut results = Vec::new();
    for _ in 0..args.runs.max(1) {
        let mut insp = Units::<P, N>::new();
        let mut sink = Count { asset: 0, user: 0 };
        let mut done = 0usize;
        let start = Instant::now();
        while done < args.requests {
            for (request, answer) in &mix {
                insp.up_spare()[..request.len()].copy_from_slice(request);
                insp.up_filled(request.len());
                let mut decide = |op: Op| {
                    lab.policy.check(&Query {
                        roles: lab.roles,
                        asset: lab.asset,
                        protocol,
                        op,
                        modbus: None,
                        now: 1_800_000_000,
                        // As a session asks (the lab's rules have no limits).
                        since: Some(Since { granted: 1_800_000_000, ticket_issued: 1_800_000_000 }),
                    })
                };
                done += insp.requests(&mut sink, &mut decide, 0, &mut |_, _| {}).map_err(|e| format!("{e:?}"))?;
                if let Some(answer) = answer {
                    insp.down_spare()[..answer.len()].copy_from_slice(answer);
                    insp.down_filled(answer.len());
                    insp.responses(&mut sink, 1, &mut |_, _| {}).map_err(|e| format!("{e:?}"))?;
                }
            }
        }
        let s = insp.stats;
        if s.unmatched != 0 || s.denied != s.requests / 4 || s.responses != s.requests / 4 * 3 {
            return Err(format!("inspect bench ({}): unexpected verdicts {s:?}", args.protocol));
        }
        results.push(start.elapsed().as_nanos() as f64 / done as f64);
        std::hint::black_box(&sink);
    }
    let ns = median(&results);
    println!(
        "accessgate-perf inspect --protocol {}: {} build, lab policy (operator), 4-request mix (3 forwarded and their answers matched, 1 answered by the gate)",
        args.protocol,
        build_profile()
    );
    println!(
        "  parse + verdict + answer match: {ns:.1} ns/request, median of {} runs ({:.2} M requests/s on one core)",
        results.len(),
        1e3 / ns
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every protocol's mix decides as the bench expects (it errs
    /// otherwise): one refusal in four, every forwarded request answered.
    #[test]
    fn every_mix_decides_as_the_bench_expects() {
        for protocol in ["modbus", "s7", "dnp3", "enip"] {
            let args = InspectArgs { requests: 400, runs: 1, protocol: protocol.into() };
            inspect(&args).unwrap_or_else(|e| panic!("{protocol}: {e}"));
        }
    }
}
