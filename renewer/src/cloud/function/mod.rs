//! A small functions-framework-style runtime: turns one async handler into an axum app that
//! honours the Cloud Run / Cloud Functions contract.
//!
//! * `POST /` is the function. A plain HTTP call (Cloud Scheduler, curl) reaches the handler as
//!   [`Event::Http`]; a CloudEvent (Eventarc, Pub/Sub push through Eventarc) as
//!   [`Event::CloudEvent`], in either of its HTTP encodings: *binary* (attributes in `ce-*`
//!   headers, data in the body) or *structured* (`Content-Type: application/cloudevents+json`,
//!   the whole event as JSON). A malformed CloudEvent is answered 400 before the handler runs.
//! * Request bodies are limited ([`Options::max_body_bytes`], 413 beyond).
//! * Every request is logged once, with method, path, status and latency (structured fields).
//! * [`serve`] serves on the listener the caller bound where Cloud Run says (`$PORT`, see
//!   [`crate::shared::process::listen_address`]), and on shutdown stops accepting at once, lets
//!   requests in flight finish, and returns at the latest after a deadline, because Cloud Run
//!   sends SIGKILL 10 s after SIGTERM.
//!
//! Nothing here knows about certificates: the renewer plugs its handler and extra routes in.
//!
//! Here: the app, request logging and serving; `event`: decoding a request into an [`Event`].

mod event;

use std::future::{Future, IntoFuture};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use event::{decode_event, Event};

/// Runtime settings of the shim.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_body_bytes: 64 * 1024,
        }
    }
}

/// One invocation as the handler sees it.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The request, decoded.
    pub event: Event,
}

/// An error answer in the shape every route of the app uses: `{"error": "..."}`.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct Body {
        error: String,
    }
    (
        status,
        Json(Body {
            error: message.into(),
        }),
    )
        .into_response()
}

/// The function app: `POST /` calls `handler`; `extra` adds routes (health, metrics, …); any
/// other path is 404 and another method on `/` is 405. Body limit and request logging apply to
/// every route.
pub fn app<F, Fut>(handler: F, options: &Options, extra: Router) -> Router
where
    F: Fn(Invocation) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let invoke = move |headers: HeaderMap, body: Bytes| {
        let handler = handler.clone();
        async move {
            match decode_event(&headers, body) {
                Ok(event) => handler(Invocation { event }).await,
                Err(message) => error_response(StatusCode::BAD_REQUEST, message),
            }
        }
    };
    Router::new()
        .route("/", post(invoke))
        .merge(extra)
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(middleware::from_fn(log_request))
}

/// One structured log line per request. Health checks and scrapes log at debug: they arrive
/// every few seconds and would drown the renewal logs.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let user_agent = header_text(request.headers(), header::USER_AGENT.as_str());
    // Cloud Run puts the trace id first in X-Cloud-Trace-Context ("TRACE/SPAN;o=1").
    let trace = header_text(request.headers(), "x-cloud-trace-context")
        .and_then(|t| t.split('/').next().map(str::to_owned));
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_millis() as u64;
    let quiet = method == Method::GET && matches!(path.as_str(), "/healthz" | "/metrics");
    if quiet && status < 400 {
        tracing::debug!(%method, path, status, latency_ms, "request");
    } else if status >= 500 {
        tracing::warn!(%method, path, status, latency_ms, user_agent, trace, "request");
    } else {
        tracing::info!(%method, path, status, latency_ms, user_agent, trace, "request");
    }
    response
}

/// A header's value when it is visible ASCII.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_owned)
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every request in flight finished.
    Drained,
    /// The deadline passed with requests still in flight; they were dropped.
    DeadlineExceeded,
}

/// Serve `app` on `listener` until `shutdown` is cancelled; then stop accepting, let requests in
/// flight finish, and give up on them `deadline` after the shutdown began.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    deadline: Duration,
) -> std::io::Result<Stopped> {
    let graceful = shutdown.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move { graceful.cancelled().await })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map(|()| Stopped::Drained),
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(deadline, &mut server).await {
        Ok(result) => result.map(|()| Stopped::Drained),
        Err(_) => Ok(Stopped::DeadlineExceeded),
    }
}

#[cfg(test)]
mod tests;
