//! Sticky routing: pick an affinity key for a request, so Envoy's `hash_policy` on the
//! internal header sends every request with the same key to the same backend.
//!
//! The cookie is `<key>.<mac>`: a 16-byte random-looking key and an HMAC-SHA256 over it
//! (RFC 2104) with the configured secret, both base64url. A cookie whose MAC does not verify
//! is ignored, counted as forged, and replaced: a client can keep its key, never choose one.
//! The key a cookie gives the header is its whole value, the string Envoy's own cookie
//! `hash_policy` hashes: so when the routes hash the cookie themselves
//! ([`CookieConfig::route_hashes`]), the filter can leave the header unset for a request
//! whose only copy of the cookie is valid, and the request still reaches the same backend.

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
    /// No source gave a key, but the request carries a copy of the cookie that the route's
    /// hash would read: a fresh key stands in (the peer address was unknown).
    StandIn,
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
    /// The key is the request's only copy of a valid cookie, which the routes hash
    /// themselves ([`CookieConfig::route_hashes`]): with no client copy of the header to
    /// remove, the header need not be set.
    pub hashed_by_route: bool,
}

/// Decide the affinity key. `nonce` gives bytes that differ per request (Envoy's request id,
/// time and a counter); it is called only when a new key is minted. New keys are
/// HMAC(secret, nonce), unpredictable without the secret even though wasm32 has no random
/// number generator.
pub fn decide(request: &Request, config: &AffinityConfig, nonce: &dyn Fn() -> Vec<u8>) -> Affinity {
    let mut forged_cookie = false;
    // The cookie configuration, if the request carries a copy of the cookie that the
    // route's hash would read should the header stay unset.
    let mut cookie_for_route: Option<&CookieConfig> = None;
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
                    let found = find_cookie(request.values("cookie"), cookie);
                    forged_cookie |= found.forged;
                    if cookie.route_hashes && found.copies > 0 {
                        cookie_for_route = Some(cookie);
                    }
                    // A value that verified is base64url and a dot: valid UTF-8.
                    match found.valid.and_then(|v| String::from_utf8(v.to_vec()).ok()) {
                        Some(value) => {
                            return Affinity {
                                key: Some(value),
                                source: Some(Source::Cookie),
                                set_cookie: None,
                                forged_cookie,
                                hashed_by_route: cookie.route_hashes && found.as_envoy_reads_it,
                            };
                        }
                        None if should_issue(request, cookie) => {
                            let key = new_key_with(cookie.mac(), &nonce());
                            let value = sign_with(cookie.mac(), &key);
                            let set = set_cookie(cookie, &value);
                            Some((value, Source::NewCookie, Some(set)))
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
                hashed_by_route: false,
            };
        }
    }
    // No key, and the header left unset would let the route hash a cookie that did not
    // verify (or was not issued): a key of the filter's choosing takes the cookie's place,
    // the client's address (the ring point the route's own fallback gives it) when Envoy
    // says it.
    let stand_in =
        cookie_for_route.map(
            |cookie| match request.client_address.get().and_then(client_ip) {
                Some(ip) => (ip, Source::ClientAddress),
                None => (new_key_with(cookie.mac(), &nonce()), Source::StandIn),
            },
        );
    let (key, source) = stand_in.unzip();
    Affinity {
        key,
        source,
        set_cookie: None,
        forged_cookie,
        hashed_by_route: false,
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

/// What the request's `Cookie` headers hold of the affinity cookie.
#[derive(Debug, Default)]
struct FoundCookie<'a> {
    /// The first value whose MAC verifies: the whole `<key>.<mac>`.
    valid: Option<&'a [u8]>,
    /// A copy before it failed to verify.
    forged: bool,
    /// Copies of the cookie, valid or not, in all `Cookie` headers (a name compared after
    /// trimming whitespace, so at least every copy Envoy's cookie parser finds).
    copies: usize,
    /// `valid` is the only copy, in the only `Cookie` header, spelled `name=value` after
    /// nothing but spaces and with nothing after it: exactly what Envoy's cookie parser
    /// (`Http::Utility::parseCookieValue`: split on `;`, leading spaces skipped, quotes
    /// stripped) returns for that name, so the route's cookie hash reads this value.
    as_envoy_reads_it: bool,
}

/// Whether `header`, a request's first `Cookie` header, holds the only copy of the cookie in
/// it, valid and spelled so that Envoy's cookie parser reads exactly its value. Envoy's parser
/// looks at the `Cookie` headers in order and takes the first copy, so the route's cookie hash
/// then reads that value, whatever later `Cookie` headers hold.
pub fn lone_valid_cookie(header: &[u8], cookie: &CookieConfig) -> bool {
    // What a browser sends on a site that sets no other cookie: the header is exactly
    // `name=value` with a value that verified before. The parse below gives the same answer
    // (a remembered value is base64url and `.`: no `;`, `=`, quote or space to split on),
    // so this skips it.
    let exact = header
        .strip_prefix(cookie.name.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"="));
    if exact.is_some_and(|value| cookie.verified_before(value)) {
        return true;
    }
    find_cookie(std::iter::once(header), cookie).as_envoy_reads_it
}

/// Look for our cookie among all `Cookie` headers (HTTP/2 splits them, RFC 9113 §8.2.3).
fn find_cookie<'a>(
    values: impl Iterator<Item = &'a [u8]>,
    cookie: &CookieConfig,
) -> FoundCookie<'a> {
    let mut found = FoundCookie::default();
    let mut headers = 0;
    let mut plain = false;
    for header in values {
        headers += 1;
        for raw in header.split(|&b| b == b';') {
            let pair = raw.trim_ascii();
            let Some((name, value)) = split_once_byte(pair, b'=') else {
                continue;
            };
            if name != cookie.name.as_bytes() {
                continue;
            }
            found.copies += 1;
            if found.valid.is_some() {
                continue;
            }
            let unquoted = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            if verify_cookie(cookie, unquoted) {
                found.valid = Some(unquoted);
                plain = spelled_plainly(raw, name, unquoted);
            } else {
                found.forged = true;
            }
        }
    }
    found.as_envoy_reads_it = found.valid.is_some() && plain && headers == 1 && found.copies == 1;
    found
}

/// `raw` is `name=value` after nothing but spaces (the only whitespace Envoy's cookie parser
/// skips), and nothing follows the value.
fn spelled_plainly(raw: &[u8], name: &[u8], value: &[u8]) -> bool {
    let start = raw.iter().position(|&b| b != b' ').unwrap_or(raw.len());
    let rest = raw.get(start..).unwrap_or_default();
    rest.len() == name.len() + 1 + value.len()
        && rest.starts_with(name)
        && rest.get(name.len()) == Some(&b'=')
        && rest.ends_with(value)
}

/// Whether a cookie value verifies under the configuration's secret: found among the values
/// that verified before ([`CookieConfig::verified_before`]), else by its MAC (then
/// remembered). A browser sends the same value on every request, so most of them skip the
/// MAC.
fn verify_cookie(cookie: &CookieConfig, value: &[u8]) -> bool {
    if cookie.verified_before(value) {
        return true;
    }
    if verify_with(cookie.mac(), value).is_none() {
        return false;
    }
    cookie.remember_verified(value);
    true
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
mod tests;
