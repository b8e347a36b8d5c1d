//! The HTTP client instant-acme talks to the CA through: our own roots and timeouts, and the
//! last answer's status and `Retry-After` kept per order so errors can be classified.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient, Problem};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::shared::config::Config;

use super::AcmeError;

/// What the last error response of the CA said about retrying, recorded by [`CaHttp`] because
/// `instant-acme` drops the headers of error responses.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResponseHint {
    pub(super) status: u16,
    pub(super) retry_after: Option<SystemTime>,
}

/// Where the last error response is recorded.
pub(super) type HintSlot = Arc<Mutex<Option<ResponseHint>>>;

tokio::task_local! {
    /// The hint slot of the order (or ARI request) being driven. Several orders share one
    /// account, hence one [`CaHttp`], when a pass renews certificates concurrently: each
    /// order runs inside [`with_own_hints`] so that its errors are explained by its own
    /// responses, not by another order's 429. `scope` sets it only while that order's future
    /// is polled, and instant-acme calls the HTTP client from inside that poll.
    static ORDER_HINT: HintSlot;
}

/// The slot of the current order when there is one, else the account's shared slot
/// (account creation and loading, which happen once).
pub(super) fn hint_slot(shared: &HintSlot) -> HintSlot {
    ORDER_HINT
        .try_with(Arc::clone)
        .unwrap_or_else(|_| shared.clone())
}

/// Runs `fut` with a hint slot of its own.
pub(super) async fn with_own_hints<T>(fut: impl Future<Output = T>) -> T {
    ORDER_HINT.scope(Arc::new(Mutex::new(None)), fut).await
}

/// The HTTP client for the CA: web roots plus `acme.extra_root_ca`, a per-request timeout,
/// and a record of the last error status and `Retry-After`.
pub(super) struct CaHttp {
    client: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    timeout: Duration,
    last_error: HintSlot,
}

impl HttpClient for CaHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.client.request(req);
        let timeout = self.timeout;
        let last_error = hint_slot(&self.last_error);
        Box::pin(async move {
            let rsp = match tokio::time::timeout(timeout, fut).await {
                Ok(Ok(rsp)) => rsp,
                Ok(Err(e)) => return Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => {
                    return Err(instant_acme::Error::Other(
                        format!("no answer from the CA within {} s", timeout.as_secs()).into(),
                    ))
                }
            };
            let status = rsp.status().as_u16();
            if status >= 400 {
                let retry_after = retry_after(rsp.headers());
                if let Ok(mut slot) = last_error.lock() {
                    *slot = Some(ResponseHint {
                        status,
                        retry_after,
                    });
                }
            }
            Ok(BytesResponse::from(rsp))
        })
    }
}

pub(super) fn retry_after(headers: &http::HeaderMap) -> Option<SystemTime> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(SystemTime::now() + Duration::from_secs(secs));
    }
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822)
        .ok()
        .map(SystemTime::from)
}

pub(super) fn build_http(config: &Config, last_error: HintSlot) -> Result<CaHttp, AcmeError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &config.acme.extra_root_ca {
        let added = add_roots(&mut roots, path)?;
        tracing::debug!(file = %path.display(), added, "trusting extra roots for the CA");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| AcmeError::Other(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client = HyperClient::builder(TokioExecutor::new()).build(connector);
    Ok(CaHttp {
        client,
        timeout: Duration::from_secs(config.acme.request_timeout_seconds),
        last_error,
    })
}

pub(super) fn add_roots(
    roots: &mut rustls::RootCertStore,
    path: &Path,
) -> Result<usize, AcmeError> {
    let bad = |m: String| AcmeError::Other(format!("acme.extra_root_ca {}: {m}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("no usable certificate in the file".into()));
    }
    Ok(added)
}

pub(super) fn problem_text(p: &Problem) -> String {
    let mut s = p.detail.clone().unwrap_or_else(|| "no detail".into());
    if let Some(t) = &p.r#type {
        s.push_str(&format!(" ({t})"));
    }
    s
}

/// Whether an ACME problem is worth another attempt (RFC 8555 §6.7): rate limited, the CA's
/// own fault, or a stale nonce; anything else is the CA refusing.
pub(super) fn is_transient(status: u16, kind: &str) -> bool {
    status == 429
        || status >= 500
        || kind.ends_with(":rateLimited")
        || kind.ends_with(":serverInternal")
        || kind.ends_with(":badNonce")
}

/// An instant-acme error as ours (transient, rejected, account gone, other), with the status
/// and `Retry-After` that [`CaHttp`] recorded for it.
pub(super) fn classify(
    e: instant_acme::Error,
    last_error: &Mutex<Option<ResponseHint>>,
) -> AcmeError {
    let hint = last_error.lock().ok().and_then(|mut s| s.take());
    let retry_after = hint.and_then(|h| h.retry_after);
    match e {
        instant_acme::Error::Api(problem) => {
            let status = problem.status.or(hint.map(|h| h.status)).unwrap_or(0);
            let kind = problem.r#type.as_deref().unwrap_or("");
            let transient = is_transient(status, kind);
            let message = format!("the CA answered: {}", problem_text(&problem));
            if kind.ends_with(":accountDoesNotExist") {
                AcmeError::AccountGone(message)
            } else if transient {
                AcmeError::Transient {
                    message,
                    retry_after,
                }
            } else {
                AcmeError::Rejected(message)
            }
        }
        // Connection refused, TLS, timeouts, a body that is not JSON (a proxy's 502 page).
        instant_acme::Error::Other(_)
        | instant_acme::Error::Hyper(_)
        | instant_acme::Error::Timeout(_)
        | instant_acme::Error::Json(_) => AcmeError::Transient {
            message: match hint {
                Some(h) if h.status >= 400 => format!("the CA answered HTTP {}: {e}", h.status),
                _ => format!("cannot reach the CA: {e}"),
            },
            retry_after,
        },
        other => AcmeError::Other(format!("ACME: {other}")),
    }
}
