//! End to end, in the shape `make deploy` builds (`harness::cluster`, which `make demo` runs
//! too): the renewal job orders from Pebble, which validates through the load balancer and
//! whichever node's edge filter, reading the answer from the bucket; the renewer stores in
//! the bucket and mirrors to Secret Manager; every node's `renewer sync` installs from Secret
//! Manager and its Envoy serves it; WebSocket clients stick to their instance over TLS.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use harness::cluster::{Cluster, ClusterOptions};
use harness::ws_echo;

fn quiet(_: &str) {}

/// One cluster at a time in this binary: each is a dozen processes on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use harness::cluster::client_address as client;

async fn start() -> Result<Cluster> {
    Cluster::start(ClusterOptions::default(), &quiet).await
}

/// `renewer run`, then every node serves the result; returns the serial.
async fn issue(c: &Cluster, force: bool) -> Result<String> {
    let out = c.renew(force).await?;
    anyhow::ensure!(out.code == 0, "renewer run failed:\n{}", out.all());
    let serial = Cluster::serial_of(&out)?;
    c.wait_served_everywhere(&serial).await?;
    Ok(serial)
}

#[tokio::test]
async fn issued_through_the_cluster_and_installed_on_every_node_from_secret_manager() -> Result<()>
{
    let _one = ONE_AT_A_TIME.lock().await;
    let c = start().await?;
    let serial = issue(&c, false).await?;

    // Pebble's validations went through the load balancer to a node's filter, which fetched
    // the answers from the bucket.
    let mut answered = 0;
    for node in &c.nodes {
        answered += node
            .envoy
            .wasm_counter("edge_http.challenge.answered")
            .await?
            .unwrap_or(0);
    }
    assert!(answered > 0, "no challenge answered by any node");
    // The renewer removed the answers afterwards.
    let listing = harness::http_get(
        c.gcs.port(),
        &format!("/storage/v1/b/{}/o?prefix=acme-challenge/", c.bucket),
    )
    .await?;
    assert!(
        !listing.body_text().contains("\"name\""),
        "challenge objects left: {}",
        listing.body_text()
    );
    // Every node installed it from the Secret Manager mirror (deploy's sync.source).
    for node in &c.nodes {
        let installed = renewer::node::sync::installed(&node.tls_dir()).context("installed")?;
        assert_eq!(installed.serial, serial, "{}", node.name);
        assert!(
            installed.source.starts_with("secretmanager://"),
            "{}: {}",
            node.name,
            installed.source
        );
    }
    assert_eq!(c.secret_manager.versions(&c.secret).len(), 1);
    let (mut ws, _, _) = c.ws_open(client(1), "/ws", None).await?;
    assert_eq!(ws_echo(&mut ws, "hello").await?, "hello");
    Ok(())
}

#[tokio::test]
async fn sticky_websockets_over_tls_and_rotation_on_every_node_with_open_sessions() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = start().await?;
    let first = issue(&c, false).await?;

    // New browser clients get a cookie each; the cookie keeps each on its instance, whatever
    // address (and so whichever node) the reconnect comes from.
    let mut sessions = Vec::new();
    let mut seen = BTreeSet::new();
    for i in 0..12 {
        let (mut ws, id, resp) = c.ws_open(client(i), "/ws", None).await?;
        let cookie = harness::node::set_cookie_value(&resp).context("cookie")?;
        assert_eq!(ws_echo(&mut ws, "whoami").await?, id, "session {i}");
        for k in 0..3 {
            let (mut again, id2, _) = c
                .ws_open(client(100 + 3 * i + k), "/ws", Some(&cookie))
                .await?;
            assert_eq!(id2, id, "a reconnect with the cookie moved");
            let _ = again.close(None).await;
        }
        seen.insert(id.clone());
        sessions.push((ws, id));
    }
    assert!(seen.len() >= 2, "12 clients all on {seen:?}");

    // Rotate while all sessions are open: every node installs and serves the new one.
    let second = issue(&c, true).await?;
    assert_ne!(second, first);
    for (ws, id) in &mut sessions {
        assert_eq!(ws_echo(ws, "whoami").await?, *id);
    }
    Ok(())
}

#[tokio::test]
async fn the_ca_stopping_during_a_pass_keeps_the_old_certificate_in_service() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = start().await?;
    let serial = issue(&c, false).await?;
    let (mut ws, _, _) = c.ws_open(client(1), "/ws", None).await?;

    // One more name: Pebble may reuse the authorization of a name it validated before, never
    // of a new one, so this order must ask for a validation.
    let mut env = c.renewer_env_refs();
    env.retain(|(k, _)| *k != "RENEWER__CERTIFICATES");
    env.push((
        "RENEWER__CERTIFICATES",
        r#"[{name = "site", domains = ["ws.demo.test", "new.demo.test"]}]"#,
    ));
    let mut run = harness::RenewerProcess::spawn(&c.renewer_config, &["run", "--json"], &env)?;
    // Stop the CA as soon as the pass has an order and asks for validation.
    run.wait_log("asking the CA to validate", Duration::from_secs(60))
        .await?;
    c.pebble.stop();
    let status = run
        .wait_exit(Duration::from_secs(180))
        .await
        .context("renewer run did not end")?;
    assert_eq!(status.code(), Some(1), "{}", run.log());

    // Nothing changed on the nodes: the old certificate stays in service everywhere.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in &c.nodes {
        let served =
            harness::served_serial_at(node.ip, node.https, &c.options.domain, &c.roots_pem).await?;
        assert_eq!(served, serial, "{}", node.name);
    }
    assert_eq!(ws_echo(&mut ws, "still up").await?, "still up");

    // status shows the failure, and exits 1 so monitoring notices.
    let out = harness::run_renewer(&c.renewer_config, &["status"], &c.renewer_env_refs()).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    Ok(())
}
