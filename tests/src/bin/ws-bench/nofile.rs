//! The open-file limit: ten thousand held WebSockets need about twice as many descriptors in
//! this process and in Envoy.

use anyhow::{Context, Result};

use crate::args::{Options, Part};

/// File descriptors this process and Envoy each need: per held connection the client socket
/// and the backend's accepted socket here, the downstream and upstream sockets in Envoy; plus
/// room for everything else (listeners, health checks, logs, the sticky passes).
pub fn nofile_needed(opts: &Options) -> u64 {
    let held = if opts.runs(Part::Held) {
        opts.connections as u64
    } else {
        0
    };
    (2 * held + 10_000).max(200_000)
}

/// The open-file limit the benchmark asked for and got.
#[derive(Debug, Clone)]
pub struct NofileLimit {
    pub wanted: u64,
    /// Soft limit in force (this process's, inherited by Envoy).
    pub soft: u64,
    pub hard: u64,
    /// Why the hard limit could not be raised to `wanted`, if it could not.
    pub refused: Option<String>,
}

/// Raises RLIMIT_NOFILE (soft and hard; root with CAP_SYS_RESOURCE may raise the hard limit up
/// to `fs.nr_open`) to `want`, or the soft limit as far as the hard limit allows when raising
/// the hard one is not permitted.
pub fn raise_nofile_limit(want: u64) -> Result<NofileLimit> {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE.get().context("getrlimit(NOFILE)")?;
    let mut refused = None;
    if soft < want {
        if let Err(e) = Resource::NOFILE.set(want, want.max(hard)) {
            refused = Some(e.to_string());
            rlimit::increase_nofile_limit(want).context("raise RLIMIT_NOFILE")?;
        }
    }
    let (soft, hard) = Resource::NOFILE.get().context("getrlimit(NOFILE)")?;
    if refused.is_some() {
        eprintln!(
            "ws-bench: could not raise RLIMIT_NOFILE to {want} ({}); soft {soft}, hard {hard}",
            refused.as_deref().unwrap_or_default()
        );
    }
    Ok(NofileLimit {
        wanted: want,
        soft,
        hard,
        refused,
    })
}

/// Descriptors kept free in Envoy and here while connections are held: admin requests,
/// health checks, files read for the readings.
pub const FD_MARGIN: usize = 64;

/// How many WebSockets fit under `limit` descriptors in a process that already uses
/// `in_use` and needs two per WebSocket (Envoy: downstream and upstream socket; this process:
/// the client socket and the backend's accepted socket), keeping `margin` free.
pub fn fd_capacity(limit: u64, in_use: usize, margin: usize) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    limit.saturating_sub(in_use + margin) / 2
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn asks_for_enough_descriptors() {
        assert_eq!(nofile_needed(&Options::default()), 200_000);
    }

    #[test]
    fn fd_capacity_counts_two_per_websocket() {
        // Envoy under a hard limit of 20000 with 40 descriptors in use: 10000 do not fit.
        assert_eq!(fd_capacity(20_000, 40, FD_MARGIN), 9_948);
        assert_eq!(fd_capacity(200_000, 40, FD_MARGIN), 99_948);
        assert_eq!(fd_capacity(100, 90, FD_MARGIN), 0);
    }
}
