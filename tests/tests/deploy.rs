//! `make deploy`, `make deploy-plan` and `make destroy` with the real gcloud against a
//! recording fake of the Google APIs (harness::google_apis): no cloud account needed.
//!
//! What is asserted is what gcloud actually sent: least-privilege IAM bindings, the bucket's
//! protection, the Scheduler target, the job's command and settings, the load balancer's
//! affinity, and that a second deploy sends no request that changes anything.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use harness::{envoy_validate, repo_root, wasm_path, ApiRequest, GoogleApis, Renewals, TlsFiles};
use serde_json::Value;

const PROJECT: &str = "acme-edge-test";
const RENEWER_SA: &str = "serviceAccount:acme-edge-renewer@acme-edge-test.iam.gserviceaccount.com";
const SCHEDULER_SA: &str =
    "serviceAccount:acme-edge-scheduler@acme-edge-test.iam.gserviceaccount.com";
const NODE_SA: &str = "serviceAccount:acme-edge-node@acme-edge-test.iam.gserviceaccount.com";
const BUILD_SA: &str = "serviceAccount:acme-edge-build@acme-edge-test.iam.gserviceaccount.com";
const BUCKET: &str = "acme-edge-test-acme-edge";

fn write_config(dir: &Path, extra: &str) -> Result<PathBuf> {
    let path = dir.join("config.env");
    std::fs::write(
        &path,
        format!(
            "# test settings\nPROJECT={PROJECT}\nREGION=europe-west1\n\
             DOMAINS=\"ws.example.com chat.example.com\"   # two names, one certificate\n\
             CONTACT_EMAIL=ops@example.com\n\
             APP_IMAGE=europe-west1-docker.pkg.dev/{PROJECT}/apps/chat:1.0\n\
             IMAGE_TAG=test1\nALERT_EMAIL=oncall@example.com\n{extra}"
        ),
    )?;
    Ok(path)
}

struct Made {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn make(args: &[&str], config: &Path, env: &[(String, String)]) -> Result<Made> {
    static GCLOUD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let found = *GCLOUD.get_or_init(|| {
        Command::new("gcloud")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        bail!("gcloud not found: these tests run the real Google Cloud CLI (https://cloud.google.com/sdk/docs/install)");
    }
    let out = Command::new("make")
        .current_dir(repo_root())
        .arg("-s")
        .args(args)
        .arg(format!("CONFIG={}", config.display()))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .context("run make")?;
    Ok(Made {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn deploy(fake: &GoogleApis, config: &Path, gcloud_dir: &Path) -> Result<Made> {
    let made = make(&["deploy"], config, &fake.gcloud_env(gcloud_dir))?;
    if !made.ok {
        let lines: Vec<String> = fake.requests().iter().map(ApiRequest::line).collect();
        bail!(
            "make deploy failed\nstdout:\n{}\nstderr:\n{}\nrequests:\n{}",
            made.stdout,
            made.stderr,
            lines.join("\n")
        );
    }
    Ok(made)
}

/// The request that created (POST) something under `path_suffix` in `api`, by name.
fn created<'a>(reqs: &'a [ApiRequest], api: &str, collection_suffix: &str) -> Vec<&'a ApiRequest> {
    reqs.iter()
        .filter(|r| r.api == api && r.method == "POST" && r.path.ends_with(collection_suffix))
        .collect()
}

/// (role, member, condition title) of every binding in a policy.
fn bindings(policy: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for b in policy["bindings"].as_array().cloned().unwrap_or_default() {
        for m in b["members"].as_array().cloned().unwrap_or_default() {
            out.push((
                b["role"].as_str().unwrap_or_default().to_string(),
                m.as_str().unwrap_or_default().to_string(),
                b["condition"]["title"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
    }
    out.sort();
    out
}

fn b(role: &str, member: &str, title: &str) -> (String, String, String) {
    (role.into(), member.into(), title.into())
}

/// The stored resources of `api` whose path contains `part` (what exists now, whatever the
/// requests that made it: a refused first attempt is retried).
fn stored(fake: &GoogleApis, api: &str, part: &str) -> Vec<Value> {
    fake.paths(api)
        .into_iter()
        .filter(|p| p.contains(part) && !p.ends_with("#iam"))
        .filter_map(|p| fake.resource(api, &p))
        .collect()
}

fn metadata_item(template: &Value, key: &str) -> Option<String> {
    template["properties"]["metadata"]["items"]
        .as_array()?
        .iter()
        .find(|i| i["key"] == key)
        .and_then(|i| i["value"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_creates_least_privilege_resources_and_a_second_run_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fake = GoogleApis::start(PROJECT).await?;
    let config = write_config(dir.path(), "")?;
    let gcloud_dir = dir.path().join("gcloud");
    let first = deploy(&fake, &config, &gcloud_dir)?;
    assert!(
        first.stdout.contains("203.0.113.10"),
        "the static IP is printed:\n{}",
        first.stdout
    );
    assert!(
        first
            .stdout
            .contains("gcloud run jobs execute acme-edge-renewer"),
        "{}",
        first.stdout
    );
    // A fresh project: IAM did not see the new accounts at once, nor alerting the new log
    // metrics; deploy said what it waited for and got through.
    for waited in [
        "waiting for IAM to see serviceAccount:acme-edge-",
        "waiting for the log-based metrics to reach alerting",
    ] {
        assert!(first.stderr.contains(waited), "{waited}:\n{}", first.stderr);
    }
    let reqs = fake.requests();

    // APIs, registry, images: built by the build account, logs in Cloud Logging only.
    let enable = created(&reqs, "serviceusage", ":batchEnable");
    assert_eq!(enable.len(), 1);
    let build = created(&reqs, "cloudbuild", "/builds");
    assert_eq!(build.len(), 2, "the renewer image and the Envoy mirror");
    for b in &build {
        assert_eq!(
            b.body["serviceAccount"],
            format!(
                "projects/{PROJECT}/serviceAccounts/{}",
                BUILD_SA.trim_start_matches("serviceAccount:")
            )
        );
        assert_eq!(b.body["options"]["logging"], "CLOUD_LOGGING_ONLY");
    }
    assert_eq!(
        build[0].body["images"][0],
        "europe-west1-docker.pkg.dev/acme-edge-test/acme-edge/renewer:test1"
    );
    // Its source was staged where the build account may read, and nowhere else.
    let source = &build[0].body["source"]["storageSource"];
    assert_eq!(source["bucket"], BUCKET);
    assert!(
        source["object"]
            .as_str()
            .is_some_and(|o| o.starts_with("build-source/")),
        "{source}"
    );
    // Envoy comes from the project's own mirror of the pinned upstream tag.
    assert_eq!(
        build[1].body["steps"][0]["args"][1],
        "envoyproxy/envoy:v1.40.0"
    );
    let mirror = build[1].body["images"][0].as_str().unwrap_or_default();
    assert!(
        mirror.starts_with("europe-west1-docker.pkg.dev/acme-edge-test/acme-edge/envoy:v1.40.0-"),
        "{mirror}"
    );

    // The bucket: uniform access, public access prevented, challenges expire.
    let bucket = reqs
        .iter()
        .find(|r| {
            r.api == "storage" && r.method == "POST" && r.path == "b" && r.body["name"] == BUCKET
        })
        .context("bucket created")?;
    assert_eq!(
        bucket.body["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"],
        true
    );
    assert_eq!(
        bucket.body["iamConfiguration"]["publicAccessPrevention"],
        "enforced"
    );
    let rule = &bucket.body["lifecycle"]["rule"][0];
    assert_eq!(rule["action"]["type"], "Delete");
    assert_eq!(rule["condition"]["matchesPrefix"][0], "acme-challenge/");
    let rule = &bucket.body["lifecycle"]["rule"][1];
    assert_eq!(rule["condition"]["matchesPrefix"][0], "build-source/");

    // IAM, as stored after every setIamPolicy: exactly these grants, nowhere public.
    let policy = |api: &str, path: &str| {
        fake.resource(api, &format!("{path}#iam"))
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        bindings(&policy("storage", &format!("b/{BUCKET}"))),
        vec![
            b("roles/storage.objectAdmin", RENEWER_SA, ""),
            b("roles/storage.objectViewer", BUILD_SA, "build-source-only"),
            b("roles/storage.objectViewer", NODE_SA, "acme-challenge-only"),
        ]
    );
    let bucket_policy = policy("storage", &format!("b/{BUCKET}"));
    let condition = bucket_policy["bindings"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|b| b["condition"]["title"] == "acme-challenge-only")
        })
        .context("viewer binding")?;
    assert_eq!(
        condition["condition"]["expression"],
        format!(
            "resource.name.startsWith(\"projects/_/buckets/{BUCKET}/objects/acme-challenge/\")"
        )
    );
    assert_eq!(
        bindings(&policy(
            "secretmanager",
            &format!("projects/{PROJECT}/secrets/acme-edge-site")
        )),
        vec![
            b("roles/secretmanager.secretAccessor", NODE_SA, ""),
            b("roles/secretmanager.secretAccessor", RENEWER_SA, ""),
            b("roles/secretmanager.secretVersionManager", RENEWER_SA, ""),
            b("roles/secretmanager.viewer", NODE_SA, ""),
            b("roles/secretmanager.viewer", RENEWER_SA, ""),
        ]
    );
    assert_eq!(
        bindings(&policy(
            "secretmanager",
            &format!("projects/{PROJECT}/secrets/acme-edge-cookie-secret")
        )),
        vec![b("roles/secretmanager.secretAccessor", NODE_SA, "")]
    );
    assert_eq!(
        bindings(&policy(
            "artifactregistry",
            &format!("projects/{PROJECT}/locations/europe-west1/repositories/acme-edge")
        )),
        vec![
            b("roles/artifactregistry.reader", NODE_SA, ""),
            b("roles/artifactregistry.writer", BUILD_SA, ""),
        ]
    );
    // The scheduler may only run the renewer job; nobody else got anything on it.
    assert_eq!(
        bindings(&policy(
            "run",
            &format!("projects/{PROJECT}/locations/europe-west1/jobs/acme-edge-renewer")
        )),
        vec![b("roles/run.invoker", SCHEDULER_SA, "")]
    );
    // At project level only what the nodes need there: log writing, and the membership
    // role (listing instances cannot be granted per resource); and the build's log writing.
    // Nothing for the renewer.
    let members_role = format!("projects/{PROJECT}/roles/acmeEdgeMembers_acme_edge");
    assert_eq!(
        bindings(&policy(
            "cloudresourcemanager",
            &format!("projects/{PROJECT}")
        )),
        vec![
            b(&members_role, NODE_SA, ""),
            b("roles/logging.logWriter", BUILD_SA, ""),
            b("roles/logging.logWriter", NODE_SA, ""),
        ]
    );
    // The membership role holds exactly the two read permissions `renewer members` uses.
    let role = fake
        .resource("iam", &members_role)
        .context("the membership role")?;
    assert_eq!(
        role["includedPermissions"],
        serde_json::json!([
            "compute.instanceGroupManagers.get",
            "compute.instances.list"
        ])
    );
    // The app port is open between the nodes, by tag, and to nothing else.
    let nodes_rule = fake
        .resource(
            "compute",
            &format!("projects/{PROJECT}/global/firewalls/acme-edge-allow-nodes-app"),
        )
        .context("the nodes' app firewall rule")?;
    assert_eq!(
        nodes_rule["allowed"],
        serde_json::json!([{"IPProtocol": "tcp", "ports": ["8080"]}])
    );
    assert_eq!(
        nodes_rule["sourceTags"],
        serde_json::json!(["acme-edge-node"])
    );
    assert_eq!(
        nodes_rule["targetTags"],
        serde_json::json!(["acme-edge-node"])
    );
    assert!(nodes_rule.get("sourceRanges").is_none(), "{nodes_rule}");
    for r in &reqs {
        let text = r.body.to_string();
        assert!(
            !text.contains("allUsers") && !text.contains("allAuthenticatedUsers"),
            "public grant in {}",
            r.line()
        );
    }
    // The cookie key was generated into the secret, not passed on a command line.
    let version = created(&reqs, "secretmanager", "acme-edge-cookie-secret:addVersion");
    assert_eq!(version.len(), 1);
    assert!(version[0].body["payload"]["data"]
        .as_str()
        .is_some_and(|d| d.len() >= 64));

    // The Cloud Run job: `renewer run` as the renewer service account, settings in env.
    let job = created(&reqs, "run", &format!("namespaces/{PROJECT}/jobs"));
    assert_eq!(job.len(), 1);
    let task = &job[0].body["spec"]["template"]["spec"]["template"]["spec"];
    assert_eq!(
        task["serviceAccountName"],
        RENEWER_SA.trim_start_matches("serviceAccount:")
    );
    let container = &task["containers"][0];
    assert_eq!(container["args"], serde_json::json!(["run"]));
    assert_eq!(
        container["image"],
        "europe-west1-docker.pkg.dev/acme-edge-test/acme-edge/renewer:test1"
    );
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .context("env")?
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().into(),
                e["value"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(
        get("RENEWER__STORE__URL"),
        Some("gs://acme-edge-test-acme-edge")
    );
    assert_eq!(get("RENEWER__ACME__DIRECTORY"), Some("letsencrypt"));
    assert_eq!(get("RENEWER__SECRET_MANAGER__PROJECT"), Some(PROJECT));
    assert_eq!(
        get("RENEWER__CERTIFICATES"),
        Some(
            r#"[{name = "site", domains = ["ws.example.com", "chat.example.com"], key_type = "ecdsa-p256"}]"#
        )
    );
    // The renewer would accept exactly these settings.
    let settings: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("RENEWER__"))
        .cloned()
        .collect();
    let parsed = renewer::config::Config::parse("", "image renewer.toml", &settings)
        .map_err(|e| anyhow::anyhow!("the job's settings do not parse: {e}"))?;
    assert_eq!(
        parsed.certificates[0].domains,
        vec!["ws.example.com", "chat.example.com"]
    );

    // Scheduler: the Run Admin API's jobs.run with an OAuth token of the scheduler account.
    let sched = created(&reqs, "cloudscheduler", "/jobs");
    assert_eq!(sched.len(), 1);
    let target = &sched[0].body["httpTarget"];
    assert_eq!(sched[0].body["schedule"], "17 */12 * * *");
    assert_eq!(sched[0].body["timeZone"], "Etc/UTC");
    assert_eq!(
        target["uri"],
        format!("https://run.googleapis.com/v2/projects/{PROJECT}/locations/europe-west1/jobs/acme-edge-renewer:run")
    );
    assert_eq!(target["httpMethod"], "POST");
    assert_eq!(
        target["oauthToken"]["serviceAccountEmail"],
        SCHEDULER_SA.trim_start_matches("serviceAccount:")
    );

    // Alerting, to the configured address: errors, silence, failed triggers, and what users
    // see (HTTPS with the certificate validated, its expiry). The fake refused any metric
    // filter outside Monitoring's documented grammar.
    let metrics = stored(&fake, "logging", "/metrics/");
    assert_eq!(metrics.len(), 2, "{metrics:?}");
    let policies = stored(&fake, "monitoring", "/alertPolicies/");
    let mut names: Vec<&str> = policies
        .iter()
        .filter_map(|p| p["displayName"].as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "acme-edge: HTTPS check failing",
            "acme-edge: certificate expires soon",
            "acme-edge: no successful renewal pass",
            "acme-edge: renewal failed",
            "acme-edge: renewal trigger failed",
        ]
    );
    let policy = |name: &str| {
        policies
            .iter()
            .find(|p| p["displayName"] == format!("acme-edge: {name}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    for p in &policies {
        assert_eq!(
            p["notificationChannels"].as_array().map(Vec::len),
            Some(1),
            "{p}"
        );
    }
    let failed = &policy("renewal failed")["conditions"][0]["conditionThreshold"];
    assert!(failed["filter"].as_str().is_some_and(|f| f
        .contains("logging.googleapis.com/user/acme-edge-renewal-failures")
        && f.contains("one_of(")));
    // Errors are counted (a delta summed over series), not samples.
    assert_eq!(failed["aggregations"][0]["perSeriesAligner"], "ALIGN_DELTA");
    assert_eq!(
        failed["aggregations"][0]["crossSeriesReducer"],
        "REDUCE_SUM"
    );
    let silent = &policy("no successful renewal pass")["conditions"][0]["conditionAbsent"];
    // Two schedule periods of 12 h, capped at the 23.5 h Monitoring accepts.
    assert_eq!(silent["duration"], "84600s");
    let trigger = &policy("renewal trigger failed")["conditions"][0]["conditionMatchedLog"];
    assert!(trigger["filter"]
        .as_str()
        .is_some_and(|f| f.contains("cloud_scheduler_job") && f.contains("acme-edge-renewal")));
    let expiry = &policy("certificate expires soon")["conditions"][0]["conditionThreshold"];
    assert_eq!(expiry["thresholdValue"], 14.0);
    assert!(expiry["filter"]
        .as_str()
        .is_some_and(|f| f.contains("uptime_check/time_until_ssl_cert_expires")));
    let checks = stored(&fake, "monitoring", "/uptimeCheckConfigs/");
    let mut hosts: Vec<&str> = checks
        .iter()
        .filter_map(|c| c["monitoredResource"]["labels"]["host"].as_str())
        .collect();
    hosts.sort();
    assert_eq!(hosts, vec!["chat.example.com", "ws.example.com"]);
    for c in &checks {
        assert_eq!(c["httpCheck"]["useSsl"], true, "{c}");
        assert_eq!(c["httpCheck"]["validateSsl"], true, "{c}");
        assert_eq!(c["httpCheck"]["port"], 443, "{c}");
        assert_eq!(c["httpCheck"]["path"], "/.edge/healthz", "{c}");
    }

    // Network: passthrough TCP 80/443 on the static IP, client-IP affinity, narrow firewall.
    let backend = created(&reqs, "compute", "/backendServices");
    assert_eq!(backend[0].body["sessionAffinity"], "CLIENT_IP");
    assert_eq!(backend[0].body["loadBalancingScheme"], "EXTERNAL");
    assert_eq!(backend[0].body["protocol"], "TCP");
    let rule = created(&reqs, "compute", "/forwardingRules");
    assert_eq!(rule[0].body["ports"], serde_json::json!(["80", "443"]));
    assert_eq!(rule[0].body["IPProtocol"], "TCP");
    assert!(rule[0].body["IPAddress"]
        .as_str()
        .is_some_and(|a| a.ends_with("/addresses/acme-edge-ip")));
    let firewalls = created(&reqs, "compute", "/global/firewalls");
    assert_eq!(firewalls.len(), 3);
    // From outside, only 80 and 443 (the app port rule, checked above, is node to node).
    for fw in firewalls
        .iter()
        .filter(|f| f.body["name"] != "acme-edge-allow-nodes-app")
    {
        assert_eq!(fw.body["targetTags"], serde_json::json!(["acme-edge-node"]));
        let ports: Vec<String> = fw.body["allowed"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["ports"].as_array().cloned().unwrap_or_default())
            .map(|p| p.as_str().unwrap_or_default().to_string())
            .collect();
        assert!(ports.iter().all(|p| p == "80" || p == "443"), "{ports:?}");
    }
    let hc_rule = firewalls
        .iter()
        .find(|f| f.body["name"] == "acme-edge-allow-health-checks")
        .context("hc rule")?;
    assert_eq!(
        hc_rule.body["sourceRanges"],
        serde_json::json!([
            "35.191.0.0/16",
            "130.211.0.0/22",
            "209.85.152.0/22",
            "209.85.204.0/22"
        ])
    );

    // Nodes: no external address, the node account, autohealing on Envoy's health path.
    let template = created(&reqs, "compute", "/global/instanceTemplates");
    assert_eq!(template.len(), 1);
    let props = &template[0].body["properties"];
    assert!(props["networkInterfaces"][0]["accessConfigs"]
        .as_array()
        .is_none_or(Vec::is_empty));
    assert_eq!(
        props["serviceAccounts"][0]["email"],
        NODE_SA.trim_start_matches("serviceAccount:")
    );
    let mig = created(&reqs, "compute", "/instanceGroupManagers");
    assert_eq!(mig[0].body["targetSize"], 2);
    // Autohealing gives a booting node 10 minutes before its health check counts.
    assert_eq!(
        mig[0].body["autoHealingPolicies"][0]["initialDelaySec"],
        600
    );
    let hc = created(&reqs, "compute", "/healthChecks");
    assert_eq!(
        hc[0].body["httpHealthCheck"]["requestPath"],
        "/.edge/healthz"
    );

    // The Envoy config the node's startup script renders from this template validates.
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&node_dir)?;
    for (key, file) in [
        ("startup-script", "startup.sh"),
        ("acme-edge-settings", "node.env"),
        ("acme-edge-render", "render.sh"),
    ] {
        let value =
            metadata_item(&template[0].body, key).with_context(|| format!("metadata {key}"))?;
        std::fs::write(node_dir.join(file), value)?;
    }
    let renewer_env =
        metadata_item(&template[0].body, "acme-edge-renewer-env").context("renewer env")?;
    assert!(
        renewer_env.contains("RENEWER__SYNC__SOURCE=secret-manager"),
        "{renewer_env}"
    );
    // The nodes never need the CA: renewer-only settings are not in their template. They
    // trust only its roots (shipped in the image).
    assert!(!renewer_env.contains("RENEWER__ACME__"), "{renewer_env}");
    assert!(
        renewer_env.contains("RENEWER__SYNC__TRUSTED_ROOTS=/etc/acme-edge/roots/letsencrypt.pem"),
        "{renewer_env}"
    );
    // Envoy by digest, from the project's mirror.
    let node_env = metadata_item(&template[0].body, "acme-edge-settings").context("node.env")?;
    let envoy = node_env
        .lines()
        .find_map(|l| l.strip_prefix("ENVOY_IMAGE="))
        .context("ENVOY_IMAGE")?;
    assert!(
        envoy.starts_with("europe-west1-docker.pkg.dev/acme-edge-test/acme-edge/envoy@sha256:"),
        "{envoy}"
    );
    let tls = TlsFiles::self_signed(&["ws.example.com"])?;
    // What `renewer members --init` leaves before Envoy starts on a node.
    let members = tempfile::tempdir()?;
    renewer::node::eds::install(
        members.path(),
        &renewer::node::eds::render("app", 8080, &[]),
    )?;
    let rendered = Command::new("bash")
        .arg(node_dir.join("startup.sh"))
        .args(["render"])
        .arg(node_dir.join("node.env"))
        .arg(node_dir.join("render.sh"))
        .env(
            "COOKIE_SECRET",
            "test-cookie-secret-0123456789abcdefghijklmnopqrstuvwxyz",
        )
        .env("WASM_PATH", wasm_path())
        .env("TLS_DIR", tls.path())
        .env("MEMBERS_DIR", members.path())
        .env("NODE_ID", "acme-edge-node-abcd")
        .output()?;
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let yaml = String::from_utf8(rendered.stdout)?;
    assert!(
        yaml.contains(&format!("/storage/v1/b/{BUCKET}/o/acme-challenge")),
        "store mode on the bucket"
    );
    assert!(
        yaml.contains("type: EDS") && yaml.contains("eds.json"),
        "the app cluster is the membership"
    );
    assert!(
        yaml.contains("cluster: node_ready") && yaml.contains("port_value: 9903"),
        "/.edge/healthz is the node's readiness from renewer sync"
    );
    // The instances carry the label `renewer members` lists them by.
    assert_eq!(
        props["labels"]["acme-edge-group"], "acme-edge-nodes",
        "{}",
        props["labels"]
    );
    let (valid, output) = envoy_validate(&yaml).await?;
    assert!(
        valid,
        "the node's Envoy config does not validate:\n{output}"
    );

    // A second run: lookups only.
    fake.clear_requests();
    let second = deploy(&fake, &config, &gcloud_dir)?;
    let changes: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.is_mutation())
        .map(ApiRequest::line)
        .collect();
    assert!(
        changes.is_empty(),
        "the second deploy changed things:\n{}\n{}",
        changes.join("\n"),
        second.stderr
    );
    assert!(!fake.requests().is_empty());

    // Teardown without --purge keeps the bucket, secrets and repository, whose policies then
    // name the deleted accounts as `deleted:` members; a deploy restores every grant, for
    // the new accounts of the same names.
    let kept = [
        ("storage", format!("b/{BUCKET}")),
        (
            "secretmanager",
            format!("projects/{PROJECT}/secrets/acme-edge-site"),
        ),
        (
            "secretmanager",
            format!("projects/{PROJECT}/secrets/acme-edge-cookie-secret"),
        ),
        (
            "artifactregistry",
            format!("projects/{PROJECT}/locations/europe-west1/repositories/acme-edge"),
        ),
    ];
    let iam_policy = |api: &str, path: &str| {
        fake.resource(api, &format!("{path}#iam"))
            .unwrap_or(Value::Null)
    };
    let live = |api: &str, path: &str| {
        bindings(&iam_policy(api, path))
            .into_iter()
            .filter(|(_, m, _)| !m.starts_with("deleted:"))
            .collect::<Vec<_>>()
    };
    let before: Vec<_> = kept.iter().map(|(a, p)| live(a, p)).collect();
    let gone = make(
        &["destroy", "YES=1"],
        &config,
        &fake.gcloud_env(&gcloud_dir),
    )?;
    assert!(gone.ok, "{}\n{}", gone.stdout, gone.stderr);
    let bucket_policy = iam_policy("storage", &format!("b/{BUCKET}"));
    assert!(
        bucket_policy
            .to_string()
            .contains("deleted:serviceAccount:acme-edge-renewer@"),
        "{bucket_policy}"
    );
    assert!(live("storage", &format!("b/{BUCKET}")).is_empty());
    deploy(&fake, &config, &gcloud_dir)?;
    let after: Vec<_> = kept.iter().map(|(a, p)| live(a, p)).collect();
    assert_eq!(after, before, "every grant is back");

    // Teardown with --purge leaves nothing of ours.
    fake.clear_requests();
    let gone = make(
        &["destroy", "YES=1", "PURGE=1"],
        &config,
        &fake.gcloud_env(&gcloud_dir),
    )?;
    assert!(
        gone.ok,
        "make destroy failed:\n{}\n{}",
        gone.stdout, gone.stderr
    );
    for api in [
        "compute",
        "run",
        "cloudscheduler",
        "secretmanager",
        "iam",
        "logging",
        "monitoring",
        "artifactregistry",
    ] {
        let left: Vec<String> = fake
            .paths(api)
            .into_iter()
            .filter(|p| {
                !p.contains("/operations/")
                    && !p.contains("debian-cloud")
                    && !p.ends_with("/networks/default")
            })
            .filter(|p| !p.ends_with("#iam") && !p.contains("/packages/"))
            // A deleted IAM role stays for 7 days, marked deleted (as on the real API).
            .filter(|p| fake.resource(api, p).is_none_or(|r| r["deleted"] != true))
            .collect();
        assert!(left.is_empty(), "{api} still has {left:?}");
    }
    assert!(
        fake.resource("storage", &format!("b/{BUCKET}")).is_none(),
        "bucket purged"
    );
    let project_policy = fake
        .resource("cloudresourcemanager", &format!("projects/{PROJECT}#iam"))
        .unwrap_or(Value::Null);
    assert!(
        bindings(&project_policy).is_empty(),
        "project grant removed: {project_policy}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn service_mode_is_private_and_a_settings_change_touches_only_what_changed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fake = GoogleApis::start(PROJECT).await?;
    let gcloud_dir = dir.path().join("gcloud");
    let config = write_config(dir.path(), "MODE=service\nALERT_EMAIL=\n")?;
    deploy(&fake, &config, &gcloud_dir)?;
    let reqs = fake.requests();

    let service = created(&reqs, "run", &format!("namespaces/{PROJECT}/services"));
    assert_eq!(service.len(), 1, "one Cloud Run service");
    let spec = &service[0].body["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["args"], serde_json::json!(["serve"]));
    assert_eq!(
        spec["serviceAccountName"],
        RENEWER_SA.trim_start_matches("serviceAccount:")
    );
    assert!(created(&reqs, "run", &format!("namespaces/{PROJECT}/jobs")).is_empty());
    // Private: only the scheduler may invoke it.
    let policy = fake
        .resource(
            "run",
            &format!("projects/{PROJECT}/locations/europe-west1/services/acme-edge-renewer#iam"),
        )
        .unwrap_or(Value::Null);
    assert_eq!(
        bindings(&policy),
        vec![b("roles/run.invoker", SCHEDULER_SA, "")]
    );
    // Scheduler calls it with an OIDC token for its URL.
    let sched = created(&reqs, "cloudscheduler", "/jobs");
    let target = &sched[0].body["httpTarget"];
    let url = "https://acme-edge-renewer-abc123-ew.a.run.app";
    assert_eq!(target["uri"], url);
    assert_eq!(target["oidcToken"]["audience"], url);
    assert_eq!(
        target["oidcToken"]["serviceAccountEmail"],
        SCHEDULER_SA.trim_start_matches("serviceAccount:")
    );
    // No channel without ALERT_EMAIL; the policies still exist.
    assert!(created(&reqs, "monitoring", "/notificationChannels").is_empty());
    assert_eq!(stored(&fake, "monitoring", "/alertPolicies/").len(), 5);

    // Change the schedule, the node count and the alert address: exactly those updates.
    let config = write_config(
        dir.path(),
        "MODE=service\nALERT_EMAIL=new-oncall@example.com\nSCHEDULE=\"5 4 * * *\"\nNODE_COUNT=3\n",
    )?;
    fake.clear_requests();
    deploy(&fake, &config, &gcloud_dir)?;
    let all = fake.requests();
    let changes: Vec<&ApiRequest> = all.iter().filter(|r| r.is_mutation()).collect();
    let lines: Vec<String> = changes.iter().map(|r| r.line()).collect();
    assert_eq!(changes.len(), 8, "{lines:#?}");
    // A channel for the new address, and every policy moved to it.
    let channel = changes
        .iter()
        .find(|r| r.api == "monitoring" && r.method == "POST")
        .context("channel created")?;
    assert_eq!(
        channel.body["labels"]["email_address"],
        "new-oncall@example.com"
    );
    let moved: Vec<&&ApiRequest> = changes
        .iter()
        .filter(|r| r.api == "monitoring" && r.method == "PATCH")
        .collect();
    assert_eq!(moved.len(), 4, "{lines:#?}");
    // A daily schedule is too sparse for "no successful renewal pass" (Monitoring watches
    // for at most 23.5 h of silence): that policy goes, the expiry alert stays.
    assert_eq!(
        changes
            .iter()
            .filter(|r| r.api == "monitoring" && r.method == "DELETE")
            .count(),
        1,
        "{lines:#?}"
    );
    for policy in moved {
        assert_eq!(
            policy.body["notificationChannels"].as_array().map(Vec::len),
            Some(1)
        );
    }
    let sched = changes
        .iter()
        .find(|r| r.api == "cloudscheduler")
        .context("scheduler updated")?;
    assert_eq!(sched.method, "PATCH");
    assert_eq!(sched.body["schedule"], "5 4 * * *");
    let resize = changes
        .iter()
        .find(|r| r.api == "compute")
        .context("group resized")?;
    assert!(
        resize
            .path
            .ends_with("/instanceGroupManagers/acme-edge-nodes/resize"),
        "{}",
        resize.line()
    );
    assert_eq!(resize.query.get("size").map(String::as_str), Some("3"));

    // Back to a job: the job is made, Scheduler runs it with an OAuth token, and the service
    // is removed once nothing points at it.
    let config = write_config(
        dir.path(),
        "ALERT_EMAIL=new-oncall@example.com\nSCHEDULE=\"5 4 * * *\"\nNODE_COUNT=3\n",
    )?;
    fake.clear_requests();
    deploy(&fake, &config, &gcloud_dir)?;
    let reqs = fake.requests();
    let at = |f: &dyn Fn(&ApiRequest) -> bool| reqs.iter().position(f);
    let job = at(&|r| r.api == "run" && r.method == "POST" && r.path.ends_with("/jobs"))
        .context("job created")?;
    let sched = at(&|r| r.api == "cloudscheduler" && r.method == "PATCH")
        .context("scheduler retargeted")?;
    let gone = at(&|r| {
        r.api == "run" && r.method == "DELETE" && r.path.ends_with("/services/acme-edge-renewer")
    })
    .context("service removed")?;
    assert!(
        job < sched && sched < gone,
        "job {job}, scheduler {sched}, service removed {gone}"
    );
    assert!(reqs[sched].body["httpTarget"]["oauthToken"]["serviceAccountEmail"].is_string());
    assert!(fake
        .resource(
            "run",
            &format!("namespaces/{PROJECT}/services/acme-edge-renewer")
        )
        .is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_plan_prints_the_commands_and_calls_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fake = GoogleApis::start(PROJECT).await?;
    let config = write_config(dir.path(), "")?;
    let plan = make(
        &["deploy-plan"],
        &config,
        &fake.gcloud_env(&dir.path().join("gcloud")),
    )?;
    assert!(plan.ok, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        fake.requests().is_empty(),
        "the plan called the API: {:?}",
        fake.requests()
            .iter()
            .map(ApiRequest::line)
            .collect::<Vec<_>>()
    );
    let out = &plan.stdout;
    for needle in [
        "gcloud services enable run.googleapis.com",
        "gcloud builds submit",
        "--uniform-bucket-level-access --public-access-prevention",
        "--role=roles/storage.objectAdmin --member=serviceAccount:acme-edge-renewer@",
        "--role=roles/storage.objectViewer --member=serviceAccount:acme-edge-node@",
        "title=acme-challenge-only",
        "--role=roles/secretmanager.secretVersionManager --member=serviceAccount:acme-edge-renewer@",
        "gcloud run jobs create acme-edge-renewer",
        "--args=run",
        "--role=roles/run.invoker --member=serviceAccount:acme-edge-scheduler@",
        "gcloud scheduler jobs create http acme-edge-renewal",
        "'--schedule=17 */12 * * *'",
        "--oauth-service-account-email=acme-edge-scheduler@",
        "jobs/acme-edge-renewer:run",
        "gcloud alpha monitoring policies create",
        "--session-affinity=CLIENT_IP",
        "--ports=80,443",
        "--no-address",
        "--source-ranges=35.191.0.0/16,130.211.0.0/22,209.85.152.0/22,209.85.204.0/22",
        "gcloud compute instance-groups managed create acme-edge-nodes",
        "RENEWER__STORE__URL: 'gs://acme-edge-test-acme-edge'",
    ] {
        assert!(out.contains(needle), "plan lacks {needle:?}:\n{out}");
    }
    // Every line is a comment, blank, or a gcloud/openssl command the shell can read.
    for line in out.lines() {
        assert!(
            line.is_empty()
                || line.starts_with('#')
                || line.starts_with("gcloud ")
                || line.starts_with("openssl "),
            "unexpected plan line: {line}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_stop_before_any_call_and_name_the_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fake = GoogleApis::start(PROJECT).await?;
    let env = fake.gcloud_env(&dir.path().join("gcloud"));
    let cases = [
        ("DOMAIN=ws.example.com\n", "DOMAIN: unknown setting"),
        ("MODE=lambda\n", "MODE='lambda': expected job or service"),
        ("DOMAINS=\"*.example.com\"\n", "DOMAINS="),
        ("NODE_COUNT=0\n", "NODE_COUNT='0': expected 1-100"),
        ("APP_PORT=443\n", "APP_PORT='443'"),
        (
            "SCHEDULE=daily\n",
            "SCHEDULE='daily': not a 5-field cron schedule",
        ),
        ("this is not a setting\n", "expected KEY=value"),
    ];
    for (extra, message) in cases {
        let config = write_config(dir.path(), extra)?;
        for target in ["deploy", "deploy-plan"] {
            let made = make(&[target], &config, &env)?;
            assert!(!made.ok, "{target} accepted {extra:?}");
            assert!(
                made.stderr.contains(message),
                "{target} with {extra:?}: {}",
                made.stderr
            );
        }
    }
    let missing = dir.path().join("nothing.env");
    let made = make(&["deploy"], &missing, &env)?;
    assert!(
        !made.ok && made.stderr.contains("no such file"),
        "{}",
        made.stderr
    );
    assert!(fake.requests().is_empty());
    // `make destroy` without YES=1 and without a terminal refuses.
    let config = write_config(dir.path(), "")?;
    let made = make(&["destroy"], &config, &env)?;
    assert!(
        !made.ok && made.stderr.contains("without --yes"),
        "{}",
        made.stderr
    );
    assert!(fake.requests().is_empty());
    Ok(())
}

/// No Docker engine here, so the image is not built in the tests; this checks the Dockerfile
/// against what its users expect: the nodes copy the filter from a fixed path, Cloud Run runs
/// the entrypoint with `run` or `serve`, and the runtime stage is not root.
#[test]
fn dockerfile_matches_what_cloud_run_and_the_nodes_expect() -> Result<()> {
    let root = repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile"))?;
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "multi-stage: {stages:?}");
    assert!(
        stages[1].contains("distroless") && stages[1].contains("nonroot"),
        "{}",
        stages[1]
    );
    let runtime = &dockerfile[dockerfile.rfind("FROM ").unwrap_or(0)..];
    assert!(
        runtime.contains("USER nonroot"),
        "runtime stage runs as non-root"
    );
    assert!(runtime.contains(r#"ENTRYPOINT ["/usr/local/bin/renewer"]"#));
    assert!(runtime.contains(r#"CMD ["run"]"#));
    assert!(dockerfile.contains("/out/opt/acme-edge/edge_filter.wasm"));
    assert!(dockerfile.contains("--target wasm32-unknown-unknown"));
    let startup = std::fs::read_to_string(root.join("deploy/node/startup.sh"))?;
    assert!(startup.contains(r#"docker cp "$cid:/opt/acme-edge/edge_filter.wasm""#));
    // The CA roots the nodes' `renewer sync` trusts are in the image, where deploy points.
    assert!(dockerfile.contains("-t /out/etc/acme-edge/roots renewer/roots/*.pem"));
    let deploy = std::fs::read_to_string(root.join("deploy/deploy.sh"))?;
    assert!(root.join("renewer/roots/letsencrypt.pem").is_file());
    assert!(deploy.contains("/etc/acme-edge/roots/letsencrypt.pem"));
    // The build context leaves out local builds and settings; the workspace is all there.
    for ignore in [".dockerignore", ".gcloudignore"] {
        let text = std::fs::read_to_string(root.join(ignore))?;
        for entry in ["target/", ".venv/", "deploy/config.env"] {
            assert!(text.lines().any(|l| l == entry), "{ignore} lacks {entry}");
        }
    }
    Ok(())
}

/// A deploy that must fail; returns what it printed.
fn deploy_fails(fake: &GoogleApis, config: &Path, gcloud_dir: &Path) -> Result<Made> {
    let made = make(&["deploy"], config, &fake.gcloud_env(gcloud_dir))?;
    anyhow::ensure!(
        !made.ok,
        "make deploy succeeded:\n{}\n{}",
        made.stdout,
        made.stderr
    );
    Ok(made)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_build_or_api_error_stops_the_deploy_and_a_rerun_resumes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fake = GoogleApis::start(PROJECT).await?;
    fake.settle_at_once();
    let config = write_config(dir.path(), "")?;
    let gcloud_dir = dir.path().join("gcloud");

    // The image build fails: deploy stops with the build's log, and nothing after it runs.
    fake.fail_builds(true);
    let made = deploy_fails(&fake, &config, &gcloud_dir)?;
    assert!(
        made.stderr.contains("ended FAILURE")
            && made
                .stderr
                .contains("https://console.cloud.google.com/cloud-build/builds/build-"),
        "{}",
        made.stderr
    );
    assert!(made.stderr.contains("stopped during"), "{}", made.stderr);
    let reqs = fake.requests();
    let build = reqs
        .iter()
        .position(|r| r.api == "cloudbuild" && r.method == "POST")
        .context("a build")?;
    for r in &reqs[build + 1..] {
        assert!(
            r.api == "cloudbuild" && r.method == "GET",
            "after the build: {}",
            r.line()
        );
    }

    // The build works again; an outage hits a firewall rule's creation half-way through.
    fake.fail_builds(false);
    fake.fail_once("compute", "POST", "/global/firewalls", 503);
    fake.clear_requests();
    let made = deploy_fails(&fake, &config, &gcloud_dir)?;
    assert!(
        made.stderr.contains("gcloud compute firewall-rules create")
            && made.stderr.contains("stopped during \"firewall"),
        "{}",
        made.stderr
    );
    assert!(fake
        .resource(
            "run",
            &format!("namespaces/{PROJECT}/jobs/acme-edge-renewer")
        )
        .is_some());

    // A rerun picks up where it stopped: nothing made before is made again.
    fake.clear_requests();
    deploy(&fake, &config, &gcloud_dir)?;
    let reqs = fake.requests();
    let made_again: Vec<String> = reqs
        .iter()
        .filter(|r| {
            r.method == "POST" && !r.path.ends_with(":getIamPolicy") && !r.path.ends_with("/wait")
        })
        .filter(|r| {
            [
                "/builds",
                "serviceAccounts",
                "/jobs",
                "/metrics",
                "/alertPolicies",
                "/addresses",
                "/routers",
            ]
            .iter()
            .any(|c| r.path.ends_with(c))
                || (r.api == "storage" && r.path == "b")
        })
        .map(ApiRequest::line)
        .collect();
    assert!(made_again.is_empty(), "made again: {made_again:#?}");
    assert!(
        !created(&reqs, "compute", "/global/firewalls").is_empty(),
        "the rule that failed is made now"
    );
    assert!(!created(&reqs, "compute", "/instanceGroupManagers").is_empty());
    Ok(())
}

/// The public record of the certificate the renewer made current, as deploy reads it.
fn put_certificate(fake: &GoogleApis, names: &[&str]) {
    let pointer =
        serde_json::json!({"version": 1, "name": "site", "serial": "0a", "domains": names});
    fake.put_object(
        BUCKET,
        "certs/site/current.json",
        serde_json::to_string_pretty(&pointer)
            .unwrap_or_default()
            .as_bytes(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn renewer_settings_do_not_roll_the_nodes_and_new_names_are_issued_before_they_roll(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fake = GoogleApis::start(PROJECT).await?;
    fake.settle_at_once();
    let gcloud_dir = dir.path().join("gcloud");
    deploy(&fake, &write_config(dir.path(), "")?, &gcloud_dir)?;
    put_certificate(&fake, &["chat.example.com", "ws.example.com"]);

    // Settings only the renewer reads: the job changes, the nodes do not.
    let renewer_only = "ACME_DIRECTORY=letsencrypt-staging\nKEY_TYPE=ecdsa-p384\nCONTACT_EMAIL=certs@example.com\n";
    fake.clear_requests();
    deploy(&fake, &write_config(dir.path(), renewer_only)?, &gcloud_dir)?;
    let changes: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.is_mutation())
        .map(ApiRequest::line)
        .collect();
    assert_eq!(
        changes,
        vec![format!(
            "PUT run namespaces/{PROJECT}/jobs/acme-edge-renewer"
        )],
        "only the job changes"
    );

    // A new name: the job gets it, a renewal pass runs and deploy waits until the certificate
    // covers it, and only then do the nodes roll, one new node up before an old one goes.
    let three = "DOMAINS=\"ws.example.com chat.example.com api.example.com\"\n";
    fake.clear_requests();
    let made = deploy(
        &fake,
        &write_config(dir.path(), &format!("{renewer_only}{three}"))?,
        &gcloud_dir,
    )?;
    assert!(
        made.stderr
            .contains("the certificate does not cover api.example.com yet: running a renewal pass"),
        "{}",
        made.stderr
    );
    let reqs = fake.requests();
    let at = |f: &dyn Fn(&ApiRequest) -> bool| reqs.iter().position(f);
    let job = at(&|r| r.api == "run" && r.method == "PUT").context("job updated")?;
    let pass = at(&|r| r.api == "run" && r.path.ends_with("/jobs/acme-edge-renewer:run"))
        .context("a renewal pass")?;
    let roll = at(&|r| {
        r.api == "compute"
            && r.method == "PATCH"
            && r.path.ends_with("/instanceGroupManagers/acme-edge-nodes")
    })
    .context("a rolling update")?;
    assert!(
        job < pass && pass < roll,
        "job {job}, pass {pass}, roll {roll}"
    );
    let policy = &reqs[roll].body["updatePolicy"];
    assert_eq!(policy["maxUnavailable"]["fixed"], 0, "{policy}");
    assert_eq!(policy["maxSurge"]["fixed"], 3, "{policy}");
    let template = created(&reqs, "compute", "/global/instanceTemplates");
    assert_eq!(template.len(), 1);
    assert!(reqs[roll].body["versions"][0]["instanceTemplate"]
        .as_str()
        .is_some_and(|t| t.ends_with(template[0].body["name"].as_str().unwrap_or("-"))));
    let issued = String::from_utf8(
        fake.object(BUCKET, "certs/site/current.json")
            .unwrap_or_default(),
    )?;
    assert!(issued.contains("api.example.com"), "{issued}");

    // The next name does not validate: deploy stops before the nodes, and says why.
    fake.set_renewals(Renewals::Fail);
    let four = "DOMAINS=\"ws.example.com chat.example.com api.example.com new.example.com\"\n";
    fake.clear_requests();
    let made = deploy_fails(
        &fake,
        &write_config(dir.path(), &format!("{renewer_only}{four}"))?,
        &gcloud_dir,
    )?;
    for needle in [
        "the renewal pass failed, so the certificate does not cover new.example.com yet",
        "The nodes were not changed",
        "DNS for new.example.com",
    ] {
        assert!(made.stderr.contains(needle), "{needle}:\n{}", made.stderr);
    }
    let rolled: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.api == "compute" && r.is_mutation())
        .map(ApiRequest::line)
        .collect();
    assert!(
        rolled.iter().all(|l| l.contains("/instanceTemplates")),
        "nothing but a template: {rolled:#?}"
    );
    Ok(())
}

/// `(name, value)` of the renewer job's environment, as stored now.
fn job_env(fake: &GoogleApis) -> Result<Vec<(String, String)>> {
    let job = fake
        .resource(
            "run",
            &format!("namespaces/{PROJECT}/jobs/acme-edge-renewer"),
        )
        .context("the renewer job")?;
    Ok(
        job["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .context("env")?
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().into(),
                    e["value"].as_str().unwrap_or_default().into(),
                )
            })
            .collect(),
    )
}

/// `KEY=value` lines (a node's renewer env) as pairs.
fn env_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_zone_issues_with_dns_01_and_grants_the_renewer_that_zone_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fake = GoogleApis::start(PROJECT).await?;
    fake.settle_at_once();
    let gcloud_dir = dir.path().join("gcloud");
    let dns_role = format!("projects/{PROJECT}/roles/acmeEdgeDns_acme_edge");
    let wildcard = "DOMAINS=\"example.com *.example.com\"\n";
    let zone_path = |zone: &str| format!("projects/{PROJECT}/managedZones/{zone}");
    let zone_policy = |zone: &str| {
        fake.resource("dns", &format!("{}#iam", zone_path(zone)))
            .unwrap_or(Value::Null)
    };
    let mutations = |fake: &GoogleApis| -> Vec<String> {
        fake.requests()
            .iter()
            .filter(|r| r.is_mutation())
            .map(ApiRequest::line)
            .collect()
    };

    // A zone that does not exist: deploy stops, naming DNS_ZONE, before it makes anything
    // but the Cloud DNS API (enabled with DNS_ZONE only).
    let config = write_config(dir.path(), &format!("{wildcard}DNS_ZONE=no-such-zone\n"))?;
    let made = deploy_fails(&fake, &config, &gcloud_dir)?;
    assert!(
        made.stderr.contains(
            "DNS_ZONE='no-such-zone': no such Cloud DNS managed zone in project acme-edge-test"
        ),
        "{}",
        made.stderr
    );
    let reqs = fake.requests();
    let enable = created(&reqs, "serviceusage", ":batchEnable");
    assert_eq!(enable.len(), 1);
    assert!(
        enable[0].body["serviceIds"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|i| i == "dns.googleapis.com")),
        "{}",
        enable[0].body
    );
    assert!(reqs
        .iter()
        .any(|r| r.api == "dns" && r.method == "GET" && r.path == zone_path("no-such-zone")));
    assert_eq!(
        mutations(&fake),
        vec![format!(
            "POST serviceusage projects/{PROJECT}/services:batchEnable"
        )]
    );

    // A zone that does not hold the names: stopped too, naming DOMAINS.
    fake.add_dns_zone(PROJECT, "example-org", "example.org.");
    fake.clear_requests();
    let config = write_config(dir.path(), &format!("{wildcard}DNS_ZONE=example-org\n"))?;
    let made = deploy_fails(&fake, &config, &gcloud_dir)?;
    assert!(
        made.stderr.contains("DOMAINS=")
            && made.stderr.contains(
                "example.com is not in the zone DNS_ZONE=example-org names (example.org.)"
            ),
        "{}",
        made.stderr
    );
    assert!(mutations(&fake).is_empty(), "{:#?}", mutations(&fake));

    // The plan says what DNS_ZONE adds, and calls nothing.
    fake.add_dns_zone(PROJECT, "example-com", "example.com.");
    let config = write_config(dir.path(), &format!("{wildcard}DNS_ZONE=example-com\n"))?;
    fake.clear_requests();
    let plan = make(&["deploy-plan"], &config, &fake.gcloud_env(&gcloud_dir))?;
    assert!(plan.ok, "{}", plan.stderr);
    assert!(fake.requests().is_empty());
    for needle in [
        " dns.googleapis.com --project=acme-edge-test",
        "gcloud dns managed-zones describe example-com",
        "gcloud iam roles create acmeEdgeDns_acme_edge",
        "gcloud dns managed-zones get-iam-policy example-com --project=acme-edge-test --format=json | jq ",
        "gcloud dns managed-zones set-iam-policy example-com --project=acme-edge-test --quiet --policy-file=",
    ] {
        assert!(plan.stdout.contains(needle), "plan lacks {needle:?}:\n{}", plan.stdout);
    }

    // The zone exists: the certificate is a dns-01 one, wildcard included.
    fake.clear_requests();
    let first = deploy(&fake, &config, &gcloud_dir)?;
    assert!(
        first
            .stdout
            .contains("the certificate does not wait for that (DNS-01 in zone example-com)"),
        "{}",
        first.stdout
    );
    let reqs = fake.requests();
    // The renewer's role is bound on the zone, with exactly what the renewer calls there; its
    // description remembers the zone.
    assert_eq!(
        bindings(&zone_policy("example-com")),
        vec![b(&dns_role, RENEWER_SA, "")]
    );
    let set_policy: Vec<&ApiRequest> = reqs
        .iter()
        .filter(|r| r.path.ends_with(":setIamPolicy") && r.body.to_string().contains("acmeEdgeDns"))
        .collect();
    assert_eq!(set_policy.len(), 1, "one grant, on the zone");
    assert_eq!(set_policy[0].api, "dns");
    assert_eq!(
        set_policy[0].path,
        format!("projects/{PROJECT}/locations/global/managedZones/example-com:setIamPolicy")
    );
    let role = fake.resource("iam", &dns_role).context("the DNS role")?;
    assert_eq!(
        role["includedPermissions"],
        serde_json::json!([
            "dns.changes.create",
            "dns.changes.get",
            "dns.managedZones.get",
            "dns.resourceRecordSets.create",
            "dns.resourceRecordSets.delete",
            "dns.resourceRecordSets.list",
            "dns.resourceRecordSets.update"
        ])
    );
    assert!(
        role["description"]
            .as_str()
            .is_some_and(|d| d.contains("managed zone example-com only")),
        "{role}"
    );
    // Nothing in DNS, and nothing for the renewer, at project level: the same grants as
    // without DNS_ZONE.
    assert_eq!(
        bindings(
            &fake
                .resource("cloudresourcemanager", &format!("projects/{PROJECT}#iam"))
                .unwrap_or(Value::Null)
        ),
        vec![
            b(
                &format!("projects/{PROJECT}/roles/acmeEdgeMembers_acme_edge"),
                NODE_SA,
                ""
            ),
            b("roles/logging.logWriter", BUILD_SA, ""),
            b("roles/logging.logWriter", NODE_SA, ""),
        ]
    );
    // The job issues with DNS-01 in that zone, and the renewer accepts its settings.
    let env = job_env(&fake)?;
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("RENEWER__DNS__PROJECT"), Some(PROJECT));
    assert_eq!(get("RENEWER__DNS__ZONE"), Some("example-com"));
    assert_eq!(
        get("RENEWER__CERTIFICATES"),
        Some(
            r#"[{name = "site", domains = ["example.com", "*.example.com"], key_type = "ecdsa-p256", challenge = "dns-01"}]"#
        )
    );
    let settings: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("RENEWER__"))
        .cloned()
        .collect();
    let parsed = renewer::config::Config::parse("", "the job's settings", &settings)
        .map_err(|e| anyhow::anyhow!("the job's settings do not parse: {e}"))?;
    assert_eq!(
        parsed.certificates[0].challenge,
        renewer::config::ChallengeKind::Dns01
    );
    assert_eq!(
        parsed.dns.as_ref().and_then(|d| d.zone.as_deref()),
        Some("example-com")
    );
    // The nodes' `renewer sync` accepts the wildcard too (it needs the challenge and the
    // [dns] project for that, not the zone); Envoy redirects every name (its allow-list takes
    // no wildcard).
    let template = created(&reqs, "compute", "/global/instanceTemplates");
    assert_eq!(template.len(), 1);
    let node_renewer =
        metadata_item(&template[0].body, "acme-edge-renewer-env").context("renewer env")?;
    assert!(
        !node_renewer.contains("RENEWER__DNS__ZONE"),
        "{node_renewer}"
    );
    let node_settings = env_lines(&node_renewer);
    let parsed = renewer::config::Config::parse("", "the nodes' settings", &node_settings)
        .map_err(|e| anyhow::anyhow!("the nodes' settings do not parse: {e}"))?;
    assert_eq!(
        parsed.certificates[0].domains,
        vec!["example.com", "*.example.com"]
    );
    let node_env = metadata_item(&template[0].body, "acme-edge-settings").context("node.env")?;
    assert!(node_env.lines().any(|l| l == "DOMAINS="), "{node_env}");
    assert!(
        node_env
            .lines()
            .any(|l| l == "ALLOWED_ORIGINS=https://example.com https://*.example.com"),
        "{node_env}"
    );
    // A wildcard is no host: the uptime checks are for example.com only.
    let checks = stored(&fake, "monitoring", "/uptimeCheckConfigs/");
    let hosts: Vec<&str> = checks
        .iter()
        .filter_map(|c| c["monitoredResource"]["labels"]["host"].as_str())
        .collect();
    assert_eq!(hosts, vec!["example.com"]);

    // A second run: lookups only (the zone's policy is read, not written).
    fake.clear_requests();
    deploy(&fake, &config, &gcloud_dir)?;
    assert!(mutations(&fake).is_empty(), "{:#?}", mutations(&fake));
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.api == "dns" && r.path.ends_with("/managedZones/example-com:getIamPolicy")));

    // Teardown takes the grant off the zone, before its account goes (no `deleted:` member
    // is left behind), and deletes the role; the zones stay. It finds the zone in the role's
    // description even when the settings no longer name it (DNS_ZONE removed).
    let config = write_config(dir.path(), "")?;
    let gone = make(
        &["destroy", "YES=1"],
        &config,
        &fake.gcloud_env(&gcloud_dir),
    )?;
    assert!(gone.ok, "{}\n{}", gone.stdout, gone.stderr);
    let zone_policy_now = zone_policy("example-com");
    assert!(bindings(&zone_policy_now).is_empty(), "{zone_policy_now}");
    assert_eq!(
        fake.resource("iam", &dns_role)
            .map(|r| r["deleted"].clone()),
        Some(Value::Bool(true))
    );
    for zone in ["example-com", "example-org"] {
        assert!(fake.resource("dns", &zone_path(zone)).is_some(), "{zone}");
    }
    Ok(())
}

/// The renewer image's tag is a hash of what it is built from: a commit that touches only
/// tests or docs reuses the image; one that touches the renewer builds a new one.
#[test]
fn only_build_inputs_change_the_image_tag() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = dir.path();
    let git = |args: &[&str]| -> Result<()> {
        let out = Command::new("git")
            .current_dir(repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let write = |path: &str, text: &str| -> Result<()> {
        let p = repo.join(path);
        std::fs::create_dir_all(p.parent().context("parent")?)?;
        std::fs::write(p, text)?;
        Ok(())
    };
    for f in ["lib.sh", "deploy.sh", "node/startup.sh", "envoy/render.sh"] {
        write(
            &format!("deploy/{f}"),
            &std::fs::read_to_string(repo_root().join("deploy").join(f))?,
        )?;
    }
    for f in [
        "Cargo.toml",
        "Cargo.lock",
        "Dockerfile",
        ".dockerignore",
        "renewer/src/main.rs",
        "edge-filter/src/lib.rs",
        "syntax/src/lib.rs",
        "tests/Cargo.toml",
        "tests/src/lib.rs",
        "README.md",
        "docs/deploy.md",
    ] {
        write(f, &format!("// {f}\n"))?;
    }
    git(&["init", "-q"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-qm", "one"])?;
    let config = repo.join("config.env");
    std::fs::write(
        &config,
        format!(
            "PROJECT={PROJECT}\nREGION=europe-west1\nDOMAINS=ws.example.com\nCONTACT_EMAIL=ops@example.com\n\
             APP_IMAGE=europe-west1-docker.pkg.dev/{PROJECT}/apps/chat:1.0\n"
        ),
    )?;
    let tag = || -> Result<String> {
        let out = Command::new("bash")
            .arg(repo.join("deploy/deploy.sh"))
            .arg("--plan")
            .arg(&config)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout)?;
        let at = text
            .find("renewer:src-")
            .context("no image tag in the plan")?;
        Ok(text[at..at + 24].to_string())
    };
    let first = tag()?;
    for (path, same) in [
        ("tests/src/lib.rs", true),
        ("README.md", true),
        ("docs/deploy.md", true),
        ("renewer/src/main.rs", false),
        ("tests/Cargo.toml", false),
    ] {
        let before = tag()?;
        write(path, &format!("// {path}, changed\n"))?;
        git(&["commit", "-qam", path])?;
        let after = tag()?;
        assert_eq!(after == before, same, "{path}: {before} -> {after}");
    }
    assert_ne!(tag()?, first);
    Ok(())
}
