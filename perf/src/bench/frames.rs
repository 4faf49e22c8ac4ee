//! `accessgate-perf frames`: per-core frame rates on the memory backend.
//!
//! Three measurements per run, interleaved when `--runs` > 1:
//! - drop path: denied frames into the gate's north port, `poll_once` drains;
//! - proxy path: the in-memory lab with pipelined Modbus connections;
//! - classifier micro: `classify()` alone over the drop mix and one admitted frame.
//!
//! Each value reported is the median over the runs; every run is kept in the
//! JSON result file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use control::Config;
use dataplane::core::CoreOptions;
use dataplane::io::{FramePort, BATCH};
use perf::memlab::{MemLab, LINK_DEPTH};

use super::json::Json;
use super::mix::{self, MIX_LEN};
use super::proxy::Load;
use super::{drop, median, micro, proxy, si};

/// The lab config, embedded so the bench runs from any directory.
const LAB_CONFIG: &str = include_str!("../../../config/lab.toml");

#[derive(clap::Args, Debug)]
pub struct FramesArgs {
    /// Seconds per measurement (each of drop, proxy and classify; at most 60).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of warmup before each measurement (at most 10).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Drop path: frames written to the gate's north link before each round
    /// of `poll_once` (the core receives at most 32 per port per call).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Pin the benchmark thread to this CPU (gate, hosts and PLC all run on it).
    #[arg(long, value_name = "CPU")]
    pin: Option<usize>,
    /// Proxy path: concurrent user connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Proxy path: Modbus requests in flight per connection.
    #[arg(long, default_value_t = 8)]
    depth: usize,
    /// Proxy path: holding registers read per request.
    #[arg(long, default_value_t = 10)]
    registers: u16,
    /// Repeat every measurement this many times and report medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Gate config (default: config/lab.toml, embedded).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where to write foundation-<unix time>.json and foundation-latest.json.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Print the table only; write no result file.
    #[arg(long)]
    no_write: bool,
}

impl FramesArgs {
    fn check(&self) -> Result<(), String> {
        let range = super::arg;
        super::check_window(self.seconds, self.warmup)?;
        range("batch", (1..=LINK_DEPTH).contains(&self.batch), "in 1..=1024 (the memory link depth)")?;
        range("connections", (1..=dataplane::core::MAX_LISTENERS).contains(&self.connections), "in 1..=256")?;
        range("depth", (1..=64).contains(&self.depth), "in 1..=64")?;
        range("registers", (1..=125).contains(&self.registers), "in 1..=125")?;
        range("runs", (1..=9).contains(&self.runs), "in 1..=9")
    }
}

/// Named values of one run of one benchmark, in print order.
type Values = Vec<(&'static str, f64)>;

/// The runs of one benchmark.
#[derive(Default)]
struct Series {
    runs: Vec<Values>,
}

impl Series {
    fn median(&self, key: &str) -> f64 {
        let xs: Vec<f64> =
            self.runs.iter().filter_map(|r| r.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)).collect();
        median(&xs)
    }

    fn json(&self) -> Json {
        let keys: Vec<&str> = self.runs.first().map(|r| r.iter().map(|(k, _)| *k).collect()).unwrap_or_default();
        let as_obj = |r: &Values| Json::obj(r.iter().map(|(k, v)| (*k, Json::from(*v))));
        Json::obj([
            ("median", Json::obj(keys.iter().map(|k| (*k, Json::from(self.median(k)))))),
            ("runs", Json::Arr(self.runs.iter().map(as_obj).collect())),
        ])
    }
}

pub fn frames(args: &FramesArgs) -> Result<(), String> {
    args.check()?;
    let config = match &args.config {
        Some(p) => control::config::load(p).map_err(|e| e.to_string())?,
        None => control::config::parse("config/lab.toml (embedded)", LAB_CONFIG).map_err(|e| e.to_string())?,
    };
    let profile = super::prepare(args.pin, "frames")?;
    let started = super::unix_time();
    let machine = super::machine();
    let seconds = Duration::from_secs_f64(args.seconds);
    let warmup = Duration::from_secs_f64(args.warmup);
    let load = Load { connections: args.connections, depth: args.depth, registers: args.registers };
    eprintln!(
        "accessgate-perf frames: {} run(s) x 3 measurements x ({:.1} s warmup + {:.1} s), about {:.0} s",
        args.runs,
        args.warmup,
        args.seconds,
        args.runs as f64 * 3.0 * (args.warmup + args.seconds) + 0.5
    );

    let mut drops = Series::default();
    let mut proxies = Series::default();
    let mut micros = Series::default();
    for run in 1..=args.runs {
        eprintln!("run {run}/{}: drop path (batch {})", args.runs, args.batch);
        let d = drop::run(&config, args.batch, warmup, seconds)?;
        drops.runs.push(drop_values(&d));

        eprintln!("run {run}/{}: proxy path ({} connections x {} in flight)", args.runs, args.connections, args.depth);
        let p = proxy::run(&config, load, warmup, seconds)?;
        proxies.runs.push(proxy_values(&p));

        eprintln!("run {run}/{}: classify micro", args.runs);
        micros.runs.push(micro_values(&config, warmup, seconds)?);
    }

    print_table(args, profile, &drops, &proxies, &micros);

    if args.no_write {
        return Ok(());
    }
    let dir = args.out_dir.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    let doc = Json::obj(
        super::result_header("accessgate-perf frames", started, profile).into_iter().chain([
            ("machine", machine),
            ("pinned_cpu", Json::from(args.pin)),
            ("idle_mode", Json::from("busy (the bench calls Core::poll_once directly, never sleeps)")),
            (
                "params",
                Json::obj([
                    ("seconds", Json::from(args.seconds)),
                    ("warmup_seconds", Json::from(args.warmup)),
                    ("runs", Json::from(args.runs)),
                    ("drop_batch", Json::from(args.batch)),
                    ("core_rx_burst", Json::from(BATCH)),
                    ("drop_mix_frames", Json::from(MIX_LEN)),
                    (
                        "drop_mix_kinds",
                        Json::Arr(
                            mix::Kind::ALL
                                .iter()
                                .map(|k| {
                                    Json::obj([
                                        ("kind", Json::from(k.name())),
                                        ("drop", Json::from(k.expected().as_str())),
                                    ])
                                })
                                .collect(),
                        ),
                    ),
                    ("link_depth", Json::from(LINK_DEPTH)),
                    ("proxy_connections", Json::from(args.connections)),
                    ("proxy_depth", Json::from(args.depth)),
                    ("proxy_registers", Json::from(u64::from(args.registers))),
                    (
                        "config",
                        Json::from(
                            args.config
                                .as_ref()
                                .map_or("config/lab.toml (embedded)".to_string(), |p| p.display().to_string()),
                        ),
                    ),
                ]),
            ),
            ("drop_path", drops.json()),
            ("proxy_path", proxies.json()),
            ("classify_micro", micros.json()),
        ]),
    );
    let text = doc.pretty();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let stamped = dir.join(format!("foundation-{started}.json"));
    let latest = dir.join("foundation-latest.json");
    for path in [&stamped, &latest] {
        std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!();
    println!("wrote {} and {}", stamped.display(), latest.display());
    Ok(())
}

fn drop_values(d: &drop::DropResult) -> Values {
    let mut v = vec![
        ("gate_frames_per_sec", d.gate_fps()),
        ("gate_ns_per_frame", d.gate_ns_per_frame()),
        ("wall_frames_per_sec", d.wall_fps()),
        ("frames_per_poll", d.frames_per_poll()),
        ("frames", d.frames as f64),
        ("drop_total", d.dropped as f64),
        ("polls", d.polls as f64),
        ("gate_seconds", d.gate.as_secs_f64()),
        ("wall_seconds", d.wall.as_secs_f64()),
    ];
    for (reason, n) in &d.by_reason {
        v.push((drop_key(reason), *n as f64));
    }
    v
}

/// `drop_<reason>` as a static key (the reasons are a fixed set).
fn drop_key(reason: &str) -> &'static str {
    match reason {
        "no_endpoint" => "drop_no_endpoint",
        "not_tcp" => "drop_not_tcp",
        "ethertype" => "drop_ethertype",
        "arp_not_for_gate" => "drop_arp_not_for_gate",
        _ => "drop_other",
    }
}

fn proxy_values(p: &proxy::ProxyResult) -> Values {
    vec![
        ("requests_per_sec", p.requests_per_sec()),
        ("gate_frames_per_sec_wall", p.wall_fps()),
        ("gate_share_percent", 100.0 * p.gate_share()),
        ("gate_frames_per_gate_sec", p.gate_fps()),
        ("gate_ns_per_frame", p.gate_ns_per_frame()),
        ("gate_requests_per_gate_sec", p.gate_requests_per_sec()),
        ("gate_frames_per_request", p.frames_per_request()),
        ("latency_p50_us", p.latency_p50_us),
        ("latency_p99_us", p.latency_p99_us),
        ("latency_max_us", p.latency_max_us),
        ("requests", p.requests as f64),
        ("plc_served", p.plc_served as f64),
        ("bytes_up_per_request", p.bytes_up as f64 / p.requests as f64),
        ("bytes_down_per_request", p.bytes_down as f64 / p.requests as f64),
        ("gate_rx_frames", p.gate_rx as f64),
        ("gate_tx_frames", p.gate_tx as f64),
        ("gate_tx_dropped", p.gate_tx_dropped as f64),
        ("steps", p.steps as f64),
        ("gate_seconds", p.gate.as_secs_f64()),
        ("auth_seconds", p.auth.as_secs_f64()),
        ("hosts_seconds", p.hosts.as_secs_f64()),
        ("wall_seconds", p.wall.as_secs_f64()),
    ]
}

fn micro_values(config: &Config, warmup: Duration, seconds: Duration) -> Result<Values, String> {
    // A lab only for its snapshot and the user's addresses (the same frames
    // the drop path sends).
    let lab = MemLab::new(config, CoreOptions::default()).map_err(|e| e.to_string())?;
    let snap = lab.control.snapshot();
    let user_mac = lab.user.port.mac();
    let mix = mix::drop_mix(&snap, lab.user.address, user_mac)?;
    let admit = mix::admit_frame(&snap, lab.user.address, user_mac)?;
    let mix_refs: Vec<&[u8]> = mix.iter().map(|f| f.bytes.as_slice()).collect();
    let half = warmup / 2;
    let d = micro::run(&mix_refs, &snap, half, seconds / 2);
    let a = micro::run(&[admit.as_slice()], &snap, half, seconds / 2);
    Ok(vec![
        ("drop_mix_ns_per_frame", d.ns_per_frame()),
        ("drop_mix_frames_per_sec", d.frames_per_sec()),
        ("admit_ns_per_frame", a.ns_per_frame()),
        ("admit_frames_per_sec", a.frames_per_sec()),
        ("drop_mix_frames", d.frames as f64),
        ("admit_frames", a.frames as f64),
    ])
}

fn print_table(args: &FramesArgs, profile: &str, drops: &Series, proxies: &Series, micros: &Series) {
    let pinned = args.pin.map_or("none (the scheduler may migrate the thread)".to_string(), |c| format!("CPU {c}"));
    println!();
    println!("accessgate-perf frames — memory backend, one thread");
    let loud = if profile == "release" { "" } else { "   <-- NOT RELEASE: NUMBERS ARE MEANINGLESS" };
    println!("  build profile : {profile}{loud}");
    println!("  pinned        : {pinned}");
    println!("  idle mode     : busy (poll_once called directly)");
    println!(
        "  per measure   : {:.1} s (+{:.1} s warmup), {} run(s), {}",
        args.seconds,
        args.warmup,
        args.runs,
        if args.runs > 1 { "median of runs shown" } else { "single run" }
    );
    println!();
    println!("{:<34} {:>12}  unit", "measurement", "value");
    println!("{}", "-".repeat(78));
    let row = |label: &str, v: f64, unit: &str, raw: bool| {
        let shown = if raw { format!("{v:.1}") } else { si(v) };
        println!("{label:<34} {shown:>12}  {unit}");
    };
    println!("drop path (batch {}, {}-frame deny mix)", args.batch, MIX_LEN);
    row("  gate rate (per core)", drops.median("gate_frames_per_sec"), "frames/s of gate time", false);
    row("  gate cost", drops.median("gate_ns_per_frame"), "ns/frame", true);
    row("  incl. writing the frames in", drops.median("wall_frames_per_sec"), "frames/s wall (one thread)", false);
    row("  frames per poll_once", drops.median("frames_per_poll"), "frames", true);
    println!("proxy path ({} conns x {} in flight, read {} regs)", args.connections, args.depth, args.registers);
    row("  requests", proxies.median("requests_per_sec"), "req/s wall (gate+user+PLC, one thread)", false);
    row("  gate frames (rx+tx)", proxies.median("gate_frames_per_sec_wall"), "frames/s wall", false);
    row("  gate share of the thread", proxies.median("gate_share_percent"), "% of wall time in poll_once", true);
    row("  gate rate (per core)", proxies.median("gate_frames_per_gate_sec"), "frames/s of gate time", false);
    row("  gate cost", proxies.median("gate_ns_per_frame"), "ns/frame", true);
    row("  gate requests (per core)", proxies.median("gate_requests_per_gate_sec"), "req/s of gate time", false);
    row("  gate frames per request", proxies.median("gate_frames_per_request"), "frames", true);
    row("  request latency p50", proxies.median("latency_p50_us"), "µs (pipelined, one thread)", true);
    row("  request latency p99", proxies.median("latency_p99_us"), "µs", true);
    println!("classify() micro");
    row("  deny mix", micros.median("drop_mix_ns_per_frame"), "ns/frame", true);
    row("  admitted (TCP to the endpoint)", micros.median("admit_ns_per_frame"), "ns/frame", true);
}
