//! `renewer sync` with the real Envoy: a certificate issued by Pebble is installed into the
//! SDS directory the shipped Envoy config reads, rotated without a restart while a WebSocket
//! stays open, and a bad bundle is refused while Envoy keeps serving the old one.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use harness::node::{Acme, Node, HOST, ORIGIN};
use harness::{
    free_port, http_get, wait_for, ws_connect, ws_echo, AcmeStack, EchoBackend, FakeSecretManager,
    RenewerProcess,
};
use renewer::bundle::{BundleStore, ObjectBundles};
use renewer::node::sync::Installed;

const CERT: &str = "[[certificates]]\nname = \"app\"\ndomains = [\"app.test\"]\n";

fn installed(dir: &Path) -> Option<Installed> {
    renewer::node::sync::installed(dir)
}

/// The serial of the leaf certificate a TLS handshake with `port` presents.
async fn served_serial(port: u16, roots: &str) -> Result<String> {
    harness::served_serial(port, HOST, roots).await
}

async fn wait_served(port: u16, roots: &str, serial: &str) -> Result<()> {
    wait_for(
        &format!("Envoy to serve {serial}"),
        Duration::from_secs(30),
        || async {
            Ok(served_serial(port, roots)
                .await
                .ok()
                .filter(|s| s == serial)
                .map(|_| ()))
        },
    )
    .await
}

async fn current_serial(stack: &AcmeStack) -> Result<String> {
    Ok(ObjectBundles::new(stack.store.clone())
        .current_meta("app")
        .await?
        .context("no current certificate")?
        .serial)
}

#[tokio::test]
async fn envoy_serves_synced_certificates_and_rotates_without_restart() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let roots = stack.pebble.issuing_roots_pem().await?;
    let tls = tempfile::Builder::new()
        .prefix("acme-edge-sync-")
        .tempdir()?;
    let tls_dir = tls.path().join("tls");
    let hook_log = tls.path().join("hook.log");
    let extra = format!("[sync]\ndir = \"{}\"\n", tls_dir.display());
    let config = stack.write_config("renewer.toml", &stack.config_text(&extra, CERT))?;

    // A fresh node: the SDS file exists, no certificate yet. Envoy starts (the plain listener
    // must answer challenges before the first certificate exists).
    let out = stack.renewer(&config, &["sync", "--init"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(tls_dir.join("sds.yaml").exists());
    let node = Node::start_with(
        Acme::Stateless,
        1,
        &[("TLS_DIR", tls_dir.display().to_string())],
    )
    .await?;
    assert!(served_serial(node.https, &roots).await.is_err());
    let envoy_pid = node.envoy.pid();

    // Before the renewer ever ran, sync says so and fails.
    let out = stack.renewer(&config, &["sync", "--once"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("has no certificate"), "{}", out.all());

    // Issue, sync: Envoy picks the first certificate up without a restart.
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let first = current_serial(&stack).await?;
    let hook = format!("echo \"$RENEWER_SYNC_SERIAL\" >> {}", hook_log.display());
    let out = stack
        .renewer(&config, &["sync", "--once", "--on-change", &hook])
        .await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(installed(&tls_dir).map(|i| i.serial), Some(first.clone()));
    wait_served(node.https, &roots, &first).await?;
    assert_eq!(std::fs::read_to_string(&hook_log)?.trim(), first);

    // Nothing new: a second sync changes nothing and runs no hook.
    let out = stack
        .renewer(&config, &["sync", "--once", "--on-change", &hook])
        .await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stderr.contains("certificate unchanged"),
        "{}",
        out.all()
    );
    assert_eq!(std::fs::read_to_string(&hook_log)?.lines().count(), 1);

    // A WebSocket through Envoy, opened before the rotation.
    let (mut ws, _) = ws_connect(&node.wss("/ws"), &[("origin", ORIGIN)], Some(&roots)).await?;
    assert_eq!(ws_echo(&mut ws, "before").await?, "before");

    // Forced renewal + sync: the new serial is served, the old session still echoes.
    let out = stack.renewer(&config, &["run", "--force"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let second = current_serial(&stack).await?;
    assert_ne!(second, first);
    let out = stack.renewer(&config, &["sync", "--once"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    wait_served(node.https, &roots, &second).await?;
    assert_eq!(ws_echo(&mut ws, "after rotation").await?, "after rotation");

    // A bundle whose key is not its certificate's: a renewal whose stored key was swapped.
    let out = stack.renewer(&config, &["run", "--force"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let third = current_serial(&stack).await?;
    let foreign = rcgen::KeyPair::generate()?.serialize_pem();
    std::fs::write(
        stack
            .store_dir()
            .join(format!("certs/app/{third}/privkey.pem")),
        foreign,
    )?;
    let out = stack.renewer(&config, &["sync", "--once"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("does not match"),
        "names the problem: {}",
        out.all()
    );
    assert!(
        out.stderr.contains("installed certificate stays"),
        "{}",
        out.all()
    );
    assert_eq!(installed(&tls_dir).map(|i| i.serial), Some(second.clone()));
    assert_eq!(served_serial(node.https, &roots).await?, second);
    assert_eq!(ws_echo(&mut ws, "still here").await?, "still here");

    // Envoy never restarted: the same process served all three certificates.
    assert_eq!(node.envoy.pid(), envoy_pid);
    assert!(Path::new(&format!("/proc/{envoy_pid}")).exists());
    Ok(())
}

#[tokio::test]
async fn watch_mode_installs_renewals_retries_faults_and_stops_on_sigterm() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let tls = tempfile::Builder::new()
        .prefix("acme-edge-sync-")
        .tempdir()?;
    let tls_dir = tls.path().join("tls");
    // No status endpoint here (the readiness test below has one).
    let extra = format!(
        "[sync]\ndir = \"{}\"\nkeep_versions = 2\nstatus_address = \"\"\n",
        tls_dir.display()
    );
    let config = stack.write_config("renewer.toml", &stack.config_text(&extra, CERT))?;

    // Started before anything is issued: it says so and keeps checking.
    let mut watch = RenewerProcess::spawn(&config, &["sync", "--watch", "1s"], &[])?;
    watch
        .wait_log("nothing to install yet", Duration::from_secs(30))
        .await?;

    let mut serials = Vec::new();
    for force in [false, true, true] {
        let args: &[&str] = if force { &["run", "--force"] } else { &["run"] };
        let out = stack.renewer(&config, args).await?;
        assert_eq!(out.code, 0, "{}", out.all());
        let serial = current_serial(&stack).await?;
        wait_for(
            "the watcher to install it",
            Duration::from_secs(30),
            || async {
                Ok(installed(&tls_dir)
                    .filter(|i| i.serial == serial)
                    .map(|_| ()))
            },
        )
        .await?;
        serials.push(serial);
    }
    // keep_versions = 2: the current version and the one before it. The watcher switches
    // `current` first and prunes after, so the listing may lag the switch by a moment.
    let versions = || -> std::io::Result<Vec<String>> {
        Ok(std::fs::read_dir(&tls_dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains('T') && !n.starts_with('.'))
            .collect())
    };
    wait_for("old versions pruned", Duration::from_secs(30), || async {
        Ok((versions()?.len() <= 2).then_some(()))
    })
    .await?;
    let versions = versions()?;
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert!(!versions.iter().any(|v| v.ends_with(&serials[0][..16])));

    watch.sigterm()?;
    let status = watch.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", watch.log());
    Ok(())
}

#[tokio::test]
async fn sync_reads_the_secret_manager_mirror() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let sm = FakeSecretManager::start("acme-edge-test").await?;
    let tls = tempfile::Builder::new()
        .prefix("acme-edge-sync-")
        .tempdir()?;
    let tls_dir = tls.path().join("tls");
    let extra = format!(
        "[secret_manager]\nproject = \"acme-edge-test\"\nendpoint = \"{}\"\n\
         [sync]\ndir = \"{}\"\nsource = \"secret-manager\"\n",
        sm.endpoint(),
        tls_dir.display()
    );
    let config = stack.write_config("renewer.toml", &stack.config_text(&extra, CERT))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let serial = current_serial(&stack).await?;

    let out = stack.renewer(&config, &["sync", "--once"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let got = installed(&tls_dir).context("installed")?;
    assert_eq!(got.serial, serial);
    assert!(got.source.starts_with("secretmanager://"), "{}", got.source);

    // An operator adds a version whose key belongs to another certificate: refused.
    let versions = sm.versions("acme-edge-app");
    let (_, _, payload) = versions.last().context("a version")?;
    let text = String::from_utf8(payload.clone())?;
    let (chain, _) = renewer::certinfo::split_bundle(&text)?;
    let bad = format!("{chain}{}", rcgen::KeyPair::generate()?.serialize_pem());
    sm.add_version("acme-edge-app", bad.as_bytes());
    let out = stack.renewer(&config, &["sync", "--once"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("does not match"), "{}", out.all());
    assert_eq!(installed(&tls_dir).map(|i| i.serial), Some(serial));

    // Config and usage errors name the problem and exit 2.
    let out = stack
        .renewer(&config, &["sync", "--once", "--source", "s3"])
        .await?;
    assert_eq!(out.code, 2, "{}", out.all());
    let out = stack
        .renewer(&config, &["sync", "--once", "--dir", "relative/dir"])
        .await?;
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("sync.dir"), "{}", out.all());
    let out = stack.renewer(&config, &["sync", "--watch", "soon"]).await?;
    assert_eq!(out.code, 2, "{}", out.all());
    Ok(())
}

/// `GET /ready` and `GET /metrics` of a `renewer sync --watch` status endpoint.
async fn status(port: u16) -> Result<(u16, String, String)> {
    let ready = http_get(port, "/ready").await?;
    let metrics = http_get(port, "/metrics").await?;
    Ok((ready.status, ready.body_text(), metrics.body_text()))
}

/// Waits until `/ready` answers `code` with a body containing `text`.
async fn wait_ready(port: u16, code: u16, text: &str) -> Result<(String, String)> {
    let last = std::sync::Mutex::new(String::new());
    let waited = wait_for(
        &format!("/ready to answer {code} with {text:?}"),
        Duration::from_secs(30),
        || async {
            let (status, body, metrics) = status(port).await?;
            *last.lock().unwrap() = format!("{status} {body}");
            Ok((status == code && body.contains(text)).then_some((body, metrics)))
        },
    )
    .await;
    let last = last.lock().unwrap().clone();
    waited.with_context(|| format!("last answer: {last}"))
}

/// The node's readiness, as the load balancer's check sees it through Envoy: bootstrapping
/// before any certificate exists, ready once Envoy presents the installed certificate, not
/// ready while the app is down; after the names grow, the old certificate is served with the
/// gap exported until the renewer adds the new name.
#[tokio::test]
async fn readiness_follows_envoy_and_the_app_and_a_missing_name_is_served_meanwhile() -> Result<()>
{
    let stack = AcmeStack::start().await?;
    let dir = tempfile::Builder::new()
        .prefix("acme-edge-ready-")
        .tempdir()?;
    let tls_dir = dir.path().join("tls");
    let mut app = EchoBackend::start("app").await?;
    let status_port = free_port();
    // As on a node: `sync --init` writes sds.yaml before Envoy starts.
    let init = stack.write_config(
        "init.toml",
        &stack.config_text(&format!("[sync]\ndir = \"{}\"\n", tls_dir.display()), CERT),
    )?;
    let out = stack.renewer(&init, &["sync", "--init"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let node = Node::start_with(
        Acme::Stateless,
        1,
        &[
            ("TLS_DIR", tls_dir.display().to_string()),
            ("READY_ADDRESS", format!("127.0.0.1:{status_port}")),
        ],
    )
    .await?;
    let app_addr = app.addr();
    let settings = |names: &str| {
        format!(
            "[sync]\ndir = \"{}\"\nstatus_address = \"127.0.0.1:{status_port}\"\n\
             ready_tls_address = \"127.0.0.1:{}\"\nready_app_url = \"http://{}/healthz\"\n\
             ready_interval_seconds = 1\n",
            tls_dir.display(),
            node.https,
            app_addr
        ) + &format!("[[certificates]]\nname = \"app\"\ndomains = [{names}]\n")
    };
    let config = stack.write_config(
        "renewer.toml",
        &stack.config_text(&settings("\"app.test\""), ""),
    )?;
    let mut watch = RenewerProcess::spawn(&config, &["sync", "--watch", "1s"], &[])?;

    // No certificate anywhere yet: ready, so the node can answer the first challenges.
    wait_ready(status_port, 200, "bootstrapping").await?;
    // What the load balancer asks: Envoy's /.edge/healthz on the plain port is this answer.
    let hc = node.get("/.edge/healthz").await?;
    assert_eq!(hc.status, 200, "{}", hc.body_text());
    assert!(
        hc.body_text().contains("bootstrapping"),
        "{}",
        hc.body_text()
    );

    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let first = current_serial(&stack).await?;
    let (_, metrics) = wait_ready(status_port, 200, &format!("serving {first}")).await?;
    assert!(metrics.contains("acme_edge_sync_ready 1"), "{metrics}");
    assert!(
        metrics.contains("acme_edge_sync_missing_names 0"),
        "{metrics}"
    );

    // The app goes down: the node is not ready (503 through Envoy too), and back.
    app.stop().await;
    let (body, metrics) = wait_ready(status_port, 503, "app:").await?;
    assert!(body.starts_with("not ready"), "{body}");
    assert!(metrics.contains("acme_edge_sync_ready 0"), "{metrics}");
    assert_eq!(node.get("/.edge/healthz").await?.status, 503);
    let port: u16 = app_addr.rsplit_once(':').context("port")?.1.parse()?;
    let _app = EchoBackend::start_at("app", std::net::Ipv4Addr::LOCALHOST.into(), port).await?;
    wait_ready(status_port, 200, &format!("serving {first}")).await?;

    // The names grow (a node started with the new settings before the renewer ran): the
    // certificate it has is served, and the gap is logged and exported.
    watch.sigterm()?;
    let stopped = watch.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(stopped.and_then(|s| s.code()), Some(0), "{}", watch.log());
    let both = "\"app.test\", \"new.app.test\"";
    std::fs::write(&config, stack.config_text(&settings(both), ""))?;
    let watch = RenewerProcess::spawn(&config, &["sync", "--watch", "1s"], &[])?;
    let (body, metrics) = wait_ready(status_port, 200, "lacks new.app.test").await?;
    assert!(body.contains(&first), "{body}");
    assert!(
        metrics.contains("acme_edge_sync_missing_names 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("acme_edge_sync_missing_name{name=\"new.app.test\"} 1"),
        "{metrics}"
    );
    watch
        .wait_log(
            "does not cover every configured name",
            Duration::from_secs(10),
        )
        .await?;
    assert_eq!(
        served_serial(node.https, &stack.pebble.issuing_roots_pem().await?).await?,
        first
    );

    // The renewer adds the name: the watcher installs it and the gap closes.
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let second = current_serial(&stack).await?;
    assert_ne!(second, first);
    let (_, metrics) = wait_ready(status_port, 200, &format!("serving {second}")).await?;
    assert!(
        metrics.contains("acme_edge_sync_missing_names 0"),
        "{metrics}"
    );
    let got = installed(&tls_dir).context("installed")?;
    assert_eq!(got.domains, vec!["app.test", "new.app.test"]);
    Ok(())
}
