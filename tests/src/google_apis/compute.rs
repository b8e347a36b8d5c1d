//! Compute Engine's own ways: verbs POSTed to a resource (`resize`, an operation's `wait`)
//! and aggregated lists. (Its operations are in the generic store's answers.)

use std::collections::BTreeMap;

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::reply::ok;
use super::resource::{merge, mutation_response};
use super::state::State;

/// A POST right below an existing resource (`.../instanceGroupManagers/x/resize`, operation
/// `wait`); `None` when there is no such resource.
pub(super) fn verb(
    st: &mut State,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &Value,
) -> Option<Response> {
    let (resource, verb) = path.rsplit_once('/').unwrap_or((path, ""));
    let stored = st
        .resources
        .get_mut(&("compute".to_string(), resource.to_string()))?;
    match verb {
        "resize" => {
            if let Some(size) = query.get("size").and_then(|s| s.parse::<i64>().ok()) {
                stored["targetSize"] = json!(size);
            }
        }
        "wait" => {}
        _ => merge(stored, body),
    }
    let resource = resource.to_string();
    let stored = stored.clone();
    if verb == "wait" {
        return Some(ok(stored));
    }
    Some(ok(mutation_response(
        st, "compute", &resource, verb, stored,
    )))
}

/// Compute's aggregated list: every scope's resources of one collection, keyed by scope.
pub(super) fn aggregated(st: &State, project: &str, collection: &str) -> Value {
    let mut items = Map::new();
    for ((api, path), value) in &st.resources {
        if api != "compute" {
            continue;
        }
        let segs: Vec<&str> = path.split('/').collect();
        let (scope, rest) = match segs.as_slice() {
            ["projects", p, "global", c, _] if *p == project => ("global".to_string(), *c),
            ["projects", p, kind @ ("regions" | "zones"), where_, c, _] if *p == project => {
                (format!("{kind}/{where_}"), *c)
            }
            _ => continue,
        };
        if rest != collection {
            continue;
        }
        let entry = items
            .entry(scope)
            .or_insert_with(|| json!({ collection: [] }));
        if let Some(list) = entry[collection].as_array_mut() {
            list.push(value.clone());
        }
    }
    json!({ "items": items })
}
