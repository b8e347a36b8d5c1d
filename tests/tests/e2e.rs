//! End to end, in the production shape: Pebble validates through Envoy's edge filter, the
//! renewer stores and publishes, `renewer sync` installs, Envoy serves, WebSocket clients stick
//! to their backend over TLS. The same `harness::system` runs `make demo`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use harness::system::{ChallengeMode, System, SystemOptions};
use harness::ws_echo;

fn quiet(_: &str) {}

async fn start(mode: ChallengeMode, secret_manager: bool) -> Result<System> {
    System::start(
        SystemOptions {
            mode,
            secret_manager,
            ..SystemOptions::default()
        },
        &quiet,
    )
    .await
}

async fn challenges_answered(sys: &System) -> Result<u64> {
    Ok(sys
        .envoy
        .wasm_counter("edge_http.challenge.answered")
        .await?
        .unwrap_or(0))
}

/// Issue through Envoy, sync, and check Envoy serves it; returns the serial.
async fn issue_and_install(sys: &System) -> Result<String> {
    let (status, answer) = sys.renew(false).await?;
    anyhow::ensure!(
        status == 200,
        "pass failed: {answer:#}\n{}",
        sys.serve.log()
    );
    let serial = answer["certificates"][0]["serial"]
        .as_str()
        .context("serial")?
        .to_string();
    let out = sys.sync().await?;
    anyhow::ensure!(out.code == 0, "sync failed: {}", out.all());
    sys.wait_served(&serial).await?;
    Ok(serial)
}

#[tokio::test]
async fn gcs_store_mode_and_the_secret_manager_mirror() -> Result<()> {
    let sys = start(ChallengeMode::GcsStore, true).await?;
    let serial = issue_and_install(&sys).await?;

    // Pebble's validations went through the filter, which fetched the answers from the bucket.
    assert!(challenges_answered(&sys).await? > 0);
    let current = sys.current().await?.context("current in the bucket")?;
    assert_eq!(current.serial, serial);
    // The renewer removed the answers afterwards.
    let gcs = sys.gcs.as_ref().context("gcs")?;
    let listing = harness::http_get(
        gcs.port(),
        &format!(
            "/storage/v1/b/{}/o?prefix=acme-challenge/",
            harness::system::BUCKET
        ),
    )
    .await?;
    assert!(
        !listing.body_text().contains("\"name\""),
        "challenge objects left: {}",
        listing.body_text()
    );

    // sync read the Secret Manager mirror (the config's sync.source), not the bucket.
    let installed = renewer::node::sync::installed(&sys.tls_dir).context("installed")?;
    assert!(
        installed.source.starts_with("secretmanager://"),
        "{}",
        installed.source
    );
    let versions = sys
        .secret_manager
        .as_ref()
        .context("sm")?
        .versions("acme-edge-app");
    assert_eq!(versions.len(), 1);

    let (mut ws, _, _) = sys.ws_open(None).await?;
    assert_eq!(ws_echo(&mut ws, "gcs").await?, "gcs");
    Ok(())
}

#[tokio::test]
async fn stateless_mode_answers_without_a_store_call() -> Result<()> {
    let sys = start(ChallengeMode::Stateless, false).await?;
    issue_and_install(&sys).await?;
    assert!(challenges_answered(&sys).await? > 0);
    // Nothing asked renewer serve for a challenge: the filter answered from its thumbprint.
    let asked = sys
        .serve
        .log_lines()
        .into_iter()
        .filter(|l| {
            l["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/.well-known/acme-challenge/"))
        })
        .count();
    assert_eq!(asked, 0, "{}", sys.serve.log());
    // And the key authorization the filter serves is the account's.
    let token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    let resp = harness::http_request(
        sys.ports.http,
        "GET",
        &format!("/.well-known/acme-challenge/{token}"),
        &[("host", "ws.demo.test")],
        b"",
    )
    .await?;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), format!("{token}.{}", sys.thumbprint));
    Ok(())
}

#[tokio::test]
async fn sticky_websockets_over_tls_and_rotation_with_open_sessions() -> Result<()> {
    let sys = start(ChallengeMode::ServeStore, false).await?;
    let first = issue_and_install(&sys).await?;

    // New browser clients get a cookie each; the cookie keeps each on its backend.
    let mut sessions = Vec::new();
    let mut seen = BTreeSet::new();
    for i in 0..12 {
        let (mut ws, id, resp) = sys.ws_open(None).await?;
        let cookie = harness::node::set_cookie_value(&resp).context("cookie")?;
        assert_eq!(ws_echo(&mut ws, "whoami").await?, id, "session {i}");
        for _ in 0..2 {
            let (mut again, id2, _) = sys.ws_open(Some(&cookie)).await?;
            assert_eq!(id2, id, "a reconnect with the cookie moved");
            let _ = again.close(None).await;
        }
        seen.insert(id.clone());
        sessions.push((ws, id));
    }
    assert!(seen.len() >= 2, "12 clients all on {seen:?}");

    // Rotate while all sessions are open.
    let (status, answer) = sys.renew(true).await?;
    assert_eq!(status, 200, "{answer:#}");
    let second = answer["certificates"][0]["serial"]
        .as_str()
        .context("serial")?
        .to_string();
    assert_ne!(second, first);
    let out = sys.sync().await?;
    assert_eq!(out.code, 0, "{}", out.all());
    sys.wait_served(&second).await?;
    for (ws, id) in &mut sessions {
        assert_eq!(ws_echo(ws, "whoami").await?, *id);
    }
    Ok(())
}

#[tokio::test]
async fn the_ca_stopping_during_a_pass_keeps_the_old_certificate_in_service() -> Result<()> {
    let mut sys = start(ChallengeMode::ServeStore, false).await?;
    let serial = issue_and_install(&sys).await?;
    let (mut ws, _, _) = sys.ws_open(None).await?;

    let port = sys.ports.serve;
    let pass = tokio::spawn(harness::trigger(port, r#"{"force":true}"#));
    // Stop the CA as soon as the pass has an order and asks for validation.
    sys.serve
        .wait_log("asking the CA to validate", Duration::from_secs(60))
        .await?;
    sys.pebble.stop();

    let (status, answer) = pass.await??;
    assert_eq!(status, 500, "{answer:#}");
    let cert = &answer["certificates"][0];
    assert_eq!(cert["outcome"], "failed", "{answer:#}");
    assert_eq!(cert["serial"], serial.as_str(), "the old one is in service");

    let out = sys.sync().await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("unchanged"), "{}", out.all());
    assert_eq!(sys.served_serial().await?, serial);
    assert_eq!(ws_echo(&mut ws, "still up").await?, "still up");

    // status shows the failure, and exits 1 so monitoring notices.
    let out = harness::run_renewer(&sys.config, &["status"], &[]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    Ok(())
}
