//! A fake of the Secret Manager v1 REST API, in memory, for the renewer's Secret Manager mirror.
//!
//! Google ships no Secret Manager emulator, so this serves exactly the REST calls the official
//! `google-cloud-secretmanager-v1` client makes (paths and query parameters as its generated
//! transport builds them), with the wire details of the real service:
//!
//! * JSON in camelCase; `payload.data` base64; `dataCrc32c` an int64 as a string (checked on
//!   `addVersion`, returned on `access`); `createTime` RFC 3339;
//! * enums as numbers when the request asks for `$alt=json;enum-encoding=int` (the Rust client
//!   always does), as names otherwise;
//! * resource names in answers carry the project *number* ([`PROJECT_NUMBER`]), like the real
//!   service; requests may use the project id or the number;
//! * `versions/latest` is the most recently created version whatever its state, and accessing
//!   a version that is not enabled is `FAILED_PRECONDITION` (so a client that expects `latest`
//!   to skip disabled versions is caught);
//! * errors are Google JSON errors (`{"error":{"code":404,"message":…,"status":"NOT_FOUND"}}`);
//!   a route the fake does not serve answers `501 UNIMPLEMENTED`, so an unexpected call is
//!   visible instead of looking like a missing secret.
//!
//! Every request is recorded ([`FakeSecretManager::requests`], [`FakeSecretManager::calls`]) so
//! tests can assert which calls were made; [`FakeSecretManager::fail_next`] makes the next
//! requests fail with `503 UNAVAILABLE`. The server stops when the value is dropped.
//!
//! Inside: `model` (secrets and versions, and how they read in JSON), `routes` (recording,
//! injected failures, and which call a request is), `secrets` and `versions` (the calls), and
//! `reply` (answers and Google's errors).

mod model;
mod reply;
mod routes;
mod secrets;
mod versions;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;
use axum::Router;

use crate::server::{RecordedRequest, ServerTask};
use model::{now_rfc3339, FakeSecret, FakeVersion, SmState};

pub use model::{VersionState, PROJECT_NUMBER};

/// Default page size of `ListSecretVersions` when the request asks for none. Small on purpose,
/// so tests with a handful of versions exercise pagination.
pub const DEFAULT_PAGE_SIZE: usize = 2;

#[derive(Debug)]
pub struct FakeSecretManager {
    state: Arc<Mutex<SmState>>,
    server: ServerTask,
}

impl FakeSecretManager {
    /// Serves project `project` (its id; [`PROJECT_NUMBER`] is accepted as well).
    pub async fn start(project: &str) -> Result<FakeSecretManager> {
        let state = Arc::new(Mutex::new(SmState {
            project: project.to_string(),
            secrets: BTreeMap::new(),
            requests: Vec::new(),
            fail_next: 0,
            fail_matching: None,
            page_size: DEFAULT_PAGE_SIZE,
            counter: 0,
        }));
        let router = Router::new()
            .fallback(routes::handle)
            .with_state(state.clone());
        let server = ServerTask::spawn(router).await?;
        Ok(FakeSecretManager { state, server })
    }

    fn lock(&self) -> MutexGuard<'_, SmState> {
        self.state.lock().unwrap()
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `http://127.0.0.1:<port>`, for `secret_manager.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Every version of a secret, oldest first: number, state, payload. Empty when the secret
    /// does not exist.
    pub fn versions(&self, secret_id: &str) -> Vec<(u64, VersionState, Vec<u8>)> {
        self.lock()
            .secrets
            .get(secret_id)
            .map(|s| {
                s.versions
                    .iter()
                    .map(|v| (v.number, v.state, v.data.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// For every version, oldest first: whether the client sent a payload checksum
    /// (`clientSpecifiedPayloadChecksum`, which the fake verified).
    pub fn checksums_sent(&self, secret_id: &str) -> Vec<bool> {
        self.lock()
            .secrets
            .get(secret_id)
            .map(|s| s.versions.iter().map(|v| v.client_checksum).collect())
            .unwrap_or_default()
    }

    /// Whether the secret exists.
    pub fn has_secret(&self, secret_id: &str) -> bool {
        self.lock().secrets.contains_key(secret_id)
    }

    /// The secret's labels, if it exists.
    pub fn labels(&self, secret_id: &str) -> Option<BTreeMap<String, String>> {
        self.lock().secrets.get(secret_id).map(|s| s.labels.clone())
    }

    /// Adds a version directly (creating the secret if needed), bypassing the API: e.g. a
    /// corrupt payload, or a version written by another tool. Returns its number.
    pub fn add_version(&self, secret_id: &str, data: &[u8]) -> u64 {
        let mut st = self.lock();
        let now = now_rfc3339();
        let etag = st.next_etag();
        let secret = st
            .secrets
            .entry(secret_id.to_string())
            .or_insert_with(|| FakeSecret {
                labels: BTreeMap::new(),
                create_time: now.clone(),
                etag,
                versions: Vec::new(),
            });
        let number = secret.versions.last().map_or(1, |v| v.number + 1);
        secret.versions.push(FakeVersion {
            number,
            state: VersionState::Enabled,
            data: data.to_vec(),
            client_checksum: false,
            create_time: now,
            etag: format!("\"v{number}\""),
        });
        number
    }

    /// Sets a version's state directly (an operator disabling a bad version, say).
    pub fn set_state(&self, secret_id: &str, version: u64, state: VersionState) {
        let mut st = self.lock();
        let v = st
            .secrets
            .get_mut(secret_id)
            .and_then(|s| s.versions.iter_mut().find(|v| v.number == version))
            .unwrap_or_else(|| panic!("no version {version} of secret {secret_id}"));
        v.state = state;
    }

    /// The next `n` requests (whatever they are) fail with `503 UNAVAILABLE`; 0 clears it.
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// The next `n` requests whose `METHOD /path` (no query) ends with `suffix` fail with
    /// `503 UNAVAILABLE`, e.g. `(":addVersion", 1)`; other requests are served.
    pub fn fail_next_matching(&self, suffix: &str, n: usize) {
        self.lock().fail_matching = Some((suffix.to_string(), n));
    }

    /// Page size of `ListSecretVersions` when the request sets none ([`DEFAULT_PAGE_SIZE`]).
    pub fn set_page_size(&self, n: usize) {
        self.lock().page_size = n.max(1);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Every request so far as `METHOD /path` (query string removed, `%xx` kept as sent).
    pub fn calls(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .map(|r| {
                let path = r.path.split('?').next().unwrap_or_default();
                format!("{} {path}", r.method)
            })
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }
}
