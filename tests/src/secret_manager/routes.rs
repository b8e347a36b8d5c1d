//! A request's way in: it is recorded, failed if a test asked for that, and sent to the call
//! its method and path name.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::Response;
use serde_json::Value;

use super::model::{SmState, VersionState, PROJECT_NUMBER};
use super::reply::{error, invalid, unimplemented};
use super::secrets::{create_secret, get_secret, update_secret};
use super::versions::{access_version, add_version, get_version, list_versions, set_version_state};
use crate::percent::query_map;
use crate::server::RecordedRequest;

pub(super) async fn handle(
    State(state): State<Arc<Mutex<SmState>>>,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    body: Bytes,
) -> Response {
    let mut st = state.lock().unwrap();
    st.requests
        .push(RecordedRequest::new(&method, &uri, version, &headers));
    let call = format!("{method} {}", uri.path());
    let matched = match &mut st.fail_matching {
        Some((suffix, n)) if *n > 0 && call.ends_with(suffix.as_str()) => {
            *n -= 1;
            true
        }
        _ => false,
    };
    if matched || st.fail_next > 0 {
        if !matched {
            st.fail_next -= 1;
        }
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The service is currently unavailable.",
        );
    }
    let query = query_map(raw_query.as_deref().unwrap_or_default());
    let ints = query
        .get("$alt")
        .is_some_and(|alt| alt.split(';').any(|p| p == "enum-encoding=int"));
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return invalid(format!("Invalid JSON payload received. {e}")),
        }
    };

    let path = uri.path();
    let Some(rest) = path.strip_prefix("/v1/projects/") else {
        return unimplemented(&method, path);
    };
    let (project, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if project != st.project && project != PROJECT_NUMBER {
        return error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            format!("Permission denied on resource project {project}."),
        );
    }

    // secrets | secrets/{s} | secrets/{s}:verb | secrets/{s}/versions | secrets/{s}/versions/{v}[:verb]
    let Some(rest) = rest.strip_prefix("secrets") else {
        return unimplemented(&method, path);
    };
    if rest.is_empty() {
        return match method {
            Method::POST => create_secret(&mut st, &query, &body),
            _ => unimplemented(&method, path),
        };
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return unimplemented(&method, path);
    };
    let (secret_part, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let (secret_id, secret_verb) = secret_part
        .split_once(':')
        .map_or((secret_part, None), |(s, v)| (s, Some(v)));
    let secret_id = secret_id.to_string();

    match (tail, secret_verb) {
        ("", None) => match method {
            Method::GET => get_secret(&st, &secret_id),
            Method::PATCH => update_secret(&mut st, &secret_id, &query, &body),
            _ => unimplemented(&method, path),
        },
        ("", Some("addVersion")) if method == Method::POST => {
            add_version(&mut st, &secret_id, &body, ints)
        }
        ("versions", None) if method == Method::GET => list_versions(&st, &secret_id, &query, ints),
        (tail, None) if tail.starts_with("versions/") => {
            let v = &tail["versions/".len()..];
            let (v, verb) = v
                .split_once(':')
                .map_or((v, None), |(v, verb)| (v, Some(verb)));
            match (verb, &method) {
                (None, &Method::GET) => get_version(&st, &secret_id, v, ints),
                (Some("access"), &Method::GET) => access_version(&st, &secret_id, v),
                (Some("disable"), &Method::POST) => {
                    set_version_state(&mut st, &secret_id, v, VersionState::Disabled, ints)
                }
                (Some("enable"), &Method::POST) => {
                    set_version_state(&mut st, &secret_id, v, VersionState::Enabled, ints)
                }
                _ => unimplemented(&method, path),
            }
        }
        _ => unimplemented(&method, path),
    }
}
