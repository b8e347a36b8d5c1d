//! Free ports and bounded polling.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
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
///
/// A port is never handed out twice in one process: the kernel may well return the port it just
/// gave for the next `bind(0)` once the first listener is closed, and a caller asking for two
/// ports at once (Pebble's API and management ports) must get two (seen in CI: Pebble failed
/// with "address already in use" on its second listener).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local_addr of a bound listener")
            .port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if given.insert(port) {
            return port;
        }
    }
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

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
