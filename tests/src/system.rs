//! The whole acme-edge system on loopback: Pebble (+ challtestsrv), Envoy with the edge filter
//! rendered by `deploy/envoy/render.sh`, WebSocket echo backends, `renewer serve`, and
//! `renewer sync` into the directory Envoy reads. `make demo` and the end-to-end tests both
//! drive this, so the demo shows what the tests check.
//!
//! Pebble's VA sends HTTP-01 requests to Envoy's plain listener; the filter answers them
//! according to [`ChallengeMode`]. Nothing but the ACME directory and the store is mocked:
//! the renewer, Envoy and the filter are the shipped ones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use renewer::bundle::{BundleStore, CertMeta, ObjectBundles};
use renewer::store::fs::FsStore;
use tempfile::TempDir;

use crate::acme_stack::{run_renewer, RenewerOutput};
use crate::client::{served_serial, ws_connect, WsResponse, WsStream};
use crate::envoy::{render_app_node, wasm_path, Envoy};
use crate::gcs::FakeGcs;
use crate::pebble::Pebble;
use crate::ports::{free_port, wait_for};
use crate::renewer_process::{trigger, RenewerProcess};
use crate::secret_manager::FakeSecretManager;
use crate::EchoBackend;

/// The affinity cookie key of the local system (not a secret: loopback only).
const COOKIE_SECRET: &str = "local-demo-cookie-secret-0123456789abcdef";
/// The bucket used in [`ChallengeMode::GcsStore`].
pub const BUCKET: &str = "acme-edge-local";

/// How the edge filter finds the key authorization of an HTTP-01 token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeMode {
    /// Store mode against `renewer serve`'s `/.well-known/acme-challenge/{token}`; the renewer
    /// keeps its store in a local directory (the embedded default).
    ServeStore,
    /// Store mode against the bucket's JSON API (fake-gcs-server); the renewer's store is that
    /// bucket — the production shape.
    GcsStore,
    /// Stateless: the filter answers `<token>.<account thumbprint>`, no store call.
    Stateless,
}

#[derive(Debug, Clone)]
pub struct SystemOptions {
    pub mode: ChallengeMode,
    /// Number of WebSocket backends (ids `backend-1` …).
    pub backends: usize,
    /// Mirror into the Secret Manager fake and have `renewer sync` read from it.
    pub secret_manager: bool,
    /// The certificate's name (resolved to 127.0.0.1 by Pebble's DNS).
    pub domain: String,
    /// Keep files here instead of a temp dir removed on drop (the demo's `KEEP=1`).
    pub dir: Option<PathBuf>,
}

impl Default for SystemOptions {
    fn default() -> Self {
        SystemOptions {
            mode: ChallengeMode::ServeStore,
            backends: 3,
            secret_manager: false,
            domain: "ws.demo.test".into(),
            dir: None,
        }
    }
}

/// Ports of the system's listeners.
#[derive(Debug, Clone, Copy)]
pub struct SystemPorts {
    pub http: u16,
    pub https: u16,
    pub admin: u16,
    pub serve: u16,
}

pub struct System {
    pub options: SystemOptions,
    pub pebble: Pebble,
    pub backends: Vec<EchoBackend>,
    pub envoy: Envoy,
    pub serve: RenewerProcess,
    pub gcs: Option<FakeGcs>,
    pub secret_manager: Option<FakeSecretManager>,
    pub ports: SystemPorts,
    /// Pebble's issuing root: what clients trust.
    pub roots_pem: String,
    /// `renewer.toml`.
    pub config: PathBuf,
    /// What `renewer sync` writes and Envoy reads.
    pub tls_dir: PathBuf,
    /// The account thumbprint (what stateless mode answers with).
    pub thumbprint: String,
    dir: PathBuf,
    _temp: Option<TempDir>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("dir", &self.dir)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

/// A progress callback: each component as it comes up.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

impl System {
    /// Start everything; `progress` is told about each component as it comes up.
    pub async fn start(options: SystemOptions, progress: Progress<'_>) -> Result<System> {
        let wasm = wasm_path();
        anyhow::ensure!(
            wasm.exists(),
            "{} is missing: run `make wasm` first",
            wasm.display()
        );
        let (temp, dir) = match &options.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("acme-edge-system-")
                    .tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let ports = SystemPorts {
            http: free_port(),
            https: free_port(),
            admin: free_port(),
            serve: free_port(),
        };

        let pebble = Pebble::builder().http_port(ports.http).start().await?;
        let roots_pem = pebble.issuing_roots_pem().await?;
        std::fs::write(dir.join("pebble-root.pem"), &roots_pem)?;
        progress(&format!(
            "Pebble CA: {} (validates HTTP-01 at 127.0.0.1:{}, Envoy's plain listener; names resolve to 127.0.0.1)",
            pebble.directory_url(),
            ports.http
        ));

        let gcs = match options.mode {
            ChallengeMode::GcsStore => {
                let gcs = FakeGcs::start().await?;
                gcs.create_bucket(BUCKET).await?;
                progress(&format!(
                    "fake-gcs-server: {} (bucket {BUCKET})",
                    gcs.base_url()
                ));
                Some(gcs)
            }
            _ => None,
        };
        let secret_manager = if options.secret_manager {
            let sm = FakeSecretManager::start("acme-edge-local").await?;
            progress(&format!("Secret Manager fake: {}", sm.endpoint()));
            Some(sm)
        } else {
            None
        };

        let tls_dir = dir.join("tls");
        let store_section = match &gcs {
            Some(g) => format!(
                "[store]\nurl = \"gs://{BUCKET}\"\ngcs_endpoint = \"{}\"\n",
                g.base_url()
            ),
            None => format!(
                "[store]\nurl = \"file://{}\"\n",
                dir.join("store").display()
            ),
        };
        let sm_section = match &secret_manager {
            Some(sm) => format!(
                "[secret_manager]\nproject = \"acme-edge-local\"\nendpoint = \"{}\"\n",
                sm.endpoint()
            ),
            None => String::new(),
        };
        let source = if secret_manager.is_some() {
            "secret-manager"
        } else {
            "store"
        };
        let config_text = format!(
            "# Written by the acme-edge local system (make demo / end-to-end tests).\n\
             [acme]\ndirectory = \"{}\"\ncontact = [\"ops@example.com\"]\n\
             extra_root_ca = \"{}\"\npoll_timeout_seconds = 60\nrequest_timeout_seconds = 10\n\
             {store_section}{sm_section}\
             [lock]\nwait_seconds = 30\n\
             [sync]\ndir = \"{}\"\nsource = \"{source}\"\n\
             [[certificates]]\nname = \"app\"\ndomains = [\"{}\"]\n",
            pebble.directory_url(),
            pebble.api_cert_path().display(),
            tls_dir.display(),
            options.domain,
        );
        let config = dir.join("renewer.toml");
        std::fs::write(&config, config_text)?;

        let out = run_renewer(&config, &["account", "--json"], &[]).await?;
        if out.code != 0 {
            bail!("renewer account failed:\n{}", out.all());
        }
        let account: serde_json::Value = serde_json::from_str(&out.stdout)?;
        let thumbprint = account["thumbprint"]
            .as_str()
            .context("no thumbprint")?
            .to_string();
        progress(&format!("ACME account: thumbprint {thumbprint}"));

        let out = run_renewer(&config, &["sync", "--init"], &[]).await?;
        if out.code != 0 {
            bail!("renewer sync --init failed:\n{}", out.all());
        }

        let mut backends = Vec::new();
        for i in 1..=options.backends {
            backends.push(EchoBackend::start(&format!("backend-{i}")).await?);
        }
        progress(&format!(
            "{} WebSocket echo backends: {}",
            backends.len(),
            backends
                .iter()
                .map(|b| b.addr())
                .collect::<Vec<_>>()
                .join(", ")
        ));

        let listener_ports = crate::node::Ports {
            http: ports.http,
            https: ports.https,
            admin: ports.admin,
        };
        let mut vars = crate::node::listener_vars(&listener_ports, &wasm, &tls_dir, &backends);
        vars.extend([
            ("DOMAINS", options.domain.clone()),
            // The pages of the site itself, as `make deploy` defaults it (the port is part of
            // an origin when it is not 443).
            (
                "ALLOWED_ORIGINS",
                format!("https://{0} https://{0}:{1}", options.domain, ports.https),
            ),
            ("COOKIE_SECRET", COOKIE_SECRET.into()),
            ("WS_PATHS", "/ws".into()),
            ("NODE_ID", "local-node".into()),
        ]);
        match (options.mode, &gcs) {
            (ChallengeMode::Stateless, _) => {
                vars.push(("ACME_THUMBPRINT", thumbprint.clone()));
            }
            (ChallengeMode::ServeStore, _) => vars.extend([
                ("ACME_MODE", "store".into()),
                ("STORE_ADDRESS", format!("127.0.0.1:{}", ports.serve)),
                ("STORE_TLS", "0".into()),
                ("STORE_AUTHORITY", format!("127.0.0.1:{}", ports.serve)),
                ("STORE_PATH", "/.well-known/acme-challenge/{token}".into()),
                ("STORE_METADATA_TOKEN", "0".into()),
            ]),
            (ChallengeMode::GcsStore, Some(g)) => vars.extend([
                ("ACME_MODE", "store".into()),
                ("STORE_ADDRESS", format!("127.0.0.1:{}", g.port())),
                ("STORE_TLS", "0".into()),
                ("STORE_AUTHORITY", format!("127.0.0.1:{}", g.port())),
                ("BUCKET", BUCKET.into()),
                ("STORE_METADATA_TOKEN", "0".into()),
            ]),
            (ChallengeMode::GcsStore, None) => unreachable!("GCS started above"),
        }
        let envoy_yaml = render_app_node(&vars)?;
        std::fs::write(dir.join("envoy.yaml"), &envoy_yaml)?;
        let envoy = Envoy::start(&envoy_yaml, ports.admin).await?;
        envoy
            .wait_cluster_healthy("app", backends.len(), Duration::from_secs(30))
            .await?;
        progress(&format!(
            "Envoy + edge filter ({:?} challenges): http://{}:{} and https://{}:{} (admin 127.0.0.1:{})",
            options.mode, options.domain, ports.http, options.domain, ports.https, ports.admin
        ));

        let serve = RenewerProcess::serve(&config, ports.serve).await?;
        progress(&format!(
            "renewer serve: http://127.0.0.1:{} (store: {})",
            ports.serve,
            if gcs.is_some() {
                format!("gs://{BUCKET}")
            } else {
                format!("file://{}", dir.join("store").display())
            }
        ));

        Ok(System {
            options,
            pebble,
            backends,
            envoy,
            serve,
            gcs,
            secret_manager,
            ports,
            roots_pem,
            config,
            tls_dir,
            thumbprint,
            dir,
            _temp: temp,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `POST /` to `renewer serve`: a renewal pass (status, JSON answer).
    pub async fn renew(&self, force: bool) -> Result<(u16, serde_json::Value)> {
        let body = if force { r#"{"force":true}"# } else { "" };
        trigger(self.ports.serve, body).await
    }

    /// `renewer sync --once`.
    pub async fn sync(&self) -> Result<RenewerOutput> {
        run_renewer(&self.config, &["sync", "--once"], &[]).await
    }

    /// What the renewer's store says is current.
    pub async fn current(&self) -> Result<Option<CertMeta>> {
        let store: renewer::store::SharedStore = match &self.gcs {
            Some(g) => std::sync::Arc::new(
                renewer::store::gcs::GcsStore::new(BUCKET, "", Some(&g.base_url())).await?,
            ),
            None => std::sync::Arc::new(FsStore::new(self.dir.join("store"))?),
        };
        Ok(ObjectBundles::new(store).current_meta("app").await?)
    }

    /// The serial of the leaf Envoy presents for the domain.
    pub async fn served_serial(&self) -> Result<String> {
        served_serial(self.ports.https, &self.options.domain, &self.roots_pem).await
    }

    /// Waits until Envoy presents `serial`.
    pub async fn wait_served(&self, serial: &str) -> Result<()> {
        wait_for(
            &format!("Envoy to serve certificate {serial}"),
            Duration::from_secs(30),
            || async {
                Ok(self
                    .served_serial()
                    .await
                    .ok()
                    .filter(|s| s == serial)
                    .map(|_| ()))
            },
        )
        .await
    }

    /// `wss://<domain>:<https port><path>`.
    pub fn wss_url(&self, path: &str) -> String {
        format!("wss://{}:{}{path}", self.options.domain, self.ports.https)
    }

    /// Opens a WebSocket through Envoy as a browser on the site would (with `Origin`, trusting
    /// only Pebble's root), optionally presenting an affinity cookie. Returns the stream, the
    /// backend id it reached and the response.
    pub async fn ws_open(&self, cookie: Option<&str>) -> Result<(WsStream, String, WsResponse)> {
        let origin = format!("https://{}", self.options.domain);
        let mut headers: Vec<(&str, &str)> = vec![("origin", &origin)];
        headers.extend(cookie.map(|c| ("cookie", c)));
        let (ws, resp) = ws_connect(&self.wss_url("/ws"), &headers, Some(&self.roots_pem)).await?;
        let id = resp
            .headers()
            .get("x-backend-id")
            .context("no x-backend-id on the 101")?
            .to_str()?
            .to_string();
        Ok((ws, id, resp))
    }

    /// `<bucket or dir>` where the renewer stores, for messages.
    pub fn store_location(&self) -> String {
        match &self.gcs {
            Some(_) => format!("gs://{BUCKET}"),
            None => format!("file://{}", self.dir.join("store").display()),
        }
    }
}
