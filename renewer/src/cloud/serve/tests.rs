//! Unit tests of `renewer serve`: bodies, routes, challenges.

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
        let (status, _) = call(&svc, get_req(&format!("/.well-known/acme-challenge/{bad}"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
    }
}
