//! A recording fake of the Google Cloud APIs that `gcloud` calls during `make deploy`.
//!
//! No emulator exists for Compute Engine, Cloud Run, IAM and friends, and the deploy has to be
//! tested without a cloud account, so this fake stands in for them. The real `gcloud` talks to
//! it: every API endpoint is overridden (`CLOUDSDK_API_ENDPOINT_OVERRIDES_<API>`) to
//! `http://<api>.fake/`, and gcloud's HTTP proxy setting points at this server, which serves
//! those hosts itself. The proxy is needed because gcloud derives Cloud Run's regional endpoint
//! by prefixing the host (`<region>-run.fake`), which no loopback address survives.
//!
//! It is a generic resource store with each API's conventions layered on top:
//! create (POST to a collection), get, list, patch/put, delete, IAM policies, and the long-running
//! operation each API wraps its answers in — returned already done. It keeps what gcloud
//! sent, so tests assert on the real requests (IAM bindings, session affinity, job command), and
//! it records every request, so a test can prove that a second deploy changed nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::body::{to_bytes, Body};
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

/// APIs the deploy uses, by the name gcloud's endpoint-override property has.
pub const APIS: &[&str] = &[
    "artifactregistry",
    "cloudbuild",
    "cloudresourcemanager",
    "cloudscheduler",
    "compute",
    "iam",
    "logging",
    "monitoring",
    "run",
    "secretmanager",
    "serviceusage",
    "storage",
];

/// The project number the fake's project has.
pub const PROJECT_NUMBER: &str = "123456789012";

/// One request as gcloud sent it.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// `compute`, `run`, … (the host's API, region prefix removed).
    pub api: String,
    pub method: String,
    /// Path without the API's version prefix, e.g. `projects/p/regions/r/addresses/x`.
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// The JSON body, or `Value::Null` (uploads and empty bodies).
    pub body: Value,
}

impl ApiRequest {
    /// Whether this request may change state: every write except the read-only custom
    /// methods gcloud POSTs (`getIamPolicy`, compute operation `wait`).
    pub fn is_mutation(&self) -> bool {
        match self.method.as_str() {
            "GET" | "HEAD" => false,
            _ => !(self.path.ends_with(":getIamPolicy") || self.path.ends_with("/wait")),
        }
    }

    pub fn line(&self) -> String {
        format!("{} {} {}", self.method, self.api, self.path)
    }
}

#[derive(Default)]
struct State {
    /// (api, path) -> resource.
    resources: BTreeMap<(String, String), Value>,
    requests: Vec<ApiRequest>,
    counter: u64,
}

/// The running fake. Dropping it stops the server.
pub struct GoogleApis {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for GoogleApis {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GoogleApis {
    /// Start on 127.0.0.1 with a project `project` as a new project has it: the project, its
    /// default network and the public Debian image family.
    pub async fn start(project: &str) -> Result<GoogleApis> {
        let state = Arc::new(Mutex::new(State::default()));
        let app = Router::new().fallback({
            let state = state.clone();
            move |req: Request<Body>| handle(state.clone(), req)
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the Google APIs fake")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let fake = GoogleApis { addr, state, task };
        fake.seed(
            "cloudresourcemanager",
            &format!("projects/{project}"),
            json!({"projectId": project, "projectNumber": PROJECT_NUMBER, "lifecycleState": "ACTIVE", "name": project}),
        );
        fake.seed(
            "compute",
            &format!("projects/{project}/global/networks/default"),
            json!({"name": "default", "autoCreateSubnetworks": true}),
        );
        fake.seed(
            "compute",
            "projects/debian-cloud/global/images/family/debian-12",
            json!({"name": "debian-12-bookworm-v20261110", "family": "debian-12", "status": "READY"}),
        );
        Ok(fake)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Put a resource in place, as if it existed before the deploy.
    pub fn seed(&self, api: &str, path: &str, mut value: Value) {
        let mut st = self.state.lock().expect("state lock");
        decorate(api, path, &mut value, &mut st.counter);
        st.resources
            .insert((api.to_string(), path.to_string()), value);
    }

    /// The stored resource at `path` of `api`.
    pub fn resource(&self, api: &str, path: &str) -> Option<Value> {
        let st = self.state.lock().expect("state lock");
        st.resources.get(&(api.into(), path.into())).cloned()
    }

    /// Paths of every stored resource of `api`.
    pub fn paths(&self, api: &str) -> Vec<String> {
        let st = self.state.lock().expect("state lock");
        st.resources
            .keys()
            .filter(|(a, _)| a == api)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.state.lock().expect("state lock").requests.clone()
    }

    /// Forget the recorded requests (the resources stay).
    pub fn clear_requests(&self) {
        self.state.lock().expect("state lock").requests.clear();
    }

    /// Environment for `gcloud` (and scripts that run it) to use this fake: endpoint
    /// overrides, the proxy, a token, and `config_dir` as a throwaway configuration.
    pub fn gcloud_env(&self, config_dir: &Path) -> Vec<(String, String)> {
        let mut env = vec![
            ("CLOUDSDK_CONFIG".into(), config_dir.display().to_string()),
            ("CLOUDSDK_AUTH_ACCESS_TOKEN".into(), "fake-token".into()),
            ("CLOUDSDK_CORE_DISABLE_PROMPTS".into(), "1".into()),
            (
                "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING".into(),
                "true".into(),
            ),
            (
                "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK".into(),
                "true".into(),
            ),
            ("CLOUDSDK_PROXY_TYPE".into(), "http".into()),
            ("CLOUDSDK_PROXY_ADDRESS".into(), "127.0.0.1".into()),
            ("CLOUDSDK_PROXY_PORT".into(), self.port().to_string()),
        ];
        for api in APIS {
            let base = match *api {
                // Discovery-style clients take the whole base URL, version included.
                "compute" => "http://compute.fake/compute/v1/".to_string(),
                "storage" => "http://storage.fake/storage/v1/".to_string(),
                _ => format!("http://{api}.fake/"),
            };
            env.push((
                format!(
                    "CLOUDSDK_API_ENDPOINT_OVERRIDES_{}",
                    api.to_ascii_uppercase()
                ),
                base,
            ));
        }
        env
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let code = status.as_u16();
    let reason = match code {
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        400 => "INVALID_ARGUMENT",
        _ => "INTERNAL",
    };
    (
        status,
        [("content-type", "application/json")],
        json!({"error": {"code": code, "message": message, "status": reason,
            "errors": [{"message": message, "domain": "global", "reason": if code == 404 { "notFound" } else { "conflict" }}]}})
        .to_string(),
    )
        .into_response()
}

fn ok(value: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

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
        "storage" => &["upload/storage/v1/", "storage/v1/"],
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
            return crate::client::percent_decode(rest);
        }
    }
    crate::client::percent_decode(p)
}

/// Whether a path names a collection: resource paths alternate collection/id, and compute's
/// `global` is a scope, not a collection.
fn is_collection(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let counted = segs.iter().filter(|s| **s != "global").count();
    counted % 2 == 1
}

/// What each API returns for a change: compute wraps it in an operation, some APIs in a
/// long-running operation, the rest return the resource itself.
fn mutation_response(st: &mut State, api: &str, path: &str, kind: &str, resource: Value) -> Value {
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
fn decorate(api: &str, path: &str, v: &mut Value, counter: &mut u64) {
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
        "logging" | "cloudresourcemanager" => {
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

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

fn iam_key(path: &str) -> String {
    format!("{path}#iam")
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Body>) -> Response {
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
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                crate::client::query_decode(k),
                crate::client::query_decode(v),
            )
        })
        .collect();
    let upload = if uri.path().starts_with("/upload/") {
        let content_type = headers_content_type.clone();
        Some(upload_parts(&content_type, &bytes))
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
    respond(&mut st, &api, &method, &path, &query, body, upload)
}

fn respond(
    st: &mut State,
    api: &str,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: Value,
    upload: Option<(Value, usize)>,
) -> Response {
    let key = |p: &str| (api.to_string(), p.to_string());
    // Read-only project IAM policy of a project; policies of everything else.
    if let Some((resource, verb)) = path.rsplit_once(':') {
        return custom_method(st, api, resource, verb, body);
    }
    // Storage: IAM is a sub-resource; uploads store objects.
    if api == "storage" {
        if let Some(bucket_path) = path.strip_suffix("/iam") {
            let k = key(&iam_key(bucket_path));
            return match *method {
                Method::PUT => {
                    let mut policy = body;
                    policy["etag"] = json!(format!("CA{}", st.counter));
                    st.counter += 1;
                    st.resources.insert(k, policy.clone());
                    ok(policy)
                }
                _ => ok(st
                    .resources
                    .get(&k)
                    .cloned()
                    .unwrap_or(json!({"bindings": [], "etag": "CAE=", "version": 1}))),
            };
        }
        if let Some((metadata, size)) = upload {
            let name = query
                .get("name")
                .cloned()
                .or_else(|| metadata["name"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("upload-{}", st.counter));
            // gcloud compares the size with the file it sent.
            let object = json!({"name": name, "bucket": path.split('/').nth(1).unwrap_or(""),
                "size": size.to_string(), "generation": "1"});
            st.resources
                .insert(key(&format!("{path}/{name}")), object.clone());
            return ok(object);
        }
    }
    // Compute verbs on a resource (`.../instanceGroupManagers/x/resize`, operation `wait`):
    // POSTs to a path right below an existing resource.
    if api == "compute" && *method == Method::POST {
        let (resource, verb) = path.rsplit_once('/').unwrap_or((path, ""));
        if let Some(stored) = st.resources.get_mut(&key(resource)) {
            match verb {
                "resize" => {
                    if let Some(size) = query.get("size").and_then(|s| s.parse::<i64>().ok()) {
                        stored["targetSize"] = json!(size);
                    }
                }
                "wait" => {}
                _ => merge(stored, &body),
            }
            let resource = resource.to_string();
            let stored = stored.clone();
            if verb == "wait" {
                return ok(stored);
            }
            return ok(mutation_response(st, api, &resource, verb, stored));
        }
    }
    if api == "iam" && (path.ends_with("/roles") || path.contains("/roles/")) {
        if let Some(response) = custom_role(st, method, path, body.clone()) {
            return response;
        }
    }
    if api == "compute" && *method == Method::GET {
        if let Some((project, collection)) = path
            .strip_prefix("projects/")
            .and_then(|p| p.split_once("/aggregated/"))
        {
            return ok(aggregated(st, project, collection));
        }
    }
    match *method {
        Method::GET => {
            if let Some(v) = st.resources.get(&key(path)) {
                return ok(v.clone());
            }
            if is_collection(path) {
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
                // A few APIs name the list field differently from the collection.
                // IAM names its list differently from the collection.
                if field == "serviceAccounts" {
                    list.insert("accounts".into(), json!(items));
                }
                if api == "serviceusage" {
                    return ok(enabled_services(st, path));
                }
                return ok(Value::Object(list));
            }
            error(
                StatusCode::NOT_FOUND,
                &format!("{api}: {path} was not found"),
            )
        }
        Method::POST => {
            if api == "cloudbuild" {
                return build(st, path, body);
            }
            let Some(new_path) = created_path(api, path, query, &body) else {
                // No id given: the service names it (alert policies, channels).
                st.counter += 1;
                let new_path = format!("{path}/{}", st.counter);
                return create(st, api, &new_path, body);
            };
            if st.resources.contains_key(&key(&new_path)) {
                return error(StatusCode::CONFLICT, &format!("{new_path} already exists"));
            }
            create(st, api, &new_path, body)
        }
        Method::PUT | Method::PATCH => {
            let Some(stored) = st.resources.get(&key(path)).cloned() else {
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
            st.resources.insert(key(path), updated.clone());
            ok(mutation_response(st, api, path, "update", updated))
        }
        Method::DELETE => {
            if st.resources.remove(&key(path)).is_none() {
                return error(StatusCode::NOT_FOUND, &format!("{path} was not found"));
            }
            let prefix = format!("{path}/");
            st.resources
                .retain(|(a, p), _| !(a == api && (p.starts_with(&prefix) || *p == iam_key(path))));
            ok(mutation_response(st, api, path, "delete", json!({})))
        }
        _ => error(StatusCode::BAD_REQUEST, "unsupported method"),
    }
}

/// A multipart/related upload: (the metadata part as JSON, the media part's length).
/// A plain media upload has no metadata.
fn upload_parts(content_type: &str, body: &[u8]) -> (Value, usize) {
    let Some(boundary) = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches(['"', '\'']).to_string())
    else {
        return (Value::Null, body.len());
    };
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + d.len() <= body.len() {
        if &body[i..i + d.len()] == d {
            starts.push(i);
            i += d.len();
        } else {
            i += 1;
        }
    }
    let mut parts = Vec::new();
    for w in starts.windows(2) {
        let part = &body[w[0] + d.len()..w[1]];
        // Python's email generator ends lines with \n, others with \r\n.
        let (h, sep) = match part.windows(4).position(|x| x == b"\r\n\r\n") {
            Some(h) => (h, 4),
            None => match part.windows(2).position(|x| x == b"\n\n") {
                Some(h) => (h, 2),
                None => continue,
            },
        };
        let mut data = &part[h + sep..];
        if let Some(d) = data
            .strip_suffix(b"\r\n")
            .or_else(|| data.strip_suffix(b"\n"))
        {
            data = d;
        }
        parts.push(data);
    }
    match parts.as_slice() {
        [meta, media, ..] => (
            serde_json::from_slice(meta).unwrap_or(Value::Null),
            media.len(),
        ),
        [media] => (Value::Null, media.len()),
        [] => (Value::Null, body.len()),
    }
}

fn create(st: &mut State, api: &str, path: &str, mut body: Value) -> Response {
    if body.is_null() {
        body = json!({});
    }
    let mut counter = st.counter;
    decorate(api, path, &mut body, &mut counter);
    st.counter = counter;
    st.resources.insert((api.into(), path.into()), body.clone());
    ok(mutation_response(st, api, path, "insert", body))
}

/// Cloud Build: the build succeeds at once, and its images appear in Artifact Registry (so
/// the deploy's "is this tag built?" check sees them next time).
fn build(st: &mut State, collection: &str, mut body: Value) -> Response {
    st.counter += 1;
    let id = format!("build-{}", st.counter);
    let build_path = format!("{collection}/{id}");
    body["id"] = json!(id);
    body["projectId"] = json!(collection.split('/').nth(1).unwrap_or_default());
    body["status"] = json!("SUCCESS");
    body["logsBucket"] = json!(format!(
        "gs://{}_cloudbuild/logs",
        collection.split('/').nth(1).unwrap_or_default()
    ));
    body["name"] = json!(build_path);
    let images: Vec<String> = body["images"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    body["results"] = json!({"images": images.iter().map(|i| json!({"name": i, "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000"})).collect::<Vec<_>>()});
    for image in &images {
        // REGION-docker.pkg.dev/PROJECT/REPO/IMAGE:TAG
        let Some((repo_path, tag)) = image.rsplit_once(':') else {
            continue;
        };
        let parts: Vec<&str> = repo_path.split('/').collect();
        if parts.len() != 4 {
            continue;
        }
        let location = parts[0].trim_end_matches("-docker.pkg.dev");
        let tag_path = format!(
            "projects/{}/locations/{location}/repositories/{}/packages/{}/tags/{tag}",
            parts[1], parts[2], parts[3]
        );
        let version = format!(
            "projects/{}/locations/{location}/repositories/{}/packages/{}/versions/sha256:0000000000000000000000000000000000000000000000000000000000000000",
            parts[1], parts[2], parts[3]
        );
        st.resources.insert(
            ("artifactregistry".into(), tag_path.clone()),
            json!({"name": tag_path, "version": version}),
        );
    }
    st.resources
        .insert(("cloudbuild".into(), build_path.clone()), body.clone());
    // Also where `builds get` looks without a location.
    if let Some(project) = collection.split('/').nth(1) {
        st.resources.insert(
            (
                "cloudbuild".into(),
                format!("projects/{project}/builds/{id}"),
            ),
            body.clone(),
        );
    }
    st.counter += 1;
    let op = json!({
        "name": format!("operations/build/{id}"),
        "done": true,
        "metadata": {"@type": "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata", "build": body},
        "response": {"@type": "type.googleapis.com/google.devtools.cloudbuild.v1.Build", "id": body["id"], "status": "SUCCESS", "images": body["images"], "results": body["results"], "name": body["name"]},
    });
    ok(op)
}

/// Compute's aggregated list: every scope's resources of one collection, keyed by scope.
fn aggregated(st: &State, project: &str, collection: &str) -> Value {
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

fn enabled_services(st: &State, path: &str) -> Value {
    let services: Vec<Value> = st
        .resources
        .iter()
        .filter(|((a, p), _)| a == "serviceusage" && p.starts_with(&format!("{path}/")))
        .map(|(_, v)| v.clone())
        .collect();
    json!({"services": services})
}

/// IAM custom roles (`projects/P/roles`), as the real API keeps them: created under the
/// body's `roleId`; deleting one only marks it `deleted` (it stays 7 days, and its id cannot
/// be used for a new role meanwhile: `undelete` brings it back); `None` for what the generic
/// store handles (GET, PATCH).
fn custom_role(st: &mut State, method: &Method, path: &str, body: Value) -> Option<Response> {
    let key = ("iam".to_string(), path.to_string());
    match *method {
        Method::POST if path.ends_with("/roles") => {
            let id = body["roleId"].as_str().unwrap_or_default().to_string();
            let name = format!("{path}/{id}");
            let k = ("iam".to_string(), name.clone());
            if let Some(existing) = st.resources.get(&k) {
                return Some(if existing["deleted"] == json!(true) {
                    error(
                        StatusCode::BAD_REQUEST,
                        &format!("You can't create a role with role_id ({id}) where there is an existing role with that role_id in a deleted state."),
                    )
                } else {
                    error(
                        StatusCode::CONFLICT,
                        &format!("A role named {id} in {path} already exists."),
                    )
                });
            }
            let mut role = body["role"].clone();
            role["name"] = json!(name);
            role["etag"] = json!("BwWKmjvelug=");
            st.resources.insert(k, role.clone());
            Some(ok(role))
        }
        Method::DELETE => {
            let role = st.resources.get_mut(&key)?;
            role["deleted"] = json!(true);
            Some(ok(role.clone()))
        }
        _ => None,
    }
}

fn custom_method(st: &mut State, api: &str, resource: &str, verb: &str, body: Value) -> Response {
    let k = (api.to_string(), iam_key(resource));
    match verb {
        "undelete" if api == "iam" => match st.resources.get_mut(&(api.into(), resource.into())) {
            Some(role) => {
                if let Some(o) = role.as_object_mut() {
                    o.remove("deleted");
                }
                ok(role.clone())
            }
            None => error(StatusCode::NOT_FOUND, &format!("{resource} was not found")),
        },
        "getIamPolicy" => ok(st
            .resources
            .get(&k)
            .cloned()
            .unwrap_or(json!({"etag": "BwXhqDAAAAA=", "version": 1}))),
        "setIamPolicy" => {
            let mut policy = body["policy"].clone();
            st.counter += 1;
            policy["etag"] = json!(format!("BwXh{:08}", st.counter));
            st.resources.insert(k, policy.clone());
            ok(policy)
        }
        "batchEnable" => {
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
        "addVersion" => {
            let prefix = format!("{resource}/versions/");
            let n = st
                .resources
                .keys()
                .filter(|(a, p)| a == api && p.starts_with(&prefix))
                .count()
                + 1;
            let path = format!("{prefix}{n}");
            // The service confirms it checked the client's CRC32C.
            let version = json!({"name": path, "state": "ENABLED", "createTime": "2026-11-22T00:00:00Z",
                "clientSpecifiedPayloadChecksum": body["payload"]["dataCrc32c"].is_string(),
                "payload": body["payload"]});
            st.resources.insert((api.into(), path), version.clone());
            let mut public = version;
            if let Some(o) = public.as_object_mut() {
                o.remove("payload");
            }
            ok(public)
        }
        "run" => {
            st.counter += 1;
            ok(json!({"name": format!("{resource}/executions/run-{}", st.counter), "done": false}))
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            &format!("{api}: custom method {verb} is not faked"),
        ),
    }
}
