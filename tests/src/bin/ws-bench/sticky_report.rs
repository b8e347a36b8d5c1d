//! The sticky routing section of the report.

use std::fmt::Write as _;

use harness::bench::{self, median, range, verdict};
use harness::node::ORIGIN;

use crate::args::Options;
use crate::h2::{H2_CONNECTIONS, H2_STREAMS};
use crate::policy::{ring_minimum, LbPolicy};
use crate::setup::{command_line, Bench};
use crate::sticky::{
    PolicyTrial, Spread, StickyResult, AFFINITY_HEADER, DETERMINISM_SAMPLE_EVERY, STICKY_BEFORE,
    TARGET_MOVEMENT_RATIO,
};

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

/// Keys per backend, as "a / b / c".
fn counts(spread: &Spread) -> String {
    spread
        .counts
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" / ")
}

pub fn render_sticky(opts: &Options, ctx: &Bench, s: &StickyResult) -> String {
    let mut md = String::new();
    let w = &mut md;
    let ideal = 1.0 / (STICKY_BEFORE + 1) as f64;
    let _ = writeln!(w, "## Sticky routing: spread and movement\n");

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
    bench::setup_table(w, rows);

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
                counts(&r.spread_before),
                r.spread_before.max_min,
                pct(r.spread_before.cv),
                counts(&r.spread_after),
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
    bench::targets_head(w);
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
