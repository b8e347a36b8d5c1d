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
//! * [`serve`] listens where Cloud Run says (`$PORT`), and on shutdown stops accepting at once,
//!   lets requests in flight finish, and returns at the latest after a deadline, because Cloud
//!   Run sends SIGKILL 10 s after SIGTERM.
//!
//! Nothing here knows about certificates: the renewer plugs its handler and extra routes in.

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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

/// How the function was invoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A plain HTTP trigger: the body as sent (may be empty).
    Http {
        content_type: Option<String>,
        #[serde(serialize_with = "lossy")]
        body: Bytes,
    },
    /// A CloudEvent (v1.0 or 0.3), whichever way it was encoded.
    CloudEvent(CloudEvent),
}

impl Event {
    /// The payload the function should act on: the HTTP body, or the event's data.
    pub fn payload(&self) -> &[u8] {
        match self {
            Event::Http { body, .. } => body,
            Event::CloudEvent(ce) => &ce.data,
        }
    }
}

/// The attributes and data of a CloudEvent (CloudEvents 1.0 §3.1, §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub specversion: String,
    pub subject: Option<String>,
    pub time: Option<String>,
    pub datacontenttype: Option<String>,
    /// Extension attributes (other `ce-*` headers or top-level members), as strings.
    pub extensions: BTreeMap<String, String>,
    /// The data: the body in binary mode; in structured mode `data_base64` decoded, a JSON
    /// string's text when the content type is not JSON, or else `data` serialized as JSON.
    #[serde(serialize_with = "lossy")]
    pub data: Bytes,
}

fn lossy<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// One invocation as the handler sees it.
#[derive(Debug, Clone)]
pub struct Invocation {
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

/// Decode the request into an [`Event`] (see the module docs for the three forms).
pub fn decode_event(headers: &HeaderMap, body: Bytes) -> Result<Event, String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let media_type = content_type.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if media_type.as_deref() == Some("application/cloudevents+json") {
        return structured(&body).map(Event::CloudEvent);
    }
    if headers.contains_key("ce-specversion")
        || headers.contains_key("ce-id")
        || headers.contains_key("ce-type")
    {
        return binary(headers, content_type, body).map(Event::CloudEvent);
    }
    Ok(Event::Http { content_type, body })
}

const SPEC_VERSIONS: [&str; 2] = ["1.0", "0.3"];

fn check_required(id: &str, source: &str, ty: &str, specversion: &str) -> Result<(), String> {
    if !SPEC_VERSIONS.contains(&specversion) {
        return Err(format!(
            "CloudEvent specversion {specversion:?} is not supported (1.0 or 0.3)"
        ));
    }
    for (name, value) in [("id", id), ("source", source), ("type", ty)] {
        if value.is_empty() {
            return Err(format!("CloudEvent attribute {name} must not be empty"));
        }
    }
    Ok(())
}

/// Binary content mode: attributes in `ce-*` headers (CloudEvents HTTP binding §3.1).
fn binary(
    headers: &HeaderMap,
    content_type: Option<String>,
    body: Bytes,
) -> Result<CloudEvent, String> {
    let mut attrs = BTreeMap::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| format!("header {name} is not visible ASCII"))?;
        // Header values are percent-encoded where they are not printable ASCII (§3.1.3.2).
        let value = percent_decode(value).ok_or_else(|| format!("header {name}: bad escape"))?;
        attrs.insert(attr.to_string(), value);
    }
    let mut take = |name: &str| attrs.remove(name);
    let id = take("id").ok_or("CloudEvent header ce-id is missing")?;
    let source = take("source").ok_or("CloudEvent header ce-source is missing")?;
    let ty = take("type").ok_or("CloudEvent header ce-type is missing")?;
    let specversion = take("specversion").ok_or("CloudEvent header ce-specversion is missing")?;
    check_required(&id, &source, &ty, &specversion)?;
    Ok(CloudEvent {
        subject: take("subject"),
        time: take("time"),
        datacontenttype: content_type,
        id,
        source,
        ty,
        specversion,
        extensions: attrs,
        data: body,
    })
}

/// Structured content mode: the whole event as one JSON object (JSON event format §3).
fn structured(body: &[u8]) -> Result<CloudEvent, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not a JSON CloudEvent: {e}"))?;
    let serde_json::Value::Object(mut members) = value else {
        return Err("a structured CloudEvent must be a JSON object".into());
    };
    let mut text = |name: &str| -> Result<Option<String>, String> {
        match members.remove(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("CloudEvent attribute {name} must be a string")),
        }
    };
    let id = text("id")?.ok_or("CloudEvent attribute id is missing")?;
    let source = text("source")?.ok_or("CloudEvent attribute source is missing")?;
    let ty = text("type")?.ok_or("CloudEvent attribute type is missing")?;
    let specversion = text("specversion")?.ok_or("CloudEvent attribute specversion is missing")?;
    check_required(&id, &source, &ty, &specversion)?;
    let subject = text("subject")?;
    let time = text("time")?;
    let datacontenttype = text("datacontenttype")?;
    let data_base64 = text("data_base64")?;
    let data = members.remove("data");
    let data = match (data, data_base64) {
        (Some(_), Some(_)) => return Err("a CloudEvent has data or data_base64, not both".into()),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("CloudEvent data_base64 is not base64: {e}"))?,
        (None, None) | (Some(serde_json::Value::Null), None) => Vec::new(),
        (Some(serde_json::Value::String(s)), None) if !is_json(datacontenttype.as_deref()) => {
            s.into_bytes()
        }
        (Some(v), None) => serde_json::to_vec(&v).map_err(|e| e.to_string())?,
    };
    let extensions = members
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    Ok(CloudEvent {
        id,
        source,
        ty,
        specversion,
        subject,
        time,
        datacontenttype,
        extensions,
        data: Bytes::from(data),
    })
}

/// JSON data unless a non-JSON content type says otherwise (JSON event format §3.1).
fn is_json(content_type: Option<&str>) -> bool {
    match content_type {
        None => true,
        Some(ct) => {
            let ct = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            ct == "application/json" || ct.ends_with("+json") || ct == "text/json"
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use axum::routing::get;
    use tower::ServiceExt;

    /// A function that answers with the event it received, so tests see the decoding.
    fn echo_app() -> Router {
        let extra = Router::new().route("/healthz", get(|| async { "ok" }));
        app(
            |inv: Invocation| async move { Json(inv.event).into_response() },
            &Options {
                max_body_bytes: 1024,
            },
            extra,
        )
    }

    async fn call(req: HttpRequest<Body>) -> (StatusCode, serde_json::Value) {
        let resp = echo_app().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    fn post() -> axum::http::request::Builder {
        HttpRequest::builder().method("POST").uri("/")
    }

    #[tokio::test]
    async fn plain_http_trigger_passes_the_body() {
        let (status, json) = call(
            post()
                .header("content-type", "application/json")
                .body(Body::from(r#"{"force":true}"#))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["kind"], "http");
        assert_eq!(json["body"], r#"{"force":true}"#);
        assert_eq!(json["content_type"], "application/json");
    }

    #[tokio::test]
    async fn empty_plain_trigger() {
        let (status, json) = call(post().body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["kind"], "http");
        assert_eq!(json["body"], "");
    }

    #[tokio::test]
    async fn binary_cloudevent() {
        let (status, json) = call(
            post()
                .header("ce-id", "1234")
                .header("ce-source", "//pubsub.googleapis.com/projects/p/topics/t")
                .header("ce-type", "google.cloud.pubsub.topic.v1.messagePublished")
                .header("ce-specversion", "1.0")
                .header("ce-subject", "renew%20now")
                .header("ce-traceparent", "00-abc-def-01")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"only":["app"]}"#))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["kind"], "cloud_event");
        assert_eq!(json["id"], "1234");
        assert_eq!(
            json["type"],
            "google.cloud.pubsub.topic.v1.messagePublished"
        );
        assert_eq!(json["subject"], "renew now");
        assert_eq!(json["extensions"]["traceparent"], "00-abc-def-01");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["data"], r#"{"only":["app"]}"#);
    }

    #[tokio::test]
    async fn structured_cloudevent_with_json_data() {
        let event = r#"{"specversion":"1.0","id":"e1","source":"//cloudscheduler","type":"t",
            "datacontenttype":"application/json","data":{"force":true},"myext":"x"}"#;
        let (status, json) = call(
            post()
                .header(
                    "content-type",
                    "application/cloudevents+json; charset=utf-8",
                )
                .body(Body::from(event))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["kind"], "cloud_event");
        assert_eq!(json["id"], "e1");
        assert_eq!(json["data"], r#"{"force":true}"#);
        assert_eq!(json["extensions"]["myext"], "x");
    }

    #[tokio::test]
    async fn structured_cloudevent_with_base64_and_text_data() {
        let event = r#"{"specversion":"1.0","id":"e2","source":"s","type":"t",
            "data_base64":"eyJmb3JjZSI6ZmFsc2V9"}"#;
        let (status, json) = call(
            post()
                .header("content-type", "application/cloudevents+json")
                .body(Body::from(event))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["data"], r#"{"force":false}"#);

        let event = r#"{"specversion":"1.0","id":"e3","source":"s","type":"t",
            "datacontenttype":"text/plain","data":"hello"}"#;
        let (_, json) = call(
            post()
                .header("content-type", "application/cloudevents+json")
                .body(Body::from(event))
                .unwrap(),
        )
        .await;
        assert_eq!(json["data"], "hello");
    }

    #[tokio::test]
    async fn malformed_cloudevents_are_400_naming_the_problem() {
        let cases: Vec<(HttpRequest<Body>, &str)> = vec![
            (
                post()
                    .header("content-type", "application/cloudevents+json")
                    .body(Body::from("{not json"))
                    .unwrap(),
                "not a JSON CloudEvent",
            ),
            (
                post()
                    .header("content-type", "application/cloudevents+json")
                    .body(Body::from(
                        r#"{"specversion":"1.0","source":"s","type":"t"}"#,
                    ))
                    .unwrap(),
                "attribute id is missing",
            ),
            (
                post()
                    .header("content-type", "application/cloudevents+json")
                    .body(Body::from(
                        r#"{"specversion":"2.0","id":"1","source":"s","type":"t"}"#,
                    ))
                    .unwrap(),
                "specversion",
            ),
            (
                post()
                    .header("ce-id", "1")
                    .header("ce-type", "t")
                    .header("ce-specversion", "1.0")
                    .body(Body::empty())
                    .unwrap(),
                "ce-source is missing",
            ),
            (
                post()
                    .header("content-type", "application/cloudevents+json")
                    .body(Body::from(r#"["array"]"#))
                    .unwrap(),
                "must be a JSON object",
            ),
        ];
        for (req, expected) in cases {
            let (status, json) = call(req).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
            let error = json["error"].as_str().unwrap();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let (status, _) = call(post().body(Body::from(vec![b'x'; 4096])).unwrap()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn unknown_path_is_404_and_wrong_method_is_405() {
        let (status, json) = call(
            HttpRequest::builder()
                .uri("/nope")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json["error"], "no such route");
        let (status, _) = call(
            HttpRequest::builder()
                .method("POST")
                .uri("/x/y")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(HttpRequest::builder().uri("/").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let resp = echo_app()
            .oneshot(
                HttpRequest::builder()
                    .uri("/healthz")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
    }

    #[tokio::test]
    async fn serve_drains_then_stops() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let stopped = serve(listener, echo_app(), shutdown, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(stopped, Stopped::Drained);
    }
}
