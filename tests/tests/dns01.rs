//! DNS-01 end to end: the `renewer` binary orders a wildcard and apex certificate from real
//! Pebble, writes the TXT records through a fake of the Cloud DNS REST API (the official client
//! against it), which puts them into `pebble-challtestsrv` — the DNS server Pebble's VA asks.
//! Failures (a zone that does not exist, a change refused with 403, Cloud DNS unavailable,
//! records that never appear) end in a clear error and leave no record behind.

use std::path::PathBuf;

use anyhow::{Context, Result};
use harness::{AcmeStack, FakeCloudDns, Pebble, PebbleBuilder, RenewerOutput};
use serde_json::Value;

const PROJECT: &str = "acme-edge-test";
const ZONE: &str = "example-test";

/// Pebble + the fake Cloud DNS with the zone `example.test.`.
async fn start() -> Result<(AcmeStack, FakeCloudDns)> {
    start_with(Pebble::builder()).await
}

/// The same with Pebble options.
async fn start_with(pebble: PebbleBuilder) -> Result<(AcmeStack, FakeCloudDns)> {
    let stack = AcmeStack::start_with(pebble, None).await?;
    let dns = FakeCloudDns::for_pebble(PROJECT, &stack.pebble).await?;
    dns.add_zone(ZONE, "example.test.", &[]);
    Ok((stack, dns))
}

/// A config with `[dns]` pointing at the fake (and at Pebble's DNS server for the
/// propagation check), `dns_extra` added to `[dns]`, and one dns-01 certificate.
fn config(stack: &AcmeStack, dns: &FakeCloudDns, dns_extra: &str) -> Result<PathBuf> {
    let extra = format!(
        "[dns]\nproject = \"{PROJECT}\"\nendpoint = \"{}\"\ncheck_servers = [\"127.0.0.1:{}\"]\n{dns_extra}\n",
        dns.endpoint(),
        stack.pebble.dns_port()
    );
    let certs = "[[certificates]]\nname = \"wild\"\ndomains = [\"example.test\", \"*.example.test\"]\nchallenge = \"dns-01\"\n";
    stack.write_config("renewer.toml", &stack.config_text(&extra, certs))
}

fn current(stack: &AcmeStack) -> Result<Value> {
    let path = stack.store_dir().join("certs/wild/current.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

fn assert_failed_clean(out: &RenewerOutput, dns: &FakeCloudDns, stack: &AcmeStack, says: &str) {
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains(says), "wanted {says:?}: {}", out.all());
    assert!(
        dns.challenge_rrsets().is_empty(),
        "records left: {:?}",
        dns.challenge_rrsets()
    );
    assert!(!stack.store_dir().join("certs/wild/current.json").exists());
}

#[tokio::test]
async fn a_wildcard_and_apex_certificate_is_issued_by_dns_01() -> Result<()> {
    let (stack, dns) = start().await?;
    // The zone is found by its DNS name (no dns.zone): the longest suffix of the names.
    let config = config(&stack, &dns, "")?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let meta = current(&stack)?;
    assert_eq!(
        meta["domains"],
        serde_json::json!(["*.example.test", "example.test"]),
        "{meta}"
    );

    // One change put both values (the name and its wildcard) in one record set; another
    // took them out again.
    let changes: Vec<Value> = dns
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/changes"))
        .map(|r| r.body)
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    let added = &changes[0]["additions"];
    assert_eq!(added.as_array().map(Vec::len), Some(1), "{added}");
    assert_eq!(added[0]["name"], "_acme-challenge.example.test.");
    assert_eq!(
        added[0]["rrdatas"].as_array().map(Vec::len),
        Some(2),
        "{added}"
    );
    assert!(dns.challenge_rrsets().is_empty(), "{:?}", dns.rrsets());
    assert!(dns.mirror_errors().is_empty(), "{:?}", dns.mirror_errors());
    let waited = out.log_lines().into_iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("DNS-01 records published and served"))
    });
    assert!(waited, "{}", out.all());
    Ok(())
}

#[tokio::test]
async fn a_zone_that_does_not_exist_is_named() -> Result<()> {
    let (stack, dns) = start().await?;
    let config = config(&stack, &dns, "zone = \"no-such-zone\"")?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_failed_clean(
        &out,
        &dns,
        &stack,
        "dns.zone: the managed zone no-such-zone does not exist in project acme-edge-test",
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_change_is_reported_and_nothing_is_left() -> Result<()> {
    let (stack, dns) = start().await?;
    dns.deny_changes(true);
    let config = config(&stack, &dns, &format!("zone = \"{ZONE}\""))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_failed_clean(&out, &dns, &stack, "PERMISSION_DENIED");
    assert!(out.stdout.contains("HTTP 403"), "{}", out.all());
    Ok(())
}

/// Cloud DNS answering 503: retried `acme.attempts` times within the run (the order in flight
/// resumed, not placed again), then a clear error; a `[[acme.fallback]]` CA is never tried,
/// since its order would write to the same zone (its directory is a closed port: reaching
/// for it would show in the error).
#[tokio::test]
async fn cloud_dns_unavailable_is_retried_and_never_tries_the_fallback_ca() -> Result<()> {
    let (stack, dns) = start().await?;
    dns.unavailable_changes(true);
    let config = config(&stack, &dns, &format!("zone = \"{ZONE}\""))?;
    let text = std::fs::read_to_string(&config)?;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(
        &config,
        format!("{text}\n[[acme.fallback]]\ndirectory = \"https://127.0.0.1:{closed}/dir\"\n"),
    )?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_failed_clean(&out, &dns, &stack, "UNAVAILABLE");
    assert!(
        out.stdout.contains("gave up after 3 attempts"),
        "{}",
        out.all()
    );
    assert_eq!(
        out.stderr
            .matches("Cloud DNS unavailable; retrying")
            .count(),
        2,
        "{}",
        out.all()
    );
    assert!(!out.stderr.contains("trying the next CA"), "{}", out.all());
    assert!(!out.all().contains(&closed.to_string()), "{}", out.all());
    assert_eq!(
        stack.orders_placed(),
        1,
        "the retries resume the order in flight"
    );
    Ok(())
}

/// A forced run killed (SIGKILL) while it waits for its TXT record to be served leaves the
/// record in the zone, listed in its order record. The next pass, with nothing due, takes it
/// out once the dead run's lease has expired, and keeps the order record for a resume.
#[tokio::test]
async fn records_a_killed_run_left_are_removed_by_the_next_pass() -> Result<()> {
    // No authorization reuse: the forced order must write its record again.
    let (stack, dns) = start_with(Pebble::builder().authz_reuse(0)).await?;
    let config = config(&stack, &dns, &format!("zone = \"{ZONE}\""))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());

    // Records that are never served: the forced run waits for them until it is killed.
    dns.apply_to_dns(false);
    harness::kill_renewer_when(
        &config,
        &["run", "--force"],
        || !dns.challenge_rrsets().is_empty(),
        "a TXT record in the zone",
    )
    .await?;
    assert!(
        !dns.challenge_rrsets().is_empty(),
        "the killed run left its record"
    );
    let order = stack.store_dir().join("certs/wild/order.json");
    let listed: Value = serde_json::from_str(&std::fs::read_to_string(&order)?)?;
    assert!(listed["dns_records"].is_object(), "{listed}");

    // `status` shows the order and what the killed run left.
    let out = stack.renewer(&config, &["status", "--json"]).await?;
    let status: Value = serde_json::from_str(&out.stdout).context(out.all())?;
    let order_status = &status[0]["order_in_flight"];
    assert_eq!(order_status["url"], listed["url"], "{}", out.all());
    assert_eq!(order_status["dns_records"], 1, "{}", out.all());
    let out = stack.renewer(&config, &["status"]).await?;
    assert!(
        out.stdout
            .contains("left by an interrupted run: 1 DNS-01 record"),
        "{}",
        out.all()
    );

    stack.expire_lease("wild")?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("not due"), "{}", out.all());
    assert!(
        dns.challenge_rrsets().is_empty(),
        "records left: {:?}\n{}",
        dns.challenge_rrsets(),
        out.all()
    );
    assert!(
        out.stderr
            .contains("removed DNS-01 records left by an interrupted run"),
        "{}",
        out.all()
    );
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&order)?)?;
    assert!(kept.get("dns_records").is_none(), "{kept}");
    assert_eq!(kept["url"], listed["url"]);
    let out = stack.renewer(&config, &["status", "--json"]).await?;
    let status: Value = serde_json::from_str(&out.stdout).context(out.all())?;
    assert_eq!(
        status[0]["order_in_flight"]["dns_records"],
        0,
        "{}",
        out.all()
    );
    Ok(())
}

#[tokio::test]
async fn records_that_never_appear_time_out_and_are_removed() -> Result<()> {
    let (stack, dns) = start().await?;
    dns.apply_to_dns(false);
    let config = config(
        &stack,
        &dns,
        &format!("zone = \"{ZONE}\"\npropagation_timeout_seconds = 3"),
    )?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_failed_clean(&out, &dns, &stack, "were not served within 3 s");
    // The CA was never asked to look: nothing failed validation (rate limits count those).
    assert_eq!(stack.orders_placed(), 1);
    assert!(
        !stack.pebble.log().contains("ValidationFailed")
            && !stack.pebble.log().to_lowercase().contains("invalid"),
        "{}",
        stack.pebble.log()
    );
    Ok(())
}
