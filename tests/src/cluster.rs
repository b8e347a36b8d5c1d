//! The deployed shape on one machine: N app nodes behind a stand-in for the network load
//! balancer, exactly as `make deploy` builds them. `make demo`, the end-to-end tests and the
//! sticky-routing benchmark run this, so what they show is what a deployment runs.
//!
//! ```text
//!   clients (127.0.2.x) ──► L4 front (tcp_proxy, Maglev on the client address, keeps it)
//!                               │ :80 / :443
//!          ┌────────────────────┼────────────────────┐
//!          ▼                    ▼                    ▼
//!   node 127.0.1.1        node 127.0.1.2        node 127.0.1.3
//!   Envoy + filter        Envoy + filter        Envoy + filter      (startup.sh render)
//!   renewer sync          renewer sync          renewer sync        (Secret Manager fake)
//!   renewer members       renewer members       renewer members     (Compute Engine fake)
//!   app :APP_PORT  ◄────── every node's Envoy routes keys to every node's app (EDS) ──►
//! ```
//!
//! Each node is what `deploy/node/startup.sh` sets up: its Envoy config comes from
//! `startup.sh render` on the `node.env` that `deploy.sh --plan` writes, its agents get the
//! renewer settings deploy writes (`renewer.env`) and `startup.sh members-env`. Only what
//! differs on loopback is overridden: addresses and ports, file paths, and the Google API
//! endpoints (fake-gcs-server for the bucket, fakes of Secret Manager, Compute Engine and the
//! metadata server). The renewer runs as the Cloud Run job does (`renewer run`), against
//! Pebble, whose HTTP-01 requests go through the front to whichever node it picks.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::acme_stack::{run_renewer, RenewerOutput};
use crate::client::{served_serial_at, ws_try_connect_from, HttpsConn, WsResponse, WsStream};
use crate::compute::{FakeCompute, FakeInstance};
use crate::envoy::{wasm_path, Envoy};
use crate::front::{FrontNode, L4Front};
use crate::gcs::FakeGcs;
use crate::metadata::MetadataServer;
use crate::node::{
    deploy_files, deployed_members_env, deployed_sync_env, render_deployed_node, DeployFiles,
};
use crate::pebble::Pebble;
use crate::ports::{free_port, wait_for};
use crate::renewer_process::RenewerProcess;
use crate::secret_manager::FakeSecretManager;
use crate::EchoBackend;

/// The project of the local deployment.
pub const PROJECT: &str = "acme-edge-local";
/// Its region (zones `-b`, `-c`, `-d`).
pub const REGION: &str = "europe-west1";
/// The managed instance group `make deploy` names (`NAME-nodes`).
pub const GROUP: &str = "acme-edge-nodes";
/// The affinity cookie key of the local cluster (not a secret: loopback only).
const COOKIE_SECRET: &str = "local-cluster-cookie-secret-0123456789abcdef";
/// How often the nodes' agents look (deployed: `members.interval_seconds` 10, sync 5 min).
const REFRESH: &str = "1s";
/// Longest wait for the cluster to settle after a change.
const SETTLE: Duration = Duration::from_secs(60);
/// How long a leaving node keeps serving what was in flight (deployed: 60 s of draining).
const DRAIN: Duration = Duration::from_secs(1);

/// Clients probing the cluster (see [`Cluster::start_probe`]).
pub struct Probe {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<ProbeReport>,
}

/// What the probing clients saw.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// Handshake + WebSocket echo rounds that worked.
    pub ok: usize,
    /// Those that did not, each with its error.
    pub failures: Vec<String>,
}

impl Probe {
    /// Stops the clients and returns what they saw.
    pub async fn stop(self) -> Result<ProbeReport> {
        self.stop.cancel();
        self.task.await.context("the probe task panicked")
    }
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Nodes at the start.
    pub nodes: usize,
    /// The certificate's name (Pebble's DNS resolves it to 127.0.0.1, the front).
    pub domain: String,
    /// Keep files here instead of a temp dir removed on drop (the demo's `KEEP=1`).
    pub dir: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            domain: "ws.demo.test".into(),
            dir: None,
        }
    }
}

/// One app node: its Envoy, its app and its two agents.
pub struct ClusterNode {
    pub index: usize,
    /// The instance name, also the app's id (`x-backend-id`, "whoami").
    pub name: String,
    /// Its address: 127.0.1.<index>.
    pub ip: IpAddr,
    pub http: u16,
    pub https: u16,
    /// Where `renewer members` serves its metrics.
    pub metrics: u16,
    /// Where `renewer sync` answers `/ready` and `/metrics` (Envoy's `/.edge/healthz` asks it).
    pub status: u16,
    pub envoy: Envoy,
    pub app: EchoBackend,
    pub sync: RenewerProcess,
    pub members: RenewerProcess,
    pub dir: PathBuf,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("name", &self.name)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    pub fn members_dir(&self) -> PathBuf {
        self.dir.join("members")
    }

    fn front_node(&self) -> FrontNode {
        FrontNode {
            name: self.name.clone(),
            ip: self.ip,
            http: self.http,
            https: self.https,
        }
    }

    /// `GET /ready` of its `renewer sync`: the status and the reason.
    pub async fn ready(&self) -> Result<(u16, String)> {
        let r = crate::http_get(self.status, "/ready").await?;
        Ok((r.status, r.body_text()))
    }

    /// `GET /metrics` of its `renewer sync`.
    pub async fn sync_metrics(&self) -> Result<String> {
        Ok(crate::http_get(self.status, "/metrics").await?.body_text())
    }

    /// `GET /metrics` of its `renewer members`.
    pub async fn members_metrics(&self) -> Result<String> {
        Ok(crate::http_get(self.metrics, "/metrics").await?.body_text())
    }

    /// The addresses of the app endpoints this node's Envoy routes to, healthy ones only.
    pub async fn healthy_apps(&self) -> Result<Vec<String>> {
        let mut hosts: Vec<String> = self
            .envoy
            .cluster_hosts("app")
            .await?
            .into_iter()
            .filter(|h| h.is_healthy())
            .map(|h| h.address)
            .collect();
        hosts.sort();
        Ok(hosts)
    }
}

/// The whole local deployment. Dropping it stops everything.
pub struct Cluster {
    pub options: ClusterOptions,
    pub pebble: Pebble,
    pub gcs: FakeGcs,
    pub secret_manager: FakeSecretManager,
    pub compute: FakeCompute,
    pub metadata: MetadataServer,
    pub front: L4Front,
    pub nodes: Vec<ClusterNode>,
    /// Pebble's issuing root: what clients trust.
    pub roots_pem: String,
    /// The renewer's config file (empty, as in the image: settings come from the environment).
    pub renewer_config: PathBuf,
    /// The bucket `make deploy` names.
    pub bucket: String,
    /// The Secret Manager secret the certificate is mirrored to.
    pub secret: String,
    /// The names the certificate covers (`DOMAINS`), the first being `options.domain`.
    pub domains: Vec<String>,
    /// The Cloud Run job's settings, pointed at the local Pebble and fakes.
    renewer_env: Vec<(String, String)>,
    /// The nodes' agents' settings (`acme-edge-renewer-env`), pointed at the local fakes.
    agent_env: Vec<(String, String)>,
    members_env: Vec<(String, String)>,
    node_env: String,
    app_port: u16,
    next_index: usize,
    dir: PathBuf,
    _temp: Option<TempDir>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// A progress callback: each component as it comes up.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

/// `env` with `changes` set (replacing a variable already there).
fn with_env(env: &[(String, String)], changes: &[(&str, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
        .cloned()
        .collect();
    out.extend(changes.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    out
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The deploy settings (`deploy/config.env`) of the local deployment.
fn settings_text(domains: &[String], app_port: u16, nodes: usize) -> String {
    format!(
        "PROJECT={PROJECT}\nREGION={REGION}\nDOMAINS=\"{}\"\nCONTACT_EMAIL=ops@example.com\n\
         APP_IMAGE={REGION}-docker.pkg.dev/{PROJECT}/apps/echo:1\nAPP_PORT={app_port}\n\
         NODE_COUNT={nodes}\n",
        domains.join(" ")
    )
}

fn node_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, index as u8))
}

fn node_name(index: usize) -> String {
    format!("acme-edge-node-{index}")
}

fn zone(index: usize) -> String {
    let z = ["b", "c", "d"][index % 3];
    format!("{REGION}-{z}")
}

impl Cluster {
    /// Start everything; `progress` is told about each component as it comes up. The nodes
    /// have no certificate yet: [`Cluster::renew`] issues one.
    pub async fn start(options: ClusterOptions, progress: Progress<'_>) -> Result<Cluster> {
        anyhow::ensure!(
            (1..=200).contains(&options.nodes),
            "1 to 200 nodes, not {}",
            options.nodes
        );
        let wasm = wasm_path();
        anyhow::ensure!(
            wasm.exists(),
            "{} is missing: run `make wasm` first",
            wasm.display()
        );
        let (temp, dir) = match &options.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("acme-edge-cluster-")
                    .tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let (front_http, front_https, app_port) = (free_port(), free_port(), free_port());

        let pebble = Pebble::builder().http_port(front_http).start().await?;
        let roots_pem = pebble.issuing_roots_pem().await?;
        std::fs::write(dir.join("pebble-root.pem"), &roots_pem)?;
        progress(&format!(
            "Pebble (Let's Encrypt's test CA): {}; it validates HTTP-01 at {}:{front_http}, the load balancer",
            pebble.directory_url(),
            options.domain
        ));

        // What `make deploy` would hand Cloud Run and the nodes for these settings.
        let domains = vec![options.domain.clone()];
        let settings = settings_text(&domains, app_port, options.nodes);
        std::fs::write(dir.join("config.env"), &settings)?;
        let files = deploy_files(&settings)?;
        std::fs::write(dir.join("node.env"), &files.node_env)?;
        let setting = |key: &str| {
            files
                .renewer_env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .with_context(|| format!("deploy wrote no {key}"))
        };
        let bucket = setting("RENEWER__STORE__URL")?
            .trim_start_matches("gs://")
            .to_owned();
        let secret = format!("{}site", setting("RENEWER__SECRET_MANAGER__SECRET_PREFIX")?);

        let gcs = FakeGcs::start().await?;
        gcs.create_bucket(&bucket).await?;
        let secret_manager = FakeSecretManager::start(PROJECT).await?;
        let compute = FakeCompute::start(PROJECT, REGION, GROUP).await?;
        let metadata = MetadataServer::start().await?;
        progress(&format!(
            "Google APIs on loopback: bucket gs://{bucket} (fake-gcs-server {}), Secret Manager, \
             Compute Engine and metadata-server fakes",
            gcs.base_url()
        ));

        let renewer_config = dir.join("renewer.toml");
        std::fs::write(
            &renewer_config,
            "# Settings come from RENEWER__* variables, as in the renewer image.\n",
        )?;
        let mut cluster = Cluster {
            options,
            pebble,
            gcs,
            secret_manager,
            compute,
            metadata,
            // With no node yet: they are added once up (the front checks them first).
            front: L4Front::start(front_http, front_https, &[]).await?,
            nodes: Vec::new(),
            roots_pem,
            renewer_config,
            bucket,
            secret,
            domains: Vec::new(),
            renewer_env: Vec::new(),
            agent_env: Vec::new(),
            members_env: Vec::new(),
            node_env: String::new(),
            app_port,
            next_index: 1,
            dir,
            _temp: temp,
        };
        cluster.apply(&domains, files)?;
        // The group has its nodes before they boot, as a managed instance group creates them;
        // they report healthy once ready.
        let n = cluster.options.nodes;
        for index in 1..=n {
            let mut instance =
                FakeInstance::healthy(&node_name(index), &zone(index), &node_ip(index).to_string());
            instance.action = "CREATING".into();
            instance.health = "UNKNOWN".into();
            cluster.compute.add(instance);
        }
        for _ in 0..n {
            let node = cluster.start_node().await?;
            progress(&format!(
                "node {}: Envoy + edge filter on {}:{}/{} (config from startup.sh render), \
                 app on {}, renewer sync and renewer members",
                node.name,
                node.ip,
                node.http,
                node.https,
                node.app.addr()
            ));
            cluster.nodes.push(node);
        }
        for node in &cluster.nodes {
            cluster.compute.set(&node.name, |i| {
                i.action = "NONE".into();
                i.health = "HEALTHY".into();
            });
        }
        cluster.wait_members(n).await?;
        cluster
            .front
            .set_nodes(&cluster.front_nodes(), cluster.nodes.len())
            .await?;
        progress(&format!(
            "load balancer (Envoy tcp_proxy, client-IP affinity): {d}:{front_http} and {d}:{front_https}; \
             every node routes to all {n} apps",
            d = cluster.options.domain
        ));
        Ok(cluster)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn front_nodes(&self) -> Vec<FrontNode> {
        self.nodes.iter().map(ClusterNode::front_node).collect()
    }

    /// Take the settings `make deploy` writes for `domains` (what a deploy with a new
    /// `DOMAINS` hands the job and, through a new instance template, the nodes started from
    /// now on), pointed at this machine's Pebble and fakes.
    fn apply(&mut self, domains: &[String], files: DeployFiles) -> Result<()> {
        let google = [
            ("RENEWER__STORE__GCS_ENDPOINT", self.gcs.base_url()),
            (
                "RENEWER__SECRET_MANAGER__ENDPOINT",
                self.secret_manager.endpoint(),
            ),
        ];
        let mut job = google.to_vec();
        job.extend([
            ("RENEWER__ACME__DIRECTORY", self.pebble.directory_url()),
            (
                "RENEWER__ACME__EXTRA_ROOT_CA",
                self.pebble.api_cert_path().display().to_string(),
            ),
            ("RENEWER__LOCK__WAIT_SECONDS", "30".into()),
        ]);
        self.renewer_env = with_env(&files.renewer_env, &job);
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
        agent.push((
            "RENEWER__SYNC__TRUSTED_ROOTS",
            self.dir.join("pebble-root.pem").display().to_string(),
        ));
        self.agent_env = with_env(&files.node_renewer_env, &agent);
        self.members_env = with_env(
            &deployed_members_env(&files.node_env)?,
            &[("RENEWER__MEMBERS__ENDPOINT", self.compute.endpoint())],
        );
        std::fs::write(self.dir.join("node.env"), &files.node_env)?;
        self.node_env = files.node_env;
        self.domains = domains.to_vec();
        Ok(())
    }

    /// `renewer sync`'s environment on a node: the agents' settings, what `startup.sh
    /// sync-env` adds on a node at `ip`, and this node's directory and ports.
    fn node_sync_env(
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

    fn node_members_env(&self, members: &Path, metrics: u16) -> Vec<(String, String)> {
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

    /// Boot the next node, as its startup script does: the app on its address, `renewer sync
    /// --init` and `renewer members --init`, Envoy on the rendered config, then both agents.
    async fn start_node(&mut self) -> Result<ClusterNode> {
        let index = self.next_index;
        self.next_index += 1;
        let (ip, name) = (node_ip(index), node_name(index));
        let dir = self.dir.join(&name);
        let (tls, members) = (dir.join("tls"), dir.join("members"));
        std::fs::create_dir_all(&dir)?;
        let app = EchoBackend::start_at(&name, ip, self.app_port).await?;
        let (http, https, admin, metrics, status) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );

        let sync_env = self.node_sync_env(ip, &tls, status, https)?;
        let members_env = self.node_members_env(&members, metrics);
        for (args, env) in [
            (["sync", "--init"], &sync_env),
            (["members", "--init"], &members_env),
        ] {
            let out = run_renewer(&self.renewer_config, &args, &env_refs(env)).await?;
            if out.code != 0 {
                bail!("{name}: renewer {} failed:\n{}", args.join(" "), out.all());
            }
        }
        let vars: Vec<(&str, String)> = vec![
            ("LISTEN_ADDRESS", ip.to_string()),
            ("HTTP_PORT", http.to_string()),
            ("HTTPS_PORT", https.to_string()),
            ("PUBLIC_HTTPS_PORT", self.front.https.to_string()),
            ("ADMIN_PORT", admin.to_string()),
            ("WASM_PATH", wasm_path().display().to_string()),
            ("TLS_DIR", tls.display().to_string()),
            ("MEMBERS_DIR", members.display().to_string()),
            ("READY_ADDRESS", format!("127.0.0.1:{status}")),
            // On one loopback interface the kernel would pick 127.0.0.1 for every node.
            ("SOURCE_ADDRESS", ip.to_string()),
            ("NODE_ID", name.clone()),
            ("COOKIE_SECRET", COOKIE_SECRET.to_owned()),
            ("STORE_ADDRESS", format!("127.0.0.1:{}", self.gcs.port())),
            ("STORE_TLS", "0".to_owned()),
            ("STORE_AUTHORITY", format!("127.0.0.1:{}", self.gcs.port())),
            ("METADATA_ADDRESS", "127.0.0.1".to_owned()),
            ("METADATA_PORT", self.metadata.port().to_string()),
        ];
        let yaml = render_deployed_node(&self.node_env, &vars)?;
        std::fs::write(dir.join("envoy.yaml"), &yaml)?;
        let envoy = Envoy::start(&yaml, admin)
            .await
            .with_context(|| format!("start {name}'s Envoy"))?;
        let sync = RenewerProcess::spawn(
            &self.renewer_config,
            &["sync", "--watch", REFRESH],
            &env_refs(&sync_env),
        )?;
        let members = RenewerProcess::spawn(
            &self.renewer_config,
            &["members", "--watch", REFRESH],
            &env_refs(&members_env),
        )?;
        let node = ClusterNode {
            index,
            name,
            ip,
            http,
            https,
            metrics,
            status,
            envoy,
            app,
            sync,
            members,
            dir,
        };
        // What the group's health check waits for before it counts the node (and before a
        // rolling update removes an old one): /.edge/healthz through its Envoy.
        let last = std::sync::Mutex::new(String::new());
        let ready = wait_for(&format!("{} to be ready", node.name), SETTLE, || async {
            let r = crate::http_get_at(node.ip, node.http, "/.edge/healthz").await?;
            *last.lock().unwrap_or_else(|p| p.into_inner()) =
                format!("{} {}", r.status, r.body_text());
            Ok((r.status == 200).then_some(()))
        })
        .await;
        if let Err(e) = ready {
            let last = last.lock().map(|l| l.clone()).unwrap_or_default();
            bail!("{e:#}; last answer: {last}\n{}", node.sync.log());
        }
        Ok(node)
    }

    /// A node joins: the group creates it, it boots, passes its check, and the load balancer
    /// starts sending it clients. Returns its name.
    pub async fn add_node(&mut self) -> Result<String> {
        let index = self.next_index;
        let mut instance =
            FakeInstance::healthy(&node_name(index), &zone(index), &node_ip(index).to_string());
        instance.action = "CREATING".into();
        instance.health = "UNKNOWN".into();
        self.compute.add(instance);
        let node = self.start_node().await?;
        let name = node.name.clone();
        self.nodes.push(node);
        self.compute.set(&name, |i| {
            i.action = "NONE".into();
            i.health = "HEALTHY".into();
        });
        self.wait_members(self.nodes.len()).await?;
        self.front
            .set_nodes(&self.front_nodes(), self.nodes.len())
            .await?;
        Ok(name)
    }

    /// A node leaves, as a managed instance group removes one: the load balancer stops sending
    /// it new connections first (the instance leaves the group's backend; connection draining
    /// lets open ones finish), the group marks it DELETING and every node drops its app from
    /// its list, then it stops with its app.
    pub async fn remove_node(&mut self, name: &str) -> Result<()> {
        let at = self
            .nodes
            .iter()
            .position(|n| n.name == name)
            .with_context(|| format!("no node {name}"))?;
        let staying: Vec<FrontNode> = self
            .nodes
            .iter()
            .filter(|n| n.name != name)
            .map(ClusterNode::front_node)
            .collect();
        self.front.set_nodes(&staying, staying.len()).await?;
        self.compute.set(name, |i| i.action = "DELETING".into());
        let address = self.nodes[at].app.addr();
        for node in self.nodes.iter().filter(|n| n.name != name) {
            wait_for(&format!("{} to drop {name}", node.name), SETTLE, || async {
                let hosts = node.envoy.cluster_hosts("app").await?;
                Ok((!hosts.iter().any(|h| h.address == address)).then_some(()))
            })
            .await?;
        }
        // What was already in flight through it finishes (the deployment drains for 60 s).
        tokio::time::sleep(DRAIN).await;
        let node = self.nodes.remove(at);
        drop(node);
        self.compute.remove(name);
        Ok(())
    }

    /// What `make deploy` does when `DOMAINS` changes (docs/deploy.md, "What a change
    /// rolls"): the job gets the new settings; a renewal pass runs and deploy waits until the
    /// certificate covers every name; then the group replaces the nodes one at a time
    /// (`max-surge`, `max-unavailable=0`): a node with the new settings is up and ready before
    /// an old one goes. Returns the new certificate's serial.
    pub async fn change_domains(
        &mut self,
        domains: &[&str],
        progress: Progress<'_>,
    ) -> Result<String> {
        let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
        anyhow::ensure!(
            domains.first() == Some(&self.options.domain),
            "the first name stays {}",
            self.options.domain
        );
        let settings = settings_text(&domains, self.app_port, self.nodes.len());
        std::fs::write(self.dir.join("config.env"), &settings)?;
        self.apply(&domains, deploy_files(&settings)?)?;
        let out = self.renew(false).await?;
        anyhow::ensure!(out.code == 0, "the renewal pass failed:\n{}", out.all());
        let serial = Self::serial_of(&out)?;
        let mirrored = self.mirrored_names()?;
        anyhow::ensure!(
            domains.iter().all(|d| mirrored.contains(d)),
            "Secret Manager's certificate has {mirrored:?}, not all of {domains:?}"
        );
        progress(&format!(
            "renewal pass: certificate {serial} for {} is in Secret Manager",
            domains.join(", ")
        ));
        let old: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for name in old {
            let new = self.add_node().await?;
            progress(&format!("{new} (new settings) is ready and takes clients"));
            self.remove_node(&name).await?;
            progress(&format!("{name} drained and removed"));
        }
        Ok(serial)
    }

    /// The names of the certificate in Secret Manager's newest version (what deploy checks).
    pub fn mirrored_names(&self) -> Result<Vec<String>> {
        let secret = self
            .secret
            .trim_start_matches(&format!("projects/{PROJECT}/secrets/"));
        let versions = self.secret_manager.versions(secret);
        let (_, _, payload) = versions.last().context("Secret Manager has no version")?;
        let (chain, _) = renewer::certinfo::split_bundle(std::str::from_utf8(payload)?)?;
        Ok(renewer::certinfo::inspect(&chain)?.domains)
    }

    /// Starts clients that keep doing what users do, through the load balancer, until
    /// [`Probe::stop`]: a TLS handshake checked against Pebble's root for the first name, then
    /// a WebSocket that echoes one message, each from one of 50 client addresses in turn.
    pub fn start_probe(&self) -> Probe {
        let stop = tokio_util::sync::CancellationToken::new();
        let url = self.wss_url("/ws/probe");
        let origin = self.origin();
        let (port, domain, roots) = (
            self.front.https,
            self.options.domain.clone(),
            self.roots_pem.clone(),
        );
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let mut report = ProbeReport::default();
            let mut i: u32 = 0;
            while !until.is_cancelled() {
                i += 1;
                let source = IpAddr::V4(Ipv4Addr::new(127, 0, 2, 10 + (i % 50) as u8));
                let one = async {
                    crate::served_serial(port, &domain, &roots)
                        .await
                        .context("TLS handshake")?;
                    let (mut ws, _) = ws_try_connect_from(
                        &format!("{url}?probe={i}"),
                        Some(source),
                        &[("origin", &origin)],
                        Some(&roots),
                    )
                    .await?
                    .map_err(|r| anyhow::anyhow!("WebSocket refused: {}", r.status()))?;
                    let echoed = crate::ws_echo(&mut ws, "probe").await?;
                    anyhow::ensure!(echoed == "probe", "echo was {echoed:?}");
                    let _ = ws.close(None).await;
                    anyhow::Ok(())
                };
                match tokio::time::timeout(Duration::from_secs(10), one).await {
                    Ok(Ok(())) => report.ok += 1,
                    Ok(Err(e)) => report
                        .failures
                        .push(format!("probe {i} from {source}: {e:#}")),
                    Err(_) => report
                        .failures
                        .push(format!("probe {i} from {source}: no answer within 10 s")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            report
        });
        Probe { stop, task }
    }

    /// Waits until every node's Envoy routes to exactly the apps of the current nodes, all
    /// healthy: the cluster agrees on its membership.
    pub async fn wait_members(&self, n: usize) -> Result<()> {
        let mut want: Vec<String> = self.nodes.iter().map(|n| n.app.addr()).collect();
        want.sort();
        anyhow::ensure!(want.len() == n, "{} nodes, not {n}", want.len());
        for node in &self.nodes {
            let waited = wait_for(
                &format!("{} to route to {n} apps", node.name),
                SETTLE,
                || async {
                    let hosts = node.envoy.cluster_hosts("app").await?;
                    let mut all: Vec<String> = hosts.iter().map(|h| h.address.clone()).collect();
                    all.sort();
                    let healthy = hosts.iter().all(|h| h.is_healthy());
                    Ok((all == want && healthy).then_some(()))
                },
            )
            .await;
            if let Err(e) = waited {
                let hosts = node.envoy.cluster_hosts("app").await.unwrap_or_default();
                bail!("{e:#}; it has {hosts:?}\n{}", node.members.log());
            }
        }
        Ok(())
    }

    /// The renewer's environment (the Cloud Run job's), for running `renewer` by hand.
    pub fn renewer_env_refs(&self) -> Vec<(&str, &str)> {
        env_refs(&self.renewer_env)
    }

    /// `renewer run` (the Cloud Run job), optionally `--force`.
    pub async fn renew(&self, force: bool) -> Result<RenewerOutput> {
        let mut args = vec!["run", "--json"];
        if force {
            args.push("--force");
        }
        run_renewer(&self.renewer_config, &args, &env_refs(&self.renewer_env)).await
    }

    /// The serial of the certificate in the bucket (what `renewer run` just published).
    pub fn serial_of(out: &RenewerOutput) -> Result<String> {
        let report: serde_json::Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("renewer run --json printed no JSON:\n{}", out.all()))?;
        Ok(report["certificates"][0]["serial"]
            .as_str()
            .with_context(|| format!("no serial in {report:#}"))?
            .to_owned())
    }

    /// Waits until every node serves `serial` (each node's `renewer sync` installed it from
    /// Secret Manager and its Envoy reloaded it).
    pub async fn wait_served_everywhere(&self, serial: &str) -> Result<()> {
        for node in &self.nodes {
            let waited =
                wait_for(
                    &format!("{} to serve certificate {serial}", node.name),
                    SETTLE,
                    || async {
                        Ok(served_serial_at(
                            node.ip,
                            node.https,
                            &self.options.domain,
                            &self.roots_pem,
                        )
                        .await
                        .ok()
                        .filter(|s| s == serial)
                        .map(|_| ()))
                    },
                )
                .await;
            if let Err(e) = waited {
                bail!("{e:#}\n{}", node.sync.log());
            }
        }
        Ok(())
    }

    /// The serial the load balancer's TLS port presents (for a client from 127.0.0.1).
    pub async fn served_serial(&self) -> Result<String> {
        crate::served_serial(self.front.https, &self.options.domain, &self.roots_pem).await
    }

    /// `wss://<domain>:<front https><path>`.
    pub fn wss_url(&self, path: &str) -> String {
        format!("wss://{}:{}{path}", self.options.domain, self.front.https)
    }

    /// `https://<domain>` — the Origin of the site's own pages, which `make deploy` allows.
    pub fn origin(&self) -> String {
        format!("https://{}", self.options.domain)
    }

    /// Opens a WebSocket through the load balancer from `source` (a client address such as
    /// 127.0.2.7), as a browser on the site would (with its Origin, trusting only Pebble's
    /// root), optionally with an affinity cookie. Returns the stream, the app instance it
    /// reached, and the response.
    pub async fn ws_open(
        &self,
        source: IpAddr,
        path: &str,
        cookie: Option<&str>,
    ) -> Result<(WsStream, String, WsResponse)> {
        let origin = self.origin();
        let mut headers: Vec<(&str, &str)> = vec![("origin", &origin)];
        headers.extend(cookie.map(|c| ("cookie", c)));
        let (ws, resp) = ws_try_connect_from(
            &self.wss_url(path),
            Some(source),
            &headers,
            Some(&self.roots_pem),
        )
        .await?
        .map_err(|r| anyhow::anyhow!("WebSocket refused from {source}: {}", r.status()))?;
        let id = resp
            .headers()
            .get("x-backend-id")
            .context("no x-backend-id on the 101")?
            .to_str()?
            .to_owned();
        Ok((ws, id, resp))
    }

    /// Which node a WebSocket went through: the node whose address the app saw its upgrade
    /// come from (each node's Envoy connects from its own address). `marker` is the end of the
    /// upgrade's path that names this one connection (e.g. `client=17`).
    pub fn entry_node(&self, marker: &str) -> Option<String> {
        let ip = self
            .nodes
            .iter()
            .flat_map(|n| n.app.upgrades())
            .find(|u| u.path.ends_with(marker))?
            .peer?
            .ip();
        self.nodes
            .iter()
            .find(|n| n.ip == ip)
            .map(|n| n.name.clone())
    }

    /// Where the keys go once the cluster has settled: every node sends every key to the same
    /// instance, and `done` holds for that agreed assignment (the change being waited for is
    /// visible). Envoy shows a new host in `/clusters` a moment before its workers have rebuilt
    /// their Maglev tables, so this asks again until then, for at most 30 s; the error then
    /// names the keys still in dispute.
    pub async fn settled_owners(
        &self,
        keys: &[String],
        done: impl Fn(&[String]) -> bool,
    ) -> Result<Vec<String>> {
        let deadline = tokio::time::Instant::now() + SETTLE.min(Duration::from_secs(30));
        loop {
            let owners = self.key_owners(keys).await?;
            let verdict = agreement(&owners);
            match verdict {
                Ok(agreed) if done(&agreed) => return Ok(agreed),
                _ if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Ok(_) => bail!("the nodes agree, but the change never showed"),
                Err(e) => return Err(e),
            }
        }
    }

    /// Where each node's Envoy sends each key (by the room query parameter, on a plain
    /// request): `owners[node][key]` is the app instance's name.
    pub async fn key_owners(&self, keys: &[String]) -> Result<Vec<Vec<String>>> {
        let ask = async |node: &ClusterNode| {
            let mut conn =
                HttpsConn::connect(node.ip, node.https, &self.options.domain, &self.roots_pem)
                    .await
                    .with_context(|| format!("connect to {}", node.name))?;
            let mut owners = Vec::with_capacity(keys.len());
            for key in keys {
                let (status, headers, _) = conn.get(&format!("/where?room={key}"), &[]).await?;
                anyhow::ensure!(status == 200, "{}: {key}: status {status}", node.name);
                owners.push(
                    headers
                        .get("x-backend-id")
                        .context("no x-backend-id")?
                        .to_str()?
                        .to_owned(),
                );
            }
            anyhow::Ok(owners)
        };
        futures_util::future::try_join_all(self.nodes.iter().map(ask)).await
    }
}

/// The instance every node picks for each key, or an error naming the disputed keys.
/// Client number `n` as a distinct source address: 127.0.2.1, 127.0.2.2, … 127.0.3.1, … (the
/// front's affinity is by client address, so tests that want many clients bind these).
pub fn client_address(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        2 + (n / 250) as u8,
        (n % 250 + 1) as u8,
    ))
}

pub fn agreement(owners: &[Vec<String>]) -> Result<Vec<String>> {
    let first = owners.first().context("no node")?;
    let disputed: Vec<usize> = (0..first.len())
        .filter(|&k| owners.iter().any(|o| o.get(k) != first.get(k)))
        .collect();
    if !disputed.is_empty() {
        let sample: Vec<String> = disputed
            .iter()
            .take(3)
            .map(|&k| {
                format!(
                    "key {k}: {:?}",
                    owners.iter().map(|o| o.get(k)).collect::<Vec<_>>()
                )
            })
            .collect();
        bail!(
            "{} keys where two nodes pick different instances, e.g. {sample:?}",
            disputed.len()
        );
    }
    Ok(first.clone())
}
