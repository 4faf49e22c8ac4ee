//! The benchmarks of `accessgate-perf` and what they share: the machine
//! description written with every result, medians, number formatting,
//! argument checks, CPU pinning, and what they read from /proc
//! ([`procfs`]).

pub mod audit;
pub mod drop;
pub mod frames;
pub mod inspect;
pub mod interval;
pub mod json;
pub mod latency;
pub mod load;
pub mod micro;
pub mod mix;
pub mod pass;
pub mod policy;
pub mod procfs;
pub mod proxy;
pub mod tls;
pub mod wake;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use json::Json;

/// An argument check of the benches: `Ok` if `ok`, else
/// "--WHAT must be ALLOWED".
pub fn arg(what: &str, ok: bool, allowed: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("--{what} must be {allowed}"))
    }
}

/// The measurement window of the closed-loop benches: `--seconds` in
/// (0, 60], `--warmup` in [0, 10].
pub fn check_window(seconds: f64, warmup: f64) -> Result<(), String> {
    arg("seconds", seconds > 0.0 && seconds <= 60.0, "in (0, 60]")?;
    arg("warmup", (0.0..=10.0).contains(&warmup), "in [0, 10]")
}

/// Pins the calling thread to `cpu`.
///
/// # Errors
/// `cpu` is not one of this process's CPUs, or the kernel refused.
pub fn pin(cpu: usize) -> Result<(), String> {
    let ids = core_affinity::get_core_ids().ok_or("cannot list this process's CPUs")?;
    let id = ids.iter().copied().find(|c| c.id == cpu).ok_or_else(|| {
        let have: Vec<String> = ids.iter().map(|c| c.id.to_string()).collect();
        format!("--pin {cpu}: not one of this process's CPUs ({})", have.join(", "))
    })?;
    if core_affinity::set_for_current(id) {
        Ok(())
    } else {
        Err(format!("--pin {cpu}: sched_setaffinity failed"))
    }
}

/// What every measuring subcommand does first: pin to `--pin` if given, and
/// warn loudly unless this is a release build. Returns the build profile.
///
/// # Errors
/// The CPU cannot be pinned to.
pub fn prepare(cpu: Option<usize>, command: &str) -> Result<&'static str, String> {
    if let Some(cpu) = cpu {
        pin(cpu)?;
    }
    let profile = build_profile();
    if profile != "release" {
        eprintln!();
        eprintln!("!!! WARNING: this is a {profile} build. Numbers are meaningless.");
        eprintln!("!!! Run: cargo run --release -p perf --bin accessgate-perf -- {command}");
        eprintln!();
    }
    Ok(profile)
}

/// The fields every result file starts with: what wrote it, when, from
/// which command line, build profile and commit.
pub fn result_header(benchmark: &str, started: u64, profile: &str) -> [(&'static str, Json); 7] {
    [
        ("benchmark", Json::from(benchmark)),
        ("schema", Json::from(1u64)),
        ("unix_time", Json::from(started)),
        ("date_utc", Json::from(utc(started))),
        ("command", Json::from(std::env::args().collect::<Vec<_>>().join(" "))),
        ("build_profile", Json::from(profile)),
        ("git", git(Path::new(env!("CARGO_MANIFEST_DIR")))),
    ]
}

/// The build profile this binary was compiled with, as far as it can tell.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Seconds since the Unix epoch.
pub fn unix_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (proleptic Gregorian, UTC).
pub fn utc(secs: u64) -> String {
    let rem = secs % 86_400;
    let (y, m, d) = control::audit::chain::civil((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The median of `xs` (mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `a, b, c`, or `-` for none (a cell or field of printed results).
pub fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(", ")
    }
}

/// `12.35 M`, `812.4 k`, `93.1`: three to four significant digits.
pub fn si(x: f64) -> String {
    let (v, unit) = if x >= 1e9 {
        (x / 1e9, " G")
    } else if x >= 1e6 {
        (x / 1e6, " M")
    } else if x >= 1e3 {
        (x / 1e3, " k")
    } else {
        (x, "")
    };
    let digits = if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    format!("{v:.digits$}{unit}")
}

/// What the result was measured on.
pub fn machine() -> Json {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string());
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string());
    Json::obj([
        ("logical_cpus", Json::from(std::thread::available_parallelism().map_or(0, |n| n.get()))),
        ("cpu_model", Json::from(model)),
        ("kernel", Json::from(kernel)),
        ("loadavg_at_start", Json::from(loadavg)),
    ])
}

/// The source tree's commit and whether it had local changes.
pub fn git(dir: &Path) -> Json {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = run(&["rev-parse", "HEAD"]);
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    Json::obj([("commit", Json::from(commit)), ("dirty", Json::from(dirty))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_medians_and_units() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(si(12_345_678.0), "12.35 M");
        assert_eq!(si(812_400.0), "812.4 k");
        assert_eq!(si(93.14), "93.14");
    }
}
