//! `renewer sync`: install the current certificate for Envoy on an app node.
//!
//! Envoy reads its certificate through file-based SDS. The directory `renewer sync` keeps:
//!
//! ```text
//! <dir>/sds.yaml                 SDS resource <secret_name> → current/fullchain.pem, privkey.pem
//! <dir>/current -> <version>     relative symlink, replaced by rename (atomic)
//! <dir>/<version>/fullchain.pem  leaf first, then intermediates
//! <dir>/<version>/privkey.pem    mode 0600
//! <dir>/<version>/meta.json      serial, names, validity, source: what `sync` compares against
//! <dir>/.sync.lock               one sync at a time per directory
//! ```
//!
//! A new certificate is written into a hidden temporary directory, synced to disk, renamed to
//! `<version>`, and only then is `current` swapped by renaming a new symlink over it. Envoy
//! watches `<dir>` (both the SDS file source and the secret's `watched_directory`), sees the
//! rename, and re-reads the pair: never half a pair, and no restart. Anything wrong with what
//! the source holds (unreadable, key not matching, expired) is refused before the directory
//! is touched, so the certificate in service stays.
//!
//! A certificate that lacks some configured names is still installed when it is the best
//! there is (see [`accept`]): right after `DOMAINS` grows, a new node serves the current
//! certificate, with a gap it logs and exports, rather than nothing until the renewer has
//! added the new names. It never replaces one that covers more of them.
//!
//! Decisions are pure functions ([`verify`], [`missing_names`], [`accept`], [`plan`]); the
//! file system work is in [`install`] and [`prepare`], the source I/O in [`sync_once`].

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::shared::bundle::{Bundle, BundleStore};
use crate::shared::certinfo::{self, LeafInfo};
use crate::shared::clock::rfc3339;

/// Where and how to install.
#[derive(Debug, Clone)]
pub struct Target {
    pub dir: PathBuf,
    pub secret_name: String,
    /// Version directories kept, the current one included (at least 1).
    pub keep_versions: usize,
    /// When set, only chains that lead to one of these roots are installed
    /// (`sync.trusted_roots`, read by [`load_roots`]).
    pub trusted_roots: Option<std::sync::Arc<rustls::RootCertStore>>,
}

/// The roots of `sync.trusted_roots`: every certificate of the PEM file (at least one).
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "{}: no usable CA certificate in the file",
            path.display()
        ));
    }
    Ok(roots)
}

/// Whether the bundle's chain (leaf first, then intermediates) leads to one of `roots` for
/// the leaf's first name, at `now` (RFC 5280 path validation, as a TLS client would do it).
pub fn chain_trusted(
    fullchain_pem: &str,
    roots: &std::sync::Arc<rustls::RootCertStore>,
    leaf: &LeafInfo,
    now: OffsetDateTime,
) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let certs = CertificateDer::pem_slice_iter(fullchain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("its chain does not parse: {e}"))?;
    let (end_entity, intermediates) = certs
        .split_first()
        .ok_or_else(|| "its chain is empty".to_string())?;
    let name = leaf
        .domains
        .first()
        .ok_or_else(|| "it names no DNS name".to_string())?;
    let server_name = ServerName::try_from(name.clone()).map_err(|e| format!("{name:?}: {e}"))?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots.clone(),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| format!("trusted roots: {e}"))?;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    verifier
        .verify_server_cert(end_entity, intermediates, &server_name, &[], at)
        .map(|_| ())
        .map_err(|e| format!("its chain does not lead to a trusted root (sync.trusted_roots): {e}"))
}

/// What `meta.json` of an installed version records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// The certificate's configured name.
    pub name: String,
    pub serial: String,
    pub domains: Vec<String>,
    pub issuer: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// SHA-256 of `fullchain.pem`, hex: lets the next sync check the files are intact.
    pub chain_sha256: String,
    /// Where it came from (`gs://…`, `secretmanager://…`, a directory).
    pub source: String,
    #[serde(with = "time::serde::rfc3339")]
    pub installed_at: OffsetDateTime,
    /// The version directory name.
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The source could not be read, or what it holds is not a usable bundle.
    #[error("cannot read the current certificate from {location}: {message}")]
    Fetch { location: String, message: String },
    #[error("{location} has no certificate {name:?} yet (has the renewer run?)")]
    Missing { name: String, location: String },
    /// The bundle is readable but must not be served.
    #[error("refusing certificate {serial} from {location}: {reason}")]
    Refused {
        serial: String,
        location: String,
        reason: String,
    },
    #[error("installing into {dir}: {message}")]
    Install { dir: String, message: String },
    #[error("on_change command: {0}")]
    Hook(String),
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new certificate is now current; `previous` is the serial it replaced.
    Installed {
        installed: Installed,
        previous: Option<String>,
    },
    /// The installed certificate is already the source's current one.
    Unchanged(Installed),
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

/// Check a bundle before it may be served: the chain parses, the key is the leaf's, and it is
/// valid now. Which configured names it covers is [`missing_names`]' and [`accept`]'s business.
pub fn verify(bundle: &Bundle, now: OffsetDateTime) -> Result<LeafInfo, String> {
    let leaf = certinfo::inspect(&bundle.fullchain_pem).map_err(|e| e.to_string())?;
    certinfo::check_key_matches(bundle.privkey_pem.expose(), &leaf).map_err(|e| e.to_string())?;
    if leaf.not_after <= now {
        return Err(format!("it expired at {}", rfc3339(leaf.not_after)));
    }
    // A few minutes of clock skew between the CA and this node are normal.
    if leaf.not_before > now + time::Duration::minutes(10) {
        return Err(format!(
            "it is not valid before {} (check this node's clock)",
            rfc3339(leaf.not_before)
        ));
    }
    Ok(leaf)
}

/// The configured names (`wanted`) a certificate for `domains` does not cover, in `wanted`'s
/// order. Names compare without regard to case (RFC 4343).
pub fn missing_names(domains: &[String], wanted: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| !domains.iter().any(|d| d.eq_ignore_ascii_case(w)))
        .cloned()
        .collect()
}

/// Whether the source's (verified) certificate may replace what is installed. It may, unless
/// the installed one is still valid and covers configured names the new one lacks: a node
/// serves the best certificate it has, and a gap never grows by a sync.
pub fn accept(
    installed: Option<&Installed>,
    leaf: &LeafInfo,
    wanted: &[String],
    now: OffsetDateTime,
) -> Result<(), String> {
    let new_gap = missing_names(&leaf.domains, wanted);
    if new_gap.is_empty() {
        return Ok(());
    }
    if let Some(i) = installed.filter(|i| i.not_after > now) {
        let old_gap = missing_names(&i.domains, wanted);
        let lost: Vec<&str> = new_gap
            .iter()
            .filter(|n| !old_gap.contains(n))
            .map(String::as_str)
            .collect();
        if !lost.is_empty() {
            return Err(format!(
                "it does not cover {} which the installed certificate {} does (it has {})",
                lost.join(", "),
                i.serial,
                leaf.domains.join(", ")
            ));
        }
    }
    Ok(())
}

/// What to do, given what is installed and what the source has (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Keep,
    Install,
}

pub fn plan(installed: Option<&Installed>, source_serial: &str, source_sha256: &str) -> Plan {
    match installed {
        Some(i) if i.serial == source_serial && i.chain_sha256 == source_sha256 => Plan::Keep,
        _ => Plan::Install,
    }
}

/// Version directory name: sortable by time, then the serial's head for people reading `ls`.
pub fn version_name(now: OffsetDateTime, serial: &str) -> String {
    let head: String = serial.chars().take(16).collect();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{head}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
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

/// Write `bundle` as a new version and make it current. `leaf` is [`verify`]'s result.
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

/// One sync: read the source's current bundle for `name`, and install it unless it is what is
/// installed already or it fails [`verify`].
pub async fn sync_once(
    source: &dyn BundleStore,
    name: &str,
    wanted: &[String],
    target: &Target,
) -> Result<Outcome, SyncError> {
    let location = source.location();
    let install_err = |e: io::Error| SyncError::Install {
        dir: target.dir.display().to_string(),
        message: e.to_string(),
    };
    let _lock = lock_dir(&target.dir)?;
    if prepare(target).map_err(install_err)? {
        tracing::info!(path = %target.dir.join("sds.yaml").display(), "wrote the SDS file");
    }
    let bundle = source
        .current(name)
        .await
        .map_err(|e| SyncError::Fetch {
            location: location.clone(),
            message: e.to_string(),
        })?
        .ok_or_else(|| SyncError::Missing {
            name: name.to_string(),
            location: location.clone(),
        })?;
    let before = installed(&target.dir);
    let sha = hex::encode(Sha256::digest(bundle.fullchain_pem.as_bytes()));
    if plan(before.as_ref(), &bundle.meta.serial, &sha) == Plan::Keep {
        if let Some(b) = before {
            return Ok(Outcome::Unchanged(b));
        }
    }
    let now = OffsetDateTime::now_utc();
    let refused = |reason| SyncError::Refused {
        serial: bundle.meta.serial.clone(),
        location: location.clone(),
        reason,
    };
    let leaf = verify(&bundle, now).map_err(refused)?;
    if let Some(roots) = &target.trusted_roots {
        chain_trusted(&bundle.fullchain_pem, roots, &leaf, now).map_err(refused)?;
    }
    accept(before.as_ref(), &leaf, wanted, now).map_err(refused)?;
    if let Some(b) = &before {
        if leaf.not_after < b.not_after {
            tracing::warn!(
                installed = b.serial,
                new = leaf.serial,
                "the source's certificate expires earlier than the installed one (a rollback?); installing it"
            );
        }
    }
    let installed = install(target, &bundle, &leaf, &location, now).map_err(install_err)?;
    Ok(Outcome::Installed {
        installed,
        previous: before.map(|b| b.serial),
    })
}

/// Run the `on_change` command with `sh -c`, the new certificate described in its environment
/// (`RENEWER_SYNC_SERIAL`, `RENEWER_SYNC_NOT_AFTER`, `RENEWER_SYNC_DIR`, `RENEWER_SYNC_NAME`).
pub async fn run_hook(
    command: &str,
    installed: &Installed,
    dir: &Path,
    timeout: Duration,
) -> Result<(), SyncError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("RENEWER_SYNC_SERIAL", &installed.serial)
        .env("RENEWER_SYNC_NOT_AFTER", rfc3339(installed.not_after))
        .env("RENEWER_SYNC_DIR", dir)
        .env("RENEWER_SYNC_NAME", &installed.name)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SyncError::Hook(format!("cannot start sh: {e}")))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(SyncError::Hook(format!("{command:?} failed ({status})"))),
        Ok(Err(e)) => Err(SyncError::Hook(e.to_string())),
        Err(_) => {
            let _ = child.kill().await;
            Err(SyncError::Hook(format!(
                "{command:?} did not finish within {} s and was killed",
                timeout.as_secs()
            )))
        }
    }
}

/// `30s`, `5m`, `2h`, or plain seconds.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not an interval like 30s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    if secs == 0 {
        return Err("the interval must be more than 0".into());
    }
    Ok(Duration::from_secs(secs))
}

/// `interval` ± 10 %, so that app nodes started together do not all read the store at once.
pub fn jittered(interval: Duration, unit_random: f64) -> Duration {
    let factor = 0.9 + 0.2 * unit_random.clamp(0.0, 1.0);
    interval.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::bundle::Secret;
    use rcgen::{CertificateParams, KeyPair};

    fn bundle_for(names: &[&str], days: i64) -> Bundle {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(days);
        let cert = params.self_signed(&key).unwrap();
        Bundle::from_pem("app", cert.pem(), Secret::new(key.serialize_pem()), now).unwrap()
    }

    fn target(dir: &Path) -> Target {
        Target {
            trusted_roots: None,
            dir: dir.to_path_buf(),
            secret_name: "server_cert".into(),
            keep_versions: 2,
        }
    }

    fn wanted(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// A CA, and a chain for `a.example.com` it signed (leaf then CA).
    fn ca_and_chain() -> (String, String) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["a.example.com".to_string()]).unwrap();
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf.signed_by(&key, &issuer).unwrap();
        (ca_cert.pem(), format!("{}{}", leaf.pem(), ca_cert.pem()))
    }

    fn roots_of(pem: &str) -> std::sync::Arc<rustls::RootCertStore> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roots.pem");
        fs::write(&path, pem).unwrap();
        std::sync::Arc::new(load_roots(&path).unwrap())
    }

    #[test]
    fn the_shipped_roots_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("roots");
        // ISRG Root X1 and X2, and the two staging roots.
        let roots = load_roots(&dir.join("letsencrypt.pem")).unwrap();
        assert_eq!(roots.len(), 4);
    }

    #[test]
    fn only_chains_to_a_trusted_root_pass() {
        let (ca, chain) = ca_and_chain();
        let (other_ca, _) = ca_and_chain();
        let leaf = certinfo::inspect(&chain).unwrap();
        let now = OffsetDateTime::now_utc();
        chain_trusted(&chain, &roots_of(&ca), &leaf, now).expect("signed by the trusted CA");
        let e = chain_trusted(&chain, &roots_of(&other_ca), &leaf, now).unwrap_err();
        assert!(e.contains("trusted root"), "{e}");
        // A self-signed bundle leads nowhere.
        let own = bundle_for(&["a.example.com"], 30);
        let own_leaf = certinfo::inspect(&own.fullchain_pem).unwrap();
        assert!(chain_trusted(&own.fullchain_pem, &roots_of(&ca), &own_leaf, now).is_err());
        // A file without certificates is refused when loaded.
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "nothing").unwrap();
        assert!(load_roots(&empty).is_err());
        assert!(load_roots(&dir.path().join("missing.pem")).is_err());
    }

    #[test]
    fn verify_accepts_a_good_bundle() {
        let b = bundle_for(&["a.example.com", "b.example.com"], 30);
        let leaf = verify(&b, OffsetDateTime::now_utc()).unwrap();
        assert_eq!(leaf.serial, b.meta.serial);
    }

    #[test]
    fn verify_refuses_expiry_and_foreign_keys() {
        let b = bundle_for(&["a.example.com"], 30);
        let now = OffsetDateTime::now_utc();
        let e = verify(&b, now + time::Duration::days(31)).unwrap_err();
        assert!(e.contains("expired"), "{e}");
        let e = verify(&b, now - time::Duration::days(2)).unwrap_err();
        assert!(e.contains("not valid before"), "{e}");
        let other = bundle_for(&["a.example.com"], 30);
        let mut mixed = b.clone();
        mixed.privkey_pem = other.privkey_pem.clone();
        let e = verify(&mixed, now).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn the_best_certificate_there_is_is_served_and_a_gap_never_grows() {
        let now = OffsetDateTime::now_utc();
        let both = wanted(&["a.example.com", "B.example.com"]);
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path());
        let install_one = |names: &[&str]| {
            let b = bundle_for(names, 30);
            let leaf = verify(&b, now).unwrap();
            (install(&t, &b, &leaf, "test", now).unwrap(), leaf)
        };
        let (only_a, leaf_a) = install_one(&["a.example.com"]);
        assert_eq!(missing_names(&only_a.domains, &both), vec!["B.example.com"]);
        // Nothing installed: the one lacking a name is better than none.
        assert!(accept(None, &leaf_a, &both, now).is_ok());
        // A newer one with the same gap, or a smaller one, replaces it.
        let b = bundle_for(&["a.example.com"], 60);
        assert!(accept(Some(&only_a), &verify(&b, now).unwrap(), &both, now).is_ok());
        let (full, leaf_full) = install_one(&["a.example.com", "b.example.com"]);
        assert!(missing_names(&full.domains, &both).is_empty());
        assert!(accept(Some(&only_a), &leaf_full, &both, now).is_ok());
        // Never back to one that lacks a name the installed one has...
        let e = accept(Some(&full), &leaf_a, &both, now).unwrap_err();
        assert!(e.contains("does not cover B.example.com"), "{e}");
        // ...unless the installed one has expired (then anything valid is better).
        assert!(accept(Some(&full), &leaf_a, &both, now + time::Duration::days(31)).is_ok());
        // A name dropped from the settings is no gap.
        assert!(accept(Some(&full), &leaf_a, &wanted(&["a.example.com"]), now).is_ok());
    }

    #[test]
    fn plan_keeps_only_the_same_intact_certificate() {
        let b = bundle_for(&["a.example.com"], 30);
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path());
        let leaf = verify(&b, OffsetDateTime::now_utc()).unwrap();
        let i = install(&t, &b, &leaf, "test", OffsetDateTime::now_utc()).unwrap();
        assert_eq!(plan(Some(&i), &i.serial, &i.chain_sha256), Plan::Keep);
        assert_eq!(plan(Some(&i), "other", &i.chain_sha256), Plan::Install);
        assert_eq!(plan(Some(&i), &i.serial, "other"), Plan::Install);
        assert_eq!(plan(None, &i.serial, &i.chain_sha256), Plan::Install);
    }

    #[test]
    fn install_lays_out_versions_and_swaps_current() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path());
        assert!(prepare(&t).unwrap());
        assert!(!prepare(&t).unwrap(), "a second prepare writes nothing");
        assert!(installed(dir.path()).is_none());

        let mut serials = Vec::new();
        for i in 0..4 {
            let b = bundle_for(&["a.example.com"], 30);
            let leaf = verify(&b, OffsetDateTime::now_utc()).unwrap();
            let now = OffsetDateTime::now_utc() + time::Duration::seconds(i);
            let meta = install(&t, &b, &leaf, "test", now).unwrap();
            serials.push(meta.serial.clone());
            let current = installed(dir.path()).expect("installed");
            assert_eq!(current, meta);
            let link = fs::read_link(dir.path().join("current")).unwrap();
            assert_eq!(link, PathBuf::from(&meta.version), "relative link");
            let key = dir.path().join("current/privkey.pem");
            assert_eq!(
                fs::metadata(&key).unwrap().permissions().mode() & 0o777,
                0o600
            );
            assert_eq!(
                fs::read_to_string(dir.path().join("current/fullchain.pem")).unwrap(),
                b.fullchain_pem
            );
        }
        // keep_versions = 2: the current one and the one before.
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && n != "sds.yaml" && n != "current")
            .collect();
        left.sort();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left[1].ends_with(&serials[3][..16]), "{left:?}");
        assert!(left[0].ends_with(&serials[2][..16]), "{left:?}");
    }

    #[test]
    fn tampered_files_read_as_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path());
        let b = bundle_for(&["a.example.com"], 30);
        let leaf = verify(&b, OffsetDateTime::now_utc()).unwrap();
        install(&t, &b, &leaf, "test", OffsetDateTime::now_utc()).unwrap();
        fs::write(dir.path().join("current/fullchain.pem"), "garbage").unwrap();
        assert!(installed(dir.path()).is_none());
    }

    #[test]
    fn sds_yaml_watches_the_directory() {
        let yaml = sds_yaml(Path::new("/var/lib/acme-edge/tls"), "server_cert");
        assert!(yaml.contains("name: server_cert"));
        assert!(yaml.contains("filename: /var/lib/acme-edge/tls/current/fullchain.pem"));
        assert!(yaml.contains("filename: /var/lib/acme-edge/tls/current/privkey.pem"));
        assert!(yaml.contains("watched_directory: { path: /var/lib/acme-edge/tls }"));
    }

    #[test]
    fn the_directory_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let e = lock_dir(dir.path()).err().expect("second lock refused");
        assert!(e.to_string().contains("another `renewer sync`"), "{e}");
        drop(held);
        lock_dir(dir.path()).expect("free again");
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_interval("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_interval("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_interval("45").unwrap(), Duration::from_secs(45));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("5d").is_err());
        assert!(parse_interval("soon").is_err());
        assert_eq!(
            jittered(Duration::from_secs(100), 0.0),
            Duration::from_secs(90)
        );
        assert_eq!(
            jittered(Duration::from_secs(100), 1.0),
            Duration::from_secs(110)
        );
    }

    #[test]
    fn version_names_sort_by_time() {
        let a = version_name(time::macros::datetime!(2026-01-02 03:04:05 UTC), "0abc");
        let b = version_name(time::macros::datetime!(2026-01-02 03:04:06 UTC), "0000");
        assert_eq!(a, "20260102T030405Z-0abc");
        assert!(a < b);
    }
}
