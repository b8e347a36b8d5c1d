//! `certs/<name>/state.json`: what the last attempts did. Advisory: it feeds `status` (last
//! error), the failure backoff and the ARI cache, but serving never depends on it, and a
//! missing or unreadable state is treated as empty (with a warning), never as a failure.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::policy::{AriWindow, FailureHistory};
use crate::store::{keys, Precondition, Sensitivity, SharedStore, StoreError};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertState {
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_failure: Option<OffsetDateTime>,
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
        }
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

pub async fn load(store: &SharedStore, name: &str) -> CertState {
    let key = keys::state(name);
    match store.get(&key).await {
        Ok(Some(obj)) => serde_json::from_slice(&obj.data).unwrap_or_else(|e| {
            tracing::warn!(object = %format!("{}/{key}", store.location()), error = %e, "ignoring an unreadable state object");
            CertState::default()
        }),
        Ok(None) => CertState::default(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the state object; continuing without it");
            CertState::default()
        }
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
