//! Unit tests of the affinity decision: key sources, the signed cookie, and its cache.

use super::*;
use crate::request::Property;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn cookie_config() -> CookieConfig {
    CookieConfig {
        name: "edge_affinity".into(),
        secret: SECRET.into(),
        max_age_s: 3600,
        same_site: "Lax".into(),
        secure: true,
        issue: IssuePolicy::Browsers,
        route_hashes: false,
        cache: Default::default(),
    }
}

fn config(sources: Vec<KeySource>) -> AffinityConfig {
    AffinityConfig {
        header: "x-edge-affinity".into(),
        sources,
        cookie: Some(cookie_config()),
        clear_route_cache: false,
        cookie_route: false,
    }
}

fn all_sources() -> Vec<KeySource> {
    vec![
        KeySource::Query("room".into()),
        KeySource::Header("x-room".into()),
        KeySource::Cookie,
        KeySource::ClientAddress,
    ]
}

fn request(pairs: &[(&str, &str)]) -> Request {
    let mut r = Request::from_pairs(pairs.iter().map(|(n, v)| (*n, *v)));
    r.client_address = Property::known(Some("203.0.113.7:51234"));
    r
}

#[test]
fn sign_and_verify_round_trip() {
    let key = new_key(SECRET.as_bytes(), b"request-1");
    assert_eq!(key.len(), 22);
    let value = sign(SECRET.as_bytes(), &key);
    assert_eq!(
        verify(SECRET.as_bytes(), value.as_bytes()),
        Some(key.clone())
    );
    // Another secret does not verify it.
    assert_eq!(
        verify(b"another secret, 32 bytes long!!!", value.as_bytes()),
        None
    );
}

#[test]
fn the_prepared_key_state_is_reused_not_used_up() {
    let config = cookie_config();
    let value = sign(SECRET.as_bytes(), "AAAAAAAAAAAAAAAAAAAAAA");
    for _ in 0..2 {
        assert_eq!(
            verify_with(config.mac(), value.as_bytes()).as_deref(),
            Some("AAAAAAAAAAAAAAAAAAAAAA")
        );
        assert_eq!(sign_with(config.mac(), "AAAAAAAAAAAAAAAAAAAAAA"), value);
    }
    assert_eq!(
        config.clone(),
        config,
        "the cache takes no part in equality"
    );
}

#[test]
fn tampered_cookies_do_not_verify() {
    let key = new_key(SECRET.as_bytes(), b"n");
    let value = sign(SECRET.as_bytes(), &key);
    let (k, tag) = value.split_once('.').unwrap();
    let mut flipped = k.as_bytes().to_vec();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let other_key = format!("{}.{tag}", String::from_utf8(flipped).unwrap());
    let mut bad_tag = tag.as_bytes().to_vec();
    bad_tag[5] = if bad_tag[5] == b'A' { b'B' } else { b'A' };
    let other_tag = format!("{k}.{}", String::from_utf8(bad_tag).unwrap());
    let long = format!("{value}AAAA");
    for forged in [
        other_key.as_str(),
        other_tag.as_str(),
        long.as_str(),
        k,
        "",
        ".",
        "aaaaaaaaaaaaaaaaaaaaaa.",
        "room-1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert_eq!(
            verify(SECRET.as_bytes(), forged.as_bytes()),
            None,
            "{forged}"
        );
    }
    assert_eq!(verify(SECRET.as_bytes(), &[0xff; 66]), None);
}

#[test]
fn new_keys_differ_per_nonce_and_secret() {
    let a = new_key(SECRET.as_bytes(), b"req-1");
    let b = new_key(SECRET.as_bytes(), b"req-2");
    let c = new_key(b"another secret, 32 bytes long!!!", b"req-1");
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert_eq!(a, new_key(SECRET.as_bytes(), b"req-1"));
}

#[test]
fn sources_are_tried_in_order() {
    let c = config(all_sources());
    let valid_cookie = format!(
        "edge_affinity={}",
        sign(SECRET.as_bytes(), &new_key(SECRET.as_bytes(), b"x"))
    );
    let r = request(&[
        (":path", "/ws?room=lobby"),
        ("x-room", "other"),
        ("cookie", &valid_cookie),
    ]);
    let a = decide(&r, &c, &|| b"n".to_vec());
    assert_eq!(
        (a.key.as_deref(), a.source),
        (Some("lobby"), Some(Source::Query))
    );
    let r = request(&[
        (":path", "/ws"),
        ("x-room", "other"),
        ("cookie", &valid_cookie),
    ]);
    let a = decide(&r, &c, &|| b"n".to_vec());
    assert_eq!(
        (a.key.as_deref(), a.source),
        (Some("other"), Some(Source::Header))
    );
    let r = request(&[(":path", "/ws"), ("cookie", &valid_cookie)]);
    let a = decide(&r, &c, &|| b"n".to_vec());
    assert_eq!(a.source, Some(Source::Cookie));
    assert_eq!(a.set_cookie, None);
    // No cookie and no Origin: not a browser, so the client address decides.
    let r = request(&[(":path", "/ws")]);
    let a = decide(&r, &c, &|| b"n".to_vec());
    assert_eq!(
        (a.key.as_deref(), a.source),
        (Some("203.0.113.7"), Some(Source::ClientAddress))
    );
    // The order in the config is what counts.
    let reversed = config(vec![
        KeySource::Header("x-room".into()),
        KeySource::Query("room".into()),
    ]);
    let r = request(&[(":path", "/ws?room=lobby"), ("x-room", "other")]);
    assert_eq!(
        decide(&r, &reversed, &|| b"n".to_vec()).key.as_deref(),
        Some("other")
    );
}

#[test]
fn browsers_get_a_new_signed_cookie() {
    let c = config(all_sources());
    let r = request(&[(":path", "/ws"), ("origin", "https://app.example.com")]);
    let a = decide(&r, &c, &|| b"request-id-1".to_vec());
    assert_eq!(a.source, Some(Source::NewCookie));
    let set = a.set_cookie.unwrap();
    assert!(set.starts_with("edge_affinity="), "{set}");
    assert!(
        set.ends_with("; Max-Age=3600; Path=/; Secure; HttpOnly; SameSite=Lax"),
        "{set}"
    );
    // The client sends it back and lands on the same key.
    let value = set.split(';').next().unwrap();
    let back = request(&[(":path", "/ws"), ("cookie", value), ("origin", "https://a")]);
    let again = decide(&back, &c, &|| b"request-id-2".to_vec());
    assert_eq!(again.key, a.key);
    assert_eq!(again.source, Some(Source::Cookie));
    assert!(!again.forged_cookie);
}

#[test]
fn forged_cookies_are_ignored_counted_and_replaced() {
    let c = config(all_sources());
    let forged = "edge_affinity=AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let r = request(&[
        (":path", "/ws"),
        ("cookie", forged),
        ("origin", "https://a"),
    ]);
    let a = decide(&r, &c, &|| b"n1".to_vec());
    assert!(a.forged_cookie);
    assert_eq!(a.source, Some(Source::NewCookie));
    assert_ne!(a.key.as_deref(), Some("AAAAAAAAAAAAAAAAAAAAAA"));
    assert!(a.set_cookie.is_some());
    // Without Origin the forged cookie is still counted, and the address decides.
    let r = request(&[(":path", "/ws"), ("cookie", forged)]);
    let a = decide(&r, &c, &|| b"n1".to_vec());
    assert!(a.forged_cookie);
    assert_eq!(a.source, Some(Source::ClientAddress));
}

#[test]
fn cookie_parsing_handles_lists_splits_and_quotes() {
    let c = config(vec![KeySource::Cookie]);
    let value = sign(SECRET.as_bytes(), &new_key(SECRET.as_bytes(), b"q"));
    let headers = [
        format!("a=1; edge_affinity={value}; b=2"),
        format!("edge_affinity=\"{value}\""),
        format!("xedge_affinity=zzz;edge_affinity={value}"),
    ];
    for h in &headers {
        let r = request(&[(":path", "/"), ("cookie", h)]);
        assert_eq!(
            decide(&r, &c, &|| b"n".to_vec()).source,
            Some(Source::Cookie),
            "{h}"
        );
    }
    // Split over two Cookie headers (HTTP/2), forged copy first.
    let r = request(&[
        (":path", "/"),
        ("cookie", "edge_affinity=bogus"),
        ("cookie", &format!("edge_affinity={value}")),
    ]);
    let a = decide(&r, &c, &|| b"n".to_vec());
    assert_eq!(a.source, Some(Source::Cookie));
    assert!(a.forged_cookie);
    // Names are case-sensitive (RFC 6265 §5.4 compares them exactly).
    let r = request(&[
        (":path", "/"),
        ("cookie", &format!("EDGE_AFFINITY={value}")),
    ]);
    assert_eq!(decide(&r, &c, &|| b"n".to_vec()).source, None);
}

#[test]
fn issue_policy() {
    let mut c = config(vec![KeySource::Cookie]);
    let r = request(&[(":path", "/")]);
    assert_eq!(decide(&r, &c, &|| b"n".to_vec()).source, None);
    c.cookie.as_mut().unwrap().issue = IssuePolicy::Always;
    assert_eq!(
        decide(&r, &c, &|| b"n".to_vec()).source,
        Some(Source::NewCookie)
    );
    c.cookie.as_mut().unwrap().issue = IssuePolicy::Never;
    let r = request(&[(":path", "/"), ("origin", "https://a")]);
    assert_eq!(decide(&r, &c, &|| b"n".to_vec()).source, None);
}

#[test]
fn hostile_client_keys_fall_through() {
    let c = config(vec![
        KeySource::Query("room".into()),
        KeySource::Header("x-room".into()),
        KeySource::ClientAddress,
    ]);
    let long = "a".repeat(MAX_KEY_LEN + 1);
    let long_path = format!("/ws?room={long}");
    for (path, header) in [
        ("/ws?room=", ""),
        ("/ws?room", " "),
        (long_path.as_str(), long.as_str()),
        ("/ws?roomx=1&xroom=2", "a b"),
    ] {
        let r = request(&[(":path", path), ("x-room", header)]);
        assert_eq!(
            decide(&r, &c, &|| b"n".to_vec()).source,
            Some(Source::ClientAddress),
            "{path}"
        );
    }
    let mut r = request(&[(":path", "/ws")]);
    r.headers.push(("x-room".into(), b"r\r\noom".to_vec()));
    assert_eq!(
        decide(&r, &c, &|| b"n".to_vec()).source,
        Some(Source::ClientAddress)
    );
    let mut r = request(&[(":path", "/ws")]);
    r.headers.push(("x-room".into(), vec![0xc3, 0xa9]));
    assert_eq!(
        decide(&r, &c, &|| b"n".to_vec()).source,
        Some(Source::ClientAddress)
    );
    // The first non-empty occurrence of a repeated parameter wins.
    let r = request(&[(":path", "/ws?room=&room=b&room=c")]);
    assert_eq!(decide(&r, &c, &|| b"n".to_vec()).key.as_deref(), Some("b"));
}

#[test]
fn client_addresses() {
    assert_eq!(
        client_ip("203.0.113.7:51234").as_deref(),
        Some("203.0.113.7")
    );
    assert_eq!(
        client_ip("[2001:DB8::1]:443").as_deref(),
        Some("2001:db8::1")
    );
    assert_eq!(client_ip("2001:db8::1").as_deref(), Some("2001:db8::1"));
    assert_eq!(client_ip("10.0.0.1").as_deref(), Some("10.0.0.1"));
    assert_eq!(client_ip(""), None);
    assert_eq!(client_ip("/tmp/socket"), None);
    assert_eq!(client_ip("[::1"), None);
}

#[test]
fn no_key_when_no_source_applies() {
    let c = config(vec![KeySource::Query("room".into())]);
    let a = decide(&request(&[(":path", "/ws")]), &c, &|| b"n".to_vec());
    assert_eq!(
        a,
        Affinity {
            key: None,
            source: None,
            set_cookie: None,
            forged_cookie: false,
            hashed_by_route: false,
        }
    );
}

fn cookie_request(value: &str) -> Request {
    request(&[
        (":path", "/ws"),
        ("cookie", &format!("edge_affinity={value}")),
    ])
}

#[test]
fn a_verified_cookie_is_remembered_and_only_its_exact_value_hits() {
    let c = config(vec![KeySource::Cookie]);
    let cookie = c.cookie.as_ref().unwrap();
    let value = sign(SECRET.as_bytes(), &new_key(SECRET.as_bytes(), b"n"));
    assert!(!cookie.verified_before(value.as_bytes()));
    for _ in 0..3 {
        let a = decide(&cookie_request(&value), &c, &|| b"n".to_vec());
        // The header gets the whole value, the string Envoy's cookie hash reads.
        assert_eq!(
            (a.key.as_deref(), a.source),
            (Some(&*value), Some(Source::Cookie))
        );
        assert!(cookie.verified_before(value.as_bytes()));
    }
    assert_eq!(cookie.remembered(), 1);

    // One character off, in the key or in the MAC: a miss, then the MAC refuses it, and
    // a refused value is never remembered.
    for i in [0, 21, 23, value.len() - 1] {
        let mut forged = value.clone().into_bytes();
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(!cookie.verified_before(forged.as_bytes()));
        let a = decide(&cookie_request(&forged), &c, &|| b"n".to_vec());
        assert!(a.forged_cookie, "{forged}");
        assert_eq!(a.source, None);
        assert!(!cookie.verified_before(forged.as_bytes()));
    }
    assert_eq!(cookie.remembered(), 1);
}

#[test]
fn a_remembered_value_skips_the_mac() {
    // White box: a value put in the cache is taken without computing its MAC (the whole
    // point of the cache), so only values that verified may ever be put there.
    let c = config(vec![KeySource::Cookie]);
    let cookie = c.cookie.as_ref().unwrap();
    let unsigned = format!("{}.{}", "k".repeat(22), "m".repeat(43));
    assert!(!verify_cookie(cookie, unsigned.as_bytes()));
    cookie.remember_verified(unsigned.as_bytes());
    assert!(verify_cookie(cookie, unsigned.as_bytes()));
}

#[test]
fn the_cache_is_bounded_and_an_evicted_value_still_verifies() {
    let c = config(vec![KeySource::Cookie]);
    let cookie = c.cookie.as_ref().unwrap();
    let values: Vec<String> = (0..4 * crate::config::VERIFIED_SLOTS)
        .map(|i| {
            sign(
                SECRET.as_bytes(),
                &new_key(SECRET.as_bytes(), format!("n{i}").as_bytes()),
            )
        })
        .collect();
    for value in &values {
        assert!(verify_cookie(cookie, value.as_bytes()));
    }
    let remembered = cookie.remembered();
    assert!(remembered <= crate::config::VERIFIED_SLOTS, "{remembered}");
    // Values spread over the slots (the MAC's characters pick them).
    assert!(
        remembered > crate::config::VERIFIED_SLOTS / 2,
        "{remembered}"
    );
    for value in &values {
        assert!(verify_cookie(cookie, value.as_bytes()));
    }
    // Values of another length are neither looked up nor kept.
    cookie.remember_verified(b"short.value");
    assert!(!cookie.verified_before(b"short.value"));
}

#[test]
fn a_copy_of_the_configuration_starts_with_nothing_remembered() {
    let cookie = cookie_config();
    let value = sign(SECRET.as_bytes(), &new_key(SECRET.as_bytes(), b"n"));
    assert!(verify_cookie(&cookie, value.as_bytes()));
    assert!(cookie.verified_before(value.as_bytes()));
    // A copy given another secret must not accept what the first one verified.
    let other = CookieConfig {
        secret: "another secret, 32 bytes or more!!".into(),
        ..cookie.clone()
    };
    assert!(!other.verified_before(value.as_bytes()));
    assert!(!verify_cookie(&other, value.as_bytes()));
    // The cache takes no part in equality: a copy with an empty one is the same config.
    assert_eq!(cookie, cookie.clone());
}

fn route_hashing(sources: Vec<KeySource>) -> AffinityConfig {
    let mut c = config(sources);
    if let Some(cookie) = c.cookie.as_mut() {
        cookie.route_hashes = true;
    }
    c
}

#[test]
fn only_a_lone_plainly_spelled_valid_cookie_is_left_to_the_route() {
    let c = route_hashing(all_sources());
    let value = sign(SECRET.as_bytes(), &new_key(SECRET.as_bytes(), b"r"));
    let forged = "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let decide_on = |cookies: &[String]| {
        let mut pairs = vec![(":path", "/ws")];
        pairs.extend(cookies.iter().map(|c| ("cookie", c.as_str())));
        decide(&request(&pairs), &c, &|| b"n".to_vec())
    };
    // Envoy's parser reads exactly `value` here: the route's cookie hash gives its backend.
    for plain in [
        format!("edge_affinity={value}"),
        format!("a=1; edge_affinity={value}; b=2"),
        format!("a=1;edge_affinity={value}"),
        format!("a=1;   edge_affinity={value}"),
    ] {
        let a = decide_on(std::slice::from_ref(&plain));
        assert_eq!(a.key.as_deref(), Some(&*value), "{plain}");
        assert!(a.hashed_by_route, "{plain}");
    }
    // Anything Envoy might read otherwise, or not at all, or a second copy it might pick
    // instead: the key is still the valid value, but the filter must set the header.
    for unusual in [
        vec![format!("edge_affinity=\"{value}\"")],
        vec![format!("edge_affinity={value} ")],
        vec![format!("edge_affinity={value} ; b=2")],
        vec![format!("\tedge_affinity={value}")],
        vec![format!("edge_affinity={value}; edge_affinity={value}")],
        vec![format!("edge_affinity={forged}; edge_affinity={value}")],
        vec![format!("edge_affinity={value}; edge_affinity={forged}")],
        vec!["a=1".to_owned(), format!("edge_affinity={value}")],
        vec![format!("edge_affinity={value}"), "b=2".to_owned()],
    ] {
        let a = decide_on(&unusual);
        assert_eq!(a.key.as_deref(), Some(&*value), "{unusual:?}");
        assert_eq!(a.source, Some(Source::Cookie), "{unusual:?}");
        assert!(!a.hashed_by_route, "{unusual:?}");
    }
    // Without the route's cookie hash, never.
    let a = decide(&cookie_request(&value), &config(all_sources()), &|| {
        b"n".to_vec()
    });
    assert_eq!(a.key.as_deref(), Some(&*value));
    assert!(!a.hashed_by_route);
}

#[test]
fn a_cookie_that_gives_no_key_is_kept_from_the_routes_hash() {
    // Cookie only, no Origin (so no new cookie) and no client_address source: before, no
    // key at all. A route that hashes the cookie would then read the forged one, a value
    // the client chose: the filter sets the client's address instead.
    let c = route_hashing(vec![KeySource::Cookie]);
    let forged = "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for value in [forged, "not-even-the-shape", ""] {
        let a = decide(&cookie_request(value), &c, &|| b"n".to_vec());
        assert_eq!(
            (a.key.as_deref(), a.source),
            (Some("203.0.113.7"), Some(Source::ClientAddress)),
            "{value:?}"
        );
        assert!(!a.hashed_by_route);
    }
    // The peer address unknown: a fresh key of the filter's making, never the cookie.
    let mut r = cookie_request(forged);
    r.client_address = Property::known(None);
    let a = decide(&r, &c, &|| b"n".to_vec());
    assert_eq!(a.source, Some(Source::StandIn));
    assert_eq!(a.key.as_ref().map(String::len), Some(22));
    assert_ne!(a.key.as_deref(), Some(forged));
    // No copy of the cookie, or a route that does not hash it: no key, as before.
    let a = decide(&request(&[(":path", "/ws")]), &c, &|| b"n".to_vec());
    assert_eq!(a.key, None);
    let a = decide(
        &cookie_request(forged),
        &config(vec![KeySource::Cookie]),
        &|| b"n".to_vec(),
    );
    assert_eq!(a.key, None);
}

#[test]
fn the_cookie_routes_check_reads_one_cookie_header_as_envoy_does() {
    let c = route_hashing(vec![KeySource::Cookie]);
    let value = sign(SECRET.as_bytes(), &new_key(SECRET.as_bytes(), b"l"));
    let forged = "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let lone = [
        format!("edge_affinity={value}"),
        format!("a=1; edge_affinity={value}; b=2"),
        format!("  edge_affinity={value}"),
        format!("edge_affinity={value};"),
    ];
    let not_alone = [
        format!("edge_affinity=\"{value}\""),
        format!("edge_affinity={value} ; b=2"),
        format!("edge_affinity={value} "),
        format!("edge_affinity={value}x"),
        format!("edge_affinity={value}; edge_affinity={value}"),
        format!("edge_affinity={forged}; edge_affinity={value}"),
        format!("edge_affinity={forged}"),
        format!("edge_affinity=={value}"),
        format!("xedge_affinity={value}"),
        "a=1; b=2".to_owned(),
        String::new(),
    ];
    // Once with nothing remembered (every answer from the parse), once with the value
    // remembered (the exact `name=value` header answered without it): the same answers.
    for remembered in [false, true] {
        let cookie = &c.cookie.clone().unwrap();
        if remembered {
            assert!(lone_valid_cookie(lone[0].as_bytes(), cookie));
            assert!(cookie.verified_before(value.as_bytes()));
        }
        for header in &not_alone {
            assert!(
                !lone_valid_cookie(header.as_bytes(), cookie),
                "{header} (remembered: {remembered})"
            );
        }
        for header in &lone {
            assert!(
                lone_valid_cookie(header.as_bytes(), cookie),
                "{header} (remembered: {remembered})"
            );
        }
    }
}
