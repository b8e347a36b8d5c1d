//! The acme-edge renewer: keeps ACME certificates issued and renewed, and publishes them to a
//! directory or Cloud Storage bucket, optionally mirrored into Secret Manager.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library; integration tests drive the
//! binary against a real Pebble CA, and the library against emulators.
//!
//! Layout: `config` (the TOML file), `policy` (pure: renew now, and why), `acme` (the order
//! flow), `store` (object stores and Secret Manager), `bundle` (an issued certificate and where
//! it is published), `lock` (the renewal lease), `state` (last attempts), `run` (one pass),
//! `status` (the table), `logging`, `function` (a functions-framework-style HTTP runtime),
//! `serve` (the renewer on it), `metrics` (Prometheus text), `node` (what runs on an app node:
//! `sync` installs the certificate for Envoy, `members` keeps the cluster's membership).

pub mod acme;
pub mod bundle;
pub mod certinfo;
pub mod config;
pub mod function;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod housekeeping;
pub mod inflight;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod run;
pub mod serve;
pub mod state;
pub mod status;
pub mod store;

/// Failures that stop the renewer before it can look at any certificate.
#[derive(Debug, thiserror::Error)]
pub enum RenewerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Setup(String),
}

impl From<bundle::BundleError> for RenewerError {
    fn from(e: bundle::BundleError) -> Self {
        RenewerError::Setup(e.to_string())
    }
}
