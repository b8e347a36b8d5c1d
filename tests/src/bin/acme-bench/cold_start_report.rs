//! The cold start and size section of the report.

use std::fmt::Write as _;

use harness::bench::{self, mib};

use crate::args::Options;
use crate::cold_start::Measured;
use crate::commands::{serve_args, shown_renewer};
use crate::serve::PROBE_INTERVAL;

/// Target from the issue.
const TARGET_COLD_START_MS: f64 = 50.0;

/// The `## Cold start and size` section.
pub fn render(opts: &Options, measured: &Measured, stale: Option<&str>) -> String {
    let Measured {
        starts,
        sizes,
        loadavg,
    } = measured;
    let mut md = String::new();
    let w = &mut md;
    let ms: Vec<f64> = starts.iter().map(|s| s.ms).collect();
    let med = bench::median(ms.clone());
    let (min, max) = bench::range(&ms);
    let p90 = bench::percentile(ms.clone(), 90.0);
    let _ = writeln!(w, "## Cold start and size\n");
    if let Some(note) = stale {
        let _ = writeln!(w, "**Warning:** {note}.\n");
    }
    let _ = writeln!(
        w,
        "Cloud Run bills an instance from its start, and a request waits for it: the time from \
         `exec` of `renewer serve` to its first `200` on `/healthz`, {} times.\n",
        opts.cold_starts
    );
    let _ = writeln!(w, "### Cold start\n");
    let _ = writeln!(
        w,
        "```sh\n{}\n```\n",
        shown_renewer("<dir>/renewer.toml", &serve_args("<free-port>"))
    );
    let _ = writeln!(
        w,
        "The config is valid, with a file store and one certificate (`letsencrypt-staging`; \
         `serve` does not contact the CA until a pass runs). The clock starts just before \
         `spawn` and stops at the first `HTTP/1.1 200` on `GET /healthz`, probed over a new \
         connection every {} µs (a refused connection costs microseconds on loopback). Each \
         instance is then stopped with SIGTERM and reaped. The binary is in the page cache \
         (warm), as after the first start on a host: the image pull and container creation \
         that Cloud Run adds are not measured. With a `gs://` store the start also builds the \
         Cloud Storage client (not measured here: no credentials, no network). Load average at \
         start: {loadavg}.\n",
        PROBE_INTERVAL.as_micros()
    );
    let _ = writeln!(w, "| runs | median (ms) | p90 (ms) | min (ms) | max (ms) |");
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        w,
        "| {} | {med:.2} | {p90:.2} | {min:.2} | {max:.2} |\n",
        starts.len()
    );
    let raw: Vec<String> = ms.iter().map(|m| format!("{m:.2}")).collect();
    let _ = writeln!(w, "Every run, in order (ms): {}.\n", raw.join(", "));
    let rss: Vec<f64> = starts
        .iter()
        .filter_map(|s| s.peak_rss_kib.map(mib))
        .collect();
    if !rss.is_empty() {
        let _ = writeln!(
            w,
            "Peak RSS of `renewer serve` once ready (VmHWM): median {:.1} MiB.\n",
            bench::median(rss)
        );
    }

    let _ = writeln!(w, "### Sizes\n");
    let _ = writeln!(w, "| artefact | bytes | MiB |");
    let _ = writeln!(w, "|---|---:|---:|");
    let row = |w: &mut String, name: &str, bytes: u64| {
        let _ = writeln!(w, "| {name} | {bytes} | {:.2} |", bytes as f64 / 1048576.0);
    };
    row(
        w,
        "`target/release/renewer` (release profile: LTO, stripped)",
        sizes.renewer,
    );
    match sizes.wasm {
        Some(b) => row(w, "`target/wasm/edge_filter.wasm` (`make wasm`)", b),
        None => {
            let _ = writeln!(
                w,
                "| `target/wasm/edge_filter.wasm` | not built (`make wasm`) | |"
            );
        }
    }
    if let Some((tar, gz)) = sizes.layer {
        row(w, "image: the renewer's own layer, tar", tar);
        row(
            w,
            "image: the renewer's own layer, tar.gz (gzip -6, as pushed)",
            gz,
        );
    }
    let _ = writeln!(
        w,
        "\nThe image's own layer is what the Dockerfile's runtime stage copies \
         (`COPY --from=build /out/ /`): `/usr/local/bin/renewer`, \
         `/opt/acme-edge/edge_filter.wasm` and the one-line `/etc/acme-edge/renewer.toml`, \
         packed here with `tar` and `gzip -6` from the local builds (the image builds the same \
         sources in `rust:1.95-bookworm`, and its wasm with rustup's wasm32 target, so its \
         sizes may differ slightly). It does not \
         include the base image, `gcr.io/distroless/cc-debian12:nonroot`: there is no Docker \
         engine and no network to the registry on this machine, so its layers were not \
         measured and no figure is given for them.\n"
    );

    let _ = writeln!(w, "### Targets\n");
    bench::targets_head(w);
    let _ = writeln!(
        w,
        "| cold start under {TARGET_COLD_START_MS} ms (`exec` → 200 on `/healthz`) | median \
         {med:.2} ms (p90 {p90:.2}, max {max:.2}) over {} runs | {} |\n",
        starts.len(),
        bench::verdict(med < TARGET_COLD_START_MS)
    );
    md
}
