//! CA fallback (`[[acme.fallback]]`) with two real Pebble instances: the `renewer` binary
//! orders from the primary, and from the fallback only when the primary still fails after its
//! attempts; the certificate records which CA issued it, `status` and the logs say so, and the
//! next pass starts with the primary again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use harness::{key_auth_lookup, wait_for, AcmeStack, AriResponder, Http01Responder, Pebble};
use serde_json::Value;

/// Two certificates, renewed one after the other (`concurrency = 1`), so a CA can fail
/// between them.
const CERTS: &str = "[renewal]\nconcurrency = 1\n\
    [[certificates]]\nname = \"c0\"\ndomains = [\"c0.example.test\"]\n\
    [[certificates]]\nname = \"c1\"\ndomains = [\"c1.example.test\"]\n";

/// The stack's Pebble is the fallback; the primary is another Pebble validating through the
/// same challenge responder.
struct TwoCas {
    stack: AcmeStack,
    primary: Pebble,
}

impl TwoCas {
    async fn start() -> Result<TwoCas> {
        let stack = AcmeStack::start().await?;
        let primary = Pebble::builder()
            .http_port(stack.responder.port())
            .start()
            .await?;
        Ok(TwoCas { stack, primary })
    }

    /// A config whose primary is `primary_directory`, with the stack's Pebble as the one
    /// fallback; both API certificates are trusted.
    fn config(&self, primary_directory: &str) -> Result<PathBuf> {
        self.config_with(primary_directory, "")
    }

    /// [`TwoCas::config`] with `fallback_extra` in the fallback's table (e.g. its `eab`).
    fn config_with(&self, primary_directory: &str, fallback_extra: &str) -> Result<PathBuf> {
        let roots = self.stack.dir().join("both-cas.pem");
        std::fs::write(
            &roots,
            format!(
                "{}\n{}",
                self.primary.api_cert_pem(),
                self.stack.pebble.api_cert_pem()
            ),
        )?;
        let fallback = format!(
            "[[acme.fallback]]\ndirectory = \"{}\"\nextra_root_ca = \"{}\"\n{fallback_extra}",
            self.stack.pebble.directory_url(),
            roots.display()
        );
        let text = self
            .stack
            .config_text_for(primary_directory, "", CERTS)
            .replace(
                &format!(
                    "extra_root_ca = \"{}\"",
                    self.stack.pebble.api_cert_path().display()
                ),
                &format!("extra_root_ca = \"{}\"\nattempts = 2", roots.display()),
            )
            .replace("[store]", &format!("{fallback}\n[store]"));
        self.stack.write_config("renewer.toml", &text)
    }
}

/// The `ca` recorded in `certs/<name>/current.json`.
fn ca_of(stack: &AcmeStack, name: &str) -> Result<String> {
    let path = stack.store_dir().join(format!("certs/{name}/current.json"));
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let current: Value = serde_json::from_str(&text)?;
    Ok(current["ca"].as_str().unwrap_or_default().to_string())
}

fn log_says(out: &harness::RenewerOutput, message: &str) -> bool {
    out.log_lines()
        .iter()
        .any(|l| l["message"].as_str().is_some_and(|m| m.contains(message)))
}

#[tokio::test]
async fn a_primary_answering_503_or_429_hands_over_to_the_fallback() -> Result<()> {
    let cas = TwoCas::start().await?;
    let proxy = AriResponder::start_proxying(&cas.primary).await?;
    let config = cas.config(&proxy.directory_url())?;
    let fallback = cas.stack.pebble.directory_url();

    // Every newOrder at the primary: 503, then 429 with Retry-After.
    proxy.fail_next("/order-plz", 2, 503, None);
    let out = cas.stack.renewer(&config, &["run", "--only", "c0"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(proxy.faults_served(), 2, "the primary had its 2 attempts");
    assert_eq!(ca_of(&cas.stack, "c0")?, fallback);
    assert!(log_says(&out, "this CA failed"), "{}", out.all());
    assert!(log_says(&out, "trying the next CA"), "{}", out.all());

    proxy.fail_next("/order-plz", 2, 429, Some(1));
    let out = cas.stack.renewer(&config, &["run", "--only", "c1"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(proxy.faults_served(), 4);
    assert_eq!(ca_of(&cas.stack, "c1")?, fallback);
    assert!(cas.primary.issued_serials().is_empty());
    assert_eq!(cas.stack.pebble.issued_serials().len(), 2);

    // status names the CA of each; the next pass tries the primary first again, and it is
    // healthy now.
    let out = cas.stack.renewer(&config, &["status", "--json"]).await?;
    let rows: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(rows[0]["ca"], fallback.as_str(), "{rows}");
    let out = cas
        .stack
        .renewer(&config, &["run", "--force", "--only", "c0"])
        .await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(ca_of(&cas.stack, "c0")?, proxy.directory_url());
    assert_eq!(cas.primary.issued_serials().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_primary_stopped_mid_pass_hands_over_to_the_fallback() -> Result<()> {
    let cas = TwoCas::start().await?;
    let primary_directory = cas.primary.directory_url();
    let config = cas.config(&primary_directory)?;
    let c0_current = cas.stack.store_dir().join("certs/c0/current.json");
    let primary = std::sync::Arc::new(std::sync::Mutex::new(cas.primary));

    // As soon as the first certificate is stored, the primary CA goes away: the second one's
    // order meets a CA that no longer answers.
    let stopper = {
        let primary = primary.clone();
        tokio::spawn(async move {
            wait_for("c0 stored", Duration::from_secs(120), || async {
                Ok(c0_current.exists().then_some(()))
            })
            .await?;
            if let Ok(mut p) = primary.lock() {
                p.stop();
            }
            anyhow::Ok(())
        })
    };
    let out = cas.stack.renewer(&config, &["run"]).await?;
    stopper.await??;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(ca_of(&cas.stack, "c0")?, primary_directory);
    assert_eq!(ca_of(&cas.stack, "c1")?, cas.stack.pebble.directory_url());
    let out = cas.stack.renewer(&config, &["status"]).await?;
    assert!(out.stdout.contains("127.0.0.1:"), "{}", out.all());
    Ok(())
}

/// The `key_pkcs8` of every ACME account in the store, by object name.
fn account_keys(stack: &AcmeStack) -> Result<Vec<(String, String)>> {
    let dir = stack.store_dir().join("acme/accounts");
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        let account: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let key = account["key_pkcs8"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        keys.push((path.display().to_string(), key));
    }
    keys.sort();
    Ok(keys)
}

/// The edge filter's stateless mode answers every HTTP-01 challenge with one thumbprint, the
/// one `renewer account` shows (the primary's). A fallback CA's account, registered on first
/// use — here with the external account binding the CA requires — shares the primary's key,
/// so the fallback's challenges validate against that same answer.
#[tokio::test]
async fn a_fallback_account_shares_the_primary_key_so_stateless_answers_validate() -> Result<()> {
    // A responder that knows no store: `token.thumbprint`, as the filter's stateless mode.
    let thumbprint = Arc::new(Mutex::new(String::new()));
    let answer = thumbprint.clone();
    let responder = Http01Responder::start(key_auth_lookup(move |token: String| {
        let t = answer.lock().map(|t| t.clone()).unwrap_or_default();
        async move { Some(format!("{token}.{t}")) }
    }))
    .await?;
    // The stack's Pebble (the fallback) wants a binding; the primary does not.
    let hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let stack = AcmeStack::start_with_validating_on(
        Pebble::builder().require_eab("kid-1", hmac),
        responder.port(),
    )
    .await?;
    let primary = Pebble::builder()
        .http_port(responder.port())
        .start()
        .await?;
    let cas = TwoCas { stack, primary };
    let proxy = AriResponder::start_proxying(&cas.primary).await?;
    let primary_directory = proxy.directory_url();
    let config = cas.config_with(
        &primary_directory,
        "eab = { key_id = \"kid-1\", hmac_key_env = \"TEST_EAB_HMAC\" }\n",
    )?;
    let env = [("TEST_EAB_HMAC", hmac)];
    let renewer = |args: &'static [&'static str]| harness::run_renewer(&config, args, &env);

    // What the deploy does first: the primary's account, and its thumbprint for the filter.
    let out = renewer(&["account"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let shown = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("thumbprint:"))
        .map(str::trim)
        .context("no thumbprint shown")?
        .to_string();
    assert!(
        out.stdout
            .contains("no account yet: registered on first use, with this key"),
        "{}",
        out.all()
    );
    *thumbprint.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = shown;
    let out = renewer(&["run", "--only", "c0"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(ca_of(&cas.stack, "c0")?, primary_directory);

    // The primary refuses the orders (503 for both attempts): the fallback registers, with
    // the binding, and issues.
    proxy.fail_next("/order-plz", 2, 503, None);
    let out = renewer(&["run", "--only", "c1"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(ca_of(&cas.stack, "c1")?, cas.stack.pebble.directory_url());
    assert!(
        log_says(&out, "with the account key of another CA"),
        "{}",
        out.all()
    );
    assert!(!out.all().contains(hmac), "the HMAC key is never logged");
    let keys = account_keys(&cas.stack)?;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(!keys[0].1.is_empty() && keys[0].1 == keys[1].1, "{keys:?}");

    // `renewer account` says so, computing the fallback's thumbprint from its stored key.
    let out = renewer(&["account"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains(", the same key"), "{}", out.all());

    // The fallback's account is used as stored from then on (no second registration).
    proxy.fail_next("/order-plz", 2, 503, None);
    let out = renewer(&["run", "--force", "--only", "c1"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(ca_of(&cas.stack, "c1")?, cas.stack.pebble.directory_url());
    assert!(
        !log_says(&out, "with the account key of another CA"),
        "{}",
        out.all()
    );
    Ok(())
}

/// A CA that answers every registration with `badNonce` (Pebble rejecting all nonces): the
/// renewer's own `newAccount` takes the nonce each answer carries, three times, then gives up
/// with an error that says so; nothing is stored for that CA.
#[tokio::test]
async fn a_fallback_refusing_every_nonce_is_reported_as_such() -> Result<()> {
    let stack = AcmeStack::start_with(Pebble::builder().nonce_reject_percent(100), None).await?;
    let primary = Pebble::builder()
        .http_port(stack.responder.port())
        .start()
        .await?;
    let cas = TwoCas { stack, primary };
    let proxy = AriResponder::start_proxying(&cas.primary).await?;
    let config = cas.config(&proxy.directory_url())?;
    let out = cas.stack.renewer(&config, &["account"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());

    proxy.fail_next("/order-plz", 2, 503, None);
    let out = cas.stack.renewer(&config, &["run", "--only", "c0"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("refused 3 nonces in a row (badNonce)"),
        "{}",
        out.all()
    );
    assert_eq!(account_keys(&cas.stack)?.len(), 1, "only the primary's");
    Ok(())
}

/// `renewer account --all-cas` registers the fallback's account up front: a wrong EAB key
/// fails now (exit 3, naming the CA) and stores nothing for it; the right one gives an
/// account with the primary's key; a second call checks it with the CA and changes nothing.
#[tokio::test]
async fn account_all_cas_registers_the_fallback_now() -> Result<()> {
    let hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let stack = AcmeStack::start_with(Pebble::builder().require_eab("kid-1", hmac), None).await?;
    let primary = Pebble::builder()
        .http_port(stack.responder.port())
        .start()
        .await?;
    let cas = TwoCas { stack, primary };
    let config = cas.config_with(
        &cas.primary.directory_url(),
        "eab = { key_id = \"kid-1\", hmac_key_env = \"TEST_EAB_HMAC\" }\n",
    )?;
    let fallback = cas.stack.pebble.directory_url();
    let config = &config;
    let account = |key: &'static str| async move {
        harness::run_renewer(config, &["account", "--all-cas"], &[("TEST_EAB_HMAC", key)]).await
    };

    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let out = account(wrong).await?;
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(
        out.stderr.contains(&format!("fallback CA {fallback}")),
        "{}",
        out.all()
    );
    assert_eq!(account_keys(&cas.stack)?.len(), 1, "only the primary's");

    for _ in 0..2 {
        let out = account(hmac).await?;
        assert_eq!(out.code, 0, "{}", out.all());
        assert!(out.stdout.contains(", the same key"), "{}", out.all());
    }
    let keys = account_keys(&cas.stack)?;
    assert!(keys.len() == 2 && keys[0].1 == keys[1].1, "{keys:?}");
    Ok(())
}
