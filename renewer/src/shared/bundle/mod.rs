//! An issued certificate as the rest of the system sees it, and where it is published.
//!
//! [`BundleStore`] is the one interface every certificate store implements: the object layout
//! on a directory or bucket ([`ObjectBundles`]) and the Secret Manager mirror
//! ([`secret_manager`]). `renewer run` publishes to the primary store and then to the mirror;
//! `renewer sync` reads from whichever one a node is configured with.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub mod secret_manager;

use crate::shared::certinfo::{self, CertError};
use crate::shared::config::KeyType;
use crate::shared::store::{keys, Precondition, Sensitivity, SharedStore, StoreError};

/// A string that must never be printed: private keys, EAB HMAC keys, account credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap `value`; from here on it prints as `Secret([redacted])`.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    /// The secret itself; call sites are few and obvious on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// What is known about an issued certificate without reading its key. This is the content of
/// `certs/<name>/current.json` (with the object keys of the PEM files added), and what the
/// renewal policy and `status` work from.
///
/// Unknown fields are ignored, so that a field added later (as `profile` was) does not stop
/// an older reader, such as a node's `renewer sync` during a rollout; a change older readers
/// must not misread bumps [`CurrentPointer::version`] instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertMeta {
    /// The certificate's configured name.
    pub name: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// DNS names in the certificate, sorted.
    pub domains: Vec<String>,
    /// The algorithm of the certificate's key.
    pub key_type: KeyType,
    /// Issuer distinguished name, RFC 4514 style.
    pub issuer: String,
    /// Start of validity (notBefore).
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity (notAfter).
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// RFC 9773 identifier, for renewal information and `replaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ari_id: Option<String>,
    /// SHA-256 of `fullchain.pem`, hex: lets a reader check it got the file this pointer names.
    pub chain_sha256: String,
    /// When the renewer stored it.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// The ACME profile it was ordered with (`certificates[].profile`), if any: what the
    /// renewer asked for, whether or not the CA knows profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The directory URL of the CA that issued it (the primary or an `[[acme.fallback]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// A certificate chain with its private key and metadata.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// What the chain's leaf says, and when it was stored.
    pub meta: CertMeta,
    /// Leaf first, then the intermediates, PEM.
    pub fullchain_pem: String,
    /// PKCS#8 PEM.
    pub privkey_pem: Secret,
}

impl Bundle {
    /// Build a bundle from PEM, checking that it parses and the key belongs to the leaf.
    pub fn from_pem(
        name: &str,
        fullchain_pem: String,
        privkey_pem: Secret,
        issued_at: OffsetDateTime,
    ) -> Result<Bundle, CertError> {
        let leaf = certinfo::inspect(&fullchain_pem)?;
        certinfo::check_key_matches(privkey_pem.expose(), &leaf)?;
        let key_type = leaf.key_type.ok_or(CertError::X509(
            "unsupported public key algorithm or size".into(),
        ))?;
        Ok(Bundle {
            meta: CertMeta {
                name: name.to_string(),
                serial: leaf.serial,
                domains: leaf.domains,
                key_type,
                issuer: leaf.issuer,
                not_before: leaf.not_before,
                not_after: leaf.not_after,
                ari_id: leaf.ari_id,
                chain_sha256: leaf.chain_sha256,
                issued_at,
                profile: None,
                ca: None,
            },
            fullchain_pem,
            privkey_pem,
        })
    }

    /// Chain then key, the payload of a Secret Manager version.
    pub fn to_combined_pem(&self) -> Secret {
        let mut s = self.fullchain_pem.trim_end().to_string();
        s.push('\n');
        s.push_str(self.privkey_pem.expose());
        Secret(s)
    }
}

/// Why a bundle could not be published or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The object store under [`ObjectBundles`] failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An object exists but its content is not what it must be. Names the object.
    #[error("{object}: {message}")]
    Corrupt {
        /// The object or secret version (`gs://b/certs/app/current.json`,
        /// `secretmanager://p/s/versions/3`).
        object: String,
        /// What is wrong with its content (never the content).
        message: String,
    },
    /// A backend other than an object store failed (Secret Manager).
    #[error("{location}: {message}")]
    Backend {
        /// The backend, or the secret the call was about (`secretmanager://project/secret`).
        location: String,
        /// The call and the service's answer.
        message: String,
    },
}

/// Publish and read issued certificates.
#[async_trait]
pub trait BundleStore: Send + Sync + fmt::Debug {
    /// Human-readable location for logs (`gs://bucket/prefix`, `secretmanager://project/prefix`).
    fn location(&self) -> String;

    /// Make `bundle` the current certificate of `bundle.meta.name`. Either the whole bundle
    /// becomes current or, on error, the previous one stays current.
    async fn publish(&self, bundle: &Bundle) -> Result<(), BundleError>;

    /// The current bundle of `name`, if any.
    async fn current(&self, name: &str) -> Result<Option<Bundle>, BundleError>;

    /// The current bundle's metadata only (no private key read where the backend allows).
    async fn current_meta(&self, name: &str) -> Result<Option<CertMeta>, BundleError>;
}

/// `certs/<name>/current.json`: the pointer that makes an issuance current. Additive fields
/// are ignored by readers that do not know them (see [`CertMeta`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurrentPointer {
    /// Format version of this file; readers refuse versions they do not know.
    pub version: u32,
    /// Key of the chain object ([`keys::fullchain`]).
    pub fullchain: String,
    /// Key of the private key object ([`keys::privkey`]).
    pub privkey: String,
    /// The certificate's metadata, at the top level of the JSON.
    #[serde(flatten)]
    pub meta: CertMeta,
}

const POINTER_VERSION: u32 = 1;

/// Certificates laid out on an [`ObjectStore`](crate::shared::store::ObjectStore): immutable
/// per-serial PEM objects first, then `current.json` last. A reader that follows
/// `current.json` therefore never sees a half-written certificate, and a failure before the
/// pointer is written leaves the old one in force.
#[derive(Debug, Clone)]
pub struct ObjectBundles {
    store: SharedStore,
}

impl ObjectBundles {
    /// Certificates kept on `store`.
    pub fn new(store: SharedStore) -> ObjectBundles {
        ObjectBundles { store }
    }

    /// The object store underneath.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    fn object(&self, key: &str) -> String {
        format!("{}/{key}", self.store.location())
    }

    async fn read_pointer(&self, name: &str) -> Result<Option<CurrentPointer>, BundleError> {
        let key = keys::current(name);
        let Some(obj) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let pointer: CurrentPointer =
            serde_json::from_slice(&obj.data).map_err(|e| BundleError::Corrupt {
                object: self.object(&key),
                message: format!("not a valid current.json: {e}"),
            })?;
        if pointer.version != POINTER_VERSION {
            return Err(BundleError::Corrupt {
                object: self.object(&key),
                message: format!(
                    "format version {} is not supported (expected {POINTER_VERSION})",
                    pointer.version
                ),
            });
        }
        if pointer.meta.name != name {
            return Err(BundleError::Corrupt {
                object: self.object(&key),
                message: format!("names certificate {:?}", pointer.meta.name),
            });
        }
        Ok(Some(pointer))
    }

    async fn read_text(&self, key: &str) -> Result<String, BundleError> {
        let obj = self
            .store
            .get(key)
            .await?
            .ok_or_else(|| BundleError::Corrupt {
                object: self.object(key),
                message: "named by current.json but missing".into(),
            })?;
        String::from_utf8(obj.data).map_err(|_| BundleError::Corrupt {
            object: self.object(key),
            message: "not UTF-8 PEM".into(),
        })
    }
}

#[async_trait]
impl BundleStore for ObjectBundles {
    fn location(&self) -> String {
        self.store.location().to_string()
    }

    async fn publish(&self, bundle: &Bundle) -> Result<(), BundleError> {
        let meta = &bundle.meta;
        let fullchain = keys::fullchain(&meta.name, &meta.serial);
        let privkey = keys::privkey(&meta.name, &meta.serial);
        // The per-serial objects are immutable: the same serial always has the same content,
        // so an unconditional write of a retried publish is harmless.
        self.store
            .put(
                &privkey,
                bundle.privkey_pem.expose().as_bytes(),
                Precondition::None,
                Sensitivity::Secret,
            )
            .await?;
        self.store
            .put(
                &fullchain,
                bundle.fullchain_pem.as_bytes(),
                Precondition::None,
                Sensitivity::Public,
            )
            .await?;
        let pointer = CurrentPointer {
            version: POINTER_VERSION,
            fullchain,
            privkey,
            meta: meta.clone(),
        };
        let json = serde_json::to_vec_pretty(&pointer).map_err(|e| BundleError::Corrupt {
            object: self.object(&keys::current(&meta.name)),
            message: e.to_string(),
        })?;
        // Written last: this is the atomic switch.
        self.store
            .put(
                &keys::current(&meta.name),
                &json,
                Precondition::None,
                Sensitivity::Public,
            )
            .await?;
        Ok(())
    }

    async fn current(&self, name: &str) -> Result<Option<Bundle>, BundleError> {
        let Some(pointer) = self.read_pointer(name).await? else {
            return Ok(None);
        };
        let fullchain_pem = self.read_text(&pointer.fullchain).await?;
        let privkey_pem = Secret(self.read_text(&pointer.privkey).await?);
        let leaf = certinfo::inspect(&fullchain_pem).map_err(|e| BundleError::Corrupt {
            object: self.object(&pointer.fullchain),
            message: e.to_string(),
        })?;
        if leaf.chain_sha256 != pointer.meta.chain_sha256 {
            return Err(BundleError::Corrupt {
                object: self.object(&pointer.fullchain),
                message: "content does not match the digest in current.json".into(),
            });
        }
        certinfo::check_key_matches(privkey_pem.expose(), &leaf).map_err(|e| {
            BundleError::Corrupt {
                object: self.object(&pointer.privkey),
                message: e.to_string(),
            }
        })?;
        Ok(Some(Bundle {
            meta: pointer.meta,
            fullchain_pem,
            privkey_pem,
        }))
    }

    async fn current_meta(&self, name: &str) -> Result<Option<CertMeta>, BundleError> {
        Ok(self.read_pointer(name).await?.map(|p| p.meta))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::shared::store::fs::FsStore;
    use crate::shared::store::{Generation, Object, ObjectStore};

    /// An fs store whose writes fail for keys containing `fail_on`.
    #[derive(Debug)]
    struct Flaky {
        inner: FsStore,
        fail_on: std::sync::Mutex<Option<String>>,
    }

    #[async_trait]
    impl ObjectStore for Flaky {
        fn location(&self) -> &str {
            self.inner.location()
        }
        async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
            self.inner.get(key).await
        }
        async fn put(
            &self,
            key: &str,
            data: &[u8],
            p: Precondition,
            s: Sensitivity,
        ) -> Result<Generation, StoreError> {
            let fail = self.fail_on.lock().map(|f| f.clone()).unwrap_or(None);
            if fail.is_some_and(|f| key.contains(&f)) {
                return Err(StoreError::backend("test", key, "injected write failure"));
            }
            self.inner.put(key, data, p, s).await
        }
        async fn delete(&self, key: &str, p: Precondition) -> Result<(), StoreError> {
            self.inner.delete(key, p).await
        }
        async fn list(
            &self,
            prefix: &str,
        ) -> Result<Vec<crate::shared::store::Listed>, StoreError> {
            self.inner.list(prefix).await
        }
    }

    fn bundle(name: &str) -> Bundle {
        crate::shared::testing::bundle(name, &["a.example.com"], 90)
    }

    #[tokio::test]
    async fn a_failed_write_leaves_the_previous_certificate_current() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flaky = Arc::new(Flaky {
            inner: FsStore::new(dir.path()).expect("store"),
            fail_on: std::sync::Mutex::new(None),
        });
        let bundles = ObjectBundles::new(flaky.clone());
        let old = bundle("app");
        bundles.publish(&old).await.expect("first publish");

        for part in ["privkey.pem", "fullchain.pem", "current.json"] {
            *flaky.fail_on.lock().expect("lock") = Some(part.to_string());
            let new = bundle("app");
            assert!(bundles.publish(&new).await.is_err(), "{part}");
            let current = bundles.current("app").await.expect("read").expect("some");
            assert_eq!(current.meta.serial, old.meta.serial, "{part}");
            assert_eq!(current.privkey_pem, old.privkey_pem, "{part}");
        }
    }

    #[tokio::test]
    async fn corrupt_objects_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: SharedStore = Arc::new(FsStore::new(dir.path()).expect("store"));
        let bundles = ObjectBundles::new(store.clone());
        let b = bundle("app");
        bundles.publish(&b).await.expect("publish");
        // A chain that does not match the digest in current.json.
        let other = bundle("app");
        let overwrite = |key: String, data: Vec<u8>| {
            let store = store.clone();
            async move {
                store
                    .put(&key, &data, Precondition::None, Sensitivity::Public)
                    .await
                    .expect("overwrite")
            }
        };
        overwrite(
            keys::fullchain("app", &b.meta.serial),
            other.fullchain_pem.into_bytes(),
        )
        .await;
        let e = bundles.current("app").await.expect_err("mismatch");
        assert!(e.to_string().contains("fullchain.pem"), "{e}");
        overwrite("certs/app/current.json".into(), b"[]".to_vec()).await;
        let e = bundles.current_meta("app").await.expect_err("corrupt");
        assert!(e.to_string().contains("certs/app/current.json"), "{e}");
        assert!(format!("{:?}", b.privkey_pem).contains("redacted"));
        assert!(!format!("{b:?}").contains("PRIVATE KEY"));
    }

    #[tokio::test]
    async fn a_pointer_with_a_field_added_later_is_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: SharedStore = Arc::new(FsStore::new(dir.path()).expect("store"));
        let bundles = ObjectBundles::new(store.clone());
        let mut bundle = crate::shared::testing::bundle("app", &["a.example.com"], 90);
        bundle.meta.profile = Some("shortlived".into());
        bundles.publish(&bundle).await.expect("publish");
        let key = keys::current("app");
        let stored = store.get(&key).await.expect("get").expect("current.json");
        let mut json: serde_json::Value = serde_json::from_slice(&stored.data).expect("json");
        assert_eq!(json["profile"], "shortlived");
        json["added_by_a_later_version"] = serde_json::json!({"x": 1});
        store
            .put(
                &key,
                &serde_json::to_vec(&json).expect("json"),
                Precondition::None,
                Sensitivity::Public,
            )
            .await
            .expect("put");
        let meta = bundles
            .current_meta("app")
            .await
            .expect("read")
            .expect("meta");
        assert_eq!(meta, bundle.meta);
    }
}
