//! `edge-bench`: what the edge filter costs, against the same Envoy without a filter and with
//! the Lua filter an Envoy user would otherwise write (`tests/bench/edge_filter.lua`).
//!
//! Run by `make bench` through `scripts/bench.sh`; `edge-bench --help` lists the options.
//! This is a measurement, not a test: it prints numbers and PASS/MISS against the targets and
//! exits 0 either way. It fails (non-zero) only if something could not run (Envoy refused the
//! config, wrk is missing, no request got through, a filter did not do its work).
//!
//! Why it is built the way it is:
//!
//! * All three variants are the shipped config from `deploy/envoy/render.sh`, rendered with the
//!   same settings except `EDGE_FILTER` (`0` none, `1` the edge filter, `lua` the Lua
//!   equivalent), run by the same Envoy binary, in front of the same three backends. The
//!   difference between them is the filter, nothing else.
//! * Two plain-request routes: `/` is the app route of the shipped config, where the filter
//!   is skipped per route (it would only set the key Envoy can hash itself); `/sticky` is in
//!   `STICKY_PATHS`, so the filter runs on every request there (affinity from the client
//!   address). The first is what a deployment pays, the second what the filter's own work
//!   costs per request.
//! * The machines this runs on are small (CI: 2 cores), and Envoy, wrk, the backends and the
//!   WebSocket client all share those cores, so a single run is noisy. The Envoys are started
//!   once and kept for the whole run (restarting them per round would add JIT and connection
//!   warm-up to every sample), each metric is measured for all variants back to back, the
//!   order rotates every round so slow drift of the machine does not always favour the
//!   variant that runs first, and the report uses medians of per-round ratios.
//! * Envoy gets one worker by default (see [`envoy_concurrency_note`]): Envoy is then the
//!   bottleneck on a 2-core machine, which is what a proxy benchmark should measure.
//! * Plain HTTPS load comes from `wrk` (a well-known C load generator, far cheaper per request
//!   than anything we would write); the WebSocket loads are in-process (wrk cannot speak
//!   WebSocket), one connection per simulated client (see [`ws_open`] for why not the
//!   harness's `ws_connect`).
//! * The harness's `EchoBackend` records every request it serves (tests assert on them), so
//!   this process grows by roughly 1 KB per plain request: a few GB over a default run.
//!   Harmless for a run of minutes on this machine, and the same for every variant.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use harness::bench::{self, close_ws, median, number, verdict, ws_open, ws_tls_config};
use harness::node::{loopback_vars, Ports, HOST, ORIGIN, THUMB};
use harness::{
    envoy_bin, render_app_node, repo_root, wasm_path, EchoBackend, Envoy, Message, TlsFiles,
    IO_TIMEOUT,
};
use std::fmt::Write as _;
use tokio::task::JoinSet;
use tokio::time::Instant;

const N_BACKENDS: usize = 3;
/// wrk's load shape, fixed so runs on different days compare.
const WRK_THREADS: u32 = 2;
/// The echoed WebSocket message: small, like a chat or presence update.
const ECHO_MESSAGE: &str = "edge-bench echo 0123456789abcdef";
/// What the harness passes to Envoy (`--concurrency 2`); other values need a wrapper.
const HARNESS_ENVOY_CONCURRENCY: u32 = 2;
/// The app route (filter skipped) and the sticky route (filter runs) of the plain loads.
const APP_PATH: &str = "/";
const STICKY_PATH: &str = "/sticky";
/// An Origin outside the allow-list: both filters must refuse it (checked before measuring).
const FOREIGN_ORIGIN: &str = "https://elsewhere.test";
/// The Lua equivalent, relative to the repository.
const LUA_SOURCE: &str = "tests/bench/edge_filter.lua";

/// Targets from the issue.
const TARGET_PLAIN_RPS: f64 = 0.95;
const TARGET_WS_ECHO: f64 = 0.97;

const USAGE: &str = "\
edge-bench: the edge filter's cost: Envoy with it, without a filter, and with a Lua equivalent

Usage: edge-bench [options]   (normally via: make bench / bash scripts/bench.sh)

Options:
  --rounds N                 rotating rounds; medians are over these      [5]
  --duration SECS            length of every measured run                 [6]
  --warmup SECS              unrecorded warm-up per variant               [2]
  --connections N            wrk connections (-c)                         [64]
  --ws-connections N         concurrent WebSockets in the echo test       [64]
  --handshake-concurrency N  concurrent connect+close loops               [16]
  --envoy-concurrency N      Envoy worker threads                         [1]
  --loads LIST               comma-separated subset of app,sticky,echo,handshakes to
                             run (the others report NaN)                  [all]
  --out PATH                 also write the Markdown report here
  -h, --help                 this text

Needs wrk on PATH, Envoy ($ENVOY or .venv/bin/envoy) and the filter ($EDGE_FILTER_WASM or
target/wasm/edge_filter.wasm). Progress goes to stderr, the report to stdout.";

#[derive(Debug, Clone)]
struct Options {
    rounds: usize,
    duration: Duration,
    warmup: Duration,
    connections: usize,
    ws_connections: usize,
    handshake_concurrency: usize,
    envoy_concurrency: u32,
    loads: Loads,
    out: Option<PathBuf>,
}

/// Which loads run (`--loads`); a quicker loop while tuning one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loads {
    app: bool,
    sticky: bool,
    echo: bool,
    handshakes: bool,
}

impl Loads {
    const ALL: Loads = Loads {
        app: true,
        sticky: true,
        echo: true,
        handshakes: true,
    };

    fn parse(list: &str) -> Result<Loads> {
        let mut loads = Loads {
            app: false,
            sticky: false,
            echo: false,
            handshakes: false,
        };
        for name in list.split(',').map(str::trim) {
            match name {
                "app" => loads.app = true,
                "sticky" => loads.sticky = true,
                "echo" => loads.echo = true,
                "handshakes" => loads.handshakes = true,
                _ => bail!("--loads: unknown load {name:?} (app, sticky, echo, handshakes)"),
            }
        }
        Ok(loads)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 5,
            duration: Duration::from_secs(6),
            warmup: Duration::from_secs(2),
            connections: 64,
            ws_connections: 64,
            handshake_concurrency: 16,
            // See `envoy_concurrency_note`.
            envoy_concurrency: 1,
            loads: Loads::ALL,
            out: None,
        }
    }
}

/// `Ok(None)` means `--help` was asked for.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>> {
    let mut opts = Options::default();
    let go = bench::parse_flags(args, |flag, value| {
        match flag {
            "--rounds" => opts.rounds = number(flag, &value()?)?,
            "--duration" => opts.duration = Duration::from_secs(number(flag, &value()?)?),
            "--warmup" => opts.warmup = Duration::from_secs(number(flag, &value()?)?),
            "--connections" => opts.connections = number(flag, &value()?)?,
            "--ws-connections" => opts.ws_connections = number(flag, &value()?)?,
            "--handshake-concurrency" => opts.handshake_concurrency = number(flag, &value()?)?,
            "--envoy-concurrency" => opts.envoy_concurrency = number(flag, &value()?)?,
            "--loads" => opts.loads = Loads::parse(&value()?)?,
            "--out" => opts.out = Some(PathBuf::from(value()?)),
            _ => bail!("unknown argument {flag:?} (see --help)"),
        }
        Ok(())
    })?;
    if !go {
        return Ok(None);
    }
    ensure!(opts.rounds >= 1, "--rounds must be at least 1");
    ensure!(!opts.duration.is_zero(), "--duration must be at least 1");
    ensure!(
        opts.connections >= WRK_THREADS as usize,
        "--connections must be at least {WRK_THREADS} (one per wrk thread)"
    );
    ensure!(
        opts.ws_connections >= 1,
        "--ws-connections must be at least 1"
    );
    ensure!(
        opts.handshake_concurrency >= 1,
        "--handshake-concurrency must be at least 1"
    );
    ensure!(
        opts.envoy_concurrency >= 1,
        "--envoy-concurrency must be at least 1"
    );
    Ok(Some(opts))
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("edge-bench: {e:#}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    // The real binary, for the report, before $ENVOY may point at the wrapper.
    let envoy = envoy_bin();
    // Set before the runtime (and its threads) exist: the harness reads $ENVOY when it spawns.
    let wrapper = match envoy_wrapper(opts.envoy_concurrency, &envoy) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("edge-bench: {e:#}");
            std::process::exit(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let result = runtime.block_on(run(&opts, &envoy));
    // Envoys and backends are dropped (stopped) inside `run`; the wrapper dir goes last.
    drop(runtime);
    drop(wrapper);
    if let Err(e) = result {
        eprintln!("edge-bench: {e:#}");
        std::process::exit(1);
    }
}

/// The harness starts Envoy with `--concurrency 2` (right for tests, which want two workers to
/// catch per-worker state bugs). To run another worker count without changing the harness,
/// point `$ENVOY` at a one-line wrapper that rewrites that argument and execs the real binary
/// (so the harness still owns, kills and reaps the Envoy process itself).
fn envoy_wrapper(concurrency: u32, real: &Path) -> Result<Option<tempfile::TempDir>> {
    if concurrency == HARNESS_ENVOY_CONCURRENCY {
        return Ok(None);
    }
    let real = real
        .to_str()
        .context("the Envoy path is not UTF-8")?
        .replace('\'', r"'\''");
    let dir = tempfile::Builder::new()
        .prefix("acme-edge-bench-")
        .tempdir()
        .context("create a temp dir for the Envoy wrapper")?;
    let script = dir.path().join("envoy");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             # edge-bench: the harness passes --concurrency {HARNESS_ENVOY_CONCURRENCY}; run {concurrency} workers instead.\n\
             prev=\n\
             for arg do\n  \
               shift\n  \
               if [ \"$prev\" = --concurrency ]; then arg={concurrency}; fi\n  \
               set -- \"$@\" \"$arg\"\n  \
               prev=$arg\n\
             done\n\
             exec '{real}' \"$@\"\n"
        ),
    )
    .context("write the Envoy wrapper")?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    std::env::set_var("ENVOY", &script);
    Ok(Some(dir))
}

// ---------------------------------------------------------------------------------------------
// Setup

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Baseline,
    Wasm,
    Lua,
}

const VARIANTS: [Variant; 3] = [Variant::Baseline, Variant::Wasm, Variant::Lua];

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Baseline => "no filter",
            Variant::Wasm => "edge filter",
            Variant::Lua => "Lua",
        }
    }

    /// `EDGE_FILTER` for render.sh.
    fn setting(self) -> &'static str {
        match self {
            Variant::Baseline => "0",
            Variant::Wasm => "1",
            Variant::Lua => "lua",
        }
    }

    fn index(self) -> usize {
        match self {
            Variant::Baseline => 0,
            Variant::Wasm => 1,
            Variant::Lua => 2,
        }
    }

    /// The HTTP filter its TLS listener must (or, for the baseline, must not) have.
    fn filter_name(self) -> Option<&'static str> {
        match self {
            Variant::Baseline => None,
            Variant::Wasm => Some("envoy.filters.http.wasm"),
            Variant::Lua => Some("envoy.filters.http.lua"),
        }
    }
}

/// One Envoy with its TLS listener port.
struct Node {
    envoy: Envoy,
    https: u16,
}

async fn start_node(
    variant: Variant,
    tls: &TlsFiles,
    backends: &[EchoBackend],
    wasm: &Path,
) -> Result<Node> {
    let ports = Ports::free();
    let (https, admin) = (ports.https, ports.admin);
    // Production defaults for everything that shapes the request path (affinity sources, WS
    // path, cookie policy); only addresses, files, secrets and the sticky route are the
    // benchmark's own.
    let mut vars = loopback_vars(&ports, wasm, tls, backends);
    vars.extend([
        ("EDGE_FILTER", variant.setting().to_owned()),
        (
            "LUA_FILTER",
            repo_root().join(LUA_SOURCE).display().to_string(),
        ),
        ("STICKY_PATHS", STICKY_PATH.to_owned()),
        ("ACME_THUMBPRINT", THUMB.to_owned()),
        ("NODE_ID", format!("edge-bench-{}", variant.index())),
    ]);
    let config = render_app_node(&vars)?;
    let envoy = Envoy::start(&config, admin)
        .await
        .with_context(|| format!("start Envoy ({})", variant.label()))?;
    envoy
        .wait_cluster_healthy("app", backends.len(), Duration::from_secs(30))
        .await?;
    Ok(Node { envoy, https })
}

/// The worker count a running Envoy reports, to be sure the `$ENVOY` wrapper took effect.
async fn envoy_concurrency(envoy: &Envoy) -> Result<u32> {
    let info: serde_json::Value = serde_json::from_str(&envoy.admin_get("/server_info").await?)
        .context("parse /server_info")?;
    let n = info["command_line_options"]["concurrency"]
        .as_u64()
        .context("no command_line_options.concurrency in /server_info")?;
    Ok(u32::try_from(n)?)
}

/// Checks a node runs the filter it should: the listeners have it (the whole config dump
/// would also list compiled-in extensions), and it refuses a foreign Origin (the baseline lets
/// it through). Catches a variant silently measuring the wrong thing.
async fn check_node(variant: Variant, node: &Node, tls: &Arc<rustls::ClientConfig>) -> Result<()> {
    let listeners = node
        .envoy
        .admin_get("/config_dump?resource=static_listeners")
        .await?;
    for other in VARIANTS.iter().filter_map(|v| v.filter_name()) {
        let expected = variant.filter_name() == Some(other);
        ensure!(
            listeners.contains(other) == expected,
            "the {} config {} {other}",
            variant.label(),
            if expected { "lacks" } else { "has" }
        );
    }
    let foreign = ws_open(node.https, "/ws", FOREIGN_ORIGIN, tls, None).await;
    match (variant, foreign) {
        (Variant::Baseline, Ok(ws)) => close_ws(ws).await,
        (Variant::Baseline, Err(e)) => Err(e.context("the no-filter Envoy refused a handshake")),
        (_, Err(e)) if format!("{e:#}").contains("403") => Ok(()),
        (_, Err(e)) => Err(e.context(format!("{}: expected a 403", variant.label()))),
        (_, Ok(_)) => bail!("{} let a foreign Origin through", variant.label()),
    }
}

// ---------------------------------------------------------------------------------------------
// Plain HTTPS with wrk

#[derive(Debug, Clone, Default)]
struct WrkResult {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx_3xx: u64,
    socket_errors: u64,
}

fn wrk_args(opts: &Options, duration: Duration, port: u16, path: &str) -> Vec<String> {
    vec![
        format!("-t{WRK_THREADS}"),
        format!("-c{}", opts.connections),
        format!("-d{}s", duration.as_secs()),
        "--latency".to_owned(),
        format!("https://127.0.0.1:{port}{path}"),
    ]
}

async fn run_wrk(opts: &Options, duration: Duration, port: u16, path: &str) -> Result<WrkResult> {
    let args = wrk_args(opts, duration, port, path);
    let child = tokio::process::Command::new("wrk")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("run wrk (install it with: bash scripts/bootstrap.sh --bench)")?;
    let out = tokio::time::timeout(duration + IO_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("wrk {} did not finish", args.join(" ")))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk {} failed ({}):\n{stdout}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let result = parse_wrk(&stdout).with_context(|| format!("wrk output:\n{stdout}"))?;
    // Every answer should be the backend's 200: anything else means the proxy refused or
    // failed requests and the numbers would measure the error path.
    ensure!(
        result.requests > 0 && result.non_2xx_3xx == 0,
        "wrk {}: {} requests, {} not 2xx/3xx:\n{stdout}",
        args.join(" "),
        result.requests,
        result.non_2xx_3xx
    );
    Ok(result)
}

/// Parses wrk 4's report: "Requests/sec:", the "Latency Distribution" lines, the request
/// count, and the error lines wrk prints only when there were errors.
fn parse_wrk(text: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    let (mut rps, mut p50, mut p99, mut requests) = (None, None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>().context("Requests/sec")?);
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = Some(wrk_time_ms(v.trim())?);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = Some(wrk_time_ms(v.trim())?);
        } else if line.contains(" requests in ") {
            let n = line.split_whitespace().next().unwrap_or_default();
            requests = Some(n.parse::<u64>().context("request count")?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx_3xx = v.trim().parse().context("Non-2xx count")?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                let n = part.split_whitespace().nth(1).unwrap_or_default();
                r.socket_errors += n.parse::<u64>().context("socket error count")?;
            }
        }
    }
    r.requests_per_s = rps.context("no Requests/sec line")?;
    r.p50_ms = p50.context("no 50% latency line (was --latency given?)")?;
    r.p99_ms = p99.context("no 99% latency line (was --latency given?)")?;
    r.requests = requests.context("no 'N requests in' line")?;
    Ok(r)
}

/// wrk prints times as `812.00us`, `1.23ms`, `2.01s`, `1.00m`.
fn wrk_time_ms(s: &str) -> Result<f64> {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in wrk time {s:?}"))?;
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().with_context(|| format!("bad wrk time {s:?}"))?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => bail!("unknown unit in wrk time {s:?}"),
    };
    Ok(num * scale)
}

// ---------------------------------------------------------------------------------------------
// WebSockets, in process

#[derive(Debug, Clone, Default)]
struct RateResult {
    /// Completed operations per second of the measured window.
    per_s: f64,
    done: u64,
    errors: u64,
    last_error: Option<String>,
}

/// `n` WebSockets, each sending the small message and waiting for its echo as fast as it can
/// (one message in flight per connection, like request/response chat traffic). Connects
/// before the clock starts: this measures the upgraded stream, the handshake has its own test.
async fn ws_echo_load(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    n: usize,
    duration: Duration,
) -> Result<RateResult> {
    let mut connects = JoinSet::new();
    for i in 0..n {
        let tls = tls.clone();
        connects.spawn(async move {
            ws_open(port, &format!("/ws?room=echo-{i}"), ORIGIN, &tls, None).await
        });
    }
    let mut sockets = Vec::with_capacity(n);
    while let Some(joined) = connects.join_next().await {
        sockets.push(joined.context("connect task")??);
    }

    let start = Instant::now();
    let deadline = start + duration;
    let mut loops = JoinSet::new();
    for mut ws in sockets {
        loops.spawn(async move {
            let mut done = 0u64;
            let result = async {
                while Instant::now() < deadline {
                    ws.send(Message::text(ECHO_MESSAGE)).await?;
                    let reply = loop {
                        match ws.next().await {
                            Some(Ok(Message::Text(t))) => break t,
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                            other => bail!("unexpected WebSocket event {other:?}"),
                        }
                    };
                    ensure!(reply.as_str() == ECHO_MESSAGE, "wrong echo {reply:?}");
                    // Only round trips that finished inside the window count.
                    if Instant::now() <= deadline {
                        done += 1;
                    }
                }
                close_ws(ws).await
            }
            .await;
            (done, result.err())
        });
    }
    let mut result = RateResult::default();
    while let Some(joined) = loops.join_next().await {
        let (done, err) = joined.context("echo task")?;
        result.done += done;
        if let Some(e) = err {
            result.errors += 1;
            result.last_error = Some(format!("{e:#}"));
        }
    }
    result.per_s = result.done as f64 / duration.as_secs_f64();
    Ok(result)
}

/// `concurrency` loops of: TCP + TLS handshake, WebSocket upgrade through Envoy to a backend,
/// close. No `room` and no cookie, but an `Origin`: the filter's most expensive upgrade path
/// (it checks the origin, mints a new affinity key and signs a cookie for it).
async fn handshake_load(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    concurrency: usize,
    duration: Duration,
) -> Result<RateResult> {
    let deadline = Instant::now() + duration;
    let mut loops = JoinSet::new();
    for _ in 0..concurrency {
        let tls = tls.clone();
        loops.spawn(async move {
            let (mut done, mut errors, mut last_error) = (0u64, 0u64, None);
            while Instant::now() < deadline {
                let one = async { close_ws(ws_open(port, "/ws", ORIGIN, &tls, None).await?).await };
                match one.await {
                    Ok(()) if Instant::now() <= deadline => done += 1,
                    Ok(()) => {}
                    Err(e) => {
                        errors += 1;
                        last_error = Some(format!("{e:#}"));
                    }
                }
            }
            (done, errors, last_error)
        });
    }
    let mut result = RateResult::default();
    while let Some(joined) = loops.join_next().await {
        let (done, errors, last_error) = joined.context("handshake task")?;
        result.done += done;
        result.errors += errors;
        result.last_error = last_error.or(result.last_error);
    }
    result.per_s = result.done as f64 / duration.as_secs_f64();
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// The run

/// One variant's numbers in one round.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// `GET /`: the app route, filter skipped.
    plain: WrkResult,
    /// `GET /sticky`: the filter runs.
    sticky: WrkResult,
    echo: RateResult,
    handshakes: RateResult,
    /// Envoy's CPU time per operation of each load, µs: see [`EnvoyCpu`].
    cpu: CpuPerOp,
}

#[derive(Debug, Clone, Default)]
struct CpuPerOp {
    plain: f64,
    sticky: f64,
    echo: f64,
    handshake: f64,
}

/// Envoy's CPU time (user + system, all threads) from `/proc/<pid>/stat`.
///
/// Throughput on a shared 2-core machine moves with whatever else runs; the CPU time Envoy
/// spends per request does much less, so it shows a filter's cost even when the machine is
/// busy (e.g. CI). Resolution is one clock tick (10 ms) over runs of seconds.
struct EnvoyCpu {
    stat: PathBuf,
}

impl EnvoyCpu {
    fn of(envoy: &Envoy) -> Self {
        Self {
            stat: PathBuf::from(format!("/proc/{}/stat", envoy.pid())),
        }
    }

    /// CPU seconds so far.
    fn seconds(&self) -> Result<f64> {
        let text = fs::read_to_string(&self.stat)
            .with_context(|| format!("read {}", self.stat.display()))?;
        cpu_seconds_from_stat(&text)
    }
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds_from_stat(text: &str) -> Result<f64> {
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

/// Runs `load`, returning its result and Envoy's CPU µs per operation (`ops` of the result).
async fn with_cpu<T>(
    cpu: &EnvoyCpu,
    load: impl std::future::Future<Output = Result<T>>,
    ops: impl Fn(&T) -> u64,
) -> Result<(T, f64)> {
    let before = cpu.seconds()?;
    let result = load.await?;
    let used = cpu.seconds()? - before;
    let n = ops(&result).max(1) as f64;
    Ok((result, used * 1e6 / n))
}

/// All variants' samples of one round (indexed by [`Variant::index`]) and the order they ran in.
#[derive(Debug, Clone, Default)]
struct Round {
    order: Vec<Variant>,
    samples: [Sample; 3],
}

impl Round {
    fn get(&self, v: Variant) -> &Sample {
        &self.samples[v.index()]
    }
}

/// Order of the variants in round `i`: rotated by one every round, so each runs first, second
/// and third equally often.
fn order(i: usize) -> Vec<Variant> {
    (0..VARIANTS.len())
        .map(|k| VARIANTS[(i + k) % VARIANTS.len()])
        .collect()
}

/// What the report shows about the setup.
struct Setup {
    ports: [u16; 3],
    envoy: PathBuf,
    envoy_version: String,
    /// `/proc/loadavg` before the first run: high values mean something else was busy.
    loadavg: String,
    /// What the edge filter counted over the whole run.
    filter_counters: String,
}

async fn run(opts: &Options, envoy: &Path) -> Result<()> {
    let wasm = wasm_path();
    ensure!(
        wasm.is_file(),
        "{} is missing: run `make wasm` first",
        wasm.display()
    );
    let began = std::time::Instant::now();
    let loadavg = bench::loadavg();
    eprintln!(
        "edge-bench: starting {N_BACKENDS} backends and three Envoys (no filter, edge filter, Lua)"
    );
    let mut backends = Vec::new();
    for i in 0..N_BACKENDS {
        backends.push(EchoBackend::start(&format!("backend-{i}")).await?);
    }
    let tls = TlsFiles::self_signed(&[HOST])?;
    let client_tls = &ws_tls_config(&tls.ca_pem)?;
    let mut nodes = Vec::new();
    for v in VARIANTS {
        let node = start_node(v, &tls, &backends, &wasm).await?;
        check_node(v, &node, client_tls).await?;
        let workers = envoy_concurrency(&node.envoy).await?;
        ensure!(
            workers == opts.envoy_concurrency,
            "Envoy runs {workers} workers, not the {} asked for",
            opts.envoy_concurrency
        );
        nodes.push(node);
    }
    let port = |v: Variant| nodes[v.index()].https;
    let cpus: Vec<EnvoyCpu> = nodes.iter().map(|n| EnvoyCpu::of(&n.envoy)).collect();
    let cpu = |v: Variant| &cpus[v.index()];
    let ctx = Setup {
        ports: [
            port(Variant::Baseline),
            port(Variant::Wasm),
            port(Variant::Lua),
        ],
        envoy: envoy.to_path_buf(),
        envoy_version: bench::envoy_version(envoy),
        loadavg,
        filter_counters: String::new(),
    };

    // Warm-up: V8 compiles the module per worker and tiers up hot functions, LuaJIT traces;
    // connections, TLS session state and allocator pools fill up. None of that is measured.
    if !opts.warmup.is_zero() {
        for v in VARIANTS {
            eprintln!("edge-bench: warm-up {}", v.label());
            if opts.loads.app {
                run_wrk(opts, opts.warmup, port(v), APP_PATH).await?;
            }
            if opts.loads.sticky {
                run_wrk(opts, opts.warmup, port(v), STICKY_PATH).await?;
            }
            if opts.loads.echo {
                ws_echo_load(port(v), client_tls, opts.ws_connections, opts.warmup).await?;
            }
            if opts.loads.handshakes {
                handshake_load(port(v), client_tls, opts.handshake_concurrency, opts.warmup)
                    .await?;
            }
        }
    }

    let mut rounds = Vec::with_capacity(opts.rounds);
    for i in 0..opts.rounds {
        let mut round = Round {
            order: order(i),
            ..Round::default()
        };
        let tag = |v: Variant| format!("round {}/{} {:>11}", i + 1, opts.rounds, v.label());
        for v in order(i).into_iter().filter(|_| opts.loads.app) {
            let load = run_wrk(opts, opts.duration, port(v), APP_PATH);
            let (r, us) = with_cpu(cpu(v), load, |r| r.requests).await?;
            eprintln!(
                "edge-bench: {}: app route {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, Envoy {us:.1} µs CPU/req",
                tag(v),
                r.requests_per_s,
                r.p50_ms,
                r.p99_ms
            );
            round.samples[v.index()].plain = r;
            round.samples[v.index()].cpu.plain = us;
        }
        for v in order(i).into_iter().filter(|_| opts.loads.sticky) {
            let load = run_wrk(opts, opts.duration, port(v), STICKY_PATH);
            let (r, us) = with_cpu(cpu(v), load, |r| r.requests).await?;
            eprintln!(
                "edge-bench: {}: sticky route {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, Envoy {us:.1} µs CPU/req",
                tag(v),
                r.requests_per_s,
                r.p50_ms,
                r.p99_ms
            );
            round.samples[v.index()].sticky = r;
            round.samples[v.index()].cpu.sticky = us;
        }
        for v in order(i).into_iter().filter(|_| opts.loads.echo) {
            let load = ws_echo_load(port(v), client_tls, opts.ws_connections, opts.duration);
            let (r, us) = with_cpu(cpu(v), load, |r| r.done).await?;
            eprintln!(
                "edge-bench: {}: ws echo {:.0} msg/s, Envoy {us:.1} µs CPU/echo",
                tag(v),
                r.per_s
            );
            round.samples[v.index()].echo = r;
            round.samples[v.index()].cpu.echo = us;
        }
        for v in order(i).into_iter().filter(|_| opts.loads.handshakes) {
            let load = handshake_load(
                port(v),
                client_tls,
                opts.handshake_concurrency,
                opts.duration,
            );
            let (r, us) = with_cpu(cpu(v), load, |r| r.done).await?;
            eprintln!(
                "edge-bench: {}: handshakes {:.0}/s, Envoy {us:.0} µs CPU/handshake",
                tag(v),
                r.per_s
            );
            round.samples[v.index()].handshakes = r;
            round.samples[v.index()].cpu.handshake = us;
        }
        for s in &round.samples {
            ensure!(
                (s.echo.done > 0 || !opts.loads.echo)
                    && (s.handshakes.done > 0 || !opts.loads.handshakes),
                "no WebSocket traffic got through (last errors: {:?} / {:?})",
                s.echo.last_error,
                s.handshakes.last_error
            );
        }
        rounds.push(round);
    }

    // The filter really ran on the handshakes, down the path the report describes (a refusal
    // would have shown as an error of the handshake loop).
    let wasm_envoy = &nodes[Variant::Wasm.index()].envoy;
    let counter = |name: &'static str| async move {
        let full = format!("edge_https.{name}");
        Ok::<_, anyhow::Error>(wasm_envoy.wasm_counter(&full).await?.unwrap_or(0))
    };
    let accepted = counter("upgrade.accepted").await?;
    let cookies = counter("affinity.cookie_issued").await?;
    ensure!(
        (accepted > 0 && cookies > 0) || !opts.loads.handshakes,
        "the filter counted {accepted} accepted upgrades and {cookies} issued cookies: it did \
         not run on the benchmark's WebSocket handshakes"
    );
    let ctx = Setup {
        filter_counters: format!(
            "{accepted} upgrades accepted, {cookies} affinity cookies issued (`edge_https.*` \
             counters, warm-up included)"
        ),
        ..ctx
    };

    // Stop everything before writing: the report should not wait on anything still running.
    drop(cpus);
    drop(nodes);
    drop(backends);
    let report = render_report(opts, &ctx, &rounds, began.elapsed());
    bench::emit_report(&report, opts.out.as_deref())
}

// ---------------------------------------------------------------------------------------------
// Report

/// One reported metric: how to get it from a sample, and how to print it.
struct Metric {
    name: &'static str,
    get: fn(&Sample) -> f64,
    decimals: usize,
    /// Counted failures in the run that produced it, shown next to the raw numbers.
    errors: fn(&Sample) -> u64,
}

const APP_RPS: usize = 0;
const STICKY_RPS: usize = 3;
const ECHO: usize = 6;
const HANDSHAKES: usize = 7;

const METRICS: [Metric; 12] = [
    Metric {
        name: "app route `/` requests/s",
        get: |s| s.plain.requests_per_s,
        decimals: 0,
        errors: |s| s.plain.socket_errors,
    },
    Metric {
        name: "app route `/` latency p50 (ms)",
        get: |s| s.plain.p50_ms,
        decimals: 2,
        errors: |s| s.plain.socket_errors,
    },
    Metric {
        name: "app route `/` latency p99 (ms)",
        get: |s| s.plain.p99_ms,
        decimals: 2,
        errors: |s| s.plain.socket_errors,
    },
    Metric {
        name: "sticky route `/sticky` requests/s",
        get: |s| s.sticky.requests_per_s,
        decimals: 0,
        errors: |s| s.sticky.socket_errors,
    },
    Metric {
        name: "sticky route `/sticky` latency p50 (ms)",
        get: |s| s.sticky.p50_ms,
        decimals: 2,
        errors: |s| s.sticky.socket_errors,
    },
    Metric {
        name: "sticky route `/sticky` latency p99 (ms)",
        get: |s| s.sticky.p99_ms,
        decimals: 2,
        errors: |s| s.sticky.socket_errors,
    },
    Metric {
        name: "WebSocket echo messages/s",
        get: |s| s.echo.per_s,
        decimals: 0,
        errors: |s| s.echo.errors,
    },
    Metric {
        name: "WebSocket handshakes/s",
        get: |s| s.handshakes.per_s,
        decimals: 0,
        errors: |s| s.handshakes.errors,
    },
    Metric {
        name: "Envoy CPU µs per request, app route",
        get: |s| s.cpu.plain,
        decimals: 1,
        errors: |s| s.plain.socket_errors,
    },
    Metric {
        name: "Envoy CPU µs per request, sticky route",
        get: |s| s.cpu.sticky,
        decimals: 1,
        errors: |s| s.sticky.socket_errors,
    },
    Metric {
        name: "Envoy CPU µs per echoed message",
        get: |s| s.cpu.echo,
        decimals: 1,
        errors: |s| s.echo.errors,
    },
    Metric {
        name: "Envoy CPU µs per handshake",
        get: |s| s.cpu.handshake,
        decimals: 0,
        errors: |s| s.handshakes.errors,
    },
];

/// A ratio between two variants over all rounds: the median of the per-round ratios and their
/// range. Targets are judged on it: the runs of a round are back to back, so something else
/// slowing the machine for a while hits all of them and mostly cancels in their ratio, while a
/// ratio of medians can pair a disturbed round of one variant with a quiet round of another.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ratio {
    median: f64,
    min: f64,
    max: f64,
}

fn ratio(metric: &Metric, rounds: &[Round], num: Variant, den: Variant) -> Ratio {
    let ratios: Vec<f64> = rounds
        .iter()
        .map(|r| (metric.get)(r.get(num)) / (metric.get)(r.get(den)))
        .collect();
    let (min, max) = bench::range(&ratios);
    Ratio {
        median: median(ratios),
        min,
        max,
    }
}

fn variant_median(metric: &Metric, rounds: &[Round], v: Variant) -> f64 {
    median(rounds.iter().map(|r| (metric.get)(r.get(v))).collect())
}

fn fmt_num(x: f64, decimals: usize) -> String {
    format!("{x:.decimals$}")
}

fn fmt_ratio(r: Ratio) -> String {
    format!("{:.3} ({:.3}–{:.3})", r.median, r.min, r.max)
}

/// Why the default is one Envoy worker, for the report (and the reader of `--help`).
fn envoy_concurrency_note(n: u32) -> String {
    format!(
        "Envoy runs {n} worker thread(s) (`--concurrency {n}`). On a 2-core machine one worker \
         keeps Envoy at one core and leaves the other to wrk, the backends and the WebSocket \
         client: Envoy is then the bottleneck, so the numbers show a filter's cost at its \
         most visible, and runs vary less than with two workers fighting the load generator \
         for both cores."
    )
}

fn render_report(opts: &Options, ctx: &Setup, rounds: &[Round], elapsed: Duration) -> String {
    let mut md = String::new();
    let w = &mut md;
    let secs = opts.duration.as_secs();
    let wasm = wasm_path();
    let wasm_size = fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    let _ = writeln!(
        w,
        "## Filter cost: no filter vs the edge filter vs a Lua equivalent\n"
    );

    let _ = writeln!(w, "### Setup\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let rows = [
        ("load average at start", ctx.loadavg.clone()),
        (
            "Envoy",
            format!("{} (`{}`)", ctx.envoy_version, ctx.envoy.display()),
        ),
        (
            "edge filter",
            format!(
                "`{}`, {wasm_size} bytes ({} KiB), V8",
                wasm.display(),
                wasm_size / 1024
            ),
        ),
        (
            "Lua equivalent",
            format!(
                "`{LUA_SOURCE}` (LuaJIT): the TLS listener's decisions — handshake checks, \
                 Origin allow-list, affinity key from query / signed cookie (HMAC-SHA256 in \
                 Lua) / new signed cookie / client address"
            ),
        ),
        (
            "config",
            format!(
                "`deploy/envoy/render.sh` defaults with `STICKY_PATHS={STICKY_PATH}`; \
                 `EDGE_FILTER=0` / `1` / `lua`; {N_BACKENDS} echo backends (one in-process \
                 axum runtime), Maglev cluster"
            ),
        ),
        (
            "rounds",
            format!(
                "{} × {secs} s per metric and variant, order rotating every round, {} s \
                 warm-up per variant; the Envoys started once and kept for all rounds",
                opts.rounds,
                opts.warmup.as_secs()
            ),
        ),
        ("edge filter saw", ctx.filter_counters.clone()),
        ("total time", format!("{:.0} s", elapsed.as_secs_f64())),
    ];
    for (k, v) in rows {
        let _ = writeln!(w, "| {k} | {v} |");
    }
    let _ = writeln!(w, "\n{}\n", envoy_concurrency_note(opts.envoy_concurrency));

    let _ = writeln!(w, "### What runs\n");
    let wrk = |path| {
        let [b, f, l] = ctx.ports;
        format!(
            "`wrk {}` (no filter; the edge filter and Lua Envoys listen on {f} and {l})",
            wrk_args(opts, opts.duration, b, path).join(" ")
        )
    };
    let _ = writeln!(
        w,
        "* **app route** (HTTP/1.1 keep-alive over TLS, `GET {APP_PATH}`): the shipped \
         config skips the filter on this route and hashes natively on the same sources: \
         {}",
        wrk(APP_PATH)
    );
    let _ = writeln!(
        w,
        "* **sticky route** (`GET {STICKY_PATH}`, in `STICKY_PATHS`): the filter runs on every \
         request and sets the affinity key from the client address: {}",
        wrk(STICKY_PATH)
    );
    let _ = writeln!(
        w,
        "* **WebSocket echo**: {} wss connections (`/ws?room=echo-<i>`, `Origin: {ORIGIN}`), \
         opened before the clock starts, each sending a {}-byte text message and waiting for \
         its echo, back to back for {secs} s; messages/s = echoes received in the window / {secs}.",
        opts.ws_connections,
        ECHO_MESSAGE.len()
    );
    let _ = writeln!(
        w,
        "* **WebSocket handshakes**: {} concurrent loops of TCP connect, TLS 1.3 handshake, \
         upgrade of `/ws` with `Origin` and no cookie (the filter mints and signs a new \
         affinity cookie: its most expensive upgrade path), close frame and TCP close from \
         the client (no TLS session resumption, `TCP_NODELAY` like browsers); for {secs} s.\n",
        opts.handshake_concurrency
    );
    let _ = writeln!(
        w,
        "Before measuring, each filter is checked to refuse a foreign `Origin` with 403 (the \
         no-filter Envoy lets it through).\n"
    );

    let _ = writeln!(w, "### Raw numbers\n");
    let _ = writeln!(
        w,
        "| metric | round (order) | no filter | edge filter | Lua |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|");
    for m in &METRICS {
        for (i, r) in rounds.iter().enumerate() {
            let cell = |v: Variant| {
                let s = r.get(v);
                match (m.errors)(s) {
                    0 => fmt_num((m.get)(s), m.decimals),
                    n => format!("{} ({n} errors)", fmt_num((m.get)(s), m.decimals)),
                }
            };
            let order: Vec<&str> = r.order.iter().map(|v| v.label()).collect();
            let _ = writeln!(
                w,
                "| {} | {} ({}) | {} | {} | {} |",
                m.name,
                i + 1,
                order.join(", "),
                cell(Variant::Baseline),
                cell(Variant::Wasm),
                cell(Variant::Lua)
            );
        }
    }

    let _ = writeln!(w, "\n### Medians over {} round(s)\n", rounds.len());
    let _ = writeln!(
        w,
        "| metric | no filter | edge filter | Lua | edge filter / no filter | Lua / no filter | edge filter / Lua |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|");
    for m in &METRICS {
        let med = |v| fmt_num(variant_median(m, rounds, v), m.decimals);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            m.name,
            med(Variant::Baseline),
            med(Variant::Wasm),
            med(Variant::Lua),
            fmt_ratio(ratio(m, rounds, Variant::Wasm, Variant::Baseline)),
            fmt_ratio(ratio(m, rounds, Variant::Lua, Variant::Baseline)),
            fmt_ratio(ratio(m, rounds, Variant::Wasm, Variant::Lua)),
        );
    }
    let _ = writeln!(
        w,
        "\nRatios are the median of the per-round ratios, with their range in brackets (how \
         far single rounds scatter, i.e. how fine a difference this machine resolves). For \
         latency, above 1 means slower."
    );

    let _ = writeln!(w, "\n### Targets\n");
    let _ = writeln!(w, "| target | measured (median round ratio) | result |");
    let _ = writeln!(w, "|---|---:|---|");
    let check = |name: &str, metric: usize, num, den, min: f64, strict: bool| {
        let r = ratio(&METRICS[metric], rounds, num, den);
        let met = if strict {
            r.median > min
        } else {
            r.median >= min
        };
        format!("| {name} | {:.3} | {} |", r.median, verdict(met))
    };
    let lines = [
        check(
            "requests/s at most 5% below no filter, app route (edge filter / no filter ≥ 0.95)",
            APP_RPS,
            Variant::Wasm,
            Variant::Baseline,
            TARGET_PLAIN_RPS,
            false,
        ),
        check(
            "requests/s at most 5% below no filter where the filter runs, sticky route (≥ 0.95)",
            STICKY_RPS,
            Variant::Wasm,
            Variant::Baseline,
            TARGET_PLAIN_RPS,
            false,
        ),
        check(
            "faster than Lua: sticky route requests/s (edge filter / Lua > 1)",
            STICKY_RPS,
            Variant::Wasm,
            Variant::Lua,
            1.0,
            true,
        ),
        check(
            "faster than Lua: WebSocket handshakes/s (edge filter / Lua > 1)",
            HANDSHAKES,
            Variant::Wasm,
            Variant::Lua,
            1.0,
            true,
        ),
        check(
            "WebSocket echo at least 97% of no filter (edge filter / no filter ≥ 0.97)",
            ECHO,
            Variant::Wasm,
            Variant::Baseline,
            TARGET_WS_ECHO,
            false,
        ),
    ];
    for line in lines {
        let _ = writeln!(w, "{line}");
    }
    let error_notes: Vec<String> = rounds
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            VARIANTS.into_iter().flat_map(move |v| {
                let s = r.get(v);
                [("echo", &s.echo), ("handshakes", &s.handshakes)]
                    .into_iter()
                    .filter_map(move |(what, rr)| {
                        rr.last_error.as_ref().map(|e| {
                            format!(
                                "* round {} {} {what}: {} error(s), last: {e}",
                                i + 1,
                                v.label(),
                                rr.errors
                            )
                        })
                    })
            })
        })
        .collect();
    if !error_notes.is_empty() {
        let _ = writeln!(w, "\n### Errors\n\n{}", error_notes.join("\n"));
    }
    let _ = writeln!(w);
    md
}

#[cfg(test)]
mod unit {
    use super::*;

    const WRK_OUTPUT: &str = "\
Running 10s test @ https://127.0.0.1:40000/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.31ms    2.10ms  40.12ms   80.00%
    Req/Sec     6.12k   512.00     7.01k    70.00%
  Latency Distribution
     50%    4.98ms
     75%    6.01ms
     90%    7.50ms
     99%   12.34ms
  121880 requests in 10.00s, 18.72MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  12180.77
Transfer/sec:      1.87MB
";

    #[test]
    fn parses_wrk_output() {
        let r = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(r.requests_per_s, 12180.77);
        assert_eq!(r.p50_ms, 4.98);
        assert_eq!(r.p99_ms, 12.34);
        assert_eq!(r.requests, 121880);
        assert_eq!(r.socket_errors, 5);
        assert_eq!(r.non_2xx_3xx, 7);
    }

    #[test]
    fn wrk_output_without_latency_is_an_error() {
        let text = WRK_OUTPUT.replace("     50%    4.98ms\n", "");
        assert!(parse_wrk(&text).is_err());
    }

    #[test]
    fn wrk_times_convert_to_ms() {
        assert_eq!(wrk_time_ms("812.00us").unwrap(), 0.812);
        assert_eq!(wrk_time_ms("1.50ms").unwrap(), 1.5);
        assert_eq!(wrk_time_ms("2.00s").unwrap(), 2000.0);
        assert!(wrk_time_ms("2.00").is_err());
        assert!(wrk_time_ms("2.00ns").is_err());
    }

    #[test]
    fn targets_use_paired_ratios() {
        let sample = |rps| Sample {
            plain: WrkResult {
                requests_per_s: rps,
                ..WrkResult::default()
            },
            ..Sample::default()
        };
        let round = |none, wasm, lua| Round {
            order: order(0),
            samples: [sample(none), sample(wasm), sample(lua)],
        };
        // The third round ran while the machine was busy: every variant slowed down.
        let rounds = [
            round(100.0, 90.0, 80.0),
            round(100.0, 92.0, 80.0),
            round(45.0, 40.0, 20.0),
        ];
        let m = &METRICS[APP_RPS];
        assert_eq!(variant_median(m, &rounds, Variant::Wasm), 90.0);
        let r = ratio(m, &rounds, Variant::Wasm, Variant::Baseline);
        assert_eq!(r.median, 0.9);
        assert_eq!((r.min, r.max), (40.0 / 45.0, 0.92));
        assert_eq!(ratio(m, &rounds, Variant::Wasm, Variant::Lua).median, 1.15);
    }

    #[test]
    fn reads_cpu_time_from_proc_stat() {
        // Field 2 may contain spaces and parentheses; utime = 250, stime = 50 ticks.
        let line = "4242 (envoy (main)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(cpu_seconds_from_stat(line).unwrap(), 3.0);
        assert!(cpu_seconds_from_stat("4242 (envoy) S 1").is_err());
    }

    #[test]
    fn rounds_rotate_the_order() {
        use Variant::*;
        assert_eq!(order(0), [Baseline, Wasm, Lua]);
        assert_eq!(order(1), [Wasm, Lua, Baseline]);
        assert_eq!(order(2), [Lua, Baseline, Wasm]);
        assert_eq!(order(3), order(0));
    }

    #[test]
    fn parses_options() {
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let o = parse_args(args("--rounds 5 --duration=3 --out x.md"))
            .unwrap()
            .unwrap();
        assert_eq!(o.rounds, 5);
        assert_eq!(o.duration, Duration::from_secs(3));
        assert_eq!(o.out, Some(PathBuf::from("x.md")));
        assert!(parse_args(args("--help")).unwrap().is_none());
        assert!(parse_args(args("--rounds")).is_err());
        assert!(parse_args(args("--rounds 0")).is_err());
        assert!(parse_args(args("--bogus 1")).is_err());
        let o = parse_args(args("--loads sticky,echo")).unwrap().unwrap();
        assert!(o.loads.sticky && o.loads.echo && !o.loads.app && !o.loads.handshakes);
        assert!(parse_args(args("--loads sticky,bogus")).is_err());
    }
}
