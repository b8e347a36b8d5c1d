//! The deploy settings of the local deployment, and the renewer settings `make deploy`
//! derives from them, pointed at this machine's Pebble and fakes.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Result;

use crate::node::{deployed_members_env, deployed_sync_env, DeployFiles};

/// The project of the local deployment.
pub const PROJECT: &str = "acme-edge-local";
/// Its region (zones `-b`, `-c`, `-d`).
pub const REGION: &str = "europe-west1";
/// The managed instance group `make deploy` names (`NAME-nodes`).
pub const GROUP: &str = "acme-edge-nodes";

/// Where the local deployment's services are, in place of Google's and Let's Encrypt's.
pub(super) struct Endpoints {
    /// fake-gcs-server, for the bucket.
    pub(super) gcs: String,
    pub(super) secret_manager: String,
    pub(super) compute: String,
    /// Pebble's directory, and the certificate of its API to trust.
    pub(super) acme_directory: String,
    pub(super) acme_api_cert: String,
    /// Pebble's issuing root, which the nodes trust in place of Let's Encrypt's.
    pub(super) trusted_roots: String,
}

/// The settings `make deploy` writes, as the local deployment runs them.
#[derive(Debug, Default)]
pub(super) struct Settings {
    /// The Cloud Run job's settings, pointed at the local Pebble and fakes.
    pub(super) renewer_env: Vec<(String, String)>,
    /// The nodes' agents' settings (`acme-edge-renewer-env`), pointed at the local fakes.
    agent_env: Vec<(String, String)>,
    members_env: Vec<(String, String)>,
    /// The `node.env` of the nodes' instance metadata.
    pub(super) node_env: String,
}

impl Settings {
    /// What `make deploy` writes (`files`), pointed at `local`.
    pub(super) fn new(files: DeployFiles, local: &Endpoints) -> Result<Settings> {
        let google = [
            ("RENEWER__STORE__GCS_ENDPOINT", local.gcs.clone()),
            (
                "RENEWER__SECRET_MANAGER__ENDPOINT",
                local.secret_manager.clone(),
            ),
        ];
        let mut job = google.to_vec();
        job.extend([
            ("RENEWER__ACME__DIRECTORY", local.acme_directory.clone()),
            ("RENEWER__ACME__EXTRA_ROOT_CA", local.acme_api_cert.clone()),
            ("RENEWER__LOCK__WAIT_SECONDS", "30".into()),
        ]);
        let renewer_env = with_env(&files.renewer_env, &job);
        // Deploy makes the nodes trust only the CA's roots (Let's Encrypt's, in the image);
        // here the CA is Pebble, so its root takes their place.
        anyhow::ensure!(
            files
                .node_renewer_env
                .iter()
                .any(|(k, _)| k == "RENEWER__SYNC__TRUSTED_ROOTS"),
            "deploy no longer sets the nodes' trusted roots"
        );
        let mut agent = google.to_vec();
        agent.push(("RENEWER__SYNC__TRUSTED_ROOTS", local.trusted_roots.clone()));
        let agent_env = with_env(&files.node_renewer_env, &agent);
        let members_env = with_env(
            &deployed_members_env(&files.node_env)?,
            &[("RENEWER__MEMBERS__ENDPOINT", local.compute.clone())],
        );
        Ok(Settings {
            renewer_env,
            agent_env,
            members_env,
            node_env: files.node_env,
        })
    }

    /// `renewer sync`'s environment on a node: the agents' settings, what `startup.sh
    /// sync-env` adds on a node at `ip`, and this node's directory and ports.
    pub(super) fn sync_env(
        &self,
        ip: IpAddr,
        tls: &Path,
        status: u16,
        https: u16,
    ) -> Result<Vec<(String, String)>> {
        let mut env = self.agent_env.clone();
        env.extend(with_env(
            &deployed_sync_env(&self.node_env, &ip.to_string())?,
            &[
                (
                    "RENEWER__SYNC__STATUS_ADDRESS",
                    format!("127.0.0.1:{status}"),
                ),
                ("RENEWER__SYNC__READY_TLS_ADDRESS", format!("{ip}:{https}")),
                ("RENEWER__SYNC__READY_INTERVAL_SECONDS", "1".into()),
            ],
        ));
        Ok(with_env(
            &env,
            &[("RENEWER__SYNC__DIR", tls.display().to_string())],
        ))
    }

    pub(super) fn members_env(&self, members: &Path, metrics: u16) -> Vec<(String, String)> {
        let mut env = self.agent_env.clone();
        env.extend(with_env(
            &self.members_env,
            &[
                ("RENEWER__MEMBERS__DIR", members.display().to_string()),
                (
                    "RENEWER__MEMBERS__METRICS_ADDRESS",
                    format!("127.0.0.1:{metrics}"),
                ),
            ],
        ));
        env
    }
}

/// `env` with `changes` set (replacing a variable already there).
pub(super) fn with_env(
    env: &[(String, String)],
    changes: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
        .cloned()
        .collect();
    out.extend(changes.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    out
}

pub(super) fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The deploy settings (`deploy/config.env`) of the local deployment.
pub(super) fn settings_text(domains: &[String], app_port: u16, nodes: usize) -> String {
    format!(
        "PROJECT={PROJECT}\nREGION={REGION}\nDOMAINS=\"{}\"\nCONTACT_EMAIL=ops@example.com\n\
         APP_IMAGE={REGION}-docker.pkg.dev/{PROJECT}/apps/echo:1\nAPP_PORT={app_port}\n\
         NODE_COUNT={nodes}\n",
        domains.join(" ")
    )
}
