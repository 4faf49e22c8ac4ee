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

/// The thread directories of a process (`/proc/PID/task/*`).
///
/// # Errors
/// The process's task directory cannot be read.
fn tasks(pid: u32) -> Result<impl Iterator<Item = std::fs::DirEntry>, String> {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    Ok(std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?.flatten())
}

/// utime + stime of each thread of a process, summed by thread name.
///
/// # Errors
/// The process's task directory cannot be read.
fn threads(pid: u32) -> Result<Vec<(String, u64)>, String> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for task in tasks(pid)? {
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

/// Context switches of a process, all its threads summed: (voluntary,
/// involuntary), from `/proc/PID/task/*/status`. A voluntary one is a
/// thread going to sleep (waiting in poll, epoll, a lock, I/O), so it
/// counts the sleep-and-wake-up round trips a server pays; involuntary
/// ones are preemptions. `None` if the process is gone.
pub fn context_switches(pid: u32) -> Option<(u64, u64)> {
    let mut sum = (0, 0);
    for task in tasks(pid).ok()? {
        let (v, n) = std::fs::read_to_string(task.path().join("status")).map_or((0, 0), |t| parse_switches(&t));
        sum = (sum.0 + v, sum.1 + n);
    }
    Some(sum)
}

/// (voluntary, involuntary) context switches from a `status` file's text;
/// a missing or unreadable line counts 0.
fn parse_switches(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("voluntary_ctxt_switches"), field("nonvoluntary_ctxt_switches"))
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    pub cpu: usize,
    /// What this CPU ran: all but idle, iowait and steal.
    pub busy: u64,
    pub all: u64,
    pub softirq: u64,
    /// Time the hypervisor ran something else while this virtual CPU was
    /// runnable. A vCPU that polls (a busy dp core; an idle one under halt
    /// polling) is runnable with nothing to do, a halted one is not: this
    /// says how exposed the CPU was to the host, not how long requests waited.
    pub steal: u64,
}

impl CpuTicks {
    /// Percent of the time since `earlier` this CPU was busy.
    pub fn busy_percent_since(&self, earlier: &Self) -> f64 {
        self.percent_since(earlier, |t| t.busy)
    }

    /// Percent of the time since `earlier` the host took this CPU away.
    pub fn steal_percent_since(&self, earlier: &Self) -> f64 {
        self.percent_since(earlier, |t| t.steal)
    }

    /// Percent of the time since `earlier` this CPU spent in softirq.
    pub fn softirq_percent_since(&self, earlier: &Self) -> f64 {
        self.percent_since(earlier, |t| t.softirq)
    }

    /// The growth of one counter since `earlier`, in percent of all ticks.
    fn percent_since(&self, earlier: &Self, counter: fn(&Self) -> u64) -> f64 {
        let elapsed = (self.all.saturating_sub(earlier.all) as f64).max(1.0);
        100.0 * counter(self).saturating_sub(counter(earlier)) as f64 / elapsed
    }
}

/// The /proc/stat counters of `cpus` (CPUs that do not exist are left out).
pub fn cpu_ticks(cpus: &[usize]) -> Vec<CpuTicks> {
    parse_cpu_ticks(&std::fs::read_to_string("/proc/stat").unwrap_or_default(), cpus)
}

/// [`cpu_ticks`] from the text of /proc/stat.
fn parse_cpu_ticks(stat: &str, cpus: &[usize]) -> Vec<CpuTicks> {
    cpus.iter()
        .filter_map(|&cpu| {
            let name = format!("cpu{cpu}");
            let line = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
            // user nice system idle iowait irq softirq steal (guest time is
            // in user already).
            let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let field = |i: usize| v.get(i).copied().unwrap_or(0);
            let all: u64 = v.iter().take(8).sum();
            let (idle, steal) = (field(3) + field(4), field(7));
            Some(CpuTicks { cpu, busy: all - idle - steal, all, softirq: field(6), steal })
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
        assert_eq!(context_switches(u32::MAX), None);
        // This thread sleeps: its voluntary switches grow.
        let (v0, _) = context_switches(pid).expect("this process");
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (v1, _) = context_switches(pid).expect("this process");
        assert!(v1 >= v0 + 3, "three sleeps, {v0} -> {v1}");
    }

    #[test]
    fn context_switches_are_read_by_name() {
        let status = "Name:\tdp0\nvoluntary_ctxt_switches:\t271248\nnonvoluntary_ctxt_switches:\t17\n";
        assert_eq!(parse_switches(status), (271_248, 17));
        // The prefix of another field is not the field; junk counts 0.
        assert_eq!(parse_switches("xvoluntary_ctxt_switches:\t5\nnonvoluntary_ctxt_switches: x\n"), (0, 0));
        assert_eq!(parse_switches(""), (0, 0));
    }

    #[test]
    fn stolen_time_is_its_own_share_not_busy() {
        let at = |stat: &str| parse_cpu_ticks(stat, &[1, 7]);
        // user nice system idle iowait irq softirq steal guest guest_nice
        let a = at("cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\ncpu1 100 0 50 800 10 0 5 20 0 0\n");
        let b = at("cpu1 130 0 60 850 10 0 10 70 0 0\nintr 1\n");
        assert_eq!(a, vec![CpuTicks { cpu: 1, busy: 155, all: 985, softirq: 5, steal: 20 }]);
        // 145 ticks passed: 45 ran here (5 of them in softirq), 50 idle,
        // 50 the host took.
        assert!((b[0].busy_percent_since(&a[0]) - 100.0 * 45.0 / 145.0).abs() < 1e-9);
        assert!((b[0].steal_percent_since(&a[0]) - 100.0 * 50.0 / 145.0).abs() < 1e-9);
        assert!((b[0].softirq_percent_since(&a[0]) - 100.0 * 5.0 / 145.0).abs() < 1e-9);
        // A kernel without the steal column: none stolen.
        assert_eq!(at("cpu1 3 0 1 10\n"), vec![CpuTicks { cpu: 1, busy: 4, all: 14, softirq: 0, steal: 0 }]);
        // cpu10 is not cpu1; a line of junk counts nothing.
        assert_eq!(at("cpu1 x y\ncpu10 1 1 1 1\n"), vec![CpuTicks { cpu: 1, busy: 0, all: 0, softirq: 0, steal: 0 }]);
    }
}
