//! `ws-bench`: sticky routing (how evenly keys spread over the backends and how many move when
//! a backend joins) and held WebSocket connections (many at once through Envoy with the filter:
//! all open, all echo, Envoy's memory per connection).
//!
//! Run by `make bench`; `ws-bench --help` lists the options. This is a measurement, not a test:
//! it prints numbers and PASS/MISS against the targets and exits 0 either way. It fails
//! (non-zero) only if something could not run (Envoy refused a config, nothing got through).
//!
//! Why it is built the way it is:
//!
//! * Everything runs the shipped config from `deploy/envoy/render.sh` with its defaults; only
//!   addresses, files, secrets and (for the sticky comparison) the app cluster's `lb_policy`
//!   block are the benchmark's own. Requests go to `/ws…` paths so the filter runs on them
//!   whatever `WS_PATHS` scoping the config has.
//! * Sticky routing: which backend serves a key depends only on the key and the set of host
//!   addresses (Envoy's ring or table is built from `ip:port`). A trial therefore starts four
//!   fresh backends (new ports, a new ring), asks Envoy A (backends 1–3) and then Envoy B
//!   (backends 1–4: "a fourth backend joins") where every key goes, and compares. The keys are
//!   the `room` query, which the filter turns into the `x-edge-affinity` header Envoy hashes.
//!   Each key is a real WebSocket handshake (the shipped filter refuses a plain GET on a
//!   WebSocket path), sent as an RFC 8441 extended CONNECT over HTTP/2 so that a few TLS
//!   connections carry many handshakes in flight; the answers are checked against what each
//!   backend recorded (the upgrade's path, and the affinity header the filter set).
//! * Held connections: one Envoy (filter on, three backends), N wss connections opened with
//!   bounded concurrency and kept open, every one then echoes a message. Envoy's RSS and
//!   allocator figures (`/memory`) before and while held give the memory per connection; the
//!   open-connection gauges and the backends' upgrade counts prove they are all held. The
//!   backends and the client run in this process, so it needs ~2N file descriptors and Envoy
//!   another ~2N: [`raise_nofile_limit`] raises the limit before Envoy is spawned (children
//!   inherit it). Where the hard limit cannot be raised (no CAP_SYS_RESOURCE, e.g. in a
//!   container) and is too low, the round holds as many as fit ([`fd_capacity`]) and the report
//!   says why the requested number was not measured.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use harness::bench::{
    close_ws, emit_report, envoy_version, loadavg, median, parse_flags, positive, range, verdict,
    ws_open, ws_tls_config,
};
use harness::node::{loopback_vars, Ports, HOST, ORIGIN, THUMB};
use harness::{
    envoy_bin, render_app_node, tls_client_config, wasm_path, EchoBackend, Envoy, Message,
    TlsFiles, WsStream, IO_TIMEOUT,
};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Backends of Envoy A in the sticky trials; Envoy B has one more.
const STICKY_BEFORE: usize = 3;
/// Backends behind the Envoy holding connections.
const HELD_BACKENDS: usize = 3;
/// The header the filter sets and the route hashes (render.sh's `AFFINITY_HEADER` default).
const AFFINITY_HEADER: &str = "x-edge-affinity";
/// Target: keys moved when a backend joins, at most this many times the ideal 1/n.
const TARGET_MOVEMENT_RATIO: f64 = 1.2;
/// Every this-many-th key is asked again on new connections to check it lands on the same
/// backend.
const DETERMINISM_SAMPLE_EVERY: usize = 10;
/// HTTP/2 connections of one sticky pass, and streams in flight on each (Envoy allows 128).
const H2_CONNECTIONS: usize = 4;
const H2_STREAMS: usize = 64;
/// A client's WebSocket close frame: FIN + opcode 8, masked, no payload, mask 0 (RFC 6455
/// §5.2; the mask only has to be present).
const WS_CLIENT_CLOSE: [u8; 6] = [0x88, 0x80, 0, 0, 0, 0];
/// Connections opened, echoed and closed before the "before" memory reading.
const HELD_WARMUP: usize = 100;
/// What the harness passes to Envoy; checked against `/server_info`.
const HARNESS_ENVOY_CONCURRENCY: u64 = 2;

const USAGE: &str = "\
ws-bench: sticky routing (key spread, movement when a backend joins) and held WebSockets

Usage: ws-bench [options]   (normally via: make bench)

Options:
  --keys N                  keys per sticky pass (room=k00000...)               [10000]
  --trials N                sticky trials, each with four fresh backends          [5]
  --cluster-trials N        trials on the cluster as deployed (3 nodes behind the
                            load balancer; a 4th joins, one leaves); 0: none      [3]
  --compare LIST            other lb policies measured on the same backends, for
                            the record: auto (the other of RING_HASH and MAGLEV),
                            none, or a comma list of maglev[:TABLE_SIZE],
                            ring:MIN[:MAX]                                       [auto]
  --connections N           WebSockets held at once                               [10000]
  --connect-concurrency N   handshakes in flight while opening them               [100]
  --rounds N                held-connection rounds, each with a fresh Envoy        [5]
  --only sticky|held        run one part only
  --out PATH                also write the Markdown report here
  -h, --help                this text

Needs Envoy ($ENVOY or .venv/bin/envoy) and the filter ($EDGE_FILTER_WASM or
target/wasm/edge_filter.wasm). Progress goes to stderr, the report to stdout.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Sticky,
    Held,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Compare {
    /// The other of RING_HASH and MAGLEV, whichever the shipped config does not use.
    Auto,
    List(Vec<LbPolicy>),
}

#[derive(Debug, Clone)]
struct Options {
    keys: usize,
    trials: usize,
    cluster_trials: usize,
    compare: Compare,
    connections: usize,
    connect_concurrency: usize,
    rounds: usize,
    only: Option<Part>,
    out: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keys: 10_000,
            trials: 5,
            cluster_trials: 3,
            compare: Compare::Auto,
            connections: 10_000,
            connect_concurrency: 100,
            rounds: 5,
            only: None,
            out: None,
        }
    }
}

impl Options {
    fn runs(&self, part: Part) -> bool {
        self.only.is_none_or(|p| p == part)
    }
}

/// `Ok(None)` means `--help` was asked for.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>> {
    let mut opts = Options::default();
    let go = parse_flags(args, |flag, value| {
        match flag {
            "--keys" => opts.keys = positive(flag, &value()?)?,
            "--trials" => opts.trials = positive(flag, &value()?)?,
            "--cluster-trials" => {
                opts.cluster_trials = value()?
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{flag} wants a number"))?
            }
            "--compare" => opts.compare = parse_compare(&value()?)?,
            "--connections" => opts.connections = positive(flag, &value()?)?,
            "--connect-concurrency" => opts.connect_concurrency = positive(flag, &value()?)?,
            "--rounds" => opts.rounds = positive(flag, &value()?)?,
            "--only" => {
                opts.only = Some(match value()?.as_str() {
                    "sticky" => Part::Sticky,
                    "held" => Part::Held,
                    other => bail!("--only wants sticky or held, got {other:?}"),
                })
            }
            "--out" => opts.out = Some(PathBuf::from(value()?)),
            _ => bail!("unknown argument {flag:?} (see --help)"),
        }
        Ok(())
    })?;
    Ok(go.then_some(opts))
}

fn parse_compare(s: &str) -> Result<Compare> {
    match s {
        "auto" => Ok(Compare::Auto),
        "none" => Ok(Compare::List(Vec::new())),
        list => Ok(Compare::List(
            list.split(',')
                .map(LbPolicy::parse)
                .collect::<Result<Vec<_>>>()?,
        )),
    }
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("ws-bench: {e:#}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    // Before the runtime and any child: Envoy inherits the limit when the harness spawns it.
    let nofile = match raise_nofile_limit(nofile_needed(&opts)) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("ws-bench: {e:#}");
            std::process::exit(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let result = runtime.block_on(run(&opts, nofile));
    drop(runtime);
    if let Err(e) = result {
        eprintln!("ws-bench: {e:#}");
        std::process::exit(1);
    }
}

/// File descriptors this process and Envoy each need: per held connection the client socket
/// and the backend's accepted socket here, the downstream and upstream sockets in Envoy; plus
/// room for everything else (listeners, health checks, logs, the sticky passes).
fn nofile_needed(opts: &Options) -> u64 {
    let held = if opts.runs(Part::Held) {
        opts.connections as u64
    } else {
        0
    };
    (2 * held + 10_000).max(200_000)
}

/// The open-file limit the benchmark asked for and got.
#[derive(Debug, Clone)]
struct NofileLimit {
    wanted: u64,
    /// Soft limit in force (this process's, inherited by Envoy).
    soft: u64,
    hard: u64,
    /// Why the hard limit could not be raised to `wanted`, if it could not.
    refused: Option<String>,
}

/// Raises RLIMIT_NOFILE (soft and hard; root with CAP_SYS_RESOURCE may raise the hard limit up
/// to `fs.nr_open`) to `want`, or the soft limit as far as the hard limit allows when raising
/// the hard one is not permitted.
fn raise_nofile_limit(want: u64) -> Result<NofileLimit> {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE.get().context("getrlimit(NOFILE)")?;
    let mut refused = None;
    if soft < want {
        if let Err(e) = Resource::NOFILE.set(want, want.max(hard)) {
            refused = Some(e.to_string());
            rlimit::increase_nofile_limit(want).context("raise RLIMIT_NOFILE")?;
        }
    }
    let (soft, hard) = Resource::NOFILE.get().context("getrlimit(NOFILE)")?;
    if refused.is_some() {
        eprintln!(
            "ws-bench: could not raise RLIMIT_NOFILE to {want} ({}); soft {soft}, hard {hard}",
            refused.as_deref().unwrap_or_default()
        );
    }
    Ok(NofileLimit {
        wanted: want,
        soft,
        hard,
        refused,
    })
}

/// Descriptors kept free in Envoy and here while connections are held: admin requests,
/// health checks, files read for the readings.
const FD_MARGIN: usize = 64;

/// How many WebSockets fit under `limit` descriptors in a process that already uses
/// `in_use` and needs two per WebSocket (Envoy: downstream and upstream socket; this process:
/// the client socket and the backend's accepted socket), keeping `margin` free.
fn fd_capacity(limit: u64, in_use: usize, margin: usize) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    limit.saturating_sub(in_use + margin) / 2
}

// ---------------------------------------------------------------------------------------------
// The run

/// Facts about the setup shared by both sections.
struct Bench {
    envoy_version: String,
    wasm: PathBuf,
    wasm_size: u64,
    /// RLIMIT_NOFILE of this process (and so of Envoy).
    nofile: NofileLimit,
    tls: TlsFiles,
}

async fn run(opts: &Options, nofile: NofileLimit) -> Result<()> {
    let wasm = wasm_path();
    ensure!(
        wasm.is_file(),
        "{} is missing: run `make wasm` first",
        wasm.display()
    );
    eprintln!("ws-bench: load average at start {}", loadavg());
    let ctx = Bench {
        envoy_version: envoy_version(&envoy_bin()),
        wasm_size: fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0),
        wasm,
        nofile,
        tls: TlsFiles::self_signed(&[HOST])?,
    };
    let mut report = String::new();
    if opts.runs(Part::Sticky) {
        let cluster = cluster_sticky(opts).await?;
        let sticky = sticky(opts, &ctx).await?;
        report.push_str(&render_sticky(opts, &ctx, &sticky));
        report.push_str(&render_cluster(opts, &cluster));
    }
    if opts.runs(Part::Held) {
        let held = held(opts, &ctx).await?;
        if !report.is_empty() {
            report.push('\n');
        }
        report.push_str(&render_held(opts, &ctx, &held));
    }
    emit_report(&report, opts.out.as_deref())
}

/// The render.sh settings of a benchmark node: loopback addresses, the test TLS files and
/// cookie secret, stateless ACME; every other setting is render.sh's default.
fn node_config(
    ports: &Ports,
    ctx: &Bench,
    backends: &[&EchoBackend],
    node: &str,
) -> Result<String> {
    // `loopback_vars` wants owned backends; the trials pass subsets, so set the list here.
    let mut vars = loopback_vars(ports, &ctx.wasm, &ctx.tls, &[]);
    for (k, v) in vars.iter_mut() {
        if *k == "APP_BACKENDS" {
            *v = backends
                .iter()
                .map(|b| b.addr())
                .collect::<Vec<_>>()
                .join(" ");
        }
    }
    vars.extend([
        ("ACME_THUMBPRINT", THUMB.to_owned()),
        ("NODE_ID", node.to_owned()),
    ]);
    render_app_node(&vars)
}

/// Starts Envoy on `config` and waits until all `n_backends` hosts of `app` are healthy (the
/// ring or table only holds healthy hosts; a host still unchecked would move keys).
async fn start_envoy(config: &str, admin: u16, n_backends: usize) -> Result<Envoy> {
    let envoy = Envoy::start(config, admin).await?;
    envoy
        .wait_cluster_healthy("app", n_backends, Duration::from_secs(30))
        .await?;
    Ok(envoy)
}

/// The worker count a running Envoy reports.
async fn envoy_workers(envoy: &Envoy) -> Result<u64> {
    let info: serde_json::Value = serde_json::from_str(&envoy.admin_get("/server_info").await?)
        .context("parse /server_info")?;
    info["command_line_options"]["concurrency"]
        .as_u64()
        .context("no command_line_options.concurrency in /server_info")
}

/// Whether the running listeners have the wasm HTTP filter.
async fn has_wasm_filter(envoy: &Envoy) -> Result<bool> {
    let listeners = envoy
        .admin_get("/config_dump?resource=static_listeners")
        .await?;
    Ok(listeners.contains("envoy.filters.http.wasm"))
}

async fn stat(envoy: &Envoy, name: &str) -> Result<u64> {
    Ok(envoy.counter(name).await?.unwrap_or(0))
}

/// The value of the first `key: value` line in a rendered config, for the report (so it
/// shows what ran, not what render.sh's defaults were when this was written).
fn yaml_value(config: &str, key: &str) -> String {
    config
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "?".to_owned())
}

/// The filter's affinity sources in a rendered config: the `"sources": [...]` JSON array of
/// the TLS listener's plugin configuration.
fn affinity_sources(config: &str) -> String {
    config
        .split_once("\"sources\": [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(inner, _)| format!("[{inner}]"))
        .unwrap_or_else(|| "?".to_owned())
}

/// How this run was invoked, for the report.
fn command_line() -> String {
    std::iter::once("ws-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Load-balancing policies of the app cluster

/// The app cluster's load-balancing policy, for the comparison runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LbPolicy {
    /// `RING_HASH` with `minimum_ring_size` and, if set, `maximum_ring_size`.
    Ring { min: u64, max: Option<u64> },
    /// `MAGLEV` with `table_size` (Envoy's default 65537 if not set; must be prime).
    Maglev { table: Option<u64> },
}

impl LbPolicy {
    /// `maglev`, `maglev:TABLE`, `ring:MIN`, `ring:MIN:MAX`.
    fn parse(s: &str) -> Result<LbPolicy> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let num = |p: &str| -> Result<u64> {
            p.parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("bad number {p:?} in lb policy {s:?}"))
        };
        match parts.as_slice() {
            ["maglev"] => Ok(LbPolicy::Maglev { table: None }),
            ["maglev", t] => Ok(LbPolicy::Maglev {
                table: Some(num(t)?),
            }),
            ["ring", min] => Ok(LbPolicy::Ring {
                min: num(min)?,
                max: None,
            }),
            ["ring", min, max] => Ok(LbPolicy::Ring {
                min: num(min)?,
                max: Some(num(max)?),
            }),
            _ => bail!("unknown lb policy {s:?} (maglev[:TABLE_SIZE] or ring:MIN[:MAX])"),
        }
    }

    fn label(&self) -> String {
        match self {
            LbPolicy::Ring { min, max: None } => format!("RING_HASH, minimum_ring_size {min}"),
            LbPolicy::Ring { min, max: Some(m) } => {
                format!("RING_HASH, minimum_ring_size {min}, maximum_ring_size {m}")
            }
            LbPolicy::Maglev { table: None } => "MAGLEV, table_size 65537 (default)".to_owned(),
            LbPolicy::Maglev { table: Some(t) } => format!("MAGLEV, table_size {t}"),
        }
    }

    /// The cluster keys for this policy, at the cluster's key indentation.
    fn yaml(&self, indent: &str) -> String {
        match self {
            LbPolicy::Ring { min, max } => {
                let mut y = format!(
                    "{indent}lb_policy: RING_HASH\n{indent}ring_hash_lb_config:\n\
                     {indent}  minimum_ring_size: {min}\n"
                );
                if let Some(max) = max {
                    let _ = writeln!(y, "{indent}  maximum_ring_size: {max}");
                }
                y
            }
            LbPolicy::Maglev { table } => {
                let mut y = format!("{indent}lb_policy: MAGLEV\n");
                if let Some(t) = table {
                    let _ = writeln!(y, "{indent}maglev_lb_config:\n{indent}  table_size: {t}");
                }
                y
            }
        }
    }
}

/// The policy keys of the `app` cluster in a rendered config: the `lb_policy` line and its
/// `*_lb_config` block, as (line range, key indentation, text).
struct PolicyBlock {
    lines: Vec<std::ops::Range<usize>>,
    indent: String,
    text: String,
}

fn app_policy_block(config: &str) -> Result<PolicyBlock> {
    let lines: Vec<&str> = config.lines().collect();
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    // The first `- name: app` after `clusters:` (a virtual host has the same name).
    let clusters = lines
        .iter()
        .position(|l| l.trim() == "clusters:")
        .context("no `clusters:` in the rendered config")?;
    let start = lines[clusters..]
        .iter()
        .position(|l| l.trim() == "- name: app")
        .map(|i| clusters + i)
        .context("no `- name: app` cluster in the rendered config")?;
    let key_indent = indent_of(lines[start]) + 2;
    let mut ranges = Vec::new();
    let mut text = String::new();
    let mut i = start + 1;
    while i < lines.len() {
        let l = lines[i];
        let blank = l.trim().is_empty() || l.trim_start().starts_with('#');
        if !blank && indent_of(l) < key_indent {
            break; // the next cluster, or the end of the list
        }
        let key = l.trim_start();
        let is_policy_key = !blank
            && indent_of(l) == key_indent
            && (key.starts_with("lb_policy:")
                || key.starts_with("ring_hash_lb_config:")
                || key.starts_with("maglev_lb_config:"));
        if is_policy_key {
            let mut end = i + 1;
            while end < lines.len() {
                let n = lines[end];
                let deeper = n.trim().is_empty() || indent_of(n) > key_indent;
                if !deeper {
                    break;
                }
                end += 1;
            }
            for l in &lines[i..end] {
                text.push_str(l);
                text.push('\n');
            }
            ranges.push(i..end);
            i = end;
        } else {
            i += 1;
        }
    }
    ensure!(
        ranges
            .iter()
            .any(|r| lines[r.start].trim_start().starts_with("lb_policy:")),
        "the app cluster has no lb_policy line"
    );
    Ok(PolicyBlock {
        lines: ranges,
        indent: " ".repeat(key_indent),
        text,
    })
}

/// The shipped policy as the rendered config states it, e.g.
/// "RING_HASH (minimum_ring_size: 4096, maximum_ring_size: 65536)".
fn describe_policy(block: &PolicyBlock) -> String {
    let mut name = String::new();
    let mut params = Vec::new();
    for l in block.text.lines().map(str::trim) {
        if let Some(p) = l.strip_prefix("lb_policy:") {
            name = p.trim().to_owned();
        } else if !l.is_empty() && !l.starts_with('#') && !l.ends_with(':') {
            params.push(l.to_owned());
        }
    }
    if params.is_empty() {
        name
    } else {
        format!("{name} ({})", params.join(", "))
    }
}

/// `minimum_ring_size` of a RING_HASH policy as [`describe_policy`] prints it.
fn ring_minimum(described: &str) -> Option<u64> {
    if !described.starts_with("RING_HASH") {
        return None;
    }
    let (_, rest) = described.split_once("minimum_ring_size: ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The parsed shipped policy, to pick the `auto` comparison.
fn shipped_kind(block: &PolicyBlock) -> Option<&'static str> {
    let d = describe_policy(block);
    if d.starts_with("RING_HASH") {
        Some("RING_HASH")
    } else if d.starts_with("MAGLEV") {
        Some("MAGLEV")
    } else {
        None
    }
}

/// `config` with the app cluster's policy keys replaced by `policy`.
fn with_policy(config: &str, policy: &LbPolicy) -> Result<String> {
    let block = app_policy_block(config)?;
    let lines: Vec<&str> = config.lines().collect();
    let mut out = String::with_capacity(config.len());
    let first = block.lines[0].start;
    for (i, l) in lines.iter().enumerate() {
        if i == first {
            out.push_str(&policy.yaml(&block.indent));
        }
        if block.lines.iter().any(|r| r.contains(&i)) {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Sticky routing

/// How keys spread over backends.
#[derive(Debug, Clone, PartialEq)]
struct Spread {
    counts: Vec<usize>,
    min_share: f64,
    max_share: f64,
    /// Largest / smallest count.
    max_min: f64,
    /// Root-mean-square deviation of the shares from the ideal 1/n, relative to 1/n.
    cv: f64,
}

/// `assignment[key] = backend index` over `n` backends.
fn spread(assignment: &[usize], n: usize) -> Spread {
    let mut counts = vec![0usize; n];
    for &b in assignment {
        counts[b] += 1;
    }
    let total = assignment.len().max(1) as f64;
    let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / total).collect();
    let ideal = 1.0 / n as f64;
    let (min_share, max_share) = range(&shares);
    let msd = shares.iter().map(|s| (s - ideal).powi(2)).sum::<f64>() / n as f64;
    Spread {
        min_share,
        max_share,
        max_min: max_share / min_share,
        cv: msd.sqrt() / ideal,
        counts,
    }
}

/// What changed between two assignments of the same keys when backend `new` joined.
#[derive(Debug, Clone, PartialEq)]
struct Movement {
    keys: usize,
    moved: usize,
    /// Moved keys that went to the new backend (all of them with a consistent hash).
    to_new: usize,
    /// `moved / keys`.
    fraction: f64,
    /// The ideal fraction: the new backend's fair share, 1 / (backends after).
    ideal: f64,
    /// `fraction / ideal`.
    ratio: f64,
}

fn movement(before: &[usize], after: &[usize], new: usize, backends_after: usize) -> Movement {
    assert_eq!(before.len(), after.len(), "the same keys before and after");
    let moved = before.iter().zip(after).filter(|(a, b)| a != b).count();
    let to_new = before
        .iter()
        .zip(after)
        .filter(|(a, b)| a != b && **b == new)
        .count();
    let keys = before.len();
    let fraction = moved as f64 / keys.max(1) as f64;
    let ideal = 1.0 / backends_after as f64;
    Movement {
        keys,
        moved,
        to_new,
        fraction,
        ideal,
        ratio: fraction / ideal,
    }
}

fn key_name(i: usize) -> String {
    format!("k{i:05}")
}

/// One pass of keys through one Envoy.
struct Pass {
    /// Backend index per key.
    assignment: Vec<usize>,
    secs: f64,
}

/// Asks Envoy on `port` where each key goes: a WebSocket handshake of `/ws?room=<key>` (the
/// filter checks it, derives the key from `room` and sets the affinity header), and reads the
/// serving backend's id from `x-backend-id`. Answers are cross-checked with what the backends
/// recorded (each key's upgrade once, at the backend that answered, with the affinity header
/// set to the key).
async fn route_keys(
    port: u16,
    client: &Arc<rustls::ClientConfig>,
    keys: &[String],
    backends: &[&EchoBackend],
) -> Result<Pass> {
    let recorded_before: Vec<usize> = backends.iter().map(|b| b.upgrade_count()).collect();
    let started = Instant::now();
    let ids = h2_get_backend_ids(port, client, keys).await?;
    let secs = started.elapsed().as_secs_f64();
    let index: HashMap<&str, usize> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b.id.as_str(), i))
        .collect();
    let assignment = ids
        .iter()
        .zip(keys)
        .map(|(id, key)| {
            index
                .get(id.as_str())
                .copied()
                .with_context(|| format!("key {key}: unknown backend id {id:?}"))
        })
        .collect::<Result<Vec<_>>>()?;

    // The backends' side: which keys each one got, and the affinity header Envoy hashed.
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(keys.len());
    for (i, b) in backends.iter().enumerate() {
        for r in b.upgrades().into_iter().skip(recorded_before[i]) {
            let room = r
                .path
                .strip_prefix("/ws?room=")
                .with_context(|| format!("unexpected upgrade of {} at {}", r.path, b.id))?;
            let affinity = r.header(AFFINITY_HEADER).unwrap_or_default();
            ensure!(
                affinity == room,
                "backend {} got room {room} with {AFFINITY_HEADER}: {affinity:?}: the filter \
                 did not derive the key from the room",
                b.id
            );
            ensure!(
                seen.insert(room.to_owned(), i).is_none(),
                "room {room} reached a backend twice in one pass"
            );
        }
    }
    ensure!(
        seen.len() == keys.len(),
        "the backends recorded {} of {} keys",
        seen.len(),
        keys.len()
    );
    for (key, &b) in keys.iter().zip(&assignment) {
        ensure!(
            seen.get(key) == Some(&b),
            "key {key}: answered by backend {b}, recorded at {:?}",
            seen.get(key)
        );
    }
    Ok(Pass { assignment, secs })
}

/// A WebSocket handshake of `/ws?room=<key>` for every key, as RFC 8441 extended CONNECTs
/// over [`H2_CONNECTIONS`] HTTP/2 connections with up to [`H2_STREAMS`] in flight on each;
/// returns `x-backend-id` per key, in key order.
async fn h2_get_backend_ids(
    port: u16,
    client: &Arc<rustls::ClientConfig>,
    keys: &[String],
) -> Result<Vec<String>> {
    let mut tasks = JoinSet::new();
    for c in 0..H2_CONNECTIONS.min(keys.len()) {
        let mine: Vec<(usize, String)> = keys
            .iter()
            .enumerate()
            .skip(c)
            .step_by(H2_CONNECTIONS)
            .map(|(i, k)| (i, k.clone()))
            .collect();
        let client = client.clone();
        tasks.spawn(async move {
            let (send, driver) = h2_connect(port, &client).await?;
            let authority = format!("{HOST}:{port}");
            let results: Vec<(usize, Result<String>)> = futures_util::stream::iter(mine)
                .map(|(i, key)| {
                    let send = send.clone();
                    let authority = authority.clone();
                    async move { (i, h2_backend_id(send, &authority, &key).await) }
                })
                .buffer_unordered(H2_STREAMS)
                .collect()
                .await;
            drop(send);
            driver.abort();
            Ok::<_, anyhow::Error>(results)
        });
    }
    let mut ids = vec![String::new(); keys.len()];
    let deadline = Duration::from_secs(120);
    let all = tokio::time::timeout(deadline, async {
        while let Some(joined) = tasks.join_next().await {
            for (i, id) in joined.context("HTTP/2 client task")?? {
                ids[i] = id.with_context(|| format!("WebSocket /ws?room={}", keys[i]))?;
            }
        }
        Ok::<_, anyhow::Error>(())
    });
    all.await
        .map_err(|_| anyhow!("routing {} keys took over {deadline:?}", keys.len()))??;
    Ok(ids)
}

/// An HTTP/2 connection over TLS (ALPN h2) to Envoy's TLS listener, once Envoy has enabled
/// extended CONNECT (its SETTINGS arrive after the handshake); the connection driver runs on
/// its own task.
async fn h2_connect(
    port: u16,
    client: &Arc<rustls::ClientConfig>,
) -> Result<(h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>)> {
    let open = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from(HOST)?;
        let tls = tokio_rustls::TlsConnector::from(client.clone())
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        ensure!(
            tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()),
            "Envoy did not negotiate h2"
        );
        let (send, connection) = h2::client::handshake(tls)
            .await
            .context("HTTP/2 handshake")?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let send = send.ready().await.context("HTTP/2 connection")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !send.is_extended_connect_protocol_enabled() {
            ensure!(
                Instant::now() < deadline,
                "Envoy did not enable extended CONNECT (RFC 8441) on HTTP/2"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok((send, driver))
    };
    tokio::time::timeout(IO_TIMEOUT, open)
        .await
        .map_err(|_| anyhow!("HTTP/2 connection to 127.0.0.1:{port} timed out"))?
}

async fn h2_backend_id(
    send: h2::client::SendRequest<Bytes>,
    authority: &str,
    key: &str,
) -> Result<String> {
    let request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://{authority}/ws?room={key}"))
        .extension(h2::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13")
        .header("origin", ORIGIN)
        .body(())?;
    let exchange = async {
        let mut send = send.ready().await.context("HTTP/2 connection")?;
        let (response, mut stream) = send.send_request(request, false)?;
        let response = response.await.context("response")?;
        let status = response.status();
        let id = response
            .headers()
            .get("x-backend-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status == http::StatusCode::OK {
            // The WebSocket is open: that is all we wanted to know. Close it as a client does
            // (RFC 6455 §5.5.1: a masked close frame, here with an empty body and a zero mask)
            // and end the stream, then wait until the backend's close ends Envoy's side. Not a
            // reset: Envoy closes HTTP/2 connections on which many young streams are reset
            // (its "rapid reset" protection).
            stream
                .send_data(Bytes::from_static(&WS_CLIENT_CLOSE), true)
                .context("close the WebSocket")?;
        }
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(chunk) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    text.extend_from_slice(&chunk);
                }
                // Envoy may reset the stream when the upstream connection closes.
                Err(e) if e.is_reset() && status == http::StatusCode::OK => break,
                Err(e) => return Err(anyhow::Error::new(e).context("response body")),
            }
        }
        ensure!(
            status == http::StatusCode::OK,
            "handshake refused: {status}: {}",
            String::from_utf8_lossy(&text)
        );
        id.context("no x-backend-id in the answer")
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no answer within {IO_TIMEOUT:?}"))?
}

/// One policy in one trial.
#[derive(Debug, Clone)]
struct PolicyTrial {
    /// Spread over backends 1–3 (Envoy A) and 1–4 (Envoy B).
    spread_before: Spread,
    spread_after: Spread,
    movement: Movement,
    /// Keys asked twice through Envoy A, and how many got another backend the second time.
    determinism_checked: usize,
    determinism_changed: usize,
    /// Envoy's own view of its ring/table (gauges), A then B.
    lb_gauges: [String; 2],
    /// Seconds per pass, A then B (informational).
    pass_secs: [f64; 2],
}

struct Trial {
    ports: Vec<u16>,
    /// Index 0 is the shipped config, then the comparisons in order.
    policies: Vec<PolicyTrial>,
}

struct StickyResult {
    shipped: String,
    /// Affinity sources and hash header of the rendered config.
    sources: String,
    hash_header: String,
    compared: Vec<LbPolicy>,
    trials: Vec<Trial>,
    workers: u64,
    filter_present: bool,
    loadavg: String,
}

async fn sticky(opts: &Options, ctx: &Bench) -> Result<StickyResult> {
    let client = tls_client_config(&ctx.tls.ca_pem, &[b"h2"])?;
    let keys: Vec<String> = (0..opts.keys).map(key_name).collect();
    let sample: Vec<String> = keys
        .iter()
        .step_by(DETERMINISM_SAMPLE_EVERY)
        .cloned()
        .collect();
    let loadavg = loadavg();
    let mut shipped = None;
    let (mut sources, mut hash_header) = (String::new(), String::new());
    let mut compared = Vec::new();
    let mut trials = Vec::new();
    let (mut workers, mut filter_present) = (0, false);
    for t in 0..opts.trials {
        let mut backends = Vec::new();
        for i in 0..=STICKY_BEFORE {
            backends.push(EchoBackend::start(&format!("backend-{}", i + 1)).await?);
        }
        let all: Vec<&EchoBackend> = backends.iter().collect();
        let before = &all[..STICKY_BEFORE];
        let ports = Ports::free();
        let base_a = node_config(&ports, ctx, before, "ws-bench-a")?;
        let base_b = node_config(&ports, ctx, &all, "ws-bench-b")?;
        if shipped.is_none() {
            let block = app_policy_block(&base_a)?;
            compared = match &opts.compare {
                Compare::List(l) => l.clone(),
                Compare::Auto => match shipped_kind(&block) {
                    Some("RING_HASH") => vec![LbPolicy::Maglev { table: None }],
                    Some("MAGLEV") => vec![LbPolicy::Ring {
                        min: 4096,
                        max: Some(65536),
                    }],
                    _ => Vec::new(),
                },
            };
            shipped = Some(describe_policy(&block));
            sources = affinity_sources(&base_a);
            hash_header = yaml_value(&base_a, "- header");
        }
        let mut variants: Vec<(String, String, String)> =
            vec![("shipped".to_owned(), base_a.clone(), base_b.clone())];
        for p in &compared {
            variants.push((
                p.label(),
                with_policy(&base_a, p)?,
                with_policy(&base_b, p)?,
            ));
        }
        let mut policies = Vec::new();
        for (label, config_a, config_b) in &variants {
            let tag = format!("trial {}/{} {label}", t + 1, opts.trials);
            let envoy_a = start_envoy(config_a, ports.admin, before.len()).await?;
            if t == 0 && label == "shipped" {
                workers = envoy_workers(&envoy_a).await?;
                filter_present = has_wasm_filter(&envoy_a).await?;
            }
            let a = route_keys(ports.https, &client, &keys, before).await?;
            let again = route_keys(ports.https, &client, &sample, before).await?;
            let determinism_changed = again
                .assignment
                .iter()
                .enumerate()
                .filter(|(j, b)| a.assignment[j * DETERMINISM_SAMPLE_EVERY] != **b)
                .count();
            let gauges_a = lb_gauges(&envoy_a).await?;
            drop(envoy_a);
            let envoy_b = start_envoy(config_b, ports.admin, all.len()).await?;
            let b = route_keys(ports.https, &client, &keys, &all).await?;
            let gauges_b = lb_gauges(&envoy_b).await?;
            drop(envoy_b);
            let pt = PolicyTrial {
                spread_before: spread(&a.assignment, before.len()),
                spread_after: spread(&b.assignment, all.len()),
                movement: movement(&a.assignment, &b.assignment, STICKY_BEFORE, all.len()),
                determinism_checked: sample.len(),
                determinism_changed,
                lb_gauges: [gauges_a, gauges_b],
                pass_secs: [a.secs, b.secs],
            };
            eprintln!(
                "ws-bench: {tag}: shares {:?} (max/min {:.3}), moved {:.4} ({:.3}× ideal, \
                 {}/{} to the new backend), {} of {} re-asked keys changed, passes {:.1}+{:.1} s",
                pt.spread_before.counts,
                pt.spread_before.max_min,
                pt.movement.fraction,
                pt.movement.ratio,
                pt.movement.to_new,
                pt.movement.moved,
                pt.determinism_changed,
                pt.determinism_checked,
                a.secs,
                b.secs
            );
            policies.push(pt);
        }
        trials.push(Trial {
            ports: backends.iter().map(|b| b.port).collect(),
            policies,
        });
    }
    Ok(StickyResult {
        shipped: shipped.unwrap_or_default(),
        sources,
        hash_header,
        compared,
        trials,
        workers,
        filter_present,
        loadavg,
    })
}

/// Envoy's ring/table gauges (`ring_hash_lb.*` or `maglev_lb.*` of the app cluster), e.g.
/// "size 4098, min_hashes_per_host 1366, max_hashes_per_host 1366".
async fn lb_gauges(envoy: &Envoy) -> Result<String> {
    let body = envoy
        .admin_get("/stats?filter=%5Ecluster%5C.app%5C.(ring_hash_lb%7Cmaglev_lb)%5C.")
        .await?;
    Ok(body
        .lines()
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(": ")?;
            let short = name.rsplit('.').next()?;
            Some(format!("{short} {}", value.trim()))
        })
        .collect::<Vec<_>>()
        .join(", "))
}

// ---------------------------------------------------------------------------------------------
// Held connections

/// Envoy's memory at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Memory {
    /// VmRSS from /proc/<pid>/status, KiB.
    rss_kib: u64,
    /// Admin `/memory`: bytes allocated by Envoy (tcmalloc's in-use bytes), and the heap.
    allocated: u64,
    heap_size: u64,
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Admin `/memory` is JSON with decimal strings: {"allocated": "8176496", "heap_size": ...}.
fn parse_admin_memory(json: &str) -> Result<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(json).context("parse /memory")?;
    let field = |name: &str| -> Result<u64> {
        match &v[name] {
            serde_json::Value::String(s) => s.parse().ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .with_context(|| format!("no {name} in /memory: {json}"))
    };
    Ok((field("allocated")?, field("heap_size")?))
}

async fn envoy_memory(envoy: &Envoy) -> Result<Memory> {
    let pid = envoy.pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let rss_kib = parse_vm_rss_kib(&status).context("no VmRSS in /proc/<envoy>/status")?;
    let (allocated, heap_size) = parse_admin_memory(&envoy.admin_get("/memory").await?)?;
    Ok(Memory {
        rss_kib,
        allocated,
        heap_size,
    })
}

/// Bytes per connection from two readings: (after − before) / n.
fn per_connection(before: u64, after: u64, n: usize) -> f64 {
    (after as f64 - before as f64) / n.max(1) as f64
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// "Max open files" of a process, soft limit.
fn max_open_files(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Envoy's gauges and counters that show what it holds, while all connections are open.
#[derive(Debug, Clone, Default)]
struct HeldStats {
    downstream_cx_active: u64,
    upgrades_active: u64,
    upstream_cx_active: u64,
    /// Circuit-breaker and overload refusals over the whole round (all should be 0).
    refusals: u64,
    refusal_detail: String,
    envoy_fds: usize,
    /// Upgrades the backends accepted in the round (warm-up excluded).
    backend_upgrades: usize,
}

/// The descriptor budget of a round.
#[derive(Debug, Clone, Default)]
struct FdBudget {
    envoy_limit: u64,
    /// Envoy's open descriptors before the connections (listeners, health checks, logs...).
    envoy_idle: usize,
    self_limit: u64,
    self_idle: usize,
}

#[derive(Debug, Clone, Default)]
struct HeldRound {
    /// Connections this round tried to hold: the requested number, or fewer if the
    /// descriptor limits do not allow it.
    n: usize,
    fds: FdBudget,
    opened: usize,
    open_errors: usize,
    open_secs: f64,
    echoed: usize,
    echo_errors: usize,
    echo_secs: f64,
    last_error: Option<String>,
    stats: HeldStats,
    before: Memory,
    held: Memory,
    after_close: Memory,
    /// Active downstream connections once the client closed them all.
    left_after_close: u64,
}

impl HeldRound {
    fn errors(&self) -> usize {
        self.open_errors + self.echo_errors
    }

    /// All N connections open, echoing, and counted as active by Envoy and the backends.
    fn all_held(&self, n: usize) -> bool {
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

struct HeldResult {
    rounds: Vec<HeldRound>,
    /// Connection limits of the rendered config: overload manager, circuit breaker, idle.
    limits: String,
    workers: u64,
    filter_present: bool,
    envoy_nofile: String,
    accepted_counter: u64,
    loadavg: String,
}

/// Small tungstenite buffers: ten thousand idle sockets in this process should not take
/// gigabytes (this changes nothing on Envoy's side).
fn small_buffers() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Sends `msg` and waits for its echo.
async fn ws_echo_once(ws: &mut WsStream, msg: &str) -> Result<()> {
    let exchange = async {
        ws.send(Message::text(msg)).await.context("send")?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    ensure!(t.as_str() == msg, "wrong echo {t:?} for {msg:?}");
                    return Ok(());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => bail!("unexpected WebSocket event {other:?}"),
            }
        }
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no echo within {IO_TIMEOUT:?}"))?
}

/// Opens `n` connections with at most `concurrency` handshakes in flight; the successes in
/// index order, the failures counted.
async fn open_many(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> (Vec<(usize, WsStream)>, usize, Option<String>) {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let (tls, permits) = (tls.clone(), permits.clone());
        let path = format!("/ws?room={prefix}-{i}");
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (
                i,
                ws_open(port, &path, ORIGIN, &tls, Some(small_buffers())).await,
            )
        });
    }
    let (mut open, mut errors, mut last) = (Vec::with_capacity(n), 0, None);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, Ok(ws))) => open.push((i, ws)),
            Ok((_, Err(e))) => {
                errors += 1;
                last = Some(format!("{e:#}"));
            }
            Err(e) => {
                errors += 1;
                last = Some(format!("open task: {e}"));
            }
        }
    }
    open.sort_by_key(|(i, _)| *i);
    (open, errors, last)
}

/// Every connection sends one message and waits for its echo, all at once; returns the
/// connections that echoed and the failures.
async fn echo_all(
    sockets: Vec<(usize, WsStream)>,
    prefix: &str,
) -> (Vec<(usize, WsStream)>, usize, Option<String>) {
    let mut tasks = JoinSet::new();
    for (i, mut ws) in sockets {
        let msg = format!("{prefix}-{i} echo");
        tasks.spawn(async move {
            let r = ws_echo_once(&mut ws, &msg).await;
            (i, ws, r)
        });
    }
    let (mut ok, mut errors, mut last) = (Vec::new(), 0, None);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, ws, Ok(()))) => ok.push((i, ws)),
            Ok((_, _, Err(e))) => {
                errors += 1;
                last = Some(format!("{e:#}"));
            }
            Err(e) => {
                errors += 1;
                last = Some(format!("echo task: {e}"));
            }
        }
    }
    (ok, errors, last)
}

async fn close_all(sockets: Vec<(usize, WsStream)>) {
    let mut tasks = JoinSet::new();
    for (_, ws) in sockets {
        tasks.spawn(async move {
            let _ = tokio::time::timeout(IO_TIMEOUT, close_ws(ws)).await;
        });
    }
    while tasks.join_next().await.is_some() {}
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

const REFUSAL_STATS: [&str; 5] = [
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

async fn held(opts: &Options, ctx: &Bench) -> Result<HeldResult> {
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

// ---------------------------------------------------------------------------------------------
// Report

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

fn render_sticky(opts: &Options, ctx: &Bench, s: &StickyResult) -> String {
    let mut md = String::new();
    let w = &mut md;
    let ideal = 1.0 / (STICKY_BEFORE + 1) as f64;
    let _ = writeln!(w, "## Sticky routing: spread and movement\n");

    let _ = writeln!(w, "### Setup\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let rows = [
        ("command", format!("`{}`", command_line())),
        ("Envoy", ctx.envoy_version.clone()),
        (
            "config",
            format!(
                "`deploy/envoy/render.sh` defaults (the filter's affinity sources `{}`, route \
                 `hash_policy` `- header: {}`); overridden: loopback listeners and ports, \
                 `APP_BACKENDS`, test TLS files, `COOKIE_SECRET`, `ALLOWED_ORIGINS={ORIGIN}`, \
                 `ACME_THUMBPRINT`, `NODE_ID`",
                s.sources, s.hash_header
            ),
        ),
        (
            "app cluster lb policy (shipped)",
            format!("`{}`", s.shipped),
        ),
        (
            "edge filter",
            format!(
                "{} (`{}`, {} bytes)",
                if s.filter_present {
                    "present on the listeners"
                } else {
                    "NOT present"
                },
                ctx.wasm.display(),
                ctx.wasm_size
            ),
        ),
        ("Envoy workers", s.workers.to_string()),
        (
            "keys",
            format!(
                "{} (`k00000`…), {} trial(s), each with 4 fresh echo backends (new ports: a \
                 new ring)",
                opts.keys, opts.trials
            ),
        ),
        ("load average at start", s.loadavg.clone()),
    ];
    for (k, v) in rows {
        let _ = writeln!(w, "| {k} | {v} |");
    }

    let _ = writeln!(w, "\n### Procedure\n");
    let _ = writeln!(
        w,
        "Per trial: start backends 1–4 (axum echo apps in this process). Envoy A is rendered \
         with `APP_BACKENDS` = backends 1–3, Envoy B with backends 1–4 (the same three hosts \
         plus a fourth: exactly \"a fourth backend joins\", since Envoy builds its ring/table \
         from the host addresses). Each Envoy starts, all its hosts turn healthy (active health \
         checks), then every key opens a WebSocket: `/ws?room=<key>` with `Origin`, as an \
         RFC 8441 extended CONNECT over HTTP/2 on TLS ({H2_CONNECTIONS} connections, up to \
         {H2_STREAMS} handshakes in flight each; Envoy forwards it to the backend as an \
         HTTP/1.1 upgrade). The filter checks the handshake, derives the affinity key from \
         `room` and sets `{AFFINITY_HEADER}`, which the route hashes. The client reads the \
         serving backend from the `x-backend-id` answer header, then closes the WebSocket (a \
         close frame and the end of the stream). Answers are cross-checked with the backends' \
         own records (every key's upgrade recorded once, at \
         that backend, with `{AFFINITY_HEADER}: <key>`). Through Envoy A every \
         {DETERMINISM_SAMPLE_EVERY}th key is asked a second time on new connections (which \
         Envoy may hand to another worker) to check it lands on the same backend. Spread: \
         share of keys per backend; CV = RMS deviation of the shares from 1/n, divided by 1/n. \
         Movement: share of keys whose backend differs between A and B; ideal {:.2} (only the \
         keys the newcomer takes over).",
        ideal
    );
    if !s.compared.is_empty() {
        let _ = writeln!(
            w,
            "\nFor comparison, each trial repeats both passes on the same four backends with \
             the app cluster's `lb_policy` block replaced (nothing else changed): {}.",
            s.compared
                .iter()
                .map(|p| format!("`{}`", p.label()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let labels: Vec<String> = std::iter::once(format!("shipped: {}", s.shipped))
        .chain(s.compared.iter().map(LbPolicy::label))
        .collect();
    let _ = writeln!(w, "\n### Raw numbers per trial\n");
    for (p, label) in labels.iter().enumerate() {
        let _ = writeln!(w, "`{label}`\n");
        let _ = writeln!(
            w,
            "| trial | backend ports | keys per backend, A (1–3) | max/min | CV | keys per \
             backend, B (1–4) | moved | moved / ideal | moved to the new backend | re-asked \
             keys changed | Envoy ring/table, A; B | pass A, B (s) |"
        );
        let _ = writeln!(
            w,
            "|---:|---|---|---:|---:|---|---:|---:|---:|---:|---|---|"
        );
        for (t, trial) in s.trials.iter().enumerate() {
            let r = &trial.policies[p];
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.3} | {} | {} | {} ({}) | {:.3} | {} of {} | {} of {} | {}; {} | {:.1}, {:.1} |",
                t + 1,
                trial
                    .ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                r.spread_before
                    .counts
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(" / "),
                r.spread_before.max_min,
                pct(r.spread_before.cv),
                r.spread_after
                    .counts
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(" / "),
                r.movement.moved,
                pct(r.movement.fraction),
                r.movement.ratio,
                r.movement.to_new,
                r.movement.moved,
                r.determinism_changed,
                r.determinism_checked,
                r.lb_gauges[0],
                r.lb_gauges[1],
                r.pass_secs[0],
                r.pass_secs[1]
            );
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "### Summary (over {} trial(s))\n", s.trials.len());
    let _ = writeln!(
        w,
        "| lb policy | min share (worst) | max share (worst) | max/min median (range) | CV \
         median | moved median (range) | moved / ideal median (max) | moved to the new \
         backend | re-asked keys changed |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut summaries = Vec::new();
    for (p, label) in labels.iter().enumerate() {
        let col = |f: &dyn Fn(&PolicyTrial) -> f64| -> Vec<f64> {
            s.trials.iter().map(|t| f(&t.policies[p])).collect()
        };
        let min_share = range(&col(&|r| r.spread_before.min_share)).0;
        let max_share = range(&col(&|r| r.spread_before.max_share)).1;
        let max_min = col(&|r| r.spread_before.max_min);
        let cv = median(col(&|r| r.spread_before.cv));
        let moved = col(&|r| r.movement.fraction);
        let ratio = col(&|r| r.movement.ratio);
        let (moved_total, to_new): (usize, usize) = s.trials.iter().fold((0, 0), |acc, t| {
            let m = &t.policies[p].movement;
            (acc.0 + m.moved, acc.1 + m.to_new)
        });
        let (checked, changed): (usize, usize) = s.trials.iter().fold((0, 0), |acc, t| {
            let r = &t.policies[p];
            (acc.0 + r.determinism_checked, acc.1 + r.determinism_changed)
        });
        let (mm_lo, mm_hi) = range(&max_min);
        let (mv_lo, mv_hi) = range(&moved);
        let ratio_max = range(&ratio).1;
        let _ = writeln!(
            w,
            "| `{label}` | {} | {} | {:.3} ({:.3}–{:.3}) | {} | {} ({}–{}) | {:.3} ({:.3}) | {to_new} of {moved_total} | {changed} of {checked} |",
            pct(min_share),
            pct(max_share),
            median(max_min.clone()),
            mm_lo,
            mm_hi,
            pct(cv),
            pct(median(moved.clone())),
            pct(mv_lo),
            pct(mv_hi),
            median(ratio.clone()),
            ratio_max
        );
        summaries.push((label.clone(), median(ratio), ratio_max, changed));
    }
    let _ = writeln!(
        w,
        "\nIdeal: each backend 1/3 of the keys with three backends; {:.2} of the keys move when \
         the fourth joins, all of them to it.",
        ideal
    );

    let _ = writeln!(w, "\n### Targets\n");
    let _ = writeln!(w, "| target | measured | result |");
    let _ = writeln!(w, "|---|---|---|");
    let (_, shipped_median, shipped_max, shipped_changed) = summaries[0].clone();
    let _ = writeln!(
        w,
        "| key movement when a 4th backend joins ≤ {TARGET_MOVEMENT_RATIO}× ideal ({:.2}), \
         every trial (shipped config) | median {shipped_median:.3}×, worst {shipped_max:.3}× | {} |",
        TARGET_MOVEMENT_RATIO * ideal,
        verdict(shipped_max <= TARGET_MOVEMENT_RATIO)
    );
    let _ = writeln!(
        w,
        "| the same key → the same backend (shipped config) | {shipped_changed} re-asked keys \
         changed backend | {} |",
        verdict(shipped_changed == 0)
    );
    for (label, med, max, _) in summaries.iter().skip(1) {
        let _ = writeln!(
            w,
            "| (comparison, not shipped) movement with `{label}` | median {med:.3}×, worst \
             {max:.3}× | {} |",
            verdict(*max <= TARGET_MOVEMENT_RATIO)
        );
    }
    if shipped_max > TARGET_MOVEMENT_RATIO {
        let (moved, to_new) = s.trials.iter().fold((0, 0), |acc, t| {
            let m = &t.policies[0].movement;
            (acc.0 + m.moved, acc.1 + m.to_new)
        });
        let shipped_to_new = to_new as f64 / moved.max(1) as f64;
        if let Some(min) = ring_minimum(&s.shipped) {
            let (k3, k4) = (min.div_ceil(3), min.div_ceil(4));
            let _ = writeln!(
                w,
                "\nWhy `RING_HASH` moves more than 1/4: Envoy gives every host \
                 ⌈`minimum_ring_size` / hosts⌉ ring entries, hashed from `<ip:port>_0`, \
                 `<ip:port>_1`, … (the ring gauges above: {k3} per host with three hosts, {k4} \
                 with four). When the fourth host joins, each old host keeps only its entries \
                 `_0`…`_{}` and loses `_{k4}`…`_{}`, about a quarter of the ring, so besides the \
                 keys the newcomer takes over, the keys on the dropped entries are reshuffled \
                 among all hosts, old ones included (only {:.0} % of the moved keys went to the \
                 new backend). A larger or smaller ring does not \
                 help: the dropped share stays ~1/4 (`--compare ring:MIN[:MAX]` measures it). \
                 `MAGLEV` fills a fixed-size table from per-host permutations, so a new host \
                 takes slots from the others and leaves the rest where they were.",
                k4 - 1,
                k3 - 1,
                100.0 * shipped_to_new
            );
        }
        let fix = s
            .compared
            .iter()
            .zip(summaries.iter().skip(1))
            .find(|(_, (_, _, max, changed))| *max <= TARGET_MOVEMENT_RATIO && *changed == 0);
        if let Some((policy, (_, med, max, _))) = fix {
            let _ = writeln!(
                w,
                "\nWhat meets the target: the app cluster with\n\n```yaml\n{}```\n\ninstead of \
                 the shipped `{}` (measured above on the same backends in every trial: median \
                 {med:.3}×, worst {max:.3}× the ideal movement).",
                policy.yaml("    "),
                s.shipped
            );
        }
    }
    md
}

/// One change of membership on the cluster, as every node sees it once settled.
#[derive(Debug, Clone, Copy)]
struct Change {
    /// Keys whose instance changed.
    moved: usize,
    /// What the change must move: the joining instance's share (keys / instances after), or
    /// the keys the leaving instance had.
    ideal: f64,
    /// Moved keys that went from one staying instance to another.
    cross: usize,
    /// Keys still in dispute between nodes 30 s after the change (0 when they agreed).
    disputed: usize,
}

/// One trial on the cluster as deployed.
#[derive(Debug, Clone)]
struct ClusterTrial {
    /// Keys per instance with three nodes.
    shares: Vec<usize>,
    /// Keys in dispute with three nodes.
    disputed: usize,
    join: Change,
    leave: Change,
    secs: f64,
}

/// Where the keys go once the nodes agree (and `done` holds), or, if they never do within
/// the harness's bound, the first node's view and the number of keys in dispute.
async fn cluster_owners(
    c: &harness::cluster::Cluster,
    keys: &[String],
    done: impl Fn(&[String]) -> bool,
) -> Result<(Vec<String>, usize)> {
    if let Ok(agreed) = c.settled_owners(keys, done).await {
        return Ok((agreed, 0));
    }
    let all = c.key_owners(keys).await?;
    let first = all[0].clone();
    let disputed = (0..keys.len())
        .filter(|&k| all.iter().any(|o| o[k] != first[k]))
        .count();
    Ok((first, disputed))
}

/// The cluster as `make deploy` builds it (`harness::cluster`: three nodes rendered by their
/// startup script, membership from the Compute Engine fake, the L4 front): every node is
/// asked where every key goes, then a fourth node joins and one of the first three leaves.
async fn cluster_sticky(opts: &Options) -> Result<Vec<ClusterTrial>> {
    use harness::cluster::{Cluster, ClusterOptions};
    let keys: Vec<String> = (0..opts.keys).map(key_name).collect();
    let mut trials = Vec::new();
    for t in 0..opts.cluster_trials {
        let started = Instant::now();
        let mut c = Cluster::start(ClusterOptions::default(), &|_| {}).await?;
        let out = c.renew(false).await?;
        ensure!(out.code == 0, "renewer run failed:\n{}", out.all());
        c.wait_served_everywhere(&Cluster::serial_of(&out)?).await?;
        let (three, disputed) = cluster_owners(&c, &keys, |_| true).await?;
        let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
        let shares = names
            .iter()
            .map(|n| three.iter().filter(|o| *o == n).count())
            .collect();

        let added = c.add_node().await?;
        let (four, join_disputed) = cluster_owners(&c, &keys, |o| o.contains(&added)).await?;
        let moved = (0..keys.len()).filter(|&k| three[k] != four[k]).count();
        let join = Change {
            moved,
            ideal: keys.len() as f64 / 4.0,
            cross: (0..keys.len())
                .filter(|&k| three[k] != four[k] && four[k] != added)
                .count(),
            disputed: join_disputed,
        };

        let gone = names[t % names.len()].clone();
        c.remove_node(&gone).await?;
        let (after, leave_disputed) = cluster_owners(&c, &keys, |o| !o.contains(&gone)).await?;
        let on_gone = four.iter().filter(|o| **o == gone).count();
        let leave = Change {
            moved: (0..keys.len()).filter(|&k| four[k] != after[k]).count(),
            ideal: on_gone as f64,
            cross: (0..keys.len())
                .filter(|&k| four[k] != gone && four[k] != after[k])
                .count(),
            disputed: leave_disputed,
        };
        let trial = ClusterTrial {
            shares,
            disputed,
            join,
            leave,
            secs: started.elapsed().as_secs_f64(),
        };
        eprintln!(
            "ws-bench: cluster trial {}/{}: shares {:?}, disputed {}/{}/{}, join moved {} ({:.3}× ideal, {} cross), leave moved {} ({:.3}× ideal, {} cross)",
            t + 1,
            opts.cluster_trials,
            trial.shares,
            trial.disputed,
            trial.join.disputed,
            trial.leave.disputed,
            trial.join.moved,
            trial.join.moved as f64 / trial.join.ideal,
            trial.join.cross,
            trial.leave.moved,
            trial.leave.moved as f64 / trial.leave.ideal.max(1.0),
            trial.leave.cross
        );
        trials.push(trial);
    }
    Ok(trials)
}

fn render_cluster(opts: &Options, trials: &[ClusterTrial]) -> String {
    let mut md = String::new();
    let w = &mut md;
    if trials.is_empty() {
        return md;
    }
    let _ = writeln!(w, "\n## Sticky routing across the cluster, as deployed\n");
    let _ = writeln!(
        w,
        "`harness::cluster` (what `make demo` runs): three nodes, each Envoy + edge filter + app + \
         `renewer sync` + `renewer members` configured by `deploy/node/startup.sh render` on the \
         `node.env` that `deploy/deploy.sh --plan` writes, membership from the Compute Engine fake \
         (`renewer members --watch 1s`), a stand-in for the network load balancer in front. Every \
         node is asked where each of {} keys goes (`GET /where?room=<key>` on its TLS listener; \
         the room hashes there as the filter's header does), then a fourth node joins, then one of \
         the first three leaves. After each change the nodes are asked again until they agree (at \
         most 30 s: Envoy's workers rebuild their Maglev tables a moment after a change). \
         Command: `{}`; {} trials.\n",
        opts.keys,
        command_line(),
        trials.len()
    );
    let _ = writeln!(
        w,
        "| trial | keys per instance (3 nodes) | keys in dispute (3 nodes / join / leave) | join: moved, × ideal ¼, between old instances | leave: moved, × ideal (its keys), between survivors | seconds |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for (i, t) in trials.iter().enumerate() {
        let _ = writeln!(
            w,
            "| {} | {:?} | {} / {} / {} | {}, {:.3}×, {} | {}, {:.3}×, {} | {:.0} |",
            i + 1,
            t.shares,
            t.disputed,
            t.join.disputed,
            t.leave.disputed,
            t.join.moved,
            t.join.moved as f64 / t.join.ideal,
            t.join.cross,
            t.leave.moved,
            t.leave.moved as f64 / t.leave.ideal.max(1.0),
            t.leave.cross,
            t.secs
        );
    }
    let disputed: usize = trials
        .iter()
        .map(|t| t.disputed + t.join.disputed + t.leave.disputed)
        .sum();
    let worst = |f: fn(&ClusterTrial) -> f64| trials.iter().map(f).fold(0.0, f64::max);
    let join_worst = worst(|t| t.join.moved as f64 / t.join.ideal);
    let leave_worst = worst(|t| t.leave.moved as f64 / t.leave.ideal.max(1.0));
    let cross: usize = trials.iter().map(|t| t.join.cross + t.leave.cross).sum();
    let _ = writeln!(w, "\n### Targets\n");
    let _ = writeln!(w, "| target | measured | result |");
    let _ = writeln!(w, "|---|---|---|");
    let _ = writeln!(
        w,
        "| cluster: every node sends a key to the same instance, also after a join and a leave | {disputed} keys in dispute | {} |",
        verdict(disputed == 0)
    );
    let _ = writeln!(
        w,
        "| cluster: keys moved when a node joins ≤ {TARGET_MOVEMENT_RATIO}× ideal | worst {join_worst:.3}× | {} |",
        verdict(join_worst <= TARGET_MOVEMENT_RATIO)
    );
    let _ = writeln!(
        w,
        "| cluster: keys moved when a node leaves ≤ {TARGET_MOVEMENT_RATIO}× its keys | worst {leave_worst:.3}× | {} |",
        verdict(leave_worst <= TARGET_MOVEMENT_RATIO)
    );
    let _ = writeln!(
        w,
        "\nMaglev is not perfectly minimal: {cross} keys over all trials moved between instances \
         that stayed ({:.3} % of the keys per change), the table being refilled from the hosts' \
         permutations; no Envoy load balancer keeps that at zero while keeping active health \
         checks.",
        100.0 * cross as f64 / (2 * trials.len() * opts.keys) as f64
    );
    md
}

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

fn render_held(opts: &Options, ctx: &Bench, h: &HeldResult) -> String {
    let mut md = String::new();
    let w = &mut md;
    let requested = opts.connections;
    // What the rounds could hold (the same in every round unless descriptor use drifted).
    let held_n = h.rounds.iter().map(|r| r.n).min().unwrap_or(0);
    let capped = held_n < requested;
    let _ = writeln!(w, "## Held WebSocket connections\n");

    let _ = writeln!(w, "### Setup\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let nofile = &ctx.nofile;
    let rows = [
        ("command", format!("`{}`", command_line())),
        ("Envoy", ctx.envoy_version.clone()),
        (
            "config",
            format!(
                "`deploy/envoy/render.sh` defaults ({}); overridden: loopback listeners and \
                 ports, `APP_BACKENDS` ({HELD_BACKENDS} echo backends in this process), test TLS \
                 files, `COOKIE_SECRET`, `ALLOWED_ORIGINS={ORIGIN}`, `ACME_THUMBPRINT`, \
                 `NODE_ID`",
                h.limits
            ),
        ),
        (
            "edge filter",
            format!(
                "{} (`{}`, {} bytes); it counted {} accepted upgrades over all rounds (warm-up \
                 included)",
                if h.filter_present {
                    "present on the listeners"
                } else {
                    "NOT present"
                },
                ctx.wasm.display(),
                ctx.wasm_size,
                h.accepted_counter
            ),
        ),
        (
            "Envoy workers",
            format!(
                "{} (the harness runs `--concurrency {HARNESS_ENVOY_CONCURRENCY}`)",
                h.workers
            ),
        ),
        (
            "open-file limit",
            format!(
                "asked for {} (soft and hard) before spawning Envoy; in force: soft {}, hard {}{} \
                 (Envoy inherits it: its \"Max open files\" {})",
                nofile.wanted,
                nofile.soft,
                nofile.hard,
                nofile
                    .refused
                    .as_deref()
                    .map(|e| format!(
                        "; raising the hard limit was refused ({e}: it needs CAP_SYS_RESOURCE)"
                    ))
                    .unwrap_or_default(),
                h.envoy_nofile
            ),
        ),
        (
            "ephemeral ports",
            fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join("–"))
                .unwrap_or_else(|_| "unknown".to_owned()),
        ),
        (
            "connections",
            if capped {
                format!(
                    "{requested} requested; {held_n} held (the most the open-file limit \
                     allows, see below)"
                )
            } else {
                format!("{requested}")
            },
        ),
        ("load average at start", h.loadavg.clone()),
    ];
    for (k, v) in rows {
        let _ = writeln!(w, "| {k} | {v} |");
    }

    let _ = writeln!(w, "\n### Procedure\n");
    let _ = writeln!(
        w,
        "{} round(s), each with a fresh Envoy and fresh backends. Per round: Envoy starts and \
         its {HELD_BACKENDS} backends turn healthy; warm-up: {} wss connections opened, echoed \
         and closed (V8 compiles the filter per worker, pools fill), then wait until Envoy \
         shows no active downstream connection, 1 s pause. **Before**: Envoy's VmRSS \
         (`/proc/<pid>/status`) and admin `/memory` (`allocated`, `heap_size`). Then N \
         connections ({requested} requested; fewer only if they would not fit in the open-file \
         limits: 2 descriptors per WebSocket in Envoy and 2 here, client and backend, plus \
         what each process already uses, {FD_MARGIN} kept free) are opened with at most {} \
         handshakes in flight, each a TCP connect, a TLS handshake (no session resumption) and \
         an upgrade of `/ws?room=held-<i>` with `Origin: {ORIGIN}` (the filter checks the \
         handshake and sets the affinity key); all are kept open. Then every connection sends \
         one text message at once and checks its echo; 1 s pause. **Held**: memory again, plus \
         Envoy's gauges `http.https.downstream_cx_active`, \
         `http.https.downstream_cx_upgrades_active`, `cluster.app.upstream_cx_active`, Envoy's \
         open fds (`/proc/<pid>/fd`), the upgrades the backends accepted, and the \
         circuit-breaker/overload counters ({}). Memory per connection = (held − before) / N. \
         Then the client closes all (close frame, then the socket), waits until Envoy has no \
         active downstream connection, 1 s pause, and reads memory a third time \
         (informational: what Envoy kept).",
        opts.rounds,
        HELD_WARMUP.min(requested),
        opts.connect_concurrency,
        REFUSAL_STATS
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let _ = writeln!(w, "\n### Raw numbers per round\n");
    let _ = writeln!(
        w,
        "| round | N | opened | echoed | errors | open all (s) | echo all (s) | downstream cx \
         active | upgrades active | upstream cx active | Envoy fds idle → held | backend \
         upgrades | refusals | RSS before → held → closed (KiB) | allocated before → held → \
         closed (bytes) | heap_size before → held (bytes) |"
    );
    let _ = writeln!(
        w,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|---|"
    );
    for (i, r) in h.rounds.iter().enumerate() {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} → {} | {} | {} | {} → {} → {} | {} → {} → {} | {} → {} |",
            i + 1,
            r.n,
            r.opened,
            r.echoed,
            r.errors(),
            r.open_secs,
            r.echo_secs,
            r.stats.downstream_cx_active,
            r.stats.upgrades_active,
            r.stats.upstream_cx_active,
            r.fds.envoy_idle,
            r.stats.envoy_fds,
            r.stats.backend_upgrades,
            r.stats.refusals,
            r.before.rss_kib,
            r.held.rss_kib,
            r.after_close.rss_kib,
            r.before.allocated,
            r.held.allocated,
            r.after_close.allocated,
            r.before.heap_size,
            r.held.heap_size
        );
    }
    let errors: Vec<String> = h
        .rounds
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.last_error
                .as_ref()
                .map(|e| format!("* round {}: {} error(s), last: {e}", i + 1, r.errors()))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(w, "\nErrors:\n\n{}", errors.join("\n"));
    }
    if let Some(r) = h.rounds.first() {
        let _ = writeln!(
            w,
            "\nRefusal counters, round 1: {}. Downstream connections still active after the \
             close, per round: {}.",
            r.stats.refusal_detail,
            h.rounds
                .iter()
                .map(|r| r.left_after_close.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let _ = writeln!(
        w,
        "\n### Summary (median over {} round(s))\n",
        h.rounds.len()
    );
    let col = |f: &dyn Fn(&HeldRound) -> f64| -> Vec<f64> { h.rounds.iter().map(f).collect() };
    let rss = col(&|r| per_connection(r.before.rss_kib * 1024, r.held.rss_kib * 1024, r.n));
    let alloc = col(&|r| per_connection(r.before.allocated, r.held.allocated, r.n));
    let heap = col(&|r| per_connection(r.before.heap_size, r.held.heap_size, r.n));
    let open = col(&|r| r.open_secs);
    let echo = col(&|r| r.echo_secs);
    let rate = col(&|r| r.n as f64 / r.open_secs);
    let med_range = |xs: &[f64], f: &dyn Fn(f64) -> String| {
        let (lo, hi) = range(xs);
        format!("{} ({}–{})", f(median(xs.to_vec())), f(lo), f(hi))
    };
    let _ = writeln!(w, "| figure | median (range) |\n|---|---:|");
    let _ = writeln!(
        w,
        "| Envoy RSS per held connection | {} |",
        med_range(&rss, &kib)
    );
    let _ = writeln!(
        w,
        "| Envoy allocated (tcmalloc in use) per held connection | {} |",
        med_range(&alloc, &kib)
    );
    let _ = writeln!(
        w,
        "| Envoy heap_size per held connection | {} |",
        med_range(&heap, &kib)
    );
    let _ = writeln!(
        w,
        "| Envoy RSS while holding {held_n} | {} |",
        med_range(&col(&|r| r.held.rss_kib as f64), &|x| format!(
            "{:.0} MiB",
            x / 1024.0
        ))
    );
    let _ = writeln!(
        w,
        "| time to open all {held_n} (informational) | {} |",
        med_range(&open, &|x| format!("{x:.2} s"))
    );
    let _ = writeln!(
        w,
        "| handshakes/s while opening (informational) | {} |",
        med_range(&rate, &|x| format!("{x:.0}"))
    );
    let _ = writeln!(
        w,
        "| time for all {held_n} to echo once (informational) | {} |",
        med_range(&echo, &|x| format!("{x:.2} s"))
    );
    let _ = writeln!(
        w,
        "\nThe memory per connection covers both of Envoy's sides of a WebSocket: the TLS \
         downstream connection with its HTTP/1.1 codec, the upgraded stream and the filter's \
         per-stream context, and the plain upstream connection. Timing figures share the 2 \
         cores with the client and the backends (all in this process) and with anything else \
         running: they are indicative."
    );

    let _ = writeln!(w, "\n### Targets\n");
    let _ = writeln!(w, "| target | measured | result |");
    let _ = writeln!(w, "|---|---|---|");
    let all_held = !capped && h.rounds.iter().all(|r| r.all_held(r.n));
    let total_errors: usize = h.rounds.iter().map(HeldRound::errors).sum();
    let worst_held = h
        .rounds
        .iter()
        .map(|r| r.stats.upgrades_active)
        .min()
        .unwrap_or(0);
    let measured = if capped {
        let held_ok = h.rounds.iter().all(|r| r.all_held(r.n));
        format!(
            "not measurable on this machine (open-file limit): {held_n} held instead, {} \
             ({total_errors} errors over {} round(s))",
            if held_ok {
                "all open and echoing"
            } else {
                "NOT all held"
            },
            h.rounds.len()
        )
    } else {
        format!(
            "{total_errors} errors over {} round(s); fewest upgraded connections Envoy held at \
             once: {worst_held}",
            h.rounds.len()
        )
    };
    let _ = writeln!(
        w,
        "| {requested} concurrent WebSockets held through Envoy with the filter, all echo, \
         zero errors (every round) | {measured} | {} |",
        verdict(all_held)
    );
    if let (true, Some(r)) = (capped, h.rounds.first()) {
        let f = &r.fds;
        let _ = writeln!(
            w,
            "\nWhy not {requested}: Envoy holds two sockets per proxied WebSocket (the TLS \
             connection from the client and the connection to the backend), so {requested} \
             WebSockets need {} descriptors in Envoy on top of the {} it had open before \
             (listeners per worker, admin, health-check connections, logs, epoll and event \
             fds): {} in all, above its limit of {}. The limit is inherited from this process, \
             whose hard RLIMIT_NOFILE is {}{}. The same holds for this process (client and \
             backend sockets: {} + {} in use, limit {}). On a machine where the benchmark can \
             raise the limit (root with CAP_SYS_RESOURCE, or `ulimit -Hn` ≥ {}), the same \
             command holds all {requested}; nothing in Envoy's config caps it below \
             `MAX_CONNECTIONS` (100000).",
            2 * requested,
            f.envoy_idle,
            2 * requested + f.envoy_idle,
            f.envoy_limit,
            nofile.hard,
            nofile
                .refused
                .as_deref()
                .map(|e| format!(" and cannot be raised here ({e}; no CAP_SYS_RESOURCE)"))
                .unwrap_or_default(),
            2 * requested,
            f.self_idle,
            f.self_limit,
            nofile_needed(opts)
        );
    }
    md
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn spread_of_an_even_and_an_uneven_assignment() {
        let even = spread(&[0, 1, 2, 0, 1, 2], 3);
        assert_eq!(even.counts, vec![2, 2, 2]);
        assert_eq!(even.max_min, 1.0);
        assert!(even.cv.abs() < 1e-12);

        // Shares 0.5, 0.25, 0.25 against 1/3: deviations 1/6, -1/12, -1/12.
        let uneven = spread(&[0, 0, 1, 2], 3);
        assert_eq!(uneven.counts, vec![2, 1, 1]);
        assert_eq!((uneven.min_share, uneven.max_share), (0.25, 0.5));
        assert_eq!(uneven.max_min, 2.0);
        let rms = ((1.0f64 / 36.0 + 2.0 / 144.0) / 3.0).sqrt();
        assert!((uneven.cv - rms * 3.0).abs() < 1e-12);
    }

    #[test]
    fn movement_counts_keys_that_changed_and_where_they_went() {
        let before = [0, 1, 2, 0, 1, 2, 0, 1];
        let after = [3, 1, 2, 0, 0, 3, 0, 1];
        let m = movement(&before, &after, 3, 4);
        assert_eq!((m.keys, m.moved, m.to_new), (8, 3, 2));
        assert_eq!(m.fraction, 3.0 / 8.0);
        assert_eq!(m.ideal, 0.25);
        assert_eq!(m.ratio, 1.5);

        let same = movement(&before, &before, 3, 4);
        assert_eq!((same.moved, same.to_new, same.ratio), (0, 0, 0.0));
    }

    #[test]
    fn keys_are_fixed_width() {
        assert_eq!(key_name(0), "k00000");
        assert_eq!(key_name(9999), "k09999");
    }

    const CLUSTERS: &str = "\
            virtual_hosts:
            - name: app
              domains: [\"*\"]
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 2s
    lb_policy: RING_HASH
    ring_hash_lb_config:
      # A larger ring spreads keys more evenly.
      minimum_ring_size: 4096
      maximum_ring_size: 65536
    circuit_breakers:
      thresholds:
      - priority: DEFAULT
    load_assignment:
      cluster_name: app
  - name: acme_store
    type: LOGICAL_DNS
    lb_policy: ROUND_ROBIN
";

    #[test]
    fn reads_config_facts() {
        let config = "\
      max_active_downstream_connections: 100000
                    {\"affinity\": {\"header\": \"x-edge-affinity\", \"sources\": [{\"query\": \"room\"}, \"cookie\"], \"cookie\": {}}}
                  hash_policy:
                  - header: { header_name: x-edge-affinity }
        max_connections: 100000
";
        assert_eq!(
            yaml_value(config, "max_active_downstream_connections"),
            "100000"
        );
        assert_eq!(yaml_value(config, "max_connections"), "100000");
        assert_eq!(
            yaml_value(config, "- header"),
            "{ header_name: x-edge-affinity }"
        );
        assert_eq!(yaml_value(config, "nothing"), "?");
        assert_eq!(affinity_sources(config), r#"[{"query": "room"}, "cookie"]"#);
        assert_eq!(affinity_sources("{}"), "?");
    }

    #[test]
    fn reads_the_shipped_policy() {
        let block = app_policy_block(CLUSTERS).unwrap();
        assert_eq!(
            describe_policy(&block),
            "RING_HASH (minimum_ring_size: 4096, maximum_ring_size: 65536)"
        );
        assert_eq!(shipped_kind(&block), Some("RING_HASH"));
        assert_eq!(ring_minimum(&describe_policy(&block)), Some(4096));
        assert_eq!(ring_minimum("MAGLEV"), None);
        assert_eq!(block.indent, "    ");
    }

    #[test]
    fn replaces_only_the_app_clusters_policy() {
        let maglev = with_policy(CLUSTERS, &LbPolicy::Maglev { table: None }).unwrap();
        assert_eq!(
            maglev,
            "\
            virtual_hosts:
            - name: app
              domains: [\"*\"]
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 2s
    lb_policy: MAGLEV
    circuit_breakers:
      thresholds:
      - priority: DEFAULT
    load_assignment:
      cluster_name: app
  - name: acme_store
    type: LOGICAL_DNS
    lb_policy: ROUND_ROBIN
"
        );
        let back = with_policy(
            &maglev,
            &LbPolicy::Ring {
                min: 4096,
                max: Some(65536),
            },
        )
        .unwrap();
        assert_eq!(
            describe_policy(&app_policy_block(&back).unwrap()),
            "RING_HASH (minimum_ring_size: 4096, maximum_ring_size: 65536)"
        );
        let table = with_policy(CLUSTERS, &LbPolicy::Maglev { table: Some(131) }).unwrap();
        assert_eq!(
            describe_policy(&app_policy_block(&table).unwrap()),
            "MAGLEV (table_size: 131)"
        );
        assert!(app_policy_block("  clusters:\n  - name: other\n").is_err());
        assert!(app_policy_block("            - name: app\n    lb_policy: MAGLEV\n").is_err());
    }

    #[test]
    fn parses_lb_policies() {
        assert_eq!(
            LbPolicy::parse("maglev").unwrap(),
            LbPolicy::Maglev { table: None }
        );
        assert_eq!(
            LbPolicy::parse("ring:1024:2048").unwrap(),
            LbPolicy::Ring {
                min: 1024,
                max: Some(2048)
            }
        );
        assert!(LbPolicy::parse("ring").is_err());
        assert!(LbPolicy::parse("ring:x").is_err());
        assert_eq!(parse_compare("none").unwrap(), Compare::List(vec![]));
        assert_eq!(parse_compare("auto").unwrap(), Compare::Auto);
    }

    #[test]
    fn parses_memory_readings() {
        let status = "Name:\tenvoy\nVmPeak:\t  900000 kB\nVmRSS:\t   51234 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vm_rss_kib(status), Some(51234));
        assert_eq!(parse_vm_rss_kib("Name: x\n"), None);
        let memory = r#"{
 "allocated": "8176496",
 "heap_size": "14680064",
 "pageheap_unmapped": "0"
}"#;
        assert_eq!(parse_admin_memory(memory).unwrap(), (8176496, 14680064));
        assert!(parse_admin_memory("{}").is_err());
        assert_eq!(per_connection(1000, 3000, 100), 20.0);
        assert_eq!(per_connection(3000, 1000, 100), -20.0);
    }

    #[test]
    fn parses_options() {
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let o = parse_args(args(
            "--keys 1000 --trials=1 --connections 500 --only held --compare maglev,ring:8192",
        ))
        .unwrap()
        .unwrap();
        assert_eq!((o.keys, o.trials, o.connections), (1000, 1, 500));
        assert_eq!(o.only, Some(Part::Held));
        assert!(o.runs(Part::Held) && !o.runs(Part::Sticky));
        assert_eq!(
            o.compare,
            Compare::List(vec![
                LbPolicy::Maglev { table: None },
                LbPolicy::Ring {
                    min: 8192,
                    max: None
                }
            ])
        );
        assert!(parse_args(args("--help")).unwrap().is_none());
        assert!(parse_args(args("--keys 0")).is_err());
        assert!(parse_args(args("--only both")).is_err());
        assert!(parse_args(args("--bogus")).is_err());
        assert_eq!(nofile_needed(&Options::default()), 200_000);
    }

    #[test]
    fn fd_capacity_counts_two_per_websocket() {
        // Envoy under a hard limit of 20000 with 40 descriptors in use: 10000 do not fit.
        assert_eq!(fd_capacity(20_000, 40, FD_MARGIN), 9_948);
        assert_eq!(fd_capacity(200_000, 40, FD_MARGIN), 99_948);
        assert_eq!(fd_capacity(100, 90, FD_MARGIN), 0);
    }
}
