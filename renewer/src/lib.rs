//! The acme-edge renewer: keeps ACME certificates issued and renewed, publishes them to a
//! directory or Cloud Storage bucket (optionally mirrored into Secret Manager), and installs
//! them for Envoy on the app nodes.
//!
//! Folders say where the code runs (see `docs/architecture.md` for the map):
//!
//! * `cloud/` — the renewal pass, in a Cloud Run job or function (`run`, `serve`, `status`,
//!   `account`).
//! * `node/` — the agents on each app node, next to Envoy (`sync`, `members`).
//! * `shared/` — what both use: config, stores, the bundle format, certificate parsing, time,
//!   logging, metrics. It depends on neither side.
//! * `cli/` — the command line over all three.
//!
//! Dependencies point one way: `cli` → `cloud` | `node` → `shared`; `shared::config` depends
//! only on leaf types (`store`'s URL, `config::syntax`). `tests/tests/structure.rs` fails on a
//! module cycle.
//!
//! The binary (`src/main.rs`) calls [`cli::main`]; integration tests drive the binary against
//! a real Pebble CA, and the re-exported modules below against emulators.

#![warn(missing_docs)]
// As in the filter: a renewer that panics loses the pass (and in `serve`, every pass in
// flight); errors are values. Tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod cli;
mod cloud;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod node;
mod shared;

// The data model and stores, for the integration tests and fuzz targets.
pub use shared::{bundle, certinfo, config, store};

/// Failures that stop the renewer before it can look at any certificate.
#[derive(Debug, thiserror::Error)]
pub enum RenewerError {
    /// The config is wrong (the message names the field).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The store was opened but does not answer.
    #[error("the store cannot be reached: {0}")]
    Unreachable(#[source] store::StoreError),
    /// Secret Manager or another service needed before the pass could not be set up.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
}
