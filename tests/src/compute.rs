//! A fake of the two Compute Engine v1 REST calls `renewer members` makes, for the local
//! cluster: `regionInstanceGroupManagers.listManagedInstances` and `instances.aggregatedList`.
//!
//! Compute Engine has no emulator. This serves those calls as the official
//! `google-cloud-compute-v1` client sends them (paths, `POST` for the first, `GET` with a
//! `filter` for the second) and answers in the API's JSON: camelCase fields, enum names,
//! instance URLs with their zone, aggregated items keyed `zones/<zone>` (empty zones carry a
//! `warning`, as the real API's do), and Google JSON errors. It refuses what the real API
//! refuses: an unknown group is `404 NOT_FOUND`; a filter outside the one form the agent uses
//! (`labels.KEY = "VALUE"`) is `400 INVALID_ARGUMENT` (the real grammar is larger, but a filter
//! the fake does not understand must not be ignored and answered with everything).
//!
//! Tests change the group ([`FakeCompute::add`], [`FakeCompute::set`], [`FakeCompute::remove`])
//! and the service itself ([`FakeCompute::set_mode`]: down with a status, or answering no
//! instance), and read what was asked ([`FakeCompute::requests`]).

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::server::{RecordedRequest, ServerTask};

/// The instance label `make deploy`'s template sets (`renewer::node::compute::GROUP_LABEL`).
pub const GROUP_LABEL: &str = "acme-edge-group";

/// One instance of the group, as the fake reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeInstance {
    pub name: String,
    pub zone: String,
    /// Internal address (`networkInterfaces[0].networkIP`).
    pub ip: String,
    /// `RUNNING`, `STAGING`, `STOPPING`, …
    pub status: String,
    /// The group's `currentAction`: `NONE`, `CREATING`, `DELETING`, …
    pub action: String,
    /// The autohealing health check's `detailedHealthState`: `HEALTHY`, `UNHEALTHY`, …
    pub health: String,
}

impl FakeInstance {
    /// A running, idle, healthy instance.
    pub fn healthy(name: &str, zone: &str, ip: &str) -> FakeInstance {
        FakeInstance {
            name: name.into(),
            zone: zone.into(),
            ip: ip.into(),
            status: "RUNNING".into(),
            action: "NONE".into(),
            health: "HEALTHY".into(),
        }
    }
}

/// How the fake service behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Answers from the group.
    #[default]
    Normal,
    /// Every call fails with this status (Google error JSON; 503 is `UNAVAILABLE`).
    Down(u16),
    /// The group answers with no instance at all (as during a faulty recreation).
    Empty,
}

#[derive(Debug)]
struct ComputeState {
    project: String,
    region: String,
    group: String,
    instances: Vec<FakeInstance>,
    mode: Mode,
    requests: Vec<RecordedRequest>,
}

/// The running fake. Stops when dropped.
#[derive(Debug)]
pub struct FakeCompute {
    state: Arc<Mutex<ComputeState>>,
    server: ServerTask,
}

impl FakeCompute {
    /// Serves the group `group` in `project`/`region`, with no instance yet.
    pub async fn start(project: &str, region: &str, group: &str) -> Result<FakeCompute> {
        let state = Arc::new(Mutex::new(ComputeState {
            project: project.into(),
            region: region.into(),
            group: group.into(),
            instances: Vec::new(),
            mode: Mode::Normal,
            requests: Vec::new(),
        }));
        let router = Router::new().fallback(handle).with_state(state.clone());
        let server = ServerTask::spawn(router).await?;
        Ok(FakeCompute { state, server })
    }

    fn lock(&self) -> MutexGuard<'_, ComputeState> {
        self.state.lock().unwrap()
    }

    /// `http://127.0.0.1:<port>`: `members.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    pub fn add(&self, instance: FakeInstance) {
        self.lock().instances.push(instance);
    }

    /// Change an instance in place (status, action, health).
    pub fn set(&self, name: &str, change: impl FnOnce(&mut FakeInstance)) {
        if let Some(i) = self.lock().instances.iter_mut().find(|i| i.name == name) {
            change(i);
        }
    }

    pub fn remove(&self, name: &str) {
        self.lock().instances.retain(|i| i.name != name);
    }

    pub fn instances(&self) -> Vec<FakeInstance> {
        self.lock().instances.clone()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }
}

fn error(status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    let code_name = match status {
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::BAD_REQUEST => "INVALID_ARGUMENT",
        StatusCode::FORBIDDEN => "PERMISSION_DENIED",
        StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        StatusCode::NOT_IMPLEMENTED => "UNIMPLEMENTED",
        _ => "INTERNAL",
    };
    // Compute Engine's errors carry the legacy `errors[]` list next to `status`.
    let body = json!({
        "error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": code_name,
        }
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| crate::percent::query_decode(v))
    })
}

async fn handle(
    State(state): State<Arc<Mutex<ComputeState>>>,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut s = state.lock().unwrap();
    s.requests
        .push(RecordedRequest::new(&method, &uri, version, &headers));
    if let Mode::Down(code) = s.mode {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return error(
            status,
            "backendError",
            "The service is currently unavailable.",
        );
    }
    let query = query.unwrap_or_default();
    let path = uri.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        (
            "POST",
            ["compute", "v1", "projects", project, "regions", region, "instanceGroupManagers", group, "listManagedInstances"],
        ) => {
            if *project != s.project || *region != s.region || *group != s.group {
                return error(
                    StatusCode::NOT_FOUND,
                    "notFound",
                    format!(
                        "The resource 'projects/{project}/regions/{region}/instanceGroupManagers/{group}' was not found"
                    ),
                );
            }
            let managed: Vec<Value> = if s.mode == Mode::Empty {
                Vec::new()
            } else {
                s.instances
                    .iter()
                    .map(|i| {
                        let url = format!(
                            "https://www.googleapis.com/compute/v1/projects/{}/zones/{}/instances/{}",
                            s.project, i.zone, i.name
                        );
                        json!({
                            "instance": url,
                            "name": i.name,
                            "id": "1234567890",
                            "instanceStatus": i.status,
                            "currentAction": i.action,
                            "instanceHealth": [{
                                "healthCheck": format!(
                                    "https://www.googleapis.com/compute/v1/projects/{}/regions/{}/healthChecks/{}-hc",
                                    s.project, s.region, s.group
                                ),
                                "detailedHealthState": i.health,
                            }],
                            "version": {"instanceTemplate": "projects/p/global/instanceTemplates/t"},
                        })
                    })
                    .collect()
            };
            let mut body = Map::new();
            // Like the real API, an empty list has no `managedInstances` key at all.
            if !managed.is_empty() {
                body.insert("managedInstances".into(), Value::Array(managed));
            }
            axum::Json(Value::Object(body)).into_response()
        }
        ("GET", ["compute", "v1", "projects", project, "aggregated", "instances"]) => {
            if *project != s.project {
                return error(
                    StatusCode::NOT_FOUND,
                    "notFound",
                    format!("The resource 'projects/{project}' was not found"),
                );
            }
            let filter = query_param(&query, "filter").unwrap_or_default();
            let wanted = if filter.is_empty() {
                None
            } else {
                match parse_label_filter(&filter) {
                    Some(kv) => Some(kv),
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid",
                            format!("Invalid value for field 'filter': '{filter}'. Invalid list filter expression."),
                        )
                    }
                }
            };
            let mut zones: Map<String, Value> = Map::new();
            let region = s.region.clone();
            for zone in ["b", "c", "d"].map(|z| format!("{region}-{z}")) {
                let instances: Vec<Value> = if s.mode == Mode::Empty {
                    Vec::new()
                } else {
                    s.instances
                        .iter()
                        .filter(|i| i.zone == zone)
                        .filter(|_| {
                            wanted
                                .as_ref()
                                .is_none_or(|(k, v)| k == GROUP_LABEL && *v == s.group)
                        })
                        .map(|i| {
                            json!({
                                "kind": "compute#instance",
                                "name": i.name,
                                "zone": format!("https://www.googleapis.com/compute/v1/projects/{}/zones/{zone}", s.project),
                                "status": i.status,
                                "labels": {GROUP_LABEL: s.group, "managed-by": "acme-edge"},
                                "networkInterfaces": [{"name": "nic0", "networkIP": i.ip}],
                            })
                        })
                        .collect()
                };
                let scoped = if instances.is_empty() {
                    json!({"warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": "There are no results for scope 'zones/{zone}' on this page.",
                        "data": [{"key": "scope", "value": format!("zones/{zone}")}],
                    }})
                } else {
                    json!({"instances": instances})
                };
                zones.insert(format!("zones/{zone}"), scoped);
            }
            axum::Json(json!({
                "kind": "compute#instanceAggregatedList",
                "id": format!("projects/{}/aggregated/instances", s.project),
                "items": zones,
            }))
            .into_response()
        }
        _ => error(
            StatusCode::NOT_IMPLEMENTED,
            "unimplemented",
            format!("the Compute Engine fake does not serve {method} {path}"),
        ),
    }
}

/// `labels.KEY = "VALUE"` (spaces around `=` optional, value quoted): the one filter form the
/// membership agent sends.
fn parse_label_filter(filter: &str) -> Option<(String, String)> {
    let rest = filter.trim().strip_prefix("labels.")?;
    let (key, value) = rest.split_once('=')?;
    let value = value.trim().strip_prefix('"')?.strip_suffix('"')?;
    let key = key.trim();
    let label_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    (label_ok(key) && label_ok(value)).then(|| (key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::parse_label_filter;

    #[test]
    fn only_the_label_filter_form_is_understood() {
        assert_eq!(
            parse_label_filter("labels.acme-edge-group = \"nodes\""),
            Some(("acme-edge-group".into(), "nodes".into()))
        );
        assert_eq!(
            parse_label_filter("labels.a=\"b\""),
            Some(("a".into(), "b".into()))
        );
        for bad in [
            "name = n",
            "labels.a = b",
            "labels.A = \"b\"",
            "(labels.a = \"b\")",
        ] {
            assert_eq!(parse_label_filter(bad), None, "{bad}");
        }
    }
}
