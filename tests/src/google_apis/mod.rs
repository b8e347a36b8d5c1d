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
//!
//! Inside, `state` holds what the fake keeps; `routes` takes a request to the generic resource
//! store (`resource`) or to the module of the API whose conventions apply (`compute`,
//! `storage`, `iam`, `cloudbuild`, `monitoring`, `serviceusage`, `secretmanager`, `dns`, and
//! `renewals` for what a run of the renewer job leaves behind); `reply` shapes the answers.

mod cloudbuild;
mod compute;
mod dns;
mod iam;
mod monitoring;
mod renewals;
mod reply;
mod resource;
mod routes;
mod secretmanager;
mod serviceusage;
mod state;
mod storage;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::Request;
use axum::Router;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

pub use monitoring::monitoring_filter;
pub use state::{ApiRequest, Renewals, PROJECT_NUMBER};

use state::State;

/// APIs the deploy uses, by the name gcloud's endpoint-override property has.
pub const APIS: &[&str] = &[
    "artifactregistry",
    "cloudbuild",
    "cloudresourcemanager",
    "cloudscheduler",
    "compute",
    "dns",
    "iam",
    "logging",
    "monitoring",
    "run",
    "secretmanager",
    "serviceusage",
    "storage",
];

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
            move |req: Request<Body>| routes::handle(state.clone(), req)
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
        resource::decorate(api, path, &mut value, &mut st.counter);
        st.resources
            .insert((api.to_string(), path.to_string()), value);
    }

    /// A public Cloud DNS managed zone `name` of `project` for `dns_name` (`example.com.`), as
    /// an operator makes one before a deploy with DNS_ZONE (deploy never creates zones).
    pub fn add_dns_zone(&self, project: &str, name: &str, dns_name: &str) {
        self.seed(
            "dns",
            &format!("projects/{project}/managedZones/{name}"),
            json!({"kind": "dns#managedZone", "name": name, "dnsName": dns_name,
                "visibility": "public", "id": "4917403913461234567",
                "nameServers": ["ns-cloud-a1.googledomains.com.", "ns-cloud-a2.googledomains.com."],
                "creationTime": "2026-11-22T00:00:00.000Z", "description": ""}),
        );
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
        storage::put_object(&mut st, bucket, name, media.to_vec());
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
