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
//!
//! Inside: `settings` (what deploy writes, pointed at the local services), `nodes` (a node,
//! its boot, waiting for all of them), `probe` (clients probing during a change) and `keys`
//! (where the nodes send each key).

mod keys;
mod nodes;
mod probe;
mod settings;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::acme_stack::{run_renewer, RenewerOutput};
use crate::backend::backend_id;
use crate::client::{served_serial, ws_try_connect_from, WsResponse, WsStream};
use crate::compute::FakeCompute;
use crate::envoy::wasm_path;
use crate::front::{FrontNode, L4Front};
use crate::gcs::FakeGcs;
use crate::metadata::MetadataServer;
use crate::node::{deploy_files, DeployFiles};
use crate::pebble::Pebble;
use crate::ports::{free_port, wait_for};
use crate::secret_manager::FakeSecretManager;
use nodes::{creating_instance, Site, SETTLE};
use settings::{env_refs, settings_text, Endpoints, Settings};

pub use keys::{agreement, client_address};
pub use nodes::ClusterNode;
pub use probe::{Probe, ProbeReport};
pub use settings::{GROUP, PROJECT, REGION};

/// How long a leaving node keeps serving what was in flight (deployed: 60 s of draining).
const DRAIN: Duration = Duration::from_secs(1);

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
    /// What `make deploy` wrote for the current settings, pointed at the local services.
    settings: Settings,
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
            settings: Settings::default(),
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
            cluster.compute.add(creating_instance(index));
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
            cluster.instance_ready(&node.name);
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
        let local = Endpoints {
            gcs: self.gcs.base_url(),
            secret_manager: self.secret_manager.endpoint(),
            compute: self.compute.endpoint(),
            acme_directory: self.pebble.directory_url(),
            acme_api_cert: self.pebble.api_cert_path().display().to_string(),
            trusted_roots: self.dir.join("pebble-root.pem").display().to_string(),
        };
        let settings = Settings::new(files, &local)?;
        std::fs::write(self.dir.join("node.env"), &settings.node_env)?;
        self.settings = settings;
        self.domains = domains.to_vec();
        Ok(())
    }

    /// The group marks the instance `name` running and healthy.
    fn instance_ready(&self, name: &str) {
        self.compute.set(name, |i| {
            i.action = "NONE".into();
            i.health = "HEALTHY".into();
        });
    }

    /// Boot the next node (see [`nodes::boot`]).
    async fn start_node(&mut self) -> Result<ClusterNode> {
        let index = self.next_index;
        self.next_index += 1;
        let site = Site {
            dir: &self.dir,
            renewer_config: &self.renewer_config,
            settings: &self.settings,
            app_port: self.app_port,
            public_https: self.front.https,
            gcs_port: self.gcs.port(),
            metadata_port: self.metadata.port(),
        };
        nodes::boot(index, &site).await
    }

    /// A node joins: the group creates it, it boots, passes its check, and the load balancer
    /// starts sending it clients. Returns its name.
    pub async fn add_node(&mut self) -> Result<String> {
        self.compute.add(creating_instance(self.next_index));
        let node = self.start_node().await?;
        let name = node.name.clone();
        self.nodes.push(node);
        self.instance_ready(&name);
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
        probe::start(
            self.wss_url("/ws/probe"),
            self.origin(),
            self.front.https,
            self.options.domain.clone(),
            self.roots_pem.clone(),
        )
    }

    /// Waits until every node's Envoy routes to exactly the apps of the current nodes, all
    /// healthy: the cluster agrees on its membership.
    pub async fn wait_members(&self, n: usize) -> Result<()> {
        nodes::wait_members(&self.nodes, n).await
    }

    /// The renewer's environment (the Cloud Run job's), for running `renewer` by hand.
    pub fn renewer_env_refs(&self) -> Vec<(&str, &str)> {
        env_refs(&self.settings.renewer_env)
    }

    /// `renewer run` (the Cloud Run job), optionally `--force`.
    pub async fn renew(&self, force: bool) -> Result<RenewerOutput> {
        let mut args = vec!["run", "--json"];
        if force {
            args.push("--force");
        }
        run_renewer(
            &self.renewer_config,
            &args,
            &env_refs(&self.settings.renewer_env),
        )
        .await
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
        nodes::wait_served(&self.nodes, serial, &self.options.domain, &self.roots_pem).await
    }

    /// The serial the load balancer's TLS port presents (for a client from 127.0.0.1).
    pub async fn served_serial(&self) -> Result<String> {
        served_serial(self.front.https, &self.options.domain, &self.roots_pem).await
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
        let id = backend_id(resp.headers()).context("the 101")?;
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
    /// visible), the same in two samples in a row. Envoy shows a new host in `/clusters` a
    /// moment before its workers have rebuilt their Maglev tables, so this asks again until
    /// then, for at most 30 s; the error then names the keys still in dispute.
    pub async fn settled_owners(
        &self,
        keys: &[String],
        done: impl Fn(&[String]) -> bool,
    ) -> Result<Vec<String>> {
        keys::settled_owners(
            &self.nodes,
            &self.options.domain,
            &self.roots_pem,
            keys,
            done,
        )
        .await
    }

    /// Where each node's Envoy sends each key (by the room query parameter, on a plain
    /// request): `owners[node][key]` is the app instance's name.
    pub async fn key_owners(&self, keys: &[String]) -> Result<Vec<Vec<String>>> {
        keys::key_owners(&self.nodes, &self.options.domain, &self.roots_pem, keys).await
    }
}
