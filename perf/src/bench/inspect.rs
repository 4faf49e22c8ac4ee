//! Modbus parse + verdict cost per request: the inspector framing a
//! pipelined stream of mixed requests (reads, writes inside and outside the
//! operator's range, diagnostics) and asking the compiled lab policy about
//! each, with sinks that only count. Release build, one thread.

use std::time::Instant;

use dataplane::inspect::modbus::{exception_for, ModbusInspector};
use dataplane::inspect::{Downstream, Sink};
use dataplane::policy::{ModbusDetail, Op, Query};
use dataplane::snapshot::Protocol;
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
