//! `[dns]`: where the DNS-01 challenge records go (Cloud DNS), for certificates with
//! `challenge = "dns-01"`.

use serde::{Deserialize, Serialize};

use super::syntax::{check_http_url, is_project_id};
use super::FieldError;

/// `[dns]`: the Cloud DNS project (and zone) holding the names of the `dns-01` certificates.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The Google Cloud project whose Cloud DNS managed zones hold the names. Required.
    pub project: String,
    /// The managed zone (its name, e.g. `example-com`) to write `_acme-challenge` records in.
    /// Default: the project's zone whose DNS name is the longest suffix of each name. Naming
    /// it lets the renewer's account hold rights on that zone only (no `managedZones.list`).
    #[serde(default)]
    pub zone: Option<String>,
    /// Cloud DNS API endpoint, for a fake (`http://127.0.0.1:8089`). When set, requests are
    /// sent without credentials. Default: the real service with Application Default
    /// Credentials.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Seconds to wait, after Cloud DNS applied the change, for the zone's authoritative
    /// servers to answer the new TXT values before the CA is told to look (1 to 3600).
    /// Default: 300.
    #[serde(default = "default_propagation_timeout")]
    pub propagation_timeout_seconds: u64,
    /// DNS servers (`host:port`) to check for the new values instead of the zone's own name
    /// servers (on port 53): for a split-horizon setup, or a test server. Default: none.
    #[serde(default)]
    pub check_servers: Vec<String>,
    /// TTL of the `_acme-challenge` TXT records, seconds (1 to 86400). Default: 60.
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u32,
}

fn default_propagation_timeout() -> u64 {
    300
}

fn default_ttl() -> u32 {
    60
}

impl DnsConfig {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if !is_project_id(&self.project) {
            return Err(FieldError::new(
                "dns.project",
                format!("{:?} is not a Google Cloud project id", self.project),
            ));
        }
        if let Some(zone) = &self.zone {
            // A managed zone name: 1-63 of [a-z0-9-], starting with a letter.
            let ok = (1..=63).contains(&zone.len())
                && zone.starts_with(|c: char| c.is_ascii_lowercase())
                && zone
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(FieldError::new(
                    "dns.zone",
                    format!("{zone:?} is not a managed zone name (such as example-com)"),
                ));
            }
        }
        if let Some(endpoint) = &self.endpoint {
            check_http_url(endpoint).map_err(|m| FieldError::new("dns.endpoint", m))?;
        }
        if !(1..=3600).contains(&self.propagation_timeout_seconds) {
            return Err(FieldError::new(
                "dns.propagation_timeout_seconds",
                "must be 1 to 3600",
            ));
        }
        for (i, server) in self.check_servers.iter().enumerate() {
            let ok = server.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(FieldError::new(
                    format!("dns.check_servers[{i}]"),
                    format!("{server:?} is not host:port (such as 127.0.0.1:8053)"),
                ));
            }
        }
        if !(1..=86_400).contains(&self.ttl_seconds) {
            return Err(FieldError::new("dns.ttl_seconds", "must be 1 to 86400"));
        }
        Ok(())
    }
}
