//! The renewer against a real ACME CA (Pebble), through the real `renewer` binary.
//!
//! HTTP-01 is answered by a test responder reading the renewer's store, so every issuance
//! here is a real validation of a key authorization the renewer published.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use harness::{AcmeStack, AriResponder, Pebble};
use serde_json::Value;

const APP: &str =
    "[[certificates]]\nname = \"app\"\ndomains = [\"app.example.test\", \"www.example.test\"]\n";

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

fn current(stack: &AcmeStack, name: &str) -> Result<Value> {
    read_json(&stack.store_dir().join(format!("certs/{name}/current.json")))
}

fn serial(v: &Value) -> String {
    v["serial"].as_str().unwrap_or_default().to_string()
}

fn read(stack: &AcmeStack, key: &str) -> Result<String> {
    let p = stack.store_dir().join(key);
    std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))
}

fn challenge_objects(stack: &AcmeStack) -> usize {
    std::fs::read_dir(stack.store_dir().join("acme-challenge"))
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn first_issuance_then_nothing_then_force() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let config = stack.write_config("renewer.toml", &stack.config_text("", APP))?;

    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("app: renewed (no certificate yet)"),
        "{}",
        out.all()
    );
    let first = current(&stack, "app")?;
    assert_eq!(
        first["domains"],
        serde_json::json!(["app.example.test", "www.example.test"])
    );
    assert!(first["issuer"]
        .as_str()
        .unwrap_or("")
        .contains("Pebble Intermediate"));
    // Pebble validated both names through the responder, from the store.
    let hosts: Vec<String> = stack
        .responder
        .requests()
        .iter()
        .filter(|r| r.found)
        .filter_map(|r| r.host.clone())
        .collect();
    assert!(
        hosts.iter().any(|h| h.starts_with("app.example.test")),
        "{hosts:?}"
    );
    assert!(
        hosts.iter().any(|h| h.starts_with("www.example.test")),
        "{hosts:?}"
    );
    // Challenge answers are removed after the order; the key is private; the chain is full.
    assert_eq!(challenge_objects(&stack), 0);
    let key1 = read(&stack, first["privkey"].as_str().unwrap_or(""))?;
    let chain = read(&stack, first["fullchain"].as_str().unwrap_or(""))?;
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf + intermediate"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(
            stack
                .store_dir()
                .join(first["privkey"].as_str().unwrap_or("")),
        )?
        .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // No log line carries key material.
    assert!(!out.stderr.contains("PRIVATE KEY"), "{}", out.stderr);
    for line in out.log_lines() {
        assert!(
            line["severity"].is_string() && line["message"].is_string(),
            "{line}"
        );
    }
    let orders = stack.orders_placed();
    assert_eq!(orders, 1);

    // Second run: nothing to do, no order.
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("app: unchanged"), "{}", out.all());
    assert_eq!(stack.orders_placed(), orders);
    assert_eq!(serial(&current(&stack, "app")?), serial(&first));

    // --force: new serial, new key; the old issuance's objects stay (immutable).
    let out = stack.renewer(&config, &["run", "--force"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let second = current(&stack, "app")?;
    assert_ne!(serial(&second), serial(&first));
    let key2 = read(&stack, second["privkey"].as_str().unwrap_or(""))?;
    assert_ne!(key1, key2, "a fresh key per issuance");
    assert!(stack
        .store_dir()
        .join(first["fullchain"].as_str().unwrap_or("x"))
        .exists());

    // status shows it, exit 0.
    let out = stack.renewer(&config, &["status"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    for word in [
        "NAME",
        "NEXT RENEWAL",
        "app",
        "Pebble Intermediate",
        "www.example.test",
    ] {
        assert!(out.stdout.contains(word), "{word}: {}", out.all());
    }
    let out = stack.renewer(&config, &["status", "--json"]).await?;
    let rows: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(rows[0]["serial"], second["serial"]);
    assert!(rows[0]["days_left"].as_i64().unwrap_or(0) > 300);
    Ok(())
}

#[tokio::test]
async fn changed_names_or_key_type_renew() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let config = stack.write_config("renewer.toml", &stack.config_text("", APP))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let first = current(&stack, "app")?;

    let more = "[[certificates]]\nname = \"app\"\ndomains = [\"app.example.test\", \"www.example.test\", \"api.example.test\"]\n";
    let config = stack.write_config("renewer.toml", &stack.config_text("", more))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains("names changed (added: [api.example.test]"),
        "{}",
        out.all()
    );
    let second = current(&stack, "app")?;
    assert_ne!(serial(&second), serial(&first));
    assert_eq!(second["domains"].as_array().map(Vec::len), Some(3));

    let p384 = format!("{more}key_type = \"ecdsa-p384\"\n");
    let config = stack.write_config("renewer.toml", &stack.config_text("", &p384))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains("key type changed from ecdsa-p256 to ecdsa-p384"),
        "{}",
        out.all()
    );
    assert_eq!(current(&stack, "app")?["key_type"], "ecdsa-p384");
    Ok(())
}

#[tokio::test]
async fn rsa_certificates() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let cert = "[[certificates]]\nname = \"legacy\"\ndomains = [\"legacy.example.test\"]\nkey_type = \"rsa-2048\"\n";
    let config = stack.write_config("renewer.toml", &stack.config_text("", cert))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(current(&stack, "legacy")?["key_type"], "rsa-2048");
    Ok(())
}

#[tokio::test]
async fn concurrent_runs_place_one_order() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let config = stack.write_config("renewer.toml", &stack.config_text("", APP))?;
    // The account first, so the race is about the order (account creation races are handled
    // too, but would add orphan accounts, not orders).
    let runs = (0..5).map(|_| stack.renewer(&config, &["run"]));
    let outs = futures_util::future::join_all(runs).await;
    for out in outs {
        let out = out?;
        assert_eq!(out.code, 0, "{}", out.all());
    }
    assert_eq!(stack.orders_placed(), 1, "{}", stack.pebble.log());
    let serials = std::fs::read_dir(stack.store_dir().join("certs/app"))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(serials, 1);
    assert!(
        !stack.store_dir().join("locks/app").exists(),
        "lease released"
    );
    Ok(())
}

#[tokio::test]
async fn ca_gone_mid_run_keeps_the_old_certificate() -> Result<()> {
    let mut stack = AcmeStack::start().await?;
    let cfg = |attempts: u32| {
        stack.config_text("", APP).replace(
            "request_timeout_seconds = 10",
            &format!("request_timeout_seconds = 5\nattempts = {attempts}"),
        )
    };
    let config = stack.write_config("renewer.toml", &cfg(2))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let before = std::fs::read(stack.store_dir().join("certs/app/current.json"))?;

    // Start a forced renewal and kill the CA as soon as it has accepted the new order: the
    // renewer is then mid-order (authorizations, validation or polling still to come).
    let run = harness::run_renewer(&config, &["run", "--force"], &[]);
    tokio::pin!(run);
    let seen = stack.orders_placed();
    let out = loop {
        tokio::select! {
            out = &mut run => break out?,
            _ = tokio::time::sleep(Duration::from_millis(5)) => {
                if stack.orders_placed() > seen {
                    stack.pebble.stop();
                }
            }
        }
    };
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("app: FAILED"), "{}", out.all());
    assert_eq!(
        std::fs::read(stack.store_dir().join("certs/app/current.json"))?,
        before,
        "current.json untouched"
    );
    let state = read_json(&stack.store_dir().join("certs/app/state.json"))?;
    assert_eq!(state["consecutive_failures"], 1);
    assert!(
        state["last_error"].as_str().unwrap_or("").contains("CA"),
        "{state}"
    );
    // status reports the error and fails, but the certificate is still listed.
    let out = stack.renewer(&config, &["status"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("Pebble Intermediate"), "{}", out.all());
    // A run with the CA still down: not due, so nothing is attempted and the run succeeds
    // (the certificate in service is valid).
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    Ok(())
}

#[tokio::test]
async fn ca_unreachable_from_the_start_fails_cleanly() -> Result<()> {
    let mut stack = AcmeStack::start().await?;
    stack.pebble.stop();
    let text = stack.config_text("", APP).replace(
        "request_timeout_seconds = 10",
        "request_timeout_seconds = 5\nattempts = 2",
    );
    let config = stack.write_config("renewer.toml", &text)?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("cannot reach the CA"), "{}", out.all());
    assert!(
        out.stdout.contains("gave up after 2 attempts"),
        "{}",
        out.all()
    );
    assert!(!stack.store_dir().join("certs/app/current.json").exists());
    Ok(())
}

/// Every failed order may be a failed validation, and Let's Encrypt locks a name out for the
/// hour after 5 of them: with no certificate yet, the renewer still waits after a failure
/// (at most an hour), unless the names changed or the operator forces it.
#[tokio::test]
async fn a_missing_certificate_backs_off_until_the_names_change_or_force() -> Result<()> {
    let mut stack = AcmeStack::start().await?;
    stack.pebble.stop();
    let with = |certs: &str| {
        stack.config_text("", certs).replace(
            "request_timeout_seconds = 10",
            "request_timeout_seconds = 5\nattempts = 1",
        )
    };
    let state = |stack: &AcmeStack| read_json(&stack.store_dir().join("certs/app/state.json"));
    let config = stack.write_config("renewer.toml", &with(APP))?;
    // Three triggers at once: one attempt; the others wait for its lease and see it fail.
    let runs = (0..3).map(|_| stack.renewer(&config, &["run"]));
    let outs = futures_util::future::join_all(runs).await;
    let mut attempts = 0;
    for out in outs {
        let out = out?;
        assert_eq!(out.code, 1, "{}", out.all());
        if out.stdout.contains("cannot reach the CA") {
            attempts += 1;
        } else {
            assert!(out.stdout.contains("backing off"), "{}", out.all());
        }
    }
    assert_eq!(attempts, 1);
    let first = state(&stack)?;
    assert_eq!(first["consecutive_failures"], 1, "{first}");
    assert_eq!(
        first["failed_for"]["domains"],
        serde_json::json!(["app.example.test", "www.example.test"]),
        "{first}"
    );

    // The next trigger: no order, and still a failure (no certificate is in service).
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout
            .contains("backing off after 1 consecutive failure(s) (due: no certificate yet)"),
        "{}",
        out.all()
    );
    assert!(!out.stdout.contains("cannot reach the CA"), "{}", out.all());
    assert_eq!(state(&stack)?, first, "nothing was attempted");
    let out = stack.renewer(&config, &["status"]).await?;
    assert!(out.stdout.contains("backing off"), "{}", out.all());

    // Other names: a new subject, tried at once, its count starting from one.
    let api = "[[certificates]]\nname = \"app\"\ndomains = [\"api.example.test\"]\n";
    let config = stack.write_config("renewer.toml", &with(api))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert!(out.stdout.contains("cannot reach the CA"), "{}", out.all());
    let second = state(&stack)?;
    assert_eq!(second["consecutive_failures"], 1, "{second}");
    assert_eq!(
        second["failed_for"]["domains"],
        serde_json::json!(["api.example.test"])
    );

    // --force does not wait.
    let out = stack.renewer(&config, &["run", "--force"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("cannot reach the CA"), "{}", out.all());
    assert_eq!(state(&stack)?["consecutive_failures"], 2);
    Ok(())
}

#[tokio::test]
async fn corrupt_current_json_is_named_not_a_panic() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let config = stack.write_config("renewer.toml", &stack.config_text("", APP))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    std::fs::write(
        stack.store_dir().join("certs/app/current.json"),
        b"{\"version\": 1, \"trunc",
    )?;
    for args in [&["run"][..], &["status"][..]] {
        let out = stack.renewer(&config, args).await?;
        assert_eq!(out.code, 1, "{args:?}: {}", out.all());
        assert!(
            out.stdout.contains("certs/app/current.json"),
            "{args:?}: {}",
            out.all()
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.all());
    }
    // --force replaces it with a fresh certificate.
    let out = stack.renewer(&config, &["run", "--force"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    current(&stack, "app")?;
    Ok(())
}

#[tokio::test]
async fn a_short_lived_certificate_renews_at_half_its_life() -> Result<()> {
    // Pebble 2.4 has no profiles, but issues certificates of the lifetime it is told: that of
    // Let's Encrypt's `shortlived` profile, 160 hours.
    let lifetime = Duration::from_secs(160 * 3600);
    let stack =
        AcmeStack::start_with(Pebble::builder().certificate_validity(lifetime), None).await?;
    let config = stack.write_config("renewer.toml", &stack.config_text("", APP))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());

    let out = stack.renewer(&config, &["status", "--json"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let rows: Value = serde_json::from_str(&out.stdout)?;
    let row = &rows[0];
    let hours = row["lifetime_hours"].as_i64().unwrap_or(0);
    assert!((159..=160).contains(&hours), "{row}");
    assert_eq!(row["renew_with_fraction_left"], 0.5, "{row}");
    assert_eq!(row["renewal_rule"], "1/2 left (short-lived)", "{row}");
    // Due at half its life (80 hours before it expires), not at a third (53 hours).
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let at = |field: &str| time::OffsetDateTime::parse(row[field].as_str().unwrap_or(""), rfc3339);
    let margin = at("not_after")? - at("next_renewal")?;
    assert!(
        (margin.whole_minutes() - 80 * 60).abs() <= 1,
        "renews {margin} before it expires: {row}"
    );
    let out = stack.renewer(&config, &["status"]).await?;
    assert!(
        out.stdout.contains("1/2 left (short-lived)"),
        "{}",
        out.all()
    );

    // Not due yet: the next run leaves it alone.
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("unchanged (not due)"), "{}", out.all());
    assert_eq!(stack.orders_placed(), 1);
    Ok(())
}

#[tokio::test]
async fn nonce_rejections_are_retried() -> Result<()> {
    // Pebble's default: 5% of good nonces rejected with badNonce.
    let stack = AcmeStack::start_with(Pebble::builder().nonce_reject(true), None).await?;
    let certs: String = (0..3)
        .map(|i| format!("[[certificates]]\nname = \"c{i}\"\ndomains = [\"c{i}.example.test\"]\n"))
        .collect();
    let config = stack.write_config("renewer.toml", &stack.config_text("", &certs))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    for i in 0..3 {
        current(&stack, &format!("c{i}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn several_certificates_renew_concurrently_and_report_in_config_order() -> Result<()> {
    let stack = AcmeStack::start().await?;
    // Not in alphabetical order, and the first one has the most names to validate, so the
    // order of completion is unlikely to be the configuration's.
    let names = ["zeta", "alpha", "mu", "beta", "omega", "kappa"];
    let certs: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let domains = if i == 0 {
                format!("\"{n}.example.test\", \"www.{n}.example.test\", \"api.{n}.example.test\"")
            } else {
                format!("\"{n}.example.test\"")
            };
            format!("[[certificates]]\nname = \"{n}\"\ndomains = [{domains}]\n")
        })
        .collect();
    let extra = "[renewal]\nconcurrency = 3\n";
    let config = stack.write_config("renewer.toml", &stack.config_text(extra, &certs))?;
    // Held validations keep orders open long enough to overlap.
    stack.responder.set_delay(Duration::from_millis(200));

    let out = stack.renewer(&config, &["run", "--json"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let report: Value = serde_json::from_str(&out.stdout).context("run --json")?;
    let reported: Vec<&str> = report["certificates"]
        .as_array()
        .context("certificates array")?
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(reported, names, "report in configuration order");
    for (c, name) in report["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(names)
    {
        assert_eq!(c["outcome"], "renewed", "{c}");
        assert_eq!(
            c["serial"].as_str(),
            Some(serial(&current(&stack, name)?).as_str())
        );
        assert!(
            !stack.store_dir().join(format!("locks/{name}")).exists(),
            "{name}: lease released"
        );
    }
    assert_eq!(stack.orders_placed(), names.len());
    assert_eq!(challenge_objects(&stack), 0);

    // From the log: orders overlapped, and never more than `concurrency` at once.
    let (mut open, mut most) = (0usize, 0usize);
    for line in out.log_lines() {
        match line["message"].as_str() {
            Some("order placed") => open += 1,
            Some("renewed") => open = open.saturating_sub(1),
            _ => continue,
        }
        most = most.max(open);
    }
    assert!(
        (2..=3).contains(&most),
        "{most} orders at once\n{}",
        out.stderr
    );
    Ok(())
}

#[tokio::test]
async fn only_selects_certificates() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let certs =
        format!("{APP}[[certificates]]\nname = \"api\"\ndomains = [\"api.example.test\"]\n");
    let config = stack.write_config("renewer.toml", &stack.config_text("", &certs))?;
    let out = stack.renewer(&config, &["run", "--only", "api"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    current(&stack, "api")?;
    assert!(current(&stack, "app").is_err());
    let out = stack.renewer(&config, &["run", "--only", "nope"]).await?;
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("--only nope"), "{}", out.all());
    Ok(())
}

#[tokio::test]
async fn account_is_created_once_and_shows_the_thumbprint() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let config = stack.write_config("renewer.toml", &stack.config_text("", APP))?;
    let out = stack.renewer(&config, &["account", "--no-create"]).await?;
    assert_eq!(out.code, 3, "{}", out.all());
    let out = stack.renewer(&config, &["account", "--json"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let created: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(created["created"], true);
    let thumb = created["thumbprint"].as_str().unwrap_or("").to_string();
    assert_eq!(thumb.len(), 43, "base64url SHA-256: {thumb}");
    let out = stack.renewer(&config, &["account", "--json"]).await?;
    let again: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(again["created"], false);
    assert_eq!(again["account_url"], created["account_url"]);
    // The key authorizations the renewer publishes end in that thumbprint (what the filter's
    // stateless mode answers without a store).
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    // newAccount twice: the first `account` registers, the second only looks the stored
    // account up (onlyReturnExisting); `run` registers nothing.
    assert_eq!(
        stack.pebble.log().matches("POST /sign-me-up").count(),
        2,
        "one account"
    );
    let text = stack.pebble.log();
    assert!(!text.is_empty());
    let req = stack.responder.requests();
    assert!(req.iter().any(|r| r.found));
    Ok(())
}

#[tokio::test]
async fn bad_configs_stop_with_the_field_named() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let cases: Vec<(&str, String)> = vec![
        ("certificates", stack.config_text("", "")),
        (
            "certificates[0].domains",
            stack.config_text("", "[[certificates]]\nname = \"a\"\ndomains = []\n"),
        ),
        (
            "certificates[0].domains[0]",
            stack.config_text("", "[[certificates]]\nname = \"a\"\ndomains = [\"bad..name\"]\n"),
        ),
        (
            "certificates[1].name",
            stack.config_text("", &format!("{APP}{APP}")),
        ),
        (
            "certificates[0].domains[1]",
            stack.config_text(
                "",
                "[[certificates]]\nname = \"a\"\ndomains = [\"a.example.test\", \"a.example.test\"]\n",
            ),
        ),
        (
            "certificates[0].key_type",
            stack.config_text("", &format!("{APP}key_type = \"dsa-1024\"\n")),
        ),
        ("renewal.colour", stack.config_text("[renewal]\ncolour = 1\n", APP)),
    ];
    for (field, text) in cases {
        let config = stack.write_config("bad.toml", &text)?;
        let out = stack.renewer(&config, &["run"]).await?;
        assert_eq!(out.code, 2, "{field}: {}", out.all());
        assert!(out.stderr.contains(field), "{field}: {}", out.all());
        assert!(!out.stderr.contains("panicked"), "{}", out.all());
    }
    // A missing file, and a bad environment override, are named too.
    let out = stack
        .renewer(&stack.dir().join("missing.toml"), &["run"])
        .await?;
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("missing.toml"), "{}", out.all());
    let config = stack.write_config("renewer.toml", &stack.config_text("", APP))?;
    let out =
        harness::run_renewer(&config, &["run"], &[("RENEWER__LOCK__TTL_SECONDS", "soon")]).await?;
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("RENEWER__LOCK__TTL_SECONDS"),
        "{}",
        out.all()
    );
    assert_eq!(stack.orders_placed(), 0);
    Ok(())
}

#[tokio::test]
async fn help_documents_exit_codes() -> Result<()> {
    let bin = harness::renewer_bin()?;
    for args in [&["--help"][..], &["run", "--help"][..]] {
        let out = std::process::Command::new(&bin).args(args).output()?;
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Exit codes:"), "{args:?}: {text}");
        assert!(text.contains("RENEWER__<SECTION>__<FIELD>"), "{text}");
    }
    Ok(())
}

#[tokio::test]
async fn ari_window_drives_renewal_and_sends_replaces() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let ari = AriResponder::start_proxying(&stack.pebble).await?;
    let text = stack.config_text_for(&ari.directory_url(), "", APP);
    let config = stack.write_config("renewer.toml", &text)?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let first = current(&stack, "app")?;
    let ari_id = first["ari_id"].as_str().unwrap_or("").to_string();
    assert!(ari_id.contains('.'), "{first}");

    // A window in the future: not due; status shows a next renewal inside the window.
    // (Retry-After 0: every run asks again; caching is checked at the end.)
    ari.set_retry_after(Duration::ZERO);
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    ari.set_window(now + 10 * day, now + 12 * day);
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("app: unchanged"), "{}", out.all());
    assert_eq!(ari.cert_ids(), vec![ari_id.clone()]);
    let out = stack.renewer(&config, &["status", "--json"]).await?;
    let rows: Value = serde_json::from_str(&out.stdout)?;
    let next = rows[0]["next_renewal"].as_str().unwrap_or("").to_string();
    let next = time::OffsetDateTime::parse(&next, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("next_renewal {next:?}"))?;
    let lo = time::OffsetDateTime::from(now + 10 * day) - time::Duration::seconds(2);
    let hi = time::OffsetDateTime::from(now + 12 * day) + time::Duration::seconds(2);
    assert!(next >= lo && next <= hi, "{next} not in the window");

    // The CA moves the window into the past (e.g. ahead of a mass revocation): renew now, and
    // tell the CA which certificate this replaces.
    ari.set_window(now - 2 * day, now - day);
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let second = current(&stack, "app")?;
    assert_ne!(serial(&second), serial(&first), "{}", out.all());
    assert!(out.stdout.contains("renewal window (ARI)"), "{}", out.all());
    assert_eq!(ari.replaces_sent(), vec![ari_id]);

    // The answer is cached until its Retry-After: one question for two runs.
    ari.set_retry_after(Duration::from_secs(3600));
    ari.set_window(now + 10 * day, now + 12 * day);
    let asked = ari.cert_ids().len();
    for _ in 0..2 {
        let out = stack.renewer(&config, &["run"]).await?;
        assert_eq!(out.code, 0, "{}", out.all());
    }
    assert_eq!(ari.cert_ids().len(), asked + 1);
    Ok(())
}

#[tokio::test]
async fn secret_manager_mirror_round_trips_and_catches_up() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let sm = harness::FakeSecretManager::start("acme-edge-test").await?;
    let extra = format!(
        "[secret_manager]\nproject = \"acme-edge-test\"\nendpoint = \"{}\"\nkeep_versions = 2\n",
        sm.endpoint()
    );
    let config = stack.write_config("renewer.toml", &stack.config_text(&extra, APP))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let first = current(&stack, "app")?;
    let versions = sm.versions("acme-edge-app");
    assert_eq!(versions.len(), 1);
    let payload = String::from_utf8(versions[0].2.clone())?;
    let chain = read(&stack, first["fullchain"].as_str().unwrap_or(""))?;
    let key = read(&stack, first["privkey"].as_str().unwrap_or(""))?;
    assert!(payload.starts_with(chain.trim_end()), "chain first");
    assert!(payload.trim_end().ends_with(key.trim_end()), "then the key");

    // The mirror is down during a renewal: the run fails (exit 1) although the new certificate
    // is current in the store; the next run brings the mirror up to date.
    sm.fail_next(100);
    let out = stack.renewer(&config, &["run", "--force"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("mirroring it failed"), "{}", out.all());
    let second = current(&stack, "app")?;
    assert_ne!(serial(&second), serial(&first));
    sm.fail_next(0);
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("mirror caught up"), "{}", out.all());
    let versions = sm.versions("acme-edge-app");
    assert_eq!(versions.len(), 2);
    let latest = String::from_utf8(versions[1].2.clone())?;
    assert!(latest.contains(read(&stack, second["fullchain"].as_str().unwrap_or(""))?.trim_end()));

    // keep_versions = 2: a third issuance disables the oldest.
    let out = stack.renewer(&config, &["run", "--force"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let states: Vec<String> = sm
        .versions("acme-edge-app")
        .iter()
        .map(|v| format!("{:?}", v.1))
        .collect();
    assert_eq!(states.len(), 3);
    assert!(states[0].to_lowercase().contains("disabled"), "{states:?}");
    assert!(states[2].to_lowercase().contains("enabled"), "{states:?}");
    Ok(())
}

#[tokio::test]
async fn gcs_store_round_trips_on_the_emulator() -> Result<()> {
    let gcs = harness::FakeGcs::start().await?;
    gcs.create_bucket("acme-certs").await?;
    let store: renewer::store::SharedStore = std::sync::Arc::new(
        renewer::store::gcs::GcsStore::new("acme-certs", "edge", Some(&gcs.base_url())).await?,
    );
    let stack = AcmeStack::start_with(Pebble::builder(), Some(store)).await?;
    let extra = format!(
        "[store]\nurl = \"gs://acme-certs/edge\"\ngcs_endpoint = \"{}\"\n",
        gcs.base_url()
    );
    let config = stack.write_config("renewer.toml", &stack.config_text(&extra, APP))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    // The validation went through the emulator: the responder read the key authorization
    // from the bucket.
    assert!(stack.responder.requests().iter().any(|r| r.found));
    let pointer = gcs
        .download("acme-certs", "edge/certs/app/current.json")
        .await?
        .context("current.json in the bucket")?;
    let pointer: Value = serde_json::from_slice(&pointer)?;
    let chain_key = format!("edge/{}", pointer["fullchain"].as_str().unwrap_or(""));
    assert!(gcs.download("acme-certs", &chain_key).await?.is_some());
    assert!(gcs
        .download(
            "acme-certs",
            &format!("edge/{}", pointer["privkey"].as_str().unwrap_or(""))
        )
        .await?
        .is_some());
    // Lease released and challenge answers removed (deletes work on the emulator).
    assert!(gcs
        .download("acme-certs", "edge/locks/app")
        .await?
        .is_none());
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("app: unchanged"), "{}", out.all());
    let out = stack.renewer(&config, &["status", "--json"]).await?;
    let rows: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(rows[0]["serial"], pointer["serial"]);
    Ok(())
}

#[tokio::test]
async fn external_account_binding() -> Result<()> {
    // A 32-byte HMAC key, base64url, as a CA would hand it out.
    let hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let stack = AcmeStack::start_with(Pebble::builder().require_eab("kid-1", hmac), None).await?;
    // Without EAB the CA refuses the account: a setup failure, nothing stored.
    let config = stack.write_config("plain.toml", &stack.config_text("", APP))?;
    let out = stack.renewer(&config, &["account"]).await?;
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(
        out.stderr.contains("externalAccountRequired"),
        "{}",
        out.all()
    );

    let text = stack.config_text("", APP).replace(
        "request_timeout_seconds = 10\n",
        "request_timeout_seconds = 10\n[acme.eab]\nkey_id = \"kid-1\"\nhmac_key_env = \"TEST_EAB_HMAC\"\n",
    );
    let config = stack.write_config("eab.toml", &text)?;
    // The variable is missing: the error says which one.
    let out = stack.renewer(&config, &["account"]).await?;
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.stderr.contains("TEST_EAB_HMAC"), "{}", out.all());
    let out = harness::run_renewer(&config, &["run"], &[("TEST_EAB_HMAC", hmac)]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.stderr.contains(hmac), "the HMAC key is never logged");
    current(&stack, "app")?;
    Ok(())
}

#[tokio::test]
async fn failed_validation_names_the_domain_and_the_problem() -> Result<()> {
    // The responder reads an empty store, so every validation gets a 404.
    let empty = tempfile::tempdir()?;
    let store: renewer::store::SharedStore =
        std::sync::Arc::new(renewer::store::fs::FsStore::new(empty.path())?);
    let stack = AcmeStack::start_with(Pebble::builder().authz_reuse(0), Some(store)).await?;
    let config = stack.write_config("renewer.toml", &stack.config_text("", APP))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("validation failed"), "{}", out.all());
    assert!(out.stdout.contains("app.example.test: "), "{}", out.all());
    assert!(out.stdout.contains("404"), "the CA's detail: {}", out.all());
    assert!(
        out.stdout.contains("urn:ietf:params:acme:error:"),
        "{}",
        out.all()
    );
    assert_eq!(
        challenge_objects(&stack),
        0,
        "answers cleaned up after a failure"
    );
    assert!(!stack.store_dir().join("certs/app/current.json").exists());
    // A real failed validation counts against Let's Encrypt's 5 per name per hour: the next
    // trigger, with still no certificate, places no new order.
    let orders = stack.orders_placed();
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("backing off"), "{}", out.all());
    assert_eq!(stack.orders_placed(), orders, "{}", out.all());
    Ok(())
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_then_given_up() -> Result<()> {
    let stack = AcmeStack::start().await?;
    let proxy = AriResponder::start_proxying(&stack.pebble).await?;
    let text = stack
        .config_text_for(&proxy.directory_url(), "", APP)
        .replace(
            "request_timeout_seconds = 10",
            "request_timeout_seconds = 10\nattempts = 3",
        );
    let config = stack.write_config("renewer.toml", &text)?;

    // Two 429s with Retry-After: 1 on newOrder, then success.
    proxy.fail_next("/order-plz", 2, 429, Some(1));
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(proxy.faults_served(), 2);
    let retries: Vec<Value> = out
        .log_lines()
        .into_iter()
        .filter(|l| l["message"].as_str().unwrap_or("").contains("retrying"))
        .collect();
    assert_eq!(retries.len(), 2, "{}", out.all());
    for r in &retries {
        assert!(
            r["error"].as_str().unwrap_or("").contains("rateLimited"),
            "{r}"
        );
        assert!(
            r["wait_ms"].as_u64().unwrap_or(0) <= 1000,
            "followed Retry-After: {r}"
        );
    }
    let first = current(&stack, "app")?;

    // A CA that keeps failing with 500: bounded attempts, exit 1, certificate untouched.
    proxy.fail_next("/order-plz", 100, 500, None);
    let out = stack.renewer(&config, &["run", "--force"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("gave up after 3 attempts"),
        "{}",
        out.all()
    );
    assert_eq!(serial(&current(&stack, "app")?), serial(&first));

    // Retry-After beyond what a run may wait: give up at once, and say so.
    proxy.fail_next("/order-plz", 100, 429, Some(3600));
    let out = stack.renewer(&config, &["run", "--force"]).await?;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("retry later than 300 s"),
        "{}",
        out.all()
    );
    Ok(())
}

#[tokio::test]
async fn valid_authorizations_are_not_validated_again() -> Result<()> {
    let stack = AcmeStack::start_with(Pebble::builder().authz_reuse(100), None).await?;
    let config = stack.write_config("renewer.toml", &stack.config_text("", APP))?;
    let out = stack.renewer(&config, &["run"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    let validated = stack.responder.requests().len();
    assert!(validated > 0);
    let out = stack.renewer(&config, &["run", "--force"]).await?;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        stack.responder.requests().len(),
        validated,
        "no new validation"
    );
    assert!(
        out.stderr.contains("authorization already valid"),
        "{}",
        out.all()
    );
    Ok(())
}
