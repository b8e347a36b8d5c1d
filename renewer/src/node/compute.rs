//! The membership source on Google Cloud: the managed instance group through the Compute
//! Engine API, with the official client (`google-cloud-compute-v1`).
//!
//! Two read-only calls per refresh, whatever the group's size:
//! `regionInstanceGroupManagers.listManagedInstances` (status, pending action and health of
//! each instance; needs `compute.instanceGroupManagers.get`) and `instances.aggregatedList`
//! filtered on the group's label (internal addresses, across the region's zones; needs
//! `compute.instances.list`). `make deploy` grants exactly these two permissions to the nodes'
//! service account, through a custom role.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use google_cloud_compute_v1::client::{Instances, RegionInstanceGroupManagers};
use google_cloud_gax::paginator::ItemPaginator as _;

use super::members::{Instance, MemberSource};
use crate::shared::config::MembersConfig;

/// The instance label `make deploy`'s template sets to the group's name.
pub const GROUP_LABEL: &str = "acme-edge-group";

/// One Compute Engine call may take this long before the refresh counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The managed instance group of `[members]`, read through the Compute Engine API.
pub struct ComputeSource {
    groups: RegionInstanceGroupManagers,
    instances: Instances,
    project: String,
    region: String,
    group: String,
}

impl ComputeSource {
    /// Clients for the group in `cfg`. With `cfg.endpoint` set, requests go there without
    /// credentials (tests); otherwise to the real API with Application Default Credentials.
    pub async fn new(cfg: &MembersConfig) -> Result<ComputeSource, String> {
        crate::shared::store::install_crypto_provider();
        let anonymous = || google_cloud_auth::credentials::anonymous::Builder::new().build();
        let mut groups = RegionInstanceGroupManagers::builder().with_attempt_timeout(CALL_TIMEOUT);
        let mut instances = Instances::builder().with_attempt_timeout(CALL_TIMEOUT);
        if let Some(endpoint) = &cfg.endpoint {
            let endpoint = endpoint.trim_end_matches('/');
            groups = groups.with_endpoint(endpoint).with_credentials(anonymous());
            instances = instances
                .with_endpoint(endpoint)
                .with_credentials(anonymous());
        }
        let build =
            |what: &str, e: String| format!("cannot create the Compute Engine {what} client: {e}");
        Ok(ComputeSource {
            groups: groups
                .build()
                .await
                .map_err(|e| build("groups", e.to_string()))?,
            instances: instances
                .build()
                .await
                .map_err(|e| build("instances", e.to_string()))?,
            project: cfg.project.clone(),
            region: cfg.region.clone(),
            group: cfg.group.clone(),
        })
    }

    async fn managed(
        &self,
    ) -> Result<Vec<google_cloud_compute_v1::model::ManagedInstance>, String> {
        let mut pages = self
            .groups
            .list_managed_instances()
            .set_project(&self.project)
            .set_region(&self.region)
            .set_instance_group_manager(&self.group)
            .by_item();
        let mut all = Vec::new();
        while let Some(item) = pages.next().await {
            all.push(item.map_err(|e| format!("listManagedInstances: {e}"))?);
        }
        Ok(all)
    }

    /// Internal address of every instance with the group's label, by instance name.
    async fn addresses(&self) -> Result<HashMap<String, IpAddr>, String> {
        let mut pages = self
            .instances
            .aggregated_list()
            .set_project(&self.project)
            .set_filter(format!("labels.{GROUP_LABEL} = \"{}\"", self.group))
            .by_item();
        let mut by_name = HashMap::new();
        while let Some(item) = pages.next().await {
            let (_scope, scoped) = item.map_err(|e| format!("instances.aggregatedList: {e}"))?;
            for instance in scoped.instances {
                let address = instance
                    .network_interfaces
                    .first()
                    .and_then(|n| n.network_ip.as_deref())
                    .and_then(|ip| ip.parse().ok());
                if let (Some(name), Some(address)) = (instance.name, address) {
                    by_name.insert(name, address);
                }
            }
        }
        Ok(by_name)
    }
}

/// `https://…/zones/Z/instances/NAME` → `NAME`.
fn instance_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

#[async_trait::async_trait]
impl MemberSource for ComputeSource {
    async fn instances(&self) -> Result<Vec<Instance>, String> {
        let managed = self.managed().await?;
        let addresses = self.addresses().await?;
        Ok(managed
            .into_iter()
            .filter_map(|m| {
                let name = m
                    .name
                    .clone()
                    .or_else(|| m.instance.as_deref().map(|u| instance_name(u).to_owned()))?;
                let health = m
                    .instance_health
                    .iter()
                    .find_map(|h| h.detailed_health_state.as_ref())
                    .and_then(|s| s.name())
                    .map(str::to_owned);
                Some(Instance {
                    address: addresses.get(&name).copied(),
                    status: m
                        .instance_status
                        .as_ref()
                        .and_then(|s| s.name())
                        .unwrap_or("UNKNOWN")
                        .to_owned(),
                    action: m
                        .current_action
                        .as_ref()
                        .and_then(|a| a.name())
                        .unwrap_or("UNKNOWN")
                        .to_owned(),
                    health,
                    name,
                })
            })
            .collect())
    }

    fn describe(&self) -> String {
        format!(
            "compute: projects/{}/regions/{}/instanceGroupManagers/{}",
            self.project, self.region, self.group
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_urls_name_their_instance() {
        assert_eq!(
            super::instance_name(
                "https://www.googleapis.com/compute/v1/projects/p/zones/europe-west1-b/instances/n-1"
            ),
            "n-1"
        );
        assert_eq!(super::instance_name("n-2"), "n-2");
    }
}
