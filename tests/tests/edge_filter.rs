//! The edge filter inside a real Envoy (from `.venv`, loading `target/wasm/edge_filter.wasm`),
//! configured by the shipped `deploy/envoy/render.sh`, in front of real WebSocket backends.
//!
//! Run through `make test` (which builds the wasm first) or `make integration`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures_util::stream::{self, StreamExt};
use harness::node::{
    challenge_path, set_cookie_value, Acme, Node, HOST, ORIGIN, SECRET, THUMB, TOKEN, WAIT,
};
use harness::{
    envoy_expect_refusal, envoy_validate, free_port, h2_extended_connect_tls, raw_http,
    render_app_node, wasm_path, ws_connect, ws_try_connect, FakeGcs, HttpStore, MetadataServer,
    RawResponse, TlsFiles,
};

// ---------------------------------------------------------------------------------------
// ACME HTTP-01

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_mode_answers_with_the_thumbprint() -> Result<()> {
    let node = Node::start(Acme::Stateless, 1).await?;
    let resp = node.get(&challenge_path(TOKEN)).await?;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body_text(), format!("{TOKEN}.{THUMB}"));
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(node.counter("edge_http.challenge.answered").await?, 1);
    // Nothing went to the app.
    assert!(node.backends[0].app_requests().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_mode_serves_found_404s_unknown_and_5xx_when_down() -> Result<()> {
    let mut store = HttpStore::start().await?;
    store.put(&format!("/challenges/{TOKEN}"), format!("{TOKEN}.{THUMB}"));
    let acme = Acme::Store {
        port: store.port(),
        authority: "store.test",
        path: "/challenges/{token}".into(),
        metadata_port: None,
        timeout_ms: 500,
    };
    let node = Node::start(acme, 1).await?;

    let found = node.get(&challenge_path(TOKEN)).await?;
    assert_eq!(found.status, 200, "{found:?}");
    assert_eq!(found.body_text(), format!("{TOKEN}.{THUMB}"));
    assert_eq!(found.header("cache-control"), Some("no-store"));
    let seen = store.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("/challenges/{TOKEN}"));
    assert_eq!(
        seen[0].header("host").or(seen[0].header(":authority")),
        Some("store.test")
    );

    let unknown = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(node.get(&challenge_path(unknown)).await?.status, 404);

    // A store answering with something that is not this token's key authorization.
    store.put(&format!("/challenges/{unknown}"), "<html>oops</html>");
    assert_eq!(node.get(&challenge_path(unknown)).await?.status, 502);

    // Slow store: the filter's timeout gives 504.
    store.set_delay(Duration::from_secs(3));
    assert_eq!(node.get(&challenge_path(TOKEN)).await?.status, 504);
    store.set_delay(Duration::ZERO);

    // Store down: 502, not a hang and not a redirect.
    store.stop().await;
    let down = node.get(&challenge_path(TOKEN)).await?;
    assert!(down.status == 502 || down.status == 503, "{down:?}");
    assert!(node.counter("edge_http.challenge.store_error").await? >= 2);
    assert_eq!(node.counter("edge_http.challenge.answered").await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tokens_get_404_and_the_store_sees_nothing() -> Result<()> {
    let store = HttpStore::start().await?;
    let acme = Acme::Store {
        port: store.port(),
        authority: "store.test",
        path: "/challenges/{token}".into(),
        metadata_port: None,
        timeout_ms: 1000,
    };
    let node = Node::start(acme, 1).await?;
    let long = "a".repeat(200);
    let malformed = [
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_owned(),
        "..%2f..%2fsecret-secret-secret".to_owned(),
        "short".to_owned(),
        long,
        format!("{TOKEN}="),
        format!("{}+/{}", &TOKEN[..20], &TOKEN[22..]),
        format!("{TOKEN}?x=1"),
        format!("{TOKEN};x"),
        "%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9".to_owned(),
    ];
    for token in &malformed {
        let resp = node.get(&challenge_path(token)).await?;
        assert_eq!(resp.status, 404, "{token}: {resp:?}");
    }
    // Some bytes never get past Envoy's own path checks: a 400 from Envoy, before the filter.
    for token in [
        format!("{TOKEN}%00"),
        format!("{TOKEN}%0d%0aX-Injected:%20yes"),
    ] {
        let resp = node.get(&challenge_path(&token)).await?;
        assert!((400..500).contains(&resp.status), "{token}: {resp:?}");
    }
    // Dot segments are resolved by Envoy before the filter runs: the request is no longer a
    // challenge at all (it is redirected), and still never reaches the store.
    let resp = node
        .get("/.well-known/acme-challenge/../../etc/passwd")
        .await?;
    assert_ne!(resp.status, 200, "{resp:?}");
    assert!(
        store.requests().is_empty(),
        "store saw {:?}",
        store.requests()
    );
    assert!(node.counter("edge_http.challenge.refused").await? >= malformed.len() as u64);
    assert!(node.backends[0].app_requests().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_mode_sends_a_cached_metadata_server_token() -> Result<()> {
    let store = HttpStore::start().await?;
    store.put(&format!("/challenges/{TOKEN}"), format!("{TOKEN}.{THUMB}"));
    store.require_bearer(Some("ya29.test-token"));
    let metadata = MetadataServer::start_with("ya29.test-token", 3600).await?;
    let acme = Acme::Store {
        port: store.port(),
        authority: "store.test",
        path: "/challenges/{token}".into(),
        metadata_port: Some(metadata.port()),
        timeout_ms: 1000,
    };
    let node = Node::start(acme, 1).await?;
    // Envoy runs two workers, each with its own cache: at most one token fetch per worker.
    for _ in 0..6 {
        let resp = node.get(&challenge_path(TOKEN)).await?;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.body_text(), format!("{TOKEN}.{THUMB}"));
    }
    assert!(
        (1..=2).contains(&metadata.hits()),
        "token fetched {} times for 6 challenges",
        metadata.hits()
    );
    for req in metadata.requests() {
        assert_eq!(req.header("metadata-flavor"), Some("Google"));
    }
    for req in store.requests() {
        assert_eq!(req.header("authorization"), Some("Bearer ya29.test-token"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_mode_reads_the_gcs_json_api_of_fake_gcs_server() -> Result<()> {
    let gcs = FakeGcs::start().await?;
    gcs.create_bucket("acme-edge-test").await?;
    gcs.upload(
        "acme-edge-test",
        &format!("acme-challenge/{TOKEN}"),
        format!("{TOKEN}.{THUMB}").as_bytes(),
    )
    .await?;
    // The default STORE_PATH is the GCS JSON API media download of acme-challenge/<token>.
    let node = Node::start_with(
        Acme::Store {
            port: gcs.port(),
            authority: "storage.googleapis.com",
            path: "/storage/v1/b/acme-edge-test/o/acme-challenge%2F{token}?alt=media".into(),
            metadata_port: None,
            timeout_ms: 2000,
        },
        1,
        &[],
    )
    .await?;
    let resp = node.get(&challenge_path(TOKEN)).await?;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body_text(), format!("{TOKEN}.{THUMB}"));
    let missing = node
        .get(&challenge_path(
            "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
        ))
        .await?;
    assert_eq!(missing.status, 404);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// HTTP -> HTTPS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_to_https() -> Result<()> {
    let node = Node::start_with(
        Acme::Stateless,
        1,
        &[("DOMAINS", format!("{HOST} www.{HOST}"))],
    )
    .await?;
    let resp = node.get("/chat/room?id=7&x=%20y").await?;
    assert_eq!(resp.status, 308, "{resp:?}");
    assert_eq!(
        resp.header("location"),
        Some(format!("https://{HOST}:{}/chat/room?id=7&x=%20y", node.https).as_str())
    );
    // POST keeps its method and body across a 308; the redirect is the same.
    let post = format!(
        "POST /api HTTP/1.1\r\nHost: www.{HOST}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    );
    let resp = raw_http(node.http, post.as_bytes()).await?;
    assert_eq!(resp.status, 308);
    assert_eq!(
        resp.header("location"),
        Some(format!("https://www.{HOST}:{}/api", node.https).as_str())
    );
    // Another host: 421 from the filter.
    let other = "GET / HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_http(node.http, other.as_bytes()).await?.status, 421);
    // No Host: Envoy's HTTP/1.1 codec answers 400 itself, and refuses HTTP/1.0 (which may
    // omit Host) with 426; the filter's own missing-Host 400 is covered by unit tests.
    let no_host = raw_http(node.http, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await?;
    assert_eq!(no_host.status, 400, "{no_host:?}");
    let http10 = raw_http(node.http, b"GET / HTTP/1.0\r\n\r\n").await?;
    assert!((400..500).contains(&http10.status), "{http10:?}");
    // The node's own health check is not redirected.
    assert_eq!(node.get("/.edge/healthz").await?.status, 200);
    assert_eq!(node.counter("edge_http.redirect.sent").await?, 2);
    assert_eq!(node.counter("edge_http.redirect.refused").await?, 1);
    assert!(node.backends[0].app_requests().is_empty());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// WebSocket handshakes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_handshakes_upgrade_and_echo_over_tls() -> Result<()> {
    let node = Node::start(Acme::Stateless, 3).await?;
    let (id, resp) = node
        .ws_backend("/ws?room=lobby", &[("origin", ORIGIN)])
        .await?;
    assert!(id.starts_with("backend-"));
    assert_eq!(resp.status(), 101);
    // No Origin (a non-browser client) is fine too, and lists in Connection are understood.
    node.ws_backend("/ws/deeper", &[]).await?;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let resp = node.https_raw(&req).await?;
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(node.counter("edge_https.upgrade.accepted").await?, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invalid_handshake_gets_its_4xx_and_no_backend_call() -> Result<()> {
    let node = Node::start(Acme::Stateless, 1).await?;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let handshake = |method: &str, extra: &str, drop: &str| {
        let mut lines = vec![
            format!("{method} /ws HTTP/1.1"),
            format!("Host: {HOST}"),
            "Upgrade: websocket".to_owned(),
            "Connection: Upgrade".to_owned(),
            format!("Sec-WebSocket-Key: {key}"),
            "Sec-WebSocket-Version: 13".to_owned(),
        ];
        if !drop.is_empty() {
            lines.retain(|l| !l.to_ascii_lowercase().starts_with(drop));
        }
        let mut req = lines.join("\r\n");
        req.push_str("\r\n");
        req.push_str(extra);
        req.push_str("Content-Length: 0\r\n\r\n");
        req
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "no key",
            handshake("GET", "", "sec-websocket-key"),
            400,
            "key",
        ),
        (
            "short key",
            handshake(
                "GET",
                "Sec-WebSocket-Key: c2hvcnQ=\r\n",
                "sec-websocket-key",
            ),
            400,
            "key",
        ),
        (
            "two keys",
            handshake("GET", &format!("Sec-WebSocket-Key: {key}\r\n"), ""),
            400,
            "key",
        ),
        (
            "version 8",
            handshake(
                "GET",
                "Sec-WebSocket-Version: 8\r\n",
                "sec-websocket-version",
            ),
            426,
            "version",
        ),
        (
            "no version",
            handshake("GET", "", "sec-websocket-version"),
            426,
            "version",
        ),
        (
            "foreign origin",
            handshake("GET", "Origin: https://evil.test\r\n", ""),
            403,
            "origin",
        ),
        // Envoy drops Upgrade and Connection from any request it does not upgrade (an h2c
        // upgrade, RFC 9113 §3.1, or a handshake missing one of the pair), so the filter sees
        // a handshake without them: counted as "connection", its own reason.
        (
            "h2c, not websocket",
            handshake("GET", "Upgrade: h2c\r\n", "upgrade:"),
            400,
            "connection",
        ),
        (
            "no upgrade",
            handshake("GET", "", "upgrade:"),
            400,
            "connection",
        ),
        (
            "no connection upgrade",
            handshake("GET", "Connection: keep-alive\r\n", "connection:"),
            400,
            "connection",
        ),
        (
            "not a handshake at all",
            format!("GET /ws HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n\r\n"),
            400,
            "upgrade",
        ),
        ("POST", handshake("POST", "", ""), 400, "method"),
        // Another upgrade type than websocket: Envoy itself refuses it (403) before any
        // filter, as only websocket is configured; no filter counter moves.
        (
            "upgrade foo",
            handshake("GET", "Upgrade: foo\r\n", "upgrade:"),
            403,
            "",
        ),
        (
            "two Upgrade headers",
            handshake("GET", "Upgrade: websocket\r\n", ""),
            403,
            "",
        ),
    ];
    const REASONS: [&str; 7] = [
        "method",
        "upgrade",
        "connection",
        "key",
        "version",
        "origin",
        "path",
    ];
    let counters = || async {
        let mut all = BTreeMap::new();
        for reason in REASONS {
            let n = node
                .counter(&format!("edge_https.upgrade.refused.{reason}"))
                .await?;
            all.insert(reason, n);
        }
        anyhow::Ok(all)
    };
    for (what, req, status, reason) in &cases {
        let before = counters().await?;
        let resp = node
            .https_raw(req)
            .await
            .with_context(|| what.to_string())?;
        assert_eq!(resp.status, *status, "{what}: {resp:?}");
        if *status == 426 {
            assert_eq!(resp.header("sec-websocket-version"), Some("13"), "{what}");
        }
        // Exactly the case's own counter moved, by one.
        let after = counters().await?;
        for r in REASONS {
            let moved = after[r] - before[r];
            let want = u64::from(r == *reason);
            assert_eq!(moved, want, "{what}: upgrade.refused.{r} moved by {moved}");
        }
    }
    assert_eq!(node.backends[0].upgrade_count(), 0);
    assert!(
        node.backends[0].app_requests().is_empty(),
        "{:?}",
        node.backends[0].app_requests()
    );
    // The refused ones are refused through the WebSocket client too.
    let refused = ws_try_connect(
        &node.wss("/ws"),
        &[("origin", "https://evil.test")],
        Some(&node.tls.ca_pem),
    )
    .await?;
    assert_eq!(refused.err().map(|r| r.status().as_u16()), Some(403));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_extended_connect_is_checked_and_reaches_an_http1_backend() -> Result<()> {
    let node = Node::start(Acme::Stateless, 3).await?;
    let connect = |headers: &'static [(&'static str, &'static str)]| {
        h2_extended_connect_tls(node.https, HOST, &node.tls.ca_pem, "/ws?room=h2", headers)
    };
    // RFC 8441: Envoy advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and the upgrade succeeds
    // against an HTTP/1.1 backend, because the filter supplies the Sec-WebSocket-Key that
    // HTTP/2 clients do not send.
    let mut ok = connect(&[("origin", ORIGIN)]).await?;
    assert!(ok.server_enabled_connect_protocol);
    assert_eq!(ok.status, 200, "{ok:?}");
    let mut ws = ok
        .ws
        .take()
        .context("no WebSocket over the CONNECT stream")?;
    assert_eq!(harness::ws_echo(&mut ws, "over h2").await?, "over h2");
    let h2_backend = harness::ws_echo(&mut ws, "whoami").await?;
    // The backend got an HTTP/1.1 upgrade with a well-formed key and the affinity key.
    let upgrade = node
        .backends
        .iter()
        .flat_map(|b| b.upgrades())
        .find(|u| u.path == "/ws?room=h2")
        .context("backend saw no upgrade")?;
    assert_eq!(
        upgrade.header("sec-websocket-key").map(str::len),
        Some(24),
        "{upgrade:?}"
    );
    assert_eq!(upgrade.header("x-edge-affinity"), Some("h2"));
    // The room meets on the same backend over HTTP/1.1.
    let (h1_backend, _) = node.ws_backend("/ws?room=h2", &[]).await?;
    assert_eq!(h1_backend, h2_backend);
    // The same checks apply over HTTP/2.
    assert_eq!(
        connect(&[("origin", "https://evil.test")]).await?.status,
        403
    );
    let old = connect(&[("sec-websocket-version", "8")]).await?;
    assert_eq!(old.status, 426);
    assert_eq!(old.header("sec-websocket-version"), Some("13"));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// No unchecked upgrade

/// Paths an application might normalise to its WebSocket endpoint, and others.
const HOSTILE_UPGRADE_PATHS: [&str; 7] = ["/chat", "/WS", "/ws;x", "/ws%2f", "/%77s", "/", "/ws"];

/// Every upgrade (HTTP/1.1 and RFC 8441) on any path is checked by the filter or refused
/// before the app; a foreign Origin is refused on both protocols; each refusal is counted.
async fn every_upgrade_is_checked_or_refused(node: &Node) -> Result<()> {
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let h1 = |path: &str, origin: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
        )
    };
    let h2 = |path: &'static str, origin: &'static str| async move {
        h2_extended_connect_tls(
            node.https,
            HOST,
            &node.tls.ca_pem,
            path,
            &[("origin", origin)],
        )
        .await
    };
    let evil = "https://evil.example";
    let (mut refused_path, mut refused_origin) = (0, 0);
    for path in HOSTILE_UPGRADE_PATHS {
        let resp = node.https_raw(&h1(path, ORIGIN)).await?;
        ensure!(
            resp.status == 101 || (400..500).contains(&resp.status),
            "HTTP/1.1 upgrade on {path}: {resp:?}"
        );
        refused_path += u64::from(resp.status == 404);
        let resp = node.https_raw(&h1(path, evil)).await?;
        ensure!(
            (400..500).contains(&resp.status),
            "foreign Origin on {path} over HTTP/1.1: {resp:?}"
        );
        refused_path += u64::from(resp.status == 404);
        refused_origin += u64::from(resp.status == 403);
        let connect = h2(path, ORIGIN).await?;
        ensure!(
            connect.status == 200 || (400..500).contains(&connect.status),
            "HTTP/2 extended CONNECT on {path}: {connect:?}"
        );
        refused_path += u64::from(connect.status == 404);
        let connect = h2(path, evil).await?;
        ensure!(
            (400..500).contains(&connect.status),
            "foreign Origin on {path} over HTTP/2: {connect:?}"
        );
        refused_path += u64::from(connect.status == 404);
        refused_origin += u64::from(connect.status == 403);
    }
    // The Origin check on the WebSocket path itself: 403 on both protocols.
    assert_eq!(node.https_raw(&h1("/ws", evil)).await?.status, 403);
    assert_eq!(h2("/ws", evil).await?.status, 403);
    refused_origin += 2;

    // Whatever reached a backend went through the filter: it carries the key the filter sets
    // (a client's copy is dropped on every route).
    let upgrades: Vec<_> = node.backends.iter().flat_map(|b| b.upgrades()).collect();
    ensure!(!upgrades.is_empty(), "no upgrade reached a backend at all");
    for upgrade in &upgrades {
        ensure!(
            upgrade.header("x-edge-affinity").is_some(),
            "an upgrade reached the app unchecked: {upgrade:?}"
        );
        ensure!(
            upgrade.path.starts_with("/ws"),
            "an upgrade outside /ws reached the app: {upgrade:?}"
        );
    }
    ensure!(
        refused_path >= 10,
        "only {refused_path} refused for their path"
    );
    assert_eq!(
        node.counter("edge_https.upgrade.refused.path").await?,
        refused_path
    );
    assert_eq!(
        node.counter("edge_https.upgrade.refused.origin").await?,
        refused_origin
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upgrade_is_checked_or_refused_on_a_rendered_node() -> Result<()> {
    let node = Node::start(Acme::Stateless, 2).await?;
    every_upgrade_is_checked_or_refused(&node).await
}

/// The same on the config a `make deploy` node runs: deploy's defaults (ALLOWED_ORIGINS is
/// https://<each domain>) through `deploy.sh --plan` and the node's `startup.sh render`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upgrade_is_checked_or_refused_on_a_deployed_node() -> Result<()> {
    let store = HttpStore::start().await?;
    let node = Node::start_deployed("", store.port()).await?;
    every_upgrade_is_checked_or_refused(&node).await?;
    // Plain requests elsewhere still skip the filter and reach the app.
    let resp = node
        .https_raw(&format!(
            "GET /api HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        ))
        .await?;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        resp.header("set-cookie").is_none(),
        "the filter ran on /api"
    );
    Ok(())
}

/// `render.sh` refuses a WebSocket listener without an Origin allow-list, and says how.
#[tokio::test]
async fn render_requires_allowed_origins_unless_star_is_said() -> Result<()> {
    let base = [
        ("COOKIE_SECRET", SECRET.to_owned()),
        ("ACME_THUMBPRINT", THUMB.to_owned()),
    ];
    let err = render_app_node(&base)
        .expect_err("rendered without ALLOWED_ORIGINS")
        .to_string();
    assert!(err.contains("ALLOWED_ORIGINS is required"), "{err}");
    assert!(err.contains("ALLOWED_ORIGINS='*'"), "{err}");
    let mut star = base.to_vec();
    star.push(("ALLOWED_ORIGINS", "*".to_owned()));
    let yaml = render_app_node(&star)?;
    assert!(yaml.contains(r#""allowed_origins": ["*"]"#), "{yaml}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Sticky routing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_with_the_same_cookie_or_room_reach_the_same_backend() -> Result<()> {
    let node = Node::start(Acme::Stateless, 3).await?;
    // A browser (it sends Origin) without a cookie gets one.
    let (first, resp) = node.ws_backend("/ws", &[("origin", ORIGIN)]).await?;
    let cookie = set_cookie_value(&resp).context("no Set-Cookie for a new browser")?;
    let header = resp.headers()["set-cookie"].to_str()?;
    for attr in [
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=86400",
    ] {
        assert!(header.contains(attr), "{attr} missing in {header}");
    }
    for _ in 0..20 {
        let (id, resp) = node
            .ws_backend("/ws", &[("origin", ORIGIN), ("cookie", &cookie)])
            .await?;
        assert_eq!(id, first, "cookie {cookie} moved to another backend");
        assert!(
            set_cookie_value(&resp).is_none(),
            "a valid cookie was replaced"
        );
    }
    assert_eq!(node.counter("edge_https.affinity.cookie_issued").await?, 1);

    // Everyone in a room meets on one backend, whatever their cookie.
    let (room_backend, _) = node.ws_backend("/ws?room=blue", &[]).await?;
    for i in 0..20 {
        let (id, _) = if i % 2 == 0 {
            node.ws_backend("/ws?room=blue", &[("origin", ORIGIN)])
                .await?
        } else {
            node.ws_backend("/ws?room=blue", &[("cookie", &cookie)])
                .await?
        };
        assert_eq!(id, room_backend, "room blue moved");
    }
    // The header source works the same way.
    let (session_backend, _) = node.ws_backend("/ws", &[("x-session", "s-42")]).await?;
    for _ in 0..5 {
        let (id, _) = node.ws_backend("/ws", &[("x-session", "s-42")]).await?;
        assert_eq!(id, session_backend);
    }
    Ok(())
}

/// Outside the WebSocket (and sticky) paths the filter is skipped per route, and Envoy hashes
/// the same sources itself: a room and a client address reach the same backend as they do
/// through the filter, and a client's copy of the internal header never reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_route_skips_the_filter_and_keeps_the_same_keys() -> Result<()> {
    let node = Node::start(Acme::Stateless, 3).await?;
    let plain = |path_and_query: &str, extra: &str| {
        format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {HOST}\r\nOrigin: {ORIGIN}\r\n{extra}Connection: close\r\n\r\n"
        )
    };
    let backend_of = |resp: &RawResponse| -> Result<String> {
        ensure!(resp.status == 200, "app route answered {}", resp.status);
        ensure!(
            resp.header("set-cookie").is_none(),
            "the filter ran on the app route: {:?}",
            resp.header("set-cookie")
        );
        Ok(resp
            .header("x-backend-id")
            .context("no x-backend-id")?
            .to_owned())
    };
    for room in ["blue", "green", "red", "amber", "teal"] {
        let (ws_backend, _) = node.ws_backend(&format!("/ws?room={room}"), &[]).await?;
        let resp = node
            .https_raw(&plain(&format!("/api/state?room={room}"), ""))
            .await?;
        assert_eq!(backend_of(&resp)?, ws_backend, "room {room}");
    }
    // No room, no cookie: both keyed by the client address (127.0.0.1; Envoy's source_ip hash
    // on both routes), which a client's own X-Forwarded-For does not change.
    let (home, _) = node.ws_backend("/ws", &[]).await?;
    for i in 0..5 {
        let spoof = format!("203.0.113.{i}");
        let (id, _) = node
            .ws_backend("/ws", &[("x-forwarded-for", &spoof)])
            .await?;
        assert_eq!(id, home, "X-Forwarded-For {spoof} steered");
    }
    for i in 0..10 {
        let steer = format!("x-edge-affinity: steer-{i}\r\nx-forwarded-for: 198.51.100.{i}\r\n");
        let resp = node.https_raw(&plain("/index.html", &steer)).await?;
        assert_eq!(backend_of(&resp)?, home, "the client header steered");
    }
    for request in node.backends.iter().flat_map(|b| b.app_requests()) {
        if !request.path.starts_with("/ws") {
            assert_eq!(request.header("x-edge-affinity"), None, "{request:?}");
        }
    }
    Ok(())
}

/// A plain HTTP/1.1 `GET path` for the node's host, `extra` header lines added.
fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}Connection: close\r\n\r\n")
}

/// The backend that answered a plain request (which must have succeeded).
fn backend_of(resp: &RawResponse) -> Result<String> {
    ensure!(resp.status == 200, "answered {}", resp.status);
    Ok(resp
        .header("x-backend-id")
        .context("no x-backend-id")?
        .to_owned())
}

/// On a sticky path the filter runs only for requests it has work for: a cookie to verify,
/// an Origin (a browser, which gets a new cookie) or an Upgrade (refused off the WebSocket
/// paths). Any other request takes the route before the filter's, is hashed natively on the
/// same sources (the room and the client address reach the backend they reach through the
/// filter) and is counted on that route's stats; a client's copy of the internal header is
/// dropped on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_paths_run_the_filter_only_for_requests_it_has_work_for() -> Result<()> {
    const SKIPPED: &str = "vhost.app.route.sticky_no_filter.upstream_rq_completed";
    let node =
        Node::start_with(Acme::Stateless, 3, &[("STICKY_PATHS", "/poll".to_owned())]).await?;
    let skipped = || async { anyhow::Ok(node.envoy.counter(SKIPPED).await?.unwrap_or(0)) };

    // No cookie, no Origin: the filter is skipped; room and address keep their backends.
    let (home, _) = node.ws_backend("/ws", &[]).await?;
    let mut expected_skips = 0;
    for room in ["blue", "green", "red", "amber", "teal"] {
        let (ws_backend, _) = node.ws_backend(&format!("/ws?room={room}"), &[]).await?;
        let resp = node
            .https_raw(&get(
                &format!("/poll?room={room}"),
                "x-edge-affinity: steer\r\n",
            ))
            .await?;
        assert_eq!(backend_of(&resp)?, ws_backend, "room {room}");
        assert!(resp.header("set-cookie").is_none());
        expected_skips += 1;
    }
    for i in 0..5 {
        let steer = format!("x-edge-affinity: steer-{i}\r\n");
        let resp = node.https_raw(&get("/poll/x", &steer)).await?;
        assert_eq!(backend_of(&resp)?, home, "the client header steered");
        expected_skips += 1;
    }
    assert_eq!(skipped().await?, expected_skips);

    // A browser gets a cookie (the filter ran), and its cookie keeps it on one backend.
    let resp = node
        .https_raw(&get("/poll", &format!("Origin: {ORIGIN}\r\n")))
        .await?;
    let first = backend_of(&resp)?;
    let set = resp
        .header("set-cookie")
        .context("no cookie for a browser on /poll")?;
    let cookie = set
        .split(';')
        .next()
        .context("empty Set-Cookie")?
        .to_owned();
    for _ in 0..10 {
        let resp = node
            .https_raw(&get("/poll", &format!("Cookie: {cookie}\r\n")))
            .await?;
        assert_eq!(backend_of(&resp)?, first, "cookie {cookie} moved");
        assert!(resp.header("set-cookie").is_none());
    }
    // An upgrade on a sticky path still meets the filter, which refuses it.
    let before = node.counter("edge_https.upgrade.refused.path").await?;
    let resp = node
        .https_raw(&format!(
            "GET /poll HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ))
        .await?;
    assert_eq!(resp.status, 404);
    // Over HTTP/2 too (RFC 8441: Envoy turns the CONNECT into an Upgrade before routing).
    let connect = h2_extended_connect_tls(node.https, HOST, &node.tls.ca_pem, "/poll", &[]).await?;
    assert_eq!(connect.status, 404, "{connect:?}");
    assert_eq!(
        node.counter("edge_https.upgrade.refused.path").await?,
        before + 2
    );
    assert_eq!(
        skipped().await?,
        expected_skips,
        "a request with work skipped the filter"
    );

    for request in node.backends.iter().flat_map(|b| b.app_requests()) {
        if request.path.starts_with("/poll") {
            let key = request.header("x-edge-affinity");
            assert!(!key.is_some_and(|k| k.starts_with("steer")), "{request:?}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_keys_reach_every_backend() -> Result<()> {
    let node = Node::start(Acme::Stateless, 3).await?;
    let node = &node;
    let ids: Vec<String> = stream::iter(0..1000)
        .map(|i| async move {
            let (mut ws, resp) = ws_connect(
                &node.wss(&format!("/ws?room=room-{i}")),
                &[],
                Some(&node.tls.ca_pem),
            )
            .await?;
            let id = resp.headers()["x-backend-id"].to_str()?.to_owned();
            let _ = ws.close(None).await;
            anyhow::Ok(id)
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (id, n) in &counts {
        assert!(*n >= 150, "{id} got only {n} of 1000 keys: {counts:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_cookies_and_client_sent_internal_headers_do_not_steer() -> Result<()> {
    let node = Node::start(Acme::Stateless, 3).await?;
    // Without room, session or cookie, a non-browser client is keyed by its address: every
    // request from 127.0.0.1 lands on one backend, whatever internal header it sends.
    let (home, _) = node.ws_backend("/ws", &[]).await?;
    let mut seen = HashSet::new();
    for i in 0..20 {
        let value = format!("steer-{i}");
        // Two copies: the proxy must drop both, not just one.
        let (id, _) = node
            .ws_backend(
                "/ws",
                &[
                    ("x-edge-affinity", &value),
                    ("x-edge-affinity", "steer-again"),
                ],
            )
            .await?;
        seen.insert(id);
    }
    assert_eq!(
        seen,
        HashSet::from([home.clone()]),
        "the client header steered"
    );
    // The backend never saw the client's copies: keyed by the address, which Envoy hashes
    // itself (render.sh's source_ip fallback), these requests reach it with no internal
    // header at all.
    for upgrade in node.backends.iter().flat_map(|b| b.upgrades()) {
        let values = upgrade.header_all("x-edge-affinity");
        assert!(values.is_empty(), "client value leaked: {upgrade:?}");
    }

    // A cookie in the right shape with a wrong MAC: ignored, counted, replaced.
    let forged_key = "AAAAAAAAAAAAAAAAAAAAAA";
    let forged = format!("edge_affinity={forged_key}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let mut replacement_keys = HashSet::new();
    for _ in 0..5 {
        let (_, resp) = node
            .ws_backend("/ws", &[("origin", ORIGIN), ("cookie", &forged)])
            .await?;
        let new = set_cookie_value(&resp).context("forged cookie not replaced")?;
        assert_ne!(new, forged);
        replacement_keys.insert(new);
    }
    // Each replacement is a fresh key, not something derived from the forged one.
    assert_eq!(replacement_keys.len(), 5);
    assert_eq!(node.counter("edge_https.affinity.cookie_forged").await?, 5);
    for upgrade in node.backends.iter().flat_map(|b| b.upgrades()) {
        assert_ne!(upgrade.header("x-edge-affinity"), Some(forged_key));
    }
    Ok(())
}

/// The routes hash the affinity cookie themselves after the header (render.sh), so for a
/// request whose one copy of the cookie is valid and plainly spelled the filter sets no
/// header. Every other spelling, a second copy, a client's internal header or a cookie that
/// does not verify gets the header from the filter: no spelling moves a client, and no
/// unverified cookie value ever reaches the route's hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_hashes_a_lone_valid_cookie_and_nothing_else() -> Result<()> {
    let node =
        Node::start_with(Acme::Stateless, 3, &[("STICKY_PATHS", "/poll".to_owned())]).await?;
    // What the app saw of the internal header on the request to `path`.
    let header_seen = |path: &str| -> Result<Option<String>> {
        let request = node
            .backends
            .iter()
            .flat_map(|b| b.app_requests())
            .find(|r| r.path == path)
            .with_context(|| format!("{path} reached no backend"))?;
        Ok(request.header("x-edge-affinity").map(str::to_owned))
    };

    let resp = node
        .https_raw(&get("/poll/issue", &format!("Origin: {ORIGIN}\r\n")))
        .await?;
    let first = backend_of(&resp)?;
    let value = resp
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .and_then(|c| c.strip_prefix("edge_affinity="))
        .context("no affinity cookie")?
        .to_owned();
    // Issued: the header carries the whole cookie value, the string the route's hash reads.
    assert_eq!(header_seen("/poll/issue")?.as_deref(), Some(&*value));

    // The lone, plainly spelled cookie: no header, the same backend.
    for (i, cookie) in [
        format!("edge_affinity={value}"),
        format!("theme=dark; edge_affinity={value}; lang=en"),
    ]
    .iter()
    .enumerate()
    {
        let path = format!("/poll/plain-{i}");
        let resp = node
            .https_raw(&get(&path, &format!("Cookie: {cookie}\r\n")))
            .await?;
        assert_eq!(backend_of(&resp)?, first, "{cookie}");
        assert_eq!(header_seen(&path)?, None, "{cookie}");
    }

    // Any other spelling: the filter sets the header to the value, the same backend.
    let forged = "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let unusual = [
        format!("Cookie: edge_affinity=\"{value}\"\r\n"),
        format!("Cookie: edge_affinity={value} ; lang=en\r\n"),
        format!("Cookie: edge_affinity={value}; edge_affinity={value}\r\n"),
        format!("Cookie: edge_affinity={forged}; edge_affinity={value}\r\n"),
        format!("Cookie: theme=dark\r\nCookie: edge_affinity={value}\r\n"),
        format!("Cookie: edge_affinity={value}\r\nx-edge-affinity: steer\r\n"),
    ];
    for (i, extra) in unusual.iter().enumerate() {
        let path = format!("/poll/unusual-{i}");
        let resp = node.https_raw(&get(&path, extra)).await?;
        assert_eq!(backend_of(&resp)?, first, "{extra:?}");
        assert_eq!(header_seen(&path)?.as_deref(), Some(&*value), "{extra:?}");
    }

    // Cookies that do not verify, from a client that gets no new one (no Origin): keyed by
    // its address, as with no cookie at all, whatever the value (the route would otherwise
    // hash a value the client chose, a backend per guess).
    let (home, _) = node.ws_backend("/ws", &[]).await?;
    for i in 0..10 {
        let path = format!("/poll/forged-{i}");
        let cookie = format!("Cookie: edge_affinity={i}{}\r\n", &forged[1..]);
        let resp = node.https_raw(&get(&path, &cookie)).await?;
        assert_eq!(backend_of(&resp)?, home, "{cookie:?}");
        assert_eq!(header_seen(&path)?.as_deref(), Some("127.0.0.1"));
    }

    // The requests above with a cookie, no room and no internal header took the cookie
    // route and its instance of the filter, which let the plain ones through on the first
    // Cookie header alone and gave the rest the full treatment: setting the header, after
    // which Envoy matches the route again and they end on the filter's route. So the cookie
    // route counts the requests the cookie alone decided. A room still wins over the
    // cookie (that request never takes the cookie route).
    const COOKIE_ROUTE: &str = "vhost.app.route.sticky_cookie.upstream_rq_completed";
    let (blue, _) = node.ws_backend("/ws?room=blue", &[]).await?;
    let resp = node
        .https_raw(&get(
            "/poll/room?room=blue",
            &format!("Cookie: edge_affinity={value}\r\n"),
        ))
        .await?;
    assert_eq!(backend_of(&resp)?, blue, "the cookie won over the room");
    assert_eq!(
        header_seen("/poll/room?room=blue")?.as_deref(),
        Some("blue")
    );
    assert_eq!(
        node.envoy.counter(COOKIE_ROUTE).await?.unwrap_or(0),
        2,
        "requests the cookie alone decided"
    );

    // The cookie route's filter instance trusts the route to admit no upgrade: a handshake
    // on the sticky path with a valid cookie still meets the full filter, which refuses it,
    // over HTTP/1.1 and over HTTP/2 (RFC 8441, an Upgrade by the time routes are matched).
    let refused = node.counter("edge_https.upgrade.refused.path").await?;
    let resp = node
        .https_raw(&format!(
            "GET /poll HTTP/1.1\r\nHost: {HOST}\r\nCookie: edge_affinity={value}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ))
        .await?;
    assert_eq!(resp.status, 404);
    let cookie_header = format!("edge_affinity={value}");
    let connect = h2_extended_connect_tls(
        node.https,
        HOST,
        &node.tls.ca_pem,
        "/poll",
        &[("cookie", &cookie_header)],
    )
    .await?;
    assert_eq!(connect.status, 404, "{connect:?}");
    assert_eq!(
        node.counter("edge_https.upgrade.refused.path").await?,
        refused + 2
    );

    // The same on the WebSocket path: the handshake with the cookie reaches the backend the
    // cookie was issued on, with no header.
    let (id, _) = node
        .ws_backend(
            "/ws?x=native",
            &[
                ("origin", ORIGIN),
                ("cookie", &format!("edge_affinity={value}")),
            ],
        )
        .await?;
    assert_eq!(id, first);
    let upgrade = node
        .backends
        .iter()
        .flat_map(|b| b.upgrades())
        .find(|u| u.path == "/ws?x=native")
        .context("the handshake reached no backend")?;
    assert_eq!(upgrade.header("x-edge-affinity"), None, "{upgrade:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Configuration

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_plugin_config_is_refused_with_the_field_named() -> Result<()> {
    let tls = TlsFiles::self_signed(&[HOST])?;
    let admin = free_port();
    let config = render_app_node(&[
        ("LISTEN_ADDRESS", "127.0.0.1".to_owned()),
        ("HTTP_PORT", free_port().to_string()),
        ("HTTPS_PORT", free_port().to_string()),
        ("ADMIN_PORT", admin.to_string()),
        ("WASM_PATH", wasm_path().display().to_string()),
        ("TLS_DIR", tls.path().display().to_string()),
        ("COOKIE_SECRET", SECRET.to_owned()),
        ("ACME_THUMBPRINT", THUMB.to_owned()),
        ("ALLOWED_ORIGINS", ORIGIN.to_owned()),
    ])?;
    let needle = "\"max_age_s\": 86400";
    assert!(config.contains(needle));
    let bad = config.replacen(needle, "\"max_age_s\": 86400, \"colour\": \"blue\"", 1);
    let (status, log) = envoy_expect_refusal(&bad, WAIT).await?;
    assert!(!status.success());
    assert!(
        log.contains("invalid plugin configuration: affinity.cookie.colour"),
        "field not named in Envoy's log:\n{log}"
    );
    let (ok, output) = envoy_validate(&bad).await?;
    assert!(!ok, "validate accepted a bad plugin config:\n{output}");
    assert!(output.contains("affinity.cookie.colour"), "{output}");
    // A short secret names its field, and the secret itself is not logged.
    let short = config.replacen(SECRET, "tooshort", 1);
    let (_, log) = envoy_expect_refusal(&short, WAIT).await?;
    assert!(log.contains("affinity.cookie.secret"), "{log}");
    assert!(!log.contains("tooshort"), "secret leaked into the log");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_envoy_configs_pass_validation() -> Result<()> {
    let tls = TlsFiles::self_signed(&[HOST])?;
    let wasm = wasm_path().display().to_string();
    let tls_dir = tls.path().display().to_string();
    // The committed example is exactly the renderer's output with the example values.
    let example = std::fs::read_to_string(harness::repo_root().join("deploy/envoy/app-node.yaml"))?;
    let rendered = render_app_node(&[
        (
            "COOKIE_SECRET",
            "CHANGE-ME-openssl-rand-base64-48".to_owned(),
        ),
        (
            "ACME_THUMBPRINT",
            "CHANGE-ME-run-renewer-account-to-get-it-now".to_owned(),
        ),
        ("ALLOWED_ORIGINS", "https://app.example.com".to_owned()),
    ])?;
    assert_eq!(
        example, rendered,
        "deploy/envoy/app-node.yaml is stale: run `make envoy-config`"
    );
    // It validates once its two host paths point at real files.
    let local = example
        .replace("/opt/acme-edge/edge_filter.wasm", &wasm)
        .replace("/var/lib/acme-edge/tls", &tls_dir);
    let (ok, output) = envoy_validate(&local).await?;
    assert!(ok, "app-node.yaml does not validate:\n{output}");
    // And so does every mode the renderer offers.
    let base = [
        ("WASM_PATH", wasm.clone()),
        ("TLS_DIR", tls_dir.clone()),
        ("COOKIE_SECRET", SECRET.to_owned()),
        ("ALLOWED_ORIGINS", ORIGIN.to_owned()),
    ];
    let variants: Vec<Vec<(&str, String)>> = vec![
        vec![("ACME_THUMBPRINT", THUMB.to_owned())],
        vec![
            ("ACME_MODE", "store".to_owned()),
            ("BUCKET", "my-bucket".to_owned()),
        ],
        vec![
            ("ACME_MODE", "store".to_owned()),
            ("STORE_ADDRESS", "127.0.0.1:8080".to_owned()),
            ("STORE_TLS", "0".to_owned()),
            ("STORE_METADATA_TOKEN", "0".to_owned()),
            (
                "STORE_PATH",
                "/.well-known/acme-challenge/{token}".to_owned(),
            ),
        ],
    ];
    for variant in variants {
        let mut vars = base.to_vec();
        vars.extend(variant.iter().cloned());
        let config = render_app_node(&vars)?;
        let (ok, output) = envoy_validate(&config).await?;
        assert!(ok, "{variant:?} does not validate:\n{output}");
    }
    Ok(())
}

#[test]
fn the_renderer_refuses_unsafe_settings() {
    for (name, value) in [
        ("COOKIE_SECRET", "short"),
        ("COOKIE_SECRET", "has\"quote-0123456789abcdef0123456789"),
        ("HTTP_PORT", "80; rm -rf /"),
        ("WS_PATHS", "/ws\"}"),
        ("AFFINITY_SOURCES", "query:room bogus"),
        ("ACME_THUMBPRINT", "not-a-thumbprint"),
        ("ALLOWED_ORIGINS", "evil.example"),
        ("ALLOWED_ORIGINS", "https://a.example/path"),
        ("COOKIE_SAMESITE", "Loose"),
        ("WS_ALLOW_PLAIN_HTTP", "yes"),
    ] {
        let mut vars = vec![
            ("COOKIE_SECRET", SECRET.to_owned()),
            ("ACME_THUMBPRINT", THUMB.to_owned()),
            ("ALLOWED_ORIGINS", ORIGIN.to_owned()),
        ];
        vars.retain(|(n, _)| *n != name);
        vars.push((name, value.to_owned()));
        let err = render_app_node(&vars).expect_err(&format!("{name}={value} accepted"));
        assert!(format!("{err:#}").contains(name), "{name}: {err:#}");
    }
}
