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
//! the process ends within `serve.shutdown_timeout_seconds`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use futures_util::future::{BoxFuture, Shared};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::shared::bundle::BundleStore;
use crate::shared::config::ServeConfig;
use crate::cloud::function::{self, error_response, Invocation, Stopped};
use crate::shared::metrics::{self, CertSample, Counters, Snapshot};
use crate::cloud::run::{CertReport, Outcome, Renewer, RunOptions, RunReport};
use crate::shared::store::keys;

/// The options of one pass, as a trigger's body gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PassRequest {
    /// Only these certificates (all when empty).
    #[serde(default)]
    pub only: Vec<String>,
    /// Renew even if not due.
    #[serde(default)]
    pub force: bool,
}

impl PassRequest {
    /// Decode a trigger's payload: empty (defaults), the JSON object itself, or a Pub/Sub push
    /// envelope (`{"message": {"data": base64(JSON)}, …}`) around it.
    pub fn from_payload(payload: &[u8]) -> Result<PassRequest, String> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Ok(PassRequest::default());
        }
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| format!("body is not JSON: {e}"))?;
        if let Some(data) = value
            .get("message")
            .filter(|_| value.get("only").is_none() && value.get("force").is_none())
        {
            let inner = match data.get("data").and_then(|d| d.as_str()) {
                None => Vec::new(),
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("message.data is not base64: {e}"))?,
            };
            return PassRequest::from_payload(&inner);
        }
        let mut request: PassRequest = serde_path_to_error::deserialize(value)
            .map_err(|e| format!("body field {}: {}", e.path(), e.inner()))?;
        request.only.sort();
        request.only.dedup();
        Ok(request)
    }
}

/// The result of one pass, shared by every trigger that joined it.
#[derive(Debug, Clone, Serialize)]
pub struct PassResult {
    pub id: u64,
    #[serde(flatten)]
    pub request: PassRequest,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub duration_seconds: f64,
    #[serde(skip)]
    pub report: RunReport,
}

type PassFuture = Shared<BoxFuture<'static, Arc<PassResult>>>;

struct Running {
    request: PassRequest,
    result: PassFuture,
}

/// The state behind every route.
pub struct Service {
    renewer: Arc<Renewer>,
    running: Mutex<Option<Running>>,
    next_id: AtomicU64,
    counters: Mutex<Counters>,
    /// Cancelled when running passes must stop.
    cancel_passes: CancellationToken,
    /// Cancelled when shutdown begins: no new passes.
    stopping: CancellationToken,
}

impl Service {
    pub fn new(renewer: Arc<Renewer>) -> Arc<Service> {
        Arc::new(Service {
            renewer,
            running: Mutex::new(None),
            next_id: AtomicU64::new(0),
            counters: Mutex::new(Counters::default()),
            cancel_passes: CancellationToken::new(),
            stopping: CancellationToken::new(),
        })
    }

    /// Run a pass, or join the one running with the same options. Returns the result and
    /// whether it was joined.
    pub async fn trigger(self: &Arc<Self>, request: PassRequest) -> (Arc<PassResult>, bool) {
        // A forced pass that had to wait for another one takes what that one issued.
        let asked = OffsetDateTime::now_utc();
        enum Next {
            Join(PassFuture),
            WaitFor(PassFuture),
            Started(PassFuture),
        }
        loop {
            let next = {
                let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                match running.as_ref() {
                    Some(r) if r.result.peek().is_none() && r.request == request => {
                        Next::Join(r.result.clone())
                    }
                    Some(r) if r.result.peek().is_none() => Next::WaitFor(r.result.clone()),
                    _ => {
                        let future = self.start(request.clone(), asked);
                        *running = Some(Running {
                            request: request.clone(),
                            result: future.clone(),
                        });
                        Next::Started(future)
                    }
                }
            };
            match next {
                Next::Join(f) => return (f.await, true),
                Next::Started(f) => return (f.await, false),
                Next::WaitFor(other) => {
                    tracing::info!("a pass with other options is running; waiting for it");
                    other.await;
                }
            }
        }
    }

    fn start(self: &Arc<Self>, request: PassRequest, asked: OffsetDateTime) -> PassFuture {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let this = self.clone();
        let options = RunOptions {
            force: request.force,
            only: request.only.clone(),
            cancel: self.cancel_passes.clone(),
            requested_at: Some(asked),
        };
        let span = tracing::info_span!("pass", pass = id);
        let selected = self.selected(&options.only);
        let (force, only) = (options.force, options.only.clone());
        let task = tokio::spawn(
            async move {
                tracing::info!(force = options.force, only = ?options.only, "renewal pass started");
                let started_at = OffsetDateTime::now_utc();
                let clock = Instant::now();
                let report = this.renewer.run(&options).await;
                let result = Arc::new(PassResult {
                    id,
                    request,
                    started_at,
                    duration_seconds: clock.elapsed().as_secs_f64(),
                    report,
                });
                this.record(&result);
                tracing::info!(
                    ok = result.report.ok(),
                    duration_seconds = result.duration_seconds,
                    "renewal pass ended"
                );
                result
            }
            .instrument(span),
        );
        async move {
            match task.await {
                Ok(result) => result,
                // A panic inside a pass must not take the service down with it, nor leave the
                // callers without an answer.
                Err(e) => Arc::new(PassResult {
                    id,
                    request: PassRequest { only, force },
                    started_at: OffsetDateTime::now_utc(),
                    duration_seconds: 0.0,
                    report: RunReport {
                        certificates: selected
                            .into_iter()
                            .map(|name| CertReport {
                                name,
                                outcome: Outcome::Failed {
                                    error: format!("internal error in the renewal pass: {e}"),
                                },
                                serial: None,
                                not_after: None,
                            })
                            .collect(),
                    },
                }),
            }
        }
        .boxed()
        .shared()
    }

    fn selected(&self, only: &[String]) -> Vec<String> {
        self.renewer
            .config
            .certificates
            .iter()
            .filter(|c| only.is_empty() || only.contains(&c.name))
            .map(|c| c.name.clone())
            .collect()
    }

    fn record(&self, result: &PassResult) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for cert in &result.report.certificates {
            match cert.outcome {
                Outcome::Renewed { .. } => *c.renewals.entry(cert.name.clone()).or_default() += 1,
                Outcome::Failed { .. } => *c.failures.entry(cert.name.clone()).or_default() += 1,
                Outcome::Unchanged { .. } => {}
            }
        }
        if result.report.ok() {
            c.passes_ok += 1;
        } else {
            c.passes_failed += 1;
        }
        c.last_pass_seconds = Some(result.duration_seconds);
        c.last_pass_end = Some(OffsetDateTime::now_utc());
        c.pass_seconds_sum += result.duration_seconds;
    }

    /// Whether a pass is running now.
    pub fn pass_running(&self) -> bool {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.as_ref().is_some_and(|r| r.result.peek().is_none())
    }

    /// Resolves when no pass is running.
    pub async fn idle(&self) {
        let future = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            running.as_ref().map(|r| r.result.clone())
        };
        if let Some(f) = future {
            f.await;
        }
    }

    async fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot {
            store_up: true,
            counters: self
                .counters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            certificates: BTreeMap::new(),
        };
        for cert in &self.renewer.config.certificates {
            let sample = match self.renewer.primary.current_meta(&cert.name).await {
                Ok(meta) => {
                    let st = crate::cloud::state::load(&self.renewer.store, &cert.name).await;
                    Some(CertSample {
                        not_after: meta.map(|m| m.not_after),
                        last_success: st.last_success,
                        consecutive_failures: st.consecutive_failures,
                    })
                }
                Err(e) => {
                    tracing::warn!(certificate = cert.name, error = %e, "metrics: cannot read the store");
                    snapshot.store_up = false;
                    None
                }
            };
            snapshot.certificates.insert(cert.name.clone(), sample);
        }
        snapshot
    }
}

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
    let text = metrics::render(&service.snapshot().await);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
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
mod tests {
    use super::*;
    use crate::shared::config::Config;
    use crate::shared::store::{Precondition, Sensitivity};
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn service(dir: &std::path::Path) -> Arc<Service> {
        let text = format!(
            "[acme]\ndirectory = \"https://127.0.0.1:1/dir\"\n\
             [store]\nurl = \"file://{}\"\n\
             [serve]\nmax_body_bytes = 2048\n\
             [[certificates]]\nname = \"app\"\ndomains = [\"app.example.com\"]\n",
            dir.display()
        );
        let config = Config::parse(&text, "test.toml", &[]).unwrap();
        Service::new(Arc::new(Renewer::new(config).await.unwrap()))
    }

    async fn call(svc: &Arc<Service>, req: Request<Body>) -> (StatusCode, String) {
        let cfg = ServeConfig {
            max_body_bytes: 2048,
            ..Default::default()
        };
        let resp = app(svc.clone(), &cfg).oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn post(body: &str) -> Request<Body> {
        Request::builder()
            .method("POST")
            .uri("/")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    fn get_req(path: &str) -> Request<Body> {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[test]
    fn pass_requests_from_every_payload_form() {
        assert_eq!(
            PassRequest::from_payload(b"").unwrap(),
            PassRequest::default()
        );
        assert_eq!(
            PassRequest::from_payload(b" \n").unwrap(),
            PassRequest::default()
        );
        assert_eq!(
            PassRequest::from_payload(br#"{"force":true,"only":["b","a","b"]}"#).unwrap(),
            PassRequest {
                force: true,
                only: vec!["a".into(), "b".into()]
            }
        );
        // Pub/Sub push envelope: data = base64('{"force":true}').
        let envelope =
            br#"{"message":{"data":"eyJmb3JjZSI6dHJ1ZX0=","messageId":"1"},"subscription":"s"}"#;
        assert!(PassRequest::from_payload(envelope).unwrap().force);
        let empty_message = br#"{"message":{"messageId":"1"}}"#;
        assert_eq!(
            PassRequest::from_payload(empty_message).unwrap(),
            PassRequest::default()
        );
        let e = PassRequest::from_payload(br#"{"forse":true}"#).unwrap_err();
        assert!(e.contains("forse"), "{e}");
        let e = PassRequest::from_payload(br#"{"force":"yes"}"#).unwrap_err();
        assert!(e.contains("force"), "{e}");
        assert!(PassRequest::from_payload(b"{nope").is_err());
    }

    #[tokio::test]
    async fn bad_bodies_are_400_and_big_ones_413() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        let (status, body) = call(&svc, post("{not json")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("not JSON"), "{body}");
        let (status, body) = call(&svc, post(r#"{"only":["nope"]}"#)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("no certificate named nope"), "{body}");
        let (status, body) = call(&svc, post(r#"{"force":1}"#)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let big = format!(r#"{{"only":["{}"]}}"#, "a".repeat(4096));
        let (status, _) = call(&svc, post(&big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let structured = Request::builder()
            .method("POST")
            .uri("/")
            .header("content-type", "application/cloudevents+json")
            .body(Body::from(
                r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":{"only":["x"]}}"#,
            ))
            .unwrap();
        let (status, body) = call(&svc, structured).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("no certificate named x"), "{body}");
    }

    #[tokio::test]
    async fn health_metrics_and_unknown_paths() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        assert_eq!(call(&svc, get_req("/healthz")).await.0, StatusCode::OK);
        let (status, text) = call(&svc, get_req("/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("acme_edge_renewal_failures_total{certificate=\"app\"} 0"));
        assert!(text.contains("acme_edge_store_up 1"));
        assert_eq!(call(&svc, get_req("/nope")).await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            call(&svc, get_req("/")).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        svc.stopping.cancel();
        assert_eq!(
            call(&svc, get_req("/healthz")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            call(&svc, post("")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn challenges_come_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        let token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
        let path = format!("/.well-known/acme-challenge/{token}");
        assert_eq!(call(&svc, get_req(&path)).await.0, StatusCode::NOT_FOUND);
        svc.renewer
            .store
            .put(
                &keys::challenge(token),
                b"answer.thumb",
                Precondition::None,
                Sensitivity::Public,
            )
            .await
            .unwrap();
        let (status, body) = call(&svc, get_req(&path)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "answer.thumb");
        for bad in [
            "short",
            "has.dot.and.is.long.enough",
            "%2e%2e%2fsecret-0123456789",
        ] {
            let (status, _) =
                call(&svc, get_req(&format!("/.well-known/acme-challenge/{bad}"))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
        }
    }
}
