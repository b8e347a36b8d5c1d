//! `renewer serve` as a real process on a free loopback port, against Pebble: triggers,
//! joined passes, metrics, the challenge route, and SIGTERM in the middle of a pass.

use std::time::Duration;

use anyhow::Result;
use harness::{free_port, http_get, trigger, AcmeStack, RenewerProcess};
use renewer::bundle::{BundleStore, ObjectBundles};

const APP: &str = "[[certificates]]\nname = \"app\"\ndomains = [\"app.example.test\"]\n";

/// Cloud Run's SIGTERM-to-SIGKILL window: the acceptance bound for a clean stop.
const CLOUD_RUN_GRACE: Duration = Duration::from_secs(10);

fn current_json(stack: &AcmeStack) -> Vec<u8> {
    std::fs::read(stack.store_dir().join("certs/app/current.json")).unwrap_or_default()
}

#[tokio::test]
async fn post_issues_and_pebble_validates_through_the_challenge_route() -> Result<()> {
    // Pebble's VA asks `renewer serve` itself for the key authorizations.
    let port = free_port();
    let stack = AcmeStack::start_validating_on(port).await?;
    let config = stack.write_config("renewer.toml", &stack.config_text("", APP))?;
    let serve = RenewerProcess::serve(&config, port).await?;

    let (status, answer) = trigger(port, "").await?;
    assert_eq!(status, 200, "{answer}\n{}", serve.log());
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["joined"], false);
    let cert = &answer["certificates"][0];
    assert_eq!(cert["name"], "app");
    assert_eq!(cert["outcome"], "renewed", "{answer}");
    let serial = cert["serial"].as_str().unwrap().to_string();

    // The validations really came through serve: its request log has them, answered 200.
    let challenge_hits: Vec<_> = serve
        .log_lines()
        .into_iter()
        .filter(|l| {
            l["message"] == "request"
                && l["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/.well-known/acme-challenge/"))
        })
        .collect();
    assert!(!challenge_hits.is_empty(), "{}", serve.log());
    assert!(challenge_hits.iter().all(|l| l["status"] == 200));
    assert!(
        stack.responder.requests().is_empty(),
        "the spare responder was not used"
    );

    let published = ObjectBundles::new(stack.store.clone())
        .current_meta("app")
        .await?
        .expect("current certificate");
    assert_eq!(published.serial, serial);

    // A second trigger: nothing due.
    let (status, answer) = trigger(port, r#"{"only":["app"]}"#).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["certificates"][0]["outcome"], "unchanged");
    assert_eq!(answer["pass"]["id"], 2);

    let metrics = http_get(port, "/metrics").await?;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let text = String::from_utf8(metrics.body)?;
    let expiry = format!(
        "acme_edge_certificate_not_after_timestamp_seconds{{certificate=\"app\"}} {}",
        published.not_after.unix_timestamp()
    );
    for line in [
        expiry.as_str(),
        "acme_edge_renewals_total{certificate=\"app\"} 1",
        "acme_edge_renewal_failures_total{certificate=\"app\"} 0",
        "acme_edge_passes_total{result=\"ok\"} 2",
        "acme_edge_pass_duration_seconds_count 2",
        "acme_edge_certificate_consecutive_failures{certificate=\"app\"} 0",
        "acme_edge_store_up 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(
        text.contains("acme_edge_certificate_last_success_timestamp_seconds{certificate=\"app\"} ")
    );

    // Routes of the shim on the real process.
    assert_eq!(http_get(port, "/healthz").await?.status, 200);
    assert_eq!(http_get(port, "/nope").await?.status, 404);
    let (status, answer) = trigger(port, "{bad").await?;
    assert_eq!(status, 400, "{answer}");
    Ok(())
}

#[tokio::test]
async fn concurrent_triggers_join_one_pass_and_one_order() -> Result<()> {
    let stack = AcmeStack::start().await?;
    // Validation answers wait a moment, so the first pass is surely running when the second
    // trigger arrives.
    stack.responder.set_delay(Duration::from_secs(2));
    let config = stack.write_config("renewer.toml", &stack.config_text("", APP))?;
    let port = free_port();
    let serve = RenewerProcess::serve(&config, port).await?;

    let first = tokio::spawn(trigger(port, r#"{"force":false}"#));
    serve
        .wait_log("renewal pass started", Duration::from_secs(30))
        .await?;
    let second = tokio::spawn(trigger(port, "{}"));
    let (s1, a1) = first.await??;
    let (s2, a2) = second.await??;
    assert_eq!((s1, s2), (200, 200), "{a1}\n{a2}");
    assert_eq!(a1["pass"]["id"], a2["pass"]["id"], "one pass for both");
    assert_eq!(a1["joined"], false);
    assert_eq!(a2["joined"], true);
    assert_eq!(a1["certificates"], a2["certificates"]);
    assert_eq!(stack.orders_placed(), 1, "exactly one order");
    let starts = serve
        .log_lines()
        .iter()
        .filter(|l| l["message"] == "renewal pass started")
        .count();
    assert_eq!(starts, 1, "{}", serve.log());
    Ok(())
}

/// Two forced triggers with different options are two passes, but one issuance: the second
/// waits for the lease and takes the certificate the first stored.
#[tokio::test]
async fn two_different_forced_passes_cost_one_issuance() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let config = stack.write_config("renewer.toml", &stack.config_text("", APP))?;
    let port = free_port();
    let serve = RenewerProcess::serve(&config, port).await?;
    let (status, _) = trigger(port, "{}").await?;
    assert_eq!(status, 200, "{}", serve.log());
    let before = stack.pebble.issued_serials().len();
    // The second trigger must arrive while the first pass holds the lease.
    stack.responder.set_delay(Duration::from_secs(2));
    let first = tokio::spawn(trigger(port, r#"{"force":true}"#));
    serve
        .wait_log("renewal pass started", Duration::from_secs(30))
        .await?;
    let second = tokio::spawn(trigger(port, r#"{"only":["app"],"force":true}"#));
    let (s1, a1) = first.await??;
    let (s2, a2) = second.await??;
    assert_eq!((s1, s2), (200, 200), "{a1}\n{a2}");
    assert_ne!(a1["pass"]["id"], a2["pass"]["id"], "two passes");
    assert_eq!(
        stack.pebble.issued_serials().len(),
        before + 1,
        "one issuance\n{}",
        serve.log()
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_during_a_pass_stops_in_time_and_keeps_the_certificate() -> Result<()> {
    let stack = AcmeStack::start().await?;
    // A short wait for other leases, so a lease left behind would fail the run at the end.
    let extra = "[lock]\nwait_seconds = 1\n";
    let first = stack.write_config("first.toml", &stack.config_text(extra, APP))?;
    let out = stack.renewer(&first, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let before = current_json(&stack);
    assert!(!before.is_empty());

    // serve gets one more name, so its pass must renew and must validate the new name (Pebble
    // may reuse the authorization of a name it validated before, never of a new one).
    let more = "[[certificates]]\nname = \"app\"\ndomains = [\"app.example.test\", \"new.example.test\"]\n";
    let config = stack.write_config("renewer.toml", &stack.config_text(extra, more))?;
    let port = free_port();
    let mut serve = RenewerProcess::serve(&config, port).await?;

    // Hold validation: the pass stays in the middle of its order.
    stack.responder.clear_requests();
    stack.responder.set_delay(Duration::from_secs(120));
    let pass = tokio::spawn(trigger(port, ""));
    harness::wait_for("Pebble validating", Duration::from_secs(60), || async {
        Ok((!stack.responder.requests().is_empty()).then_some(()))
    })
    .await?;

    serve.sigterm()?;
    let status = serve.wait_exit(CLOUD_RUN_GRACE).await;
    let Some(status) = status else {
        panic!(
            "renewer serve still runs {CLOUD_RUN_GRACE:?} after SIGTERM\n{}",
            serve.log()
        );
    };
    assert_eq!(status.code(), Some(0), "{}", serve.log());
    serve.wait_log("cancelling", Duration::from_secs(1)).await?;

    // The caller got an answer saying the pass was cut short (not a hang).
    let (status, answer) = pass.await??;
    assert_eq!(status, 500, "{answer}");
    let error = answer["certificates"][0]["error"].as_str().unwrap_or("");
    assert!(error.contains("cancelled"), "{answer}");

    // The store: the old certificate, whole; no challenge answers left; no lease left.
    assert_eq!(current_json(&stack), before, "current.json changed");
    let bundle = ObjectBundles::new(stack.store.clone())
        .current("app")
        .await?
        .expect("still a certificate");
    assert_eq!(
        bundle.meta.serial,
        answer["certificates"][0]["serial"].as_str().unwrap()
    );
    let challenges = stack.store_dir().join("acme-challenge");
    let left: Vec<_> = std::fs::read_dir(&challenges)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "challenge answers left: {left:?}");
    assert!(
        !stack.store_dir().join("locks/app").exists(),
        "the lease was released"
    );

    // The next run renews at once: no lease in the way, no backoff recorded for the
    // cancellation.
    stack.responder.set_delay(Duration::ZERO);
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("renewed (names changed"),
        "{}",
        out.all()
    );
    Ok(())
}

/// Cloud Scheduler's attempt deadline hangs up on a long pass; a SIGTERM that comes when the
/// server has been up longer than `shutdown_timeout_seconds` must still give the pass its
/// grace and its cleanup (the budget counts from the signal, not from the start).
#[tokio::test]
async fn sigterm_after_the_caller_hung_up_still_grants_the_grace() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let extra =
        "[lock]\nwait_seconds = 1\n[serve]\npass_grace_seconds = 1\nshutdown_timeout_seconds = 3\n";
    let config = stack.write_config("renewer.toml", &stack.config_text(extra, APP))?;
    let port = free_port();
    let mut serve = RenewerProcess::serve(&config, port).await?;

    stack.responder.clear_requests();
    stack.responder.set_delay(Duration::from_secs(120));
    let caller = tokio::spawn(trigger(port, ""));
    harness::wait_for("Pebble validating", Duration::from_secs(60), || async {
        Ok((!stack.responder.requests().is_empty()).then_some(()))
    })
    .await?;
    // The caller hangs up (its connection closes) while the pass goes on.
    caller.abort();
    let _ = caller.await;
    // Up longer than the whole shutdown budget before the signal comes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    serve
        .wait_log("renewal pass started", Duration::from_secs(1))
        .await?;

    serve.sigterm()?;
    let Some(status) = serve.wait_exit(CLOUD_RUN_GRACE).await else {
        panic!("renewer serve still runs after SIGTERM\n{}", serve.log());
    };
    assert_eq!(status.code(), Some(0), "{}", serve.log());
    // The pass was given its grace, then cancelled with its cleanup.
    let log = serve.log();
    assert!(log.contains("cancelling"), "{log}");
    assert!(
        !log.contains("stopped with requests still running"),
        "{log}"
    );
    let challenges = stack.store_dir().join("acme-challenge");
    let left: Vec<_> = std::fs::read_dir(&challenges)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "challenge answers left: {left:?}\n{log}");
    assert!(
        !stack.store_dir().join("locks/app").exists(),
        "the lease was not released\n{log}"
    );
    Ok(())
}
