//! The filter-cost section of the report.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use harness::bench::{self, verdict};
use harness::node::ORIGIN;
use harness::wasm_path;

use crate::args::Options;
use crate::measure::Round;
use crate::metrics::{
    ratio, variant_median, Ratio, APP_RPS, ECHO, HANDSHAKES, METRICS, STICKY_RPS,
};
use crate::nodes::{Variant, APP_PATH, LUA_SOURCE, N_BACKENDS, STICKY_PATH, VARIANTS};
use crate::wrk::wrk_args;
use crate::ws_load::ECHO_MESSAGE;

/// Targets from the issue.
const TARGET_PLAIN_RPS: f64 = 0.95;
const TARGET_WS_ECHO: f64 = 0.97;

/// What the report shows about the setup.
pub struct Setup {
    pub ports: [u16; 3],
    pub envoy: PathBuf,
    pub envoy_version: String,
    /// `/proc/loadavg` before the first run: high values mean something else was busy.
    pub loadavg: String,
    /// What the edge filter counted over the whole run.
    pub filter_counters: String,
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

pub fn render_report(opts: &Options, ctx: &Setup, rounds: &[Round], elapsed: Duration) -> String {
    let mut md = String::new();
    let w = &mut md;
    let secs = opts.duration.as_secs();
    let wasm = wasm_path();
    let wasm_size = fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    let _ = writeln!(
        w,
        "## Filter cost: no filter vs the edge filter vs a Lua equivalent\n"
    );

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
    bench::setup_table(w, rows);
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
