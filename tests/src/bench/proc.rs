//! What the benchmarks read from `/proc`: the machine, its load, and a process's memory, CPU
//! time and file descriptors.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// The machine, as rows for a `| | |` table: CPUs, model, memory, kernel.
pub fn machine_summary() -> Vec<(String, String)> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
        .map(|m| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    vec![
        ("CPUs (nproc)".to_owned(), nproc),
        ("CPU model".to_owned(), model),
        ("memory".to_owned(), mem),
        ("kernel".to_owned(), kernel),
    ]
}

/// `/proc/loadavg`'s three averages: high values mean something else was busy.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A `kB` line of a `/proc/<pid>/status` text (`field` is `VmRSS`, `VmHWM`, …), in KiB.
pub fn status_kib(proc_status: &str, field: &str) -> Option<u64> {
    proc_status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A process's CPU time (user + system, all threads) from `/proc/<pid>/stat`. Resolution is
/// one clock tick (10 ms).
pub struct CpuTime {
    stat: PathBuf,
}

impl CpuTime {
    pub fn of(pid: u32) -> Self {
        Self {
            stat: PathBuf::from(format!("/proc/{pid}/stat")),
        }
    }

    /// CPU seconds so far.
    pub fn seconds(&self) -> Result<f64> {
        let text = fs::read_to_string(&self.stat)
            .with_context(|| format!("read {}", self.stat.display()))?;
        cpu_seconds_from_stat(&text)
    }
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in seconds (USER_HZ is 100 on Linux).
pub fn cpu_seconds_from_stat(text: &str) -> Result<f64> {
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("no ')' in /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let tick = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse::<u64>()
            .context("tick count")? as f64
            / 100.0)
    };
    Ok(tick(11)? + tick(12)?)
}

/// The file descriptors a process has open (0 if it cannot be read).
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// "Max open files" of a process, soft limit.
pub fn max_open_files(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn reads_proc_status_fields() {
        let status =
            "Name:\tenvoy\nVmPeak:\t  900000 kB\nVmHWM:\t    9876 kB\nVmRSS:\t   51234 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(51234));
        assert_eq!(status_kib(status, "VmHWM"), Some(9876));
        assert_eq!(status_kib("Name: x\n", "VmRSS"), None);
    }

    #[test]
    fn reads_cpu_time_from_proc_stat() {
        // Field 2 may contain spaces and parentheses; utime = 250, stime = 50 ticks.
        let line = "4242 (envoy (main)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(cpu_seconds_from_stat(line).unwrap(), 3.0);
        assert!(cpu_seconds_from_stat("4242 (envoy) S 1").is_err());
    }
}
