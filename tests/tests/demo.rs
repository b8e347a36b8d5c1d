//! `make demo` keeps working: the demo binary passes every step, and it leaves nothing behind,
//! whether it ends on its own or is interrupted with Ctrl-C.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Every `127.0.x.y:<port>` and `ws.demo.test:<port>` the demo printed, as addresses to try
/// (the load balancer and Pebble on 127.0.0.1, the nodes on 127.0.1.x).
fn printed_ports(out: &str) -> Vec<std::net::SocketAddr> {
    let mut found = Vec::new();
    for (i, _) in out.match_indices("127.0.") {
        let rest = &out[i..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
            .unwrap_or(rest.len());
        if let Ok(addr) = rest[..end].trim_end_matches(['.', ':']).parse() {
            found.push(addr);
        }
    }
    for (i, _) in out.match_indices("ws.demo.test:") {
        let digits: String = out[i + "ws.demo.test:".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(p) = digits.parse::<u16>() {
            found.push(std::net::SocketAddr::from(([127, 0, 0, 1], p)));
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// Nothing the demo started may still listen once it has exited.
async fn assert_all_closed(addrs: &[std::net::SocketAddr], out: &str) {
    for addr in addrs {
        let open = tokio::net::TcpStream::connect(addr).await.is_ok();
        assert!(!open, "{addr} still listens after the demo ended\n{out}");
    }
}

/// One demo at a time: two stacks at once would only slow each other down on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn demo() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_demo"));
    cmd.env_remove("KEEP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn demo_passes_every_step_and_stops_everything() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let out = tokio::time::timeout(Duration::from_secs(300), demo().output())
        .await
        .context("the demo did not finish in 5 minutes")??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
    for needle in [
        "[8/8]",
        "Demo passed",
        "still echo from",
        "Summary",
        "first serial",
        "room lobby",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in\n{all}");
    }
    let ports = printed_ports(&stdout);
    assert!(ports.len() >= 5, "{ports:?}\n{all}");
    assert_all_closed(&ports, &all).await;
    Ok(())
}

#[tokio::test]
async fn ctrl_c_stops_everything_and_exits_non_zero() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut child = demo().spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    // Interrupt once the stack is up and the first pass is under way.
    let reached = tokio::time::timeout(Duration::from_secs(240), async {
        while let Some(line) = lines.next_line().await? {
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("[3/8]") {
                return Ok::<bool, anyhow::Error>(true);
            }
        }
        Ok(false)
    })
    .await
    .context("the demo did not reach step 3")??;
    assert!(reached, "the demo ended early:\n{seen}");
    let pid = child.id().context("pid")?;
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()?;
    assert!(status.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .context("the demo did not stop after Ctrl-C")??;
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push_str(&line);
        seen.push('\n');
    }
    assert_eq!(status.code(), Some(130), "{seen}");
    assert_all_closed(&printed_ports(&seen), &seen).await;
    Ok(())
}
