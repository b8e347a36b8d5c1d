//! The application behind Envoy: a WebSocket echo server that says who it is.
//!
//! Sticky routing and header hygiene can only be checked from the backend's side: which
//! instance got the upgrade, and which headers actually reached it. So every backend has an id,
//! puts it in the handshake response and answers "whoami" with it, and records what it received.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::watch;

use crate::server::{RecordedRequest, ServerTask};

/// A running echo backend. Dropping it closes the listener, every HTTP connection and every
/// open WebSocket.
#[derive(Debug)]
pub struct EchoBackend {
    pub id: String,
    /// The address it listens on (127.0.0.1, or a cluster node's 127.0.1.x).
    pub ip: std::net::IpAddr,
    pub port: u16,
    state: Arc<EchoState>,
    server: ServerTask,
    // Dropping the sender wakes every WebSocket task (their receivers see the channel close):
    // axum runs upgraded sockets on detached tasks the accept loop cannot abort.
    _shutdown: watch::Sender<()>,
}

#[derive(Debug)]
struct EchoState {
    id: String,
    /// Off for a benchmark's backends: a load of millions of requests would grow the process
    /// (and blur its figures) with records nobody reads.
    keep_records: bool,
    upgrades: Mutex<Vec<RecordedRequest>>,
    requests: Mutex<Vec<RecordedRequest>>,
    shutdown: watch::Receiver<()>,
}

impl EchoBackend {
    /// Starts a backend named `id` on 127.0.0.1 and a free port.
    ///
    /// * WebSocket upgrade (HTTP/1.1 GET or HTTP/2 extended CONNECT) on any path: the response
    ///   carries `x-backend-id: <id>`; messages are echoed, except text "whoami" which gets the id.
    /// * `GET /healthz` → 200 "ok" (for Envoy active health checks).
    /// * an upgrade attempt with an invalid handshake (e.g. no `sec-websocket-key`) → the 4xx
    ///   axum answers with, plus `x-backend-id`, and recorded in `requests()`;
    /// * anything else → 200, body = id, header `x-backend-id`.
    pub async fn start(id: &str) -> Result<EchoBackend> {
        Self::start_at(id, std::net::Ipv4Addr::LOCALHOST.into(), 0).await
    }

    /// [`EchoBackend::start`] on `ip:port` (port 0: kernel-chosen): an app on one node of a
    /// local cluster, at the node's address and the cluster's common `APP_PORT`.
    pub async fn start_at(id: &str, ip: std::net::IpAddr, port: u16) -> Result<EchoBackend> {
        Self::spawn(id, ip, port, true).await
    }

    /// [`EchoBackend::start`] for a load generator: it answers the same, but keeps no records
    /// (`requests()` and `upgrades()` stay empty).
    pub async fn start_unrecorded(id: &str) -> Result<EchoBackend> {
        Self::spawn(id, std::net::Ipv4Addr::LOCALHOST.into(), 0, false).await
    }

    async fn spawn(
        id: &str,
        ip: std::net::IpAddr,
        port: u16,
        keep_records: bool,
    ) -> Result<EchoBackend> {
        let (tx, rx) = watch::channel(());
        let state = Arc::new(EchoState {
            id: id.to_string(),
            keep_records,
            upgrades: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            shutdown: rx,
        });
        let router = Router::new().fallback(handle).with_state(state.clone());
        let server = ServerTask::spawn_at(ip, port, router, None).await?;
        Ok(EchoBackend {
            id: id.to_string(),
            ip,
            port: server.port(),
            state,
            server,
            _shutdown: tx,
        })
    }

    /// `<ip>:<port>`, as Envoy cluster endpoints want it.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// Request headers of every accepted upgrade, oldest first.
    pub fn upgrades(&self) -> Vec<RecordedRequest> {
        self.state.upgrades.lock().unwrap().clone()
    }

    pub fn upgrade_count(&self) -> usize {
        self.state.upgrades.lock().unwrap().len()
    }

    /// Plain (non-upgrade) requests, health checks included.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Plain requests other than `/healthz`, so health-check traffic doesn't blur assertions.
    pub fn app_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path != "/healthz")
            .collect()
    }

    /// Stops the backend (the port then refuses connections) while keeping its records, to
    /// test failover when an instance dies.
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }
}

async fn handle(
    State(state): State<Arc<EchoState>>,
    peer: Option<axum::Extension<crate::server::Peer>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
) -> Response {
    let record = state.keep_records.then(|| {
        let mut record = RecordedRequest::new(&method, &uri, version, &headers);
        record.peer = peer.map(|axum::Extension(p)| p.0);
        record
    });
    let id_header = HeaderValue::from_str(&state.id).unwrap_or(HeaderValue::from_static("?"));
    match ws {
        Ok(ws) => {
            if let Some(record) = record {
                state.upgrades.lock().unwrap().push(record);
            }
            let id = state.id.clone();
            let shutdown = state.shutdown.clone();
            let mut response = ws.on_upgrade(move |socket| echo(socket, id, shutdown));
            response.headers_mut().insert("x-backend-id", id_header);
            response
        }
        Err(rejection) => {
            if let Some(record) = record {
                state.requests.lock().unwrap().push(record);
            }
            // A WebSocket attempt with a bad handshake gets the 4xx a real app would send
            // (e.g. no sec-websocket-key), not a 200 a proxy could mistake for success.
            let wants_ws = method == Method::CONNECT
                || headers
                    .get_all(header::UPGRADE)
                    .iter()
                    .any(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
            if wants_ws {
                let mut response = rejection.into_response();
                response.headers_mut().insert("x-backend-id", id_header);
                return response;
            }
            if uri.path() == "/healthz" {
                return "ok".into_response();
            }
            let mut response = state.id.clone().into_response();
            response.headers_mut().insert("x-backend-id", id_header);
            response
        }
    }
}

async fn echo(mut socket: WebSocket, id: String, mut shutdown: watch::Receiver<()>) {
    loop {
        let msg = tokio::select! {
            msg = socket.recv() => msg,
            // Err means the backend was dropped: close the socket with it.
            _ = shutdown.changed() => return,
        };
        let reply = match msg {
            Some(Ok(Message::Text(text))) if text.as_str() == "whoami" => {
                Message::Text(id.as_str().into())
            }
            Some(Ok(Message::Text(text))) => Message::Text(text),
            Some(Ok(Message::Binary(bytes))) => Message::Binary(bytes),
            // Pings are answered by tungstenite itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_)) | Err(_)) | None => return,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}

/// Which backend answered: the `x-backend-id` an echo backend puts on its answers (a
/// WebSocket upgrade's 101 included).
pub fn backend_id(headers: &axum::http::HeaderMap) -> Result<String> {
    Ok(headers
        .get("x-backend-id")
        .context("no x-backend-id")?
        .to_str()?
        .to_owned())
}
