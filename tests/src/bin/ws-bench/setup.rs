//! What both parts share: the setup facts, a benchmark node's config, starting its Envoy and
//! asking it about itself.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use harness::node::{loopback_vars, Ports, THUMB};
use harness::{render_app_node, EchoBackend, Envoy, TlsFiles};

use crate::nofile::NofileLimit;

/// Facts about the setup shared by both sections.
pub struct Bench {
    pub envoy_version: String,
    pub wasm: PathBuf,
    pub wasm_size: u64,
    /// RLIMIT_NOFILE of this process (and so of Envoy).
    pub nofile: NofileLimit,
    pub tls: TlsFiles,
}

/// The render.sh settings of a benchmark node: loopback addresses, the test TLS files and
/// cookie secret, stateless ACME; every other setting is render.sh's default.
pub fn node_config(
    ports: &Ports,
    ctx: &Bench,
    backends: &[&EchoBackend],
    node: &str,
) -> Result<String> {
    // `loopback_vars` wants owned backends; the trials pass subsets, so set the list here.
    let mut vars = loopback_vars(ports, &ctx.wasm, &ctx.tls, &[]);
    for (k, v) in vars.iter_mut() {
        if *k == "APP_BACKENDS" {
            *v = backends
                .iter()
                .map(|b| b.addr())
                .collect::<Vec<_>>()
                .join(" ");
        }
    }
    vars.extend([
        ("ACME_THUMBPRINT", THUMB.to_owned()),
        ("NODE_ID", node.to_owned()),
    ]);
    render_app_node(&vars)
}

/// Starts Envoy on `config` and waits until all `n_backends` hosts of `app` are healthy (the
/// ring or table only holds healthy hosts; a host still unchecked would move keys).
pub async fn start_envoy(config: &str, admin: u16, n_backends: usize) -> Result<Envoy> {
    let envoy = Envoy::start(config, admin).await?;
    envoy
        .wait_cluster_healthy("app", n_backends, Duration::from_secs(30))
        .await?;
    Ok(envoy)
}

/// Whether the running listeners have the wasm HTTP filter.
pub async fn has_wasm_filter(envoy: &Envoy) -> Result<bool> {
    let listeners = envoy
        .admin_get("/config_dump?resource=static_listeners")
        .await?;
    Ok(listeners.contains("envoy.filters.http.wasm"))
}

pub async fn stat(envoy: &Envoy, name: &str) -> Result<u64> {
    Ok(envoy.counter(name).await?.unwrap_or(0))
}

/// How this run was invoked, for the report.
pub fn command_line() -> String {
    std::iter::once("ws-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}
