//! `make demo`: the whole acme-edge deployment on this machine, step by step.
//!
//! Starts what `make deploy` builds, on loopback (see `harness::cluster`): three app nodes,
//! each an Envoy with the edge filter rendered by the nodes' own startup script, an app, and
//! the two node agents (`renewer sync`, `renewer members`), behind a stand-in for the network
//! load balancer; Pebble as the CA and fakes of the Google APIs. Then: the renewal job issues
//! a certificate validated through the load balancer, every node installs and serves it, the
//! members of a room entering through different nodes meet on one app instance, a cookie
//! brings a browser back to its instance through another node, a node leaves and only its
//! keys move, and a forced renewal rotates the certificate under an open session. Exits
//! non-zero if any step fails; stops everything on exit and on Ctrl-C. `KEEP=1` leaves it up
//! until Ctrl-C.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use harness::cluster::{Cluster, ClusterOptions};
use harness::ws_echo;

struct Step {
    started: Instant,
}

impl Step {
    fn begin(n: usize, what: &str) -> Step {
        println!("\n[{n}/{TOTAL}] {what}");
        Step {
            started: Instant::now(),
        }
    }

    fn done(self, what: &str) -> u128 {
        let ms = self.started.elapsed().as_millis();
        println!("      ok: {what} ({ms} ms)");
        ms
    }
}

fn say(line: &str) {
    println!("      {line}");
}

const TOTAL: usize = 8;

/// A client address: `127.0.2.<n>`, another "user" to the load balancer.
fn client(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        2 + (n / 250) as u8,
        (n % 250 + 1) as u8,
    ))
}

struct Summary {
    domain: String,
    first_serial: String,
    second_serial: String,
    nodes: Vec<String>,
    room_instance: String,
    timings: Vec<(String, u128)>,
}

async fn demo(keep: bool) -> Result<()> {
    let started = Instant::now();
    let dir =
        keep.then(|| std::env::temp_dir().join(format!("acme-edge-demo-{}", std::process::id())));

    let step = Step::begin(
        1,
        "Start the deployment on loopback: 3 nodes as startup.sh renders them, behind the load balancer",
    );
    let c = Cluster::start(
        ClusterOptions {
            dir,
            ..ClusterOptions::default()
        },
        &|line| say(line),
    )
    .await?;
    let mut timings = vec![(
        "start everything".to_string(),
        step.done("everything is up"),
    )];
    let domain = c.options.domain.clone();

    let step = Step::begin(
        2,
        "Renewal: renewer run (the Cloud Run job Scheduler starts), validated through the load balancer",
    );
    let out = c.renew(false).await?;
    if out.code != 0 {
        bail!("the renewal job failed:\n{}", out.all());
    }
    let first_serial = Cluster::serial_of(&out)?;
    say(&format!("issued serial {first_serial} for {domain}"));
    let mut answered = Vec::new();
    for node in &c.nodes {
        let n = node
            .envoy
            .wasm_counter("edge_http.challenge.answered")
            .await?
            .unwrap_or(0);
        answered.push(format!("{} {n}", node.name));
    }
    say(&format!(
        "Pebble's HTTP-01 requests, by the node the load balancer picked: {}; each node's filter \
         read the answer from the bucket gs://{}",
        answered.join(", "),
        c.bucket
    ));
    timings.push((
        "renewal (order, validation through the cluster, issuance)".into(),
        step.done("issued, in the bucket and in Secret Manager"),
    ));

    let step = Step::begin(
        3,
        "Every node installs it (renewer sync, from Secret Manager) and serves it",
    );
    c.wait_served_everywhere(&first_serial).await?;
    for node in &c.nodes {
        say(&format!(
            "{} ({}:{}) presents serial {first_serial}",
            node.name, node.ip, node.https
        ));
    }
    say(&format!(
        "through the load balancer, https://{domain}:{} presents {}",
        c.front.https,
        c.served_serial().await?
    ));
    timings.push((
        "install on every node".into(),
        step.done("served everywhere"),
    ));

    let step = Step::begin(
        4,
        "A room: members from different addresses enter through different nodes, meet on one instance",
    );
    let mut room_sessions = Vec::new();
    let mut room_instance = String::new();
    let mut entries: BTreeMap<String, usize> = BTreeMap::new();
    for m in 0..9 {
        let marker = format!("client=m{m}");
        let (mut ws, id, _) = c
            .ws_open(client(m), &format!("/ws?room=lobby&{marker}"), None)
            .await?;
        if ws_echo(&mut ws, "whoami").await? != id {
            bail!("echo mismatch for member {m}");
        }
        let entry = c.entry_node(&marker).context("no entry node")?;
        say(&format!(
            "member {m} from {} entered through {entry}, reached {id}",
            client(m)
        ));
        if room_instance.is_empty() {
            room_instance = id.clone();
        } else if id != room_instance {
            bail!("room lobby split: {id} and {room_instance}");
        }
        *entries.entry(entry).or_default() += 1;
        room_sessions.push(ws);
    }
    if entries.len() < 2 {
        bail!("all members entered through one node: {entries:?}");
    }
    timings.push((
        "a room across nodes".into(),
        step.done(&format!(
            "9 members through {} nodes, one instance",
            entries.len()
        )),
    ));

    let step = Step::begin(
        5,
        "A browser's cookie brings it back to its instance, through another node",
    );
    let (ws, first_instance, resp) = c.ws_open(client(100), "/ws?client=b0", None).await?;
    drop(ws);
    let cookie = harness::node::set_cookie_value(&resp).context("no affinity cookie on the 101")?;
    let first_entry = c.entry_node("client=b0").context("no entry")?;
    say(&format!(
        "first visit from {} through {first_entry}: {first_instance}; cookie {}…",
        client(100),
        &cookie[..cookie.len().min(24)]
    ));
    let mut elsewhere = 0;
    for k in 1..=12 {
        let marker = format!("client=b{k}");
        let (ws, id, _) = c
            .ws_open(client(100 + k), &format!("/ws?{marker}"), Some(&cookie))
            .await?;
        drop(ws);
        let entry = c.entry_node(&marker).context("no entry")?;
        if id != first_instance {
            bail!("the reconnect through {entry} reached {id}, not {first_instance}");
        }
        if entry != first_entry {
            elsewhere += 1;
            say(&format!(
                "reconnect from {} through {entry}: {id}",
                client(100 + k)
            ));
            if elsewhere == 3 {
                break;
            }
        }
    }
    if elsewhere == 0 {
        bail!("no reconnect entered through another node");
    }
    timings.push((
        "cookie across nodes".into(),
        step.done("same instance through other nodes"),
    ));

    let step = Step::begin(
        6,
        "A node leaves the group: only its keys move, the same way on every node",
    );
    let keys: Vec<String> = (0..1000).map(|i| format!("room-{i}")).collect();
    let before = c.settled_owners(&keys, |_| true).await?;
    // Not the room's instance, so the open sessions can show the rotation in step 7.
    let mut c = c;
    let gone = c
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != room_instance)
        .context("a node to remove")?;
    c.remove_node(&gone).await?;
    let after = c.settled_owners(&keys, |o| !o.contains(&gone)).await?;
    let on_gone = before.iter().filter(|o| **o == gone).count();
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let stayed_put = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| **a != gone && a == b)
        .count();
    say(&format!(
        "{gone} left: {moved} of 1000 rooms moved ({on_gone} were on it); {stayed_put} of the other {} stayed where they were; \
         all {} remaining nodes agree on every room",
        1000 - on_gone,
        c.nodes.len()
    ));
    let nodes: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    timings.push((
        "a node leaves".into(),
        step.done("its keys moved to the survivors"),
    ));

    let step = Step::begin(
        7,
        "Forced renewal: every node rotates its certificate under open sessions",
    );
    let out = c.renew(true).await?;
    if out.code != 0 {
        bail!("the forced renewal failed:\n{}", out.all());
    }
    let second_serial = Cluster::serial_of(&out)?;
    c.wait_served_everywhere(&second_serial).await?;
    say(&format!("every node now presents serial {second_serial}"));
    let mut still = 0;
    for ws in &mut room_sessions {
        // Sessions that entered through the node that left ended with it.
        if ws_echo(ws, "whoami")
            .await
            .is_ok_and(|id| id == room_instance)
        {
            still += 1;
        }
    }
    if still == 0 {
        bail!("no room session survived the rotation");
    }
    say(&format!(
        "{still} room sessions opened before the rotation still echo from {room_instance}"
    ));
    timings.push((
        "rotation on every node".into(),
        step.done("rotated without dropping sessions"),
    ));

    let step = Step::begin(
        8,
        "What operators see: renewer status, the node agents' metrics",
    );
    let status =
        harness::run_renewer(&c.renewer_config, &["status"], &c.renewer_env_refs()).await?;
    for line in status.stdout.lines() {
        say(line);
    }
    let metrics = c.nodes[0].members_metrics().await?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("acme_edge_members") && !l.starts_with('#'))
    {
        say(&format!("{}: {line}", c.nodes[0].name));
    }
    timings.push(("status and metrics".into(), step.done("read")));
    for mut ws in room_sessions {
        let _ = ws.close(None).await;
    }

    print_summary(&Summary {
        domain,
        first_serial,
        second_serial,
        nodes,
        room_instance,
        timings,
    });
    println!("\nDemo passed in {:.1} s.", started.elapsed().as_secs_f64());

    if keep {
        print_keep(&c);
        KEPT.store(true, Ordering::SeqCst);
        // main's signal branch ends the demo (and drops the cluster).
        std::future::pending::<()>().await;
    }
    Ok(())
}

/// Set once the cluster is up and waiting for Ctrl-C (`KEEP=1`): stopping then is a success.
static KEPT: AtomicBool = AtomicBool::new(false);

fn print_summary(s: &Summary) {
    println!("\nSummary");
    println!("  name          {}", s.domain);
    println!("  first serial  {}", s.first_serial);
    println!("  serial now    {}", s.second_serial);
    println!("  nodes         {}", s.nodes.join(", "));
    println!("  room lobby    on {}", s.room_instance);
    println!("  timings");
    for (what, ms) in &s.timings {
        println!("    {ms:>7} ms  {what}");
    }
}

fn print_keep(c: &Cluster) {
    let d = &c.options.domain;
    let (http, https) = (c.front.http, c.front.https);
    let root = c.dir().join("pebble-root.pem");
    let venv = harness::repo_root().join(".venv/bin");
    println!(
        "\nThe cluster stays up (KEEP=1). Files: {}",
        c.dir().display()
    );
    println!("  load balancer  http://{d}:{http}  https://{d}:{https}");
    for node in &c.nodes {
        println!(
            "  {}  Envoy {}:{} / {} (admin http://127.0.0.1:{}), app {}, members metrics http://127.0.0.1:{}/metrics",
            node.name,
            node.ip,
            node.http,
            node.https,
            node.envoy.admin_port(),
            node.app.addr(),
            node.metrics
        );
    }
    println!("  Pebble         {}", c.pebble.directory_url());
    println!("\nTry:");
    println!("  curl --cacert {} --resolve {d}:{https}:127.0.0.1 -v https://{d}:{https}/ 2>&1 | grep -E 'subject|serial|HTTP/'", root.display());
    println!(
        "  curl -si --resolve {d}:{http}:127.0.0.1 http://{d}:{http}/hello          # 308 to https"
    );
    println!(
        "  curl -s --cacert {} --resolve {d}:{https}:127.0.0.1 'https://{d}:{https}/?room=lobby' -D- -o/dev/null | grep x-backend-id",
        root.display()
    );
    println!(
        "  {}/python -W ignore::DeprecationWarning -c 'import ssl; from websockets.sync.client import connect; \
         ws = connect(\"wss://127.0.0.1:{https}/ws?room=lobby\", server_hostname=\"{d}\", origin=\"https://{d}\", \
         ssl=ssl.create_default_context(cafile=\"{}\")); ws.send(\"whoami\"); print(ws.recv())'",
        venv.display(),
        root.display()
    );
    println!(
        "\nStop: Ctrl-C (everything started here stops; files stay in {}).",
        c.dir().display()
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
    println!(
        "acme-edge demo: the deployment on 127.0.0.x: Pebble, a load balancer, 3 nodes (Envoy + edge filter + app + renewer agents)"
    );
    // Ctrl-C or SIGTERM at any point: dropping the demo future drops the cluster, whose parts
    // kill their processes.
    let result = tokio::select! {
        r = demo(keep) => Some(r),
        _ = wait_for_stop() => None,
    };
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
