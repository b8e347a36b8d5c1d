//! The filter's plugin configuration: JSON, parsed once in `on_configure`.
//!
//! Unknown fields are rejected everywhere, and every error names the field it is about
//! (`affinity.cookie.secret: …`), because the only place an operator sees it is Envoy's log.
//! `edge-filter/README.md` documents every field; keep the two in step.

use std::collections::HashSet;

use serde::Deserialize;

use crate::challenge;

/// The whole plugin configuration of one listener. Every section is optional: a listener
/// turns on only the behaviours it names.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Prefix of the filter's counters (Envoy shows them as `wasmcustom.<prefix>.…`).
    #[serde(default = "default_stat_prefix")]
    pub stat_prefix: String,
    /// Answer ACME HTTP-01 challenges on `/.well-known/acme-challenge/<token>`.
    #[serde(default)]
    pub acme: Option<AcmeConfig>,
    /// Redirect every other request to HTTPS with a 308.
    #[serde(default)]
    pub redirect: Option<RedirectConfig>,
    /// Check WebSocket handshakes on some paths.
    #[serde(default)]
    pub websocket: Option<WebSocketConfig>,
    /// Derive an affinity key and hand it to Envoy's hash policy as a header.
    #[serde(default)]
    pub affinity: Option<AffinityConfig>,
}

fn default_stat_prefix() -> String {
    "edge".to_owned()
}

/// ACME HTTP-01: either `thumbprint` (stateless) or `store`, never both.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// Stateless mode: the ACME account's JWK thumbprint (RFC 7638, base64url SHA-256).
    /// Every node answers `<token>.<thumbprint>` at once (RFC 8555 §8.1).
    #[serde(default)]
    pub thumbprint: Option<String>,
    /// Store mode: fetch the key authorization from an HTTP store.
    #[serde(default)]
    pub store: Option<StoreConfig>,
}

/// Where store mode fetches `acme-challenge/<token>` from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Envoy cluster that reaches the store.
    pub cluster: String,
    /// `:authority` sent to the store (the GCS JSON API wants `storage.googleapis.com`).
    pub authority: String,
    /// Request path; `{token}` is replaced by the (already validated) token. For GCS:
    /// `/storage/v1/b/BUCKET/o/acme-challenge%2F{token}?alt=media`.
    pub path: String,
    /// How long to wait for the store, in milliseconds.
    #[serde(default = "default_store_timeout_ms")]
    pub timeout_ms: u64,
    /// Send a bearer token from the GCE metadata server with each store request.
    #[serde(default)]
    pub metadata_token: Option<MetadataTokenConfig>,
}

fn default_store_timeout_ms() -> u64 {
    2_000
}

/// Where to get an OAuth access token for the store (the node's service account).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetadataTokenConfig {
    /// Envoy cluster that reaches the metadata server (169.254.169.254:80 on GCE).
    pub cluster: String,
    /// `:authority` for the metadata server.
    #[serde(default = "default_metadata_authority")]
    pub authority: String,
    /// Token path on the metadata server.
    #[serde(default = "default_metadata_path")]
    pub path: String,
    /// How long to wait for the metadata server, in milliseconds.
    #[serde(default = "default_store_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_metadata_authority() -> String {
    "metadata.google.internal".to_owned()
}

fn default_metadata_path() -> String {
    "/computeMetadata/v1/instance/service-accounts/default/token".to_owned()
}

/// HTTP → HTTPS redirect for the plain listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// Port of the HTTPS listener as clients reach it; omitted from the URL when 443.
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// If not empty, only these host names are redirected; others get 421.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Path prefixes that are not redirected but passed to Envoy's router (health checks).
    #[serde(default)]
    pub passthrough_prefixes: Vec<String>,
}

fn default_https_port() -> u16 {
    443
}

/// WebSocket handshake checks (RFC 6455 §4.2.1, RFC 8441).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Path prefixes where WebSocket handshakes are expected.
    pub path_prefixes: Vec<String>,
    /// Required: a handshake whose `Origin` is outside this list gets 403 (cross-site
    /// WebSocket hijacking, RFC 6455 §10.2). Entries are origins (`https://app.example.com`),
    /// `https://*.example.com` for any subdomain, or `*` — which turns the check off, so it
    /// must be said in words: an absent or empty list is a configuration error.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Refuse handshakes without `Origin` (non-browser clients send none).
    #[serde(default)]
    pub require_origin: bool,
    /// Let requests on these paths that are not upgrades through (long-polling fallbacks)
    /// instead of answering 400.
    #[serde(default)]
    pub allow_plain_http: bool,
}

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

/// A configuration that cannot be used, with the path of the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `affinity.cookie.secret`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Minimum HMAC key length: RFC 2104 §3 recommends at least the hash output length.
pub const MIN_SECRET_LEN: usize = 32;

impl FilterConfig {
    /// Parse and validate the plugin configuration bytes Envoy hands to `on_configure`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::new(
                "configuration",
                "is empty; give at least one of acme, redirect, websocket, affinity",
            ));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let config: FilterConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            // The root is "." (or "" when the offending key itself is empty): name the whole
            // configuration rather than nothing.
            let field = if path == "." || path.is_empty() {
                "configuration".to_owned()
            } else {
                path
            };
            ConfigError::new(field, e.inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.acme.is_none()
            && self.redirect.is_none()
            && self.websocket.is_none()
            && self.affinity.is_none()
        {
            return Err(ConfigError::new(
                "configuration",
                "enables nothing; give at least one of acme, redirect, websocket, affinity",
            ));
        }
        if self.stat_prefix.is_empty()
            || !self
                .stat_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(ConfigError::new(
                "stat_prefix",
                "must be non-empty and use only letters, digits, '_' and '.'",
            ));
        }
        if let Some(acme) = &self.acme {
            acme.validate()?;
        }
        if let Some(redirect) = &self.redirect {
            redirect.validate()?;
        }
        if let Some(ws) = &self.websocket {
            ws.validate()?;
        }
        if let Some(affinity) = &self.affinity {
            affinity.validate()?;
        }
        Ok(())
    }
}

impl AcmeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.thumbprint, &self.store) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                "acme",
                "give either thumbprint (stateless mode) or store (store mode), not both",
            )),
            (None, None) => Err(ConfigError::new(
                "acme",
                "give thumbprint (stateless mode) or store (store mode)",
            )),
            (Some(thumbprint), None) => {
                // A JWK thumbprint is base64url(SHA-256(...)) without padding: 43 characters
                // (RFC 7638 §3, RFC 8555 §8.1).
                if thumbprint.len() != 43 || !challenge::is_base64url(thumbprint.as_bytes()) {
                    return Err(ConfigError::new(
                        "acme.thumbprint",
                        "must be the 43-character base64url JWK thumbprint `renewer account` prints",
                    ));
                }
                Ok(())
            }
            (None, Some(store)) => store.validate(),
        }
    }
}

impl StoreConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        non_empty("acme.store.cluster", &self.cluster)?;
        authority("acme.store.authority", &self.authority)?;
        if !self.path.starts_with('/') || self.path.matches("{token}").count() != 1 {
            return Err(ConfigError::new(
                "acme.store.path",
                "must start with '/' and contain `{token}` exactly once",
            ));
        }
        if !self.path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "acme.store.path",
                "must be printable ASCII without spaces (percent-encode the rest)",
            ));
        }
        timeout("acme.store.timeout_ms", self.timeout_ms)?;
        if let Some(meta) = &self.metadata_token {
            non_empty("acme.store.metadata_token.cluster", &meta.cluster)?;
            authority("acme.store.metadata_token.authority", &meta.authority)?;
            if !meta.path.starts_with('/') || !meta.path.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::new(
                    "acme.store.metadata_token.path",
                    "must be an absolute path of printable ASCII",
                ));
            }
            timeout("acme.store.metadata_token.timeout_ms", meta.timeout_ms)?;
        }
        Ok(())
    }
}

impl RedirectConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.https_port == 0 {
            return Err(ConfigError::new("redirect.https_port", "must be 1-65535"));
        }
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            if crate::redirect::parse_host(host.as_bytes()).is_err() || host.contains(':') {
                return Err(ConfigError::new(
                    format!("redirect.allowed_hosts[{i}]"),
                    format!("{host:?} is not a host name (give it without scheme or port)"),
                ));
            }
        }
        prefixes("redirect.passthrough_prefixes", &self.passthrough_prefixes)
    }
}

impl WebSocketConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.path_prefixes.is_empty() {
            return Err(ConfigError::new(
                "websocket.path_prefixes",
                "must name at least one path prefix, e.g. [\"/ws\"]",
            ));
        }
        prefixes("websocket.path_prefixes", &self.path_prefixes)?;
        if self.allowed_origins.is_empty() {
            return Err(ConfigError::new(
                "websocket.allowed_origins",
                "must list the origins of the pages allowed to open WebSockets \
                 (e.g. [\"https://app.example.com\"]), or [\"*\"] to allow any site",
            ));
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if !crate::websocket::is_origin_pattern(origin) {
                return Err(ConfigError::new(
                    format!("websocket.allowed_origins[{i}]"),
                    format!(
                        "{origin:?} is not an origin: use scheme://host[:port], \
                         scheme://*.domain or *"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl AffinityConfig {
    fn validate(&self) -> Result<(), ConfigError> {
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
                    if name.is_empty()
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
                    {
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
        Ok(())
    }
}

impl CookieConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        // RFC 6265 §4.1.1: a cookie name is an RFC 7230 token.
        if self.name.is_empty() || !self.name.bytes().all(is_tchar) {
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

fn non_empty(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::new(field, "must not be empty"));
    }
    Ok(())
}

fn authority(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(ConfigError::new(field, "must be a host[:port] authority"));
    }
    Ok(())
}

fn timeout(field: &str, ms: u64) -> Result<(), ConfigError> {
    if !(1..=60_000).contains(&ms) {
        return Err(ConfigError::new(field, "must be 1-60000 milliseconds"));
    }
    Ok(())
}

fn prefixes(field: &str, values: &[String]) -> Result<(), ConfigError> {
    for (i, prefix) in values.iter().enumerate() {
        if !prefix.starts_with('/') || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                format!("{prefix:?} must be an absolute path starting with '/'"),
            ));
        }
    }
    Ok(())
}

fn header_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || !name.bytes().all(|b| is_tchar(b) && !b.is_ascii_uppercase()) {
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

/// RFC 9110 §5.6.2 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
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
            let json = format!(
                r#"{{"affinity": {{"header": "{header}", "sources": ["client_address"]}}}}"#
            );
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
        FilterConfig::parse(
            br#"{"websocket": {"path_prefixes": ["/ws"], "allowed_origins": ["*"]}}"#,
        )
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
}
