//! Where the nodes send each key (sticky routing), and whether they agree; the client
//! addresses tests use to look like many users.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::nodes::{ClusterNode, SETTLE};
use crate::backend::backend_id;
use crate::client::HttpsConn;

/// Client number `n` as a distinct source address: 127.0.2.1, 127.0.2.2, … 127.0.3.1, … (the
/// front's affinity is by client address, so tests that want many clients bind these).
pub fn client_address(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        2 + (n / 250) as u8,
        (n % 250 + 1) as u8,
    ))
}

/// The instance every node picks for each key, or an error naming the disputed keys.
pub fn agreement(owners: &[Vec<String>]) -> Result<Vec<String>> {
    let first = owners.first().context("no node")?;
    let disputed: Vec<usize> = (0..first.len())
        .filter(|&k| owners.iter().any(|o| o.get(k) != first.get(k)))
        .collect();
    if !disputed.is_empty() {
        let sample: Vec<String> = disputed
            .iter()
            .take(3)
            .map(|&k| {
                format!(
                    "key {k}: {:?}",
                    owners.iter().map(|o| o.get(k)).collect::<Vec<_>>()
                )
            })
            .collect();
        bail!(
            "{} keys where two nodes pick different instances, e.g. {sample:?}",
            disputed.len()
        );
    }
    Ok(first.clone())
}

/// Where each node's Envoy sends each key (by the room query parameter, on a plain request,
/// over HTTPS for `domain` trusting `roots_pem`): `owners[node][key]` is the app instance's
/// name.
pub(super) async fn key_owners(
    nodes: &[ClusterNode],
    domain: &str,
    roots_pem: &str,
    keys: &[String],
) -> Result<Vec<Vec<String>>> {
    let ask = async |node: &ClusterNode| {
        let mut conn = HttpsConn::connect(node.ip, node.https, domain, roots_pem)
            .await
            .with_context(|| format!("connect to {}", node.name))?;
        let mut owners = Vec::with_capacity(keys.len());
        for key in keys {
            let (status, headers, _) = conn.get(&format!("/where?room={key}"), &[]).await?;
            anyhow::ensure!(status == 200, "{}: {key}: status {status}", node.name);
            owners.push(backend_id(&headers)?);
        }
        anyhow::Ok(owners)
    };
    futures_util::future::try_join_all(nodes.iter().map(ask)).await
}

/// The agreed owners of `keys` once `done` holds for them (as `Cluster::settled_owners`), and
/// the same in two samples in a row: one sample can catch every node in the same passing state
/// (an instance's health check failing for a moment on all of them while a node starts), and a
/// comparison with such a state would count moves that no settled ring makes.
pub(super) async fn settled_owners(
    nodes: &[ClusterNode],
    domain: &str,
    roots_pem: &str,
    keys: &[String],
    done: impl Fn(&[String]) -> bool,
) -> Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + SETTLE.min(Duration::from_secs(30));
    let mut previous: Option<Vec<String>> = None;
    loop {
        let owners = key_owners(nodes, domain, roots_pem, keys).await?;
        let verdict = agreement(&owners);
        match verdict {
            Ok(agreed) if done(&agreed) && previous.as_ref() == Some(&agreed) => return Ok(agreed),
            // Agreed and done: sample again at once to confirm it.
            Ok(agreed) if done(&agreed) && tokio::time::Instant::now() < deadline => {
                previous = Some(agreed);
            }
            _ if tokio::time::Instant::now() < deadline => {
                previous = None;
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(agreed) if done(&agreed) => {
                bail!("the nodes agree, but no two samples in a row were the same")
            }
            Ok(_) => bail!("the nodes agree, but the change never showed"),
            Err(e) => return Err(e),
        }
    }
}
