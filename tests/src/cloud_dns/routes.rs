//! A request's way in: recorded, sent to the call its method and path name, and the applied
//! change mirrored into challtestsrv before the answer goes out.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{Method, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use super::mirror::{self, MirrorOp};
use super::model::{fqdn, Zone};
use super::reply::{ok, ApiError};
use super::{now_rfc3339, CloudDnsRequest, DnsState, Shared};
use crate::percent::{percent_decode, query_map};

pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    RawQuery(raw_query): RawQuery,
    body: Bytes,
) -> Response {
    // One call at a time, mirroring included, so challtestsrv sees changes in their order.
    let _serial = shared.serial.lock().await;
    let (response, ops, port) = {
        let mut st = shared.state.lock().unwrap();
        let text = String::from_utf8_lossy(&body).into_owned();
        let parsed = if body.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice::<Value>(&body)
        };
        st.requests.push(CloudDnsRequest {
            method: method.to_string(),
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string()),
            body: parsed.as_ref().cloned().unwrap_or(Value::String(text)),
        });
        let mut ops = Vec::new();
        let result = match parsed {
            Err(e) => Err(ApiError::new(
                400,
                "parseError",
                format!("Invalid JSON payload received. {e}"),
            )),
            Ok(body) => {
                let query = query_map(raw_query.as_deref().unwrap_or_default());
                route(&mut st, &method, uri.path(), &query, &body, &mut ops)
            }
        };
        let response = match result {
            Ok(value) => ok(&value),
            Err(e) => e.response(),
        };
        (response, ops, st.challtestsrv)
    };
    if let (Some(port), false) = (port, ops.is_empty()) {
        let errors = mirror::run(port, ops).await;
        if !errors.is_empty() {
            eprintln!("fake Cloud DNS: mirroring into challtestsrv failed: {errors:?}");
            shared.state.lock().unwrap().mirror_errors.extend(errors);
        }
    }
    response
}

fn route(
    st: &mut DnsState,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &Value,
    ops: &mut Vec<MirrorOp>,
) -> Result<Value, ApiError> {
    let unimplemented = || {
        ApiError::new(
            501,
            "notImplemented",
            format!("the Cloud DNS fake does not serve {method} {path}"),
        )
    };
    let Some(rest) = path.strip_prefix("/dns/v1/projects/") else {
        return Err(unimplemented());
    };
    let segments: Vec<String> = rest.split('/').map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let Some((project, rest)) = segments.split_first() else {
        return Err(unimplemented());
    };
    if *project != st.project {
        return Err(ApiError::not_found(format!(
            "The 'parameters.project' resource named '{project}' does not exist."
        )));
    }
    match (method.as_str(), rest) {
        ("GET", ["managedZones"]) => Ok(list_zones(st, query)),
        ("GET", ["managedZones", zone]) => Ok(st.zone(zone)?.to_json()),
        ("GET", ["managedZones", zone, "rrsets"]) => list_rrsets(st.zone(zone)?, query),
        ("POST", ["managedZones", zone, "changes"]) => create_change(st, zone, body, ops),
        ("GET", ["managedZones", zone, "changes", id]) => get_change(st, zone, id, ops),
        _ => Err(unimplemented()),
    }
}

/// `managedZones.list`, optionally only the zone whose DNS name is `dnsName`.
fn list_zones(st: &DnsState, query: &BTreeMap<String, String>) -> Value {
    let wanted = query.get("dnsName").map(|n| fqdn(n));
    let zones: Vec<Value> = st
        .zones
        .iter()
        .filter(|z| wanted.as_ref().is_none_or(|n| &z.dns_name == n))
        .map(Zone::to_json)
        .collect();
    let mut v = json!({ "kind": "dns#managedZonesListResponse" });
    if !zones.is_empty() {
        v["managedZones"] = zones.into();
    }
    v
}

/// `resourceRecordSets.list`; `type` needs `name`, and `name` must be absolute (trailing dot).
/// No paging: every match in one answer.
fn list_rrsets(zone: &Zone, query: &BTreeMap<String, String>) -> Result<Value, ApiError> {
    let name = query.get("name").map(|n| n.to_ascii_lowercase());
    let rtype = query.get("type");
    if let Some(n) = &name {
        if !n.ends_with('.') {
            return Err(ApiError::invalid(format!(
                "Invalid value for 'parameters.name': '{n}'"
            )));
        }
    }
    if rtype.is_some() && name.is_none() {
        return Err(ApiError::required("parameters.name"));
    }
    let rrsets: Vec<Value> = zone
        .list_rrsets(name.as_deref(), rtype.map(String::as_str))
        .into_iter()
        .map(|r| r.to_json())
        .collect();
    let mut v = json!({ "kind": "dns#resourceRecordSetsListResponse" });
    if !rrsets.is_empty() {
        v["rrsets"] = rrsets.into();
    }
    Ok(v)
}

fn create_change(
    st: &mut DnsState,
    zone: &str,
    body: &Value,
    ops: &mut Vec<MirrorOp>,
) -> Result<Value, ApiError> {
    if st.deny_changes {
        return Err(ApiError::new(
            403,
            "forbidden",
            format!(
                "Forbidden: the caller does not have permission dns.changes.create on managed zone '{zone}'"
            ),
        ));
    }
    if st.unavailable_changes {
        return Err(ApiError::new(
            503,
            "backendError",
            "The service is currently unavailable.",
        ));
    }
    let pending = st.pending_changes;
    let now = now_rfc3339();
    let change = st.zone_mut(zone)?.apply(body, pending, &now)?.clone();
    if !pending {
        ops.extend(st.mirror_names(&change.txt_names()));
    }
    Ok(change.to_json())
}

/// `changes.get`; a pending change is done from this call on (and mirrored now).
fn get_change(
    st: &mut DnsState,
    zone: &str,
    id: &str,
    ops: &mut Vec<MirrorOp>,
) -> Result<Value, ApiError> {
    let change = st
        .zone_mut(zone)?
        .changes
        .iter_mut()
        .find(|c| c.id == id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "The 'parameters.changeId' resource named '{id}' does not exist."
            ))
        })?;
    let was_pending = std::mem::replace(&mut change.pending, false);
    let change = change.clone();
    if was_pending {
        ops.extend(st.mirror_names(&change.txt_names()));
    }
    Ok(change.to_json())
}
