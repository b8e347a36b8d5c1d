//! Memory per held WebSocket, per variant: what a filter adds to every connection Envoy keeps
//! open (its per-stream context lives as long as the upgraded stream).
//!
//! Each round starts a fresh Envoy per variant (the order rotating), so every reading starts
//! from the same state: an Envoy that already held and released thousands of connections
//! keeps their memory in its allocator, and the next batch would reuse it unseen.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use harness::bench::{close_all, echo_all, envoy_memory, open_many, per_connection, Memory};
use harness::{EchoBackend, Envoy, TlsFiles};
use tokio::time::Instant;

use crate::args::Options;
use crate::measure::order;
use crate::nodes::{start_node, Backends, PerVariant, Variant};

/// Connections opened, echoed and closed before the "before" reading: V8 compiles the module
/// per worker, TLS and connection pools fill up.
const WARMUP: usize = 100;
/// Handshakes in flight while opening.
const OPEN_CONCURRENCY: usize = 100;

/// One variant's reading in one round.
#[derive(Debug, Clone, Default)]
pub struct HeldSample {
    /// Connections open and echoing when memory was read.
    pub held: usize,
    /// Connections that failed to open or echo.
    pub errors: usize,
    pub last_error: Option<String>,
    pub before: Memory,
    pub during: Memory,
}

impl HeldSample {
    /// Envoy's resident memory per held connection, bytes: everything, V8's heaps and the
    /// wasm linear memory included (they are not tcmalloc's).
    pub fn rss_per_connection(&self) -> f64 {
        per_connection(
            self.before.rss_kib * 1024,
            self.during.rss_kib * 1024,
            self.held,
        )
    }

    /// tcmalloc's in-use bytes per held connection (Envoy's own C++ objects, byte-exact).
    pub fn allocated_per_connection(&self) -> f64 {
        per_connection(self.before.allocated, self.during.allocated, self.held)
    }
}

/// A round of held connections.
pub type HeldRound = PerVariant<HeldSample>;

/// Waits (bounded) until Envoy holds no downstream connection on its TLS listener.
async fn wait_idle(envoy: &Envoy) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let active = envoy
            .counter("http.https.downstream_cx_active")
            .await?
            .unwrap_or(0);
        if active == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "Envoy still holds {active} connections 30 s after the client closed them"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One variant in one round: a fresh Envoy, warm-up, memory, `n` connections opened and
/// echoed, memory again, all closed.
async fn held_sample(
    opts: &Options,
    variant: Variant,
    tls: &TlsFiles,
    client_tls: &Arc<rustls::ClientConfig>,
    backends: &[EchoBackend],
    wasm: &Path,
) -> Result<HeldSample> {
    let node = start_node(variant, tls, backends, wasm).await?;
    let envoy = &node.envoy;
    let (warm, errors, last) =
        open_many(node.https, client_tls, "warm", WARMUP, OPEN_CONCURRENCY).await;
    ensure!(errors == 0, "{}: warm-up failed: {last:?}", variant.label());
    let (warm, errors, last) = echo_all(warm, "warm").await;
    ensure!(
        errors == 0,
        "{}: warm-up echo failed: {last:?}",
        variant.label()
    );
    close_all(warm).await;
    wait_idle(envoy).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = envoy_memory(envoy).await?;

    let n = opts.held_connections;
    let (open, open_errors, last_open) =
        open_many(node.https, client_tls, "held", n, OPEN_CONCURRENCY).await;
    let (echoed, echo_errors, last_echo) = echo_all(open, "held").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = envoy_memory(envoy).await?;
    let sample = HeldSample {
        held: echoed.len(),
        errors: open_errors + echo_errors,
        last_error: last_echo.or(last_open),
        before,
        during,
    };
    close_all(echoed).await;
    wait_idle(envoy).await?;
    eprintln!(
        "edge-bench: held {:>11}: {} of {n} held, {:.1} KiB RSS and {:.1} KiB allocated per \
         connection",
        variant.label(),
        sample.held,
        sample.rss_per_connection() / 1024.0,
        sample.allocated_per_connection() / 1024.0
    );
    Ok(sample)
}

/// `--rounds` rounds of every variant, in rotating order; fails only when nothing was held.
pub async fn held_rounds(
    opts: &Options,
    tls: &TlsFiles,
    client_tls: &Arc<rustls::ClientConfig>,
    backends: &Backends,
    wasm: &Path,
) -> Result<Vec<HeldRound>> {
    let mut rounds = Vec::with_capacity(opts.rounds);
    for i in 0..opts.rounds {
        let mut round = HeldRound {
            order: order(i),
            ..HeldRound::default()
        };
        for v in order(i) {
            let sample = held_sample(opts, v, tls, client_tls, backends.of(v), wasm).await?;
            ensure!(
                sample.held > 0,
                "{}: no WebSocket held (last error: {:?})",
                v.label(),
                sample.last_error
            );
            round.samples[v.index()] = sample;
        }
        rounds.push(round);
    }
    Ok(rounds)
}
