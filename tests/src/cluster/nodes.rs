//! The cluster's nodes: what one is, how one boots (as `deploy/node/startup.sh` boots it),
//! and waiting until they all route to the same apps or serve the same certificate.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::settings::{env_refs, Settings, REGION};
use crate::acme_stack::run_renewer;
use crate::backend::EchoBackend;
use crate::client::{http_get, http_get_at, served_serial_at};
use crate::compute::FakeInstance;
use crate::envoy::{wasm_path, Envoy};
use crate::front::FrontNode;
use crate::node::render_deployed_node;
use crate::ports::{free_port, wait_for};
use crate::renewer_process::RenewerProcess;

/// The affinity cookie key of the local cluster (not a secret: loopback only).
const COOKIE_SECRET: &str = "local-cluster-cookie-secret-0123456789abcdef";
/// How often the nodes' agents look (deployed: `members.interval_seconds` 10, sync 5 min).
const REFRESH: &str = "1s";
/// Longest wait for the cluster to settle after a change.
pub(super) const SETTLE: Duration = Duration::from_secs(60);

/// One app node: its Envoy, its app and its two agents.
pub struct ClusterNode {
    pub index: usize,
    /// The instance name, also the app's id (`x-backend-id`, "whoami").
    pub name: String,
    /// Its address: `127.0.1.<index>`.
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

    pub(super) fn front_node(&self) -> FrontNode {
        FrontNode {
            name: self.name.clone(),
            ip: self.ip,
            http: self.http,
            https: self.https,
        }
    }

    /// `GET /ready` of its `renewer sync`: the status and the reason.
    pub async fn ready(&self) -> Result<(u16, String)> {
        let r = http_get(self.status, "/ready").await?;
        Ok((r.status, r.body_text()))
    }

    /// `GET /metrics` of its `renewer sync`.
    pub async fn sync_metrics(&self) -> Result<String> {
        Ok(http_get(self.status, "/metrics").await?.body_text())
    }

    /// `GET /metrics` of its `renewer members`.
    pub async fn members_metrics(&self) -> Result<String> {
        Ok(http_get(self.metrics, "/metrics").await?.body_text())
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

/// The instance of node `index` as the group creates it, before it boots.
pub(super) fn creating_instance(index: usize) -> FakeInstance {
    let mut instance =
        FakeInstance::healthy(&node_name(index), &zone(index), &node_ip(index).to_string());
    instance.action = "CREATING".into();
    instance.health = "UNKNOWN".into();
    instance
}

/// What a node boots with besides its own settings: where the cluster keeps its files and
/// where the services every node shares are.
pub(super) struct Site<'a> {
    pub(super) dir: &'a Path,
    pub(super) renewer_config: &'a Path,
    pub(super) settings: &'a Settings,
    pub(super) app_port: u16,
    /// The load balancer's HTTPS port (what clients see).
    pub(super) public_https: u16,
    pub(super) gcs_port: u16,
    pub(super) metadata_port: u16,
}

/// Boot node `index`, as its startup script does: the app on its address, `renewer sync
/// --init` and `renewer members --init`, Envoy on the rendered config, then both agents.
/// Returns once it passes the group's health check.
pub(super) async fn boot(index: usize, site: &Site<'_>) -> Result<ClusterNode> {
    let (ip, name) = (node_ip(index), node_name(index));
    let dir = site.dir.join(&name);
    let (tls, members) = (dir.join("tls"), dir.join("members"));
    std::fs::create_dir_all(&dir)?;
    let app = EchoBackend::start_at(&name, ip, site.app_port).await?;
    let (http, https, admin, metrics, status) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );

    let sync_env = site.settings.sync_env(ip, &tls, status, https)?;
    let members_env = site.settings.members_env(&members, metrics);
    for (args, env) in [
        (["sync", "--init"], &sync_env),
        (["members", "--init"], &members_env),
    ] {
        let out = run_renewer(site.renewer_config, &args, &env_refs(env)).await?;
        if out.code != 0 {
            bail!("{name}: renewer {} failed:\n{}", args.join(" "), out.all());
        }
    }
    let vars: Vec<(&str, String)> = vec![
        ("LISTEN_ADDRESS", ip.to_string()),
        ("HTTP_PORT", http.to_string()),
        ("HTTPS_PORT", https.to_string()),
        ("PUBLIC_HTTPS_PORT", site.public_https.to_string()),
        ("ADMIN_PORT", admin.to_string()),
        ("WASM_PATH", wasm_path().display().to_string()),
        ("TLS_DIR", tls.display().to_string()),
        ("MEMBERS_DIR", members.display().to_string()),
        ("READY_ADDRESS", format!("127.0.0.1:{status}")),
        // On one loopback interface the kernel would pick 127.0.0.1 for every node.
        ("SOURCE_ADDRESS", ip.to_string()),
        ("NODE_ID", name.clone()),
        ("COOKIE_SECRET", COOKIE_SECRET.to_owned()),
        ("STORE_ADDRESS", format!("127.0.0.1:{}", site.gcs_port)),
        ("STORE_TLS", "0".to_owned()),
        ("STORE_AUTHORITY", format!("127.0.0.1:{}", site.gcs_port)),
        ("METADATA_ADDRESS", "127.0.0.1".to_owned()),
        ("METADATA_PORT", site.metadata_port.to_string()),
    ];
    let yaml = render_deployed_node(&site.settings.node_env, &vars)?;
    std::fs::write(dir.join("envoy.yaml"), &yaml)?;
    let envoy = Envoy::start(&yaml, admin)
        .await
        .with_context(|| format!("start {name}'s Envoy"))?;
    let sync = RenewerProcess::spawn(
        site.renewer_config,
        &["sync", "--watch", REFRESH],
        &env_refs(&sync_env),
    )?;
    let members = RenewerProcess::spawn(
        site.renewer_config,
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
        let r = http_get_at(node.ip, node.http, "/.edge/healthz").await?;
        *last.lock().unwrap_or_else(|p| p.into_inner()) = format!("{} {}", r.status, r.body_text());
        Ok((r.status == 200).then_some(()))
    })
    .await;
    if let Err(e) = ready {
        let last = last.lock().map(|l| l.clone()).unwrap_or_default();
        bail!("{e:#}; last answer: {last}\n{}", node.sync.log());
    }
    Ok(node)
}

/// Waits until every node's Envoy routes to exactly the apps of `nodes`, all healthy.
pub(super) async fn wait_members(nodes: &[ClusterNode], n: usize) -> Result<()> {
    let mut want: Vec<String> = nodes.iter().map(|n| n.app.addr()).collect();
    want.sort();
    anyhow::ensure!(want.len() == n, "{} nodes, not {n}", want.len());
    for node in nodes {
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

/// Waits until every node serves `serial` for `domain`, checked against `roots_pem`.
pub(super) async fn wait_served(
    nodes: &[ClusterNode],
    serial: &str,
    domain: &str,
    roots_pem: &str,
) -> Result<()> {
    for node in nodes {
        let waited = wait_for(
            &format!("{} to serve certificate {serial}", node.name),
            SETTLE,
            || async {
                Ok(served_serial_at(node.ip, node.https, domain, roots_pem)
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
