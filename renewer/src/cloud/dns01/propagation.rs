//! Waiting until DNS serves the new TXT values. The CA asks the zone's authoritative servers
//! (through its own resolvers, but a fresh name is not cached yet): once every one of them
//! answers every value, telling the CA to look cannot fail for want of the record. Each
//! server is asked directly, without recursion or cache.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use super::{ChallengeRecords, Dns01Error};

/// How long one query may take before the server counts as not answering (this round).
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// The servers to ask: `host:port` entries (`dns.check_servers`), or the zone's name servers
/// (host names, port 53), resolved through the system's resolver.
pub async fn resolve_servers(hosts: &[(String, u16)]) -> Result<Vec<SocketAddr>, Dns01Error> {
    let mut out = Vec::new();
    let mut system: Option<TokioResolver> = None;
    for (host, port) in hosts {
        let host = host.trim_end_matches('.');
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
            out.push(SocketAddr::new(ip, *port));
            continue;
        }
        let resolver = match &system {
            Some(r) => r,
            None => {
                let r = TokioResolver::builder_tokio()
                    .and_then(|b| b.build())
                    .map_err(|e| Dns01Error::Failed(format!("no system DNS resolver: {e}")))?;
                system.insert(r)
            }
        };
        let ips = resolver.lookup_ip(format!("{host}.")).await.map_err(|e| {
            Dns01Error::Failed(format!("cannot resolve the name server {host}: {e}"))
        })?;
        out.extend(ips.iter().map(|ip| SocketAddr::new(ip, *port)));
    }
    if out.is_empty() {
        return Err(Dns01Error::Failed(
            "no name server to check the records with (the zone lists none; set dns.check_servers)"
                .into(),
        ));
    }
    Ok(out)
}

/// A resolver that asks `server` only: no recursion, no cache, one attempt.
fn direct(server: SocketAddr) -> Result<TokioResolver, Dns01Error> {
    let mut udp = ConnectionConfig::udp();
    udp.port = server.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = server.port();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        server.ip(),
        true,
        vec![udp, tcp],
    )]);
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.recursion_desired = false;
    opts.attempts = 1;
    opts.timeout = QUERY_TIMEOUT;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| Dns01Error::Failed(format!("DNS client for {server}: {e}")))
}

/// The TXT values `server` answers for `name` (none for NXDOMAIN or no data).
async fn txt_values(resolver: &TokioResolver, name: &str) -> Result<BTreeSet<String>, String> {
    match resolver.lookup(name, RecordType::TXT).await {
        Ok(lookup) => Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect()),
        Err(e) if e.is_no_records_found() => Ok(BTreeSet::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// What is still missing: `server: name` for every value a server does not answer yet.
pub async fn missing(servers: &[SocketAddr], records: &ChallengeRecords) -> Vec<String> {
    let mut missing = Vec::new();
    for server in servers {
        let resolver = match direct(*server) {
            Ok(r) => r,
            Err(e) => {
                missing.push(e.to_string());
                continue;
            }
        };
        for (name, values) in records {
            match txt_values(&resolver, name).await {
                Ok(seen) if values.iter().all(|v| seen.contains(v)) => {}
                Ok(_) => missing.push(format!("{server}: {name}")),
                Err(e) => missing.push(format!("{server}: {name} ({e})")),
            }
        }
    }
    missing
}

/// Wait until every server answers every value, asking every `interval`, for at most
/// `timeout`; the time it took.
pub async fn wait_served(
    servers: &[SocketAddr],
    records: &ChallengeRecords,
    timeout: Duration,
    interval: Duration,
) -> Result<Duration, Dns01Error> {
    let started = tokio::time::Instant::now();
    loop {
        let missing = missing(servers, records).await;
        if missing.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return Err(Dns01Error::Failed(format!(
                "the TXT records were not served within {} s: {}",
                timeout.as_secs(),
                missing.join(", ")
            )));
        }
        tracing::debug!(missing = missing.join(", "), "waiting for the TXT records");
        tokio::time::sleep(interval.min(timeout.saturating_sub(started.elapsed()))).await;
    }
}
