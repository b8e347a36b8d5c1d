//! `certs/<name>/state.json`: what the last attempts did. Advisory: it feeds `status` (last
//! error), the failure backoff and the ARI cache, but serving never depends on it, and a
//! missing or unreadable state is treated as empty (with a warning), never as a failure.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::cloud::backoff::{FailureHistory, Subject};
use crate::cloud::policy::AriWindow;
use crate::shared::store::{keys, Precondition, Sensitivity, SharedStore, StoreError};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertState {
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_failure: Option<OffsetDateTime>,
    /// What the failed attempts ordered (names and key type): failures hold back only an
    /// order of the same. Absent in states written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_for: Option<Subject>,
    /// The last failure is the record of an attempt that has not ended (written before it
    /// orders): its renewer may still be ordering, or it stopped without recording how it
    /// ended. Another renewer waits for the lease to tell which.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attempt_open: bool,
    /// One line; never contains key material.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    /// The CA's last renewal-information answer, kept until its `Retry-After`.
    #[serde(default)]
    pub ari: Option<AriCache>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AriCache {
    /// The certificate the window is about; a cache for another serial is ignored.
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// Do not ask the CA again before this (its `Retry-After`).
    #[serde(with = "time::serde::rfc3339")]
    pub next_check: OffsetDateTime,
}

impl CertState {
    pub fn failures(&self) -> FailureHistory {
        FailureHistory {
            consecutive_failures: self.consecutive_failures,
            last_failure: self.last_failure,
            subject: self.failed_for.clone(),
        }
    }

    /// Take what `fresh` (read again under the lease) recorded of the attempts: its failures,
    /// last error and success. Holding the lease, any attempt it left open is over (its failure
    /// is already counted), so none is open here; whether one was is returned. The ARI cache
    /// stays this one's.
    pub fn take_outcomes(&mut self, fresh: CertState) -> bool {
        self.consecutive_failures = fresh.consecutive_failures;
        self.last_failure = fresh.last_failure;
        self.last_error = fresh.last_error;
        self.last_success = fresh.last_success;
        self.failed_for = fresh.failed_for;
        self.attempt_open = false;
        fresh.attempt_open
    }

    /// The cached ARI window for `serial`, if any (fresh or not).
    pub fn ari_window(&self, serial: &str) -> Option<AriWindow> {
        self.ari
            .as_ref()
            .filter(|a| a.serial == serial)
            .map(|a| AriWindow {
                start: a.start,
                end: a.end,
            })
    }
}

/// Whether `a` records a later outcome than `b` (its last failure or success is later).
pub fn newer(a: &CertState, b: &CertState) -> bool {
    let latest = |s: &CertState| s.last_failure.max(s.last_success);
    latest(a) > latest(b)
}

pub async fn load(store: &SharedStore, name: &str) -> CertState {
    match read(store, name).await {
        Ok(st) => st,
        Err(e) => {
            tracing::warn!(error = %e, "continuing without the state object");
            CertState::default()
        }
    }
}

/// The state, or why it cannot be read (`status` shows that rather than "no error").
pub async fn read(store: &SharedStore, name: &str) -> Result<CertState, String> {
    let key = keys::state(name);
    match store.get(&key).await {
        Ok(Some(obj)) => serde_json::from_slice(&obj.data)
            .map_err(|e| format!("{}/{key}: unreadable state object: {e}", store.location())),
        Ok(None) => Ok(CertState::default()),
        Err(e) => Err(format!("cannot read the state object: {e}")),
    }
}

pub async fn save(store: &SharedStore, name: &str, state: &CertState) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(state).unwrap_or_default();
    store
        .put(
            &keys::state(name),
            &json,
            Precondition::None,
            Sensitivity::Public,
        )
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_later_outcome_is_newer() {
        let t = |s: i64| Some(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s));
        let failed = CertState {
            consecutive_failures: 2,
            last_failure: t(20),
            last_success: t(10),
            ..CertState::default()
        };
        let succeeded_before = CertState {
            last_success: t(10),
            ..CertState::default()
        };
        assert!(newer(&failed, &succeeded_before));
        assert!(!newer(&succeeded_before, &failed));
        assert!(!newer(&failed, &failed));
        // Nothing recorded is never newer than something.
        assert!(!newer(&CertState::default(), &succeeded_before));
    }
}
