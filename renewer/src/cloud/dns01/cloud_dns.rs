//! DNS-01 records through the Cloud DNS API (the official `google-cloud-dns-v1` client):
//! find the managed zone of each name, add the values to the `_acme-challenge` TXT record sets
//! with one atomic change per zone, wait until Cloud DNS applied it and the zone's servers
//! answer, and take the values out again afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_dns_v1::client::{Changes, ManagedZones, ResourceRecordSets};
use google_cloud_dns_v1::model::{change, Change, ManagedZone, ResourceRecordSet};
use google_cloud_gax::paginator::ItemPaginator as _;

use super::propagation::{resolve_servers, wait_served};
use super::{
    quoted, unquoted, with_values, without_values, ChallengeRecords, Dns01Error, TxtRecords,
};
use crate::shared::config::DnsConfig;

/// Bound on one API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How often to ask whether a change is applied, and whether the servers answer.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Read-modify-write rounds when another writer changed a record set meanwhile (412/409).
const CHANGE_ROUNDS: usize = 3;

/// Cloud DNS for `[dns]`.
pub struct CloudDns {
    zones: ManagedZones,
    rrsets: ResourceRecordSets,
    changes: Changes,
    config: DnsConfig,
}

/// A managed zone: its name (for the API), DNS name (`example.com.`) and name servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The zone's resource name (`example-com`).
    pub name: String,
    /// Its DNS name, lowercase, with the trailing dot.
    pub dns_name: String,
    /// Its authoritative name servers (host names).
    pub name_servers: Vec<String>,
}

/// Whether `record` (absolute, trailing dot) is inside the zone `dns_name`.
pub fn in_zone(record: &str, dns_name: &str) -> bool {
    let record = record.to_ascii_lowercase();
    let zone = dns_name.to_ascii_lowercase();
    record == zone || record.ends_with(&format!(".{zone}"))
}

/// The zone of `record`: the one whose DNS name is its longest suffix.
pub fn zone_for<'a>(record: &str, zones: &'a [Zone]) -> Option<&'a Zone> {
    zones
        .iter()
        .filter(|z| in_zone(record, &z.dns_name))
        .max_by_key(|z| z.dns_name.len())
}

fn zone_of(z: ManagedZone) -> Zone {
    Zone {
        name: z.name.unwrap_or_default(),
        dns_name: z.dns_name.unwrap_or_default().to_ascii_lowercase(),
        name_servers: z.name_servers,
    }
}

/// The API's error as ours: 429, 5xx and transport failures may pass; the rest is final.
fn classify(call: &str, e: &google_cloud_dns_v1::Error) -> Dns01Error {
    let http = e.http_status_code();
    let detail = match e.status() {
        Some(s) => format!("{call}: {} {}", s.code.name(), s.message),
        None => format!("{call}: {e}"),
    };
    match http {
        Some(429) | Some(500..=599) | None => Dns01Error::Transient(detail),
        Some(code) => Dns01Error::Failed(format!("{detail} (HTTP {code})")),
    }
}

fn is_conflict(e: &google_cloud_dns_v1::Error) -> bool {
    matches!(e.http_status_code(), Some(409) | Some(412))
}

impl CloudDns {
    /// Clients for `config`. With `config.endpoint` set, requests go there without
    /// credentials (tests); otherwise to the real API with Application Default Credentials.
    pub async fn new(config: &DnsConfig) -> Result<CloudDns, Dns01Error> {
        crate::shared::store::install_crypto_provider();
        let anonymous = || google_cloud_auth::credentials::anonymous::Builder::new().build();
        let mut zones = ManagedZones::builder().with_attempt_timeout(CALL_TIMEOUT);
        let mut rrsets = ResourceRecordSets::builder().with_attempt_timeout(CALL_TIMEOUT);
        let mut changes = Changes::builder().with_attempt_timeout(CALL_TIMEOUT);
        if let Some(endpoint) = &config.endpoint {
            let endpoint = endpoint.trim_end_matches('/');
            zones = zones.with_endpoint(endpoint).with_credentials(anonymous());
            rrsets = rrsets.with_endpoint(endpoint).with_credentials(anonymous());
            changes = changes
                .with_endpoint(endpoint)
                .with_credentials(anonymous());
        }
        let build = |e: google_cloud_gax::client_builder::Error| {
            Dns01Error::Failed(format!("cannot create the Cloud DNS client: {e}"))
        };
        Ok(CloudDns {
            zones: zones.build().await.map_err(build)?,
            rrsets: rrsets.build().await.map_err(build)?,
            changes: changes.build().await.map_err(build)?,
            config: config.clone(),
        })
    }

    /// The zones the records can go to: the configured one, or every zone of the project.
    async fn zones(&self) -> Result<Vec<Zone>, Dns01Error> {
        let project = &self.config.project;
        if let Some(name) = &self.config.zone {
            let zone = self
                .zones
                .get()
                .set_project(project)
                .set_managed_zone(name)
                .send()
                .await
                .map_err(|e| match e.http_status_code() {
                    Some(404) => Dns01Error::Failed(format!(
                        "dns.zone: the managed zone {name} does not exist in project {project}"
                    )),
                    _ => classify(&format!("managedZones.get {name}"), &e),
                })?;
            return Ok(vec![zone_of(zone)]);
        }
        let mut all = Vec::new();
        let mut items = self.zones.list().set_project(project).by_item();
        while let Some(zone) = items.next().await {
            let zone = zone.map_err(|e| classify(&format!("managedZones.list {project}"), &e))?;
            all.push(zone_of(zone));
        }
        Ok(all)
    }

    /// The TXT values of `name` in `zone`, as stored (quoted), with its TTL.
    async fn current(
        &self,
        zone: &str,
        name: &str,
    ) -> Result<Option<ResourceRecordSet>, Dns01Error> {
        let mut items = self
            .rrsets
            .list()
            .set_project(&self.config.project)
            .set_managed_zone(zone)
            .set_name(name)
            .set_type("TXT")
            .by_item();
        while let Some(rrset) = items.next().await {
            let rrset =
                rrset.map_err(|e| classify(&format!("resourceRecordSets.list {name}"), &e))?;
            if rrset
                .name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
                && rrset.r#type.as_deref() == Some("TXT")
            {
                return Ok(Some(rrset));
            }
        }
        Ok(None)
    }

    /// Apply `edit` (the values a record set should hold, given what it holds) to every
    /// record in `records` of `zone`, as one change; again from a fresh read when another
    /// writer got there first.
    async fn change(
        &self,
        zone: &Zone,
        records: &ChallengeRecords,
        edit: fn(&[String], &[String]) -> Vec<String>,
    ) -> Result<(), Dns01Error> {
        let mut round = 0;
        loop {
            round += 1;
            let mut body = Change::new();
            for (name, ours) in records {
                let existing = self.current(&zone.name, name).await?;
                let had: Vec<String> = existing
                    .as_ref()
                    .map(|r| r.rrdatas.iter().map(|v| unquoted(v)).collect())
                    .unwrap_or_default();
                let want = edit(&had, ours);
                if want == had {
                    continue;
                }
                if let Some(existing) = existing {
                    body.deletions.push(existing);
                }
                if !want.is_empty() {
                    body.additions.push(
                        ResourceRecordSet::new()
                            .set_name(name.clone())
                            .set_type("TXT")
                            .set_ttl(self.config.ttl_seconds as i32)
                            .set_rrdatas(want.iter().map(|v| quoted(v))),
                    );
                }
            }
            if body.additions.is_empty() && body.deletions.is_empty() {
                return Ok(());
            }
            let sent = self
                .changes
                .create()
                .set_project(&self.config.project)
                .set_managed_zone(&zone.name)
                .set_body(body)
                .send()
                .await;
            let done = match sent {
                Ok(done) => done,
                Err(e) if is_conflict(&e) && round < CHANGE_ROUNDS => continue,
                Err(e) => {
                    return Err(classify(
                        &format!("changes.create in zone {}", zone.name),
                        &e,
                    ))
                }
            };
            return self.applied(zone, done).await;
        }
    }

    /// Wait until Cloud DNS reports the change `done` (its servers have it).
    async fn applied(&self, zone: &Zone, mut change: Change) -> Result<(), Dns01Error> {
        let timeout = Duration::from_secs(self.config.propagation_timeout_seconds);
        let started = tokio::time::Instant::now();
        while change.status != Some(change::Status::Done) {
            if started.elapsed() >= timeout {
                return Err(Dns01Error::Failed(format!(
                    "Cloud DNS did not apply change {} in zone {} within {} s",
                    change.id.as_deref().unwrap_or("?"),
                    zone.name,
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
            let id = change.id.clone().unwrap_or_default();
            change = self
                .changes
                .get()
                .set_project(&self.config.project)
                .set_managed_zone(&zone.name)
                .set_change_id(&id)
                .send()
                .await
                .map_err(|e| classify(&format!("changes.get {id}"), &e))?;
        }
        Ok(())
    }

    /// `records` grouped by zone; a record outside every zone is an error naming it.
    async fn by_zone(
        &self,
        records: &ChallengeRecords,
    ) -> Result<Vec<(Zone, ChallengeRecords)>, Dns01Error> {
        let zones = self.zones().await?;
        let mut grouped: BTreeMap<String, (Zone, ChallengeRecords)> = BTreeMap::new();
        for (name, values) in records {
            let zone = zone_for(name, &zones).ok_or_else(|| {
                Dns01Error::Failed(match &self.config.zone {
                    Some(z) => format!("{name} is not inside the managed zone {z} (dns.zone)"),
                    None => format!(
                        "no managed zone of project {} contains {name}",
                        self.config.project
                    ),
                })
            })?;
            grouped
                .entry(zone.name.clone())
                .or_insert_with(|| (zone.clone(), ChallengeRecords::new()))
                .1
                .insert(name.clone(), values.clone());
        }
        Ok(grouped.into_values().collect())
    }
}

#[async_trait]
impl TxtRecords for CloudDns {
    async fn publish(&self, records: &ChallengeRecords) -> Result<(), Dns01Error> {
        for (zone, ours) in self.by_zone(records).await? {
            self.change(&zone, &ours, with_values).await?;
            let hosts: Vec<(String, u16)> = if self.config.check_servers.is_empty() {
                zone.name_servers.iter().map(|n| (n.clone(), 53)).collect()
            } else {
                self.config
                    .check_servers
                    .iter()
                    .filter_map(|s| s.rsplit_once(':'))
                    .filter_map(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
                    .collect()
            };
            let servers = resolve_servers(&hosts).await?;
            let took = wait_served(
                &servers,
                &ours,
                Duration::from_secs(self.config.propagation_timeout_seconds),
                POLL_INTERVAL,
            )
            .await?;
            tracing::info!(
                zone = zone.name,
                records = ours.len(),
                servers = servers.len(),
                waited_ms = took.as_millis() as u64,
                "DNS-01 records served by the zone's servers"
            );
        }
        Ok(())
    }

    async fn remove(&self, records: &ChallengeRecords) -> Result<(), Dns01Error> {
        for (zone, ours) in self.by_zone(records).await? {
            self.change(&zone, &ours, without_values).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, dns: &str) -> Zone {
        Zone {
            name: name.into(),
            dns_name: dns.into(),
            name_servers: vec![],
        }
    }

    #[test]
    fn the_longest_suffix_wins() {
        let zones = [
            zone("com", "example.com."),
            zone("sub", "sub.example.com."),
            zone("other", "ample.com."),
        ];
        assert_eq!(
            zone_for("_acme-challenge.a.sub.example.com.", &zones).map(|z| z.name.as_str()),
            Some("sub")
        );
        assert_eq!(
            zone_for("_acme-challenge.example.com.", &zones).map(|z| z.name.as_str()),
            Some("com")
        );
        assert_eq!(zone_for("_acme-challenge.xample.org.", &zones), None);
        // Label boundaries: ample.com. does not contain example.com.
        assert!(!in_zone("_acme-challenge.example.com.", "ample.com."));
    }
}
