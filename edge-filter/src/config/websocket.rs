//! `websocket`: where WebSocket handshakes are expected and which origins may open them.

use serde::Deserialize;

use super::{prefixes, ConfigError};
use crate::grammar;

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

impl WebSocketConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
            if !grammar::is_origin_pattern(origin) {
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
