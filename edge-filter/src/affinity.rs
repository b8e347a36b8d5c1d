//! Sticky routing: pick an affinity key for a request, so Envoy's `hash_policy` on the
//! internal header sends every request with the same key to the same backend.
//!
//! The cookie is `<key>.<mac>`: a 16-byte random-looking key and an HMAC-SHA256 over it
//! (RFC 2104) with the configured secret, both base64url. A cookie whose MAC does not verify
//! is ignored, counted as forged, and replaced: a client can keep its key, never choose one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[cfg(test)]
use crate::config::keyed_mac;
use crate::config::{AffinityConfig, CookieConfig, IssuePolicy, KeySource};
use crate::grammar::{self, split_once_byte};
use crate::request::Request;

type HmacSha256 = Hmac<Sha256>;

/// Longest key accepted from a query parameter or header; longer values are ignored.
pub const MAX_KEY_LEN: usize = 128;
/// Domain-separation labels, so a MAC made for one purpose never verifies for another.
const COOKIE_LABEL: &[u8] = b"acme-edge affinity cookie v1\0";
const NEW_KEY_LABEL: &[u8] = b"acme-edge affinity new key v1\0";

/// Where the key came from (for counters and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A query parameter.
    Query,
    /// A request header.
    Header,
    /// A valid affinity cookie.
    Cookie,
    /// A cookie issued with this response.
    NewCookie,
    /// The client's address.
    ClientAddress,
}

/// The affinity decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    /// Value for the internal header; `None` leaves it unset (after removing client copies).
    pub key: Option<String>,
    /// Where the key came from.
    pub source: Option<Source>,
    /// A `Set-Cookie` value to add to the response.
    pub set_cookie: Option<String>,
    /// The request carried an affinity cookie that did not verify.
    pub forged_cookie: bool,
}

/// Decide the affinity key. `nonce` gives bytes that differ per request (Envoy's request id,
/// time and a counter); it is called only when a new key is minted. New keys are
/// HMAC(secret, nonce), unpredictable without the secret even though wasm32 has no random
/// number generator.
pub fn decide(request: &Request, config: &AffinityConfig, nonce: &dyn Fn() -> Vec<u8>) -> Affinity {
    let mut forged_cookie = false;
    for source in &config.sources {
        let found = match source {
            KeySource::Query(name) => request
                .query()
                .and_then(|q| query_value(q, name))
                .and_then(plain_key)
                .map(|k| (k, Source::Query, None)),
            KeySource::Header(name) => request
                .first(name)
                .map(<[u8]>::trim_ascii)
                .and_then(plain_key)
                .map(|k| (k, Source::Header, None)),
            KeySource::ClientAddress => request
                .client_address
                .get()
                .and_then(client_ip)
                .map(|ip| (ip, Source::ClientAddress, None)),
            KeySource::Cookie => match &config.cookie {
                Some(cookie) => {
                    let (valid, forged) = find_cookie(request, cookie);
                    forged_cookie |= forged;
                    match valid {
                        Some(key) => Some((key, Source::Cookie, None)),
                        None if should_issue(request, cookie) => {
                            let key = new_key_with(cookie.mac(), &nonce());
                            let set = set_cookie(cookie, &sign_with(cookie.mac(), &key));
                            Some((key, Source::NewCookie, Some(set)))
                        }
                        None => None,
                    }
                }
                None => None,
            },
        };
        if let Some((key, source, set_cookie)) = found {
            return Affinity {
                key: Some(key),
                source: Some(source),
                set_cookie,
                forged_cookie,
            };
        }
    }
    Affinity {
        key: None,
        source: None,
        set_cookie: None,
        forged_cookie,
    }
}

/// The first value of a query parameter, raw (still percent-encoded, so that the same room
/// id always gives the same bytes).
pub fn query_value<'a>(query: &'a [u8], name: &str) -> Option<&'a [u8]> {
    query
        .split(|&b| b == b'&')
        .filter_map(|pair| {
            let (n, v) = split_once_byte(pair, b'=').unwrap_or((pair, b""));
            (n == name.as_bytes() && !v.is_empty()).then_some(v)
        })
        .next()
}

/// A client-chosen key is used as a header value, so it must be visible ASCII and bounded.
fn plain_key(value: &[u8]) -> Option<String> {
    if value.is_empty() || value.len() > MAX_KEY_LEN || !value.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    String::from_utf8(value.to_vec()).ok()
}

/// The IP part of Envoy's `source.address` (`1.2.3.4:5678`, `[::1]:5678`).
pub fn client_ip(address: &str) -> Option<String> {
    let ip = if let Some(rest) = address.strip_prefix('[') {
        rest.split_once(']').map(|(ip, _)| ip)?
    } else {
        match address.rsplit_once(':') {
            Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
            _ => address,
        }
    };
    let valid = !ip.is_empty()
        && ip.len() <= 64
        && ip
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':');
    valid.then(|| ip.to_ascii_lowercase())
}

fn should_issue(request: &Request, cookie: &CookieConfig) -> bool {
    match cookie.issue {
        IssuePolicy::Always => true,
        IssuePolicy::Never => false,
        // RFC 6455 §4.1: browsers always send Origin on a WebSocket handshake (and on CORS
        // requests); a client without one is unlikely to keep a cookie.
        IssuePolicy::Browsers => request.first("origin").is_some(),
    }
}

/// Look for our cookie among all `Cookie` headers (HTTP/2 splits them, RFC 9113 §8.2.3).
/// Returns the first key whose MAC verifies, and whether any copy failed to verify.
fn find_cookie(request: &Request, cookie: &CookieConfig) -> (Option<String>, bool) {
    let mut forged = false;
    for header in request.values("cookie") {
        for pair in header.split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some((name, value)) = split_once_byte(pair, b'=') else {
                continue;
            };
            if name != cookie.name.as_bytes() {
                continue;
            }
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            match verify_with(cookie.mac(), value) {
                Some(key) => return (Some(key), forged),
                None => forged = true,
            }
        }
    }
    (None, forged)
}

/// [`new_key_with`] keyed with `secret` (tests).
#[cfg(test)]
pub fn new_key(secret: &[u8], nonce: &[u8]) -> String {
    new_key_with(keyed_mac(secret), nonce)
}

/// A new key: 16 bytes of HMAC(secret, label || nonce), base64url (22 characters).
/// `m` is the secret's keyed state ([`CookieConfig::mac`]).
fn new_key_with(mut m: HmacSha256, nonce: &[u8]) -> String {
    m.update(NEW_KEY_LABEL);
    m.update(nonce);
    let out = m.finalize().into_bytes();
    URL_SAFE_NO_PAD.encode(out.get(..16).unwrap_or_default())
}

/// [`sign_with`] keyed with `secret` (tests).
#[cfg(test)]
pub fn sign(secret: &[u8], key: &str) -> String {
    sign_with(keyed_mac(secret), key)
}

/// The cookie value for a key: `<key>.<base64url(HMAC(secret, label || key))>`.
/// `m` is the secret's keyed state ([`CookieConfig::mac`]).
fn sign_with(mut m: HmacSha256, key: &str) -> String {
    m.update(COOKIE_LABEL);
    m.update(key.as_bytes());
    format!(
        "{key}.{}",
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    )
}

/// [`verify_with`] keyed with `secret` (tests).
#[cfg(test)]
pub fn verify(secret: &[u8], value: &[u8]) -> Option<String> {
    verify_with(keyed_mac(secret), value)
}

/// The key inside a cookie value, if its MAC verifies (constant-time comparison).
/// `m` is the secret's keyed state ([`CookieConfig::mac`]).
fn verify_with(mut m: HmacSha256, value: &[u8]) -> Option<String> {
    let (key, tag) = split_once_byte(value, b'.')?;
    if key.len() != 22 || !grammar::is_base64url(key) || tag.len() != 43 {
        return None;
    }
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    m.update(COOKIE_LABEL);
    m.update(key);
    m.verify_slice(&tag).ok()?;
    String::from_utf8(key.to_vec()).ok()
}

/// The `Set-Cookie` header value (RFC 6265 §4.1).
pub fn set_cookie(cookie: &CookieConfig, value: &str) -> String {
    let secure = if cookie.secure { "; Secure" } else { "" };
    format!(
        "{}={value}; Max-Age={}; Path=/{secure}; HttpOnly; SameSite={}",
        cookie.name, cookie.max_age_s, cookie.same_site
    )
}

#[cfg(test)]
mod tests {
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
            keyed: Default::default(),
        }
    }

    fn config(sources: Vec<KeySource>) -> AffinityConfig {
        AffinityConfig {
            header: "x-edge-affinity".into(),
            sources,
            cookie: Some(cookie_config()),
            clear_route_cache: false,
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
        let forged =
            "edge_affinity=AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
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
                forged_cookie: false
            }
        );
    }
}
