//! The tools compared and where their binaries are: the renewer's release build, lego and
//! certbot; their versions for the report; the order they take turns in.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{ensure, Result};
use harness::bench;
use harness::repo_root;

/// `target/release/renewer` (honouring `$CARGO_TARGET_DIR`): the build the image ships.
pub fn renewer_release_bin() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("release/renewer");
    ensure!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build --release --locked -p renewer` \
         (make bench does)",
        bin.display()
    );
    Ok(bin)
}

/// A warning when a renewer source file is newer than the binary (a forgotten rebuild).
pub fn stale_note(bin: &Path) -> Option<String> {
    let built = fs::metadata(bin).and_then(|m| m.modified()).ok()?;
    let newest = newest_mtime(&repo_root().join("renewer"))?;
    (newest > built).then(|| {
        format!(
            "{} is older than the renewer's sources: rebuild it (cargo build --release --locked -p renewer)",
            bin.display()
        )
    })
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

fn bin_from_env(var: &str, default: PathBuf) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => default,
    }
}

pub struct Tools {
    pub renewer: PathBuf,
    pub lego: PathBuf,
    pub certbot: PathBuf,
}

impl Tools {
    pub fn find(renewer: PathBuf) -> Result<Tools> {
        let lego = bin_from_env("LEGO", PathBuf::from("/usr/bin/lego"));
        let certbot = bin_from_env("CERTBOT", repo_root().join(".venv/bin/certbot"));
        ensure!(
            lego.is_file(),
            "{} not found: install the Debian package lego (scripts/bootstrap.sh --bench) or set $LEGO",
            lego.display()
        );
        ensure!(
            certbot.is_file(),
            "{} not found: install certbot into the venv (scripts/bootstrap.sh --bench) or set $CERTBOT",
            certbot.display()
        );
        Ok(Tools {
            renewer,
            lego,
            certbot,
        })
    }
}

/// `lego --version` of Debian's build says `lego version dev linux/amd64`; the package version
/// is then the useful one.
pub fn lego_version(version_output: &str, package_version: &str) -> String {
    let v = version_output
        .strip_prefix("lego version ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("unknown");
    match (v, package_version) {
        ("dev", "") | ("unknown", "") => format!("`{}`", version_output.trim()),
        ("dev", pkg) | ("unknown", pkg) => format!("{pkg} (Debian package; the binary says `{v}`)"),
        (v, _) => v.to_string(),
    }
}

pub fn deb_version(package: &str) -> String {
    bench::command_output("dpkg-query", &["-W", "-f=${Version}", package], "")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Renewer,
    Lego,
    Certbot,
}

pub const TOOLS: [Tool; 3] = [Tool::Renewer, Tool::Lego, Tool::Certbot];
pub const PEERS: [Tool; 2] = [Tool::Lego, Tool::Certbot];

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Renewer => "renewer",
            Tool::Lego => "lego",
            Tool::Certbot => "certbot",
        }
    }
}

/// The order of the tools in repetition `rep` (0-based): rotated by one each time.
pub fn rotation(rep: usize) -> [Tool; 3] {
    bench::rotated(TOOLS, rep)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn tools_rotate_every_repetition() {
        use Tool::*;
        assert_eq!(rotation(0), [Renewer, Lego, Certbot]);
        assert_eq!(rotation(1), [Lego, Certbot, Renewer]);
        assert_eq!(rotation(2), [Certbot, Renewer, Lego]);
        assert_eq!(rotation(3), rotation(0));
    }

    #[test]
    fn lego_versions() {
        assert_eq!(
            lego_version("lego version dev linux/amd64", "4.9.1-1"),
            "4.9.1-1 (Debian package; the binary says `dev`)"
        );
        assert_eq!(
            lego_version("lego version 4.14.2 linux/amd64", "4.9.1-1"),
            "4.14.2"
        );
        assert_eq!(
            lego_version("lego version dev linux/amd64", ""),
            "`lego version dev linux/amd64`"
        );
    }
}
