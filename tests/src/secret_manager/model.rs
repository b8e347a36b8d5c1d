//! What the fake keeps: secrets and their versions, and how they read in the API's JSON.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::server::RecordedRequest;

/// The project number names in answers carry (the real service answers with numbers).
pub const PROJECT_NUMBER: &str = "123456789012";

/// The state of a secret version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    Enabled,
    Disabled,
    Destroyed,
}

impl VersionState {
    pub(super) fn name(self) -> &'static str {
        match self {
            VersionState::Enabled => "ENABLED",
            VersionState::Disabled => "DISABLED",
            VersionState::Destroyed => "DESTROYED",
        }
    }
    pub(super) fn number(self) -> i32 {
        match self {
            VersionState::Enabled => 1,
            VersionState::Disabled => 2,
            VersionState::Destroyed => 3,
        }
    }
}

#[derive(Debug)]
pub(super) struct SmState {
    pub(super) project: String,
    pub(super) secrets: BTreeMap<String, FakeSecret>,
    pub(super) requests: Vec<RecordedRequest>,
    pub(super) fail_next: usize,
    /// `(suffix, n)`: the next `n` requests whose `METHOD /path` ends with `suffix` fail.
    pub(super) fail_matching: Option<(String, usize)>,
    pub(super) page_size: usize,
    /// Makes every etag distinct.
    pub(super) counter: u64,
}

#[derive(Debug, Clone)]
pub(super) struct FakeSecret {
    pub(super) labels: BTreeMap<String, String>,
    pub(super) create_time: String,
    pub(super) etag: String,
    pub(super) versions: Vec<FakeVersion>,
}

#[derive(Debug, Clone)]
pub(super) struct FakeVersion {
    pub(super) number: u64,
    pub(super) state: VersionState,
    pub(super) data: Vec<u8>,
    pub(super) client_checksum: bool,
    pub(super) create_time: String,
    pub(super) etag: String,
}

impl SmState {
    pub(super) fn next_etag(&mut self) -> String {
        self.counter += 1;
        format!("\"e{}\"", self.counter)
    }

    pub(super) fn secret_name(&self, id: &str) -> String {
        format!("projects/{PROJECT_NUMBER}/secrets/{id}")
    }

    pub(super) fn secret_json(&self, id: &str, s: &FakeSecret) -> Value {
        json!({
            "name": self.secret_name(id),
            "replication": {"automatic": {}},
            "createTime": s.create_time,
            "labels": s.labels,
            "etag": s.etag,
        })
    }

    pub(super) fn version_json(&self, id: &str, v: &FakeVersion, ints: bool) -> Value {
        json!({
            "name": format!("{}/versions/{}", self.secret_name(id), v.number),
            "createTime": v.create_time,
            "state": if ints { json!(v.state.number()) } else { json!(v.state.name()) },
            "replicationStatus": {"automatic": {}},
            "etag": v.etag,
            "clientSpecifiedPayloadChecksum": v.client_checksum,
        })
    }
}

pub(super) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
