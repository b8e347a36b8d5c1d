//! The renewer never spends an issuance it does not need and never wedges itself: the real
//! `renewer` binary against Pebble, on the file store and on fake-gcs-server, with faults
//! (concurrent forced runs, rejected nonces, a lost answer, a reset CA, a killed run).
//!
//! Let's Encrypt allows 5 duplicate certificates per week per set of names: every test here
//! counts what Pebble issued (its log) against what the renewer stored.

use std::path::Path;

use anyhow::Result;
use harness::{AcmeStack, FakeGcs, FaultProxy, Pebble, PebbleBuilder, RenewerOutput};

const APP: &str = "[[certificates]]\nname = \"app\"\ndomains = [\"app.example.test\"]\n";

/// A Pebble stack on the file store or on fake-gcs-server (`gs://acme-certs/edge`), and the
/// `[store]` section that goes with it.
struct Setup {
    stack: AcmeStack,
    store_section: String,
    _gcs: Option<FakeGcs>,
}

async fn setup(on_gcs: bool, pebble: PebbleBuilder) -> Result<Setup> {
    if !on_gcs {
        let stack = AcmeStack::start_with(pebble, None).await?;
        let store_section = format!(
            "[store]\nurl = \"file://{}\"\nkeep_serials = 100\n",
            stack.store_dir().display()
        );
        return Ok(Setup {
            stack,
            store_section,
            _gcs: None,
        });
    }
    let gcs = FakeGcs::start().await?;
    gcs.create_bucket("acme-certs").await?;
    let store: renewer::store::SharedStore = std::sync::Arc::new(
        renewer::store::gcs::GcsStore::new("acme-certs", "edge", Some(&gcs.base_url())).await?,
    );
    let stack = AcmeStack::start_with(pebble, Some(store)).await?;
    let store_section = format!(
        "[store]\nurl = \"gs://acme-certs/edge\"\ngcs_endpoint = \"{}\"\nkeep_serials = 100\n",
        gcs.base_url()
    );
    Ok(Setup {
        stack,
        store_section,
        _gcs: Some(gcs),
    })
}

/// Serials as Pebble logs them (hex, no leading zeros) and as the store names them.
fn norm(serial: &str) -> String {
    serial.trim_start_matches('0').to_ascii_lowercase()
}

/// The serials with a stored chain under `certs/app/` in a file store (the store leaves a
/// removed serial's empty folder behind).
fn stored_serials(store: &Path) -> Vec<String> {
    std::fs::read_dir(store.join("certs/app"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("fullchain.pem").is_file())
                .map(|e| norm(&e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

fn current_serial(store: &Path) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("certs/app/current.json"))?)?;
    Ok(norm(v["serial"].as_str().unwrap_or_default()))
}

/// Challenge answers in a file store (not the store's hidden temporary files).
fn challenge_objects(store: &Path) -> usize {
    std::fs::read_dir(store.join("acme-challenge"))
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

fn all(outs: &[RenewerOutput]) -> String {
    outs.iter().map(|o| o.all()).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_forced_runs_issue_one_certificate_on_files_and_on_gcs() -> Result<()> {
    for on_gcs in [false, true] {
        let s = setup(on_gcs, Pebble::builder()).await?;
        let config = s
            .stack
            .write_config("renewer.toml", &s.stack.config_text(&s.store_section, APP))?;
        let out = s.stack.renewer(&config, &["run"]).await?;
        assert_eq!(out.code, 0, "{}", out.all());
        let before = s.stack.pebble.issued_serials().len();
        assert_eq!(before, 1);

        let runs = (0..10).map(|_| s.stack.renewer(&config, &["run", "--force"]));
        let outs: Vec<RenewerOutput> = futures_util::future::join_all(runs)
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        for out in &outs {
            assert_eq!(out.code, 0, "gcs={on_gcs}: {}", out.all());
        }
        assert_eq!(
            s.stack.pebble.issued_serials().len(),
            before + 1,
            "gcs={on_gcs}: ten forced runs, one issuance\n{}",
            all(&outs)
        );
        let taken = outs
            .iter()
            .filter(|o| o.stdout.contains("taken instead of ordering again"))
            .count();
        assert_eq!(taken, 9, "gcs={on_gcs}: {}", all(&outs));
    }
    Ok(())
}

#[tokio::test]
async fn no_issued_certificate_is_thrown_away_when_nonces_are_rejected() -> Result<()> {
    // Three in ten nonces refused: transient errors land anywhere, also after finalize.
    let s = setup(false, Pebble::builder().nonce_reject_percent(30)).await?;
    let store = s.stack.store_dir();
    let config = s.stack.write_config(
        "renewer.toml",
        &s.stack.config_text(&format!("{}\n", s.store_section), APP),
    )?;
    let mut outs = Vec::new();
    for _ in 0..10 {
        outs.push(s.stack.renewer(&config, &["run", "--force"]).await?);
    }
    // What a failed run left in flight is finished by the next run (resumed, not re-ordered).
    for _ in 0..5 {
        if !store.join("certs/app/order.json").exists() {
            break;
        }
        outs.push(s.stack.renewer(&config, &["run", "--force"]).await?);
    }
    assert!(
        !store.join("certs/app/order.json").exists(),
        "an order is still in flight after 5 more runs:\n{}",
        all(&outs)
    );
    let issued = s.stack.pebble.issued_serials();
    let stored = stored_serials(&store);
    assert!(!issued.is_empty(), "{}", all(&outs));
    for serial in &issued {
        assert!(
            stored.contains(&norm(serial)),
            "Pebble issued {serial}, the renewer never stored it (stored: {stored:?})\n{}",
            all(&outs)
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_lost_answer_to_the_lease_create_does_not_make_the_renewer_wait_for_itself() -> Result<()>
{
    let gcs = FakeGcs::start().await?;
    gcs.create_bucket("acme-certs").await?;
    // The first create of the lease reaches the bucket; its answer never comes back.
    let proxy = FaultProxy::start(
        gcs.port(),
        Box::new(|method, path, body| {
            // The multipart upload names the object in its query.
            let _ = body;
            method == "POST"
                && path.contains("ifGenerationMatch=0")
                && path.contains("name=edge%2Flocks%2Fapp")
        }),
    )
    .await?;
    let store: renewer::store::SharedStore = std::sync::Arc::new(
        renewer::store::gcs::GcsStore::new("acme-certs", "edge", Some(&gcs.base_url())).await?,
    );
    let stack = AcmeStack::start_with(Pebble::builder(), Some(store)).await?;
    // No waiting allowed for a lease: a renewer that waited for its own would fail here.
    let extra = format!(
        "[store]\nurl = \"gs://acme-certs/edge\"\ngcs_endpoint = \"{}\"\n[lock]\nwait_seconds = 0\n",
        proxy.base_url()
    );
    let config = stack.write_config("renewer.toml", &stack.config_text(&extra, APP))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(proxy.lost().len(), 1, "{:?}", proxy.lost());
    assert!(out.stderr.contains("ours"), "{}", out.all());
    assert!(
        gcs.download("acme-certs", "edge/locks/app")
            .await?
            .is_none(),
        "lease released"
    );
    Ok(())
}

fn account_url(out: &RenewerOutput) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("account:"))
        .map(|u| u.trim().to_string())
        .unwrap_or_default()
}

fn gone_backups(store: &Path) -> usize {
    std::fs::read_dir(store.join("acme/accounts"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(".gone-"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_ca_that_forgot_the_account_gets_a_new_one_and_account_says_so() -> Result<()> {
    let mut s = setup(false, Pebble::builder()).await?;
    let store = s.stack.store_dir();
    let config = s
        .stack
        .write_config("renewer.toml", &s.stack.config_text(&s.store_section, APP))?;
    let out = s.stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let out = s.stack.renewer(&config, &["account"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("known to the CA"), "{}", out.all());
    let first = account_url(&out);

    // The CA is reset: it knows no account any more.
    s.stack.pebble.restart().await?;
    let out = s.stack.renewer(&config, &["run", "--force"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stderr
            .contains("no longer knows the stored ACME account"),
        "{}",
        out.all()
    );
    assert_eq!(gone_backups(&store), 1, "the old credentials are kept");
    let out = s.stack.renewer(&config, &["account"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("known to the CA"), "{}", out.all());
    let second = account_url(&out);
    assert!(!second.is_empty() && second != first, "{first} / {second}");

    // Reset again: `account --no-create` says the account is gone (exit 3), `account`
    // registers a new one and says so.
    s.stack.pebble.restart().await?;
    let out = s
        .stack
        .renewer(&config, &["account", "--no-create"])
        .await?;
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.all().contains("no longer knows"), "{}", out.all());
    let out = s.stack.renewer(&config, &["account"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("no longer knew the stored account"),
        "{}",
        out.all()
    );
    assert_eq!(gone_backups(&store), 2);
    Ok(())
}

#[tokio::test]
async fn an_unreachable_store_is_exit_3_for_run_status_and_sync() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let closed = harness::free_port();
    let extra = format!(
        "[store]\nurl = \"gs://acme-certs/edge\"\ngcs_endpoint = \"http://127.0.0.1:{closed}\"\n\
         [sync]\ndir = \"{}\"\n",
        stack.dir().join("tls").display()
    );
    let config = stack.write_config("renewer.toml", &stack.config_text(&extra, APP))?;
    for args in [&["run"][..], &["status"], &["sync", "--once"]] {
        let out = stack.renewer(&config, args).await?;
        assert_eq!(out.code, 3, "{args:?}: {}", out.all());
        assert!(
            out.all().contains("cannot be reached"),
            "{args:?}: {}",
            out.all()
        );
    }
    assert_eq!(stack.orders_placed(), 0);
    Ok(())
}

#[tokio::test]
async fn a_killed_run_leaves_nothing_behind_after_the_next_pass_and_keep_serials_holds(
) -> Result<()> {
    // No authorization reuse: every order publishes a challenge answer.
    let s = setup(false, Pebble::builder().authz_reuse(0)).await?;
    let store = s.stack.store_dir();
    let section = s
        .store_section
        .replace("keep_serials = 100", "keep_serials = 2");
    let config = s
        .stack
        .write_config("renewer.toml", &s.stack.config_text(&section, APP))?;
    let out = s.stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());

    // A forced run killed (SIGKILL) as soon as its challenge answer is in the store.
    harness::kill_renewer_when(
        &config,
        &["run", "--force"],
        || challenge_objects(&store) > 0,
        "a challenge answer in the store",
    )
    .await?;
    assert!(
        challenge_objects(&store) > 0,
        "the killed run left its answer"
    );
    assert!(store.join("certs/app/order.json").exists());

    // Time passes: the dead run's lease expires (rewritten, not waited for).
    s.stack.expire_lease("app")?;
    // The next pass has nothing to renew, and still cleans up.
    let out = s.stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(challenge_objects(&store), 0, "{}", out.all());
    assert!(
        out.stderr.contains("left by an interrupted run"),
        "{}",
        out.all()
    );

    // keep_serials = 2: after more renewals, the current one and the one before stay.
    let mut last = String::new();
    for _ in 0..3 {
        let out = s.stack.renewer(&config, &["run", "--force"]).await?;
        assert_eq!(out.code, 0, "{}", out.all());
        last = out.all();
    }
    let stored = stored_serials(&store);
    assert_eq!(stored.len(), 2, "{stored:?}\n{last}");
    assert!(stored.contains(&current_serial(&store)?));
    Ok(())
}

#[tokio::test]
async fn a_state_that_cannot_be_written_stops_the_order_and_status_shows_it() -> Result<()> {
    let s = setup(false, Pebble::builder()).await?;
    let store = s.stack.store_dir();
    let config = s
        .stack
        .write_config("renewer.toml", &s.stack.config_text(&s.store_section, APP))?;
    // state.json cannot be written (nor read): a directory stands where it goes.
    std::fs::create_dir_all(store.join("certs/app/state.json/x"))?;
    let out = s.stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("not ordering"), "{}", out.all());
    assert_eq!(s.stack.orders_placed(), 0, "fails closed: no order");
    let out = s.stack.renewer(&config, &["status"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("state"), "{}", out.all());
    Ok(())
}

#[tokio::test]
async fn sync_with_trusted_roots_installs_the_cas_chain_and_refuses_a_self_signed_one() -> Result<()>
{
    use renewer::bundle::BundleStore as _;
    let s = setup(false, Pebble::builder()).await?;
    let roots = s.stack.dir().join("roots.pem");
    std::fs::write(&roots, s.stack.pebble.issuing_roots_pem().await?)?;
    let tls = s.stack.dir().join("tls");
    let extra = format!(
        "{}\n[sync]\ndir = \"{}\"\ntrusted_roots = \"{}\"\n",
        s.store_section,
        tls.display(),
        roots.display()
    );
    let config = s
        .stack
        .write_config("renewer.toml", &s.stack.config_text(&extra, APP))?;
    let out = s.stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let out = s.stack.renewer(&config, &["sync", "--once"]).await?;
    assert_eq!(
        out.code,
        0,
        "Pebble's chain leads to its root: {}",
        out.all()
    );
    let installed = std::fs::read_to_string(tls.join("current/fullchain.pem"))?;

    // Someone who can write the store publishes a certificate of their own.
    let (cert, key) = harness::tls::self_signed_pem(&["app.example.test"])?;
    let forged = renewer::bundle::Bundle::from_pem(
        "app",
        cert,
        renewer::bundle::Secret::new(key),
        time::OffsetDateTime::now_utc(),
    )?;
    renewer::bundle::ObjectBundles::new(s.stack.store.clone())
        .publish(&forged)
        .await?;
    let out = s.stack.renewer(&config, &["sync", "--once"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.all().contains("trusted root"), "{}", out.all());
    assert_eq!(
        std::fs::read_to_string(tls.join("current/fullchain.pem"))?,
        installed,
        "the installed certificate stays"
    );
    // A roots file that holds no certificate is a configuration error naming the field.
    std::fs::write(&roots, "not a certificate")?;
    let out = s.stack.renewer(&config, &["sync", "--once"]).await?;
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.all().contains("sync.trusted_roots"), "{}", out.all());
    Ok(())
}
