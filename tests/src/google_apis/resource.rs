//! The generic resource store under every API: resources live at their path, a collection
//! lists what is right below it, and each change is answered the way its API answers one.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::iam::iam_key;
use super::reply::{error, ok};
use super::state::State;

/// Whether a path names a collection: resource paths alternate collection/id, and compute's
/// `global` is a scope, not a collection.
pub(super) fn is_collection(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let counted = segs.iter().filter(|s| **s != "global").count();
    counted % 2 == 1
}

/// What each API returns for a change: compute wraps it in an operation, some APIs in a
/// long-running operation, the rest return the resource itself.
pub(super) fn mutation_response(
    st: &mut State,
    api: &str,
    path: &str,
    kind: &str,
    resource: Value,
) -> Value {
    st.counter += 1;
    let n = st.counter;
    match api {
        "compute" => {
            let scope = scope_of(path);
            let op_path = format!("{scope}/operations/operation-{n}");
            let op = json!({
                "kind": "compute#operation",
                "id": n.to_string(),
                "name": format!("operation-{n}"),
                "operationType": kind,
                "status": "DONE",
                "progress": 100,
                "targetLink": format!("http://compute.fake/compute/v1/{path}"),
                "selfLink": format!("http://compute.fake/compute/v1/{op_path}"),
            });
            let mut op = op;
            let segs: Vec<&str> = scope.split('/').collect();
            if segs.len() == 4 {
                // Regional and zonal operations name their scope; gcloud polls with it.
                let field = if segs[2] == "regions" {
                    "region"
                } else {
                    "zone"
                };
                op[field] = json!(format!("http://compute.fake/compute/v1/{scope}"));
            }
            st.resources.insert(("compute".into(), op_path), op.clone());
            op
        }
        "artifactregistry" | "serviceusage" | "cloudbuild" => {
            let name = format!("operations/op-{n}");
            let mut op = json!({"name": name, "done": true, "response": resource});
            if api == "artifactregistry" {
                let parent = path.split("/repositories").next().unwrap_or(path);
                op["name"] = json!(format!("{parent}/operations/op-{n}"));
            }
            st.resources.insert(
                (api.into(), op["name"].as_str().unwrap_or("").into()),
                op.clone(),
            );
            op
        }
        _ => resource,
    }
}

/// `projects/p/regions/r` of a compute path (or zones/…, or global).
fn scope_of(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').collect();
    if segs.len() >= 4 && (segs[2] == "regions" || segs[2] == "zones") {
        segs[..4].join("/")
    } else if segs.len() >= 2 {
        format!("{}/global", segs[..2].join("/"))
    } else {
        path.to_string()
    }
}

/// Fill in the fields the real service adds, so gcloud's output and follow-up calls work.
pub(super) fn decorate(api: &str, path: &str, v: &mut Value, counter: &mut u64) {
    *counter += 1;
    let id = *counter;
    let short = path.rsplit('/').next().unwrap_or(path).to_string();
    let Some(obj) = v.as_object_mut() else { return };
    match api {
        "compute" => {
            obj.entry("name").or_insert(json!(short));
            obj.insert("id".into(), json!(id.to_string()));
            obj.insert(
                "selfLink".into(),
                json!(format!("http://compute.fake/compute/v1/{path}")),
            );
            obj.entry("creationTimestamp")
                .or_insert(json!("2026-11-22T00:00:00.000-00:00"));
            if path.contains("/addresses/") {
                obj.entry("address").or_insert(json!("203.0.113.10"));
                obj.entry("status").or_insert(json!("RESERVED"));
            }
            if path.contains("/instanceGroupManagers/") {
                let scope = scope_of(path);
                obj.entry("instanceGroup").or_insert(json!(format!(
                    "http://compute.fake/compute/v1/{scope}/instanceGroups/{short}"
                )));
                obj.entry("status").or_insert(json!({"isStable": true}));
            }
        }
        "storage" => {
            obj.entry("name").or_insert(json!(short));
            obj.entry("id").or_insert(json!(short));
            obj.entry("kind").or_insert(json!("storage#bucket"));
            obj.entry("metageneration").or_insert(json!("1"));
            obj.entry("timeCreated")
                .or_insert(json!("2026-11-22T00:00:00.000Z"));
        }
        "run" => {
            // Knative-style v1 resources: gcloud waits for Ready=True.
            let meta = obj.entry("metadata").or_insert(json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.entry("name").or_insert(json!(short));
                let generation = m.get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
                m.insert("generation".into(), json!(generation));
                m.entry("uid").or_insert(json!(format!("uid-{id}")));
                m.entry("creationTimestamp")
                    .or_insert(json!("2026-11-22T00:00:00Z"));
            }
            let generation = obj["metadata"]["generation"].clone();
            let mut status = json!({
                "observedGeneration": generation,
                "conditions": [{"type": "Ready", "status": "True"}],
            });
            if path.contains("/services/") {
                status["url"] = json!(format!("https://{short}-abc123-ew.a.run.app"));
                status["address"] = json!({"url": format!("https://{short}-abc123-ew.a.run.app")});
                status["latestReadyRevisionName"] = json!(format!("{short}-00001-abc"));
                status["latestCreatedRevisionName"] = json!(format!("{short}-00001-abc"));
                status["conditions"] = json!([
                    {"type": "Ready", "status": "True"},
                    {"type": "ConfigurationsReady", "status": "True"},
                    {"type": "RoutesReady", "status": "True"}
                ]);
                status["traffic"] = json!([{"revisionName": format!("{short}-00001-abc"), "percent": 100, "latestRevision": true}]);
            }
            obj.insert("status".into(), status);
        }
        "iam" => {
            if let Some(email) = path.rsplit('/').next() {
                obj.insert("email".into(), json!(email));
                obj.insert("name".into(), json!(path));
                obj.entry("uniqueId")
                    .or_insert(json!(format!("10{id:016}")));
            }
        }
        "logging" | "cloudresourcemanager" | "dns" => {
            obj.entry("name").or_insert(json!(short));
        }
        _ => {
            obj.insert("name".into(), json!(path));
        }
    }
}

/// The id a create request names, and where gcloud expects it stored.
fn created_path(
    api: &str,
    collection: &str,
    query: &BTreeMap<String, String>,
    body: &Value,
) -> Option<String> {
    let from_query = query
        .iter()
        .find(|(k, _)| k.ends_with("Id") && *k != "requestId" && *k != "validateOnly")
        .map(|(_, v)| v.clone());
    let id = match api {
        "iam" => body["accountId"].as_str().map(|a| {
            let project = collection.split('/').nth(1).unwrap_or("-");
            format!("{a}@{project}.iam.gserviceaccount.com")
        }),
        "run" => body["metadata"]["name"]
            .as_str()
            .map(str::to_string)
            .or(from_query),
        _ => from_query.or_else(|| {
            body["name"]
                .as_str()
                .map(|n| n.rsplit('/').next().unwrap_or(n).to_string())
        }),
    }?;
    Some(match api {
        // Service accounts are read back as projects/-/serviceAccounts/EMAIL.
        "iam" => format!("projects/-/serviceAccounts/{id}"),
        _ => format!("{collection}/{id}"),
    })
}

pub(super) fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

fn create(st: &mut State, api: &str, path: &str, mut body: Value) -> Response {
    if body.is_null() {
        body = json!({});
    }
    if !st.settled {
        if let Some(email) = path.strip_prefix("projects/-/serviceAccounts/") {
            st.not_yet_visible.insert(format!("serviceAccount:{email}"));
        }
        if api == "logging" && path.contains("/metrics/") {
            let name = path.rsplit('/').next().unwrap_or_default();
            st.not_yet_visible
                .insert(format!("logging.googleapis.com/user/{name}"));
        }
    }
    let mut counter = st.counter;
    decorate(api, path, &mut body, &mut counter);
    st.counter = counter;
    st.resources.insert((api.into(), path.into()), body.clone());
    ok(mutation_response(st, api, path, "insert", body))
}

/// The resources right below collection `path` (not their IAM policies), as a list answer:
/// under `items` and under the collection's name.
pub(super) fn list(st: &State, api: &str, path: &str) -> Value {
    let prefix = format!("{path}/");
    let items: Vec<Value> = st
        .resources
        .iter()
        .filter(|((a, p), _)| {
            a == api
                && p.starts_with(&prefix)
                && !p[prefix.len()..].contains('/')
                && !p.ends_with("#iam")
        })
        .map(|(_, v)| v.clone())
        .collect();
    let field = path.rsplit('/').next().unwrap_or("items").to_string();
    let mut list = Map::new();
    list.insert("items".into(), json!(items));
    list.insert(field.clone(), json!(items));
    // IAM names its list differently from the collection.
    if field == "serviceAccounts" {
        list.insert("accounts".into(), json!(items));
    }
    Value::Object(list)
}

/// A POST to collection `path`: the resource is created under the id the request names, or
/// under one the service picks when it names none.
pub(super) fn insert(
    st: &mut State,
    api: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    body: Value,
) -> Response {
    let Some(new_path) = created_path(api, path, query, &body) else {
        // No id given: the service names it (alert policies, channels).
        st.counter += 1;
        let new_path = format!("{path}/{}", st.counter);
        return create(st, api, &new_path, body);
    };
    if st
        .resources
        .contains_key(&(api.to_string(), new_path.clone()))
    {
        return error(StatusCode::CONFLICT, &format!("{new_path} already exists"));
    }
    create(st, api, &new_path, body)
}

/// A PUT (replace) or PATCH (merge) of the resource at `path`.
pub(super) fn update(
    st: &mut State,
    api: &str,
    method: &Method,
    path: &str,
    body: Value,
) -> Response {
    let key = (api.to_string(), path.to_string());
    let Some(stored) = st.resources.get(&key).cloned() else {
        return error(StatusCode::NOT_FOUND, &format!("{path} was not found"));
    };
    let mut updated = if *method == Method::PUT {
        body
    } else {
        let mut s = stored.clone();
        merge(&mut s, &body);
        s
    };
    if api == "run" {
        updated["metadata"]["generation"] = stored["metadata"]["generation"].clone();
    }
    let mut counter = st.counter;
    decorate(api, path, &mut updated, &mut counter);
    st.counter = counter;
    st.resources.insert(key, updated.clone());
    ok(mutation_response(st, api, path, "update", updated))
}

/// After the resource at `path` is deleted: what was below it, and its IAM policy, go too.
pub(super) fn remove_below(st: &mut State, api: &str, path: &str) {
    let prefix = format!("{path}/");
    st.resources
        .retain(|(a, p), _| !(a == api && (p.starts_with(&prefix) || *p == iam_key(path))));
}
