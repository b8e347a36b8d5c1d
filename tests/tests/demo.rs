//! `make demo` keeps working: the demo binary passes every step, and it leaves nothing behind,
//! whether it ends on its own or is interrupted with Ctrl-C.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Every `127.0.0.1:<port>` and `ws.demo.test:<port>` the demo printed.
fn printed_ports(out: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for marker in ["127.0.0.1:", "ws.demo.test:"] {
        for (i, _) in out.match_indices(marker) {
            let digits: String = out[i + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(p) = digits.parse::<u16>() {
                ports.push(p);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Nothing the demo started may still listen once it has exited.
async fn assert_all_closed(ports: &[u16], out: &str) {
    for port in ports {
        let open = tokio::net::TcpStream::connect(("127.0.0.1", *port))
            .await
            .is_ok();
        assert!(
            !open,
            "port {port} still listens after the demo ended\n{out}"
        );
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
        "the session opened before the rotation still echoes",
        "Summary",
        "first serial",
        "backends",
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
