//! `affinity`: where the sticky-routing key comes from, and the signed cookie.

use std::cell::{OnceCell, RefCell};
use std::collections::HashSet;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::ConfigError;
use crate::grammar;

/// Sticky routing: which request property picks the backend.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AffinityConfig {
    /// Internal header carrying the key to Envoy's `hash_policy`. Any client-sent copy is
    /// removed first.
    #[serde(default = "default_affinity_header")]
    pub header: String,
    /// Key sources, tried in this order; the first that yields a key wins.
    pub sources: Vec<KeySource>,
    /// The signed cookie, required when `sources` contains `"cookie"`.
    #[serde(default)]
    pub cookie: Option<CookieConfig>,
    /// Have Envoy match the route again after the header is set. Only routes that match on
    /// the affinity header need it (the hash policy reads the header later anyway); it costs
    /// a host call and a second route match per request, so it is off unless asked for.
    #[serde(default)]
    pub clear_route_cache: bool,
    /// This plugin configuration runs only on routes that admit requests with a `Cookie`
    /// and without an `Upgrade`, a client copy of `header` or any key source listed before
    /// `"cookie"` (`render.sh` renders one such route per sticky path, with this filter
    /// enabled on it alone). A request whose first `Cookie` header holds the only copy of a
    /// valid cookie, plainly spelled, then passes after that one header read (the route
    /// hashes the cookie, [`CookieConfig::route_hashes`]); every other request gets the
    /// full treatment. The filter takes what the route admits on trust (one host call each
    /// to check), as the sticky bypass route is trusted to admit only requests that need no
    /// filter: never turn this on for a route that admits an `Upgrade` or a client copy of
    /// the internal header. Requires `"cookie"` in `sources` and `cookie.route_hashes`.
    #[serde(default)]
    pub cookie_route: bool,
}

fn default_affinity_header() -> String {
    "x-edge-affinity".to_owned()
}

/// One place an affinity key can come from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySource {
    /// A query parameter, e.g. `{"query": "room"}`: every client of a room meets on one backend.
    Query(String),
    /// A request header, e.g. `{"header": "x-session-id"}`.
    Header(String),
    /// The signed affinity cookie; browsers without one get a new one.
    Cookie,
    /// The client's IP address (the network LB passes it through unchanged).
    ClientAddress,
}

/// The signed affinity cookie.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CookieConfig {
    /// Cookie name.
    #[serde(default = "default_cookie_name")]
    pub name: String,
    /// HMAC-SHA256 key, at least 32 bytes. Never logged.
    pub secret: String,
    /// `Max-Age` in seconds.
    #[serde(default = "default_cookie_max_age")]
    pub max_age_s: u64,
    /// `SameSite` attribute: `Lax`, `Strict` or `None`.
    #[serde(default = "default_same_site")]
    pub same_site: String,
    /// Add `Secure` (set to false only for plain-HTTP test setups).
    #[serde(default = "default_true")]
    pub secure: bool,
    /// Who gets a new cookie: `browsers` (requests with an `Origin` header, which browsers
    /// always send on WebSocket handshakes), `always`, or `never`. A client that is not
    /// given one falls through to the next key source.
    #[serde(default)]
    pub issue: IssuePolicy,
    /// The routes' `hash_policy` hashes this cookie right after the affinity header
    /// (`cookie: { name: … }`, no `ttl`), as `render.sh` renders them. The filter then leaves
    /// the header unset when the key is the request's only copy of a valid cookie, spelled
    /// so that Envoy reads exactly that value (no header write, and no second route match,
    /// which Envoy does after any request header changes), and sets it in every other case,
    /// so a cookie that did not decide never reaches that hash. Off by default: without that
    /// hash policy, cookie clients would lose their backend.
    #[serde(default)]
    pub route_hashes: bool,
    /// What the secret determines, worked out on first use: its HMAC state and the cookie
    /// values that verified under it.
    #[serde(skip)]
    pub(crate) cache: SecretCache,
}

impl CookieConfig {
    /// HMAC-SHA256 keyed with `secret`, ready for a message. RFC 2104 §2 hashes the padded
    /// key into the inner and outer states before any message; that is done once per
    /// configuration and the state is cloned per MAC, so a cookie costs two SHA-256
    /// compressions instead of four.
    pub fn mac(&self) -> Hmac<Sha256> {
        self.cache
            .mac
            .get_or_init(|| keyed_mac(self.secret.as_bytes()))
            .clone()
    }

    /// Whether this exact cookie value verified under this configuration's secret before
    /// (and is still in the cache): then its MAC need not be computed again.
    pub fn verified_before(&self, value: &[u8]) -> bool {
        self.cache.verified.contains(value)
    }

    /// Remember a cookie value whose MAC just verified under this configuration's secret.
    pub fn remember_verified(&self, value: &[u8]) {
        self.cache.verified.insert(value);
    }

    /// How many cookie values are remembered (tests).
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        self.cache.verified.len()
    }
}

/// HMAC-SHA256 keyed with `secret`.
pub fn keyed_mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length (RFC 2104 §2), so this never fails.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    }
}

#[cold]
fn unreachable_hmac() -> Hmac<Sha256> {
    // `new_from_slice` only fails for fixed-size-key MACs; HMAC is not one. Fall back to an
    // empty key rather than panic in the data path.
    <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default())
}

/// What the secret determines, kept so it is worked out once. It is not part of the
/// configuration: it takes no part in comparisons, and a clone starts empty (so a copy that
/// is given another secret never uses this one's).
#[derive(Default)]
pub(crate) struct SecretCache {
    mac: OnceCell<Hmac<Sha256>>,
    verified: VerifiedCookies,
}

impl Clone for SecretCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for SecretCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SecretCache {}

/// Length of a cookie value the filter issues: a 22-character key, `.`, a 43-character MAC.
pub const COOKIE_VALUE_LEN: usize = 66;

/// How many verified cookie values one configuration remembers (per Envoy worker: each has
/// its own VM). 256 × 66 bytes: 17 KiB, allocated on the first verified cookie.
pub const VERIFIED_SLOTS: usize = 256;

/// Cookie values whose MAC verified, so a client's next requests skip the two SHA-256
/// compressions (the larger part of the filter's own work on a sticky request).
///
/// Direct-mapped: a value's slot follows from its last two characters (part of the MAC, so
/// valid values spread evenly), and a newer value takes the slot. A hit needs the whole value
/// to be equal, compared in constant time, so the lookup tells a client nothing about a value
/// it does not already hold; a miss (an evicted or forged value) is verified by its MAC as
/// without the cache. Lookup and insertion cost the same whatever the input: no slot ever
/// holds more than one value, so no sequence of cookies can make them slower.
#[derive(Default)]
struct VerifiedCookies(RefCell<Vec<Option<[u8; COOKIE_VALUE_LEN]>>>);

impl VerifiedCookies {
    fn slot(value: &[u8; COOKIE_VALUE_LEN]) -> usize {
        let [.., a, b] = *value;
        (usize::from(a) * 31 + usize::from(b)) % VERIFIED_SLOTS
    }

    fn contains(&self, value: &[u8]) -> bool {
        let Ok(value) = <&[u8; COOKIE_VALUE_LEN]>::try_from(value) else {
            return false;
        };
        let Ok(slots) = self.0.try_borrow() else {
            return false;
        };
        match slots.get(Self::slot(value)) {
            Some(Some(known)) => same_in_constant_time(known, value),
            _ => false,
        }
    }

    fn insert(&self, value: &[u8]) {
        let Ok(value) = <[u8; COOKIE_VALUE_LEN]>::try_from(value) else {
            return;
        };
        let Ok(mut slots) = self.0.try_borrow_mut() else {
            return;
        };
        if slots.is_empty() {
            slots.resize(VERIFIED_SLOTS, None);
        }
        if let Some(slot) = slots.get_mut(Self::slot(&value)) {
            *slot = Some(value);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.borrow().iter().flatten().count()
    }
}

impl std::fmt::Debug for CookieConfig {
    // Hand-written so that the secret never reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieConfig")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("max_age_s", &self.max_age_s)
            .field("same_site", &self.same_site)
            .field("secure", &self.secure)
            .field("issue", &self.issue)
            .field("route_hashes", &self.route_hashes)
            .finish()
    }
}

/// Who receives a new affinity cookie.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IssuePolicy {
    /// Clients that send `Origin` (browsers).
    #[default]
    Browsers,
    /// Every client.
    Always,
    /// Nobody: only verify cookies issued elsewhere.
    Never,
}

fn default_cookie_name() -> String {
    "edge_affinity".to_owned()
}

fn default_cookie_max_age() -> u64 {
    86_400
}

fn default_same_site() -> String {
    "Lax".to_owned()
}

fn default_true() -> bool {
    true
}

/// Whether two values are equal, in a time that does not depend on where they differ: the
/// differences are OR-ed together with no early exit, and `black_box` keeps the compiler
/// from turning the final test back into a byte-by-byte comparison. (`subtle`'s `ct_eq`
/// does the same with a barrier per byte, which costs a call per byte in wasm.)
fn same_in_constant_time(a: &[u8; COOKIE_VALUE_LEN], b: &[u8; COOKIE_VALUE_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Minimum HMAC key length: RFC 2104 §3 recommends at least the hash output length.
pub const MIN_SECRET_LEN: usize = 32;

impl AffinityConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        header_name("affinity.header", &self.header)?;
        if self.sources.is_empty() {
            return Err(ConfigError::new(
                "affinity.sources",
                "must list at least one key source",
            ));
        }
        let mut seen = HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let field = format!("affinity.sources[{i}]");
            if !seen.insert(source) {
                return Err(ConfigError::new(field, "is listed twice"));
            }
            match source {
                KeySource::Query(name) => {
                    if !grammar::is_query_name(name) {
                        return Err(ConfigError::new(
                            format!("{field}.query"),
                            "must be a plain query parameter name",
                        ));
                    }
                }
                KeySource::Header(name) => {
                    header_name(&format!("{field}.header"), name)?;
                    if name.eq_ignore_ascii_case(&self.header) {
                        return Err(ConfigError::new(
                            format!("{field}.header"),
                            "cannot be the internal affinity header itself",
                        ));
                    }
                }
                KeySource::Cookie => {
                    if self.cookie.is_none() {
                        return Err(ConfigError::new(
                            "affinity.cookie",
                            "is required when sources contains \"cookie\"",
                        ));
                    }
                }
                KeySource::ClientAddress => {}
            }
        }
        if let Some(cookie) = &self.cookie {
            cookie.validate()?;
        }
        let route_hashes = self.cookie.as_ref().is_some_and(|c| c.route_hashes);
        if self.cookie_route && !(self.sources.contains(&KeySource::Cookie) && route_hashes) {
            return Err(ConfigError::new(
                "affinity.cookie_route",
                "requires \"cookie\" in sources and cookie.route_hashes: true (the route must hash the cookie the filter lets through)",
            ));
        }
        Ok(())
    }
}

impl CookieConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !grammar::is_http_token(&self.name) {
            return Err(ConfigError::new(
                "affinity.cookie.name",
                "must be a token (letters, digits, and !#$%&'*+-.^_`|~)",
            ));
        }
        if self.secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::new(
                "affinity.cookie.secret",
                format!(
                    "must be at least {MIN_SECRET_LEN} bytes (got {})",
                    self.secret.len()
                ),
            ));
        }
        if self.max_age_s == 0 {
            return Err(ConfigError::new(
                "affinity.cookie.max_age_s",
                "must be greater than 0",
            ));
        }
        match self.same_site.as_str() {
            "Lax" | "Strict" => {}
            "None" if self.secure => {}
            "None" => {
                return Err(ConfigError::new(
                    "affinity.cookie.same_site",
                    "None requires secure: true (browsers drop it otherwise)",
                ))
            }
            _ => {
                return Err(ConfigError::new(
                    "affinity.cookie.same_site",
                    "must be Lax, Strict or None",
                ))
            }
        }
        Ok(())
    }
}

fn header_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if !grammar::is_lowercase_header_name(name) {
        return Err(ConfigError::new(
            field,
            "must be a lower-case header name (Envoy stores header names in lower case)",
        ));
    }
    const RESERVED: [&str; 8] = [
        "host",
        "cookie",
        "connection",
        "upgrade",
        "content-length",
        "transfer-encoding",
        "te",
        "authorization",
    ];
    if RESERVED.contains(&name) || name.starts_with("sec-websocket-") {
        return Err(ConfigError::new(
            field,
            format!("{name:?} is a protocol header and cannot carry an affinity key"),
        ));
    }
    Ok(())
}
