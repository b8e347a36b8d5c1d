//! The in-process server plumbing shared by the fakes (echo backend, store, metadata server).
//!
//! `axum::serve` hands every connection to a detached task, so stopping it closes the listener
//! but keeps keep-alive connections served: a "store is down" test would still get answers over
//! Envoy's pooled connection. This accept loop owns its connections in a `JoinSet`, so aborting
//! it drops the listener *and* every open connection.
//!
//! The same loop serves TLS (for fakes of HTTPS services such as an ACME server's ARI
//! endpoint): the handshake runs in the connection's task, so a stalled client never blocks
//! the accept loop.

use std::sync::Arc;

use anyhow::{Context, Result};
use axum::http::{HeaderMap, Method, Uri, Version};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// The address of the peer of the connection a request came on (a request extension every
/// fake's router gets): which node's Envoy, in a local cluster, sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);

/// One request as a fake server saw it, so tests can assert on what the proxy forwarded
/// (added, stripped or rewritten headers) rather than only on what came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Where the connection came from, when the fake records it.
    pub peer: Option<std::net::SocketAddr>,
    pub method: String,
    /// Path with the query string, exactly as received.
    pub path: String,
    /// "HTTP/1.1" or "HTTP/2.0": shows whether Envoy downgraded an HTTP/2 request upstream.
    pub version: String,
    /// Lower-cased names in arrival order; repeated headers appear once per value.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    pub(crate) fn new(method: &Method, uri: &Uri, version: Version, headers: &HeaderMap) -> Self {
        RecordedRequest {
            peer: None,
            method: method.as_str().to_string(),
            path: uri
                .path_and_query()
                .map(|pq| pq.as_str().to_string())
                .unwrap_or_else(|| uri.path().to_string()),
            version: format!("{version:?}"),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
    }

    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::headers::first(&self.headers, name)
    }

    /// Every value of a header, to catch a client-sent copy surviving next to the proxy's one.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        crate::headers::all(&self.headers, name)
    }
}

/// A running accept loop. Dropping it aborts the loop and, with it, every connection.
#[derive(Debug)]
pub(crate) struct ServerTask {
    port: u16,
    handle: Option<JoinHandle<()>>,
}

impl ServerTask {
    /// Serves `router` on 127.0.0.1 and a kernel-chosen port, speaking HTTP/1.1 (with upgrades)
    /// and HTTP/2 prior knowledge with RFC 8441 extended CONNECT enabled, so the same fake can be
    /// reached by Envoy however the cluster is configured.
    pub(crate) async fn spawn(router: Router) -> Result<ServerTask> {
        Self::spawn_on(0, router, None).await
    }

    /// Like [`ServerTask::spawn`] on a chosen `port` (0: kernel-chosen), over TLS when `tls`
    /// is given. A chosen port is for servers a process must find at a fixed place, e.g. the
    /// HTTP-01 port Pebble validates on; ALPN is whatever `tls` offers.
    pub(crate) async fn spawn_on(
        port: u16,
        router: Router,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<ServerTask> {
        Self::spawn_at(std::net::Ipv4Addr::LOCALHOST.into(), port, router, tls).await
    }

    /// Like [`ServerTask::spawn_on`] on another loopback address (`127.0.1.2`: one "host" of a
    /// local cluster; every 127.0.0.0/8 address is this machine).
    pub(crate) async fn spawn_at(
        ip: std::net::IpAddr,
        port: u16,
        router: Router,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<ServerTask> {
        let listener = TcpListener::bind((ip, port))
            .await
            .with_context(|| format!("bind {ip}:{port}"))?;
        let port = listener.local_addr()?.port();
        let handle = tokio::spawn(accept_loop(listener, router, tls.map(TlsAcceptor::from)));
        Ok(ServerTask {
            port,
            handle: Some(handle),
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Stops serving and waits until the listener is closed, so a connection attempt made right
    /// after this returns is refused.
    pub(crate) async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
            // The only possible error is the cancellation we just asked for.
            let _ = handle.await;
        }
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, router: Router, tls: Option<TlsAcceptor>) {
    // Dropping the JoinSet (when this task is aborted) aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(_) => {
                        // E.g. EMFILE: back off instead of spinning.
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let service =
                    TowerToHyperService::new(router.clone().layer(axum::Extension(Peer(peer))));
                let tls = tls.clone();
                connections.spawn(async move {
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http2().enable_connect_protocol();
                    // Connection errors (resets, garbage from hostile tests, failed TLS
                    // handshakes) are not our concern.
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
