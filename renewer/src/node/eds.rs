//! The membership as Envoy reads it: an EDS `DiscoveryResponse` in a file that Envoy watches
//! (`path_config_source` with `watched_directory`, as `deploy/envoy/render.sh` configures the
//! `app` cluster when `MEMBERS_DIR` is set). A new list is written to a temporary file in the
//! same directory and renamed over `eds.json`: Envoy sees the rename and reloads the cluster's
//! endpoints in place, without a restart and without touching open connections.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::members::Member;

/// The file Envoy reads, in the members directory.
pub const FILE: &str = "eds.json";

/// Where the file lives in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The EDS response for `cluster`: every member's application at `port`, in the given
/// (sorted) order, with the instance name as the endpoint's hostname.
pub fn render(cluster: &str, port: u16, members: &[Member]) -> String {
    let endpoints: Vec<Value> = members
        .iter()
        .map(|m| {
            json!({
                "endpoint": {
                    "address": {"socket_address": {"address": m.address.to_string(), "port_value": port}},
                    "hostname": m.name,
                }
            })
        })
        .collect();
    // The version names the content, so the same list is the same version on every node.
    let mut hash = Sha256::new();
    for m in members {
        hash.update(format!("{} {}:{port}\n", m.name, m.address));
    }
    let version = hex::encode(hash.finalize().get(..8).unwrap_or_default());
    let response = json!({
        "version_info": version,
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": cluster,
            "endpoints": [{"lb_endpoints": endpoints}],
        }],
    });
    let mut text = serde_json::to_string_pretty(&response).unwrap_or_default();
    text.push('\n');
    text
}

/// The members in a file [`render`] wrote (`None` when it is missing or not ours).
pub fn parse(text: &str) -> Option<Vec<Member>> {
    let value: Value = serde_json::from_str(text).ok()?;
    let endpoints = value
        .get("resources")?
        .get(0)?
        .get("endpoints")?
        .get(0)?
        .get("lb_endpoints")?
        .as_array()?;
    endpoints
        .iter()
        .map(|e| {
            let endpoint = e.get("endpoint")?;
            let address: IpAddr = endpoint
                .get("address")?
                .get("socket_address")?
                .get("address")?
                .as_str()?
                .parse()
                .ok()?;
            let name = endpoint.get("hostname")?.as_str()?.to_owned();
            Some(Member { address, name })
        })
        .collect()
}

/// The list Envoy has now (the last one written), if any.
pub fn read(dir: &Path) -> Option<Vec<Member>> {
    parse(&fs::read_to_string(path(dir)).ok()?)
}

/// Write `text` as the new `eds.json`, atomically: a temporary file in the same directory,
/// flushed to disk, then renamed over the old one (creating the directory, 0755, if needed;
/// nothing in it is secret, and Envoy runs as another user).
pub fn install(dir: &Path, text: &str) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
    }
    fs::rename(&tmp, path(dir))?;
    // The rename itself must survive a crash too.
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<Member> {
        vec![
            Member {
                address: "10.0.0.2".parse().unwrap(),
                name: "n-b".into(),
            },
            Member {
                address: "10.0.0.10".parse().unwrap(),
                name: "n-a".into(),
            },
        ]
    }

    #[test]
    fn render_then_parse_round_trips_and_names_the_content() {
        let text = render("app", 8080, &members());
        assert_eq!(parse(&text), Some(members()));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["resources"][0]["cluster_name"], "app");
        assert_eq!(
            value["resources"][0]["endpoints"][0]["lb_endpoints"][1]["endpoint"]["address"]
                ["socket_address"]["port_value"],
            8080
        );
        // Same list, same version; another list, another version.
        assert_eq!(text, render("app", 8080, &members()));
        assert_ne!(
            value["version_info"],
            serde_json::from_str::<Value>(&render("app", 8080, &members()[..1])).unwrap()
                ["version_info"]
        );
        assert_eq!(parse("{}"), None);
        assert_eq!(parse("not json"), None);
    }

    #[test]
    fn install_swaps_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("members");
        assert_eq!(read(&sub), None);
        install(&sub, &render("app", 80, &members())).unwrap();
        assert_eq!(read(&sub), Some(members()));
        install(&sub, &render("app", 80, &members()[..1])).unwrap();
        assert_eq!(read(&sub).unwrap().len(), 1);
        let names: Vec<_> = fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [FILE]);
    }
}
