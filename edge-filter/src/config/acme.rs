//! `acme`: answer HTTP-01 challenges statelessly (`thumbprint`) or from a store.

use serde::Deserialize;

use super::{authority, non_empty, timeout, ConfigError};
use crate::grammar;

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

impl AcmeConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
                if !grammar::is_jwk_thumbprint(thumbprint) {
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
        if !grammar::is_absolute_path(&self.path) {
            return Err(ConfigError::new(
                "acme.store.path",
                "must be printable ASCII without spaces (percent-encode the rest)",
            ));
        }
        timeout("acme.store.timeout_ms", self.timeout_ms)?;
        if let Some(meta) = &self.metadata_token {
            non_empty("acme.store.metadata_token.cluster", &meta.cluster)?;
            authority("acme.store.metadata_token.authority", &meta.authority)?;
            if !grammar::is_absolute_path(&meta.path) {
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
