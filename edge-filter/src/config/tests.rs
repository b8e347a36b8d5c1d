use super::*;

const THUMB: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn err(json: &str) -> ConfigError {
    FilterConfig::parse(json.as_bytes()).expect_err("config should be refused")
}

#[test]
fn full_config_parses() {
    let json = format!(
        r#"{{
          "stat_prefix": "edge_tls",
          "acme": {{"thumbprint": "{THUMB}"}},
          "redirect": {{"https_port": 8443, "allowed_hosts": ["example.com"],
                        "passthrough_prefixes": ["/healthz"]}},
          "websocket": {{"path_prefixes": ["/ws"], "allowed_origins": ["https://example.com"]}},
          "affinity": {{"sources": [{{"query": "room"}}, {{"header": "x-room"}}, "cookie",
                                    "client_address"],
                       "cookie": {{"secret": "{SECRET}"}}}}
        }}"#
    );
    let config = FilterConfig::parse(json.as_bytes()).unwrap();
    let affinity = config.affinity.unwrap();
    assert_eq!(affinity.header, "x-edge-affinity");
    assert_eq!(
        affinity.sources,
        vec![
            KeySource::Query("room".into()),
            KeySource::Header("x-room".into()),
            KeySource::Cookie,
            KeySource::ClientAddress
        ]
    );
    let cookie = affinity.cookie.unwrap();
    assert_eq!(cookie.name, "edge_affinity");
    assert_eq!(cookie.same_site, "Lax");
    assert!(cookie.secure);
    assert_eq!(cookie.issue, IssuePolicy::Browsers);
    assert!(
        !format!("{cookie:?}").contains(SECRET),
        "secret leaked in Debug"
    );
}

#[test]
fn unknown_fields_are_named_with_their_path() {
    let e = err(r#"{"redirect": {"https_prot": 443}}"#);
    assert_eq!(e.field, "redirect.https_prot");
    assert!(e.message.contains("unknown field"), "{e}");
    let e = err(&format!(
        r#"{{"affinity": {{"sources": ["cookie"], "cookie": {{"secret": "{SECRET}", "colour": 1}}}}}}"#
    ));
    assert_eq!(e.field, "affinity.cookie.colour");
    let e = err(r#"{"bogus": true}"#);
    assert_eq!(e.field, "bogus");
}

/// Found by `make fuzz` (corpus `classify/crash-4d603a2e…`): an empty key at the top
/// level made an error whose field was empty.
#[test]
fn an_empty_key_still_names_a_field() {
    let e = err("{\"\": 1}");
    assert_eq!(e.field, "configuration");
    assert!(e.to_string().starts_with("configuration: "), "{e}");
}

#[test]
fn wrong_types_name_the_field() {
    let e = err(r#"{"redirect": {"https_port": "443"}}"#);
    assert_eq!(e.field, "redirect.https_port");
    let e = err(r#"{"affinity": {"sources": ["cookies"]}}"#);
    assert!(e.field.starts_with("affinity.sources"), "{e}");
}

#[test]
fn empty_or_useless_config_is_refused() {
    assert_eq!(err("").field, "configuration");
    assert_eq!(err("{}").field, "configuration");
    assert_eq!(err("not json").field, "configuration");
}

#[test]
fn acme_needs_exactly_one_mode() {
    assert_eq!(err(r#"{"acme": {}}"#).field, "acme");
    let both = format!(
        r#"{{"acme": {{"thumbprint": "{THUMB}", "store": {{"cluster": "s", "authority": "a", "path": "/{{token}}"}}}}}}"#
    );
    assert_eq!(err(&both).field, "acme");
    assert_eq!(
        err(r#"{"acme": {"thumbprint": "short"}}"#).field,
        "acme.thumbprint"
    );
    let padded = format!(r#"{{"acme": {{"thumbprint": "{}="}}}}"#, &THUMB[..42]);
    assert_eq!(err(&padded).field, "acme.thumbprint");
}

#[test]
fn store_path_needs_one_token_placeholder() {
    for path in [
        "/o/challenge",
        "o/{token}",
        "/{token}/{token}",
        "/a b/{token}",
    ] {
        let json = format!(
            r#"{{"acme": {{"store": {{"cluster": "s", "authority": "a", "path": "{path}"}}}}}}"#
        );
        assert_eq!(err(&json).field, "acme.store.path", "{path}");
    }
    let json = r#"{"acme": {"store": {"cluster": "s", "authority": "a", "path": "/{token}", "timeout_ms": 0}}}"#;
    assert_eq!(err(json).field, "acme.store.timeout_ms");
    let json = r#"{"acme": {"store": {"cluster": "", "authority": "a", "path": "/{token}"}}}"#;
    assert_eq!(err(json).field, "acme.store.cluster");
}

#[test]
fn store_defaults() {
    let json = r#"{"acme": {"store": {"cluster": "s", "authority": "a", "path": "/{token}",
                    "metadata_token": {"cluster": "meta"}}}}"#;
    let config = FilterConfig::parse(json.as_bytes()).unwrap();
    let store = config.acme.unwrap().store.unwrap();
    assert_eq!(store.timeout_ms, 2000);
    let meta = store.metadata_token.unwrap();
    assert_eq!(meta.authority, "metadata.google.internal");
    assert!(meta.path.ends_with("/service-accounts/default/token"));
}

#[test]
fn cookie_rules() {
    let short = r#"{"affinity": {"sources": ["cookie"], "cookie": {"secret": "short"}}}"#;
    let e = err(short);
    assert_eq!(e.field, "affinity.cookie.secret");
    assert!(
        !e.message.contains("short"),
        "the secret must not be echoed"
    );
    assert_eq!(
        err(r#"{"affinity": {"sources": ["cookie"]}}"#).field,
        "affinity.cookie"
    );
    let none_insecure = format!(
        r#"{{"affinity": {{"sources": ["cookie"], "cookie": {{"secret": "{SECRET}", "same_site": "None", "secure": false}}}}}}"#
    );
    assert_eq!(err(&none_insecure).field, "affinity.cookie.same_site");
    let bad_name = format!(
        r#"{{"affinity": {{"sources": ["cookie"], "cookie": {{"secret": "{SECRET}", "name": "a b"}}}}}}"#
    );
    assert_eq!(err(&bad_name).field, "affinity.cookie.name");
}

#[test]
fn affinity_header_rules() {
    for header in ["X-Upper", "host", "cookie", "sec-websocket-key", "a b", ""] {
        let json =
            format!(r#"{{"affinity": {{"header": "{header}", "sources": ["client_address"]}}}}"#);
        assert_eq!(err(&json).field, "affinity.header", "{header}");
    }
    let same = r#"{"affinity": {"sources": [{"header": "x-edge-affinity"}]}}"#;
    assert_eq!(err(same).field, "affinity.sources[0].header");
    let twice = r#"{"affinity": {"sources": ["client_address", "client_address"]}}"#;
    assert_eq!(err(twice).field, "affinity.sources[1]");
    let query = r#"{"affinity": {"sources": [{"query": "a&b"}]}}"#;
    assert_eq!(err(query).field, "affinity.sources[0].query");
    assert_eq!(
        err(r#"{"affinity": {"sources": []}}"#).field,
        "affinity.sources"
    );
}

#[test]
fn websocket_and_redirect_rules() {
    assert_eq!(
        err(r#"{"websocket": {"path_prefixes": []}}"#).field,
        "websocket.path_prefixes"
    );
    assert_eq!(
        err(r#"{"websocket": {"path_prefixes": ["ws"]}}"#).field,
        "websocket.path_prefixes[0]"
    );
    assert_eq!(
        err(r#"{"websocket": {"path_prefixes": ["/ws"], "allowed_origins": ["example.com"]}}"#)
            .field,
        "websocket.allowed_origins[0]"
    );
    // The Origin check is on unless the config says `*` in words.
    for missing in [
        r#"{"websocket": {"path_prefixes": ["/ws"]}}"#,
        r#"{"websocket": {"path_prefixes": ["/ws"], "allowed_origins": []}}"#,
    ] {
        let e = err(missing);
        assert_eq!(e.field, "websocket.allowed_origins");
        assert!(e.message.contains(r#"["*"]"#), "{e}");
    }
    FilterConfig::parse(br#"{"websocket": {"path_prefixes": ["/ws"], "allowed_origins": ["*"]}}"#)
        .unwrap();
    assert_eq!(
        err(r#"{"redirect": {"allowed_hosts": ["https://example.com"]}}"#).field,
        "redirect.allowed_hosts[0]"
    );
    assert_eq!(
        err(r#"{"redirect": {"https_port": 0}}"#).field,
        "redirect.https_port"
    );
    assert_eq!(
        err(r#"{"redirect": {"https_port": 70000}}"#).field,
        "redirect.https_port"
    );
    assert_eq!(
        err(r#"{"stat_prefix": "a b", "redirect": {}}"#).field,
        "stat_prefix"
    );
}

#[test]
fn the_cookie_route_needs_a_route_that_hashes_the_cookie() {
    let with = |sources: &str, route_hashes: bool| {
        format!(
            r#"{{"affinity": {{"sources": {sources}, "cookie_route": true,
                             "cookie": {{"secret": "{SECRET}", "route_hashes": {route_hashes}}}}}}}"#
        )
    };
    assert_eq!(
        err(&with(r#"["cookie"]"#, false)).field,
        "affinity.cookie_route"
    );
    assert_eq!(
        err(&with(r#"[{"query": "room"}]"#, true)).field,
        "affinity.cookie_route"
    );
    let config = FilterConfig::parse(with(r#"["cookie"]"#, true).as_bytes()).unwrap();
    let affinity = config.affinity.unwrap();
    assert!(affinity.cookie_route && affinity.cookie.unwrap().route_hashes);
}
