//! Free ports and bounded polling.

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

/// A port that was free a moment ago, for processes (Envoy, Pebble, fake-gcs-server) that must
/// be told their port up front.
///
/// The ports come from below the kernel's ephemeral range (`ip_local_port_range`), one after
/// the other from a start that depends on the process id, each checked by binding it. The
/// kernel never hands out such a port by itself, so neither an in-process server binding port
/// 0 nor an outgoing connection can take it between this check and the child's bind; CI saw
/// both races with ports from `bind(0)` (Envoy and Pebble failing with "address already in
/// use"). A port is never handed out twice in one process. If the ephemeral range starts too
/// low to leave room, it falls back to `bind(0)`.
pub fn free_port() -> u16 {
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    let (low, high) = reserved_range();
    if high - low < 1000 {
        return kernel_port();
    }
    let span = high - low;
    let mut next = NEXT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut port = next.unwrap_or_else(|| low + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span {
        let candidate = port;
        port = if port + 1 >= high { low } else { port + 1 };
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            *next = Some(port);
            return candidate;
        }
    }
    kernel_port()
}

/// `[10000, start of the ephemeral range)`: ports the kernel does not pick on its own.
fn reserved_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    (10000, ephemeral_low.max(10000))
}

fn kernel_port() -> u16 {
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

#[cfg(test)]
mod unit {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        let (low, high) = reserved_range();
        if high - low >= 1000 {
            assert!(ports.iter().all(|p| (low..high).contains(p)), "{ports:?}");
        }
    }
}
