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
//!   another ~2N: [`nofile::raise_nofile_limit`] raises the limit before Envoy is spawned
//!   (children inherit it). Where the hard limit cannot be raised (no CAP_SYS_RESOURCE, e.g. in
//!   a container) and is too low, the round holds as many as fit ([`nofile::fd_capacity`]) and
//!   the report says why the requested number was not measured.
//!
//! The modules: [`args`] (the command line), [`nofile`] (the open-file limit), [`setup`]
//! (what both parts share: a node's config and Envoy), [`policy`] (reading and replacing the
//! app cluster's lb policy in a rendered config), [`h2`] (the sticky passes' client),
//! [`sticky`] and [`cluster`] (sticky routing on one Envoy and across the cluster),
//! [`held`] (held connections, opened with `harness::bench::open_many`), and one `*_report` module per section.

mod args;
mod cluster;
mod cluster_report;
mod h2;
mod held;
mod held_report;
mod nofile;
mod policy;
mod setup;
mod sticky;
mod sticky_report;

use std::fs;

use anyhow::{ensure, Result};
use harness::bench::{self, emit_report, envoy_version, loadavg};
use harness::node::HOST;
use harness::{envoy_bin, wasm_path, TlsFiles};

use crate::args::{Options, Part, USAGE};
use crate::nofile::{nofile_needed, raise_nofile_limit, NofileLimit};
use crate::setup::Bench;

fn main() {
    bench::main("ws-bench", USAGE, |opts: Options| {
        // Before the runtime and any child: Envoy inherits the limit when the harness spawns it.
        let nofile = raise_nofile_limit(nofile_needed(&opts))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("build the tokio runtime");
        let result = runtime.block_on(run(&opts, nofile));
        drop(runtime);
        result
    });
}

/// Both parts (or the one `--only` asks for), then the report.
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
        let cluster = cluster::cluster_sticky(opts).await?;
        let sticky = sticky::sticky(opts, &ctx).await?;
        report.push_str(&sticky_report::render_sticky(opts, &ctx, &sticky));
        report.push_str(&cluster_report::render_cluster(opts, &cluster));
    }
    if opts.runs(Part::Held) {
        let held = held::held(opts, &ctx).await?;
        if !report.is_empty() {
            report.push('\n');
        }
        report.push_str(&held_report::render_held(opts, &ctx, &held));
    }
    emit_report(&report, opts.out.as_deref())
}
