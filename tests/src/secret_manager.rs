//! A fake of the Secret Manager v1 REST API, in memory, for the renewer's Secret Manager mirror.
//!
//! Google ships no Secret Manager emulator, so this serves exactly the REST calls the official
//! `google-cloud-secretmanager-v1` client makes (paths and query parameters as its generated
//! transport builds them), with the wire details of the real service:
//!
//! * JSON in camelCase; `payload.data` base64; `dataCrc32c` an int64 as a string (checked on
//!   `addVersion`, returned on `access`); `createTime` RFC 3339;
//! * enums as numbers when the request asks for `$alt=json;enum-encoding=int` (the Rust client
//!   always does), as names otherwise;
//! * resource names in answers carry the project *number* ([`PROJECT_NUMBER`]), like the real
//!   service; requests may use the project id or the number;
//! * `versions/latest` is the most recently created version whatever its state, and accessing
//!   a version that is not enabled is `FAILED_PRECONDITION` (so a client that expects `latest`
//!   to skip disabled versions is caught);
//! * errors are Google JSON errors (`{"error":{"code":404,"message":…,"status":"NOT_FOUND"}}`);
//!   a route the fake does not serve answers `501 UNIMPLEMENTED`, so an unexpected call is
//!   visible instead of looking like a missing secret.
//!
//! Every request is recorded ([`FakeSecretManager::requests`], [`FakeSecretManager::calls`]) so
//! tests can assert which calls were made; [`FakeSecretManager::fail_next`] makes the next
//! requests fail with `503 UNAVAILABLE`. The server stops when the value is dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::server::{RecordedRequest, ServerTask};

/// The project number names in answers carry (the real service answers with numbers).
pub const PROJECT_NUMBER: &str = "123456789012";

/// Default page size of `ListSecretVersions` when the request asks for none. Small on purpose,
/// so tests with a handful of versions exercise pagination.
pub const DEFAULT_PAGE_SIZE: usize = 2;

/// The largest payload the service accepts.
const MAX_PAYLOAD: usize = 64 * 1024;

/// The state of a secret version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    Enabled,
    Disabled,
    Destroyed,
}

impl VersionState {
    fn name(self) -> &'static str {
        match self {
            VersionState::Enabled => "ENABLED",
            VersionState::Disabled => "DISABLED",
            VersionState::Destroyed => "DESTROYED",
        }
    }
    fn number(self) -> i32 {
        match self {
            VersionState::Enabled => 1,
            VersionState::Disabled => 2,
            VersionState::Destroyed => 3,
        }
    }
}

#[derive(Debug)]
pub struct FakeSecretManager {
    state: Arc<Mutex<SmState>>,
    server: ServerTask,
}

#[derive(Debug)]
struct SmState {
    project: String,
    secrets: BTreeMap<String, FakeSecret>,
    requests: Vec<RecordedRequest>,
    fail_next: usize,
    /// `(suffix, n)`: the next `n` requests whose `METHOD /path` ends with `suffix` fail.
    fail_matching: Option<(String, usize)>,
    page_size: usize,
    /// Makes every etag distinct.
    counter: u64,
}

#[derive(Debug, Clone)]
struct FakeSecret {
    labels: BTreeMap<String, String>,
    create_time: String,
    etag: String,
    versions: Vec<FakeVersion>,
}

#[derive(Debug, Clone)]
struct FakeVersion {
    number: u64,
    state: VersionState,
    data: Vec<u8>,
    client_checksum: bool,
    create_time: String,
    etag: String,
}

impl FakeSecretManager {
    /// Serves project `project` (its id; [`PROJECT_NUMBER`] is accepted as well).
    pub async fn start(project: &str) -> Result<FakeSecretManager> {
        let state = Arc::new(Mutex::new(SmState {
            project: project.to_string(),
            secrets: BTreeMap::new(),
            requests: Vec::new(),
            fail_next: 0,
            fail_matching: None,
            page_size: DEFAULT_PAGE_SIZE,
            counter: 0,
        }));
        let router = Router::new().fallback(handle).with_state(state.clone());
        let server = ServerTask::spawn(router).await?;
        Ok(FakeSecretManager { state, server })
    }

    fn lock(&self) -> MutexGuard<'_, SmState> {
        self.state.lock().unwrap()
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `http://127.0.0.1:<port>`, for `secret_manager.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Every version of a secret, oldest first: number, state, payload. Empty when the secret
    /// does not exist.
    pub fn versions(&self, secret_id: &str) -> Vec<(u64, VersionState, Vec<u8>)> {
        self.lock()
            .secrets
            .get(secret_id)
            .map(|s| {
                s.versions
                    .iter()
                    .map(|v| (v.number, v.state, v.data.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// For every version, oldest first: whether the client sent a payload checksum
    /// (`clientSpecifiedPayloadChecksum`, which the fake verified).
    pub fn checksums_sent(&self, secret_id: &str) -> Vec<bool> {
        self.lock()
            .secrets
            .get(secret_id)
            .map(|s| s.versions.iter().map(|v| v.client_checksum).collect())
            .unwrap_or_default()
    }

    /// Whether the secret exists.
    pub fn has_secret(&self, secret_id: &str) -> bool {
        self.lock().secrets.contains_key(secret_id)
    }

    /// The secret's labels, if it exists.
    pub fn labels(&self, secret_id: &str) -> Option<BTreeMap<String, String>> {
        self.lock().secrets.get(secret_id).map(|s| s.labels.clone())
    }

    /// Adds a version directly (creating the secret if needed), bypassing the API: e.g. a
    /// corrupt payload, or a version written by another tool. Returns its number.
    pub fn add_version(&self, secret_id: &str, data: &[u8]) -> u64 {
        let mut st = self.lock();
        let now = now_rfc3339();
        let etag = st.next_etag();
        let secret = st
            .secrets
            .entry(secret_id.to_string())
            .or_insert_with(|| FakeSecret {
                labels: BTreeMap::new(),
                create_time: now.clone(),
                etag,
                versions: Vec::new(),
            });
        let number = secret.versions.last().map_or(1, |v| v.number + 1);
        secret.versions.push(FakeVersion {
            number,
            state: VersionState::Enabled,
            data: data.to_vec(),
            client_checksum: false,
            create_time: now,
            etag: format!("\"v{number}\""),
        });
        number
    }

    /// Sets a version's state directly (an operator disabling a bad version, say).
    pub fn set_state(&self, secret_id: &str, version: u64, state: VersionState) {
        let mut st = self.lock();
        let v = st
            .secrets
            .get_mut(secret_id)
            .and_then(|s| s.versions.iter_mut().find(|v| v.number == version))
            .unwrap_or_else(|| panic!("no version {version} of secret {secret_id}"));
        v.state = state;
    }

    /// The next `n` requests (whatever they are) fail with `503 UNAVAILABLE`; 0 clears it.
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// The next `n` requests whose `METHOD /path` (no query) ends with `suffix` fail with
    /// `503 UNAVAILABLE`, e.g. `(":addVersion", 1)`; other requests are served.
    pub fn fail_next_matching(&self, suffix: &str, n: usize) {
        self.lock().fail_matching = Some((suffix.to_string(), n));
    }

    /// Page size of `ListSecretVersions` when the request sets none ([`DEFAULT_PAGE_SIZE`]).
    pub fn set_page_size(&self, n: usize) {
        self.lock().page_size = n.max(1);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Every request so far as `METHOD /path` (query string removed, `%xx` kept as sent).
    pub fn calls(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .map(|r| {
                let path = r.path.split('?').next().unwrap_or_default();
                format!("{} {path}", r.method)
            })
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }
}

impl SmState {
    fn next_etag(&mut self) -> String {
        self.counter += 1;
        format!("\"e{}\"", self.counter)
    }

    fn secret_name(&self, id: &str) -> String {
        format!("projects/{PROJECT_NUMBER}/secrets/{id}")
    }

    fn secret_json(&self, id: &str, s: &FakeSecret) -> Value {
        json!({
            "name": self.secret_name(id),
            "replication": {"automatic": {}},
            "createTime": s.create_time,
            "labels": s.labels,
            "etag": s.etag,
        })
    }

    fn version_json(&self, id: &str, v: &FakeVersion, ints: bool) -> Value {
        json!({
            "name": format!("{}/versions/{}", self.secret_name(id), v.number),
            "createTime": v.create_time,
            "state": if ints { json!(v.state.number()) } else { json!(v.state.name()) },
            "replicationStatus": {"automatic": {}},
            "etag": v.etag,
            "clientSpecifiedPayloadChecksum": v.client_checksum,
        })
    }
}

/// A Google JSON error.
fn error(status: StatusCode, code_name: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "error": {
            "code": status.as_u16(),
            "message": message.into(),
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

fn not_found(message: impl Into<String>) -> Response {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", message)
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

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

fn parse_query(raw: Option<&str>) -> BTreeMap<String, String> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                crate::client::query_decode(k),
                crate::client::query_decode(v),
            )
        })
        .collect()
}

async fn handle(
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
    let query = parse_query(raw_query.as_deref());
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

fn unimplemented(method: &Method, path: &str) -> Response {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "UNIMPLEMENTED",
        format!("fake Secret Manager does not serve {method} {path}"),
    )
}

fn secret_missing(st: &SmState, id: &str) -> Response {
    not_found(format!(
        "Secret [{}] not found or has no versions.",
        st.secret_name(id)
    ))
}

fn create_secret(st: &mut SmState, query: &BTreeMap<String, String>, body: &Value) -> Response {
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
    let labels = match body.get("labels") {
        None => BTreeMap::new(),
        Some(Value::Object(m)) => match check_labels(m) {
            Ok(l) => l,
            Err(e) => return invalid(e),
        },
        Some(_) => return invalid("labels must be an object"),
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

fn get_secret(st: &SmState, id: &str) -> Response {
    match st.secrets.get(id) {
        Some(s) => ok(st.secret_json(id, s)),
        None => secret_missing(st, id),
    }
}

fn update_secret(
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
                let parsed = match body.get("labels") {
                    None => BTreeMap::new(),
                    Some(Value::Object(m)) => match check_labels(m) {
                        Ok(l) => l,
                        Err(e) => return invalid(e),
                    },
                    Some(_) => return invalid("labels must be an object"),
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

fn add_version(st: &mut SmState, id: &str, body: &Value, ints: bool) -> Response {
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

fn get_version(st: &SmState, id: &str, v: &str, ints: bool) -> Response {
    match find_version(st, id, v) {
        Ok(found) => ok(st.version_json(id, found, ints)),
        Err(r) => *r,
    }
}

fn access_version(st: &SmState, id: &str, v: &str) -> Response {
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

fn set_version_state(
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

fn list_versions(st: &SmState, id: &str, query: &BTreeMap<String, String>, ints: bool) -> Response {
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
