//! The calls on a secret's versions: add, get, access, enable/disable, list.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

use super::model::{now_rfc3339, FakeVersion, SmState, VersionState};
use super::reply::{error, invalid, not_found, ok, secret_missing};

/// The largest payload the service accepts.
const MAX_PAYLOAD: usize = 64 * 1024;

pub(super) fn add_version(st: &mut SmState, id: &str, body: &Value, ints: bool) -> Response {
    let Some(payload) = body.get("payload") else {
        return invalid("payload must be specified.");
    };
    let data = match payload.get("data").and_then(Value::as_str) {
        Some(b64) => match BASE64.decode(b64) {
            Ok(d) => d,
            Err(e) => return invalid(format!("Invalid value at 'payload.data' (TYPE_BYTES): {e}")),
        },
        None => Vec::new(),
    };
    if data.len() > MAX_PAYLOAD {
        return invalid("Secret Payload cannot be larger than 64KiB.");
    }
    // int64 fields travel as JSON strings; accept numbers too, as the service does.
    let checksum = match payload.get("dataCrc32c") {
        None => None,
        Some(Value::String(s)) => match s.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => return invalid(format!("Invalid value at 'payload.data_crc32c': {s:?}")),
        },
        Some(Value::Number(n)) => n.as_i64(),
        Some(other) => return invalid(format!("Invalid value at 'payload.data_crc32c': {other}")),
    };
    if let Some(expected) = checksum {
        if i64::from(crc32c::crc32c(&data)) != expected {
            return invalid("Checksum mismatch: the data_crc32c does not match the payload.");
        }
    }
    let Some(secret) = st.secrets.get_mut(id) else {
        return secret_missing(st, id);
    };
    let number = secret.versions.last().map_or(1, |v| v.number + 1);
    let version = FakeVersion {
        number,
        state: VersionState::Enabled,
        data,
        client_checksum: checksum.is_some(),
        create_time: now_rfc3339(),
        etag: format!("\"v{number}\""),
    };
    secret.versions.push(version.clone());
    ok(st.version_json(id, &version, ints))
}

/// Resolves `latest` (the newest version, whatever its state) or a number.
fn find_version<'a>(st: &'a SmState, id: &str, v: &str) -> Result<&'a FakeVersion, Box<Response>> {
    let Some(secret) = st.secrets.get(id) else {
        return Err(Box::new(secret_missing(st, id)));
    };
    let found = if v == "latest" {
        secret.versions.last()
    } else {
        let Ok(n) = v.parse::<u64>() else {
            return Err(Box::new(invalid(format!("Invalid version {v:?}."))));
        };
        secret.versions.iter().find(|x| x.number == n)
    };
    found.ok_or_else(|| {
        Box::new(not_found(format!(
            "Secret Version [{}/versions/{v}] not found.",
            st.secret_name(id)
        )))
    })
}

pub(super) fn get_version(st: &SmState, id: &str, v: &str, ints: bool) -> Response {
    match find_version(st, id, v) {
        Ok(found) => ok(st.version_json(id, found, ints)),
        Err(r) => *r,
    }
}

pub(super) fn access_version(st: &SmState, id: &str, v: &str) -> Response {
    let found = match find_version(st, id, v) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let name = format!("{}/versions/{}", st.secret_name(id), found.number);
    if found.state != VersionState::Enabled {
        return error(
            StatusCode::BAD_REQUEST,
            "FAILED_PRECONDITION",
            format!(
                "Secret Version [{name}] is in {} state.",
                found.state.name()
            ),
        );
    }
    ok(json!({
        "name": name,
        "payload": {
            "data": BASE64.encode(&found.data),
            "dataCrc32c": i64::from(crc32c::crc32c(&found.data)).to_string(),
        }
    }))
}

pub(super) fn set_version_state(
    st: &mut SmState,
    id: &str,
    v: &str,
    state: VersionState,
    ints: bool,
) -> Response {
    let number = match find_version(st, id, v) {
        Ok(f) if f.state == VersionState::Destroyed => {
            return error(
                StatusCode::BAD_REQUEST,
                "FAILED_PRECONDITION",
                format!(
                    "Secret Version [{}/versions/{}] is in DESTROYED state.",
                    st.secret_name(id),
                    f.number
                ),
            )
        }
        Ok(f) => f.number,
        Err(r) => return *r,
    };
    let Some(found) = st
        .secrets
        .get_mut(id)
        .and_then(|s| s.versions.iter_mut().find(|x| x.number == number))
    else {
        return secret_missing(st, id);
    };
    found.state = state;
    let found = found.clone();
    ok(st.version_json(id, &found, ints))
}

pub(super) fn list_versions(
    st: &SmState,
    id: &str,
    query: &BTreeMap<String, String>,
    ints: bool,
) -> Response {
    let Some(secret) = st.secrets.get(id) else {
        return not_found(format!("Secret [{}] not found.", st.secret_name(id)));
    };
    // The only filter the fake understands: `state:X` / `state=X` (what a client filtering on
    // state sends). Anything else is refused rather than silently ignored.
    let filter = query.get("filter").map(|f| f.trim()).unwrap_or_default();
    let wanted = if filter.is_empty() {
        None
    } else {
        let value = filter
            .strip_prefix("state:")
            .or_else(|| filter.strip_prefix("state="))
            .map(str::trim);
        match value {
            Some("ENABLED") => Some(VersionState::Enabled),
            Some("DISABLED") => Some(VersionState::Disabled),
            Some("DESTROYED") => Some(VersionState::Destroyed),
            _ => return invalid(format!("fake: unsupported filter {filter:?}")),
        }
    };
    let page_size = match query.get("pageSize").map(|s| s.parse::<usize>()) {
        None => st.page_size,
        Some(Ok(0)) => st.page_size,
        Some(Ok(n)) => n.min(25_000),
        Some(Err(_)) => return invalid("Invalid pageSize."),
    };
    let offset = match query.get("pageToken").map(String::as_str) {
        None | Some("") => 0,
        Some(token) => match token.strip_prefix("offset-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return invalid(format!("Invalid page token {token:?}.")),
        },
    };
    // Newest first, like the service.
    let matching: Vec<&FakeVersion> = secret
        .versions
        .iter()
        .rev()
        .filter(|v| wanted.is_none_or(|w| v.state == w))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|v| st.version_json(id, v, ints))
        .collect();
    let mut answer = json!({ "versions": page, "totalSize": matching.len() });
    if offset + page_size < matching.len() {
        answer["nextPageToken"] = json!(format!("offset-{}", offset + page_size));
    }
    ok(answer)
}
