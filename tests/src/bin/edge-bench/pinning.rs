//! Envoy's CPU time per operation of a load, and the CPU pinning of the side-by-side runs
//! (the Envoys on the last CPU, the load generators and the backends on the others).

use anyhow::{ensure, Context, Result};
use harness::bench::CpuTime;

/// Runs `load`, returning its result and Envoy's CPU µs per operation (`ops` of the result).
///
/// Envoy's CPU time is user + system, all threads, from `/proc/<pid>/stat`. Throughput on a
/// shared 2-core machine moves with whatever else runs; the CPU time Envoy spends per request
/// does much less, so it shows a filter's cost even when the machine is busy (e.g. CI).
/// Resolution is one clock tick (10 ms) over runs of seconds.
pub async fn with_cpu<T>(
    cpu: &CpuTime,
    load: impl std::future::Future<Output = Result<T>>,
    ops: impl Fn(&T) -> u64,
) -> Result<(T, f64)> {
    let before = cpu.seconds()?;
    let result = load.await?;
    let used = cpu.seconds()? - before;
    let n = ops(&result).max(1) as f64;
    Ok((result, used * 1e6 / n))
}

/// The machine's CPUs split for a side-by-side run: the last for the Envoys, the rest
/// (`taskset -c` list) for the load generator and the backends (this process).
pub struct SplitCpus {
    envoys: String,
    pub load: String,
    all: String,
}

impl SplitCpus {
    pub fn new() -> Result<Self> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        ensure!(n >= 2, "side by side needs 2 CPUs, this machine has {n}");
        Ok(Self {
            envoys: (n - 1).to_string(),
            load: format!("0-{}", n - 2),
            all: format!("0-{}", n - 1),
        })
    }

    /// Pin `envoys` and this process; every CPU again when the guard goes.
    pub fn pin(&self, envoys: &[u32]) -> Result<Pinned<'_>> {
        let guard = Pinned {
            cpus: self,
            pids: envoys.to_vec(),
        };
        for &pid in envoys {
            taskset(pid, &self.envoys)?;
        }
        taskset(std::process::id(), &self.load)?;
        Ok(guard)
    }
}

/// Pinned processes: every CPU again for them when it goes.
pub struct Pinned<'a> {
    cpus: &'a SplitCpus,
    pids: Vec<u32>,
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        for pid in self.pids.iter().copied().chain([std::process::id()]) {
            if let Err(e) = taskset(pid, &self.cpus.all) {
                eprintln!("edge-bench: {e:#}");
            }
        }
    }
}

/// Every thread of process `pid` onto the CPUs `cpus` (`taskset -c` list).
fn taskset(pid: u32, cpus: &str) -> Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("run taskset (util-linux)")?;
    ensure!(status.success(), "taskset -a -p -c {cpus} {pid}: {status}");
    Ok(())
}
