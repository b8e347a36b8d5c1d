//! From a request as gcloud sends it to the module that answers it: which API (by host),
//! which resource (by path), and whether the generic store or the API's own conventions apply.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::reply::{error, ok};
use super::state::{ApiRequest, State};
use super::{cloudbuild, compute, dns, iam, monitoring, renewals, resource, secretmanager};
use super::{serviceusage, storage};
use crate::percent::{percent_decode, query_map};

/// Host (`us-central1-run.fake`) -> API name (`run`).
fn api_of(host: &str) -> String {
    let name = host.split(':').next().unwrap_or(host);
    let name = name.strip_suffix(".fake").unwrap_or(name);
    let name = name.rsplit('-').next().unwrap_or(name);
    name.to_string()
}

/// Strip the API's version prefix from a URL path.
fn resource_path(api: &str, path: &str) -> String {
    let p = path.trim_start_matches('/');
    let prefixes: &[&str] = match api {
        "compute" => &["compute/v1/"],
        // Zones are v1, their IAM policies v2.
        "dns" => &["dns/v1/", "dns/v2/"],
        "storage" => &["upload/storage/v1/", "download/storage/v1/", "storage/v1/"],
        "run" => &[
            "apis/run.googleapis.com/v1/",
            "apis/serving.knative.dev/v1/",
            "v2/",
            "v1/",
        ],
        _ => &["v1/", "v2/", "v3/", "v1beta1/", "v1alpha1/"],
    };
    for prefix in prefixes {
        if let Some(rest) = p.strip_prefix(prefix) {
            return percent_decode(rest);
        }
    }
    percent_decode(p)
}

/// Serves one request: records it, fails it if a test asked for that, and answers it.
pub(super) async fn handle(state: Arc<Mutex<State>>, req: Request<Body>) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let host = uri
        .host()
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let api = api_of(&host);
    let headers_content_type = req
        .headers()
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let query = query_map(uri.query().unwrap_or(""));
    let upload = if uri.path().starts_with("/upload/") {
        let content_type = headers_content_type.clone();
        Some(storage::upload_parts(&content_type, &bytes))
    } else {
        None
    };
    let path = resource_path(&api, uri.path());
    let mut st = state.lock().expect("state lock");
    st.requests.push(ApiRequest {
        api: api.clone(),
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
    });
    if let Some(i) = st.fail_once.iter().position(|(a, m, suffix, _)| {
        *a == api && *m == method.as_str() && path.ends_with(suffix.as_str())
    }) {
        let (_, _, _, status) = st.fail_once.remove(i);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return error(
            status,
            "The service is currently unavailable (injected by the test).",
        );
    }
    respond(&mut st, &api, &method, &path, &query, body, upload)
}

fn respond(
    st: &mut State,
    api: &str,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: Value,
    upload: Option<(Value, Vec<u8>)>,
) -> Response {
    // Custom methods (`resource:verb`): IAM policies, and each API's own.
    if let Some((resource, verb)) = path.rsplit_once(':') {
        return custom_method(st, api, resource, verb, body);
    }
    if api == "storage" {
        if let Some(response) = storage::respond(st, method, path, query, &body, upload) {
            return response;
        }
    }
    if api == "compute" && *method == Method::POST {
        if let Some(response) = compute::verb(st, path, query, &body) {
            return response;
        }
    }
    if api == "iam" && (path.ends_with("/roles") || path.contains("/roles/")) {
        if let Some(response) = iam::custom_role(st, method, path, body.clone()) {
            return response;
        }
    }
    if api == "compute" && *method == Method::GET {
        if let Some((project, collection)) = path
            .strip_prefix("projects/")
            .and_then(|p| p.split_once("/aggregated/"))
        {
            return ok(compute::aggregated(st, project, collection));
        }
    }
    let key = (api.to_string(), path.to_string());
    match *method {
        Method::GET => {
            if let Some(v) = st.resources.get(&key) {
                return ok(v.clone());
            }
            if api == "dns" {
                if let Some(response) = dns::missing_zone(st, path) {
                    return response;
                }
            }
            if resource::is_collection(path) {
                if api == "serviceusage" {
                    return ok(serviceusage::enabled_services(st, path));
                }
                return ok(resource::list(st, api, path));
            }
            error(
                StatusCode::NOT_FOUND,
                &format!("{api}: {path} was not found"),
            )
        }
        Method::POST => {
            if api == "cloudbuild" {
                return cloudbuild::build(st, path, body);
            }
            if api == "monitoring" && path.ends_with("/alertPolicies") {
                if let Some(refused) = monitoring::refuse_new_policy(st, &body) {
                    return refused;
                }
            }
            resource::insert(st, api, path, query, body)
        }
        Method::PUT | Method::PATCH => {
            if api == "monitoring" && path.contains("/alertPolicies/") {
                if let Err(e) = monitoring::check_alert_policy(&body) {
                    return error(StatusCode::BAD_REQUEST, &e);
                }
            }
            resource::update(st, api, method, path, body)
        }
        Method::DELETE => {
            let Some(removed) = st.resources.remove(&key) else {
                return error(StatusCode::NOT_FOUND, &format!("{path} was not found"));
            };
            if api == "iam" && path.contains("/serviceAccounts/") {
                iam::account_deleted(st, path, &removed);
            }
            resource::remove_below(st, api, path);
            ok(resource::mutation_response(
                st,
                api,
                path,
                "delete",
                json!({}),
            ))
        }
        _ => error(StatusCode::BAD_REQUEST, "unsupported method"),
    }
}

/// `POST resource:verb`.
fn custom_method(st: &mut State, api: &str, resource: &str, verb: &str, body: Value) -> Response {
    match verb {
        "undelete" if api == "iam" => iam::undelete(st, api, resource),
        "getIamPolicy" | "setIamPolicy" if api == "dns" => {
            dns::zone_policy(st, resource, verb, &body)
        }
        "getIamPolicy" => iam::get_policy(st, api, resource),
        "setIamPolicy" => iam::set_policy(st, api, resource, &body),
        "batchEnable" => serviceusage::batch_enable(st, api, resource, &body),
        "addVersion" => secretmanager::add_version(st, api, resource, &body),
        "run" if api == "run" => renewals::execute_job(st, api, resource),
        "run" if api == "cloudscheduler" => renewals::run_trigger(st, api, resource),
        _ => error(
            StatusCode::BAD_REQUEST,
            &format!("{api}: custom method {verb} is not faked"),
        ),
    }
}
