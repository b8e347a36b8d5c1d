//! Tests of the ACME part of the harness (Pebble, the HTTP-01 responder, the ARI responder), so
//! a failing renewer test can be trusted to be about the renewer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use harness::ari::rfc3339;
use harness::{
    http_request, https_request, key_auth_lookup, raw_https, AriResponder, Http01Responder, Pebble,
};

type TestResult = anyhow::Result<()>;

fn json(body: &[u8]) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_slice(body)?)
}

#[tokio::test]
async fn pebble_serves_its_directory_and_roots() -> TestResult {
    let pebble = Pebble::builder().start().await?;
    let api_pem = std::fs::read_to_string(pebble.api_cert_path())?;
    let port = pebble.api_port();
    assert_eq!(
        pebble.directory_url(),
        format!("https://127.0.0.1:{port}/dir")
    );

    // The API certificate is the only trust anchor needed, by address and by name.
    for name in ["127.0.0.1", "localhost"] {
        let request =
            format!("GET /dir HTTP/1.1\r\nhost: {name}:{port}\r\nconnection: close\r\n\r\n");
        let resp = raw_https(port, name, &api_pem, request.as_bytes()).await?;
        assert_eq!(resp.status, 200, "{}", resp.body_text());
        let dir = json(&resp.body)?;
        // URLs follow the Host the client used.
        let new_order = dir["newOrder"].as_str().unwrap_or_default();
        assert!(
            new_order.starts_with(&format!("https://{name}:{port}/")),
            "{dir}"
        );
        for key in ["newNonce", "newAccount", "revokeCert", "keyChange"] {
            assert!(dir[key].is_string(), "no {key} in {dir}");
        }
        assert!(dir.get("renewalInfo").is_none(), "Pebble 2.4 has no ARI");
    }

    let root = pebble.issuing_roots_pem().await?;
    let intermediate = pebble.intermediate_pem().await?;
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");
    assert!(intermediate.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_ne!(root, intermediate);
    assert_ne!(root.trim(), api_pem.trim());
    Ok(())
}

#[tokio::test]
async fn pebble_gets_fresh_nonces_and_stop_refuses_connections() -> TestResult {
    let mut pebble = Pebble::builder().start().await?;
    let resp = pebble.api_get("/nonce-plz").await?;
    assert_eq!(resp.status, 204);
    assert!(resp.header("replay-nonce").is_some_and(|n| !n.is_empty()));

    let port = pebble.api_port();
    pebble.stop();
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "port {port} still accepts connections"
    );
    assert!(pebble
        .log()
        .contains("Configured to reject 0% of good nonces"));
    Ok(())
}

#[tokio::test]
async fn pebble_builder_options_reach_pebble() -> TestResult {
    let pebble = Pebble::builder()
        .http_port(5)
        .nonce_reject(true)
        .authz_reuse(100)
        .certificate_validity(Duration::from_secs(3600))
        .start()
        .await?;
    assert_eq!(pebble.http_port(), 5);
    let log = pebble.log();
    for needle in [
        "Configured to reject 5% of good nonces",
        "Configured to attempt authz reuse for each identifier 100% of the time",
        "Using certificate validity period of 3600 seconds",
        "Disabling random VA sleeps",
    ] {
        assert!(log.contains(needle), "{needle:?} not in:\n{log}");
    }
    assert!(!log.contains("VA always returns valid"), "{log}");
    let config = std::fs::read_to_string(pebble.dir().join("pebble-config.json"))?;
    assert!(config.contains("\"httpPort\": 5"), "{config}");
    Ok(())
}

#[tokio::test]
async fn http01_responder_answers_from_the_lookup_and_records() -> TestResult {
    let map: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    map.lock()
        .unwrap()
        .insert("tok-1".into(), "tok-1.thumbprint".into());
    let lookup_map = map.clone();
    let responder = Http01Responder::start(key_auth_lookup(move |token| {
        let value = lookup_map.lock().unwrap().get(&token).cloned();
        async move { value }
    }))
    .await?;
    let port = responder.port();

    let found = http_request(
        port,
        "GET",
        "/.well-known/acme-challenge/tok-1",
        &[("host", "app.example.test")],
        b"",
    )
    .await?;
    assert_eq!(found.status, 200);
    assert_eq!(found.body_text(), "tok-1.thumbprint");
    assert!(found
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/plain")));

    let missing = http_request(port, "GET", "/.well-known/acme-challenge/nope", &[], b"").await?;
    assert_eq!(missing.status, 404);
    let elsewhere = http_request(port, "GET", "/tok-1", &[], b"").await?;
    assert_eq!(elsewhere.status, 404);

    let seen = responder.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].token, "tok-1");
    assert_eq!(seen[0].host.as_deref(), Some("app.example.test"));
    assert!(seen[0].found);
    assert_eq!(seen[1].token, "nope");
    assert_eq!(seen[1].host, Some(format!("127.0.0.1:{port}")));
    assert!(!seen[1].found);
    Ok(())
}

#[tokio::test]
async fn dropping_http01_responder_closes_its_port() -> TestResult {
    let responder = Http01Responder::start(key_auth_lookup(|_| async { None })).await?;
    let port = responder.port();
    drop(responder);
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
    Ok(())
}

#[tokio::test]
async fn ari_directory_adds_renewal_info_and_keeps_pebble_urls() -> TestResult {
    let pebble = Pebble::builder().start().await?;
    let ari = AriResponder::start(&pebble).await?;
    let (pem, port) = (pebble.api_cert_pem(), ari.port());
    assert_eq!(ari.directory_url(), format!("https://127.0.0.1:{port}/dir"));

    let resp = https_request(port, "127.0.0.1", pem, "GET", "/dir", &[], b"").await?;
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert!(resp
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/json")));
    let dir = json(&resp.body)?;
    assert_eq!(
        dir["renewalInfo"],
        format!("https://127.0.0.1:{port}/renewal-info")
    );
    assert_eq!(dir["renewalInfo"], ari.renewal_info_url());
    let pebble_base = format!("https://127.0.0.1:{}/", pebble.api_port());
    for key in [
        "newNonce",
        "newAccount",
        "newOrder",
        "revokeCert",
        "keyChange",
    ] {
        let url = dir[key].as_str().unwrap_or_default();
        assert!(url.starts_with(&pebble_base), "{key}: {url}");
    }
    Ok(())
}

#[tokio::test]
async fn ari_renewal_info_serves_the_window_with_retry_after() -> TestResult {
    let pebble = Pebble::builder().start().await?;
    let ari = AriResponder::start(&pebble).await?;
    let (pem, port) = (pebble.api_cert_pem(), ari.port());
    let get = |path: &'static str| https_request(port, "127.0.0.1", pem, "GET", path, &[], b"");

    let unset = get("/renewal-info/aki.serial").await?;
    assert_eq!(unset.status, 404);

    let start = SystemTime::now() - Duration::from_secs(3600);
    let end = start + Duration::from_secs(7200);
    ari.set_window(start, end);
    ari.set_retry_after(Duration::from_secs(60));
    let resp = get("/renewal-info/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").await?;
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(resp.header("retry-after"), Some("60"));
    let body = json(&resp.body)?;
    assert_eq!(body["suggestedWindow"]["start"], rfc3339(start));
    assert_eq!(body["suggestedWindow"]["end"], rfc3339(end));

    ari.force_status(Some(503));
    assert_eq!(get("/renewal-info/x").await?.status, 503);
    ari.force_status(None);
    ari.clear_window();
    assert_eq!(get("/renewal-info/x").await?.status, 404);
    assert_eq!(get("/other").await?.status, 404);

    assert_eq!(
        ari.cert_ids(),
        vec![
            "aki.serial",
            "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
            "x",
            "x"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn ari_directory_is_502_when_pebble_is_gone() -> TestResult {
    let mut pebble = Pebble::builder().start().await?;
    let ari = AriResponder::start(&pebble).await?;
    pebble.stop();
    let resp = https_request(
        ari.port(),
        "127.0.0.1",
        pebble.api_cert_pem(),
        "GET",
        "/dir",
        &[],
        b"",
    )
    .await?;
    assert_eq!(resp.status, 502);
    Ok(())
}

#[tokio::test]
async fn ari_proxy_points_everything_here_and_forwards_to_pebble() -> TestResult {
    let pebble = Pebble::builder().start().await?;
    let ari = AriResponder::start_proxying(&pebble).await?;
    let (pem, port) = (pebble.api_cert_pem(), ari.port());

    let resp = https_request(port, "127.0.0.1", pem, "GET", "/dir", &[], b"").await?;
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let dir = json(&resp.body)?;
    assert_eq!(dir["renewalInfo"], ari.renewal_info_url());
    let here = format!("https://127.0.0.1:{port}/");
    for key in [
        "newNonce",
        "newAccount",
        "newOrder",
        "revokeCert",
        "keyChange",
    ] {
        let url = dir[key].as_str().unwrap_or_default();
        assert!(url.starts_with(&here), "{key}: {url}");
    }

    let nonce_path = dir["newNonce"]
        .as_str()
        .and_then(|u| u.strip_prefix(here.trim_end_matches('/')))
        .unwrap_or_default()
        .to_string();
    let nonce = https_request(port, "127.0.0.1", pem, "HEAD", &nonce_path, &[], b"").await?;
    assert_eq!(nonce.status, 200);
    assert!(nonce.header("replay-nonce").is_some_and(|n| !n.is_empty()));

    // Pebble's own answer to a bad JWS comes back as is, status and problem document included.
    let new_order = dir["newOrder"].as_str().unwrap_or_default();
    let path = new_order
        .strip_prefix(here.trim_end_matches('/'))
        .unwrap_or_default();
    let bad = https_request(
        port,
        "127.0.0.1",
        pem,
        "POST",
        path,
        &[("content-type", "application/jose+json")],
        br#"{"protected":"e30","payload":"e30","signature":"AA"}"#,
    )
    .await?;
    assert_eq!(bad.status, 400, "{}", bad.body_text());
    assert!(bad
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/problem+json")));
    assert!(bad.body_text().contains("urn:ietf:params:acme:error:"));
    assert!(ari.replaces_sent().is_empty());
    Ok(())
}
