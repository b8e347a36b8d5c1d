//! edge-filter: a proxy-wasm filter for Envoy on acme-edge app nodes.
//!
//! It answers ACME HTTP-01 challenges (statelessly or from a store), redirects plain HTTP to
//! HTTPS, checks WebSocket handshakes, and derives an affinity key for sticky routing.
//!
//! Every decision lives in plain modules that never touch proxy-wasm ([`classify`] is the
//! entry point, [`store_reply`] its second half in store mode) and are unit-tested on the
//! host. The glue in `filter` exists only in the wasm32 build: it reads headers, calls
//! `classify`, and turns the verdict into Envoy actions.
//!
//! Modules, leaves first (each imports only from those above it):
//! - `grammar`: syntax rules for single values (tokens, hosts, origin patterns, header names,
//!   path prefixes); imports nothing from the crate.
//! - `request`: the request as read from Envoy. `config`: the plugin configuration, one
//!   submodule per section.
//! - `challenge`, `redirect`, `websocket`, `affinity`: one decision each, on a request and
//!   its section of the configuration.
//! - `decision`: [`classify`], which runs them in order and returns a [`Verdict`].
//! - `metadata_token` and `filter`: the glue and the token cache it keeps (wasm32 only; the
//!   cache is unit-tested on the host too).
//! - `fuzzing`: the fuzz target's input format and checks (tests and the `fuzzing` feature).
//!
//! The modules are private. The crate's public items are the decision API re-exported below
//! (and `classify_bytes` with the `fuzzing` feature, for `fuzz/`): the glue exists only in the
//! wasm32 build, so on the host that API is what the library offers, to its tests and fuzzing.
#![warn(missing_docs)]
// This code runs inside Envoy, where a panic traps the plugin's VM and Envoy stops using it:
// no unwrap, expect, panic or unchecked indexing outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod affinity;
mod challenge;
mod config;
mod decision;
#[cfg(any(test, feature = "fuzzing"))]
mod fuzzing;
mod grammar;
// The glue's token cache: used only by `filter`, so only where `filter` exists (and in tests).
#[cfg(any(test, target_arch = "wasm32"))]
mod metadata_token;
mod redirect;
mod request;
mod websocket;

#[cfg(target_arch = "wasm32")]
mod filter;

pub use config::{ConfigError, FilterConfig};
pub use decision::{
    classify, cookie_alone_decides, store_reply, Action, Event, Forward, LocalReply, Verdict,
};
#[cfg(feature = "fuzzing")]
pub use fuzzing::classify_bytes;
pub use request::{Property, Request};
