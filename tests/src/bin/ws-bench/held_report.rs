//! The held connections section of the report.

use std::fmt::Write as _;
use std::fs;

use harness::bench::{self, median, per_connection, range, verdict};
use harness::node::ORIGIN;

use crate::args::Options;
use crate::held::{
    HeldResult, HeldRound, HARNESS_ENVOY_CONCURRENCY, HELD_BACKENDS, HELD_WARMUP, REFUSAL_STATS,
};
use crate::nofile::{nofile_needed, FD_MARGIN};
use crate::setup::{command_line, Bench};

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

pub fn render_held(opts: &Options, ctx: &Bench, h: &HeldResult) -> String {
    let mut md = String::new();
    let w = &mut md;
    let requested = opts.connections;
    // What the rounds could hold (the same in every round unless descriptor use drifted).
    let held_n = h.rounds.iter().map(|r| r.n).min().unwrap_or(0);
    let capped = held_n < requested;
    let _ = writeln!(w, "## Held WebSocket connections\n");

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
    bench::setup_table(w, rows);

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
    bench::targets_head(w);
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
