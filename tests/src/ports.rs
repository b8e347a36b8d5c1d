//! Free ports and bounded polling.

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Result};

/// How long the harness waits for something it started to come up. Generous on purpose: CI
/// machines are small (2 cores) and several Envoys may start at once. This bounds waits, it is
/// never asserted on.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on a single client exchange, so a server that never answers fails the test instead of
/// hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A port that was free a moment ago, for processes (Envoy, fake-gcs-server) that must be told
/// their port up front. In-process servers bind port 0 themselves and never race; this one can
/// in theory be taken by someone else between the drop and the child's bind, which the kernel's
/// randomised ephemeral allocation makes rare enough for tests.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// Polls `check` until it yields `Some`, or fails after `timeout` with `what` in the message.
/// Polling (rather than sleeping a fixed time) keeps fast machines fast and slow ones green.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
