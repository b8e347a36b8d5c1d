//! `renewer serve` as a child process, and the `/healthz` probe that tells it is up.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use harness::bench;

use crate::commands::{renewer_cmd, serve_args};

/// Polling interval of the cold-start probe, and how long one probe may take.
pub const PROBE_INTERVAL: Duration = Duration::from_micros(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest `renewer serve` may take to answer `/healthz` before the benchmark gives up.
const SERVE_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// `renewer serve` as a child process: the renewer's HTTP-01 responder, and what the
/// cold-start measurement starts.
pub struct Serve {
    child: Option<Child>,
    log: PathBuf,
}

impl Serve {
    pub fn spawn(bin: &Path, config: &Path, port: u16, log: PathBuf) -> Result<Serve> {
        let stderr = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let port_s = port.to_string();
        let child = renewer_cmd(bin, config, &serve_args(&port_s))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Serve {
            child: Some(child),
            log,
        })
    }

    /// Spawned and answering `/healthz`.
    pub fn start(bin: &Path, config: &Path, port: u16, dir: &Path) -> Result<Serve> {
        let mut serve = Serve::spawn(bin, config, port, dir.join("serve.log"))?;
        serve.wait_healthy(port)?;
        Ok(serve)
    }

    /// Polls `GET /healthz` every [`PROBE_INTERVAL`] until it answers 200; returns when.
    pub fn wait_healthy(&mut self, port: u16) -> Result<Instant> {
        let deadline = Instant::now() + SERVE_READY_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Some(200) = healthz_status(addr) {
                return Ok(Instant::now());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("renewer serve exited ({status}):\n{}", self.log());
            }
            if Instant::now() >= deadline {
                bail!(
                    "renewer serve did not answer /healthz within {SERVE_READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident set so far (`VmHWM`), KiB.
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        bench::status_kib(&status, "VmHWM")
    }

    /// SIGTERM (as Cloud Run stops it), then reaps it; its peak RSS just before.
    pub fn stop(&mut self) -> Option<u64> {
        let rss = self.peak_rss_kib();
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        rss
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One `GET /healthz` over a fresh connection; the status code, or `None` when the server is
/// not there (yet) or the answer is not HTTP.
fn healthz_status(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match stream.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    status_code(&head[..n])
}

/// The status code of an HTTP/1.x response's first line.
fn status_code(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head.get(..12)?).ok()?;
    let rest = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?;
    rest.get(..3)?.parse().ok()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service"), Some(503));
        assert_eq!(status_code(b"HTTP/1.1 2"), None);
        assert_eq!(status_code(b"SSH-2.0-OpenSSH"), None);
    }
}
