//! `renewer sync` with the real Envoy: a certificate issued by Pebble is installed into the
//! SDS directory the shipped Envoy config reads, rotated without a restart while a WebSocket
//! stays open, and a bad bundle is refused while Envoy keeps serving the old one.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use harness::node::{Acme, Node, HOST, ORIGIN};
use harness::{wait_for, ws_connect, ws_echo, AcmeStack, FakeSecretManager, RenewerProcess};
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
    let extra = format!(
        "[sync]\ndir = \"{}\"\nkeep_versions = 2\n",
        tls_dir.display()
    );
    let config = stack.write_config("renewer.toml", &stack.config_text(&extra, CERT))?;

    // Started before anything is issued: it logs the fault and keeps checking.
    let mut watch = RenewerProcess::spawn(&config, &["sync", "--watch", "1s"], &[])?;
    watch
        .wait_log("sync failed", Duration::from_secs(30))
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
    // keep_versions = 2: the current version and the one before it.
    let versions: Vec<String> = std::fs::read_dir(&tls_dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains('T') && !n.starts_with('.'))
        .collect();
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
