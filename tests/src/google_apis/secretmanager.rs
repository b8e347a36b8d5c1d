//! Secret Manager, as far as gcloud uses it in the deploy (the renewer's own client is served
//! by [`crate::secret_manager`]).

use axum::response::Response;
use serde_json::{json, Value};

use super::reply::ok;
use super::state::State;

/// `addVersion`: the next version of the secret, ENABLED; the answer leaves out the payload.
pub(super) fn add_version(st: &mut State, api: &str, resource: &str, body: &Value) -> Response {
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
