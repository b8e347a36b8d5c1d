//! Syntax rules that the cloud side (the renewer) and the node side (the edge filter) must
//! agree on, in one place. Pure functions on bytes: no I/O and no dependencies, so the filter
//! can use them in its wasm32 build and both sides are tested against the same cases.
#![warn(missing_docs)]
// The edge filter links this crate into its wasm module, where a panic traps the plugin's VM:
// the same rule as the filter's own code (edge-filter/src/lib.rs).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod token;
