use super::*;
use crate::request::Property;

const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
const THUMB: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn plain_listener() -> FilterConfig {
    FilterConfig::parse(
        format!(
            r#"{{"acme": {{"thumbprint": "{THUMB}"}},
                "redirect": {{"https_port": 443, "passthrough_prefixes": ["/healthz"]}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn tls_listener() -> FilterConfig {
    FilterConfig::parse(
        format!(
            r#"{{"websocket": {{"path_prefixes": ["/ws"], "allowed_origins": ["https://a.example"]}},
                "affinity": {{"sources": [{{"query": "room"}}, "cookie", "client_address"],
                             "cookie": {{"secret": "{SECRET}"}}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn req(pairs: &[(&str, &str)]) -> Request {
    let mut r = Request::from_pairs(pairs.iter().map(|(n, v)| (*n, *v)));
    r.client_address = Property::known(Some("198.51.100.1:4000"));
    r
}

fn reply(v: &Verdict) -> &LocalReply {
    match &v.action {
        Action::Reply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn challenge_before_redirect() {
    let path = format!("/.well-known/acme-challenge/{TOKEN}");
    let v = classify(
        &req(&[(":path", &path), (":authority", "a.example")]),
        &plain_listener(),
        &|| b"".to_vec(),
    );
    let r = reply(&v);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, format!("{TOKEN}.{THUMB}").as_bytes());
    assert!(r.headers.contains(&("cache-control", "no-store".into())));
    assert!(r.headers.contains(&("content-type", "text/plain".into())));
    assert_eq!(v.events, vec![Event::ChallengeAnswered]);
}

#[test]
fn bad_token_is_404_not_redirect() {
    for path in [
        "/.well-known/acme-challenge/../../etc/passwd",
        "/.well-known/acme-challenge/%2e%2e%2f",
        "/.well-known/acme-challenge/",
    ] {
        let v = classify(
            &req(&[(":path", path), (":authority", "a.example")]),
            &plain_listener(),
            &|| b"".to_vec(),
        );
        assert_eq!(reply(&v).status, 404, "{path}");
        assert_eq!(v.events, vec![Event::ChallengeRefused]);
    }
}

#[test]
fn everything_else_is_redirected() {
    let v = classify(
        &req(&[(":path", "/chat?room=1"), (":authority", "a.example:80")]),
        &plain_listener(),
        &|| b"".to_vec(),
    );
    let r = reply(&v);
    assert_eq!(r.status, 308);
    assert!(r
        .headers
        .contains(&("location", "https://a.example/chat?room=1".into())));
    assert_eq!(v.events, vec![Event::Redirected]);
    let v = classify(&req(&[(":path", "/x")]), &plain_listener(), &|| {
        b"".to_vec()
    });
    assert_eq!(reply(&v).status, 400);
    assert_eq!(v.events, vec![Event::RedirectRefused]);
}

#[test]
fn passthrough_prefixes_reach_the_router() {
    let v = classify(
        &req(&[(":path", "/healthz"), (":authority", "a.example")]),
        &plain_listener(),
        &|| b"".to_vec(),
    );
    assert_eq!(v.action, Action::Forward(Forward::default()));
}

#[test]
fn websocket_refusals_carry_their_status() {
    let v = classify(
        &req(&[
            (":method", "GET"),
            (":path", "/ws"),
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "8"),
        ]),
        &tls_listener(),
        &|| b"".to_vec(),
    );
    let r = reply(&v);
    assert_eq!(r.status, 426);
    assert!(r.headers.contains(&("sec-websocket-version", "13".into())));
    assert_eq!(v.events, vec![Event::UpgradeRefused(Refusal::Version)]);
}

#[test]
fn accepted_upgrade_gets_affinity_and_strips_the_client_header() {
    let v = classify(
        &req(&[
            (":method", "GET"),
            (":path", "/ws?room=blue"),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("x-edge-affinity", "attacker-chosen"),
        ]),
        &tls_listener(),
        &|| b"".to_vec(),
    );
    assert_eq!(
        v.action,
        Action::Forward(Forward {
            remove_header: Some("x-edge-affinity".into()),
            set_headers: vec![("x-edge-affinity".into(), "blue".into())],
            set_cookie: None,
        })
    );
    assert_eq!(v.events, vec![Event::UpgradeAccepted]);
}

#[test]
fn no_removal_is_asked_for_a_header_the_client_did_not_send() {
    let v = classify(
        &req(&[(":method", "GET"), (":path", "/poll?room=blue")]),
        &tls_listener(),
        &|| b"".to_vec(),
    );
    let Action::Forward(forward) = v.action else {
        panic!("not forwarded: {v:?}");
    };
    assert_eq!(forward.remove_header, None);
    assert_eq!(
        forward.set_headers,
        vec![("x-edge-affinity".into(), "blue".into())]
    );
}

#[test]
fn the_peer_address_and_protocol_are_read_only_when_a_decision_needs_them() {
    fn peer() -> Option<String> {
        Some("198.51.100.1:4000".to_owned())
    }
    fn protocol() -> Option<String> {
        Some("HTTP/1.1".to_owned())
    }
    let lazy = |pairs: &[(&str, &str)]| {
        let mut r = Request::from_pairs(pairs.iter().map(|(n, v)| (*n, *v)));
        r.client_address = Property::lazy(peer);
        r.http_version = Property::lazy(protocol);
        r
    };
    // A room key: neither is read.
    let r = lazy(&[(":method", "GET"), (":path", "/poll?room=blue")]);
    classify(&r, &tls_listener(), &|| b"".to_vec());
    assert!(!r.client_address.is_read() && !r.http_version.is_read());
    // No room, no cookie, no Origin: the last source, the peer address, is.
    let r = lazy(&[(":method", "GET"), (":path", "/poll")]);
    let v = classify(&r, &tls_listener(), &|| b"".to_vec());
    assert!(r.client_address.is_read() && !r.http_version.is_read());
    let Action::Forward(forward) = v.action else {
        panic!("not forwarded: {v:?}");
    };
    assert_eq!(
        forward.set_headers,
        vec![("x-edge-affinity".into(), "198.51.100.1".into())]
    );
    // An upgrade without a key: the protocol is, to tell Envoy's rewrite of an RFC 8441
    // CONNECT (HTTP/2, no key) from a bad HTTP/1.1 handshake.
    let r = lazy(&[
        (":method", "GET"),
        (":path", "/ws?room=blue"),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-version", "13"),
        ("origin", "https://a.example"),
    ]);
    let v = classify(&r, &tls_listener(), &|| b"".to_vec());
    assert!(r.http_version.is_read() && !r.client_address.is_read());
    assert_eq!(v.events, vec![Event::UpgradeRefused(Refusal::Key)]);
}

#[test]
fn browser_without_cookie_is_issued_one() {
    let v = classify(
        &req(&[
            (":method", "GET"),
            (":path", "/app"),
            ("origin", "https://a.example"),
        ]),
        &tls_listener(),
        &|| b"req-1".to_vec(),
    );
    let Action::Forward(f) = &v.action else {
        panic!("{v:?}")
    };
    assert!(f
        .set_cookie
        .as_deref()
        .unwrap()
        .starts_with("edge_affinity="));
    assert_eq!(v.events, vec![Event::CookieIssued]);
}

#[test]
fn store_mode_fetches_then_judges() {
    let config = FilterConfig::parse(
        br#"{"acme": {"store": {"cluster": "store", "authority": "store",
                                "path": "/o/acme-challenge%2F{token}?alt=media"}}}"#,
    )
    .unwrap();
    let path = format!("/.well-known/acme-challenge/{TOKEN}");
    let v = classify(&req(&[(":path", &path)]), &config, &|| b"".to_vec());
    let Action::FetchChallenge { token, path } = v.action else {
        panic!()
    };
    assert_eq!(path, format!("/o/acme-challenge%2F{TOKEN}?alt=media"));
    let ok = store_reply(&token, Some(200), format!("{TOKEN}.{THUMB}").as_bytes());
    assert_eq!(reply(&ok).status, 200);
    assert_eq!(ok.events, vec![Event::ChallengeAnswered]);
    let missing = store_reply(&token, Some(404), b"");
    assert_eq!(reply(&missing).status, 404);
    assert_eq!(missing.events, vec![Event::ChallengeRefused]);
    let down = store_reply(&token, None, b"");
    assert_eq!(reply(&down).status, 502);
    assert_eq!(down.events, vec![Event::ChallengeStoreError]);
    assert_eq!(reply(&store_reply(&token, Some(504), b"")).status, 504);
}

#[test]
fn extended_connect_gets_a_substitute_key_for_http1_backends() {
    // What Envoy's HTTP/2 codec hands the filter for an RFC 8441 CONNECT.
    let mut r = req(&[
        (":method", "GET"),
        (":path", "/ws?room=red"),
        ("upgrade", "websocket"),
        ("connection", "upgrade"),
        ("sec-websocket-version", "13"),
    ]);
    r.http_version = Property::known(Some("HTTP/2"));
    let v = classify(&r, &tls_listener(), &|| b"nonce-1".to_vec());
    let Action::Forward(f) = &v.action else {
        panic!("{v:?}")
    };
    let key = f
        .set_headers
        .iter()
        .find(|(n, _)| n == "sec-websocket-key")
        .map(|(_, v)| v.clone())
        .expect("no substitute key");
    // It is a valid RFC 6455 key: base64 of 16 bytes.
    let mut h1 = r.clone();
    h1.http_version = Property::known(Some("HTTP/1.1"));
    h1.headers
        .push(("sec-websocket-key".into(), key.into_bytes()));
    assert_eq!(
        crate::websocket::check(&h1, tls_listener().websocket.as_ref().unwrap()),
        Ok(Handshake::Upgrade)
    );
    assert!(f
        .set_headers
        .contains(&("x-edge-affinity".into(), "red".into())));
    assert_eq!(v.events, vec![Event::UpgradeAccepted]);
    // An HTTP/1.1 handshake keeps its own key.
    let v = classify(&h1, &tls_listener(), &|| b"nonce-1".to_vec());
    let Action::Forward(f) = &v.action else {
        panic!("{v:?}")
    };
    assert!(f.set_headers.iter().all(|(n, _)| n != "sec-websocket-key"));
}

/// Random requests built from hostile pieces, through every configuration: `classify`
/// must answer each one (no panic), and every reply it makes must be a 2xx/3xx/4xx/5xx
/// with no CR or LF in a header value.
#[test]
fn random_hostile_requests_never_panic() {
    const PIECES: [&[u8]; 24] = [
        b"/",
        b"/ws",
        b"/.well-known/acme-challenge/",
        b"..",
        b"%2e%2e",
        b"%00",
        b"\r\n",
        b"\0",
        b"?",
        b"&",
        b"=",
        b"room",
        b";",
        b",",
        b" ",
        b"\xff\xfe",
        "é".as_bytes(),
        b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA",
        b"upgrade",
        b"websocket",
        b"dGhlIHNhbXBsZSBub25jZQ==",
        b"13",
        b"edge_affinity=",
        b"[::1]:",
    ];
    const NAMES: [&str; 14] = [
        ":method",
        ":path",
        ":authority",
        ":protocol",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "origin",
        "cookie",
        "x-room",
        "x-edge-affinity",
        "x-request-id",
        "host",
    ];
    let configs = [plain_listener(), tls_listener()];
    // xorshift64: deterministic, so a failure is reproducible.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for _ in 0..20_000 {
        let mut r = Request::default();
        for _ in 0..next(10) {
            let mut value = Vec::new();
            for _ in 0..next(6) {
                value.extend_from_slice(PIECES[next(PIECES.len())]);
            }
            r.headers.push((NAMES[next(NAMES.len())].to_owned(), value));
        }
        r.client_address =
            Property::known([None, Some("1.2.3.4:5"), Some("[::1"), Some("")][next(4)]);
        r.http_version = Property::known([None, Some("HTTP/2"), Some("HTTP/1.1")][next(3)]);
        for config in &configs {
            let v = classify(&r, config, &|| b"nonce".to_vec());
            if let Action::Reply(reply) = &v.action {
                assert!((200..600).contains(&reply.status));
                for (_, value) in &reply.headers {
                    assert!(!value.contains(['\r', '\n', '\0']), "{value:?} from {r:?}");
                }
            }
            if let Action::Forward(f) = &v.action {
                for (_, value) in &f.set_headers {
                    assert!(
                        value.bytes().all(|b| b.is_ascii_graphic()),
                        "{value:?} from {r:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn upgrades_outside_the_websocket_paths_are_refused() {
    let handshake = |path: &str| {
        req(&[
            (":method", "GET"),
            (":path", path),
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ])
    };
    for path in ["/chat", "/WS", "/ws;x", "/ws%2f", "/%77s", "/", "/wsx", ""] {
        let v = classify(&handshake(path), &tls_listener(), &|| b"".to_vec());
        assert_eq!(reply(&v).status, 404, "{path}");
        assert_eq!(
            v.events,
            vec![Event::UpgradeRefused(Refusal::Path)],
            "{path}"
        );
    }
    // RFC 8441 CONNECT and other upgrade tokens too.
    let connect = req(&[
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":path", "/chat"),
    ]);
    assert_eq!(
        classify(&connect, &tls_listener(), &|| b"".to_vec()).events,
        vec![Event::UpgradeRefused(Refusal::Path)]
    );
    let h2c = req(&[(":method", "GET"), (":path", "/x"), ("upgrade", "h2c")]);
    assert_eq!(
        reply(&classify(&h2c, &tls_listener(), &|| b"".to_vec())).status,
        404
    );
    // A plain request on another path goes on (the sticky routes).
    let plain = req(&[(":method", "GET"), (":path", "/chat")]);
    assert!(matches!(
        classify(&plain, &tls_listener(), &|| b"".to_vec()).action,
        Action::Forward(_)
    ));
    // On the WebSocket path it is checked as before.
    let v = classify(&handshake("/ws/room"), &tls_listener(), &|| b"".to_vec());
    assert_eq!(v.events, vec![Event::UpgradeAccepted]);
}

#[test]
fn a_foreign_origin_is_refused() {
    let mut r = req(&[
        (":method", "GET"),
        (":path", "/ws"),
        ("upgrade", "websocket"),
        ("connection", "upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ]);
    r.headers
        .push(("origin".into(), b"https://evil.example".to_vec()));
    let v = classify(&r, &tls_listener(), &|| b"".to_vec());
    assert_eq!(reply(&v).status, 403);
    assert_eq!(v.events, vec![Event::UpgradeRefused(Refusal::Origin)]);
}

#[test]
fn challenge_paths_are_ordinary_without_acme() {
    let path = format!("/.well-known/acme-challenge/{TOKEN}");
    let v = classify(&req(&[(":path", &path)]), &tls_listener(), &|| b"".to_vec());
    assert!(matches!(v.action, Action::Forward(_)));
}

#[test]
fn a_cookie_the_route_hashes_needs_no_header_unless_the_client_sent_one() {
    let config = FilterConfig::parse(
        format!(
            r#"{{"affinity": {{"sources": [{{"query": "room"}}, "cookie", "client_address"],
                              "cookie": {{"secret": "{SECRET}", "route_hashes": true}}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap();
    let value = crate::affinity::sign(
        SECRET.as_bytes(),
        &crate::affinity::new_key(SECRET.as_bytes(), b"d"),
    );
    let cookie = format!("edge_affinity={value}");
    let forward =
        |pairs: &[(&str, &str)]| match classify(&req(pairs), &config, &|| b"".to_vec()).action {
            Action::Forward(f) => f,
            other => panic!("not forwarded: {other:?}"),
        };
    assert_eq!(
        forward(&[(":path", "/poll"), ("cookie", &cookie)]),
        Forward::default()
    );
    // A client's copy of the internal header would win over the cookie: it goes, and the
    // header is set.
    assert_eq!(
        forward(&[
            (":path", "/poll"),
            ("cookie", &cookie),
            ("x-edge-affinity", "steer")
        ]),
        Forward {
            remove_header: Some("x-edge-affinity".into()),
            set_headers: vec![("x-edge-affinity".into(), value.clone())],
            set_cookie: None,
        }
    );
    // An earlier source still sets the header (it comes before the cookie in the hash).
    assert_eq!(
        forward(&[(":path", "/poll?room=blue"), ("cookie", &cookie)]).set_headers,
        vec![("x-edge-affinity".into(), "blue".into())]
    );
}

#[test]
fn the_cookie_route_lets_a_lone_valid_cookie_through_on_one_header_read() {
    use std::cell::Cell;
    let parse = |cookie_route: bool| {
        FilterConfig::parse(
            format!(
                r#"{{"affinity": {{"sources": [{{"query": "room"}}, "cookie"], "cookie_route": {cookie_route},
                                  "cookie": {{"secret": "{SECRET}", "route_hashes": true}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    };
    let value = crate::affinity::sign(
        SECRET.as_bytes(),
        &crate::affinity::new_key(SECRET.as_bytes(), b"c"),
    );
    let cookie = format!("edge_affinity={value}");
    let reads = Cell::new(0);
    let decides = |config: &FilterConfig, first_cookie: Option<&str>| {
        reads.set(0);
        cookie_alone_decides(config, || {
            reads.set(reads.get() + 1);
            first_cookie.map(|c| c.as_bytes().to_vec())
        })
    };
    let route = parse(true);
    assert!(decides(&route, Some(&cookie)));
    assert_eq!(reads.get(), 1);
    // The full filter must see a cookie that is not alone or not valid, or no cookie.
    assert!(!decides(&route, Some(&format!("{cookie}; {cookie}"))));
    assert!(!decides(&route, Some("edge_affinity=forged")));
    assert!(!decides(&route, None));
    // Any other configuration: no shortcut, and no header read for it.
    assert!(!decides(&parse(false), Some(&cookie)));
    assert_eq!(reads.get(), 0);
    assert!(!decides(&tls_listener(), Some(&cookie)));
    assert_eq!(reads.get(), 0);
}
