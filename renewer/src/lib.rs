//! The acme-edge renewer: keeps ACME certificates issued and renewed, and publishes them to a
//! directory or Cloud Storage bucket, optionally mirrored into Secret Manager.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library; integration tests drive the
//! library and the binary against a real Pebble CA.

pub mod bundle;
pub mod certinfo;
pub mod config;
pub mod store;
