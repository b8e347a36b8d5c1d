//! What the filter's own work on the sticky route is made of.
//!
//! A sticky request whose affinity cookie alone decides its key meets only the cookie route's
//! instance of the filter, which reads one header (`Cookie`) and checks the cookie in it. A
//! module that does the read and nothing else (`edge-filter/examples/read_floor.rs`, built
//! like the empty filter) runs in a fifth Envoy; after each round's sticky load, the empty
//! filter, the read floor and the edge filter take the same load side by side, three Envoys
//! on one CPU at once (as the four variants are for every load). Read floor ÷ empty is what
//! the read costs; edge filter ÷ read floor what the check and everything else the filter
//! does cost. The own-work target's miss reason quotes both.

use std::fmt::Write as _;

use anyhow::Result;
use harness::bench::{median, CpuTime};

use crate::args::Options;
use crate::nodes::STICKY_PATH;
use crate::pinning::{with_cpu, SplitCpus};
use crate::ratio::{paired, Ratio};
use crate::wrk::{run_wrk_on, Plain, WrkResult};

/// The read floor's Envoy ([`crate::nodes::start_read_floor`]).
pub struct FloorEnvoy {
    pub port: u16,
    pub cpu: CpuTime,
    pub pid: u32,
}

/// One of the three Envoys of [`read_split`].
pub struct SideEnvoy<'a> {
    pub port: u16,
    pub cpu: &'a CpuTime,
    pub pid: u32,
}

impl FloorEnvoy {
    pub fn side(&self) -> SideEnvoy<'_> {
        SideEnvoy {
            port: self.port,
            cpu: &self.cpu,
            pid: self.pid,
        }
    }
}

/// One round's Envoy CPU µs per sticky request of the three, side by side, and the CPU
/// seconds they used together per second.
#[derive(Debug, Clone, Copy)]
pub struct ReadSplit {
    pub empty: f64,
    pub read: f64,
    pub edge: f64,
    pub busy: f64,
}

impl ReadSplit {
    /// Read floor ÷ empty, in requests per Envoy CPU-second.
    fn read_cost(&self) -> f64 {
        self.empty / self.read
    }

    /// Edge filter ÷ read floor.
    fn rest_cost(&self) -> f64 {
        self.read / self.edge
    }

    /// Edge filter ÷ empty, in this three-way run.
    fn own_work(&self) -> f64 {
        self.empty / self.edge
    }
}

/// The sticky load (`cookie`: its `Cookie` header) on the empty filter, the read floor and
/// the edge filter at once, the three pinned to one CPU.
pub async fn read_split(
    opts: &Options,
    [empty, floor, edge]: [SideEnvoy<'_>; 3],
    cookie: &str,
    tag: &str,
) -> Result<ReadSplit> {
    let cpus = SplitCpus::new()?;
    let _pinned = cpus.pin(&[empty.pid, floor.pid, edge.pid])?;
    let on = cpus.load.as_str();
    let (e, r, w) = tokio::try_join!(
        sticky_on(opts, empty.port, empty.cpu, cookie, on),
        sticky_on(opts, floor.port, floor.cpu, cookie, on),
        sticky_on(opts, edge.port, edge.cpu, cookie, on),
    )?;
    let cpu_s: f64 = [&e, &r, &w]
        .iter()
        .map(|(run, us)| us * run.requests as f64 / 1e6)
        .sum();
    let split = ReadSplit {
        empty: e.1,
        read: r.1,
        edge: w.1,
        busy: cpu_s / opts.duration.as_secs_f64(),
    };
    eprintln!(
        "edge-bench: {tag}: sticky route, empty / read floor / edge filter side by side: \
         {:.1} / {:.1} / {:.1} µs CPU per request; busy {:.0} %",
        split.empty,
        split.read,
        split.edge,
        split.busy * 100.0
    );
    Ok(split)
}

/// One sticky run on `port`, wrk on the CPUs `on`, with Envoy's CPU µs per request.
async fn sticky_on(
    opts: &Options,
    port: u16,
    cpu: &CpuTime,
    cookie: &str,
    on: &str,
) -> Result<(WrkResult, f64)> {
    let load = Plain {
        path: STICKY_PATH,
        header: Some(cookie),
    };
    let wrk = run_wrk_on(opts, opts.duration, port, load, Some(on));
    with_cpu(cpu, wrk, |r| r.requests).await
}

fn ratio(splits: &[ReadSplit], f: SplitRatio) -> Ratio {
    paired(splits.iter().map(f).collect())
}

/// The report's subsection: per round, the three's CPU per request; the two ratios.
pub fn own_work_section(w: &mut String, splits: &[ReadSplit], floor_path: &str) {
    if splits.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "\n### The sticky route's own work, taken apart\n\n\
         A request on the sticky route whose cookie alone decides meets one filter instance, \
         which reads the `Cookie` header and checks the cookie. `{floor_path}` \
         (`edge-filter/examples/read_floor.rs`) does the read and nothing else, built like the \
         empty filter; a fifth Envoy runs it with the empty filter's config. After each \
         round's sticky load, the empty filter, the read floor and the edge filter take that \
         load side by side (three Envoys on one CPU at once, as above). All five Envoys are \
         fresh every round: two Envoys with the same module measured up to 3 % apart for a \
         whole run (where a process's code and heap land is its own luck), so with the same \
         processes all run that would lean every round one way; with fresh ones it varies \
         from round to round and shows in the ranges.\n\n\
         sticky route: Envoy CPU µs per request\n\n\
         | round | empty wasm | read floor | edge filter | busy |\n|---|---:|---:|---:|---:|"
    );
    for (i, s) in splits.iter().enumerate() {
        let _ = writeln!(
            w,
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} % |",
            i + 1,
            s.empty,
            s.read,
            s.edge,
            s.busy * 100.0
        );
    }
    let med = |f: SplitRatio| median(splits.iter().map(f).collect());
    let _ = writeln!(
        w,
        "| median | {:.1} | {:.1} | {:.1} | {:.0} % |",
        med(|s| s.empty),
        med(|s| s.read),
        med(|s| s.edge),
        med(|s| s.busy) * 100.0
    );
    let _ = writeln!(
        w,
        "\n| ratio (requests per Envoy CPU-second) | median (range) |\n|---|---:|"
    );
    for (name, f) in RATIOS {
        let r = ratio(splits, f);
        let _ = writeln!(
            w,
            "| {name} | {:.3} ({:.3}–{:.3}) |",
            r.median, r.min, r.max
        );
    }
}

/// A ratio of one round's split.
type SplitRatio = fn(&ReadSplit) -> f64;

const RATIOS: [(&str, SplitRatio); 3] = [
    (
        "read floor / empty wasm: the Cookie header read",
        ReadSplit::read_cost,
    ),
    (
        "edge filter / read floor: everything else the filter does",
        ReadSplit::rest_cost,
    ),
    (
        "edge filter / empty wasm (this three-way run)",
        ReadSplit::own_work,
    ),
];

/// For the own-work target's miss reason: what the breakdown measured.
pub fn own_work_reason(splits: &[ReadSplit]) -> Option<String> {
    if splits.is_empty() {
        return None;
    }
    let read = ratio(splits, ReadSplit::read_cost);
    let rest = ratio(splits, ReadSplit::rest_cost);
    // What the figures say, in words: "next to nothing" only when the rest is within the
    // 2 % this machine resolves.
    let rest_words = if rest.median >= 0.98 {
        "so the read is about all of the filter's own work, and the check and the rest cost \
         next to nothing"
    } else {
        "so the read is part of the filter's own work and the rest (the check, the context \
         the filter keeps) another part"
    };
    Some(format!(
        "Taken apart (side by side with a module that only reads the `Cookie` header, in a \
         fifth Envoy; fresh Envoys every round): the read floor keeps {:.3} of the empty \
         filter (rounds {:.3}–{:.3}) and the edge filter {:.3} of the read floor (rounds \
         {:.3}–{:.3}), {rest_words}. The read is one proxy-wasm host call plus Envoy's call \
         back into the VM for the answer's memory (a read of an absent header, the host call \
         alone, measured about half of it: edge-filter/README.md); the filter cannot skip \
         it, since a client must never choose its key and the cookie is verified before \
         Envoy may hash it.",
        read.median, read.min, read.max, rest.median, rest.min, rest.max
    ))
}
