//! What the benches read about the processes under test: CPU time of a
//! process and of its threads (/proc/PID/stat, /proc/PID/task), how busy
//! each CPU was (/proc/stat), resident memory, and the gate's counters over
//! its control socket.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Linux reports process CPU times in USER_HZ ticks, 100 per second on every
/// architecture the gate runs on.
pub const USER_HZ: f64 = 100.0;

/// utime + stime from a `/proc/.../stat` file, in USER_HZ ticks.
pub fn stat_ticks(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces; the fields start after its ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// utime + stime of a whole process (all its threads), in USER_HZ ticks.
pub fn process_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&PathBuf::from(format!("/proc/{pid}/stat")))
}

/// utime + stime of each thread of a process, summed by thread name.
///
/// # Errors
/// The process's task directory cannot be read.
fn threads(pid: u32) -> Result<Vec<(String, u64)>, String> {
    let tasks = PathBuf::from(format!("/proc/{pid}/task"));
    let mut out: Vec<(String, u64)> = Vec::new();
    for task in std::fs::read_dir(&tasks).map_err(|e| format!("{}: {e}", tasks.display()))?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_string();
        let t = stat_ticks(&task.path().join("stat")).unwrap_or(0);
        match out.iter_mut().find(|(n, _)| *n == comm) {
            Some((_, v)) => *v += t,
            None => out.push((comm, t)),
        }
    }
    Ok(out)
}

/// utime + stime of each thread of a process, summed by thread name (empty
/// if the process is gone).
pub fn thread_ticks(pid: u32) -> Vec<(String, u64)> {
    threads(pid).unwrap_or_default()
}

/// CPU time of the gate's dp threads (named dp0, dp1, ...), USER_HZ ticks.
///
/// # Errors
/// The process's task directory cannot be read.
pub fn dp_ticks(pid: u32) -> Result<u64, String> {
    Ok(threads(pid)?.iter().filter(|(name, _)| name.starts_with("dp")).map(|(_, t)| t).sum())
}

/// Gate dp loops per second of dp-thread CPU time, from the growth of both.
pub fn loops_per_cpu_sec(loops: u64, dp_ticks: u64) -> f64 {
    loops as f64 / (dp_ticks as f64 / USER_HZ)
}

/// VmRSS of a process in KiB.
pub fn vm_rss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One CPU's counters from /proc/stat, in USER_HZ ticks.
#[derive(Debug, Clone, Copy)]
pub struct CpuTicks {
    pub cpu: usize,
    /// All but idle and iowait.
    pub busy: u64,
    pub all: u64,
    pub softirq: u64,
}

impl CpuTicks {
    /// Percent of the time since `earlier` this CPU was busy.
    pub fn busy_percent_since(&self, earlier: &Self) -> f64 {
        100.0 * self.busy.saturating_sub(earlier.busy) as f64 / self.elapsed(earlier)
    }

    /// Percent of the time since `earlier` this CPU spent in softirq.
    pub fn softirq_percent_since(&self, earlier: &Self) -> f64 {
        100.0 * self.softirq.saturating_sub(earlier.softirq) as f64 / self.elapsed(earlier)
    }

    fn elapsed(&self, earlier: &Self) -> f64 {
        (self.all.saturating_sub(earlier.all) as f64).max(1.0)
    }
}

/// The /proc/stat counters of `cpus` (CPUs that do not exist are left out).
pub fn cpu_ticks(cpus: &[usize]) -> Vec<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    cpus.iter()
        .filter_map(|&cpu| {
            let name = format!("cpu{cpu}");
            let line = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
            let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let all: u64 = v.iter().take(8).sum();
            // idle + iowait are not busy.
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            Some(CpuTicks { cpu, busy: all - idle, all, softirq: v.get(6).copied().unwrap_or(0) })
        })
        .collect()
}

/// The gate's counters (`accessgate ctl stats` over `ctl`).
///
/// # Errors
/// The socket does not answer, or not with stats JSON.
pub fn gate_stats(ctl: &Path) -> Result<Map<String, Value>, String> {
    let text = control::api::request(ctl, "stats").map_err(|e| format!("--gate-ctl: {e}"))?;
    let v: Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("--gate-ctl {}: not stats JSON: {e}", ctl.display()))?;
    Ok(v.as_object().cloned().unwrap_or_default())
}

/// The TCP loss-recovery counters the benches report per step: lost
/// segments the kernel sent again, tail-loss probes, and retransmission
/// timeouts.
pub const TCP_LOSS_COUNTERS: [&str; 3] = ["Tcp:RetransSegs", "TcpExt:TCPLossProbes", "TcpExt:TCPTimeouts"];

/// [`TCP_LOSS_COUNTERS`] of the network namespace process `pid` is in
/// (`/proc/PID/net/snmp` and `netstat`), in that order.
pub fn tcp_loss(pid: u32) -> Option<[u64; 3]> {
    let mut text = std::fs::read_to_string(format!("/proc/{pid}/net/snmp")).ok()?;
    text.push_str(&std::fs::read_to_string(format!("/proc/{pid}/net/netstat")).ok()?);
    let mut out = [None; 3];
    let lines: Vec<&str> = text.lines().collect();
    // Each group is a line of names and a line of values, both led by "Group:".
    for pair in lines.chunks_exact(2) {
        let (mut names, mut values) = (pair[0].split_whitespace(), pair[1].split_whitespace());
        let (Some(group), Some(group2)) = (names.next(), values.next()) else { continue };
        if group != group2 {
            return None;
        }
        for (name, value) in names.zip(values) {
            for (slot, want) in out.iter_mut().zip(TCP_LOSS_COUNTERS) {
                if want.strip_prefix(group).is_some_and(|n| n == name) {
                    *slot = value.parse::<u64>().ok();
                }
            }
        }
    }
    Some([out[0]?, out[1]?, out[2]?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_namespace_has_tcp_loss_counters() {
        let pid = std::process::id();
        assert!(tcp_loss(pid).is_some(), "/proc/{pid}/net/snmp and netstat name all of {TCP_LOSS_COUNTERS:?}");
        assert_eq!(tcp_loss(u32::MAX), None);
    }

    #[test]
    fn this_process_has_ticks_threads_memory_and_cpus() {
        let pid = std::process::id();
        assert!(process_ticks(pid).is_some());
        assert!(!thread_ticks(pid).is_empty());
        assert!(vm_rss_kb(pid).is_some_and(|kb| kb > 0));
        assert_eq!(dp_ticks(pid), Ok(0), "no thread of a test is named dp*");
        let c = cpu_ticks(&[0]);
        assert_eq!(c.len(), 1);
        assert!(c[0].busy <= c[0].all);
        assert!(cpu_ticks(&[100_000]).is_empty());
        assert!(dp_ticks(u32::MAX).is_err());
    }
}
