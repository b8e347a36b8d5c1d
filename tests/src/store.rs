//! A stand-in for "any HTTP store" holding ACME key authorizations.
//!
//! The filter only needs a GET that answers 200 with the key authorization or 404, so a map of
//! paths is enough; the knobs (bearer token, delay, forced status, stop) exist to exercise the
//! filter's failure handling: auth errors, timeouts, 5xx and a store that is down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::server::{RecordedRequest, ServerTask};

#[derive(Debug)]
pub struct HttpStore {
    state: Arc<Mutex<StoreState>>,
    server: ServerTask,
}

#[derive(Debug, Default)]
struct StoreState {
    objects: HashMap<String, Vec<u8>>,
    bearer: Option<String>,
    delay: Duration,
    forced_status: Option<u16>,
    requests: Vec<RecordedRequest>,
}

impl HttpStore {
    pub async fn start() -> Result<HttpStore> {
        let state = Arc::new(Mutex::new(StoreState::default()));
        let router = Router::new().fallback(handle).with_state(state.clone());
        let server = ServerTask::spawn(router).await?;
        Ok(HttpStore { state, server })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `http://127.0.0.1:<port>`, for configs that take a base URL.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Serves `body` at `path`. A `path` with a query string only matches requests with exactly
    /// that query; one without matches whatever the query is.
    pub fn put(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.state
            .lock()
            .unwrap()
            .objects
            .insert(path.to_string(), body.into());
    }

    pub fn remove(&self, path: &str) {
        self.state.lock().unwrap().objects.remove(path);
    }

    /// With `Some(token)`, requests lacking `authorization: Bearer <token>` get 401 (and are
    /// still recorded, so tests can see what the filter sent).
    pub fn require_bearer(&self, token: Option<&str>) {
        self.state.lock().unwrap().bearer = token.map(str::to_string);
    }

    /// Delays every answer, to drive the caller into its timeout.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// With `Some(status)`, every request is answered with that status and an empty body.
    pub fn force_status(&self, status: Option<u16>) {
        self.state.lock().unwrap().forced_status = status;
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// Closes the listener and every open connection; the port then refuses connections.
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }
}

async fn handle(
    State(state): State<Arc<Mutex<StoreState>>>,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
) -> Response {
    let delay = {
        let mut st = state.lock().unwrap();
        st.requests
            .push(RecordedRequest::new(&method, &uri, version, &headers));
        st.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let st = state.lock().unwrap();
    if let Some(status) = st.forced_status {
        return StatusCode::from_u16(status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }
    if let Some(token) = &st.bearer {
        let expected = format!("Bearer {token}");
        let ok = headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
        if !ok {
            return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
        }
    }
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let full = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or(uri.path());
    let body = st
        .objects
        .get(full)
        .or_else(|| st.objects.get(uri.path()))
        .cloned();
    match body {
        Some(body) => ([(header::CONTENT_TYPE, "text/plain")], body).into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
