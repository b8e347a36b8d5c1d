//! Long-running `renewer` processes (`serve`, `sync --watch`) for tests: started with JSON logs
//! into a file, signalled like Cloud Run or systemd would, and killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::acme_stack::renewer_bin;
use crate::client::{http_request, RawResponse};
use crate::ports::{wait_for, STARTUP_TIMEOUT};

/// A `renewer` child process. Dropping it kills the process and reaps it.
pub struct RenewerProcess {
    child: Option<Child>,
    logs: TempDir,
}

impl std::fmt::Debug for RenewerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenewerProcess")
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish_non_exhaustive()
    }
}

impl RenewerProcess {
    /// `renewer --config <config> <args…>` with JSON logs on stderr (kept in a file).
    pub fn spawn(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<RenewerProcess> {
        let bin = renewer_bin()?;
        let logs = tempfile::Builder::new()
            .prefix("acme-edge-renewer-proc-")
            .tempdir()?;
        let stderr = std::fs::File::create(logs.path().join("stderr.log"))?;
        let stdout = std::fs::File::create(logs.path().join("stdout.log"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(config)
            .args(args)
            .env("RENEWER_LOG_FORMAT", "json")
            .env_remove("RENEWER_CONFIG")
            .env_remove("PORT")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(RenewerProcess {
            child: Some(child),
            logs,
        })
    }

    /// `renewer serve` on 127.0.0.1:`port`, returned once `/healthz` answers 200.
    pub async fn serve(config: &Path, port: u16) -> Result<RenewerProcess> {
        let port_s = port.to_string();
        let mut p = RenewerProcess::spawn(
            config,
            &["serve", "--address", "127.0.0.1", "--port", &port_s],
            &[],
        )?;
        let ready = wait_for("renewer serve /healthz", STARTUP_TIMEOUT, || async {
            Ok(http_request(port, "GET", "/healthz", &[], b"")
                .await
                .ok()
                .filter(|r| r.status == 200))
        })
        .await;
        if let Err(e) = ready {
            let status = p.try_wait();
            bail!("{e:#}; process: {status:?}\n{}", p.log());
        }
        Ok(p)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends SIGTERM (what Cloud Run and systemd send to stop a process).
    pub fn sigterm(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("run kill")?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", self.pid());
        Ok(())
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The exit status if the process ends within `timeout`, else `None` (still running).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// stderr so far (JSON log lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.logs.path().join("stderr.log")
    }

    /// The JSON log lines so far.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until a log line's `message` contains `text`.
    pub async fn wait_log(&self, text: &str, timeout: Duration) -> Result<serde_json::Value> {
        let found = wait_for(&format!("log line {text:?}"), timeout, || async {
            Ok(self
                .log_lines()
                .into_iter()
                .find(|l| l["message"].as_str().is_some_and(|m| m.contains(text))))
        })
        .await;
        found.with_context(|| format!("renewer log:\n{}", self.log()))
    }
}

impl Drop for RenewerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// POST `body` to `renewer serve` on `port`; the status and the parsed JSON answer.
pub async fn trigger(port: u16, body: &str) -> Result<(u16, serde_json::Value)> {
    let resp: RawResponse = http_request(
        port,
        "POST",
        "/",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await?;
    let json = serde_json::from_slice(&resp.body).with_context(|| {
        format!(
            "answer is not JSON: {}",
            String::from_utf8_lossy(&resp.body)
        )
    })?;
    Ok((resp.status, json))
}
