//! edge-filter: a proxy-wasm filter for Envoy on acme-edge app nodes.
//!
//! It answers ACME HTTP-01 challenges (statelessly or from a store), redirects plain HTTP to
//! HTTPS, checks WebSocket handshakes, and derives an affinity key for sticky routing.
//!
//! Every decision lives in plain modules that never touch proxy-wasm ([`decision::classify`]
//! is the entry point) and are unit-tested on the host. The glue in `filter` exists only in
//! the wasm32 build: it reads headers, calls `classify`, and turns the verdict into Envoy
//! actions.
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod affinity;
pub mod challenge;
pub mod config;
pub mod decision;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod metadata_token;
pub mod redirect;
pub mod request;
pub mod websocket;

#[cfg(target_arch = "wasm32")]
mod filter;

pub use config::{ConfigError, FilterConfig};
pub use decision::{classify, Action, Event, Forward, LocalReply, Verdict};
pub use request::Request;
