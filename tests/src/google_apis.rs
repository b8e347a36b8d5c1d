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
//!
//! It is eventually consistent where Google documents that the real services are: the first
//! IAM policy change that names a service account created moments before fails with "Service
//! account … does not exist", and the first alert policy on a log-based metric created moments
//! before fails with "Cannot find metric(s) …" (each once; [`GoogleApis::settle_at_once`] turns
//! this off), so every test deploy has to wait those out as a real one does.

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
    /// Service accounts and log metrics created here that other services do not see yet:
    /// the next request that needs one fails, and it is visible from then on.
    not_yet_visible: std::collections::BTreeSet<String>,
    /// No propagation delays (for tests about something else).
    settled: bool,
    /// Storage object contents, by the object's resource path (`b/BUCKET/o/NAME`).
    media: BTreeMap<String, Vec<u8>>,
    /// What a renewal pass (a run of the renewer job, or Scheduler's forced run of its
    /// trigger) does here.
    renewals: Renewals,
    /// Builds end FAILURE.
    builds_fail: bool,
    /// The next request matching (api, method, path suffix) fails once with this status.
    fail_once: Vec<(String, String, String, u16)>,
}

/// What a renewal pass does in the fake: the real renewer cannot run against it (no ACME CA
/// here), so the fake does what a pass leaves behind where deploy looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Renewals {
    /// The pass issues a certificate for the job's configured names: `certs/NAME/current.json`
    /// in its bucket names them.
    #[default]
    Issue,
    /// The pass fails (a name does not validate): the execution fails, nothing changes.
    Fail,
    /// The pass runs but never gets to the certificate (Scheduler's trigger was accepted, the
    /// service never answers): nothing changes.
    Nothing,
}

/// Store an object (its content and the metadata gcloud checks: size and CRC32C).
fn put_object(st: &mut State, bucket: &str, name: &str, media: Vec<u8>) -> Value {
    use base64::Engine;
    st.counter += 1;
    let crc =
        base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(&media).to_be_bytes());
    let object = json!({"kind": "storage#object", "name": name, "bucket": bucket,
        "size": media.len().to_string(), "generation": st.counter.to_string(),
        "metageneration": "1", "crc32c": crc, "contentType": "application/octet-stream",
        "id": format!("{bucket}/{name}/{}", st.counter),
        "mediaLink": format!("http://storage.fake/download/storage/v1/b/{bucket}/o/{}?generation={}&alt=media",
            crate::percent_encode(name), st.counter),
        "selfLink": format!("http://storage.fake/storage/v1/b/{bucket}/o/{}", crate::percent_encode(name))});
    let path = format!("b/{bucket}/o/{name}");
    st.resources
        .insert(("storage".into(), path.clone()), object.clone());
    st.media.insert(path, media);
    object
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

    /// Make new service accounts and log metrics visible at once, with no transient errors.
    pub fn settle_at_once(&self) {
        let mut st = self.state.lock().expect("state lock");
        st.settled = true;
        st.not_yet_visible.clear();
    }

    /// What renewal passes do from now on.
    pub fn set_renewals(&self, renewals: Renewals) {
        self.state.lock().expect("state lock").renewals = renewals;
    }

    /// Make every Cloud Build from now on fail (or succeed again).
    pub fn fail_builds(&self, fail: bool) {
        self.state.lock().expect("state lock").builds_fail = fail;
    }

    /// The next `method` request to `api` whose path ends with `path_suffix` fails once with
    /// `status` (an outage or a quota error in the middle of a deploy).
    pub fn fail_once(&self, api: &str, method: &str, path_suffix: &str, status: u16) {
        self.state.lock().expect("state lock").fail_once.push((
            api.into(),
            method.into(),
            path_suffix.into(),
            status,
        ));
    }

    /// Put an object into a bucket.
    pub fn put_object(&self, bucket: &str, name: &str, media: &[u8]) {
        let mut st = self.state.lock().expect("state lock");
        put_object(&mut st, bucket, name, media.to_vec());
    }

    /// An object's content.
    pub fn object(&self, bucket: &str, name: &str) -> Option<Vec<u8>> {
        let st = self.state.lock().expect("state lock");
        st.media.get(&format!("b/{bucket}/o/{name}")).cloned()
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
                    if let Some(email) = unseen_member(st, &body) {
                        return not_yet_a_member(&email);
                    }
                    let mut policy = body;
                    // Etags are base64, as gcloud decodes them.
                    use base64::Engine;
                    st.counter += 1;
                    policy["etag"] =
                        json!(base64::engine::general_purpose::STANDARD
                            .encode(st.counter.to_be_bytes()));
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
        if let Some((metadata, media)) = upload {
            let name = query
                .get("name")
                .cloned()
                .or_else(|| metadata["name"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("upload-{}", st.counter));
            let bucket = path.split('/').nth(1).unwrap_or("").to_string();
            return ok(put_object(st, &bucket, &name, media));
        }
        // An object's metadata, or its content with `alt=media`.
        if *method == Method::GET && path.contains("/o/") {
            let Some(object) = st.resources.get(&key(path)).cloned() else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "No such object: {}",
                        path.replacen("b/", "", 1).replacen("/o/", "/", 1)
                    ),
                );
            };
            if query.get("alt").map(String::as_str) == Some("media") {
                let media = st.media.get(path).cloned().unwrap_or_default();
                return (StatusCode::OK, media).into_response();
            }
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
            if api == "monitoring" && path.ends_with("/alertPolicies") {
                if let Err(e) = check_alert_policy(&body) {
                    return error(StatusCode::BAD_REQUEST, &e);
                }
                let text = body.to_string();
                let unseen = st
                    .not_yet_visible
                    .iter()
                    .find(|m| m.starts_with("logging.googleapis.com/") && text.contains(m.as_str()))
                    .cloned();
                if let Some(metric) = unseen {
                    st.not_yet_visible.remove(&metric);
                    return error(
                        StatusCode::NOT_FOUND,
                        &format!("Cannot find metric(s) that match type = \"{metric}\". If a metric was created recently, it could take up to 10 minutes to become available. Please try again soon."),
                    );
                }
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
            if api == "monitoring" && path.contains("/alertPolicies/") {
                if let Err(e) = check_alert_policy(&body) {
                    return error(StatusCode::BAD_REQUEST, &e);
                }
            }
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
            let Some(removed) = st.resources.remove(&key(path)) else {
                return error(StatusCode::NOT_FOUND, &format!("{path} was not found"));
            };
            // IAM keeps a deleted account's bindings, renamed: the account is gone, and an
            // account created later with the same email is another principal.
            if api == "iam" && path.contains("/serviceAccounts/") {
                let email = path.rsplit('/').next().unwrap_or_default();
                let uid = removed["uniqueId"].as_str().unwrap_or("0").to_string();
                let (live, dead) = (
                    format!("serviceAccount:{email}"),
                    format!("deleted:serviceAccount:{email}?uid={uid}"),
                );
                for ((_, p), policy) in st.resources.iter_mut() {
                    if !p.ends_with("#iam") {
                        continue;
                    }
                    for binding in policy["bindings"].as_array_mut().into_iter().flatten() {
                        for member in binding["members"].as_array_mut().into_iter().flatten() {
                            if member.as_str() == Some(&live) {
                                *member = json!(dead);
                            }
                        }
                    }
                }
            }
            let prefix = format!("{path}/");
            st.resources
                .retain(|(a, p), _| !(a == api && (p.starts_with(&prefix) || *p == iam_key(path))));
            ok(mutation_response(st, api, path, "delete", json!({})))
        }
        _ => error(StatusCode::BAD_REQUEST, "unsupported method"),
    }
}

/// A multipart/related upload: (the metadata part as JSON, the media part).
/// A plain media upload has no metadata.
fn upload_parts(content_type: &str, body: &[u8]) -> (Value, Vec<u8>) {
    let Some(boundary) = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches(['"', '\'']).to_string())
    else {
        return (Value::Null, body.to_vec());
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
            media.to_vec(),
        ),
        [media] => (Value::Null, media.to_vec()),
        [] => (Value::Null, body.to_vec()),
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

/// Cloud Build: the build succeeds at once, and its images appear in Artifact Registry (so
/// the deploy's "is this tag built?" check sees them next time).
fn build(st: &mut State, collection: &str, mut body: Value) -> Response {
    // A build that runs as a user-specified service account has nowhere to write its log by
    // default (the legacy logs bucket belongs to the Cloud Build account): the API refuses it.
    if let Some(account) = body["serviceAccount"].as_str() {
        let logging = body["options"]["logging"].as_str().unwrap_or("");
        let own_bucket = body["logsBucket"].is_string()
            || body["options"]["defaultLogsBucketBehavior"] == "REGIONAL_USER_OWNED_BUCKET";
        if !own_bucket && !matches!(logging, "CLOUD_LOGGING_ONLY" | "NONE") {
            return error(
                StatusCode::BAD_REQUEST,
                "if 'build.service_account' is specified, the build must either (a) specify 'build.logs_bucket', (b) use the REGIONAL_USER_OWNED_BUCKET build.options.default_logs_bucket_behavior option, or (c) use either CLOUD_LOGGING_ONLY / NONE logging options",
            );
        }
        let email = account.rsplit('/').next().unwrap_or_default();
        if !st
            .resources
            .contains_key(&("iam".into(), format!("projects/-/serviceAccounts/{email}")))
        {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("generic::invalid_argument: could not resolve source: service account {email} does not exist"),
            );
        }
    }
    st.counter += 1;
    let id = format!("build-{}", st.counter);
    let build_path = format!("{collection}/{id}");
    body["id"] = json!(id);
    body["projectId"] = json!(collection.split('/').nth(1).unwrap_or_default());
    let failed = st.builds_fail;
    body["status"] = json!(if failed { "FAILURE" } else { "SUCCESS" });
    body["logsBucket"] = json!(format!(
        "gs://{}_cloudbuild/logs",
        collection.split('/').nth(1).unwrap_or_default()
    ));
    body["name"] = json!(build_path);
    let images: Vec<String> = if failed {
        Vec::new()
    } else {
        body["images"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Each image its own digest (what a registry would compute from its content).
    let digest = |image: &str| {
        format!(
            "sha256:{}",
            format!("{:08x}", crc32c::crc32c(image.as_bytes())).repeat(8)
        )
    };
    body["results"] = json!({"images": images.iter().map(|i| json!({"name": i, "digest": digest(i)})).collect::<Vec<_>>()});
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
            "projects/{}/locations/{location}/repositories/{}/packages/{}/versions/{}",
            parts[1],
            parts[2],
            parts[3],
            digest(image)
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
        "response": {"@type": "type.googleapis.com/google.devtools.cloudbuild.v1.Build", "id": body["id"], "status": body["status"], "images": body["images"], "results": body["results"], "name": body["name"]},
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

/// A member of `policy` that IAM does not see yet, now visible (the caller fails this once).
fn unseen_member(st: &mut State, policy: &Value) -> Option<String> {
    let members = policy["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["members"].as_array().cloned().unwrap_or_default());
    for member in members {
        let member = member.as_str().unwrap_or_default().to_string();
        if st.not_yet_visible.remove(&member) {
            return Some(member.trim_start_matches("serviceAccount:").to_string());
        }
    }
    None
}

/// The error IAM gives for a member created moments ago (INVALID_ARGUMENT, as documented).
fn not_yet_a_member(email: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("Service account {email} does not exist."),
    )
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
            if let Some(email) = unseen_member(st, &body["policy"]) {
                return not_yet_a_member(&email);
            }
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
        // `gcloud run jobs execute`: an execution of the job (v1), run to its end at once.
        "run" if api == "run" => {
            let Some(job) = st.resources.get(&(api.into(), resource.into())).cloned() else {
                return error(StatusCode::NOT_FOUND, &format!("{resource} was not found"));
            };
            let env =
                job["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]["env"].clone();
            let outcome = renewal_pass(st, &env);
            let (namespace, job_name) = match resource.split('/').collect::<Vec<_>>()[..] {
                [_, ns, _, name] => (ns.to_string(), name.to_string()),
                _ => return error(StatusCode::BAD_REQUEST, "not a job name"),
            };
            st.counter += 1;
            let name = format!("{job_name}-{:05}", st.counter);
            let completed = match &outcome {
                Ok(()) => json!({"type": "Completed", "status": "True"}),
                Err(why) => json!({"type": "Completed", "status": "False", "reason": "Failed",
                    "message": format!("Task {name}-task0 failed: {why}")}),
            };
            let execution = json!({
                "apiVersion": "run.googleapis.com/v1", "kind": "Execution",
                // gcloud waits until the status is about this generation (observedGeneration).
                "metadata": {"name": name, "namespace": namespace, "generation": 1,
                    "labels": {"run.googleapis.com/job": job_name},
                    "creationTimestamp": "2026-11-30T00:00:00Z"},
                "spec": {"parallelism": 1, "taskCount": 1},
                "status": {"observedGeneration": 1,
                    "conditions": [completed,
                        {"type": "ResourcesAvailable", "status": "True"},
                        {"type": "Started", "status": "True"}],
                    "startTime": "2026-11-30T00:00:00Z", "completionTime": "2026-11-30T00:00:10Z",
                    "succeededCount": i32::from(outcome.is_ok()), "failedCount": i32::from(outcome.is_err())},
            });
            st.resources.insert(
                (
                    api.into(),
                    format!("namespaces/{namespace}/executions/{name}"),
                ),
                execution.clone(),
            );
            ok(execution)
        }
        // `gcloud scheduler jobs run`: the trigger fires now; its target (the renewer job's
        // run URL, or the service) does a pass.
        "run" if api == "cloudscheduler" => {
            let Some(job) = st.resources.get(&(api.into(), resource.into())).cloned() else {
                return error(StatusCode::NOT_FOUND, &format!("{resource} was not found"));
            };
            let uri = job["httpTarget"]["uri"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let env = st
                .resources
                .iter()
                .filter(|((a, p), _)| a == "run" && !p.ends_with("#iam"))
                .find_map(|((_, p), v)| {
                    if p.contains("/services/") && v["status"]["url"] == uri.as_str() {
                        Some(v["spec"]["template"]["spec"]["containers"][0]["env"].clone())
                    } else if p.contains("/jobs/")
                        && uri.ends_with(&format!(
                            "/jobs/{}:run",
                            p.rsplit('/').next().unwrap_or("-")
                        ))
                    {
                        Some(
                            v["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]
                                ["env"]
                                .clone(),
                        )
                    } else {
                        None
                    }
                });
            if let Some(env) = env {
                // Scheduler only starts the pass; its result is in the target's logs.
                let _ = renewal_pass(st, &env);
            }
            ok(job)
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            &format!("{api}: custom method {verb} is not faked"),
        ),
    }
}

/// A renewal pass of the renewer whose settings are `env` (a container's `env` list), as far
/// as deploy can see it: with [`Renewals::Issue`], `certs/NAME/current.json` in its bucket
/// names every configured domain.
fn renewal_pass(st: &mut State, env: &Value) -> std::result::Result<(), String> {
    match st.renewals {
        Renewals::Fail => {
            return Err("urn:ietf:params:acme:error:connection: a name did not validate".into())
        }
        Renewals::Nothing => return Ok(()),
        Renewals::Issue => {}
    }
    let settings: Vec<(String, String)> = env
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .filter(|(k, _)| k.starts_with("RENEWER__"))
        .collect();
    let config = renewer::config::Config::parse("", "the job's settings", &settings)
        .map_err(|e| e.to_string())?;
    let bucket = config
        .store
        .url
        .to_string()
        .strip_prefix("gs://")
        .map(|b| b.trim_end_matches('/').to_string())
        .ok_or("the store is not a bucket")?;
    for cert in &config.certificates {
        st.counter += 1;
        let serial = format!("{:032x}", st.counter);
        let mut domains = cert.domains.clone();
        domains.sort();
        let pointer = json!({
            "version": 1,
            "fullchain": format!("certs/{}/{serial}/fullchain.pem", cert.name),
            "privkey": format!("certs/{}/{serial}/privkey.pem", cert.name),
            "name": cert.name, "serial": serial, "domains": domains,
            "key_type": "ecdsa-p256", "issuer": "CN=Fake Issuer",
            "not_before": "2026-11-30T00:00:00Z", "not_after": "2027-02-28T00:00:00Z",
            "chain_sha256": "00", "issued_at": "2026-11-30T00:00:00Z",
        });
        let text = serde_json::to_vec_pretty(&pointer).unwrap_or_default();
        put_object(
            st,
            &bucket,
            &format!("certs/{}/current.json", cert.name),
            text,
        );
    }
    Ok(())
}

/// The metric conditions of an alert policy must use Monitoring's filter language
/// (https://cloud.google.com/monitoring/api/v3/filters), which the real API checks: the error
/// names the field, as the API's does.
fn check_alert_policy(policy: &Value) -> std::result::Result<(), String> {
    let conditions = policy["conditions"].as_array().cloned().unwrap_or_default();
    for (i, condition) in conditions.iter().enumerate() {
        for kind in ["conditionThreshold", "conditionAbsent"] {
            if let Some(filter) = condition[kind]["filter"].as_str() {
                monitoring_filter(filter).map_err(|why| {
                    let field = if kind == "conditionThreshold" {
                        "condition_threshold"
                    } else {
                        "condition_absent"
                    };
                    format!(
                        "Field alert_policy.conditions[{i}].{field}.filter had an invalid value of \"{filter}\": {why}"
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// Monitoring's filter grammar, as far as alert conditions use it:
/// `expr := term { (AND | OR) term }`, `term := [NOT] (comparison | "(" expr ")")`,
/// `comparison := selector op value`, where a selector is `metric.type`, `resource.type`,
/// `metric.label(s).KEY`, `resource.label(s).KEY`, `project` or `group.id`, an op is one of
/// `= != < <= > >=`, and a value is a string, a number, or one of the functions `one_of`,
/// `starts_with`, `ends_with`, `has_substring`, `monitoring.regex.full_match` on strings.
/// Logging's `field=("a" OR "b")` is not in it.
pub fn monitoring_filter(filter: &str) -> std::result::Result<(), String> {
    #[derive(Debug, Clone, PartialEq)]
    enum T {
        Str,
        Num,
        Ident(String),
        Op,
        Open,
        Close,
        Comma,
    }
    let mut tokens = Vec::new();
    let chars: Vec<char> = filter.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            if i >= chars.len() {
                return Err("unterminated string".into());
            }
            i += 1;
            tokens.push(T::Str);
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            tokens.push(T::Num);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.-".contains(chars[i]))
            {
                i += 1;
            }
            tokens.push(T::Ident(chars[start..i].iter().collect()));
        } else if "=!<>".contains(c) {
            i += 1;
            if i < chars.len() && chars[i] == '=' {
                i += 1;
            }
            tokens.push(T::Op);
        } else if c == '(' {
            i += 1;
            tokens.push(T::Open);
        } else if c == ')' {
            i += 1;
            tokens.push(T::Close);
        } else if c == ',' {
            i += 1;
            tokens.push(T::Comma);
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    let selector = |s: &str| {
        matches!(s, "metric.type" | "resource.type" | "project" | "group.id")
            || [
                "metric.label.",
                "metric.labels.",
                "resource.label.",
                "resource.labels.",
            ]
            .iter()
            .any(|p| s.strip_prefix(p).is_some_and(|k| !k.is_empty()))
    };
    let function = |s: &str| {
        matches!(
            s,
            "one_of"
                | "starts_with"
                | "ends_with"
                | "has_substring"
                | "monitoring.regex.full_match"
        )
    };
    // A recursive-descent check over the tokens.
    fn expr(
        t: &[T],
        at: &mut usize,
        selector: &dyn Fn(&str) -> bool,
        function: &dyn Fn(&str) -> bool,
    ) -> std::result::Result<(), String> {
        term(t, at, selector, function)?;
        while matches!(t.get(*at), Some(T::Ident(k)) if k == "AND" || k == "OR") {
            *at += 1;
            term(t, at, selector, function)?;
        }
        Ok(())
    }
    fn term(
        t: &[T],
        at: &mut usize,
        selector: &dyn Fn(&str) -> bool,
        function: &dyn Fn(&str) -> bool,
    ) -> std::result::Result<(), String> {
        if matches!(t.get(*at), Some(T::Ident(k)) if k == "NOT") {
            *at += 1;
        }
        match t.get(*at) {
            Some(T::Open) => {
                *at += 1;
                expr(t, at, selector, function)?;
                if t.get(*at) != Some(&T::Close) {
                    return Err("expected )".into());
                }
                *at += 1;
                Ok(())
            }
            Some(T::Ident(name)) if selector(name) => {
                *at += 1;
                if t.get(*at) != Some(&T::Op) {
                    return Err(format!("expected an operator after {name}"));
                }
                *at += 1;
                match t.get(*at) {
                    Some(T::Str | T::Num) => {
                        *at += 1;
                        Ok(())
                    }
                    Some(T::Ident(f)) if function(f) => {
                        *at += 1;
                        if t.get(*at) != Some(&T::Open) {
                            return Err(format!("expected ( after {f}"));
                        }
                        *at += 1;
                        loop {
                            if t.get(*at) != Some(&T::Str) {
                                return Err(format!("{f} takes strings"));
                            }
                            *at += 1;
                            match t.get(*at) {
                                Some(T::Comma) => *at += 1,
                                Some(T::Close) => {
                                    *at += 1;
                                    return Ok(());
                                }
                                _ => return Err(format!("expected , or ) in {f}")),
                            }
                        }
                    }
                    other => Err(format!(
                        "after {name} and its operator, expected a string, a number or a function, not {other:?}"
                    )),
                }
            }
            other => Err(format!("expected a selector, not {other:?}")),
        }
    }
    let mut at = 0;
    expr(&tokens, &mut at, &selector, &function)?;
    if at != tokens.len() {
        return Err(format!("unexpected {:?}", tokens[at]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::monitoring_filter;

    #[test]
    fn monitoring_filters_follow_the_documented_grammar() {
        for ok in [
            r#"metric.type = "logging.googleapis.com/user/x" AND resource.type = one_of("cloud_run_job", "cloud_run_revision")"#,
            r#"metric.type="a/b" AND resource.label.host = one_of("a.example", "b.example")"#,
            r#"resource.labels.zone = starts_with("europe-") AND NOT metric.label.x = "y""#,
            r#"(metric.type = "a" OR metric.type = "b") AND project = "p""#,
        ] {
            monitoring_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            r#"metric.type = "a" AND resource.type=("cloud_run_job" OR "cloud_run_revision")"#,
            r#"jsonPayload.message = "x""#,
            r#"metric.type "a""#,
            r#"metric.type = unknown_function("a")"#,
            r#"metric.type = "a" AND"#,
        ] {
            assert!(monitoring_filter(bad).is_err(), "{bad} accepted");
        }
    }
}
