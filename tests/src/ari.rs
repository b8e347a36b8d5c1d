//! ACME Renewal Information (ARI, RFC 9773) in front of Pebble 2.4, which has none.
//!
//! The renewer asks the CA when to renew (`renewalInfo` in the directory). Pebble 2.4 has no
//! such endpoint, so this HTTPS server serves a directory that is Pebble's plus `renewalInfo`
//! pointing here, and answers renewal-info requests with a window the test sets.
//!
//! Two modes:
//!
//! * [`AriResponder::start`]: every other directory URL still points at Pebble, so the client
//!   talks to Pebble directly for the ACME exchange itself;
//! * [`AriResponder::start_proxying`]: every URL points here and the ACME requests are
//!   forwarded to Pebble, so that `replaces` (RFC 9773 §5) works: Pebble 2.4 ignores the field
//!   and does not echo it in the order, and instant-acme 0.8 fails an order whose response
//!   lacks the `replaces` it sent ("replaces field mismatch"). The proxy echoes it into the
//!   order (on creation and on later fetches) and records it for assertions.
//!
//! It serves Pebble's API certificate, so the one extra root the renewer trusts
//! ([`Pebble::api_cert_path`]) covers both servers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::client::{https_request, RawResponse};
use crate::pebble::Pebble;
use crate::server::ServerTask;

/// What [`AriResponder`] answers when the test set nothing else: 6 hours, as Let's Encrypt.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug)]
struct AriState {
    port: u16,
    /// Forward the ACME API to Pebble (see the module doc).
    proxy: bool,
    pebble_port: u16,
    pebble_cert_pem: String,
    window: Option<(SystemTime, SystemTime)>,
    retry_after: Duration,
    forced_status: Option<u16>,
    cert_ids: Vec<String>,
    /// Proxy mode: the `replaces` of every accepted newOrder, and per order and finalize path
    /// the value to echo.
    replaces_sent: Vec<String>,
    replaces_by_order: HashMap<String, String>,
    /// Proxy mode: answer the next `remaining` requests whose path starts with `prefix` with
    /// an ACME problem instead of forwarding them.
    fault: Option<Fault>,
    faults_served: usize,
}

#[derive(Debug, Clone)]
struct Fault {
    prefix: String,
    remaining: usize,
    status: u16,
    retry_after: Option<u64>,
}

/// A running ARI responder on 127.0.0.1 (HTTPS, HTTP/1.1 and h2). Dropping it closes the
/// listener and every connection.
///
/// * `GET /dir` → Pebble's directory (fetched per request) plus
///   `"renewalInfo": "https://127.0.0.1:<port>/renewal-info"`; 502 if Pebble does not answer;
/// * `GET /renewal-info/<cert id>` → `{"suggestedWindow":{"start":…,"end":…}}` (RFC 3339, UTC,
///   whole seconds) with `Retry-After: <seconds>` (instant-acme 0.8 refuses an answer without
///   one); 404 until [`AriResponder::set_window`] is called. The id is recorded, whatever the
///   answer;
/// * anything else → 404, or in proxy mode forwarded to Pebble (502 if it does not answer).
#[derive(Debug)]
pub struct AriResponder {
    state: Arc<Mutex<AriState>>,
    server: ServerTask,
}

impl AriResponder {
    /// Directory URLs other than `renewalInfo` point at Pebble.
    pub async fn start(pebble: &Pebble) -> Result<AriResponder> {
        Self::start_mode(pebble, false).await
    }

    /// Every directory URL points here; ACME requests are forwarded to Pebble, with `replaces`
    /// echoed into orders (see the module doc).
    pub async fn start_proxying(pebble: &Pebble) -> Result<AriResponder> {
        Self::start_mode(pebble, true).await
    }

    async fn start_mode(pebble: &Pebble, proxy: bool) -> Result<AriResponder> {
        let key_pem = std::fs::read(pebble.api_key_path()).context("read Pebble API key")?;
        let certs = CertificateDer::pem_slice_iter(pebble.api_cert_pem().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("parse Pebble API certificate")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).context("parse Pebble API key")?;
        // An explicit provider, as in `client::tls_client_config`.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("ARI server certificate")?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let state = Arc::new(Mutex::new(AriState {
            port: 0,
            proxy,
            pebble_port: pebble.api_port(),
            pebble_cert_pem: pebble.api_cert_pem().to_string(),
            window: None,
            retry_after: DEFAULT_RETRY_AFTER,
            forced_status: None,
            cert_ids: Vec::new(),
            replaces_sent: Vec::new(),
            replaces_by_order: HashMap::new(),
            fault: None,
            faults_served: 0,
        }));
        let router = Router::new()
            .route("/dir", get(directory))
            .route("/renewal-info/{cert_id}", get(renewal_info))
            .fallback(forward)
            .with_state(state.clone());
        let server = ServerTask::spawn_on(0, router, Some(Arc::new(tls))).await?;
        state.lock().unwrap().port = server.port();
        Ok(AriResponder { state, server })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `https://127.0.0.1:<port>/dir`: give this to the ACME client instead of Pebble's.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port())
    }

    /// `https://127.0.0.1:<port>/renewal-info`, as announced in the directory.
    pub fn renewal_info_url(&self) -> String {
        format!("https://127.0.0.1:{}/renewal-info", self.port())
    }

    /// The suggested window for every certificate from now on (the responder does not check
    /// which certificate is asked about; assert on [`AriResponder::cert_ids`] instead).
    /// A window in the past means "renew now".
    pub fn set_window(&self, start: SystemTime, end: SystemTime) {
        self.state.lock().unwrap().window = Some((start, end));
    }

    /// Back to answering 404 (as for an unknown certificate).
    pub fn clear_window(&self) {
        self.state.lock().unwrap().window = None;
    }

    /// The `Retry-After` sent with a window (whole seconds). Default [`DEFAULT_RETRY_AFTER`].
    pub fn set_retry_after(&self, retry_after: Duration) {
        self.state.lock().unwrap().retry_after = retry_after;
    }

    /// With `Some(status)`, renewal-info requests get that status and an empty body (e.g. 500,
    /// to check the client falls back to its own schedule). The directory is unaffected.
    pub fn force_status(&self, status: Option<u16>) {
        self.state.lock().unwrap().forced_status = status;
    }

    /// The certificate ids (`<base64url AKI>.<base64url serial>`) asked about, in order.
    pub fn cert_ids(&self) -> Vec<String> {
        self.state.lock().unwrap().cert_ids.clone()
    }

    /// Proxy mode: the `replaces` value of every newOrder Pebble accepted, in order (a newOrder
    /// refused with `badNonce` and retried counts once).
    pub fn replaces_sent(&self) -> Vec<String> {
        self.state.lock().unwrap().replaces_sent.clone()
    }

    /// Proxy mode: the next `count` requests whose path starts with `path_prefix` (e.g.
    /// `/order-plz`) are answered with `status` and an ACME problem document (`rateLimited` for
    /// 429, `serverInternal` otherwise), plus `Retry-After: <seconds>` when given, instead of
    /// reaching Pebble.
    pub fn fail_next(
        &self,
        path_prefix: &str,
        count: usize,
        status: u16,
        retry_after: Option<u64>,
    ) {
        self.state.lock().unwrap().fault = Some(Fault {
            prefix: path_prefix.to_string(),
            remaining: count,
            status,
            retry_after,
        });
    }

    /// How many requests [`AriResponder::fail_next`] has answered so far.
    pub fn faults_served(&self) -> usize {
        self.state.lock().unwrap().faults_served
    }

    /// Closes the listener and every open connection.
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }
}

async fn directory(State(state): State<Arc<Mutex<AriState>>>) -> Response {
    let (port, pebble_port, pem, proxy) = {
        let st = state.lock().unwrap();
        (
            st.port,
            st.pebble_port,
            st.pebble_cert_pem.clone(),
            st.proxy,
        )
    };
    // Pebble builds its URLs from the Host it is asked with.
    let host = format!("127.0.0.1:{}", if proxy { port } else { pebble_port });
    let headers = [("host", host.as_str())];
    let fetched = https_request(pebble_port, "127.0.0.1", &pem, "GET", "/dir", &headers, b"").await;
    let mut dir = match fetched.map(|resp| {
        (
            resp.status,
            serde_json::from_slice::<serde_json::Value>(&resp.body),
        )
    }) {
        Ok((200, Ok(serde_json::Value::Object(dir)))) => dir,
        other => {
            let msg = format!("Pebble's directory unavailable: {other:?}");
            return (StatusCode::BAD_GATEWAY, msg).into_response();
        }
    };
    dir.insert(
        "renewalInfo".to_string(),
        format!("https://127.0.0.1:{port}/renewal-info").into(),
    );
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Object(dir).to_string(),
    )
        .into_response()
}

async fn renewal_info(
    State(state): State<Arc<Mutex<AriState>>>,
    Path(cert_id): Path<String>,
) -> Response {
    let mut st = state.lock().unwrap();
    st.cert_ids.push(cert_id);
    if let Some(status) = st.forced_status {
        return StatusCode::from_u16(status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }
    let Some((start, end)) = st.window else {
        return (StatusCode::NOT_FOUND, "no suggested window set").into_response();
    };
    let body = serde_json::json!({
        "suggestedWindow": { "start": rfc3339(start), "end": rfc3339(end) },
    });
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::RETRY_AFTER, st.retry_after.as_secs().to_string()),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Proxy mode: forwards the request to Pebble as received, `Host` included (Pebble checks the
/// JWS `url` against it and builds the URLs it returns from it), and echoes `replaces` into
/// orders. Direct mode: 404.
/// Consume one injected fault for `path`, if one is armed.
fn take_fault(state: &Mutex<AriState>, path: &str) -> Option<Fault> {
    let mut st = state.lock().unwrap();
    let fault = st.fault.as_mut()?;
    if fault.remaining == 0 || !path.starts_with(&fault.prefix) {
        return None;
    }
    fault.remaining -= 1;
    let taken = fault.clone();
    st.faults_served += 1;
    Some(taken)
}

async fn forward(
    State(state): State<Arc<Mutex<AriState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (proxy, port, pebble_port, pem) = {
        let st = state.lock().unwrap();
        (
            st.proxy,
            st.port,
            st.pebble_port,
            st.pebble_cert_pem.clone(),
        )
    };
    if !proxy {
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    if let Some(fault) = take_fault(&state, path) {
        let kind = if fault.status == 429 {
            "rateLimited"
        } else {
            "serverInternal"
        };
        let problem = serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{kind}"),
            "detail": format!("injected by the test ({})", fault.status),
            "status": fault.status,
        });
        let mut resp = (
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, "application/problem+json")],
            problem.to_string(),
        )
            .into_response();
        if let Some(secs) = fault.retry_after {
            if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        return resp;
    }
    // h2 has no Host header; its :authority lands in the URI.
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| format!("127.0.0.1:{port}"));
    let mut fwd: Vec<(&str, &str)> = vec![("host", &host)];
    for (name, value) in &headers {
        let hop = matches!(
            name.as_str(),
            "host" | "connection" | "keep-alive" | "te" | "transfer-encoding" | "content-length"
        );
        if let (false, Ok(value)) = (hop, value.to_str()) {
            fwd.push((name.as_str(), value));
        }
    }
    let replaces = (method == Method::POST)
        .then(|| jws_payload(&body).ok())
        .flatten()
        .and_then(|p| Some(p.get("replaces")?.as_str()?.to_string()));
    let resp = match https_request(
        pebble_port,
        "127.0.0.1",
        &pem,
        method.as_str(),
        path,
        &fwd,
        &body,
    )
    .await
    {
        Ok(resp) => resp,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("{e:#}")).into_response(),
    };

    let location = resp.header("location").map(str::to_string);
    let RawResponse {
        status,
        headers: resp_headers,
        mut body,
        ..
    } = resp;
    {
        let mut st = state.lock().unwrap();
        let echo = match (replaces, status, location) {
            (Some(replaces), 201, Some(location)) => {
                // A new order: remember its URL and its finalize URL (both answer with the
                // order) by path, whatever authority the client used.
                st.replaces_sent.push(replaces.clone());
                let finalize = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|order| Some(order.get("finalize")?.as_str()?.to_string()));
                for url in [Some(location), finalize].into_iter().flatten() {
                    if let Ok(url) = url.parse::<Uri>() {
                        st.replaces_by_order
                            .insert(url.path().to_string(), replaces.clone());
                    }
                }
                Some(replaces)
            }
            _ => st.replaces_by_order.get(uri.path()).cloned(),
        };
        if let Some(echo) = echo {
            if let Ok(serde_json::Value::Object(mut order)) = serde_json::from_slice(&body) {
                order.insert("replaces".to_string(), echo.into());
                body = serde_json::Value::Object(order).to_string().into_bytes();
            }
        }
    }

    let mut out = Response::new(axum::body::Body::from(body));
    *out.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in &resp_headers {
        let skip = matches!(
            name.to_ascii_lowercase().as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "content-length"
        );
        if let (false, Ok(name), Ok(value)) = (
            skip,
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            out.headers_mut().append(name, value);
        }
    }
    out
}

/// The JSON payload of a flattened JWS (`{"protected","payload","signature"}`), unverified.
fn jws_payload(body: &[u8]) -> Result<serde_json::Value> {
    let jws: serde_json::Value = serde_json::from_slice(body)?;
    let payload = jws["payload"]
        .as_str()
        .ok_or_else(|| anyhow!("no payload"))?;
    Ok(serde_json::from_slice(&base64url_decode(payload)?)?)
}

/// Unpadded base64url (RFC 4648 §5), as JWS uses. Hand-rolled for the one field the proxy
/// reads, rather than a dependency.
fn base64url_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return Err(anyhow!("invalid base64url character {:?}", c as char)),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC, sub-seconds dropped), the form ARI windows use. Hand-rolled
/// (days-to-civil from H. Hinnant's date algorithms) to keep the harness free of a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let secs: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        // Round towards the past, like the positive case.
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> SystemTime {
        if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    }

    #[test]
    fn decodes_base64url() {
        assert_eq!(base64url_decode("").unwrap(), b"");
        assert_eq!(base64url_decode("Zg").unwrap(), b"f");
        assert_eq!(base64url_decode("Zm8").unwrap(), b"fo");
        assert_eq!(base64url_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64url_decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert!(base64url_decode("a+b").is_err());
        let payload = jws_payload(
            br#"{"protected":"e30","payload":"eyJyZXBsYWNlcyI6ImEuYiJ9","signature":"x"}"#,
        )
        .unwrap();
        assert_eq!(payload["replaces"], "a.b");
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_709_251_199)), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(at(4_102_444_800)), "2100-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(-1)), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_500)),
            "1970-01-01T00:00:01Z"
        );
    }
}
