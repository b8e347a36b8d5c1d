//! The Cloud DNS fake wired to Pebble's DNS server: TXT records written through the fake's REST
//! API (as the `google-cloud-dns-v1` client sends the calls) are answered by
//! pebble-challtestsrv — the server Pebble's VA asks for DNS-01 — to a real resolver
//! (hickory), both values of a name and its wildcard at once; deleted, they are gone.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use harness::cloud_dns::RecordSet;
use harness::{http_request, FakeCloudDns, Pebble};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use serde_json::{json, Value};

const PROJECT: &str = "acme-edge-test";
const ZONE: &str = "example-test";
const NAME: &str = "_acme-challenge.example.test.";

/// A resolver that asks only 127.0.0.1:`port` (UDP, then TCP) and caches nothing.
fn resolver(port: u16) -> TokioResolver {
    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
        .into_iter()
        .map(|mut c| {
            c.port = port;
            c
        })
        .collect();
    let server = NameServerConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), true, connections);
    let mut options = ResolverOpts::default();
    options.cache_size = 0;
    options.timeout = Duration::from_secs(2);
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![server]),
        TokioRuntimeProvider::default(),
    )
    .with_options(options)
    .build()
    .expect("resolver")
}

/// The TXT values served for `name` (each record's strings joined), sorted.
async fn txt(resolver: &TokioResolver, name: &str) -> Vec<String> {
    let mut values: Vec<String> = match resolver.txt_lookup(name).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s))
                        .collect(),
                ),
                _ => None,
            })
            .collect(),
        Err(e) if e.is_no_records_found() => Vec::new(),
        Err(e) => panic!("TXT {name}: {e}"),
    };
    values.sort();
    values
}

/// `changes.create` as the official client sends it; the answer's status and JSON.
async fn change(dns: &FakeCloudDns, body: Value) -> (u16, Value) {
    let path = format!("/dns/v1/projects/{PROJECT}/managedZones/{ZONE}/changes?%24alt=json");
    let headers = [
        ("content-type", "application/json"),
        ("x-goog-api-client", "gl-rust/1 gax/1 gapic/2"),
    ];
    let resp = http_request(
        dns.port(),
        "POST",
        &path,
        &headers,
        body.to_string().as_bytes(),
    )
    .await
    .expect("changes.create");
    let json = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, json)
}

fn set(values: &[&str]) -> Value {
    RecordSet::txt(NAME, 60, values).to_json()
}

#[tokio::test]
async fn txt_records_written_through_the_fake_are_served_by_pebbles_dns() {
    let pebble = Pebble::builder().start().await.expect("pebble");
    let dns = FakeCloudDns::for_pebble(PROJECT, &pebble)
        .await
        .expect("fake Cloud DNS");
    dns.add_zone(ZONE, "example.test.", &[]);
    let resolver = resolver(pebble.dns_port());
    assert!(txt(&resolver, NAME).await.is_empty());

    // The name's value.
    let (status, v) = change(&dns, json!({ "additions": [set(&["value-1"])] })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "done");
    assert_eq!(txt(&resolver, NAME).await, ["value-1"]);

    // Its wildcard's value: the set is replaced by one with both, and both are served.
    let both = json!({
        "deletions": [set(&["value-1"])],
        "additions": [set(&["value-1", "value-2"])],
    });
    let (status, v) = change(&dns, both).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(txt(&resolver, NAME).await, ["value-1", "value-2"]);
    assert_eq!(dns.txt_values(NAME), ["value-1", "value-2"]);

    // A deletion that does not match is refused, and changes nothing.
    let (status, v) = change(&dns, json!({ "deletions": [set(&["value-1"])] })).await;
    assert_eq!(status, 412, "{v}");
    assert_eq!(v["error"]["errors"][0]["reason"], "conditionNotMet");
    assert_eq!(txt(&resolver, NAME).await, ["value-1", "value-2"]);

    // Cleaned up: nothing left in the zone or in DNS.
    let (status, v) = change(&dns, json!({ "deletions": [set(&["value-2", "value-1"])] })).await;
    assert_eq!(status, 200, "{v}");
    assert!(txt(&resolver, NAME).await.is_empty());
    assert!(dns.challenge_rrsets().is_empty());
    assert!(dns.mirror_errors().is_empty(), "{:?}", dns.mirror_errors());
    assert_eq!(
        dns.calls()
            .iter()
            .filter(|c| c.ends_with("/changes"))
            .count(),
        4
    );
}
