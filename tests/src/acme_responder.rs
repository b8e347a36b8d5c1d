//! An HTTP-01 challenge responder, standing in for the edge when a test is about the ACME
//! exchange rather than about Envoy and the filter.
//!
//! Pebble's VA fetches `http://<name>:<httpPort>/.well-known/acme-challenge/<token>` on
//! 127.0.0.1 (see [`crate::pebble`]). The answer comes from a caller-supplied lookup, so a test
//! can serve from wherever the renewer published the key authorization (a fake GCS, an HTTP
//! store, a map). Every challenge request is recorded, so a test can assert that Pebble really
//! validated through this server, for which names and tokens.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::server::ServerTask;

/// Token → key authorization (`None`: answer 404).
pub type KeyAuthLookup = Arc<dyn Fn(String) -> BoxFuture<'static, Option<String>> + Send + Sync>;

/// Wraps an async closure as a [`KeyAuthLookup`], e.g.
/// `key_auth_lookup(move |token| { let gcs = gcs.clone(); async move { ... } })`.
pub fn key_auth_lookup<F, Fut>(f: F) -> KeyAuthLookup
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<String>> + Send + 'static,
{
    Arc::new(move |token| f(token).boxed())
}

/// One `GET /.well-known/acme-challenge/<token>` as the responder saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http01Request {
    pub token: String,
    /// As sent; Pebble sends `<identifier>:<httpPort>`.
    pub host: Option<String>,
    /// Whether the lookup had a key authorization (200) or not (404).
    pub found: bool,
}

struct ResponderState {
    lookup: KeyAuthLookup,
    requests: Mutex<Vec<Http01Request>>,
    /// Held before each answer (after the request is recorded): keeps a renewal mid-order.
    delay: Mutex<Duration>,
}

/// A running HTTP-01 responder on 127.0.0.1 (HTTP/1.1 and HTTP/2 prior knowledge). Dropping it
/// closes the listener and every connection.
///
/// * `GET /.well-known/acme-challenge/<token>` → 200 `text/plain` with the lookup's value, or
///   404 when it has none;
/// * anything else → 404 (not recorded).
pub struct Http01Responder {
    state: Arc<ResponderState>,
    server: ServerTask,
}

impl std::fmt::Debug for Http01Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http01Responder")
            .field("port", &self.server.port())
            .finish_non_exhaustive()
    }
}

impl Http01Responder {
    /// On a kernel-chosen port: start it first, then give [`Http01Responder::port`] to
    /// [`crate::pebble::PebbleBuilder::http_port`] (no race on the port).
    pub async fn start(lookup: KeyAuthLookup) -> Result<Http01Responder> {
        Self::start_on(0, lookup).await
    }

    /// On `port` (0: kernel-chosen), e.g. a Pebble's [`crate::pebble::Pebble::http_port`].
    pub async fn start_on(port: u16, lookup: KeyAuthLookup) -> Result<Http01Responder> {
        let state = Arc::new(ResponderState {
            lookup,
            requests: Mutex::new(Vec::new()),
            delay: Mutex::new(Duration::ZERO),
        });
        let router = Router::new()
            .route("/.well-known/acme-challenge/{token}", get(challenge))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .with_state(state.clone());
        let server = ServerTask::spawn_on(port, router, None).await?;
        Ok(Http01Responder { state, server })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Every challenge request so far, in arrival order. Pebble 2.4 sends several per
    /// validation (3, concurrently), so count distinct tokens rather than requests.
    pub fn requests(&self) -> Vec<Http01Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Answer every later challenge request only after `delay` (recorded at once), so a test
    /// can act while a renewal waits for validation.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn clear_requests(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// Closes the listener and every open connection; validations then fail to connect.
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }
}

async fn challenge(
    State(state): State<Arc<ResponderState>>,
    Path(token): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let value = (state.lookup)(token.clone()).await;
    // HTTP/2 carries the host in :authority, which hyper puts in the URI.
    let host = headers
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| uri.authority().map(|a| a.to_string()));
    state.requests.lock().unwrap().push(Http01Request {
        token,
        host,
        found: value.is_some(),
    });
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match value {
        Some(key_auth) => ([(header::CONTENT_TYPE, "text/plain")], key_auth).into_response(),
        None => (StatusCode::NOT_FOUND, "no such token").into_response(),
    }
}
