//! `edge-bench`: what the edge filter costs, against the same Envoy without a filter, with a
//! proxy-wasm filter that does nothing (the floor of any wasm filter), and with the Lua filter
//! an Envoy user would otherwise write (`tests/bench/edge_filter.lua`).
//!
//! Run by `make bench` through `scripts/bench.sh`; `edge-bench --help` lists the options.
//! This is a measurement, not a test: it prints numbers and PASS/MISS against the targets and
//! exits 0 either way. It fails (non-zero) only if something could not run (Envoy refused the
//! config, wrk is missing, no request got through, a filter did not do its work).
//!
//! Why it is built the way it is:
//!
//! * All four variants are the shipped config from `deploy/envoy/render.sh`, rendered with the
//!   same settings except `EDGE_FILTER` (`0` none, `1` the edge filter, `lua` the Lua
//!   equivalent) and, for the empty filter, `WASM_PATH` (`empty_filter.wasm`, built by
//!   `make wasm` from `edge-filter/examples/empty_filter.rs` with the same SDK, profile and
//!   trimmed exports), run by the same Envoy binary, each in front of three backends of its
//!   own (shared ones would carry the variants' different spreads of the WebSockets into each
//!   other's measurements: [`nodes::Backends`]). The difference between them is the filter,
//!   nothing else: edge filter ÷ empty wasm is the filter's own work, empty wasm ÷ no filter
//!   what the wasm runtime costs any filter.
//! * Two plain-request routes: `/` is the app route of the shipped config, where the filter
//!   is skipped per route (it would only set the key Envoy can hash itself); `/sticky` is in
//!   `STICKY_PATHS`, and every request there carries a browser's affinity cookie, so the
//!   filter does its full work on each (headers, cookie MAC, key header; a request there with
//!   no Cookie and no Origin would skip the filter, see [`nodes::sticky_cookie`]). The first is
//!   what a deployment pays, the second what the filter's own work costs per request.
//! * The machines this runs on are small (CI: 2 cores), and Envoy, wrk, the backends and the
//!   WebSocket client all share those cores, so a single run is noisy. Each metric is
//!   measured for all variants back to back, the order rotates every round so slow drift of
//!   the machine does not always favour the variant that runs first, and every round starts
//!   fresh Envoys (warmed up before they are measured): a process keeps its own luck for life
//!   (where its code and heap landed; two Envoys with the same module measured up to 3 %
//!   apart side by side, steadily over a run), which one set of Envoys for the whole run
//!   would add to every round alike. The report uses medians of per-round ratios, so that
//!   luck is scatter in the rounds' range instead.
//! * Back to back, even paired ratios scatter ±30 % per round on a shared VM, far above the
//!   few percent of the filter's own work. So each round also runs every load on all four
//!   Envoys *side by side* (`measure::Envoys::side_by_side`): the Envoys pinned to one CPU and
//!   loaded at once, the load generators and the backends on the other CPUs; their CPU per
//!   operation, taken over the same seconds, is what the throughput targets are judged on
//!   ([`side_report`]). Measured here: rounds agree within ±2–3 % that way.
//! * The filter's own work on the sticky route is taken apart with a fifth Envoy running a
//!   module that only reads the `Cookie` header (`edge-filter/examples/read_floor.rs`): after
//!   each round's sticky load, it runs side by side with the empty and the edge filter
//!   ([`own_work`]). The read is the one host call the filter cannot skip there.
//! * Envoy gets one worker by default (see `report::envoy_concurrency_note`): Envoy is then the
//!   bottleneck on a 2-core machine, which is what a proxy benchmark should measure.
//! * Plain HTTPS load comes from `wrk` (a well-known C load generator, far cheaper per request
//!   than anything we would write); the WebSocket loads are in-process (wrk cannot speak
//!   WebSocket), one connection per simulated client (see [`harness::bench::ws_open`] for why
//!   not the harness's `ws_connect`).
//! * The backends are the harness's `EchoBackend`, started without records
//!   (`start_unrecorded`): tests assert on what a backend saw, a benchmark does not, and a
//!   record per request grew this process by a few GB over a default run.
//!
//! * Memory per held WebSocket is read on fresh Envoys (one per variant and round, see
//!   [`held`]) after the throughput rounds.
//!
//! The modules: [`args`] (the command line), [`wrapper`] (Envoy's worker count), [`nodes`]
//! (the variants and their Envoys), [`wrk`] and [`ws_load`] (the loads), [`measure`] (warm-up
//! and the rotating rounds), [`own_work`] (the sticky route's own work taken apart), [`held`]
//! (memory per held WebSocket), [`pinning`] (CPU per operation, CPU pinning), [`ratio`] and
//! [`metrics`] (what is compared, and how) and [`report`] with [`held_report`] and
//! [`side_report`] (the Markdown section).

mod args;
mod held;
mod held_report;
mod measure;
mod metrics;
mod nodes;
mod own_work;
mod pinning;
mod ratio;
mod report;
mod side_report;
mod wrapper;
mod wrk;
mod ws_load;

use std::path::Path;
use std::sync::Arc;

use anyhow::{ensure, Result};
use harness::bench::{self, ws_tls_config, CpuTime};
use harness::node::HOST;
use harness::{envoy_bin, wasm_path, TlsFiles};

use crate::args::{Options, USAGE};
use crate::held::held_rounds;
use crate::measure::Envoys;
use crate::nodes::{
    check_node, envoy_concurrency, start_node, start_read_floor, sticky_cookie, Backends, Node,
    Variant, N_BACKENDS, N_VARIANTS, VARIANTS,
};
use crate::own_work::FloorEnvoy;
use crate::report::{render_report, Setup};
use crate::wrapper::envoy_wrapper;

fn main() {
    bench::main("edge-bench", USAGE, |opts: Options| {
        // The real binary, for the report, before $ENVOY may point at the wrapper.
        let envoy = envoy_bin();
        // Set before the runtime (and its threads) exist: the harness reads $ENVOY when it
        // spawns.
        let wrapper = envoy_wrapper(opts.envoy_concurrency, &envoy)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("build the tokio runtime");
        let result = runtime.block_on(run(&opts, &envoy));
        // Envoys and backends are dropped (stopped) inside `run`; the wrapper dir goes last.
        drop(runtime);
        drop(wrapper);
        result
    });
}

/// Starts the backends and an Envoy per variant, checks each runs what it should, measures,
/// then reads memory per held WebSocket on fresh Envoys, and writes the report once
/// everything is stopped.
async fn run(opts: &Options, envoy: &Path) -> Result<()> {
    let wasm = wasm_path();
    ensure!(
        wasm.is_file(),
        "{} is missing: run `make wasm` first",
        wasm.display()
    );
    let began = std::time::Instant::now();
    let loadavg = bench::loadavg();
    eprintln!("edge-bench: starting {N_BACKENDS} backends per variant and for the read floor");
    let backends = Backends::start().await?;
    let tls = TlsFiles::self_signed(&[HOST])?;
    let client_tls = &ws_tls_config(&tls.ca_pem)?;
    // Every round meets fresh Envoys (why: the module doc above).
    let mut rounds = Vec::with_capacity(opts.rounds);
    let mut splits = Vec::new();
    let mut first: Option<([u16; N_VARIANTS], String)> = None;
    let mut seen = FilterCounters::default();
    for i in 0..opts.rounds {
        eprintln!(
            "edge-bench: round {}/{}: starting its Envoys",
            i + 1,
            opts.rounds
        );
        let RoundNodes {
            nodes,
            floor,
            cookie,
        } = start_round(opts, &tls, client_tls, &backends, &wasm).await?;
        let envoys = Envoys {
            opts,
            ports: VARIANTS.map(|v| nodes[v.index()].https),
            cpus: VARIANTS.map(|v| CpuTime::of(nodes[v.index()].envoy.pid())),
            pids: VARIANTS.map(|v| nodes[v.index()].envoy.pid()),
            tls: client_tls,
            sticky_cookie: &cookie,
            read_floor: floor.as_ref().map(|n| FloorEnvoy {
                port: n.https,
                cpu: CpuTime::of(n.envoy.pid()),
                pid: n.envoy.pid(),
            }),
        };
        envoys.warm_up().await?;
        let (round, split) = envoys.round(i).await?;
        rounds.push(round);
        splits.extend(split);
        seen.add(&nodes[Variant::Wasm.index()].envoy).await?;
        let ports = envoys.ports;
        first.get_or_insert_with(|| (ports, cookie.clone()));
    }
    // Proof that the edge filter ran on the handshakes, down the path the report describes: it
    // counted the upgrades it accepted and the cookies it issued (a refusal would have shown as
    // an error of the handshake loop). The cookie route's count is reported, not checked.
    ensure!(
        (seen.accepted > 0 && seen.cookies > 0) || !opts.loads.handshakes,
        "the filter counted {} accepted upgrades and {} issued cookies: it did not run on the \
         benchmark's WebSocket handshakes",
        seen.accepted,
        seen.cookies
    );
    let (ports, cookie) = first.unwrap_or_default();
    let ctx = Setup {
        ports,
        envoy: envoy.to_path_buf(),
        envoy_version: bench::envoy_version(envoy),
        loadavg,
        filter_counters: format!(
            "{} upgrades accepted, {} affinity cookies issued (`edge_https.*` counters); {} \
             sticky requests decided by the cookie alone (`vhost.app.route.sticky_cookie.*`); \
             warm-ups included, summed over the rounds' Envoys",
            seen.accepted, seen.cookies, seen.by_cookie
        ),
        sticky_cookie: cookie,
    };

    let held = if opts.loads.held {
        held_rounds(opts, &tls, client_tls, &backends, &wasm).await?
    } else {
        Vec::new()
    };

    // Stop everything before writing: the report should not wait on anything still running.
    drop(backends);
    let report = render_report(opts, &ctx, &rounds, &splits, &held, began.elapsed());
    bench::emit_report(&report, opts.out.as_deref())
}

/// One round's Envoys: the four variants, the read floor's (with the sticky load) and the
/// sticky load's cookie as this round's edge filter issued it.
struct RoundNodes {
    nodes: Vec<Node>,
    floor: Option<Node>,
    cookie: String,
}

/// Start and check the Envoys of one round.
async fn start_round(
    opts: &Options,
    tls: &TlsFiles,
    client_tls: &Arc<rustls::ClientConfig>,
    backends: &Backends,
    wasm: &Path,
) -> Result<RoundNodes> {
    let mut nodes = Vec::new();
    for v in VARIANTS {
        let node = start_node(v, tls, backends.of(v), wasm).await?;
        check_node(v, &node, client_tls).await?;
        let workers = envoy_concurrency(&node.envoy).await?;
        ensure!(
            workers == opts.envoy_concurrency,
            "Envoy runs {workers} workers, not the {} asked for",
            opts.envoy_concurrency
        );
        nodes.push(node);
    }
    // The cookie's key is the same for every round's Envoys; asking each round checks that
    // the new edge filter and Lua Envoys accept it.
    let cookie = sticky_cookie(&nodes, &tls.ca_pem).await?;
    // The sticky route's breakdown needs a fifth Envoy: the read floor in the empty filter's
    // config ([`own_work`]).
    let floor = if opts.loads.sticky {
        let node = start_read_floor(tls, backends.floor(), wasm).await?;
        check_node(Variant::Empty, &node, client_tls).await?;
        Some(node)
    } else {
        None
    };
    Ok(RoundNodes {
        nodes,
        floor,
        cookie,
    })
}

/// What the edge filter's Envoys counted, summed over the rounds.
#[derive(Default)]
struct FilterCounters {
    accepted: u64,
    cookies: u64,
    by_cookie: u64,
}

impl FilterCounters {
    async fn add(&mut self, envoy: &harness::Envoy) -> Result<()> {
        let wasm = |name: &'static str| async move {
            let full = format!("edge_https.{name}");
            Ok::<_, anyhow::Error>(envoy.wasm_counter(&full).await?.unwrap_or(0))
        };
        self.accepted += wasm("upgrade.accepted").await?;
        self.cookies += wasm("affinity.cookie_issued").await?;
        let full = "vhost.app.route.sticky_cookie.upstream_rq_completed";
        self.by_cookie += envoy.counter(full).await?.unwrap_or(0);
        Ok(())
    }
}
