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
//! Decisions are pure functions ([`verify`], [`missing_names`], [`accept`], [`plan`], in
//! `checks`); the file system work is in [`install`] and [`prepare`] (`files`), the source I/O
//! in [`sync_once`] (here), and the `on_change` command in [`run_hook`] (`hook`).

mod checks;
mod files;
mod hook;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::shared::bundle::BundleStore;

pub use checks::{accept, chain_trusted, load_roots, missing_names, plan, verify, Plan};
pub use files::{
    install, installed, lock_dir, prepare, sds_yaml, version_name, DirLock, Installed,
};
pub use hook::run_hook;

/// Where and how to install.
#[derive(Debug, Clone)]
pub struct Target {
    /// The directory Envoy's SDS configuration reads (`sync.dir`).
    pub dir: PathBuf,
    /// The SDS secret's name in `sds.yaml` (`sync.secret_name`).
    pub secret_name: String,
    /// Version directories kept, the current one included (at least 1).
    pub keep_versions: usize,
    /// When set, only chains that lead to one of these roots are installed
    /// (`sync.trusted_roots`, read by [`load_roots`]).
    pub trusted_roots: Option<std::sync::Arc<rustls::RootCertStore>>,
}

/// Why a sync did not install (the installed certificate stays in every case).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The source could not be read, or what it holds is not a usable bundle.
    #[error("cannot read the current certificate from {location}: {message}")]
    Fetch {
        /// The source ([`BundleStore::location`]).
        location: String,
        /// What failed.
        message: String,
    },
    /// The source has no certificate of that name: none has been issued yet.
    #[error("{location} has no certificate {name:?} yet (has the renewer run?)")]
    Missing {
        /// The certificate's configured name.
        name: String,
        /// The source ([`BundleStore::location`]).
        location: String,
    },
    /// The bundle is readable but must not be served.
    #[error("refusing certificate {serial} from {location}: {reason}")]
    Refused {
        /// The refused certificate's serial.
        serial: String,
        /// The source ([`BundleStore::location`]).
        location: String,
        /// Which check it failed ([`verify`], [`chain_trusted`], [`accept`]).
        reason: String,
    },
    /// Writing into the directory failed, or another sync holds it.
    #[error("installing into {dir}: {message}")]
    Install {
        /// The directory ([`Target::dir`]).
        dir: String,
        /// What failed.
        message: String,
    },
    /// The `on_change` command failed, timed out or could not start.
    #[error("on_change command: {0}")]
    Hook(String),
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new certificate is now current; `previous` is the serial it replaced.
    Installed {
        /// What is installed now.
        installed: Installed,
        /// The serial of the certificate it replaced, if one was installed.
        previous: Option<String>,
    },
    /// The installed certificate is already the source's current one.
    Unchanged(Installed),
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
mod tests;
