//! A CA and a renewer for tests: Pebble, an HTTP-01 responder that answers from the renewer's
//! store, a temp directory for configs, and a way to run the real `renewer` binary.
//!
//! Tests drive the binary (not the library) so exit codes, `--help`, stdout and the JSON logs
//! are what an operator gets.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use renewer::store::fs::FsStore;
use renewer::store::SharedStore;
use tempfile::TempDir;

use crate::acme_responder::{key_auth_lookup, Http01Responder, KeyAuthLookup};
use crate::pebble::{Pebble, PebbleBuilder};
use crate::workspace::repo_root;

/// Longest a single `renewer` invocation may take in a test before it is killed.
pub const RENEWER_TIMEOUT: Duration = Duration::from_secs(180);

/// The `renewer` binary, built (once per test process) with the same cargo that runs the tests,
/// so a test never runs a stale binary. `make demo` builds it with the same command first.
pub fn renewer_bin() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("target"));
            let mut cmd = std::process::Command::new(cargo);
            cmd.args(["build", "--quiet", "-p", "renewer", "--bin", "renewer"])
                .current_dir(repo_root());
            // What `cargo test`/`cargo run` put in our environment about *this* crate must not
            // reach the nested build: a dependency's build script tracks CARGO_MANIFEST_DIR, and
            // a changed value would rebuild half the tree on every run.
            for (name, _) in std::env::vars_os() {
                let n = name.to_string_lossy();
                let injected = n.starts_with("CARGO_PKG_")
                    || n.starts_with("CARGO_BIN_EXE_")
                    || matches!(
                        n.as_ref(),
                        "CARGO_MANIFEST_DIR"
                            | "CARGO_MANIFEST_PATH"
                            | "CARGO_CRATE_NAME"
                            | "CARGO_BIN_NAME"
                            | "CARGO_PRIMARY_PACKAGE"
                            | "CARGO_TARGET_TMPDIR"
                            | "OUT_DIR"
                    );
                if injected {
                    cmd.env_remove(&name);
                }
            }
            let status = cmd.status().map_err(|e| format!("run cargo build: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build -p renewer failed: {status}"));
            }
            Ok(target.join("debug/renewer"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Answers HTTP-01 requests from `acme-challenge/<token>` in `store`: what Envoy's filter in
/// store mode or `renewer serve` do in production.
pub fn store_lookup(store: SharedStore) -> KeyAuthLookup {
    key_auth_lookup(move |token: String| {
        let store = store.clone();
        async move {
            let obj = store.get(&format!("acme-challenge/{token}")).await.ok()??;
            String::from_utf8(obj.data).ok()
        }
    })
}

/// What one `renewer` run printed and returned.
#[derive(Debug, Clone)]
pub struct RenewerOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl RenewerOutput {
    /// stdout and stderr together, for assertion messages.
    pub fn all(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The JSON log lines on stderr (non-JSON lines skipped).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.stderr
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Pebble + responder + a directory for configs and (by default) the file store.
pub struct AcmeStack {
    pub pebble: Pebble,
    pub responder: Http01Responder,
    pub store: SharedStore,
    dir: TempDir,
}

impl std::fmt::Debug for AcmeStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeStack")
            .field("dir", &self.dir.path())
            .field("directory", &self.pebble.directory_url())
            .finish_non_exhaustive()
    }
}

impl AcmeStack {
    /// Pebble (nonces never rejected) and a file store under the stack's temp dir.
    pub async fn start() -> Result<AcmeStack> {
        AcmeStack::start_with(Pebble::builder(), None).await
    }

    /// Pebble validating against `port` on 127.0.0.1 instead of the stack's responder: for a
    /// test whose own server answers challenges there (`renewer serve`, Envoy's filter). The
    /// responder still runs, unused.
    pub async fn start_validating_on(port: u16) -> Result<AcmeStack> {
        AcmeStack::start_inner(Pebble::builder(), None, Some(port)).await
    }

    /// [`AcmeStack::start_validating_on`] with Pebble options.
    pub async fn start_with_validating_on(pebble: PebbleBuilder, port: u16) -> Result<AcmeStack> {
        AcmeStack::start_inner(pebble, None, Some(port)).await
    }

    /// With Pebble options, and optionally another store for the responder to read (GCS).
    pub async fn start_with(
        pebble: PebbleBuilder,
        store: Option<SharedStore>,
    ) -> Result<AcmeStack> {
        AcmeStack::start_inner(pebble, store, None).await
    }

    async fn start_inner(
        pebble: PebbleBuilder,
        store: Option<SharedStore>,
        http_port: Option<u16>,
    ) -> Result<AcmeStack> {
        let dir = tempfile::Builder::new()
            .prefix("acme-edge-renewer-")
            .tempdir()
            .context("temp dir")?;
        let store: SharedStore = match store {
            Some(s) => s,
            None => Arc::new(FsStore::new(dir.path().join("store"))?),
        };
        let responder = Http01Responder::start(store_lookup(store.clone())).await?;
        let pebble = pebble
            .http_port(http_port.unwrap_or(responder.port()))
            .start()
            .await?;
        Ok(AcmeStack {
            pebble,
            responder,
            store,
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file store's directory (meaningful with the default store).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Rewrite certificate `name`'s lease in the file store so it expired a minute ago (what
    /// waiting out its TTL would do, e.g. after a killed run); no lease is fine.
    pub fn expire_lease(&self, name: &str) -> Result<()> {
        let path = self.store_dir().join("locks").join(name);
        let Ok(text) = std::fs::read(&path) else {
            return Ok(());
        };
        let mut lease: serde_json::Value = serde_json::from_slice(&text).context("lease json")?;
        let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
        lease["expires_at"] = past
            .format(&time::format_description::well_known::Rfc3339)?
            .into();
        std::fs::write(&path, serde_json::to_vec(&lease)?)?;
        Ok(())
    }

    /// A complete renewer.toml for this Pebble: `[acme]` with the extra root and quick
    /// timeouts, the file store unless `extra` has a `[store]`, then `extra` (more sections)
    /// and `certificates` (`[[certificates]]` tables).
    pub fn config_text(&self, extra: &str, certificates: &str) -> String {
        self.config_text_for(&self.pebble.directory_url(), extra, certificates)
    }

    /// Like [`AcmeStack::config_text`] with another directory URL (the ARI responder's).
    pub fn config_text_for(&self, directory: &str, extra: &str, certificates: &str) -> String {
        let store = if extra.contains("[store]") {
            String::new()
        } else {
            format!("[store]\nurl = \"file://{}\"\n", self.store_dir().display())
        };
        format!(
            "[acme]\n\
             directory = \"{directory}\"\n\
             contact = [\"ops@example.com\"]\n\
             extra_root_ca = \"{}\"\n\
             poll_timeout_seconds = 60\n\
             request_timeout_seconds = 10\n\
             {store}\n{extra}\n{certificates}\n",
            self.pebble.api_cert_path().display()
        )
    }

    /// Write a config file into the stack's directory and return its path.
    pub fn write_config(&self, file: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Run `renewer --config <config> <args…>` with JSON logs.
    pub async fn renewer(&self, config: &Path, args: &[&str]) -> Result<RenewerOutput> {
        run_renewer(config, args, &[]).await
    }

    /// Orders Pebble has accepted so far (from its log).
    pub fn orders_placed(&self) -> usize {
        self.pebble.log().matches("Added order").count()
    }
}

/// Run the renewer binary with `--config`, JSON logs, and extra environment.
/// Start the renewer binary with `--config` and `args`, and kill it (SIGKILL) as soon as
/// `reached()` is true: a run stopped mid-order, as a crash or a timed-out job would leave it.
/// Fails if the run ends first, or `reached()` stays false for 30 s (`what` says what was
/// waited for).
pub async fn kill_renewer_when(
    config: &Path,
    args: &[&str],
    reached: impl Fn() -> bool,
    what: &str,
) -> Result<()> {
    let mut child = tokio::process::Command::new(renewer_bin()?)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RENEWER_LOG_FORMAT", "json")
        .env_remove("RENEWER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !reached() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{what} never came");
        anyhow::ensure!(
            child.try_wait()?.is_none(),
            "the run ended before {what}, so it was not killed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().await?;
    Ok(())
}

pub async fn run_renewer(
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<RenewerOutput> {
    let bin = renewer_bin()?;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("RENEWER_LOG_FORMAT", "json")
        .env_remove("RENEWER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))?;
    let out = match tokio::time::timeout(RENEWER_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.context("wait for renewer")?,
        Err(_) => bail!("renewer {args:?} did not finish within {RENEWER_TIMEOUT:?}"),
    };
    Ok(RenewerOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
