//! The variants compared (no filter, an empty wasm filter, the edge filter, Lua) and their
//! Envoys: started from the shipped config, and checked to run the filter they should.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use harness::bench::{close_ws, envoy_workers, ws_open};
use harness::node::{loopback_vars, Ports, HOST, ORIGIN, THUMB};
use harness::{raw_https, render_app_node, repo_root, EchoBackend, Envoy, TlsFiles};

/// Echo backends behind every Envoy (each variant has its own, see [`Backends`]).
pub const N_BACKENDS: usize = 3;
/// The app route (filter skipped) and the sticky route (filter runs, for requests with a
/// cookie) of the plain loads.
pub const APP_PATH: &str = "/";
pub const STICKY_PATH: &str = "/sticky";
/// An Origin outside the allow-list: both filters must refuse it (checked before measuring).
const FOREIGN_ORIGIN: &str = "https://elsewhere.test";
/// The Lua equivalent, relative to the repository.
pub const LUA_SOURCE: &str = "tests/bench/edge_filter.lua";

/// One round of a measurement: a sample per variant (indexed by [`Variant::index`]) and the
/// order the variants ran in.
#[derive(Debug, Clone, Default)]
pub struct PerVariant<S> {
    pub order: Vec<Variant>,
    pub samples: [S; N_VARIANTS],
}

impl<S> PerVariant<S> {
    pub fn get(&self, v: Variant) -> &S {
        &self.samples[v.index()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Baseline,
    /// `empty_filter.wasm` in the edge filter's place: the floor of any proxy-wasm filter.
    Empty,
    Wasm,
    Lua,
}

/// How many variants there are (the arrays indexed by [`Variant::index`]).
pub const N_VARIANTS: usize = 4;

pub const VARIANTS: [Variant; N_VARIANTS] = [
    Variant::Baseline,
    Variant::Empty,
    Variant::Wasm,
    Variant::Lua,
];

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Variant::Baseline => "no filter",
            Variant::Empty => "empty wasm",
            Variant::Wasm => "edge filter",
            Variant::Lua => "Lua",
        }
    }

    /// `EDGE_FILTER` for render.sh (the empty filter takes the edge filter's place).
    fn setting(self) -> &'static str {
        match self {
            Variant::Baseline => "0",
            Variant::Empty | Variant::Wasm => "1",
            Variant::Lua => "lua",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Variant::Baseline => 0,
            Variant::Empty => 1,
            Variant::Wasm => 2,
            Variant::Lua => 3,
        }
    }

    /// The HTTP filter its TLS listener must (or, for the baseline, must not) have.
    fn filter_name(self) -> Option<&'static str> {
        match self {
            Variant::Baseline => None,
            Variant::Empty | Variant::Wasm => Some("envoy.filters.http.wasm"),
            Variant::Lua => Some("envoy.filters.http.lua"),
        }
    }

    /// Whether its Envoy checks WebSocket handshakes (and so refuses a foreign Origin).
    fn checks_handshakes(self) -> bool {
        matches!(self, Variant::Wasm | Variant::Lua)
    }
}

/// The do-nothing module `scripts/wasm.sh build` writes next to the edge filter
/// (`$EMPTY_FILTER_WASM` overrides).
pub fn empty_wasm_path(edge_wasm: &Path) -> PathBuf {
    match std::env::var_os("EMPTY_FILTER_WASM") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => edge_wasm.with_file_name("empty_filter.wasm"),
    }
}

/// The module that only reads the `Cookie` header (`edge-filter/examples/read_floor.rs`),
/// which `scripts/wasm.sh build` writes next to the edge filter (`$READ_FLOOR_WASM`
/// overrides). It stands in the empty filter's place in [`start_read_floor`].
pub fn read_floor_wasm_path(edge_wasm: &Path) -> PathBuf {
    match std::env::var_os("READ_FLOOR_WASM") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => edge_wasm.with_file_name("read_floor.wasm"),
    }
}

/// The echo backends: [`N_BACKENDS`] for each variant's Envoys and as many for the read
/// floor's. Side by side, Envoys that shared backends would also share their load: the
/// variants without a filter send every WebSocket of the echo load to the backend the client
/// address hashes to, the edge filter and Lua spread them by room, so how busy each backend is
/// (and how its answers bunch up, which can change Envoy's CPU per message) would depend on
/// the other variants' traffic. With backends of its own, each variant meets only its own
/// (measured: little changed, see docs/architecture.md).
pub struct Backends {
    per_variant: Vec<Vec<EchoBackend>>,
    floor: Vec<EchoBackend>,
}

impl Backends {
    pub async fn start() -> Result<Backends> {
        let mut per_variant = Vec::with_capacity(N_VARIANTS);
        for v in VARIANTS {
            per_variant.push(start_set(&format!("backend-{}", v.index())).await?);
        }
        let floor = start_set("backend-read-floor").await?;
        Ok(Backends { per_variant, floor })
    }

    /// The backends of `variant`'s Envoys.
    pub fn of(&self, variant: Variant) -> &[EchoBackend] {
        &self.per_variant[variant.index()]
    }

    /// The backends of the read floor's Envoy.
    pub fn floor(&self) -> &[EchoBackend] {
        &self.floor
    }
}

async fn start_set(prefix: &str) -> Result<Vec<EchoBackend>> {
    let mut set = Vec::with_capacity(N_BACKENDS);
    for i in 0..N_BACKENDS {
        set.push(EchoBackend::start_unrecorded(&format!("{prefix}-{i}")).await?);
    }
    Ok(set)
}

/// One Envoy with its TLS listener port.
pub struct Node {
    pub envoy: Envoy,
    pub https: u16,
}

pub async fn start_node(
    variant: Variant,
    tls: &TlsFiles,
    backends: &[EchoBackend],
    wasm: &Path,
) -> Result<Node> {
    let module = match variant {
        Variant::Empty => empty_wasm_path(wasm),
        _ => wasm.to_path_buf(),
    };
    let id = format!("edge-bench-{}", variant.index());
    start_module(variant, &module, &id, tls, backends).await
}

/// A fifth Envoy for the sticky route's breakdown: the empty filter's config with the read
/// floor as its module.
pub async fn start_read_floor(
    tls: &TlsFiles,
    backends: &[EchoBackend],
    wasm: &Path,
) -> Result<Node> {
    let module = read_floor_wasm_path(wasm);
    ensure!(
        module.is_file(),
        "{} is missing: run `make wasm` first",
        module.display()
    );
    start_module(
        Variant::Empty,
        &module,
        "edge-bench-read-floor",
        tls,
        backends,
    )
    .await
}

/// `variant`'s config with `module` as the wasm module (when it has one).
async fn start_module(
    variant: Variant,
    module: &Path,
    node_id: &str,
    tls: &TlsFiles,
    backends: &[EchoBackend],
) -> Result<Node> {
    let ports = Ports::free();
    let (https, admin) = (ports.https, ports.admin);
    // Production defaults for everything that shapes the request path (affinity sources, WS
    // path, cookie policy); only addresses, files, secrets and the sticky route are the
    // benchmark's own.
    let mut vars = loopback_vars(&ports, module, tls, backends);
    vars.extend([
        ("EDGE_FILTER", variant.setting().to_owned()),
        (
            "LUA_FILTER",
            repo_root().join(LUA_SOURCE).display().to_string(),
        ),
        ("STICKY_PATHS", STICKY_PATH.to_owned()),
        ("ACME_THUMBPRINT", THUMB.to_owned()),
        ("NODE_ID", node_id.to_owned()),
    ]);
    let config = render_app_node(&vars)?;
    let envoy = Envoy::start(&config, admin)
        .await
        .with_context(|| format!("start Envoy ({})", variant.label()))?;
    envoy
        .wait_cluster_healthy("app", backends.len(), Duration::from_secs(30))
        .await?;
    Ok(Node { envoy, https })
}

/// The worker count a running Envoy reports, to be sure the `$ENVOY` wrapper took effect.
pub async fn envoy_concurrency(envoy: &Envoy) -> Result<u32> {
    Ok(u32::try_from(envoy_workers(envoy).await?)?)
}

/// Checks a node runs the filter it should: the listeners have it (the whole config dump
/// would also list compiled-in extensions), and it refuses a foreign Origin (the baseline and
/// the empty filter let it through). Catches a variant silently measuring the wrong thing.
pub async fn check_node(
    variant: Variant,
    node: &Node,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<()> {
    let listeners = node
        .envoy
        .admin_get("/config_dump?resource=static_listeners")
        .await?;
    for other in VARIANTS.iter().filter_map(|v| v.filter_name()) {
        let expected = variant.filter_name() == Some(other);
        ensure!(
            listeners.contains(other) == expected,
            "the {} config {} {other}",
            variant.label(),
            if expected { "lacks" } else { "has" }
        );
    }
    let foreign = ws_open(node.https, "/ws", FOREIGN_ORIGIN, tls, None).await;
    match (variant.checks_handshakes(), foreign) {
        (false, Ok(ws)) => close_ws(ws).await,
        (false, Err(e)) => Err(e.context(format!("{} refused a handshake", variant.label()))),
        (_, Err(e)) if format!("{e:#}").contains("403") => Ok(()),
        (_, Err(e)) => Err(e.context(format!("{}: expected a 403", variant.label()))),
        (_, Ok(_)) => bail!("{} let a foreign Origin through", variant.label()),
    }
}

/// The sticky load's `Cookie` header: a browser's affinity cookie as the edge filter issues
/// it. A request on a sticky path without Cookie or Origin skips the filter (as on the app
/// route, `render.sh`'s `sticky_bypass_route`), so the load carries one: every request then
/// has the filter's work to do (find the cookie, verify its MAC, set the key). Both filters
/// must accept it: a browser whose cookie does not verify would be given a new one.
pub async fn sticky_cookie(nodes: &[Node], ca_pem: &str) -> Result<String> {
    let get = |extra: String| {
        format!(
            "GET {STICKY_PATH} HTTP/1.1\r\nHost: {HOST}\r\nOrigin: {ORIGIN}\r\n{extra}\
             Connection: close\r\n\r\n"
        )
    };
    let issuer = &nodes[Variant::Wasm.index()];
    let resp = raw_https(issuer.https, HOST, ca_pem, get(String::new()).as_bytes()).await?;
    let set = resp
        .header("set-cookie")
        .context("the edge filter gave a browser on the sticky route no cookie")?;
    let header = format!("Cookie: {}", set.split(';').next().unwrap_or_default());
    for v in [Variant::Wasm, Variant::Lua] {
        let node = &nodes[v.index()];
        let resp = raw_https(
            node.https,
            HOST,
            ca_pem,
            get(format!("{header}\r\n")).as_bytes(),
        )
        .await?;
        ensure!(
            resp.status == 200 && resp.header("set-cookie").is_none(),
            "the {} did not accept the edge filter's cookie ({} {:?})",
            v.label(),
            resp.status,
            resp.header("set-cookie")
        );
    }
    Ok(header)
}
