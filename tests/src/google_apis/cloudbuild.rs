//! Cloud Build.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::reply::{error, ok};
use super::state::State;

/// Cloud Build: the build succeeds at once, and its images appear in Artifact Registry (so
/// the deploy's "is this tag built?" check sees them next time).
pub(super) fn build(st: &mut State, collection: &str, mut body: Value) -> Response {
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
