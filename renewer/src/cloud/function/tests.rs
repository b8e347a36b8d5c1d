//! Unit tests of the function runtime: decoding through the app, limits, routes, shutdown.

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

/// `POST /` of `event` as a structured CloudEvent.
fn structured(event: &'static str) -> HttpRequest<Body> {
    post()
        .header("content-type", "application/cloudevents+json")
        .body(Body::from(event))
        .unwrap()
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
    let (status, json) = call(structured(event)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["data"], r#"{"force":false}"#);

    let event = r#"{"specversion":"1.0","id":"e3","source":"s","type":"t",
        "datacontenttype":"text/plain","data":"hello"}"#;
    let (_, json) = call(structured(event)).await;
    assert_eq!(json["data"], "hello");
}

#[tokio::test]
async fn malformed_cloudevents_are_400_naming_the_problem() {
    let cases: Vec<(HttpRequest<Body>, &str)> = vec![
        (structured("{not json"), "not a JSON CloudEvent"),
        (
            structured(r#"{"specversion":"1.0","source":"s","type":"t"}"#),
            "attribute id is missing",
        ),
        (
            structured(r#"{"specversion":"2.0","id":"1","source":"s","type":"t"}"#),
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
        (structured(r#"["array"]"#), "must be a JSON object"),
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
