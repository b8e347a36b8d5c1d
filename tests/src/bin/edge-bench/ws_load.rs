//! The WebSocket loads, in process (wrk cannot speak WebSocket): echoes on open connections,
//! and handshake loops.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures_util::SinkExt;
use harness::bench::{close_ws, next_text, ws_open, CpuTime};
use harness::node::ORIGIN;
use harness::Message;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The echoed WebSocket message: small, like a chat or presence update.
pub const ECHO_MESSAGE: &str = "edge-bench echo 0123456789abcdef";

#[derive(Debug, Clone, Default)]
pub struct RateResult {
    /// Completed operations per second of the measured window.
    pub per_s: f64,
    pub done: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// `n` WebSockets, each sending the small message and waiting for its echo as fast as it can
/// (one message in flight per connection, like request/response chat traffic), with Envoy's
/// CPU µs per echo (`envoy`'s clock). Connects before the clocks start and closes after they
/// stop: this measures the upgraded stream, the handshake has its own load (an Envoy whose
/// filter costs more per handshake would otherwise pay it here too).
pub async fn ws_echo_load(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    n: usize,
    duration: Duration,
    envoy: &CpuTime,
) -> Result<(RateResult, f64)> {
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
    let cpu_before = envoy.seconds()?;
    let mut loops = JoinSet::new();
    for mut ws in sockets {
        loops.spawn(async move {
            let mut done = 0u64;
            let result = async {
                while Instant::now() < deadline {
                    ws.send(Message::text(ECHO_MESSAGE)).await?;
                    let reply = next_text(&mut ws).await?;
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
    tokio::time::sleep_until(deadline).await;
    let cpu_used = envoy.seconds()? - cpu_before;
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
    let us_per_echo = cpu_used * 1e6 / result.done.max(1) as f64;
    Ok((result, us_per_echo))
}

/// `concurrency` loops of: TCP + TLS handshake, WebSocket upgrade through Envoy to a backend,
/// close. No `room` and no cookie, but an `Origin`: the filter's most expensive upgrade path
/// (it checks the origin, mints a new affinity key and signs a cookie for it).
pub async fn handshake_load(
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
