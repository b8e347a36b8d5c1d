//! The directory `renewer sync` keeps for Envoy (the layout is in the documentation of
//! [`super`]): `sds.yaml`, one directory per installed version with its `meta.json`, the
//! `current` link swapped by rename, old versions pruned, and the lock that keeps two syncs
//! apart.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{SyncError, Target};
use crate::shared::bundle::Bundle;
use crate::shared::certinfo::LeafInfo;

/// What `meta.json` of an installed version records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// The certificate's configured name.
    pub name: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// DNS names in the certificate, lowercased and sorted.
    pub domains: Vec<String>,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Start of validity (notBefore).
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity (notAfter).
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// SHA-256 of `fullchain.pem`, hex: lets the next sync check the files are intact.
    pub chain_sha256: String,
    /// Where it came from (`gs://…`, `secretmanager://…`, a directory).
    pub source: String,
    /// When this node installed it.
    #[serde(with = "time::serde::rfc3339")]
    pub installed_at: OffsetDateTime,
    /// The version directory name.
    pub version: String,
}

/// The `sds.yaml` Envoy's `path_config_source` reads. The secret's own `watched_directory` is
/// `dir`, not the default (the files' parent, `current/`): Envoy cannot watch `current/`
/// before the first certificate exists, and would then never pick the first one up.
pub fn sds_yaml(dir: &Path, secret_name: &str) -> String {
    let d = dir.display();
    format!(
        "# Written by `renewer sync`; Envoy reads it through path_config_source.\n\
         resources:\n\
         - \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n\
         \x20 name: {secret_name}\n\
         \x20 tls_certificate:\n\
         \x20   certificate_chain: {{ filename: {d}/current/fullchain.pem }}\n\
         \x20   private_key: {{ filename: {d}/current/privkey.pem }}\n\
         \x20   # `current` is swapped by rename in {d}: watch that directory.\n\
         \x20   watched_directory: {{ path: {d} }}\n"
    )
}

/// Create `dir` and write `sds.yaml` if it is missing or different. Envoy refuses to start when
/// `sds.yaml` does not exist, so this runs before anything is fetched (and alone with `--init`).
/// Returns whether `sds.yaml` was (re)written.
pub fn prepare(target: &Target) -> io::Result<bool> {
    fs::create_dir_all(&target.dir)?;
    let wanted = sds_yaml(&target.dir, &target.secret_name);
    let path = target.dir.join("sds.yaml");
    if fs::read_to_string(&path).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(false);
    }
    let tmp = target.dir.join(".sds.yaml.tmp");
    write_file(&tmp, wanted.as_bytes(), 0o644)?;
    fs::rename(&tmp, &path)?;
    sync_dir(&target.dir)?;
    Ok(true)
}

/// The version installed now, when `current` points at an intact one (files present and the
/// chain matching its recorded digest). Anything else reads as "nothing installed".
pub fn installed(dir: &Path) -> Option<Installed> {
    let current = dir.join("current");
    let meta: Installed =
        serde_json::from_slice(&fs::read(current.join("meta.json")).ok()?).ok()?;
    let chain = fs::read(current.join("fullchain.pem")).ok()?;
    if hex::encode(Sha256::digest(&chain)) != meta.chain_sha256 {
        return None;
    }
    fs::metadata(current.join("privkey.pem")).ok()?;
    Some(meta)
}

/// Version directory name: sortable by time (to the millisecond: two installs in one second
/// must still sort in the order they happened, or pruning could keep the older one), then
/// the serial's head for people reading `ls`.
pub fn version_name(now: OffsetDateTime, serial: &str) -> String {
    let head: String = serial.chars().take(16).collect();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z-{head}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Write `bundle` as a new version and make it current. `leaf` is [`super::verify`]'s result.
pub fn install(
    target: &Target,
    bundle: &Bundle,
    leaf: &LeafInfo,
    source: &str,
    now: OffsetDateTime,
) -> io::Result<Installed> {
    prepare(target)?;
    let dir = &target.dir;
    let base = version_name(now, &leaf.serial);
    let mut version = base.clone();
    let mut n = 1;
    while dir.join(&version).exists() {
        n += 1;
        version = format!("{base}.{n}");
    }
    let meta = Installed {
        name: bundle.meta.name.clone(),
        serial: leaf.serial.clone(),
        domains: leaf.domains.clone(),
        issuer: leaf.issuer.clone(),
        not_before: leaf.not_before,
        not_after: leaf.not_after,
        chain_sha256: hex::encode(Sha256::digest(bundle.fullchain_pem.as_bytes())),
        source: source.to_string(),
        installed_at: now,
        version: version.clone(),
    };

    let tmp = dir.join(format!(".tmp-{version}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    let written = (|| {
        write_file(
            &tmp.join("fullchain.pem"),
            bundle.fullchain_pem.as_bytes(),
            0o644,
        )?;
        write_file(
            &tmp.join("privkey.pem"),
            bundle.privkey_pem.expose().as_bytes(),
            0o600,
        )?;
        let json = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
        write_file(&tmp.join("meta.json"), &json, 0o644)?;
        sync_dir(&tmp)?;
        fs::rename(&tmp, dir.join(&version))
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }

    // The switch: a new symlink renamed over `current` (rename(2) replaces it atomically).
    let link_tmp = dir.join(".current.tmp");
    let _ = fs::remove_file(&link_tmp);
    symlink(&version, &link_tmp)?;
    fs::rename(&link_tmp, dir.join("current"))?;
    sync_dir(dir)?;
    prune(dir, target.keep_versions.max(1), &version);
    Ok(meta)
}

/// Remove version directories beyond the newest `keep` (never `current_version`), and
/// leftovers of interrupted installs. Failures are logged: they never fail a sync.
fn prune(dir: &Path, keep: usize, current_version: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut versions = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if name.starts_with(".tmp-") && is_dir {
            // Another sync cannot be running (lock); this is a crashed one's debris.
            let _ = fs::remove_dir_all(&path);
        } else if is_dir && !name.starts_with('.') && path.join("meta.json").exists() {
            versions.push(name);
        }
    }
    versions.sort();
    versions.reverse();
    let mut kept = 0;
    for name in versions {
        if name == current_version || kept < keep.saturating_sub(1) {
            if name != current_version {
                kept += 1;
            }
            continue;
        }
        if let Err(e) = fs::remove_dir_all(dir.join(&name)) {
            tracing::warn!(version = name, error = %e, "could not remove an old version");
        }
    }
}

/// Holds `<dir>/.sync.lock` so two syncs never interleave in one directory.
pub struct DirLock(#[allow(dead_code)] fs::File);

/// Take `<dir>/.sync.lock` (creating `dir`), or fail at once when another sync holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock, SyncError> {
    let err = |message: String| SyncError::Install {
        dir: dir.display().to_string(),
        message,
    };
    fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".sync.lock"))
        .map_err(|e| err(format!(".sync.lock: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock(file)),
        Err(fs::TryLockError::WouldBlock) => Err(err(
            "another `renewer sync` is installing into this directory".into(),
        )),
        Err(fs::TryLockError::Error(e)) => Err(err(format!(".sync.lock: {e}"))),
    }
}
