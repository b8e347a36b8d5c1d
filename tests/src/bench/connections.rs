//! Many WebSockets held at once from this process (the held-connection benchmarks): opened
//! with bounded concurrency, echoing once, closed.

use std::sync::Arc;

use super::ws::{close_ws, next_text, ws_open};
use crate::node::ORIGIN;
use crate::{Message, WsStream, IO_TIMEOUT};
use anyhow::{anyhow, ensure, Context, Result};
use futures_util::SinkExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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
        let t = next_text(ws).await?;
        ensure!(t.as_str() == msg, "wrong echo {t:?} for {msg:?}");
        Ok(())
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no echo within {IO_TIMEOUT:?}"))?
}

/// Opens `n` connections with at most `concurrency` handshakes in flight; the successes in
/// index order, the failures counted.
pub async fn open_many(
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
pub async fn echo_all(
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

pub async fn close_all(sockets: Vec<(usize, WsStream)>) {
    let mut tasks = JoinSet::new();
    for (_, ws) in sockets {
        tasks.spawn(async move {
            let _ = tokio::time::timeout(IO_TIMEOUT, close_ws(ws)).await;
        });
    }
    while tasks.join_next().await.is_some() {}
}
