//! Clients that keep doing what users do through the load balancer while a test changes the
//! cluster, and what they saw.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::client::{served_serial, ws_echo, ws_try_connect_from};

/// Clients probing the cluster (see `Cluster::start_probe`).
pub struct Probe {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<ProbeReport>,
}

/// What the probing clients saw.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// Handshake + WebSocket echo rounds that worked.
    pub ok: usize,
    /// Those that did not, each with its error.
    pub failures: Vec<String>,
}

impl Probe {
    /// Stops the clients and returns what they saw.
    pub async fn stop(self) -> Result<ProbeReport> {
        self.stop.cancel();
        self.task.await.context("the probe task panicked")
    }
}

/// Starts the clients: each round is a TLS handshake with `port` checked against `roots` for
/// `domain`, then a WebSocket to `url` (with `origin`) that echoes one message, each round
/// from one of 50 client addresses in turn.
pub(super) fn start(
    url: String,
    origin: String,
    port: u16,
    domain: String,
    roots: String,
) -> Probe {
    let stop = tokio_util::sync::CancellationToken::new();
    let until = stop.clone();
    let task = tokio::spawn(async move {
        let mut report = ProbeReport::default();
        let mut i: u32 = 0;
        while !until.is_cancelled() {
            i += 1;
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 2, 10 + (i % 50) as u8));
            let one = async {
                served_serial(port, &domain, &roots)
                    .await
                    .context("TLS handshake")?;
                let (mut ws, _) = ws_try_connect_from(
                    &format!("{url}?probe={i}"),
                    Some(source),
                    &[("origin", &origin)],
                    Some(&roots),
                )
                .await?
                .map_err(|r| anyhow::anyhow!("WebSocket refused: {}", r.status()))?;
                let echoed = ws_echo(&mut ws, "probe").await?;
                anyhow::ensure!(echoed == "probe", "echo was {echoed:?}");
                let _ = ws.close(None).await;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(10), one).await {
                Ok(Ok(())) => report.ok += 1,
                Ok(Err(e)) => report
                    .failures
                    .push(format!("probe {i} from {source}: {e:#}")),
                Err(_) => report
                    .failures
                    .push(format!("probe {i} from {source}: no answer within 10 s")),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        report
    });
    Probe { stop, task }
}
