//! The passes behind `POST /`: one at a time, joined by triggers with the same options, each
//! in its own task, counted for `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use futures_util::future::{BoxFuture, Shared};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cloud::run::{CertReport, Outcome, Renewer, RunOptions, RunReport};
use crate::shared::bundle::BundleStore;
use crate::shared::metrics::{CertSample, Counters, Snapshot};

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
    /// The pass's number in this process, from 1 (also the `pass` of its log lines).
    pub id: u64,
    /// The options it ran with.
    #[serde(flatten)]
    pub request: PassRequest,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// How long it took, seconds.
    pub duration_seconds: f64,
    /// What it did per certificate (answered as `certificates`, next to the pass).
    #[serde(skip)]
    pub report: RunReport,
}

/// A pass's result, awaited by every trigger that joined it.
type PassFuture = Shared<BoxFuture<'static, Arc<PassResult>>>;

/// The pass started last, and the options it runs with.
struct Running {
    request: PassRequest,
    result: PassFuture,
}

/// The state behind every route.
pub struct Service {
    pub(super) renewer: Arc<Renewer>,
    running: Mutex<Option<Running>>,
    next_id: AtomicU64,
    counters: Mutex<Counters>,
    /// Cancelled when running passes must stop.
    pub(super) cancel_passes: CancellationToken,
    /// Cancelled when shutdown begins: no new passes.
    pub(super) stopping: CancellationToken,
}

impl Service {
    /// The service of `renewer`, no pass running.
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

    /// Start a pass in its own task; the future resolves to its result, or to a failure of
    /// every selected certificate when the task panicked.
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

    /// The configured certificates `only` selects (all when empty).
    fn selected(&self, only: &[String]) -> Vec<String> {
        self.renewer
            .config
            .certificates
            .iter()
            .filter(|c| only.is_empty() || only.contains(&c.name))
            .map(|c| c.name.clone())
            .collect()
    }

    /// Count a pass for `/metrics`.
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

    /// What `/metrics` shows: certificates as the store has them, and this process's counters.
    pub(super) async fn snapshot(&self) -> Snapshot {
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
                        not_after: meta.as_ref().map(|m| m.not_after),
                        last_success: st.last_success,
                        consecutive_failures: st.consecutive_failures,
                        ca: meta.and_then(|m| m.ca),
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
