//! `[store]`, `[secret_manager]` and `[lock]`: where certificates and leases are kept.

use serde::{Deserialize, Serialize};

use super::syntax::{check_http_url, is_project_id};
use super::FieldError;
use crate::shared::store::StoreUrl;

/// `[store]`: where certificates, the ACME account, challenge answers and leases are kept.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `file:///absolute/dir` or `gs://bucket/optional/prefix`, parsed when the config is
    /// read ([`StoreUrl`]). Required.
    pub url: StoreUrl,
    /// Cloud Storage API endpoint, for an emulator (`http://127.0.0.1:4443`). When set, requests
    /// are sent without credentials. Default: the real service with Application Default
    /// Credentials. `STORAGE_EMULATOR_HOST` is honoured as well.
    #[serde(default)]
    pub gcs_endpoint: Option<String>,
    /// Issued certificates (`certs/<name>/<serial>/`) kept per certificate, the current one
    /// included; older ones are removed after each renewal, never the current one (at least
    /// 1). Default: 3.
    #[serde(default = "default_keep")]
    pub keep_serials: u32,
}

/// `[secret_manager]`: the mirror of every issued bundle into Secret Manager, on when the
/// section is present.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretManagerConfig {
    /// Google Cloud project id that holds the secrets. Required.
    pub project: String,
    /// Secret id prefix (`[A-Za-z0-9_-]`, at most 180 characters); certificate `app` is kept
    /// in secret `<prefix>app`. Default: `acme-edge-`.
    #[serde(default = "default_secret_prefix")]
    pub secret_prefix: String,
    /// Enabled versions to keep per secret (at least 1); older ones are disabled (not
    /// destroyed, so an operator can still roll back by hand). Default: 3.
    #[serde(default = "default_keep")]
    pub keep_versions: u32,
    /// API endpoint override (tests, private endpoints). Requests are sent without
    /// credentials when set. Default: the real service with Application Default Credentials.
    #[serde(default)]
    pub endpoint: Option<String>,
}

fn default_secret_prefix() -> String {
    "acme-edge-".into()
}
fn default_keep() -> u32 {
    3
}

/// `[lock]`: the per-certificate renewal lease that keeps two renewers from ordering at once.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// Seconds a renewal lease is valid (at least 30). A renewer that crashes holding the
    /// lease blocks that certificate for at most this long; it must exceed the time one
    /// issuance takes. Default: 600.
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
    /// Seconds to wait for another renewer's lease before giving up (and failing the run).
    /// Default: 300.
    #[serde(default = "default_wait")]
    pub wait_seconds: u64,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            ttl_seconds: default_ttl(),
            wait_seconds: default_wait(),
        }
    }
}

fn default_ttl() -> u64 {
    600
}
fn default_wait() -> u64 {
    300
}

impl StoreConfig {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if let Some(endpoint) = &self.gcs_endpoint {
            check_http_url(endpoint).map_err(|m| FieldError::new("store.gcs_endpoint", m))?;
        }
        if self.keep_serials == 0 {
            return Err(FieldError::new(
                "store.keep_serials",
                "must be at least 1 (the current certificate is always kept)",
            ));
        }
        Ok(())
    }
}

impl SecretManagerConfig {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if !is_project_id(&self.project) {
            return Err(FieldError::new(
                "secret_manager.project",
                format!("{:?} is not a Google Cloud project id", self.project),
            ));
        }
        if !self
            .secret_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            || self.secret_prefix.len() > 180
        {
            return Err(FieldError::new(
                "secret_manager.secret_prefix",
                "only [A-Za-z0-9_-], at most 180 characters",
            ));
        }
        if self.keep_versions == 0 {
            return Err(FieldError::new(
                "secret_manager.keep_versions",
                "must be at least 1",
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            check_http_url(endpoint).map_err(|m| FieldError::new("secret_manager.endpoint", m))?;
        }
        Ok(())
    }
}

impl LockConfig {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if self.ttl_seconds < 30 {
            return Err(FieldError::new(
                "lock.ttl_seconds",
                "must be at least 30 (an issuance takes longer than that)",
            ));
        }
        Ok(())
    }
}
