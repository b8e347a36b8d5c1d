//! The HTTP status server of `renewer sync --watch`: the readiness checks on a timer, and
//! `GET /ready` and `GET /metrics` on `sync.status_address`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::{NodeProbe, Observed, SyncStatus};
use crate::shared::metrics;

/// Check readiness every `interval` until `stop`, and answer `GET /ready` (200 or 503, with
/// the reason) and `GET /metrics` on `listener`.
pub async fn serve(
    status: Arc<SyncStatus>,
    probe: Arc<dyn NodeProbe>,
    listener: tokio::net::TcpListener,
    interval: Duration,
    stop: CancellationToken,
) {
    let checker = {
        let (status, stop) = (status.clone(), stop.clone());
        async move {
            loop {
                let installed = status.state().installed.is_some();
                let (app, served) = tokio::join!(probe.app(), async {
                    if installed {
                        Some(probe.served_serial().await)
                    } else {
                        None
                    }
                });
                status.observe(&Observed { app, served }, OffsetDateTime::now_utc());
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    let ready = status.clone();
    let status_metrics = status;
    let router = Router::new()
        .route(
            "/ready",
            get(move || {
                let r = ready.state().readiness;
                async move {
                    let code = if r.ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let word = if r.ready { "ready" } else { "not ready" };
                    (code, format!("{word}: {}\n", r.reason))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = status_metrics.metrics();
                async move { metrics::response(text) }
            }),
        );
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        stop.cancelled().await;
    });
    let (served, ()) = tokio::join!(server, checker);
    if let Err(e) = served {
        tracing::error!(error = %e, "the status endpoint stopped");
    }
}
