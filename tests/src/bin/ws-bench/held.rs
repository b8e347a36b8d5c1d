//! Held connections: per round, a fresh Envoy with the filter holds N WebSockets at once; its
//! memory before, while held and after, and what it counts.

use std::fs;
use std::time::Duration;

use anyhow::{ensure, Result};
use harness::bench::{
    close_all, echo_all, envoy_memory, envoy_workers, loadavg, max_open_files, open_fds, open_many,
    ws_tls_config, Memory,
};
use harness::node::Ports;
use harness::{EchoBackend, Envoy};
use tokio::time::Instant;

use crate::args::Options;
use crate::nofile::{fd_capacity, FD_MARGIN};
use crate::policy::yaml_value;
use crate::setup::{has_wasm_filter, node_config, start_envoy, stat, Bench};

/// Backends behind the Envoy holding connections.
pub const HELD_BACKENDS: usize = 3;
/// Connections opened, echoed and closed before the "before" memory reading.
pub const HELD_WARMUP: usize = 100;
/// What the harness passes to Envoy; checked against `/server_info`.
pub const HARNESS_ENVOY_CONCURRENCY: u64 = 2;

/// Envoy's gauges and counters that show what it holds, while all connections are open.
#[derive(Debug, Clone, Default)]
pub struct HeldStats {
    pub downstream_cx_active: u64,
    pub upgrades_active: u64,
    pub upstream_cx_active: u64,
    /// Circuit-breaker and overload refusals over the whole round (all should be 0).
    pub refusals: u64,
    pub refusal_detail: String,
    pub envoy_fds: usize,
    /// Upgrades the backends accepted in the round (warm-up excluded).
    pub backend_upgrades: usize,
}

/// The descriptor budget of a round.
#[derive(Debug, Clone, Default)]
pub struct FdBudget {
    pub envoy_limit: u64,
    /// Envoy's open descriptors before the connections (listeners, health checks, logs...).
    pub envoy_idle: usize,
    pub self_limit: u64,
    pub self_idle: usize,
}

#[derive(Debug, Clone, Default)]
pub struct HeldRound {
    /// Connections this round tried to hold: the requested number, or fewer if the
    /// descriptor limits do not allow it.
    pub n: usize,
    pub fds: FdBudget,
    pub opened: usize,
    pub open_errors: usize,
    pub open_secs: f64,
    pub echoed: usize,
    pub echo_errors: usize,
    pub echo_secs: f64,
    pub last_error: Option<String>,
    pub stats: HeldStats,
    pub before: Memory,
    pub held: Memory,
    pub after_close: Memory,
    /// Active downstream connections once the client closed them all.
    pub left_after_close: u64,
}

impl HeldRound {
    pub fn errors(&self) -> usize {
        self.open_errors + self.echo_errors
    }

    /// All N connections open, echoing, and counted as active by Envoy and the backends.
    pub fn all_held(&self, n: usize) -> bool {
        let n64 = n as u64;
        self.errors() == 0
            && self.opened == n
            && self.echoed == n
            && self.stats.upgrades_active == n64
            && self.stats.downstream_cx_active >= n64
            && self.stats.upstream_cx_active >= n64
            && self.stats.backend_upgrades == n
            && self.stats.refusals == 0
    }
}

pub struct HeldResult {
    pub rounds: Vec<HeldRound>,
    /// Connection limits of the rendered config: overload manager, circuit breaker, idle.
    pub limits: String,
    pub workers: u64,
    pub filter_present: bool,
    pub envoy_nofile: String,
    pub accepted_counter: u64,
    pub loadavg: String,
}

/// Waits (bounded) until Envoy's active downstream connections on the TLS listener drop to
/// `target` or below; returns the last value.
async fn wait_downstream_at_most(envoy: &Envoy, target: u64, timeout: Duration) -> Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = stat(envoy, "http.https.downstream_cx_active").await?;
        if n <= target || Instant::now() >= deadline {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub const REFUSAL_STATS: [&str; 5] = [
    "cluster.app.upstream_cx_overflow",
    "cluster.app.upstream_rq_pending_overflow",
    "cluster.app.upstream_cx_connect_fail",
    "http.https.downstream_cx_overload_disable_keepalive",
    "http.https.downstream_rq_overload_close",
];

async fn held_round(
    opts: &Options,
    ctx: &Bench,
    r: usize,
    first: bool,
    result: &mut HeldResult,
) -> Result<HeldRound> {
    let tag = format!("held round {}/{}", r + 1, opts.rounds);
    let mut backends = Vec::new();
    for i in 0..HELD_BACKENDS {
        backends.push(EchoBackend::start(&format!("backend-{}", i + 1)).await?);
    }
    let refs: Vec<&EchoBackend> = backends.iter().collect();
    let ports = Ports::free();
    let config = node_config(&ports, ctx, &refs, "ws-bench-held")?;
    if first {
        result.limits = format!(
            "overload manager `max_active_downstream_connections: {}`, app cluster circuit \
             breaker `max_connections: {}`, TLS listener `stream_idle_timeout: {}`",
            yaml_value(&config, "max_active_downstream_connections"),
            yaml_value(&config, "max_connections"),
            yaml_value(&config, "stream_idle_timeout"),
        );
    }
    let envoy = start_envoy(&config, ports.admin, HELD_BACKENDS).await?;
    let pid = envoy.pid();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    ensure!(
        comm.trim() == "envoy",
        "pid {pid} is {:?}, not Envoy: its memory would not be Envoy's",
        comm.trim()
    );
    if first {
        result.workers = envoy_workers(&envoy).await?;
        result.filter_present = has_wasm_filter(&envoy).await?;
        result.envoy_nofile = max_open_files(pid);
    }
    let tls = ws_tls_config(&ctx.tls.ca_pem)?;

    // Warm-up: V8 compiles the filter per worker, pools and TLS contexts fill; not measured.
    let (warm, errors, last) = open_many(
        ports.https,
        &tls,
        "warm",
        HELD_WARMUP.min(opts.connections),
        opts.connect_concurrency,
    )
    .await;
    ensure!(errors == 0, "{tag}: warm-up failed: {last:?}");
    let (warm, errors, last) = echo_all(warm, "warm").await;
    ensure!(errors == 0, "{tag}: warm-up echo failed: {last:?}");
    close_all(warm).await;
    wait_downstream_at_most(&envoy, 0, Duration::from_secs(15)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let upgrades_before: usize = backends.iter().map(EchoBackend::upgrade_count).sum();
    let refusals_before = refusal_counts(&envoy).await?;
    let before = envoy_memory(&envoy).await?;

    // How many fit in both processes' descriptor limits (see `fd_capacity`).
    let envoy_limit = max_open_files(pid).parse().unwrap_or(ctx.nofile.soft);
    let (envoy_fds_idle, self_fds_idle) = (open_fds(pid), open_fds(std::process::id()));
    let capacity = fd_capacity(envoy_limit, envoy_fds_idle, FD_MARGIN).min(fd_capacity(
        ctx.nofile.soft,
        self_fds_idle,
        FD_MARGIN,
    ));
    let n = opts.connections.min(capacity);
    if n < opts.connections {
        eprintln!(
            "ws-bench: {tag}: holding {n}, not {}: Envoy may open {envoy_limit} files and has \
             {envoy_fds_idle} open, this process {} and {self_fds_idle}",
            opts.connections, ctx.nofile.soft
        );
    }

    let started = Instant::now();
    let (open, open_errors, last_open) =
        open_many(ports.https, &tls, "held", n, opts.connect_concurrency).await;
    let open_secs = started.elapsed().as_secs_f64();
    let opened = open.len();
    eprintln!(
        "ws-bench: {tag}: {opened}/{n} open in {open_secs:.1} s ({open_errors} errors{})",
        last_open
            .as_deref()
            .map(|e| format!(", last: {e}"))
            .unwrap_or_default()
    );
    let started = Instant::now();
    let (echoed, echo_errors, last_echo) = echo_all(open, "held").await;
    let echo_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let held = envoy_memory(&envoy).await?;
    let refusals_after = refusal_counts(&envoy).await?;
    let refusal_detail = refusals_after
        .iter()
        .zip(&refusals_before)
        .zip(REFUSAL_STATS)
        .map(|((a, b), name)| format!("{name} {}", a - b))
        .collect::<Vec<_>>()
        .join(", ");
    let stats = HeldStats {
        downstream_cx_active: stat(&envoy, "http.https.downstream_cx_active").await?,
        upgrades_active: stat(&envoy, "http.https.downstream_cx_upgrades_active").await?,
        upstream_cx_active: stat(&envoy, "cluster.app.upstream_cx_active").await?,
        refusals: refusals_after
            .iter()
            .zip(&refusals_before)
            .map(|(a, b)| a - b)
            .sum(),
        refusal_detail,
        envoy_fds: open_fds(pid),
        backend_upgrades: backends
            .iter()
            .map(EchoBackend::upgrade_count)
            .sum::<usize>()
            - upgrades_before,
    };
    let echoed_n = echoed.len();
    eprintln!(
        "ws-bench: {tag}: {echoed_n} echoed in {echo_secs:.1} s ({echo_errors} errors); Envoy \
         holds {} downstream ({} upgraded), {} upstream, {} fds; RSS {} → {} KiB, allocated \
         {} → {} bytes",
        stats.downstream_cx_active,
        stats.upgrades_active,
        stats.upstream_cx_active,
        stats.envoy_fds,
        before.rss_kib,
        held.rss_kib,
        before.allocated,
        held.allocated
    );

    close_all(echoed).await;
    let left = wait_downstream_at_most(&envoy, 0, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_close = envoy_memory(&envoy).await?;
    result.accepted_counter += envoy
        .wasm_counter("edge_https.upgrade.accepted")
        .await?
        .unwrap_or(0);
    drop(envoy);
    drop(backends);
    Ok(HeldRound {
        n,
        fds: FdBudget {
            envoy_limit,
            envoy_idle: envoy_fds_idle,
            self_limit: ctx.nofile.soft,
            self_idle: self_fds_idle,
        },
        opened,
        open_errors,
        open_secs,
        echoed: echoed_n,
        echo_errors,
        echo_secs,
        last_error: last_echo.or(last_open),
        stats,
        before,
        held,
        after_close,
        left_after_close: left,
    })
}

async fn refusal_counts(envoy: &Envoy) -> Result<Vec<u64>> {
    let mut v = Vec::new();
    for name in REFUSAL_STATS {
        v.push(stat(envoy, name).await?);
    }
    Ok(v)
}

pub async fn held(opts: &Options, ctx: &Bench) -> Result<HeldResult> {
    let mut result = HeldResult {
        rounds: Vec::new(),
        limits: String::new(),
        workers: 0,
        filter_present: false,
        envoy_nofile: String::new(),
        accepted_counter: 0,
        loadavg: loadavg(),
    };
    let port_range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse::<usize>().ok())
        .collect::<Vec<_>>();
    if let [lo, hi] = port_range[..] {
        // One source IP to one port: each connection takes an ephemeral port, and so does
        // each of Envoy's upstream connections (to three other ports).
        ensure!(
            hi - lo + 1 > opts.connections + HELD_WARMUP,
            "the ephemeral port range {lo}-{hi} is too small for {} connections",
            opts.connections
        );
    }
    for r in 0..opts.rounds {
        let round = held_round(opts, ctx, r, r == 0, &mut result).await?;
        result.rounds.push(round);
    }
    Ok(result)
}
