//! The filter-cost section of the report.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use harness::bench::{self, verdict};
use harness::node::ORIGIN;
use harness::wasm_path;

use crate::args::Options;
use crate::held::HeldRound;
use crate::held_report::{held_medians, held_ratio, held_raw, HeldReading};
use crate::measure::{sticky_load, Load, Round, APP_LOAD};
use crate::metrics::{
    order_text, ratio, ratio_cells, ratio_header, variant_median, Ratio, APP_RPS, ECHO, HANDSHAKES,
    METRICS, STICKY_RPS,
};
use crate::nodes::{
    empty_wasm_path, read_floor_wasm_path, Variant, APP_PATH, LUA_SOURCE, N_BACKENDS, N_VARIANTS,
    STICKY_PATH, VARIANTS,
};
use crate::own_work::{own_work_reason, own_work_section, ReadSplit};
use crate::side_report::{side_by_side_section, side_cpu, side_ratio};
use crate::wrk::wrk_args;
use crate::ws_load::ECHO_MESSAGE;

const HELD_WARMUP_TEXT: &str =
    "100 connections opened, echoed and closed (warm-up), wait until Envoy holds none, 1 s pause";

/// Targets from the issues: what the filter may cost against no filter, the empty filter and Lua.
const TARGET_PLAIN_RPS: f64 = 0.95;
const TARGET_WS_ECHO: f64 = 0.97;
const TARGET_OWN_WORK: f64 = 0.95;
const TARGET_HELD_MEMORY: f64 = 1.05;

/// What the report shows about the setup.
pub struct Setup {
    pub ports: [u16; N_VARIANTS],
    pub envoy: PathBuf,
    pub envoy_version: String,
    /// `/proc/loadavg` before the first run: high values mean something else was busy.
    pub loadavg: String,
    /// What the edge filter counted over the whole run.
    pub filter_counters: String,
    /// The sticky load's `Cookie` header.
    pub sticky_cookie: String,
}

fn fmt_num(x: f64, decimals: usize) -> String {
    format!("{x:.decimals$}")
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

pub fn render_report(
    opts: &Options,
    ctx: &Setup,
    rounds: &[Round],
    splits: &[ReadSplit],
    held: &[HeldRound],
    elapsed: Duration,
) -> String {
    let mut md = String::new();
    let w = &mut md;
    let secs = opts.duration.as_secs();
    let wasm = wasm_path();
    let wasm_size = fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    let empty = empty_wasm_path(&wasm);
    let empty_size = fs::metadata(&empty).map(|m| m.len()).unwrap_or(0);
    let _ = writeln!(
        w,
        "## Filter cost: no filter vs an empty wasm filter vs the edge filter vs a Lua equivalent\n"
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
            "empty wasm filter",
            format!(
                "`{}`, {empty_size} bytes: `edge-filter/examples/empty_filter.rs`, a proxy-wasm \
                 HTTP filter whose callbacks do nothing, built like the edge filter (same SDK, \
                 profile and trimmed exports) and loaded in its place with the same plugin \
                 configuration: the floor of any Rust proxy-wasm filter on this Envoy",
                empty.display()
            ),
        ),
        (
            "Lua equivalent",
            format!(
                "`{LUA_SOURCE}` (LuaJIT): the TLS listener's decisions — handshake checks, \
                 Origin allow-list, affinity key from query / signed cookie (HMAC-SHA256 in \
                 Lua) / new signed cookie, from the same rendered source list as the filter \
                 (the last source, the client address, is Envoy's `source_ip` hash for both)"
            ),
        ),
        (
            "config",
            format!(
                "`deploy/envoy/render.sh` defaults with `STICKY_PATHS={STICKY_PATH}`; \
                 `EDGE_FILTER=0` / `1` (and `WASM_PATH` for the empty filter) / `lua`; \
                 {N_BACKENDS} echo backends per variant, each variant its own (and the \
                 read floor its own; all in this process's axum runtime), Maglev cluster"
            ),
        ),
        (
            "rounds",
            format!(
                "{} × {secs} s per metric and variant, order rotating every round, {} s \
                 warm-up per variant and load; fresh Envoys every round (started, checked and \
                 warmed up for it)",
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
    let wrk = |load| {
        let [b, e, f, l] = ctx.ports;
        let args: Vec<String> = wrk_args(opts, opts.duration, b, load)
            .into_iter()
            .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
            .collect();
        format!(
            "`wrk {}` (no filter; the empty wasm, edge filter and Lua Envoys listen on {e}, {f} \
             and {l})",
            args.join(" ")
        )
    };
    let _ = writeln!(
        w,
        "* **app route** (HTTP/1.1 keep-alive over TLS, `GET {APP_PATH}`): the shipped \
         config skips the filter on this route and hashes natively on the same sources: \
         {}",
        wrk(APP_LOAD)
    );
    let _ = writeln!(
        w,
        "* **sticky route** (`GET {STICKY_PATH}`, in `STICKY_PATHS`, with a browser's affinity \
         cookie as the edge filter issued it): the filter runs on every request (reads the \
         headers, finds no room, verifies the cookie's MAC, sets the key Envoy hashes). A \
         request there with no Cookie and no Origin skips the filter, as on the app route \
         (`render.sh`'s `sticky_bypass_route`): {}",
        wrk(sticky_load(&ctx.sticky_cookie))
    );
    let _ = writeln!(
        w,
        "* **WebSocket echo**: {} wss connections (`/ws?room=echo-<i>`, `Origin: {ORIGIN}`), \
         opened before the clock starts, each sending a {}-byte text message and waiting for \
         its echo, back to back for {secs} s; messages/s = echoes received in the window / {secs}; \
         Envoy's CPU is read at the window's start and end (the handshakes before it and the \
         closes after it are not counted).",
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
        "* **memory per held WebSocket**: per round and variant (order rotating), a fresh \
         Envoy; {HELD_WARMUP_TEXT}; then Envoy's memory, {} wss connections opened (`/ws?room=held-<i>` \
         with `Origin`, at most 100 handshakes in flight) and echoed once each, 1 s pause, \
         memory again; per connection = (held − before) / held. RSS (`VmRSS`) counts \
         everything, V8's heaps and the wasm linear memory included; `allocated` is \
         tcmalloc's in-use bytes (Envoy's C++ objects only).\n",
        opts.held_connections
    );
    let _ = writeln!(
        w,
        "Before measuring, the edge filter and Lua are checked to refuse a foreign `Origin` \
         with 403 (the no-filter and empty-filter Envoys let it through).\n"
    );

    let _ = writeln!(w, "### Raw numbers\n");
    let labels: Vec<&str> = VARIANTS.iter().map(|v| v.label()).collect();
    let _ = writeln!(w, "| metric | round (order) | {} |", labels.join(" | "));
    let _ = writeln!(w, "|---|---|{}", "---:|".repeat(N_VARIANTS));
    for m in &METRICS {
        for (i, r) in rounds.iter().enumerate() {
            let cells: Vec<String> = VARIANTS
                .iter()
                .map(|&v| {
                    let s = &r.get(v).back;
                    match (m.errors)(s) {
                        0 => fmt_num((m.get)(s), m.decimals),
                        n => format!("{} ({n} errors)", fmt_num((m.get)(s), m.decimals)),
                    }
                })
                .collect();
            let _ = writeln!(
                w,
                "| {} | {} ({}) | {} |",
                m.name,
                i + 1,
                order_text(&r.order),
                cells.join(" | ")
            );
        }
    }
    if !held.is_empty() {
        held_raw(w, held);
    }

    let _ = writeln!(w, "\n### Medians over {} round(s)\n", rounds.len());
    let _ = writeln!(
        w,
        "| metric | {} | {} |",
        labels.join(" | "),
        ratio_header()
    );
    let _ = writeln!(w, "|---|{}", "---:|".repeat(N_VARIANTS + 5));
    for m in &METRICS {
        let medians: Vec<String> = VARIANTS
            .iter()
            .map(|&v| fmt_num(variant_median(m, rounds, v), m.decimals))
            .collect();
        let _ = writeln!(
            w,
            "| {} | {} | {} |",
            m.name,
            medians.join(" | "),
            ratio_cells(|num, den| ratio(m, rounds, num, den))
        );
    }
    if !held.is_empty() {
        held_medians(w, held);
    }
    let _ = writeln!(
        w,
        "\nRatios are the median of the per-round ratios, with their range in brackets (how \
         far single rounds scatter, i.e. how fine a difference this machine resolves). For \
         latency and memory, above 1 means more."
    );
    side_by_side_section(w, rounds, &opts.loads, opts.duration);
    own_work_section(
        w,
        splits,
        &read_floor_wasm_path(&wasm).display().to_string(),
    );

    let _ = writeln!(w, "\n### Targets\n");
    let _ = writeln!(w, "| target | measured (median round ratio) | result |");
    let _ = writeln!(w, "|---|---:|---|");
    let mut misses = Vec::new();
    for t in targets() {
        if !t.load.ran(&opts.loads) {
            let _ = writeln!(w, "| {} | not run (`--loads`) | — |", t.name);
            continue;
        }
        let r = t.ratio(rounds);
        let met = t.bound.met(r.median);
        let measured = format!(
            "{:.3} (back to back: {:.3})",
            r.median,
            ratio(&METRICS[t.back_metric()], rounds, t.num, t.den).median
        );
        let _ = writeln!(w, "| {} | {measured} | {} |", t.name, verdict(met));
        if !met {
            misses.push(miss_reason(&t, r, rounds, splits));
        }
    }
    if held.is_empty() {
        let _ = writeln!(
            w,
            "| memory per held WebSocket, Envoy RSS (edge filter / no filter ≤ 1.05) | not run (`--loads`) | — |"
        );
    } else {
        let r = held_ratio(held, Variant::Wasm, Variant::Baseline, HeldReading::Rss);
        let met = r.median <= TARGET_HELD_MEMORY;
        let name = "memory per held WebSocket, Envoy RSS (edge filter / no filter ≤ 1.05)";
        let _ = writeln!(w, "| {name} | {:.3} | {} |", r.median, verdict(met));
        if !met {
            misses.push(format!(
                "* {name}: {:.3} (rounds {:.3}–{:.3}); tcmalloc's `allocated` alone gives {:.3}.",
                r.median,
                r.min,
                r.max,
                held_ratio(
                    held,
                    Variant::Wasm,
                    Variant::Baseline,
                    HeldReading::Allocated
                )
                .median
            ));
        }
    }
    if !misses.is_empty() {
        let _ = writeln!(w, "\nWhy missed (measured):\n\n{}", misses.join("\n"));
    }
    let error_notes: Vec<String> = rounds
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            VARIANTS.into_iter().flat_map(move |v| {
                let s = r.get(v);
                [
                    ("echo", &s.back.echo),
                    ("handshakes", &s.back.handshakes),
                    ("echo side by side", &s.side.echo),
                    ("handshakes side by side", &s.side.handshakes),
                ]
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
        .chain(held.iter().enumerate().flat_map(|(i, r)| {
            VARIANTS.into_iter().filter_map(move |v| {
                let s = r.get(v);
                s.last_error.as_ref().map(|e| {
                    format!(
                        "* held round {} {}: {} error(s), last: {e}",
                        i + 1,
                        v.label(),
                        s.errors
                    )
                })
            })
        }))
        .collect();
    if !error_notes.is_empty() {
        let _ = writeln!(w, "\n### Errors\n\n{}", error_notes.join("\n"));
    }
    let _ = writeln!(w);
    md
}

/// How a ratio is judged.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// Strictly above.
    Above(f64),
    /// At least.
    AtLeast(f64),
}

impl Bound {
    fn met(self, x: f64) -> bool {
        match self {
            Bound::Above(min) => x > min,
            Bound::AtLeast(min) => x >= min,
        }
    }

    fn threshold(self) -> f64 {
        match self {
            Bound::Above(x) | Bound::AtLeast(x) => x,
        }
    }
}

/// A throughput target: `num` / `den` in operations of `load` per Envoy CPU-second, side by
/// side ([`side_ratio`]); the back-to-back ratio of the same load is shown next to it.
struct Target {
    name: &'static str,
    load: Load,
    num: Variant,
    den: Variant,
    bound: Bound,
}

impl Target {
    fn ratio(&self, rounds: &[Round]) -> Ratio {
        side_ratio(rounds, self.load, self.num, self.den)
    }

    /// The back-to-back throughput metric of the same load.
    fn back_metric(&self) -> usize {
        match self.load {
            Load::App => APP_RPS,
            Load::Sticky => STICKY_RPS,
            Load::Echo => ECHO,
            Load::Handshakes => HANDSHAKES,
        }
    }

    /// Envoy's CPU per operation of the same load side by side, median per variant (for the
    /// reason of a miss).
    fn cpu_per_op(&self, rounds: &[Round]) -> (String, Vec<(Variant, f64)>) {
        (
            format!(
                "Envoy CPU µs per {}, {} side by side",
                self.load.op(),
                self.load.label()
            ),
            VARIANTS
                .map(|v| (v, side_cpu(rounds, self.load, v)))
                .to_vec(),
        )
    }
}

fn targets() -> [Target; 7] {
    use Variant::{Baseline, Empty, Lua, Wasm};
    let t = |name, load, num, den, bound| Target {
        name,
        load,
        num,
        den,
        bound,
    };
    [
        t(
            "sticky route requests/s: faster than Lua (edge filter / Lua > 1)",
            Load::Sticky,
            Wasm,
            Lua,
            Bound::Above(1.0),
        ),
        t(
            "sticky route requests/s: the filter's own work near free (edge filter / empty \
             wasm ≥ 0.95)",
            Load::Sticky,
            Wasm,
            Empty,
            Bound::AtLeast(TARGET_OWN_WORK),
        ),
        t(
            "app route requests/s: edge filter / Lua ≥ 1",
            Load::App,
            Wasm,
            Lua,
            Bound::AtLeast(1.0),
        ),
        t(
            "app route requests/s at most 5% below no filter (edge filter / no filter ≥ 0.95)",
            Load::App,
            Wasm,
            Baseline,
            Bound::AtLeast(TARGET_PLAIN_RPS),
        ),
        t(
            "WebSocket handshakes/s: edge filter / Lua ≥ 1",
            Load::Handshakes,
            Wasm,
            Lua,
            Bound::AtLeast(1.0),
        ),
        t(
            "WebSocket echo messages/s: edge filter / Lua ≥ 1",
            Load::Echo,
            Wasm,
            Lua,
            Bound::AtLeast(1.0),
        ),
        t(
            "WebSocket echo at least 97% of no filter (edge filter / no filter ≥ 0.97)",
            Load::Echo,
            Wasm,
            Baseline,
            Bound::AtLeast(TARGET_WS_ECHO),
        ),
    ]
}

/// A missed target, with what was measured: the rounds' scatter against the threshold, and
/// Envoy's CPU per operation of the same load in each variant.
fn miss_reason(t: &Target, r: Ratio, rounds: &[Round], splits: &[ReadSplit]) -> String {
    let threshold = t.bound.threshold();
    let scatter = if r.max >= threshold {
        format!(
            "single rounds ranged {:.3}–{:.3}, across the threshold {threshold}: the difference \
             is within what this machine resolves in {} round(s)",
            r.min,
            r.max,
            rounds.len()
        )
    } else {
        format!(
            "every round was below {threshold} ({:.3}–{:.3})",
            r.min, r.max
        )
    };
    let (cpu_name, cpu) = t.cpu_per_op(rounds);
    let per_variant: Vec<String> = cpu
        .iter()
        .map(|(v, us)| format!("{} {us:.1} µs", v.label()))
        .collect();
    let mut reason = format!(
        "* {}: {:.3}; {scatter}. {cpu_name} (median): {}.",
        t.name,
        r.median,
        per_variant.join(", ")
    );
    let context = match (t.num, t.den) {
        (Variant::Wasm, Variant::Empty) if t.load == Load::Sticky => own_work_reason(splits),
        (Variant::Wasm, den @ (Variant::Lua | Variant::Baseline)) => {
            Some(runtime_reason(t.load, den, rounds))
        }
        _ => None,
    };
    if let Some(context) = context {
        reason.push(' ');
        reason.push_str(&context);
    }
    reason
}

/// For a miss of the edge filter against Lua or no filter (`den`): where the empty filter,
/// which does nothing, stands against the same variant on the same load, and whether the
/// edge filter differs from the empty one beyond the rounds' scatter.
fn runtime_reason(load: Load, den: Variant, rounds: &[Round]) -> String {
    let empty = side_ratio(rounds, load, Variant::Empty, den);
    let own = side_ratio(rounds, load, Variant::Wasm, Variant::Empty);
    let idle = match load {
        Load::App => {
            "On this route Envoy does not create the filter (it is disabled for the route), \
             so neither wasm module runs. "
        }
        Load::Echo => {
            "WebSocket frames never enter the filter (it does not export the body \
             callbacks). "
        }
        Load::Sticky | Load::Handshakes => "",
    };
    let spans = |r: &Ratio| r.min <= 1.0 && r.max >= 1.0;
    let own_verdict = if spans(&own) {
        "the edge filter does not differ from the empty one beyond the rounds' scatter"
    } else {
        "the edge filter differs from the empty one beyond the rounds' scatter"
    };
    let den_name = den.label();
    let empty_verdict = if spans(&empty) {
        format!("the empty one does not differ from {den_name} beyond it either")
    } else if empty.max < 1.0 {
        format!("the empty one is below {den_name} in every round: the wasm runtime's price")
    } else {
        format!("the empty one is above {den_name} in every round")
    };
    format!(
        "{idle}The empty wasm filter, which does nothing, keeps {:.3} of {den_name} on this \
         load (rounds {:.3}–{:.3}), and the edge filter {:.3} of the empty one (rounds \
         {:.3}–{:.3}): {own_verdict}; {empty_verdict}.",
        empty.median, empty.min, empty.max, own.median, own.min, own.max
    )
}
