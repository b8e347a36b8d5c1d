//! `sync.on_change`: the command run after a new certificate is installed.

use std::path::Path;
use std::time::Duration;

use super::{Installed, SyncError};
use crate::shared::clock::rfc3339;

/// Run the `on_change` command with `sh -c`, the new certificate described in its environment
/// (`RENEWER_SYNC_SERIAL`, `RENEWER_SYNC_NOT_AFTER`, `RENEWER_SYNC_DIR`, `RENEWER_SYNC_NAME`).
pub async fn run_hook(
    command: &str,
    installed: &Installed,
    dir: &Path,
    timeout: Duration,
) -> Result<(), SyncError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("RENEWER_SYNC_SERIAL", &installed.serial)
        .env("RENEWER_SYNC_NOT_AFTER", rfc3339(installed.not_after))
        .env("RENEWER_SYNC_DIR", dir)
        .env("RENEWER_SYNC_NAME", &installed.name)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SyncError::Hook(format!("cannot start sh: {e}")))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(SyncError::Hook(format!("{command:?} failed ({status})"))),
        Ok(Err(e)) => Err(SyncError::Hook(e.to_string())),
        Err(_) => {
            let _ = child.kill().await;
            Err(SyncError::Hook(format!(
                "{command:?} did not finish within {} s and was killed",
                timeout.as_secs()
            )))
        }
    }
}
