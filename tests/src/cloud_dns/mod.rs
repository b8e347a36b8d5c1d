//! A fake of the Cloud DNS API v1 (REST), for the renewer's DNS-01 challenges, whose records
//! really appear in DNS: every applied change is mirrored into the `pebble-challtestsrv` that
//! Pebble's VA asks (see [`FakeCloudDns::for_pebble`]), so a DNS-01 order is validated end to
//! end by real Pebble over real DNS.
//!
//! Google ships no Cloud DNS emulator. This serves the calls the official
//! `google-cloud-dns-v1` client sends (`$alt=json` on every call, which the fake ignores), under
//! `/dns/v1/projects/{project}/`:
//!
//! | call | answer |
//! | --- | --- |
//! | `GET managedZones[?dnsName=example.test.]` | `{"managedZones":[…]}` (key left out when none) |
//! | `GET managedZones/{zone}` | the zone; `404 notFound` when missing |
//! | `GET managedZones/{zone}/rrsets[?name=…[&type=…]]` | `{"rrsets":[…]}` (key left out when none) |
//! | `POST managedZones/{zone}/changes` | the Change, applied; `status` `done` (or `pending`) |
//! | `GET managedZones/{zone}/changes/{id}` | the Change; a pending one is `done` from then on |
//!
//! Anything else is `501` (recorded, so an unexpected call shows). A zone is
//! `{"kind":"dns#managedZone","name","dnsName","id" (a string),"nameServers","creationTime",
//! "visibility":"public"}` and holds its apex SOA and NS sets, as in Cloud DNS; record sets
//! are `{"kind":"dns#resourceRecordSet","name","type","ttl","rrdatas"}` with absolute names;
//! TXT rrdatas are zone-file strings (`"\"abc\""`). Change ids count per zone, `0` being the
//! zone's creation.
//!
//! A change applies atomically, deletions first ([`model::Zone`] has the rules): a deletion
//! must match the existing set exactly (name, type, TTL, rrdatas in any order) — `404
//! notFound` if no set has its name and type, `412 conditionNotMet` if the set differs; an
//! addition whose set exists after the deletions is `409 alreadyExists`; a name outside the
//! zone (or without the trailing dot), a set listed twice, a missing `ttl` or `rrdatas` is
//! `400`. Errors are Google JSON errors ([`ApiError::to_json`]).
//!
//! Tests shape the service ([`FakeCloudDns::add_zone`], [`FakeCloudDns::add_rrset`]) and its
//! faults ([`FakeCloudDns::deny_changes`], [`FakeCloudDns::unavailable_changes`],
//! [`FakeCloudDns::apply_to_dns`],
//! [`FakeCloudDns::pending_changes`]), and read what happened ([`FakeCloudDns::requests`],
//! [`FakeCloudDns::rrsets`], [`FakeCloudDns::challenge_rrsets`]).
//!
//! Inside: `model` (zones, record sets, changes and how one applies), `routes` (the calls),
//! `mirror` (challtestsrv, and what was verified of it), `reply` (Google's errors).

mod mirror;
mod model;
mod reply;
mod routes;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;
use axum::Router;
use serde_json::Value;

use crate::pebble::Pebble;
use crate::server::ServerTask;

pub use model::{Change, RecordSet, Zone};
pub use reply::ApiError;

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudDnsRequest {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// The JSON body (`Null` when empty; the raw text as a JSON string when not JSON).
    pub body: Value,
}

#[derive(Debug)]
struct DnsState {
    project: String,
    zones: Vec<Zone>,
    deny_changes: bool,
    unavailable_changes: bool,
    apply_to_dns: bool,
    pending_changes: bool,
    /// challtestsrv's management port, when changes are mirrored.
    challtestsrv: Option<u16>,
    /// What challtestsrv serves (as far as the fake wrote it): TXT values by name.
    mirrored: BTreeMap<String, Vec<String>>,
    mirror_errors: Vec<String>,
    requests: Vec<CloudDnsRequest>,
}

impl DnsState {
    fn zone(&self, name: &str) -> Result<&Zone, ApiError> {
        self.zones
            .iter()
            .find(|z| z.name == name)
            .ok_or_else(|| zone_missing(name))
    }

    fn zone_mut(&mut self, name: &str) -> Result<&mut Zone, ApiError> {
        self.zones
            .iter_mut()
            .find(|z| z.name == name)
            .ok_or_else(|| zone_missing(name))
    }

    /// The challtestsrv calls that make it serve the current TXT values of `names` (values of
    /// a name in several zones all count); none when not mirroring.
    fn mirror_names(&mut self, names: &[String]) -> Vec<mirror::MirrorOp> {
        if !self.apply_to_dns || self.challtestsrv.is_none() {
            return Vec::new();
        }
        let mut ops = Vec::new();
        for name in names {
            let wanted: Vec<String> = self
                .zones
                .iter()
                .flat_map(|z| z.rrsets.iter())
                .filter(|r| &r.name == name && r.rtype == "TXT")
                .flat_map(RecordSet::txt_values)
                .collect();
            ops.extend(mirror::plan(&mut self.mirrored, name, wanted));
        }
        ops
    }
}

fn zone_missing(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "The 'parameters.managedZone' resource named '{name}' does not exist."
    ))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Debug)]
struct Shared {
    state: Mutex<DnsState>,
    /// Held by each call from start to answer, mirroring included.
    serial: tokio::sync::Mutex<()>,
}

/// The running fake. Stops when dropped.
#[derive(Debug)]
pub struct FakeCloudDns {
    shared: Arc<Shared>,
    server: ServerTask,
}

impl FakeCloudDns {
    /// Serves project `project`, with no zone yet, and mirrors nothing into DNS.
    pub async fn start(project: &str) -> Result<FakeCloudDns> {
        Self::start_with(project, None).await
    }

    /// Like [`FakeCloudDns::start`], mirroring applied changes into the pebble-challtestsrv
    /// whose management API listens on 127.0.0.1:`management_port`.
    pub async fn with_challtestsrv(project: &str, management_port: u16) -> Result<FakeCloudDns> {
        Self::start_with(project, Some(management_port)).await
    }

    /// Like [`FakeCloudDns::with_challtestsrv`] with `pebble`'s DNS server: the records the
    /// renewer writes are what Pebble's VA sees (query it at 127.0.0.1:[`Pebble::dns_port`]).
    pub async fn for_pebble(project: &str, pebble: &Pebble) -> Result<FakeCloudDns> {
        Self::with_challtestsrv(project, pebble.challtestsrv_management_port()).await
    }

    async fn start_with(project: &str, challtestsrv: Option<u16>) -> Result<FakeCloudDns> {
        let shared = Arc::new(Shared {
            state: Mutex::new(DnsState {
                project: project.to_string(),
                zones: Vec::new(),
                deny_changes: false,
                unavailable_changes: false,
                apply_to_dns: true,
                pending_changes: false,
                challtestsrv,
                mirrored: BTreeMap::new(),
                mirror_errors: Vec::new(),
                requests: Vec::new(),
            }),
            serial: tokio::sync::Mutex::new(()),
        });
        let router = Router::new()
            .fallback(routes::handle)
            .with_state(shared.clone());
        let server = ServerTask::spawn(router).await?;
        Ok(FakeCloudDns { shared, server })
    }

    fn lock(&self) -> MutexGuard<'_, DnsState> {
        self.shared.state.lock().unwrap()
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `http://127.0.0.1:<port>`: the renewer's `dns.endpoint` (paths start `/dns/v1/`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Adds a public managed zone `name` (e.g. `example-test`) for `dns_name` (`example.test`,
    /// trailing dot optional), with its SOA and NS sets. No `name_servers`: Cloud DNS's
    /// `ns-cloud-a{1..4}.googledomains.com.`. A zone of that name is replaced.
    pub fn add_zone(&self, name: &str, dns_name: &str, name_servers: &[&str]) {
        let mut st = self.lock();
        st.zones.retain(|z| z.name != name);
        let id = 4_127_000_000_000_000_000 + st.zones.len() as u64 + 1;
        let zone = Zone::new(name, dns_name, name_servers, id, &now_rfc3339());
        st.zones.push(zone);
    }

    /// Adds record sets to zone `zone` as a change made by someone else (a leftover of a
    /// crashed run, say), mirrored like any change. Panics if Cloud DNS would refuse it.
    pub async fn add_rrset(&self, zone: &str, rrsets: &[RecordSet]) {
        let _serial = self.shared.serial.lock().await;
        let (ops, port) = {
            let mut st = self.lock();
            let body = serde_json::json!({
                "additions": rrsets.iter().map(RecordSet::to_json).collect::<Vec<_>>()
            });
            let change = st
                .zone_mut(zone)
                .and_then(|z| z.apply(&body, false, &now_rfc3339()).cloned())
                .unwrap_or_else(|e| panic!("add_rrset to {zone}: {e:?}"));
            (st.mirror_names(&change.txt_names()), st.challtestsrv)
        };
        if let Some(port) = port {
            let errors = mirror::run(port, ops).await;
            assert!(errors.is_empty(), "add_rrset: {errors:?}");
        }
    }

    /// `true`: `changes.create` answers `403 forbidden` (`PERMISSION_DENIED`), as for an
    /// account without `dns.changes.create`. Other calls are served.
    pub fn deny_changes(&self, on: bool) {
        self.lock().deny_changes = on;
    }

    /// `true`: `changes.create` answers `503 backendError` (`UNAVAILABLE`), as Cloud DNS
    /// does when it is having trouble; nothing is written. Other calls are served.
    pub fn unavailable_changes(&self, on: bool) {
        self.lock().unavailable_changes = on;
    }

    /// `false`: changes are applied and answered `done`, but not written to challtestsrv, so
    /// their records never appear in DNS (a propagation that never happens). Default `true`.
    pub fn apply_to_dns(&self, on: bool) {
        self.lock().apply_to_dns = on;
    }

    /// `true`: a change is answered `pending`, and reaches DNS (and becomes `done`) only with
    /// the first `changes.get` of it, so a client that does not wait for `done` is caught.
    /// The zone's record sets change at once, as in Cloud DNS.
    pub fn pending_changes(&self, on: bool) {
        self.lock().pending_changes = on;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<CloudDnsRequest> {
        self.lock().requests.clone()
    }

    /// Every request so far as `METHOD /path` (no query).
    pub fn calls(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.path.split('?').next().unwrap_or("")))
            .collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Every record set of every zone, SOA and NS included.
    pub fn rrsets(&self) -> Vec<RecordSet> {
        let st = self.lock();
        st.zones.iter().flat_map(|z| z.rrsets.clone()).collect()
    }

    /// The TXT sets named `_acme-challenge.…`: empty once a renewer cleaned up after itself.
    pub fn challenge_rrsets(&self) -> Vec<RecordSet> {
        self.rrsets()
            .into_iter()
            .filter(|r| r.rtype == "TXT" && r.name.starts_with("_acme-challenge."))
            .collect()
    }

    /// The TXT values (unquoted) the zones hold for `name` (trailing dot optional).
    pub fn txt_values(&self, name: &str) -> Vec<String> {
        let name = model::fqdn(name);
        self.rrsets()
            .into_iter()
            .filter(|r| r.rtype == "TXT" && r.name == name)
            .flat_map(|r| r.txt_values())
            .collect()
    }

    /// The changes made to zone `zone` (change `0` is its creation); empty if no such zone.
    pub fn changes(&self, zone: &str) -> Vec<Change> {
        let st = self.lock();
        st.zone(zone).map(|z| z.changes.clone()).unwrap_or_default()
    }

    /// Failed writes to challtestsrv (e.g. after [`Pebble::stop`]); also printed to stderr.
    pub fn mirror_errors(&self) -> Vec<String> {
        self.lock().mirror_errors.clone()
    }
}
