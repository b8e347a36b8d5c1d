//! An HTTP/1.1 proxy in front of a real server (fake-gcs-server) that loses answers on
//! purpose: the request reaches the server and takes effect, then the connection to the
//! client is closed without a response — what a reset connection or a timed-out load
//! balancer does. The client library's retry then meets its own write.
//!
//! Each request is forwarded on a fresh upstream connection (`Connection: close`), with the
//! body de-chunked and sent with a `Content-Length`; the response is passed back whole.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::client::raw_http;

/// Decides whether the answer to a request is lost: `(method, path and query, body)`.
pub type LoseWhen = Box<dyn Fn(&str, &str, &[u8]) -> bool + Send + Sync>;

pub struct FaultProxy {
    port: u16,
    lost: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Proxy to `127.0.0.1:upstream`; the answer of the first request `lose` picks is lost
    /// (later ones are answered).
    pub async fn start(upstream: u16, lose: LoseWhen) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let lost = Arc::new(Mutex::new(Vec::new()));
        let lose = Arc::new(lose);
        let seen = lost.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (lose, seen) = (lose.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (lose, seen) = (lose.clone(), seen.clone());
                        async move { forward(upstream, req, &*lose, &seen).await }
                    });
                    // An error from the service makes hyper close the connection unanswered.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FaultProxy { port, lost, task })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests whose answers were lost (`METHOD path`).
    pub fn lost(&self) -> Vec<String> {
        self.lost.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    upstream: u16,
    req: Request<Incoming>,
    lose: &(dyn Fn(&str, &str, &[u8]) -> bool + Send + Sync),
    lost: &Mutex<Vec<String>>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let io = |e: String| std::io::Error::other(e);
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| io(e.to_string()))?
        .to_bytes();
    let mut raw = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for (name, value) in &headers {
        let n = name.as_str();
        if matches!(
            n,
            "connection" | "transfer-encoding" | "content-length" | "keep-alive"
        ) {
            continue;
        }
        raw.extend_from_slice(format!("{n}: ").as_bytes());
        raw.extend_from_slice(value.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    raw.extend_from_slice(&body);
    let answer = raw_http(upstream, &raw)
        .await
        .map_err(|e| io(format!("upstream: {e:#}")))?;
    let first_pick = {
        let mut l = lost.lock().map_err(|_| io("poisoned".into()))?;
        if l.is_empty() && lose(&method, &path, &body) {
            l.push(format!("{method} {path}"));
            true
        } else {
            false
        }
    };
    if first_pick {
        return Err(io("answer lost on purpose".into()));
    }
    let mut resp = Response::builder().status(answer.status);
    for (name, value) in &answer.headers {
        let n = name.to_ascii_lowercase();
        if matches!(
            n.as_str(),
            "connection" | "transfer-encoding" | "content-length" | "keep-alive"
        ) {
            continue;
        }
        resp = resp.header(name.as_str(), value.as_str());
    }
    resp.body(Full::new(Bytes::from(answer.body)))
        .map_err(|e| io(e.to_string()))
}
