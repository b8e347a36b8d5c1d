//! What the benchmarks ask a running Envoy about its setup.

use anyhow::{Context, Result};

use crate::Envoy;

/// The worker count a running Envoy reports (`/server_info`): the benchmarks check it took
/// the `--concurrency` they meant.
pub async fn envoy_workers(envoy: &Envoy) -> Result<u64> {
    let info: serde_json::Value = serde_json::from_str(&envoy.admin_get("/server_info").await?)
        .context("parse /server_info")?;
    info["command_line_options"]["concurrency"]
        .as_u64()
        .context("no command_line_options.concurrency in /server_info")
}
