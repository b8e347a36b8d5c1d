//! A fake of the GCE metadata server's token endpoint.
//!
//! On Cloud Run / GCE the filter and the renewer get their GCS access token from the metadata
//! server; tests point them here instead, and use `hits()` to check caching (a token within its
//! lifetime must not be fetched again).

use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::server::{RecordedRequest, ServerTask};

/// The path the real metadata server serves the default service account's token on.
pub const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

#[derive(Debug)]
pub struct MetadataServer {
    state: Arc<Mutex<MetaState>>,
    server: ServerTask,
}

#[derive(Debug)]
struct MetaState {
    token: String,
    expires_in: u64,
    hits: usize,
    requests: Vec<RecordedRequest>,
}

impl MetadataServer {
    /// Starts with token "test-access-token" valid for 3599 s (what the real server typically
    /// answers with a fresh token).
    pub async fn start() -> Result<MetadataServer> {
        Self::start_with("test-access-token", 3599).await
    }

    pub async fn start_with(token: &str, expires_in: u64) -> Result<MetadataServer> {
        let state = Arc::new(Mutex::new(MetaState {
            token: token.to_string(),
            expires_in,
            hits: 0,
            requests: Vec::new(),
        }));
        let router = Router::new().fallback(handle).with_state(state.clone());
        let server = ServerTask::spawn(router).await?;
        Ok(MetadataServer { state, server })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `127.0.0.1:<port>`, the form of `GCE_METADATA_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// Changes the token handed out from now on (e.g. to check a refresh picked it up).
    pub fn set_token(&self, token: &str, expires_in: u64) {
        let mut st = self.state.lock().unwrap();
        st.token = token.to_string();
        st.expires_in = expires_in;
    }

    /// Requests to the token path, refused ones (no `metadata-flavor`) included.
    pub fn hits(&self) -> usize {
        self.state.lock().unwrap().hits
    }

    /// Every request, whatever the path.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }
}

async fn handle(
    State(state): State<Arc<Mutex<MetaState>>>,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
) -> Response {
    let mut st = state.lock().unwrap();
    st.requests
        .push(RecordedRequest::new(&method, &uri, version, &headers));
    if uri.path() != TOKEN_PATH {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    st.hits += 1;
    // The real server refuses requests without the header, to defeat SSRF through proxies.
    let flavor_ok = headers
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google");
    if !flavor_ok {
        return (StatusCode::FORBIDDEN, "missing Metadata-Flavor: Google").into_response();
    }
    if method != Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let body = serde_json::json!({
        "access_token": st.token,
        "expires_in": st.expires_in,
        "token_type": "Bearer",
    })
    .to_string();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("metadata-flavor"), "Google"),
        ],
        body,
    )
        .into_response()
}
