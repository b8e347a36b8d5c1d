//! `make demo`: the whole acme-edge system on this machine, step by step.
//!
//! Starts Pebble (+ challtestsrv), three WebSocket echo backends, Envoy with the edge filter
//! and `renewer serve` on free loopback ports (see `harness::system`), then: a renewal pass in
//! which Pebble validates through Envoy's filter, `renewer sync`, TLS from Envoy, a `wss://`
//! session, a reconnect with the affinity cookie, and a forced renewal that rotates the
//! certificate while the session stays open. Exits non-zero if any step fails; stops
//! everything on exit and on Ctrl-C. `KEEP=1` leaves the stack up until Ctrl-C.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use harness::system::{ChallengeMode, System, SystemOptions};
use harness::ws_echo;

struct Step {
    n: usize,
    total: usize,
    started: Instant,
}

impl Step {
    fn begin(n: usize, total: usize, what: &str) -> Step {
        println!("\n[{n}/{total}] {what}");
        Step {
            n,
            total,
            started: Instant::now(),
        }
    }

    fn done(self, what: &str) -> u128 {
        let ms = self.started.elapsed().as_millis();
        println!("      ok: {what} ({ms} ms)");
        let _ = (self.n, self.total);
        ms
    }
}

fn say(line: &str) {
    println!("      {line}");
}

const TOTAL: usize = 8;

struct Summary {
    domain: String,
    first_serial: String,
    second_serial: String,
    not_after: String,
    backends: Vec<String>,
    timings: Vec<(String, u128)>,
}

async fn demo(keep: bool) -> Result<()> {
    let started = Instant::now();
    let dir =
        keep.then(|| std::env::temp_dir().join(format!("acme-edge-demo-{}", std::process::id())));
    let step = Step::begin(1, TOTAL, "Start the stack on 127.0.0.1 (free ports)");
    let options = SystemOptions {
        mode: ChallengeMode::ServeStore,
        dir,
        ..SystemOptions::default()
    };
    let sys = System::start(options, &|line| say(line)).await?;
    let mut timings = vec![("start the stack".to_string(), step.done("everything is up"))];
    let domain = sys.options.domain.clone();

    let step = Step::begin(
        2,
        TOTAL,
        "Trigger a renewal pass: POST / to renewer serve (what Cloud Scheduler does)",
    );
    let answered_before = sys
        .envoy
        .wasm_counter("edge_http.challenge.answered")
        .await?
        .unwrap_or(0);
    let (status, answer) = sys.renew(false).await?;
    if status != 200 {
        bail!(
            "the renewal pass failed ({status}): {answer:#}\n{}",
            sys.serve.log()
        );
    }
    let cert = &answer["certificates"][0];
    let first_serial = cert["serial"].as_str().context("no serial")?.to_string();
    say(&format!(
        "{}: {} — serial {first_serial}, valid until {}",
        cert["name"].as_str().unwrap_or("?"),
        cert["outcome"].as_str().unwrap_or("?"),
        cert["not_after"].as_str().unwrap_or("?")
    ));
    let answered = sys
        .envoy
        .wasm_counter("edge_http.challenge.answered")
        .await?
        .unwrap_or(0)
        - answered_before;
    if answered == 0 {
        bail!("Pebble validated, but not through Envoy's filter (challenge.answered did not move)");
    }
    say(&format!(
        "Pebble fetched http://{domain}/.well-known/acme-challenge/<token> {answered} times from Envoy's :{} \
         listener; the filter looked each token up at renewer serve",
        sys.ports.http
    ));
    say(&format!("stored in {}", sys.store_location()));
    timings.push((
        "renewal pass (order, validation through Envoy, issuance, store)".into(),
        step.done("certificate issued and stored"),
    ));

    let step = Step::begin(3, TOTAL, "renewer sync --once: install it for Envoy");
    let out = sys.sync().await?;
    if out.code != 0 {
        bail!("renewer sync failed:\n{}", out.all());
    }
    let installed = renewer::node::sync::installed(&sys.tls_dir).context("nothing installed")?;
    say(&format!(
        "{}/current -> {} (verified: key matches, names covered, not expired)",
        sys.tls_dir.display(),
        installed.version
    ));
    timings.push(("sync".into(), step.done("installed")));

    let step = Step::begin(4, TOTAL, "Envoy serves it (TLS handshake, no restart)");
    sys.wait_served(&first_serial).await?;
    say(&format!(
        "https://{domain}:{} presents serial {first_serial}, trusted via Pebble's root",
        sys.ports.https
    ));
    timings.push(("Envoy reload".into(), step.done("served")));

    let step = Step::begin(5, TOTAL, "Open a wss:// session and echo a message");
    let (mut ws, first_backend, resp) = sys.ws_open(None).await?;
    let echoed = ws_echo(&mut ws, "hello through acme-edge").await?;
    if echoed != "hello through acme-edge" {
        bail!("echo mismatch: {echoed:?}");
    }
    let cookie = harness::node::set_cookie_value(&resp).context("no affinity cookie on the 101")?;
    say(&format!(
        "{} reached {first_backend}; echo ok",
        sys.wss_url("/ws")
    ));
    say(&format!(
        "affinity cookie: {}…",
        &cookie[..cookie.len().min(40)]
    ));
    timings.push(("wss session".into(), step.done("echoed")));

    let step = Step::begin(6, TOTAL, "Reconnect 3 times with the affinity cookie");
    let mut backends = vec![first_backend.clone()];
    for i in 1..=3 {
        let (mut again, id, _) = sys.ws_open(Some(&cookie)).await?;
        let _ = again.close(None).await;
        say(&format!("reconnect {i}: {id}"));
        if id != first_backend {
            bail!("reconnect {i} reached {id}, not {first_backend}");
        }
        backends.push(id);
    }
    timings.push((
        "sticky reconnects".into(),
        step.done("same backend every time"),
    ));

    let step = Step::begin(
        7,
        TOTAL,
        "Forced renewal + sync while the first session stays open",
    );
    let (status, answer) = sys.renew(true).await?;
    if status != 200 {
        bail!("the forced pass failed ({status}): {answer:#}");
    }
    let second_serial = answer["certificates"][0]["serial"]
        .as_str()
        .context("no serial")?
        .to_string();
    let not_after = answer["certificates"][0]["not_after"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let out = sys.sync().await?;
    if out.code != 0 {
        bail!("renewer sync failed:\n{}", out.all());
    }
    sys.wait_served(&second_serial).await?;
    say(&format!("Envoy now presents serial {second_serial}"));
    let echoed = ws_echo(&mut ws, "still here after the rotation").await?;
    if echoed != "still here after the rotation" {
        bail!("echo mismatch after rotation: {echoed:?}");
    }
    say("the session opened before the rotation still echoes");
    timings.push((
        "rotation".into(),
        step.done("rotated without dropping the session"),
    ));

    let step = Step::begin(8, TOTAL, "Metrics");
    let metrics = harness::http_get(sys.ports.serve, "/metrics").await?;
    for line in metrics.body_text().lines().filter(|l| {
        l.starts_with("acme_edge_certificate_not_after")
            || l.starts_with("acme_edge_renewals_total")
            || l.starts_with("acme_edge_passes_total")
    }) {
        say(line);
    }
    timings.push(("metrics".into(), step.done("scraped")));
    let _ = ws.close(None).await;

    print_summary(&Summary {
        domain: domain.clone(),
        first_serial,
        second_serial,
        not_after,
        backends,
        timings,
    });
    println!("\nDemo passed in {:.1} s.", started.elapsed().as_secs_f64());

    if keep {
        print_keep(&sys);
        KEPT.store(true, Ordering::SeqCst);
        // main's signal branch ends the demo (and drops the stack).
        std::future::pending::<()>().await;
    }
    Ok(())
}

/// Set once the stack is up and waiting for Ctrl-C (`KEEP=1`): stopping then is a success.
static KEPT: AtomicBool = AtomicBool::new(false);

fn print_summary(s: &Summary) {
    println!("\nSummary");
    println!("  name          {}", s.domain);
    println!("  first serial  {}", s.first_serial);
    println!(
        "  serial now    {} (valid until {})",
        s.second_serial, s.not_after
    );
    println!("  backends      {}", s.backends.join(", "));
    println!("  timings");
    for (what, ms) in &s.timings {
        println!("    {ms:>7} ms  {what}");
    }
}

fn print_keep(sys: &System) {
    let d = &sys.options.domain;
    let (http, https, serve) = (sys.ports.http, sys.ports.https, sys.ports.serve);
    let root = sys.dir().join("pebble-root.pem");
    let venv = harness::repo_root().join(".venv/bin");
    println!(
        "\nThe stack stays up (KEEP=1). Files: {}",
        sys.dir().display()
    );
    println!(
        "  Envoy        http://{d}:{http}  https://{d}:{https}  admin http://127.0.0.1:{}",
        sys.ports.admin
    );
    println!(
        "  renewer      http://127.0.0.1:{serve}  (config {})",
        sys.config.display()
    );
    println!("  Pebble       {}", sys.pebble.directory_url());
    println!("\nTry:");
    println!("  curl --cacert {} --resolve {d}:{https}:127.0.0.1 -v https://{d}:{https}/ 2>&1 | grep -E 'subject|serial|HTTP/'", root.display());
    println!(
        "  curl -si --resolve {d}:{http}:127.0.0.1 http://{d}:{http}/hello          # 308 to https"
    );
    println!(
        "  curl -s -XPOST -d '{{\"force\":true}}' http://127.0.0.1:{serve}/ | head -c 400; echo"
    );
    println!(
        "  {} --config {} sync --once",
        harness::renewer_bin()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "renewer".into()),
        sys.config.display()
    );
    println!("  curl -s http://127.0.0.1:{serve}/metrics | grep acme_edge_certificate");
    println!(
        "  {}/python -W ignore::DeprecationWarning -c 'import ssl; from websockets.sync.client import connect; \
         ws = connect(\"wss://127.0.0.1:{https}/ws\", server_hostname=\"{d}\", origin=\"https://{d}\", \
         ssl=ssl.create_default_context(cafile=\"{}\")); ws.send(\"whoami\"); print(ws.recv())'",
        venv.display(),
        root.display()
    );
    println!(
        "\nStop: Ctrl-C (everything started here stops; files stay in {}).",
        sys.dir().display()
    );
}

async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let keep = std::env::var("KEEP").is_ok_and(|v| v == "1");
    println!("acme-edge demo: Pebble + Envoy with the edge filter + renewer, all on 127.0.0.1");
    // Ctrl-C or SIGTERM at any point: dropping the demo future drops the System, whose parts
    // kill their processes.
    let result = tokio::select! {
        r = demo(keep) => Some(r),
        _ = wait_for_stop() => None,
    };
    // Leaving the select dropped the stack: every process it started is stopped.
    match result {
        Some(Ok(())) => {
            println!("Stopped everything.");
            ExitCode::SUCCESS
        }
        None if KEPT.load(Ordering::SeqCst) => {
            println!("\nStopped everything.");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("\ndemo interrupted; stopped everything.");
            ExitCode::from(130)
        }
        Some(Err(e)) => {
            eprintln!("\ndemo FAILED: {e:#}\nStopped everything.");
            ExitCode::FAILURE
        }
    }
}
