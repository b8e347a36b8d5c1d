//! What the cloud side and the node side both use: the config, the stores and the bundle
//! format, certificate parsing, time, logs, metrics and process plumbing. Nothing here
//! depends on `cloud` or `node`.

pub mod bundle;
pub mod certinfo;
pub mod clock;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
