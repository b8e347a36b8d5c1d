//! The ACME clients' section of the report: setup, commands, every run, medians, ratios and
//! targets.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use harness::bench::{self, mib};

use crate::args::Options;
use crate::clients::{AcmeSetup, CaseResult, ToolRep};
use crate::commands::{
    certbot_cmd, default_concurrency, lego_cmd, renewer_config, serve_args, show, shown_renewer,
    Endpoints,
};
use crate::tools::{Tool, Tools, PEERS, TOOLS};

/// Target from the issue.
const TARGET_MANY_SPEEDUP: f64 = 3.0;

/// Medians and maxima of one tool over the repetitions.
#[derive(Debug, Clone, Copy)]
struct ToolSummary {
    one_s: f64,
    many_s: f64,
    peak_rss_kib: u64,
}

fn summarize(results: &[ToolRep], tool: Tool) -> ToolSummary {
    let of = |f: &dyn Fn(&ToolRep) -> f64| {
        bench::median(results.iter().filter(|r| r.tool == tool).map(f).collect())
    };
    ToolSummary {
        one_s: of(&|r| r.one.wall.as_secs_f64()),
        many_s: of(&|r| r.many.wall.as_secs_f64()),
        peak_rss_kib: results
            .iter()
            .filter(|r| r.tool == tool)
            .map(|r| r.one.peak_rss_kib.max(r.many.peak_rss_kib))
            .max()
            .unwrap_or(0),
    }
}

/// The peer with the smallest value of `key`, and that value.
fn fastest_peer(results: &[ToolRep], key: fn(&ToolSummary) -> f64) -> (Tool, f64) {
    PEERS
        .into_iter()
        .map(|t| (t, key(&summarize(results, t))))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((Tool::Certbot, f64::NAN))
}

/// The `## ACME clients` section.
pub fn render(
    opts: &Options,
    tools: &Tools,
    setup: &AcmeSetup,
    results: &[ToolRep],
    stale: Option<&str>,
) -> String {
    let n = opts.certs;
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "## ACME clients: renewer vs lego vs certbot\n");
    let _ = writeln!(
        w,
        "Wall time to issue 1 certificate and {n} certificates from one Pebble, and peak memory, \
         for the renewer and two widely used ACME clients. Every figure is from this run; times \
         are medians of {} repetition(s).\n",
        opts.reps
    );
    if let Some(note) = stale {
        let _ = writeln!(w, "**Warning:** {note}.\n");
    }

    let many_key = format!("{n} certificates");
    let rows: Vec<(&str, String)> = vec![
        (
            "renewer",
            format!(
                "commit `{}`, release build (`target/release/renewer`, what the image ships); \
                 `renewal.concurrency` at its default ({})",
                setup.commit,
                default_concurrency()
            ),
        ),
        ("lego", setup.lego_version.clone()),
        (
            "certbot",
            format!("{} (PyPI, project venv)", setup.certbot_version),
        ),
        (
            "CA",
            format!(
                "Pebble {} on 127.0.0.1 with pebble-challtestsrv as its DNS (every name → \
                 127.0.0.1); `PEBBLE_VA_NOSLEEP=1` (no random 0–5 s wait before validating), \
                 `PEBBLE_WFE_NONCEREJECT=0`, `PEBBLE_AUTHZREUSE=0`; Pebble 2.4 sends no \
                 `Retry-After`",
                setup.pebble_version
            ),
        ),
        (
            "fresh authorizations",
            "every issuance is for names never ordered before \
             (`r<rep>-<one|n{n}>-c<i>.<tool>.bench.test`), so no authorization is reused \
             whatever Pebble's reuse setting"
                .replace("{n}", &n.to_string()),
        ),
        (
            "key type",
            "ECDSA P-256 for every certificate (lego `--key-type ec256`, certbot `--key-type \
             ecdsa --elliptic-curve secp256r1`, renewer `key_type = \"ecdsa-p256\"`)"
                .into(),
        ),
        (
            "HTTP-01 responders",
            "as each tool ships: lego's and certbot's standalone servers, inside the timed \
             process; the renewer's `renewer serve` (`GET /.well-known/acme-challenge/{token}` \
             from the store), started before and stopped after each timed run, its memory \
             reported apart"
                .into(),
        ),
        (
            "accounts",
            "registered once per tool before anything is timed (`renewer account`, `certbot \
             register`, lego's first `run`), then one untimed warm-up issuance per tool; each \
             case starts in a fresh directory holding a copy of the account"
                .into(),
        ),
        (
            &many_key,
            format!(
                "renewer: one `renewer run` with {n} `[[certificates]]` (c001…c{n:03}); lego and \
                 certbot: {n} invocations in a row, one certificate each (a standalone \
                 responder holds the HTTP-01 port for its whole invocation, so that is how \
                 their users issue several certificates); time = sum of the invocations"
            ),
        ),
        (
            "repetitions",
            format!(
                "{}; the tools take turns and the order rotates each repetition (renewer, lego, \
                 certbot; lego, certbot, renewer; …)",
                opts.reps
            ),
        ),
        (
            "timing",
            "wall time from spawn to exit of each process, measured by the benchmark; peak RSS \
             from GNU time (`%M`, `wait4`'s `ru_maxrss`), which wraps every timed process"
                .into(),
        ),
        (
            "load average (start → end)",
            format!("{} → {}", setup.loadavg_start, setup.loadavg_end),
        ),
        ("total time", format!("{:.0} s", setup.total.as_secs_f64())),
    ];
    bench::setup_table(w, rows);

    let _ = writeln!(w, "\n### Commands\n");
    let ep = Endpoints::placeholders();
    let dir = Path::new("<case-dir>");
    let _ = writeln!(w, "```sh");
    let _ = writeln!(
        w,
        "# renewer: responder, then the timed run (<case-dir>/renewer.toml below)"
    );
    let _ = writeln!(
        w,
        "{} &",
        shown_renewer("<case-dir>/renewer.toml", &serve_args("<http-port>"))
    );
    let _ = writeln!(w, "{}", shown_renewer("<case-dir>/renewer.toml", &["run"]));
    let _ = writeln!(w, "# lego, once per certificate");
    let _ = writeln!(w, "{}", show(&lego_cmd(&tools.lego, &ep, dir, "<domain>")));
    let _ = writeln!(w, "# certbot, once per certificate");
    let _ = writeln!(
        w,
        "{}",
        show(&certbot_cmd(&tools.certbot, &ep, dir, "<domain>"))
    );
    let _ = writeln!(
        w,
        "# each timed process runs as: /usr/bin/time --format=%M --output <file> <command>"
    );
    let _ = writeln!(w, "```\n");
    let sample = renewer_config(
        &ep,
        "<case-dir>/store",
        &[
            (
                "c001".into(),
                format!("r<rep>-n{n}-c001.renewer.bench.test"),
            ),
            (
                "c002".into(),
                format!("r<rep>-n{n}-c002.renewer.bench.test"),
            ),
        ],
    );
    let _ = writeln!(
        w,
        "`<case-dir>/renewer.toml` ({n} certificates: c001 … c{n:03}):\n"
    );
    let _ = writeln!(w, "```toml\n{}# … up to c{n:03}\n```\n", sample);

    let _ = writeln!(w, "### Raw numbers\n");
    let _ = writeln!(
        w,
        "| rep | turn | tool | 1 cert (s) | {n} certs (s) | peak RSS 1 cert (MiB) | peak RSS {n} certs (MiB) | processes for {n} |"
    );
    let _ = writeln!(w, "|---:|---:|---|---:|---:|---:|---:|---:|");
    for r in results {
        let responder = |c: &CaseResult| match c.responder_rss_kib {
            Some(k) => format!(" (+ serve {:.1})", mib(k)),
            None => String::new(),
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.3} | {:.3} | {:.1}{} | {:.1}{} | {} |",
            r.rep,
            r.position,
            r.tool.name(),
            r.one.wall.as_secs_f64(),
            r.many.wall.as_secs_f64(),
            mib(r.one.peak_rss_kib),
            responder(&r.one),
            mib(r.many.peak_rss_kib),
            responder(&r.many),
            r.many.invocations.len()
        );
    }
    let _ = writeln!(
        w,
        "\n\"+ serve\" is the peak RSS of `renewer serve` answering the challenges during that \
         run (the peers' responders are inside their own process, hence in their figure).\n"
    );

    let _ = writeln!(w, "### Single invocations of the peers\n");
    let _ = writeln!(
        w,
        "Every lego and certbot process of every repetition (1 and {n} certificates), one \
         certificate each:\n"
    );
    let _ = writeln!(
        w,
        "| tool | processes | median (s) | min (s) | max (s) | under 1 s |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
    for peer in PEERS {
        let walls: Vec<f64> = results
            .iter()
            .filter(|r| r.tool == peer)
            .flat_map(|r| r.one.invocations.iter().chain(&r.many.invocations))
            .map(Duration::as_secs_f64)
            .collect();
        let (min, max) = bench::range(&walls);
        let fast = walls.iter().filter(|&&s| s < 1.0).count();
        let _ = writeln!(
            w,
            "| {} | {} | {:.3} | {min:.3} | {max:.3} | {fast} |",
            peer.name(),
            walls.len(),
            bench::median(walls.clone()),
        );
    }
    let _ = writeln!(
        w,
        "\nlego checks the authorization once right after accepting the challenge, and only \
         if it is not valid yet waits 5 s (its default when the CA sends no `Retry-After`, \
         which Pebble 2.4 never does) before checking again. Pebble validates in the \
         background, without delay here, so now and then it has finished by lego's first \
         check, and lego is done in well under a second (the last column). The renewer always waits 250 ms before \
         its first check.\n"
    );

    let _ = writeln!(w, "### Medians over {} repetition(s)\n", opts.reps);
    let _ = writeln!(
        w,
        "| tool | 1 cert (s) | {n} certs (s) | per certificate in the {n} case (s) | peak RSS, max (MiB) |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    for tool in TOOLS {
        let s = summarize(results, tool);
        let _ = writeln!(
            w,
            "| {} | {:.3} | {:.2} | {:.3} | {:.1} |",
            tool.name(),
            s.one_s,
            s.many_s,
            s.many_s / n as f64,
            mib(s.peak_rss_kib)
        );
    }
    let serve_rss = results
        .iter()
        .filter_map(|r| r.one.responder_rss_kib.max(r.many.responder_rss_kib))
        .max();
    if let Some(k) = serve_rss {
        let _ = writeln!(
            w,
            "\n`renewer serve` as the responder peaked at {:.1} MiB (max over all runs).",
            mib(k)
        );
    }

    let renewer = summarize(results, Tool::Renewer);
    let certbot = summarize(results, Tool::Certbot);
    let (peer_one, peer_one_s) = fastest_peer(results, |s| s.one_s);
    let (peer_many, peer_many_s) = fastest_peer(results, |s| s.many_s);
    let _ = writeln!(w, "\n### Ratios (fastest peer / renewer)\n");
    let _ = writeln!(
        w,
        "| case | fastest peer | its median (s) | renewer (s) | ratio |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|");
    let _ = writeln!(
        w,
        "| 1 certificate | {} | {:.3} | {:.3} | {:.2}× |",
        peer_one.name(),
        peer_one_s,
        renewer.one_s,
        peer_one_s / renewer.one_s
    );
    let _ = writeln!(
        w,
        "| {n} certificates | {} | {:.2} | {:.2} | {:.1}× |",
        peer_many.name(),
        peer_many_s,
        renewer.many_s,
        peer_many_s / renewer.many_s
    );
    for peer in PEERS {
        let s = summarize(results, peer);
        let _ = writeln!(
            w,
            "| peak RSS: {} / renewer | | {:.1} MiB | {:.1} MiB | {:.1}× |",
            peer.name(),
            mib(s.peak_rss_kib),
            mib(renewer.peak_rss_kib),
            s.peak_rss_kib as f64 / renewer.peak_rss_kib.max(1) as f64
        );
    }

    let _ = writeln!(w, "\n### Targets\n");
    bench::targets_head(w);
    let speedup = peer_many_s / renewer.many_s;
    let _ = writeln!(
        w,
        "| {n} certificates at least {TARGET_MANY_SPEEDUP}× faster than the fastest peer | \
         {} {:.2} s / renewer {:.2} s = {:.1}× | {} |",
        peer_many.name(),
        peer_many_s,
        renewer.many_s,
        speedup,
        bench::verdict(speedup >= TARGET_MANY_SPEEDUP)
    );
    let _ = writeln!(
        w,
        "| 1 certificate no slower than the fastest peer | renewer {:.3} s vs {} {:.3} s | {} |",
        renewer.one_s,
        peer_one.name(),
        peer_one_s,
        bench::verdict(renewer.one_s <= peer_one_s)
    );
    let _ = writeln!(
        w,
        "| renewer peak RSS below certbot's | renewer {:.1} MiB vs certbot {:.1} MiB | {} |",
        mib(renewer.peak_rss_kib),
        mib(certbot.peak_rss_kib),
        bench::verdict(renewer.peak_rss_kib < certbot.peak_rss_kib)
    );
    let _ = writeln!(
        w,
        "\nWhere the time goes: lego's 5 s wait (above; with a CA that sends `Retry-After` it \
         follows that instead). certbot checks the authorization every second and waits 1 s \
         before it first checks the finalized order (the `acme` package's `client.py`), and \
         starts a Python interpreter in every invocation. The renewer checks the order 250 ms \
         after the challenges are accepted, then ×1.5 each time (the same after finalizing), \
         and renews {} certificates at a time.\n",
        default_concurrency()
    );
    md
}
