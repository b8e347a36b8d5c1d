//! Tests of the harness itself, so a failing product test can be trusted to be about the
//! product. Each test starts what it needs and relies on `Drop` to clean up.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use harness::gcs::FakeGcs;
use harness::{
    envoy_expect_refusal, envoy_validate, free_port, h2_extended_connect, http_get, http_request,
    raw_http, raw_https, squash_whitespace, tls_peer_certificates, ws_connect, ws_echo,
    ws_try_connect, EchoBackend, Envoy, HttpStore, MetadataServer, TlsFiles,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type TestResult = anyhow::Result<()>;

#[tokio::test]
async fn echo_backend_upgrade_echoes_and_records_headers() -> TestResult {
    let backend = EchoBackend::start("b1").await?;
    let url = format!("ws://app.example.test:{}/chat?room=1", backend.port);
    let (mut ws, resp) = ws_connect(
        &url,
        &[
            ("x-edge-affinity", "from-client"),
            ("x-edge-affinity", "second"),
        ],
        None,
    )
    .await?;
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["x-backend-id"], "b1");
    assert_eq!(ws_echo(&mut ws, "hello").await?, "hello");
    assert_eq!(ws_echo(&mut ws, "whoami").await?, "b1");

    assert_eq!(backend.upgrade_count(), 1);
    let up = &backend.upgrades()[0];
    assert_eq!(up.method, "GET");
    assert_eq!(up.path, "/chat?room=1");
    assert_eq!(up.version, "HTTP/1.1");
    assert_eq!(
        up.header("host"),
        Some(format!("app.example.test:{}", backend.port).as_str())
    );
    assert_eq!(
        up.header_all("x-edge-affinity"),
        vec!["from-client", "second"]
    );
    assert!(
        backend.requests().is_empty(),
        "an upgrade is not a plain request"
    );
    Ok(())
}

#[tokio::test]
async fn dropping_echo_backend_closes_open_websockets() -> TestResult {
    let backend = EchoBackend::start("b1").await?;
    let (mut ws, _) = ws_connect(&format!("ws://127.0.0.1:{}/", backend.port), &[], None).await?;
    assert_eq!(ws_echo(&mut ws, "x").await?, "x");
    let port = backend.port;
    drop(backend);
    // The stream must end (close frame, error or EOF) rather than hang.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
            Some(Ok(harness::Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => continue,
        }
    }
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "port {port} still accepts connections");
    Ok(())
}

#[tokio::test]
async fn echo_backend_plain_http_and_healthz() -> TestResult {
    let backend = EchoBackend::start("b2").await?;
    let health = http_get(backend.port, "/healthz").await?;
    assert_eq!((health.status, health.body_text().as_str()), (200, "ok"));

    let resp = http_request(
        backend.port,
        "GET",
        "/some/page?q=1",
        &[("x-forwarded-proto", "https")],
        b"",
    )
    .await?;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "b2");
    assert_eq!(resp.header("x-backend-id"), Some("b2"));

    let reqs = backend.app_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/some/page?q=1");
    assert_eq!(reqs[0].header("x-forwarded-proto"), Some("https"));
    assert_eq!(backend.requests().len(), 2, "healthz is recorded too");
    assert_eq!(backend.upgrade_count(), 0);
    Ok(())
}

#[tokio::test]
async fn echo_backend_accepts_websocket_over_h2_extended_connect() -> TestResult {
    let backend = EchoBackend::start("h2b").await?;
    let mut conn =
        h2_extended_connect(backend.port, "app.example.test", "/ws", &[("x-test", "1")]).await?;
    assert!(conn.server_enabled_connect_protocol);
    assert_eq!(conn.status, 200);
    assert_eq!(conn.header("x-backend-id"), Some("h2b"));
    let ws = conn.ws.as_mut().expect("2xx gives a WebSocket");
    assert_eq!(ws_echo(ws, "over h2").await?, "over h2");
    assert_eq!(ws_echo(ws, "whoami").await?, "h2b");

    let up = &backend.upgrades()[0];
    assert_eq!(up.method, "CONNECT");
    assert_eq!(up.version, "HTTP/2.0");
    assert_eq!(up.header("x-test"), Some("1"));
    Ok(())
}

#[tokio::test]
async fn raw_http_sends_bytes_verbatim_and_parses_chunked() -> TestResult {
    // A one-shot server answering with a chunked body, to check the client's framing.
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await?;
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.ends_with(b"\r\n\r\n") {
            let n = sock.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        sock.write_all(
            b"HTTP/1.1 100 Continue\r\n\r\n\
              HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nX-A: 2\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
        )
        .await?;
        io::Result::Ok(seen)
    });
    let hostile = b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    let resp = raw_http(port, hostile).await?;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "hello world");
    assert_eq!(resp.header_all("x-a"), vec!["1", "2"]);
    assert_eq!(server.await??, hostile.to_vec());
    Ok(())
}

#[tokio::test]
async fn http_store_serves_known_paths_and_404s_unknown() -> TestResult {
    let store = HttpStore::start().await?;
    store.put("/acme/tok1", "tok1.thumbprint");
    let found = http_get(store.port(), "/acme/tok1?x=1").await?;
    assert_eq!(found.status, 200);
    assert_eq!(found.body_text(), "tok1.thumbprint");
    let missing = http_get(store.port(), "/acme/nope").await?;
    assert_eq!(missing.status, 404);

    store.force_status(Some(503));
    assert_eq!(http_get(store.port(), "/acme/tok1").await?.status, 503);
    store.force_status(None);

    let reqs = store.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, "/acme/tok1?x=1");
    assert_eq!(
        reqs[0].header("host"),
        Some(format!("127.0.0.1:{}", store.port()).as_str())
    );
    Ok(())
}

#[tokio::test]
async fn http_store_bearer_token_is_enforced() -> TestResult {
    let store = HttpStore::start().await?;
    store.put("/k", "v");
    store.require_bearer(Some("s3cret"));
    assert_eq!(http_get(store.port(), "/k").await?.status, 401);
    let wrong = http_request(
        store.port(),
        "GET",
        "/k",
        &[("authorization", "Bearer nope")],
        b"",
    );
    assert_eq!(wrong.await?.status, 401);
    let ok = http_request(
        store.port(),
        "GET",
        "/k",
        &[("authorization", "Bearer s3cret")],
        b"",
    );
    let ok = ok.await?;
    assert_eq!((ok.status, ok.body_text().as_str()), (200, "v"));
    assert_eq!(
        store.requests()[2].header("authorization"),
        Some("Bearer s3cret")
    );
    Ok(())
}

#[tokio::test]
async fn http_store_delay_and_stop() -> TestResult {
    let mut store = HttpStore::start().await?;
    store.put("/k", "v");
    store.set_delay(Duration::from_secs(60));
    // A client with a short timeout gives up long before the store answers.
    let slow = tokio::time::timeout(Duration::from_millis(200), http_get(store.port(), "/k")).await;
    assert!(slow.is_err(), "a 60 s delay answered within 200 ms");
    store.set_delay(Duration::ZERO);
    assert_eq!(http_get(store.port(), "/k").await?.status, 200);

    // A keep-alive connection opened before stop() must not survive it either.
    let port = store.port();
    let mut kept = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    store.stop().await;
    assert!(
        http_get(port, "/k").await.is_err(),
        "store still answers after stop()"
    );
    kept.write_all(b"GET /k HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .ok();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), kept.read(&mut buf))
        .await?
        .unwrap_or(0);
    assert_eq!(n, 0, "an open connection was still served after stop()");
    Ok(())
}

#[tokio::test]
async fn metadata_server_requires_flavor_header_and_counts_hits() -> TestResult {
    let meta = MetadataServer::start_with("tok-A", 120).await?;
    let path = harness::metadata::TOKEN_PATH;
    assert_eq!(http_get(meta.port(), path).await?.status, 403);
    let resp = http_request(
        meta.port(),
        "GET",
        path,
        &[("Metadata-Flavor", "Google")],
        b"",
    )
    .await?;
    assert_eq!(resp.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&resp.body)?;
    assert_eq!(
        json,
        serde_json::json!({"access_token": "tok-A", "expires_in": 120, "token_type": "Bearer"})
    );
    meta.set_token("tok-B", 3599);
    let resp = http_request(
        meta.port(),
        "GET",
        path,
        &[("metadata-flavor", "Google")],
        b"",
    )
    .await?;
    let json: serde_json::Value = serde_json::from_slice(&resp.body)?;
    assert_eq!(json["access_token"], "tok-B");
    assert_eq!(meta.hits(), 3);
    assert_eq!(http_get(meta.port(), "/other").await?.status, 404);
    assert_eq!(meta.hits(), 3, "other paths are not token hits");
    assert_eq!(meta.requests().len(), 4);
    Ok(())
}

#[tokio::test]
async fn fake_gcs_serves_uploaded_challenge_through_json_api() -> TestResult {
    let gcs = FakeGcs::start().await?;
    gcs.create_bucket("acme-edge-test").await?;
    let token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    let key_auth = format!("{token}.thumbprint");
    gcs.upload(
        "acme-edge-test",
        &format!("acme-challenge/{token}"),
        key_auth.as_bytes(),
    )
    .await?;

    let path = format!("/storage/v1/b/acme-edge-test/o/acme-challenge%2F{token}?alt=media");
    assert_eq!(
        path,
        FakeGcs::media_path("acme-edge-test", &format!("acme-challenge/{token}"))
    );
    let resp = http_get(gcs.port(), &path).await?;
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(resp.body_text(), key_auth);

    let missing = gcs
        .download("acme-edge-test", "acme-challenge/unknown")
        .await?;
    assert_eq!(missing, None);
    gcs.delete("acme-edge-test", &format!("acme-challenge/{token}"))
        .await?;
    assert_eq!(http_get(gcs.port(), &path).await?.status, 404);
    Ok(())
}

/// A TLS server that re-reads `current/` for every connection, like Envoy's SDS does after a
/// symlink swap, so `rotate` can be checked end to end.
async fn serve_tls_from(
    files_dir: std::path::PathBuf,
) -> anyhow::Result<(u16, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(files_dir.join("current/fullchain.pem"))
                    .expect("read chain")
                    .collect::<Result<_, _>>()
                    .expect("parse chain");
            let key = PrivateKeyDer::from_pem_file(files_dir.join("current/privkey.pem"))
                .expect("read key");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("rustls accepts the generated pair");
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok((port, task))
}

#[tokio::test]
async fn tls_files_layout_and_rustls_accepts_the_cert() -> TestResult {
    let mut files = TlsFiles::self_signed(&["app.example.test", "www.example.test"])?;
    let dir = files.path().to_path_buf();
    assert_eq!(
        std::fs::read_link(dir.join("current"))?,
        std::path::Path::new("v1")
    );
    let mode = std::fs::metadata(dir.join("v1/privkey.pem"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let sds = std::fs::read_to_string(files.sds_path())?;
    assert!(sds.contains("name: server_cert"), "{sds}");
    assert!(
        sds.contains(&format!("{}/current/fullchain.pem", dir.display())),
        "{sds}"
    );
    let chain = files.fullchain_pem()?;
    assert!(chain.starts_with(&files.leaf_pem) && chain.ends_with(&files.ca_pem));

    let (port, server) = serve_tls_from(dir.clone()).await?;
    let req = b"GET / HTTP/1.1\r\nhost: app.example.test\r\n\r\n";
    for name in ["app.example.test", "www.example.test", "127.0.0.1"] {
        let resp = raw_https(port, name, &files.ca_pem, req).await?;
        assert_eq!(
            (resp.status, resp.body_text().as_str()),
            (200, "ok"),
            "{name}"
        );
    }
    let wrong_name = raw_https(port, "other.example.test", &files.ca_pem, req).await;
    assert!(wrong_name.is_err(), "a name outside the SANs was accepted");
    let other_ca = TlsFiles::self_signed(&["app.example.test"])?;
    let wrong_ca = raw_https(port, "app.example.test", &other_ca.ca_pem, req).await;
    assert!(
        wrong_ca.is_err(),
        "a certificate from another CA was trusted"
    );

    let before = tls_peer_certificates(port, "app.example.test", &files.ca_pem).await?;
    assert_eq!(before[0], files.leaf_der);
    files.rotate(&["app.example.test"])?;
    assert_eq!(
        std::fs::read_link(dir.join("current"))?,
        std::path::Path::new("v2")
    );
    let after = tls_peer_certificates(port, "app.example.test", &files.ca_pem).await?;
    assert_eq!(after[0], files.leaf_der);
    assert_ne!(before[0], after[0]);
    server.abort();
    Ok(())
}

const MINIMAL_ENVOY: &str = r#"
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "hello" } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
"#;

#[tokio::test]
async fn envoy_validate_accepts_valid_and_rejects_invalid_config() -> TestResult {
    let (ok, out) = envoy_validate(MINIMAL_ENVOY).await?;
    assert!(ok, "valid config refused:\n{out}");
    let bad = MINIMAL_ENVOY.replace("status: 200", "statuz: 200");
    let (ok, out) = envoy_validate(&bad).await?;
    assert!(!ok, "invalid config accepted:\n{out}");
    assert!(
        squash_whitespace(&out).contains("no such field: 'statuz'"),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn envoy_refusal_reports_exit_status_and_log() -> TestResult {
    let bad = MINIMAL_ENVOY.replace("status: 200", "statuz: 200");
    let (status, log) = envoy_expect_refusal(&bad, Duration::from_secs(30)).await?;
    assert!(!status.success());
    assert!(
        squash_whitespace(&log).contains("no such field: 'statuz'"),
        "{log}"
    );
    Ok(())
}

fn proxy_config(admin: u16, listen: u16, backend: u16) -> String {
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          codec_type: AUTO
          upgrade_configs: [{{ upgrade_type: websocket }}]
          http2_protocol_options: {{ allow_connect: true }}
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: app }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {backend} }} }} }}
    health_checks:
    - timeout: 2s
      interval: 0.2s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: {{ path: /healthz }}
"#
    )
}

#[tokio::test]
async fn envoy_proxies_websockets_from_http1_and_h2_clients() -> TestResult {
    let backend = EchoBackend::start("behind-envoy").await?;
    let (admin, listen) = (free_port(), free_port());
    let envoy = Envoy::start(&proxy_config(admin, listen, backend.port), admin).await?;
    envoy
        .wait_cluster_healthy("app", 1, Duration::from_secs(20))
        .await?;
    let hosts = envoy.cluster_hosts("app").await?;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].address, backend.addr());

    let (mut ws, resp) =
        ws_connect(&format!("ws://app.example.test:{listen}/ws"), &[], None).await?;
    assert_eq!(resp.headers()["x-backend-id"], "behind-envoy");
    assert_eq!(ws_echo(&mut ws, "whoami").await?, "behind-envoy");

    // Envoy 1.40 turns the HTTP/2 CONNECT into an HTTP/1.1 upgrade without inventing the
    // sec-websocket-key RFC 8441 dropped (envoyproxy/envoy#8547): a strict backend refuses.
    let refused = h2_extended_connect(listen, "app.example.test", "/ws", &[]).await?;
    assert_eq!(refused.status, 400, "{:?}", refused.headers);
    assert!(refused.ws.is_none());
    // With the client supplying a key, the downgraded handshake is complete.
    let key = [("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")];
    let mut h2 = h2_extended_connect(listen, "app.example.test", "/ws", &key).await?;
    assert!(h2.server_enabled_connect_protocol);
    assert_eq!(h2.status, 200, "{}", String::from_utf8_lossy(&h2.body));
    assert_eq!(h2.header("x-backend-id"), Some("behind-envoy"));
    let h2ws = h2.ws.as_mut().expect("2xx gives a WebSocket");
    assert_eq!(ws_echo(h2ws, "via h2").await?, "via h2");

    // Envoy turns the HTTP/2 CONNECT into an HTTP/1.1 upgrade towards the backend.
    assert_eq!(backend.upgrade_count(), 2);
    let up = &backend.upgrades()[1];
    assert_eq!(
        (up.method.as_str(), up.version.as_str()),
        ("GET", "HTTP/1.1")
    );
    assert_eq!(up.header("upgrade"), Some("websocket"));

    // The refused HTTP/2 attempt counts as an upgrade too.
    let upgrades = envoy
        .counter("http.main.downstream_cx_upgrades_total")
        .await?;
    assert_eq!(upgrades, Some(3));
    assert_eq!(envoy.wasm_counter("no_such_metric").await?, None);

    let plain = http_get(listen, "/page").await?;
    assert_eq!(plain.body_text(), "behind-envoy");
    envoy
        .wait_log("starting main dispatch loop", Duration::from_secs(10))
        .await?;

    // A refused upgrade is returned, not turned into an error.
    let refused = ws_try_connect(
        &format!("ws://127.0.0.1:{listen}/ws"),
        &[("sec-websocket-version", "12")],
        None,
    )
    .await?;
    assert!(refused.is_err(), "upgrade with a bad version was accepted");
    Ok(())
}
