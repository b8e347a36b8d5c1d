//! The stand-in for Google Cloud's external passthrough network load balancer in front of the
//! local cluster: an Envoy with `tcp_proxy` on a plain and a TLS port, keeping the semantics
//! the deployment relies on:
//!
//! * L4 only: TLS goes through untouched to the node, which terminates it;
//! * the client's address is kept: the `original_src` listener filter binds each upstream
//!   connection to the client's own address (a passthrough load balancer does not rewrite it),
//!   so a node sees `127.0.2.x`, not the front;
//! * `CLIENT_IP` session affinity: Maglev on the client address, the same node for both ports
//!   (each endpoint's `envoy.lb` `hash_key` is its node's name, not its address and port);
//! * health-checked backends: `GET /.edge/healthz` on each node's plain port (the check
//!   `make deploy` creates), so a stopped node stops getting new connections.
//!
//! The node list comes from EDS files the harness rewrites (a node joins or leaves the group).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::envoy::Envoy;
use crate::ports::free_port;

/// One node as the front sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontNode {
    pub name: String,
    pub ip: IpAddr,
    pub http: u16,
    pub https: u16,
}

/// The running front. Dropping it stops Envoy.
pub struct L4Front {
    pub envoy: Envoy,
    /// Where clients connect for plain HTTP (Pebble validates here).
    pub http: u16,
    /// Where clients connect for TLS.
    pub https: u16,
    dir: TempDir,
}

impl L4Front {
    /// Starts the front on 127.0.0.1:`http` and :`https` over `nodes`, and waits until every
    /// one of them passes its check.
    pub async fn start(http: u16, https: u16, nodes: &[FrontNode]) -> Result<L4Front> {
        let dir = tempfile::Builder::new()
            .prefix("acme-edge-front-")
            .tempdir()?;
        let admin = free_port();
        let front = L4FrontFiles {
            dir: dir.path().to_path_buf(),
        };
        front.write(nodes)?;
        let envoy = Envoy::start(&front.config(http, https, admin), admin)
            .await
            .context("start the L4 front")?;
        let front = L4Front {
            envoy,
            http,
            https,
            dir,
        };
        front.wait_healthy(nodes.len()).await?;
        Ok(front)
    }

    /// Replace the node list (the group changed) and wait until the front sees `healthy` of
    /// them healthy.
    pub async fn set_nodes(&self, nodes: &[FrontNode], healthy: usize) -> Result<()> {
        L4FrontFiles {
            dir: self.dir.path().to_path_buf(),
        }
        .write(nodes)?;
        self.wait_healthy(healthy).await
    }

    /// Waits until `n` nodes pass the front's check on both ports.
    pub async fn wait_healthy(&self, n: usize) -> Result<()> {
        for cluster in ["nodes_http", "nodes_https"] {
            self.envoy
                .wait_cluster_healthy(cluster, n, Duration::from_secs(30))
                .await
                .with_context(|| format!("the front's {cluster}"))?;
        }
        Ok(())
    }
}

struct L4FrontFiles {
    dir: PathBuf,
}

impl L4FrontFiles {
    fn eds(&self, cluster: &str) -> PathBuf {
        self.dir.join(format!("{cluster}.json"))
    }

    /// Both EDS files, each swapped by rename (Envoy watches the directory).
    fn write(&self, nodes: &[FrontNode]) -> Result<()> {
        for (cluster, https) in [("nodes_http", false), ("nodes_https", true)] {
            let endpoints: Vec<serde_json::Value> = nodes
                .iter()
                .map(|n| {
                    serde_json::json!({
                        "endpoint": {
                            "address": {"socket_address": {
                                "address": n.ip.to_string(),
                                "port_value": if https { n.https } else { n.http },
                            }},
                            "hostname": n.name,
                            // The load balancer's check: the node's Envoy on its plain port.
                            "health_check_config": {"port_value": n.http},
                        },
                        // Hash the node, not its port: the same node for a client on both.
                        "metadata": {"filter_metadata": {"envoy.lb": {"hash_key": n.name}}},
                    })
                })
                .collect();
            let response = serde_json::json!({
                "version_info": format!("{}", nodes.len()),
                "resources": [{
                    "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                    "cluster_name": cluster,
                    "endpoints": [{"lb_endpoints": endpoints}],
                }],
            });
            let tmp = self.dir.join(format!(".{cluster}.tmp"));
            std::fs::write(&tmp, serde_json::to_vec_pretty(&response)?)?;
            std::fs::rename(&tmp, self.eds(cluster))?;
        }
        Ok(())
    }

    fn config(&self, http: u16, https: u16, admin: u16) -> String {
        let dir = self.dir.display();
        let listener = |name: &str, port: u16| {
            format!(
                r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    listener_filters:
    # Upstream connections leave from the client's own address (IP_TRANSPARENT), as a
    # passthrough load balancer delivers them: the nodes see who the client is.
    - name: envoy.filters.listener.original_src
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.original_src.v3.OriginalSrc
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: front_{name}
          cluster: nodes_{name}
          # CLIENT_IP session affinity.
          hash_policy: [{{ source_ip: {{}} }}]
"#
            )
        };
        let cluster = |name: &str| {
            format!(
                r#"
  - name: nodes_{name}
    type: EDS
    eds_cluster_config:
      service_name: nodes_{name}
      eds_config:
        resource_api_version: V3
        path_config_source:
          path: {dir}/nodes_{name}.json
          watched_directory: {{ path: {dir} }}
    connect_timeout: 1s
    lb_policy: MAGLEV
    ignore_health_on_host_removal: true
    health_checks:
    - timeout: 1s
      interval: 1s
      no_traffic_interval: 1s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: {{ path: /.edge/healthz }}
"#
            )
        };
        format!(
            r#"# The local cluster's stand-in for the network load balancer (tests/src/front.rs).
node: {{ id: l4-front, cluster: acme-edge-local }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:{}{}
  clusters:{}{}"#,
            listener("http", http),
            listener("https", https),
            cluster("http"),
            cluster("https"),
        )
    }
}
