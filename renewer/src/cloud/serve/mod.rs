//! `renewer serve`: the renewer as an HTTP service (Cloud Run service or function), on the
//! [`crate::cloud::function`] runtime.
//!
//! * `POST /` runs one renewal pass (body: optional `{"only": [...], "force": bool}`, as JSON,
//!   as a CloudEvent's data, or inside a Pub/Sub push envelope) and answers a JSON summary per
//!   certificate: 200 when every certificate is fine, 500 when one failed.
//!   A trigger that arrives while a pass with the same options runs joins that pass (same
//!   answer, `"joined": true`); one with other options waits for it to end, then runs. Passes
//!   run in their own task: a caller that hangs up (Cloud Scheduler's attempt deadline) does
//!   not cut a pass short.
//! * `GET /healthz`: 200 while serving, 503 once shutting down.
//! * `GET /metrics`: Prometheus text ([`crate::shared::metrics`]).
//! * `GET /.well-known/acme-challenge/{token}`: the key authorization from the store, so an
//!   HTTP-01 responder (the edge filter's store mode) can point here.
//!
//! On SIGTERM/SIGINT: new connections are refused, a running pass gets
//! `serve.pass_grace_seconds` to finish and is then cancelled (its order abandoned, challenge
//! answers removed, lease released; the certificate in service never changes half-way), and
//! the process ends within `serve.shutdown_timeout_seconds`. The signals are those `renewer
//! run`, `sync` and `members` stop on too ([`crate::shared::process::shutdown_signal`]).
//!
//! Here: the routes and the shutdown; `pass`: the passes behind `POST /` ([`Service`]).

mod pass;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cloud::function::{self, error_response, Invocation, Stopped};
use crate::cloud::run::{CertReport, Renewer};
use crate::shared::config::ServeConfig;
use crate::shared::metrics;
use crate::shared::store::keys;

pub use pass::{PassRequest, PassResult, Service};

/// The app: the function on `POST /` plus health, metrics and challenge routes.
pub fn app(service: Arc<Service>, config: &ServeConfig) -> Router {
    let extra = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .with_state(service.clone());
    let handler = move |inv: Invocation| {
        let service = service.clone();
        async move { invoke(service, inv).await }
    };
    function::app(
        handler,
        &function::Options {
            max_body_bytes: config.max_body_bytes,
        },
        extra,
    )
}

/// The answer to `POST /`: the pass and its report.
#[derive(Serialize)]
struct PassAnswer<'a> {
    ok: bool,
    joined: bool,
    pass: &'a PassResult,
    certificates: &'a [CertReport],
}

async fn invoke(service: Arc<Service>, inv: Invocation) -> Response {
    let request = match PassRequest::from_payload(inv.event.payload()) {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e),
    };
    let unknown: Vec<&str> = request
        .only
        .iter()
        .filter(|n| service.renewer.config.certificate(n).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return error_response(
            StatusCode::BAD_REQUEST,
            format!(
                "only: no certificate named {} in the config",
                unknown.join(", ")
            ),
        );
    }
    if service.stopping.is_cancelled() {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if let function::Event::CloudEvent(ce) = &inv.event {
        tracing::info!(
            event_id = ce.id,
            event_type = ce.ty,
            source = ce.source,
            "triggered by a CloudEvent"
        );
    }
    let (result, joined) = service.trigger(request).await;
    let ok = result.report.ok();
    let answer = PassAnswer {
        ok,
        joined,
        pass: &result,
        certificates: &result.report.certificates,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, Json(answer)).into_response()
}

async fn healthz(State(service): State<Arc<Service>>) -> Response {
    if service.stopping.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics_text(State(service): State<Arc<Service>>) -> Response {
    metrics::response(metrics::render(&service.snapshot().await))
}

/// An ACME token, by the rule the edge filter applies too (`syntax::token`): 22–128 base64url
/// characters (RFC 8555 §8.3, §11.3).
fn token_ok(token: &str) -> bool {
    syntax::token::is_token(token.as_bytes())
}

async fn challenge(State(service): State<Arc<Service>>, Path(token): Path<String>) -> Response {
    let no_store = [
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_TYPE, "text/plain"),
    ];
    if !token_ok(&token) {
        return (StatusCode::NOT_FOUND, no_store, "").into_response();
    }
    match service.renewer.store.get(&keys::challenge(&token)).await {
        Ok(Some(obj)) => (StatusCode::OK, no_store, obj.data).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, no_store, "").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "challenge lookup failed");
            (StatusCode::SERVICE_UNAVAILABLE, no_store, "").into_response()
        }
    }
}

/// Serve until SIGTERM/SIGINT, then shut down as described in the module docs.
pub async fn run(
    renewer: Arc<Renewer>,
    config: &ServeConfig,
    listener: TcpListener,
) -> std::io::Result<Stopped> {
    let service = Service::new(renewer);
    let router = app(service.clone(), config);
    let shutdown = CancellationToken::new();
    let grace = Duration::from_secs(config.pass_grace_seconds);
    let deadline = Duration::from_secs(config.shutdown_timeout_seconds);
    // When the signal came: every shutdown budget counts from there, not from the start of
    // the server (which may have been up for days).
    let signalled: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let watcher = {
        let service = service.clone();
        let shutdown = shutdown.clone();
        let signalled = signalled.clone();
        tokio::spawn(async move {
            let signal = crate::shared::process::shutdown_signal().await;
            let _ = signalled.set(Instant::now());
            tracing::info!(
                signal,
                pass_running = service.pass_running(),
                grace_seconds = grace.as_secs(),
                "shutting down: no new requests"
            );
            service.stopping.cancel();
            shutdown.cancel();
            tokio::select! {
                _ = service.idle() => {}
                _ = tokio::time::sleep(grace) => {
                    tracing::warn!("the renewal pass is still running; cancelling it");
                    service.cancel_passes.cancel();
                }
            }
        })
    };
    let stopped = function::serve(listener, router, shutdown.clone(), deadline).await?;
    // Connections are drained; a pass nobody waits for any more (its caller hung up) may still
    // be running: it gets its grace (the watcher cancels it then) and its cleanup, within
    // what is left of the deadline since the signal.
    let since_signal = signalled.get().map_or(Duration::ZERO, Instant::elapsed);
    let left = deadline.saturating_sub(since_signal);
    let stopped = match stopped {
        Stopped::Drained if service.pass_running() => {
            match tokio::time::timeout(left, service.idle()).await {
                Ok(()) => Stopped::Drained,
                Err(_) => Stopped::DeadlineExceeded,
            }
        }
        other => other,
    };
    watcher.abort();
    Ok(stopped)
}

#[cfg(test)]
mod tests;
