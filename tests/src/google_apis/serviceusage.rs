//! Service Usage: enabling APIs, and the list of enabled ones.

use axum::response::Response;
use serde_json::{json, Value};

use super::reply::ok;
use super::resource::mutation_response;
use super::state::{State, PROJECT_NUMBER};

/// `batchEnable`: each service in `serviceIds` is enabled in the project.
pub(super) fn batch_enable(st: &mut State, api: &str, resource: &str, body: &Value) -> Response {
    let mut services = Vec::new();
    for id in body["serviceIds"].as_array().cloned().unwrap_or_default() {
        let id = id.as_str().unwrap_or_default().to_string();
        let service = json!({
            "name": format!("projects/{PROJECT_NUMBER}/services/{id}"),
            "config": {"name": id},
            "state": "ENABLED",
        });
        st.resources.insert(
            (api.into(), format!("{resource}/services/{id}")),
            service.clone(),
        );
        services.push(service);
    }
    let response = json!({"@type": "type.googleapis.com/google.api.serviceusage.v1.BatchEnableServicesResponse", "services": services});
    ok(mutation_response(
        st,
        api,
        resource,
        "batchEnable",
        response,
    ))
}

/// The enabled services of the project at `path`.
pub(super) fn enabled_services(st: &State, path: &str) -> Value {
    let services: Vec<Value> = st
        .resources
        .iter()
        .filter(|((a, p), _)| a == "serviceusage" && p.starts_with(&format!("{path}/")))
        .map(|(_, v)| v.clone())
        .collect();
    json!({"services": services})
}
