//! One acme-edge app node on loopback, as the shipped config builds it: Envoy with the edge
//! filter (rendered by `deploy/envoy/render.sh`), self-signed TLS files, and echo backends.
//! Integration tests and the filter benchmark start nodes through this, so both exercise the
//! same configuration.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::backend::{backend_id, EchoBackend};
use crate::client::{raw_http, raw_https, ws_connect, ws_echo, RawResponse, WsResponse};
use crate::envoy::{render_app_node, wasm_path, Envoy};
use crate::ports::free_port;
use crate::tls::TlsFiles;
use crate::workspace::repo_root;

/// A token in Let's Encrypt's shape (RFC 8555 §8.3 example).
pub const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
/// A JWK thumbprint in RFC 7638's shape.
pub const THUMB: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
/// The affinity cookie secret of test nodes.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
/// The name clients use (SNI, Host); the test certificate is issued for it.
pub const HOST: &str = "app.test";
/// The Origin test nodes allow.
pub const ORIGIN: &str = "https://app.test";
/// How long to wait for a node to come up or a backend to turn healthy.
pub const WAIT: Duration = Duration::from_secs(30);

/// The three ports of a node, free on loopback.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Plain listener (ACME, redirect).
    pub http: u16,
    /// TLS listener (the app).
    pub https: u16,
    /// Envoy admin.
    pub admin: u16,
}

impl Ports {
    /// Three free loopback ports.
    pub fn free() -> Self {
        Self {
            http: free_port(),
            https: free_port(),
            admin: free_port(),
        }
    }
}

/// `render.sh` settings of any Envoy on loopback: where it listens, the filter, the TLS
/// directory and the backends. The rest (ACME mode, cookie secret, names) is the caller's.
pub fn listener_vars(
    ports: &Ports,
    wasm: &Path,
    tls_dir: &Path,
    backends: &[EchoBackend],
) -> Vec<(&'static str, String)> {
    vec![
        ("LISTEN_ADDRESS", "127.0.0.1".to_owned()),
        ("HTTP_PORT", ports.http.to_string()),
        ("HTTPS_PORT", ports.https.to_string()),
        ("PUBLIC_HTTPS_PORT", ports.https.to_string()),
        ("ADMIN_PORT", ports.admin.to_string()),
        ("WASM_PATH", wasm.display().to_string()),
        ("TLS_DIR", tls_dir.display().to_string()),
        (
            "APP_BACKENDS",
            backends
                .iter()
                .map(EchoBackend::addr)
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ]
}

/// `render.sh` settings every loopback test node shares: [`listener_vars`] plus the test
/// cookie secret and the allowed Origin. Callers add the ACME mode and anything they vary.
pub fn loopback_vars(
    ports: &Ports,
    wasm: &Path,
    tls: &TlsFiles,
    backends: &[EchoBackend],
) -> Vec<(&'static str, String)> {
    let mut vars = listener_vars(ports, wasm, tls.path(), backends);
    vars.extend([
        ("COOKIE_SECRET", SECRET.to_owned()),
        ("ALLOWED_ORIGINS", ORIGIN.to_owned()),
    ]);
    vars
}

/// How the plain listener finds key authorizations.
pub enum Acme {
    Stateless,
    /// An HTTP store at this port, this path template, optionally with a metadata server.
    Store {
        port: u16,
        authority: &'static str,
        path: String,
        metadata_port: Option<u16>,
        timeout_ms: u32,
    },
}

/// One app node: Envoy with the filter, its TLS files, and its backends.
pub struct Node {
    pub envoy: Envoy,
    pub http: u16,
    pub https: u16,
    pub tls: TlsFiles,
    pub backends: Vec<EchoBackend>,
    /// The members directory of a deployed node (its `eds.json` names the one backend).
    _members: Option<tempfile::TempDir>,
}

impl Node {
    pub async fn start(acme: Acme, backends: usize) -> Result<Node> {
        Self::start_with(acme, backends, &[]).await
    }

    pub async fn start_with(
        acme: Acme,
        n_backends: usize,
        extra: &[(&str, String)],
    ) -> Result<Node> {
        let wasm = wasm_path();
        anyhow::ensure!(
            wasm.exists(),
            "{} is missing: run `make wasm` (or `make test`) first",
            wasm.display()
        );
        let mut backends = Vec::new();
        for i in 0..n_backends {
            backends.push(EchoBackend::start(&format!("backend-{i}")).await?);
        }
        let tls = TlsFiles::self_signed(&[HOST])?;
        let ports = Ports::free();
        let (http, https, admin) = (ports.http, ports.https, ports.admin);
        let mut vars = loopback_vars(&ports, &wasm, &tls, &backends);
        vars.extend([
            ("WS_PATHS", "/ws".to_owned()),
            (
                "AFFINITY_SOURCES",
                "query:room header:x-session cookie client_address".to_owned(),
            ),
        ]);
        match acme {
            Acme::Stateless => vars.push(("ACME_THUMBPRINT", THUMB.to_owned())),
            Acme::Store {
                port,
                authority,
                path,
                metadata_port,
                timeout_ms,
            } => {
                vars.extend([
                    ("ACME_MODE", "store".to_owned()),
                    ("STORE_ADDRESS", format!("127.0.0.1:{port}")),
                    ("STORE_TLS", "0".to_owned()),
                    ("STORE_AUTHORITY", authority.to_owned()),
                    ("STORE_PATH", path),
                    ("STORE_TIMEOUT_MS", timeout_ms.to_string()),
                ]);
                match metadata_port {
                    Some(p) => vars.extend([
                        ("STORE_METADATA_TOKEN", "1".to_owned()),
                        ("METADATA_ADDRESS", "127.0.0.1".to_owned()),
                        ("METADATA_PORT", p.to_string()),
                    ]),
                    None => vars.push(("STORE_METADATA_TOKEN", "0".to_owned())),
                }
            }
        }
        vars.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let config = render_app_node(&vars)?;
        let envoy = Envoy::start(&config, admin).await?;
        if n_backends > 0 {
            envoy.wait_cluster_healthy("app", n_backends, WAIT).await?;
        }
        Ok(Node {
            envoy,
            http,
            https,
            tls,
            backends,
            _members: None,
        })
    }

    /// A node rendered exactly as `make deploy` renders one: `deploy/deploy.sh --plan` writes
    /// `node.env` from a deploy settings file (`settings` adds to a minimal one; the app is
    /// one echo backend on `APP_PORT`), and the node's own `startup.sh render` turns it into
    /// the Envoy config. Only what differs on loopback is overridden: addresses, ports, file
    /// paths, and the bucket's endpoint (an [`crate::HttpStore`]-style server at `store_port`).
    pub async fn start_deployed(settings: &str, store_port: u16) -> Result<Node> {
        let wasm = wasm_path();
        anyhow::ensure!(
            wasm.exists(),
            "{} is missing: run `make wasm` (or `make test`) first",
            wasm.display()
        );
        let backend = EchoBackend::start("backend-0").await?;
        let settings = format!(
            "PROJECT=acme-edge-test\nREGION=europe-west1\nDOMAINS={HOST}\n\
             CONTACT_EMAIL=ops@example.com\nAPP_IMAGE=europe-west1-docker.pkg.dev/acme-edge-test/apps/echo:1\n\
             APP_PORT={}\n{settings}",
            backend.port
        );
        let node_env = deploy_node_env(&settings)?;
        let tls = TlsFiles::self_signed(&[HOST])?;
        let ports = Ports::free();
        let mut vars = listener_vars(&ports, &wasm, tls.path(), &[]);
        vars.retain(|(k, _)| *k != "APP_BACKENDS");
        // A deployed node's `app` cluster reads the membership `renewer members` keeps; here
        // the one member is the local backend, written the way the agent writes it.
        let members = tempfile::Builder::new()
            .prefix("acme-edge-members-")
            .tempdir()?;
        std::fs::write(
            members.path().join("eds.json"),
            renewer::node::eds::render(
                "app",
                backend.port,
                &[renewer::node::members::Member {
                    address: std::net::Ipv4Addr::LOCALHOST.into(),
                    name: "acme-edge-node-test".to_owned(),
                }],
            ),
        )?;
        vars.extend([
            ("MEMBERS_DIR", members.path().display().to_string()),
            ("COOKIE_SECRET", SECRET.to_owned()),
            ("NODE_ID", "acme-edge-node-test".to_owned()),
            ("STORE_ADDRESS", format!("127.0.0.1:{store_port}")),
            ("STORE_TLS", "0".to_owned()),
            ("STORE_AUTHORITY", "storage.test".to_owned()),
            ("METADATA_ADDRESS", "127.0.0.1".to_owned()),
            ("METADATA_PORT", store_port.to_string()),
        ]);
        let config = render_deployed_node(&node_env, &vars)?;
        let envoy = Envoy::start(&config, ports.admin).await?;
        envoy.wait_cluster_healthy("app", 1, WAIT).await?;
        Ok(Node {
            envoy,
            http: ports.http,
            https: ports.https,
            tls,
            backends: vec![backend],
            _members: Some(members),
        })
    }

    pub async fn get(&self, path: &str) -> Result<RawResponse> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {HOST}:{}\r\nConnection: close\r\n\r\n",
            self.http
        );
        raw_http(self.http, req.as_bytes()).await
    }

    pub async fn https_raw(&self, request: &str) -> Result<RawResponse> {
        raw_https(self.https, HOST, &self.tls.ca_pem, request.as_bytes()).await
    }

    pub fn wss(&self, path_and_query: &str) -> String {
        format!("wss://{HOST}:{}{path_and_query}", self.https)
    }

    pub async fn counter(&self, name: &str) -> Result<u64> {
        Ok(self.envoy.wasm_counter(name).await?.unwrap_or(0))
    }

    /// Opens a WebSocket, checks it echoes, and returns the backend id and the response.
    pub async fn ws_backend(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(String, WsResponse)> {
        let (mut ws, resp) = ws_connect(&self.wss(path), headers, Some(&self.tls.ca_pem)).await?;
        let id = backend_id(resp.headers()).context("the 101")?;
        anyhow::ensure!(ws_echo(&mut ws, "hello").await? == "hello", "no echo");
        anyhow::ensure!(
            ws_echo(&mut ws, "whoami").await? == id,
            "backend id mismatch"
        );
        let _ = ws.close(None).await;
        Ok((id, resp))
    }
}

pub fn challenge_path(token: &str) -> String {
    format!("/.well-known/acme-challenge/{token}")
}

pub fn set_cookie_value(resp: &WsResponse) -> Option<String> {
    let header = resp.headers().get("set-cookie")?.to_str().ok()?;
    Some(header.split(';').next()?.to_owned())
}

/// The `node.env` that `make deploy` puts in the nodes' instance metadata for these deploy
/// settings (a `deploy/config.env`): `deploy/deploy.sh --plan` writes it and runs nothing.
pub fn deploy_node_env(settings: &str) -> Result<String> {
    Ok(deploy_files(settings)?.node_env)
}

/// What `make deploy` hands the nodes and the renewer for these settings.
#[derive(Debug, Clone)]
pub struct DeployFiles {
    /// The node settings (instance metadata `acme-edge-settings`).
    pub node_env: String,
    /// The renewer's `RENEWER__*` settings (the Cloud Run job's).
    pub renewer_env: Vec<(String, String)>,
    /// The nodes' agents' `RENEWER__*` settings (instance metadata `acme-edge-renewer-env`:
    /// no ACME settings, so renewer-only changes do not roll the nodes).
    pub node_renewer_env: Vec<(String, String)>,
}

fn env_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// [`DeployFiles`] as `deploy/deploy.sh --plan` writes them (it runs nothing).
pub fn deploy_files(settings: &str) -> Result<DeployFiles> {
    let dir = tempfile::Builder::new()
        .prefix("acme-edge-deploy-")
        .tempdir()?;
    let config = dir.path().join("config.env");
    std::fs::write(&config, settings)?;
    run_deploy_script("deploy.sh", &["--plan".as_ref(), config.as_os_str()], &[])?;
    let node_env =
        std::fs::read_to_string(dir.path().join(".out/node.env")).context("read .out/node.env")?;
    let read = |file: &str| {
        std::fs::read_to_string(dir.path().join(".out").join(file))
            .with_context(|| format!("read .out/{file}"))
    };
    Ok(DeployFiles {
        node_env,
        renewer_env: env_lines(&read("renewer.env")?),
        node_renewer_env: env_lines(&read("node-renewer.env")?),
    })
}

/// The `[members]` settings a node's agent gets (`deploy/node/startup.sh members-env`).
pub fn deployed_members_env(node_env: &str) -> Result<Vec<(String, String)>> {
    startup_env(node_env, &["members-env"])
}

/// The readiness settings of a node's `renewer sync` (`deploy/node/startup.sh sync-env`), for
/// a node whose internal address is `ip`.
pub fn deployed_sync_env(node_env: &str, ip: &str) -> Result<Vec<(String, String)>> {
    startup_env(node_env, &["sync-env", "SETTINGS", ip])
}

/// `startup.sh SUBCOMMAND SETTINGS…` (`SETTINGS` stands for the settings file; without it,
/// the file is the last argument) as `KEY=value` pairs.
fn startup_env(node_env: &str, args: &[&str]) -> Result<Vec<(String, String)>> {
    let dir = tempfile::Builder::new()
        .prefix("acme-edge-node-")
        .tempdir()?;
    let settings = dir.path().join("node.env");
    std::fs::write(&settings, node_env)?;
    let path = settings.display().to_string();
    let mut argv: Vec<&str> = args
        .iter()
        .map(|a| if *a == "SETTINGS" { path.as_str() } else { a })
        .collect();
    if !args.contains(&"SETTINGS") {
        argv.push(&path);
    }
    let argv: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
    let out = run_deploy_script("node/startup.sh", &argv, &[])?;
    Ok(env_lines(&String::from_utf8(out)?))
}

/// The Envoy config a node's startup script renders from `node_env`
/// (`deploy/node/startup.sh render`, with `deploy/envoy/render.sh`); `vars` are set in its
/// environment, for what differs on loopback.
pub fn render_deployed_node(node_env: &str, vars: &[(&str, String)]) -> Result<String> {
    let dir = tempfile::Builder::new()
        .prefix("acme-edge-node-")
        .tempdir()?;
    let settings = dir.path().join("node.env");
    std::fs::write(&settings, node_env)?;
    let render = repo_root().join("deploy/envoy/render.sh");
    let out = run_deploy_script(
        "node/startup.sh",
        &["render".as_ref(), settings.as_os_str(), render.as_os_str()],
        vars,
    )?;
    String::from_utf8(out).context("startup.sh render output is not UTF-8")
}

/// Runs `bash deploy/<script> <args…>` (stdin closed, `vars` added to its environment) and
/// returns what it printed; a failure carries its stderr. `args[0]` names what it does.
fn run_deploy_script(script: &str, args: &[&OsStr], vars: &[(&str, String)]) -> Result<Vec<u8>> {
    let what = format!(
        "{} {}",
        script.rsplit('/').next().unwrap_or(script),
        args[0].to_string_lossy()
    );
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("deploy").join(script))
        .args(args)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("run deploy/{script} {}", args[0].to_string_lossy()))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}
