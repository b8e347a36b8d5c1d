//! The calls on a secret: create, get, update (labels).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};

use super::model::{now_rfc3339, FakeSecret, SmState};
use super::reply::{error, invalid, ok, secret_missing};

fn valid_secret_id(id: &str) -> bool {
    (1..=255).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_labels(labels: &Map<String, Value>) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (k, v) in labels {
        let Some(v) = v.as_str() else {
            return Err(format!("label {k:?} is not a string"));
        };
        let charset_ok = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        if k.is_empty()
            || k.len() > 63
            || !k.starts_with(|c: char| c.is_ascii_lowercase())
            || !charset_ok(k)
        {
            return Err(format!("invalid label key {k:?}"));
        }
        if v.len() > 63 || !charset_ok(v) {
            return Err(format!("invalid value {v:?} of label {k:?}"));
        }
        out.insert(k.clone(), v.to_string());
    }
    if out.len() > 64 {
        return Err("more than 64 labels".into());
    }
    Ok(out)
}

/// The `labels` of a request body (none: no labels), checked as the service checks them.
fn labels_of(body: &Value) -> Result<BTreeMap<String, String>, String> {
    match body.get("labels") {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => check_labels(m),
        Some(_) => Err("labels must be an object".into()),
    }
}

pub(super) fn create_secret(
    st: &mut SmState,
    query: &BTreeMap<String, String>,
    body: &Value,
) -> Response {
    let id = query
        .get("secretId")
        .map(String::as_str)
        .unwrap_or_default();
    if !valid_secret_id(id) {
        return invalid(format!("Invalid secret id {id:?}."));
    }
    let replication = body.get("replication");
    let has_policy =
        replication.is_some_and(|r| r.get("automatic").is_some() || r.get("userManaged").is_some());
    if !has_policy {
        return invalid("Secret.replication must be specified.");
    }
    let labels = match labels_of(body) {
        Ok(l) => l,
        Err(e) => return invalid(e),
    };
    if st.secrets.contains_key(id) {
        return error(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!("Secret [{}] already exists.", st.secret_name(id)),
        );
    }
    let secret = FakeSecret {
        labels,
        create_time: now_rfc3339(),
        etag: st.next_etag(),
        versions: Vec::new(),
    };
    let answer = st.secret_json(id, &secret);
    st.secrets.insert(id.to_string(), secret);
    ok(answer)
}

pub(super) fn get_secret(st: &SmState, id: &str) -> Response {
    match st.secrets.get(id) {
        Some(s) => ok(st.secret_json(id, s)),
        None => secret_missing(st, id),
    }
}

pub(super) fn update_secret(
    st: &mut SmState,
    id: &str,
    query: &BTreeMap<String, String>,
    body: &Value,
) -> Response {
    let mask = query.get("updateMask").cloned().unwrap_or_default();
    if mask.is_empty() {
        return invalid("update_mask must be specified.");
    }
    let mut labels = None;
    for field in mask.split(',') {
        match field {
            "labels" => {
                let parsed = match labels_of(body) {
                    Ok(l) => l,
                    Err(e) => return invalid(e),
                };
                labels = Some(parsed);
            }
            other => return invalid(format!("fake: update of {other:?} is not supported")),
        }
    }
    let etag = st.next_etag();
    let Some(secret) = st.secrets.get_mut(id) else {
        return secret_missing(st, id);
    };
    if let Some(l) = labels {
        secret.labels = l;
    }
    secret.etag = etag;
    let secret = secret.clone();
    ok(st.secret_json(id, &secret))
}
