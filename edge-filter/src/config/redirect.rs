//! `redirect`: the HTTP → HTTPS redirect of the plain listener.

use serde::Deserialize;

use super::{prefixes, ConfigError};
use crate::grammar;

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

impl RedirectConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.https_port == 0 {
            return Err(ConfigError::new("redirect.https_port", "must be 1-65535"));
        }
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            if grammar::parse_host(host.as_bytes()).is_none() || host.contains(':') {
                return Err(ConfigError::new(
                    format!("redirect.allowed_hosts[{i}]"),
                    format!("{host:?} is not a host name (give it without scheme or port)"),
                ));
            }
        }
        prefixes("redirect.passthrough_prefixes", &self.passthrough_prefixes)
    }
}
