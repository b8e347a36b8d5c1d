//! What a renewal pass leaves behind where deploy looks: a run of the renewer's Cloud Run job
//! (`gcloud run jobs execute`) or Scheduler's forced run of its trigger (`gcloud scheduler
//! jobs run`). The real renewer cannot run here (no ACME CA), so the fake writes what a pass
//! would, as [`Renewals`] says.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::reply::{error, ok};
use super::state::{Renewals, State};
use super::storage::put_object;

/// `gcloud run jobs execute`: an execution of the job (v1), run to its end at once.
pub(super) fn execute_job(st: &mut State, api: &str, resource: &str) -> Response {
    let Some(job) = st.resources.get(&(api.into(), resource.into())).cloned() else {
        return error(StatusCode::NOT_FOUND, &format!("{resource} was not found"));
    };
    let env = job["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]["env"].clone();
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

/// `gcloud scheduler jobs run`: the trigger fires now; its target (the renewer job's run URL,
/// or the service) does a pass.
pub(super) fn run_trigger(st: &mut State, api: &str, resource: &str) -> Response {
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
                    v["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]["env"]
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
