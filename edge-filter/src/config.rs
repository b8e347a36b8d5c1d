//! The filter's plugin configuration: JSON, parsed once in `on_configure`, one submodule per
//! section (`acme`, `redirect`, `websocket`, `affinity`).
//!
//! Unknown fields are rejected everywhere, and every error names the field it is about
//! (`affinity.cookie.secret: …`), because the only place an operator sees it is Envoy's log.
//! `edge-filter/README.md` documents every field; keep the two in step.
//!
//! The syntax of single values (hosts, origins, header names …) is [`crate::grammar`]'s; the
//! decision modules read the configuration, never the other way round.

use serde::Deserialize;

use crate::grammar;

mod acme;
mod affinity;
mod redirect;
#[cfg(test)]
mod tests;
mod websocket;

pub use acme::{AcmeConfig, StoreConfig};
// Only the glue, which exists in the wasm32 build alone, names this section's type.
#[cfg(target_arch = "wasm32")]
pub use acme::MetadataTokenConfig;
#[cfg(test)]
pub use affinity::{keyed_mac, VERIFIED_SLOTS};
pub use affinity::{AffinityConfig, CookieConfig, IssuePolicy, KeySource};
pub use redirect::RedirectConfig;
pub use websocket::WebSocketConfig;

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
        if !grammar::is_stat_prefix(&self.stat_prefix) {
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

// Checks the sections share, each refusing a value with the field it came from.

fn non_empty(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::new(field, "must not be empty"));
    }
    Ok(())
}

fn authority(field: &str, value: &str) -> Result<(), ConfigError> {
    if !grammar::is_authority(value) {
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
        if !grammar::is_absolute_path(prefix) {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                format!("{prefix:?} must be an absolute path starting with '/'"),
            ));
        }
    }
    Ok(())
}
