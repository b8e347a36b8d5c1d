//! What the fake keeps: every stored resource, the recorded requests, and the behaviour a
//! test set (propagation delays, failures, what a renewal pass does).

use std::collections::BTreeMap;

use serde_json::Value;

/// The project number the fake's project has.
pub const PROJECT_NUMBER: &str = "123456789012";

/// One request as gcloud sent it.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// `compute`, `run`, … (the host's API, region prefix removed).
    pub api: String,
    pub method: String,
    /// Path without the API's version prefix, e.g. `projects/p/regions/r/addresses/x`.
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// The JSON body, or `Value::Null` (uploads and empty bodies).
    pub body: Value,
}

impl ApiRequest {
    /// Whether this request may change state: every write except the read-only custom
    /// methods gcloud POSTs (`getIamPolicy`, compute operation `wait`).
    pub fn is_mutation(&self) -> bool {
        match self.method.as_str() {
            "GET" | "HEAD" => false,
            _ => !(self.path.ends_with(":getIamPolicy") || self.path.ends_with("/wait")),
        }
    }

    pub fn line(&self) -> String {
        format!("{} {} {}", self.method, self.api, self.path)
    }
}

#[derive(Default)]
pub(super) struct State {
    /// (api, path) -> resource.
    pub(super) resources: BTreeMap<(String, String), Value>,
    pub(super) requests: Vec<ApiRequest>,
    /// Makes ids, generations and etags distinct.
    pub(super) counter: u64,
    /// Service accounts and log metrics created here that other services do not see yet:
    /// the next request that needs one fails, and it is visible from then on.
    pub(super) not_yet_visible: std::collections::BTreeSet<String>,
    /// No propagation delays (for tests about something else).
    pub(super) settled: bool,
    /// Storage object contents, by the object's resource path (`b/BUCKET/o/NAME`).
    pub(super) media: BTreeMap<String, Vec<u8>>,
    /// What a renewal pass (a run of the renewer job, or Scheduler's forced run of its
    /// trigger) does here.
    pub(super) renewals: Renewals,
    /// Builds end FAILURE.
    pub(super) builds_fail: bool,
    /// The next request matching (api, method, path suffix) fails once with this status.
    pub(super) fail_once: Vec<(String, String, String, u16)>,
}

/// What a renewal pass does in the fake: the real renewer cannot run against it (no ACME CA
/// here), so the fake does what a pass leaves behind where deploy looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Renewals {
    /// The pass issues a certificate for the job's configured names: `certs/NAME/current.json`
    /// in its bucket names them.
    #[default]
    Issue,
    /// The pass fails (a name does not validate): the execution fails, nothing changes.
    Fail,
    /// The pass runs but never gets to the certificate (Scheduler's trigger was accepted, the
    /// service never answers): nothing changes.
    Nothing,
}
