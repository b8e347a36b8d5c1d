//! Where the renewer keeps its state: ACME accounts, certificates, challenge answers and leases.
//!
//! Two layers:
//!
//! * [`ObjectStore`] is a small key/value interface with compare-and-swap (`get`, `put`, `delete`
//!   with a [`Precondition`]). It is implemented by a local directory ([`fs::FsStore`], the
//!   embedded default) and a Cloud Storage bucket prefix ([`gcs::GcsStore`]). Keys are the same
//!   in both (see `docs/architecture.md`, "Store layout"). The lock, the account cache and the
//!   HTTP-01 challenge publisher only need this layer.
//! * [`crate::shared::bundle::BundleStore`] is the certificate-level interface (publish an
//!   issued bundle, read the current one). It is implemented on top of any `ObjectStore` and by
//!   the Secret Manager mirror.
//!
//! Compare-and-swap is what makes concurrent renewers safe: a lease is created with
//! [`Precondition::DoesNotExist`] and taken over with [`Precondition::GenerationMatches`], so of
//! two writers racing on one object exactly one wins.

pub mod fs;
pub mod gcs;
mod url;

pub use url::{BadStoreUrl, StoreUrl};

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

/// An opaque version of an object: the GCS `generation`, or a content digest for files.
/// Only compared for equality, never interpreted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Generation(pub String);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One stored object and the version it was read at.
#[derive(Clone)]
pub struct Object {
    /// The whole content.
    pub data: Vec<u8>,
    /// The version this content is; a later write or delete can be made conditional on it
    /// ([`Precondition::GenerationMatches`]).
    pub generation: Generation,
}

impl fmt::Debug for Object {
    // Objects may hold private keys or account credentials: never print their content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object")
            .field("len", &self.data.len())
            .field("generation", &self.generation)
            .finish()
    }
}

/// One object found by [`ObjectStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The object's key, as [`ObjectStore::get`] takes it (the store's own prefix removed).
    pub key: String,
    /// When it was last written (file mtime, object `updated`).
    pub updated: time::OffsetDateTime,
}

/// When a write or delete may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Unconditionally.
    None,
    /// Only if the object does not exist yet (GCS `ifGenerationMatch=0`, `O_EXCL` on files).
    DoesNotExist,
    /// Only if the object still is at this generation.
    GenerationMatches(Generation),
}

/// Whether an object holds secret material (private keys, account credentials). Secret files
/// are created 0600; the flag is also what keeps their content out of logs and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitivity {
    /// Certificates, pointers, state, challenge answers, leases.
    Public,
    /// Private keys, account credentials, an order's key: files 0600, objects `no-store`.
    Secret,
}

/// A failed store operation, naming the store and the key (never the object's content).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The precondition did not hold: somebody else wrote or deleted the object first.
    #[error("{location}/{key}: precondition failed (the object was changed by another writer)")]
    PreconditionFailed {
        /// The store ([`ObjectStore::location`]).
        location: String,
        /// The object's key.
        key: String,
    },
    /// Anything else: I/O, network, permissions, a malformed answer from the backend.
    #[error("{location}/{key}: {message}")]
    Backend {
        /// The store ([`ObjectStore::location`]).
        location: String,
        /// The object's key (for a list, the prefix); empty when opening the store failed.
        key: String,
        /// What went wrong, on one line.
        message: String,
    },
}

impl StoreError {
    /// Whether another writer got there first (as opposed to the store failing): the caller
    /// reads the object again and decides anew.
    pub fn is_precondition_failed(&self) -> bool {
        matches!(self, StoreError::PreconditionFailed { .. })
    }

    /// A [`StoreError::Backend`] about `key` of the store at `location`.
    pub(crate) fn backend(location: &str, key: &str, message: impl Into<String>) -> StoreError {
        StoreError::Backend {
            location: location.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// A [`StoreError::PreconditionFailed`] about `key` of the store at `location`.
    pub(crate) fn precondition_failed(location: &str, key: &str) -> StoreError {
        StoreError::PreconditionFailed {
            location: location.to_string(),
            key: key.to_string(),
        }
    }
}

/// A key/value store with compare-and-swap. Keys are `/`-separated relative paths made of
/// `[A-Za-z0-9._-]` segments (checked by [`check_key`]); the store maps them to files or objects.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Where the store is, as configured (`file:///var/lib/acme-edge`, `gs://bucket/prefix`).
    fn location(&self) -> &str;

    /// The object, or `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError>;

    /// Write the whole object atomically: a reader sees the old or the new content, never a mix.
    async fn put(
        &self,
        key: &str,
        data: &[u8],
        precondition: Precondition,
        sensitivity: Sensitivity,
    ) -> Result<Generation, StoreError>;

    /// Delete the object. Deleting a missing object is not an error with [`Precondition::None`];
    /// with [`Precondition::GenerationMatches`] it is `PreconditionFailed`.
    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), StoreError>;

    /// Every object whose key starts with `prefix` (a folder such as `acme-challenge/`), in
    /// no particular order. Only housekeeping lists; serving never depends on it.
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError>;
}

/// The store as the rest of the renewer holds it: one backend, shared by every task.
pub type SharedStore = Arc<dyn ObjectStore>;

/// Open the store at `url`; `gcs_endpoint` (`store.gcs_endpoint`) points a `gs://` store at
/// an emulator.
pub async fn open(url: &StoreUrl, gcs_endpoint: Option<&str>) -> Result<SharedStore, StoreError> {
    Ok(match url {
        StoreUrl::File(dir) => Arc::new(fs::FsStore::new(dir.clone())?),
        StoreUrl::Gcs { bucket, prefix } => {
            Arc::new(gcs::GcsStore::new(bucket, prefix, gcs_endpoint).await?)
        }
    })
}

/// Check that the store answers, before a command relies on it: an unreachable store is a
/// setup error (exit 3), not a certificate failure. Reads an object that is never written,
/// so "missing" is the healthy answer.
pub async fn check_reachable(store: &SharedStore) -> Result<(), StoreError> {
    store.get(keys::PROBE).await.map(|_| ())
}

/// The Google client crates (through reqwest) need a process-wide rustls provider; this
/// project uses ring. Idempotent, and losing a race against another installer is fine: either
/// way one is installed.
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Reject keys that could escape the store's root or mean different things on different
/// backends (empty segments, `.`/`..`, characters outside `[A-Za-z0-9._-]`).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 512 {
        return Err("key must be 1 to 512 characters".into());
    }
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!("key {key:?} has an empty, '.' or '..' segment"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(format!(
                "key {key:?} has characters outside [A-Za-z0-9._-/]"
            ));
        }
    }
    Ok(())
}

/// Object keys, in one place so the layout in `docs/architecture.md` has one source of truth.
pub mod keys {
    /// Read by [`super::check_reachable`]; never written.
    pub const PROBE: &str = "locks/reachability-probe";
    /// The ACME account credentials for one CA (secret); `directory_hash` is the first 16 hex
    /// digits of the SHA-256 of its directory URL.
    pub fn account(directory_hash: &str) -> String {
        format!("acme/accounts/{directory_hash}.json")
    }
    /// One issuance's chain, leaf first, PEM; immutable once written.
    pub fn fullchain(name: &str, serial: &str) -> String {
        format!("certs/{name}/{serial}/fullchain.pem")
    }
    /// One issuance's private key, PKCS#8 PEM (secret); immutable once written.
    pub fn privkey(name: &str, serial: &str) -> String {
        format!("certs/{name}/{serial}/privkey.pem")
    }
    /// The pointer to the current issuance, with its metadata; written last, the atomic
    /// switch (`crate::shared::bundle::CurrentPointer`).
    pub fn current(name: &str) -> String {
        format!("certs/{name}/current.json")
    }
    /// Last attempt, last error and cached ARI answer; advisory, never needed to serve.
    pub fn state(name: &str) -> String {
        format!("certs/{name}/state.json")
    }
    /// The order in flight (`crate::cloud::inflight`): URL, tokens, and the key before finalize.
    pub fn order(name: &str) -> String {
        format!("certs/{name}/order.json")
    }
    /// The HTTP-01 key authorization of `token`, while its order is validated.
    pub fn challenge(token: &str) -> String {
        format!("acme-challenge/{token}")
    }
    /// The renewal lease of certificate `name` (`crate::cloud::lock`).
    pub fn lock(name: &str) -> String {
        format!("locks/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("certs/app/current.json").is_ok());
        assert!(check_key("acme-challenge/abc_DEF-123").is_ok());
        for bad in [
            "", "/abs", "a//b", "a/../b", "./a", "a/b/", "a b", "a\\b", "é",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
    }
}
