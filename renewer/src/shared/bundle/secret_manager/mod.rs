//! The Secret Manager mirror: every issued bundle also becomes a version of one secret per
//! certificate, for consumers that read certificates from Secret Manager rather than from the
//! store (e.g. a load balancer certificate sync, or Cloud Run services mounting the secret).
//!
//! Layout: certificate `name` lives in secret `<secret_prefix><name>` of the configured project,
//! created on first publish with automatic replication and the labels `managed-by=acme-edge`
//! and `certificate=<name>`. Each issuance is one version whose payload is the PEM chain
//! followed by the PEM private key ([`Bundle::to_combined_pem`]).
//!
//! Secret *versions* cannot carry labels in the v1 API, so the payload is the source of truth:
//! [`SecretManagerMirror::current`] parses it back. For operators, the secret's labels `serial`
//! and `not-after` (unix seconds) name the bundle the newest version holds; they are
//! informational (updated after the version is added, best effort) and never read back.
//!
//! Publishing:
//!
//! 1. get (or create) the secret;
//! 2. read the current version; if it already holds this certificate (same payload or same
//!    serial), no version is added, so a retried or repeated publish is harmless;
//! 3. add the version, with a CRC32C checksum of the payload that the service verifies;
//!    this is the atomic switch: from here on the new bundle is current;
//! 4. update the informational labels and disable (never destroy, so an operator can roll back
//!    by hand) the enabled versions beyond the `keep_versions` newest. These run after the
//!    switch, so their failures are logged, not returned: an error from `publish` always means
//!    the previous bundle is still current.
//!
//! "Current" is the newest *enabled* version. The service's `latest` alias names the newest
//! version whatever its state, and accessing it fails with `FAILED_PRECONDITION` when an
//! operator has disabled it (the usual way to roll back); reads then fall back to the newest
//! enabled version.
//!
//! Payloads are never logged nor put into errors (the crate's `Debug` of a payload prints it, so
//! no response is ever formatted with `{:?}` here).
//!
//! Here: the mirror, publishing and reading bundles; `versions`: finding the current version
//! and disabling old ones; `call`: one API call, bounded in time, its error on one line.

mod call;
mod versions;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::{
    replication, Replication, Secret as SmSecret, SecretPayload,
};
use time::OffsetDateTime;

use self::call::{call, CallError};
use self::versions::version_number;
use crate::shared::bundle::{Bundle, BundleError, BundleStore, CertMeta, Secret};
use crate::shared::certinfo;
use crate::shared::config::SecretManagerConfig;

/// Upper bound on one API call, retries included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per idempotent call (GET) on transient errors (`UNAVAILABLE`, 503, I/O).
const ATTEMPTS: u32 = 3;
/// Pages of a version listing we are willing to follow (a secret holds at most a few thousand
/// versions; this only stops a server that keeps answering with a next page token).
const MAX_PAGES: usize = 100;
/// Largest payload the service accepts.
const MAX_PAYLOAD: usize = 64 * 1024;

const LABEL_MANAGED_BY: &str = "managed-by";
const LABEL_CERTIFICATE: &str = "certificate";
const LABEL_SERIAL: &str = "serial";
const LABEL_NOT_AFTER: &str = "not-after";
const MANAGED_BY: &str = "acme-edge";
/// Publishes bundles as Secret Manager secret versions and reads the current one back.
#[derive(Debug, Clone)]
pub struct SecretManagerMirror {
    client: SecretManagerService,
    project: String,
    prefix: String,
    keep_versions: u32,
}

impl SecretManagerMirror {
    /// A client for `cfg.project`. With `cfg.endpoint` set, requests go there without
    /// credentials (emulators, tests); otherwise to the real service with Application Default
    /// Credentials.
    pub async fn new(cfg: &SecretManagerConfig) -> Result<SecretManagerMirror, BundleError> {
        crate::shared::store::install_crypto_provider();
        if std::env::var("GOOGLE_CLOUD_RUST_LOGGING").is_ok_and(|v| v == "true") {
            // The variable turns on the client's own instrumentation, whose DEBUG spans record
            // every request and response with `{:?}`, payloads included.
            tracing::warn!(
                "GOOGLE_CLOUD_RUST_LOGGING=true: DEBUG logs of google_cloud_secretmanager_v1 \
                 will contain private keys; keep that target below DEBUG"
            );
        }
        let location = format!("secretmanager://{}/{}", cfg.project, cfg.secret_prefix);
        let backend = |message: String| BundleError::Backend {
            location: location.clone(),
            message,
        };
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(200))
            .with_maximum_delay(Duration::from_secs(5))
            .build()
            .map_err(|e| backend(format!("retry backoff: {e}")))?;
        let mut builder = SecretManagerService::builder()
            .with_retry_policy(
                Aip194Strict
                    .with_attempt_limit(ATTEMPTS)
                    .with_time_limit(CALL_TIMEOUT),
            )
            .with_backoff_policy(backoff)
            .with_attempt_timeout(CALL_TIMEOUT);
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder
                .with_endpoint(endpoint.trim_end_matches('/'))
                .with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                );
        }
        let client = tokio::time::timeout(CALL_TIMEOUT, builder.build())
            .await
            .map_err(|_| {
                backend(format!(
                    "creating the client took more than {CALL_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| backend(format!("cannot create the Secret Manager client: {e}")))?;
        Ok(SecretManagerMirror {
            client,
            project: cfg.project.clone(),
            prefix: cfg.secret_prefix.clone(),
            keep_versions: cfg.keep_versions.max(1),
        })
    }

    /// The secret id certificate `name` is kept in, checked against the service's rules.
    pub fn secret_id(&self, name: &str) -> Result<String, BundleError> {
        let id = format!("{}{name}", self.prefix);
        let valid = !id.is_empty()
            && id.len() <= 255
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(id)
        } else {
            Err(BundleError::Backend {
                location: self.location(),
                message: format!(
                    "{id:?} is not a valid secret id (1 to 255 characters of [A-Za-z0-9_-])"
                ),
            })
        }
    }

    fn secret_name(&self, secret_id: &str) -> String {
        format!("projects/{}/secrets/{secret_id}", self.project)
    }

    fn secret_location(&self, secret_id: &str) -> String {
        format!("secretmanager://{}/{secret_id}", self.project)
    }

    fn version_location(&self, secret_id: &str, version: u64) -> String {
        format!(
            "secretmanager://{}/{secret_id}/versions/{version}",
            self.project
        )
    }

    fn backend(&self, secret_id: &str, e: CallError) -> BundleError {
        BundleError::Backend {
            location: self.secret_location(secret_id),
            message: e.message,
        }
    }

    /// The secret, created (with labels) if it does not exist yet.
    async fn ensure_secret(
        &self,
        secret_id: &str,
        meta: &CertMeta,
    ) -> Result<SmSecret, BundleError> {
        let name = self.secret_name(secret_id);
        match call(
            "GetSecret",
            &name,
            self.client.get_secret().set_name(&name).send(),
        )
        .await
        {
            Ok(secret) => return Ok(secret),
            Err(e) if e.is(Code::NotFound) => {}
            Err(e) => return Err(self.backend(secret_id, e)),
        }
        let parent = format!("projects/{}", self.project);
        let secret = SmSecret::new()
            .set_replication(Replication::new().set_automatic(replication::Automatic::new()))
            .set_labels(desired_labels(&HashMap::new(), meta));
        let created = call(
            "CreateSecret",
            &name,
            self.client
                .create_secret()
                .set_parent(parent)
                .set_secret_id(secret_id)
                .set_secret(secret)
                .send(),
        )
        .await;
        match created {
            Ok(secret) => {
                tracing::info!(secret = %self.secret_location(secret_id), "created secret");
                Ok(secret)
            }
            // Another renewer created it in between: use theirs.
            Err(e) if e.is(Code::AlreadyExists) => call(
                "GetSecret",
                &name,
                self.client.get_secret().set_name(&name).send(),
            )
            .await
            .map_err(|e| self.backend(secret_id, e)),
            Err(e) => Err(self.backend(secret_id, e)),
        }
    }

    /// Point the informational labels at `meta`, keeping labels others have set.
    async fn update_labels(
        &self,
        secret_id: &str,
        secret: &SmSecret,
        meta: &CertMeta,
    ) -> Result<(), BundleError> {
        let wanted = desired_labels(&secret.labels, meta);
        if wanted == secret.labels {
            return Ok(());
        }
        let name = self.secret_name(secret_id);
        match call(
            "UpdateSecret",
            &name,
            self.client
                .update_secret()
                .set_secret(SmSecret::new().set_name(&name).set_labels(wanted))
                .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(["labels"]))
                .send(),
        )
        .await
        {
            Ok(_) => Ok(()),
            // `make deploy` grants version roles only (add, disable, read), not
            // `secrets.update`: the labels are informational, so that is not worth a warning.
            Err(e) if e.is(Code::PermissionDenied) => {
                tracing::debug!(secret = %self.secret_location(secret_id), "no permission to update the secret's labels; skipped");
                Ok(())
            }
            Err(e) => Err(self.backend(secret_id, e)),
        }
    }

    /// Whether `payload` (a stored version) already holds the certificate of `bundle`.
    fn holds(payload: &[u8], bundle: &Bundle) -> bool {
        if payload == bundle.to_combined_pem().expose().as_bytes() {
            return true;
        }
        std::str::from_utf8(payload)
            .ok()
            .and_then(|text| certinfo::split_bundle(text).ok())
            .and_then(|(chain, _)| certinfo::inspect(&chain).ok())
            .is_some_and(|leaf| leaf.serial == bundle.meta.serial)
    }
}

#[async_trait]
impl BundleStore for SecretManagerMirror {
    fn location(&self) -> String {
        format!("secretmanager://{}/{}", self.project, self.prefix)
    }

    async fn publish(&self, bundle: &Bundle) -> Result<(), BundleError> {
        let meta = &bundle.meta;
        let secret_id = self.secret_id(&meta.name)?;
        let payload = bundle.to_combined_pem();
        let data = payload.expose().as_bytes();
        if data.len() > MAX_PAYLOAD {
            return Err(BundleError::Backend {
                location: self.secret_location(&secret_id),
                message: format!(
                    "bundle is {} bytes, Secret Manager takes at most {MAX_PAYLOAD}",
                    data.len()
                ),
            });
        }
        let secret = self.ensure_secret(&secret_id, meta).await?;
        // A current version that does not parse is replaced, not an obstacle.
        let current = match self.fetch_current(&secret_id, false).await {
            Ok(current) => current,
            Err(BundleError::Corrupt { .. }) => None,
            Err(e) => return Err(e),
        };
        match current {
            Some(current) if Self::holds(&current.payload, bundle) => {
                tracing::info!(
                    certificate = %meta.name,
                    serial = %meta.serial,
                    version = current.version,
                    secret = %self.secret_location(&secret_id),
                    "secret already holds this certificate; no version added"
                );
            }
            _ => {
                let parent = self.secret_name(&secret_id);
                let added = call(
                    "AddSecretVersion",
                    &parent,
                    self.client
                        .add_secret_version()
                        .set_parent(&parent)
                        .set_payload(
                            SecretPayload::new()
                                .set_data(bytes::Bytes::copy_from_slice(data))
                                .set_data_crc32c(i64::from(crc32c::crc32c(data))),
                        )
                        .send(),
                )
                .await
                .map_err(|e| self.backend(&secret_id, e))?;
                tracing::info!(
                    certificate = %meta.name,
                    serial = %meta.serial,
                    version = version_number(&added.name).unwrap_or_default(),
                    secret = %self.secret_location(&secret_id),
                    "published certificate to Secret Manager"
                );
            }
        }
        // The bundle is current from here on; what follows is housekeeping.
        if let Err(e) = self.update_labels(&secret_id, &secret, meta).await {
            tracing::warn!(certificate = %meta.name, error = %e, "could not update the secret's labels");
        }
        match self.prune(&secret_id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                certificate = %meta.name,
                disabled = n,
                keep = self.keep_versions,
                secret = %self.secret_location(&secret_id),
                "disabled old secret versions"
            ),
            Err(e) => {
                tracing::warn!(certificate = %meta.name, error = %e, "could not disable old secret versions")
            }
        }
        Ok(())
    }

    async fn current(&self, name: &str) -> Result<Option<Bundle>, BundleError> {
        let secret_id = self.secret_id(name)?;
        let Some(fetched) = self.fetch_current(&secret_id, true).await? else {
            return Ok(None);
        };
        let corrupt = |message: String| BundleError::Corrupt {
            object: self.version_location(&secret_id, fetched.version),
            message,
        };
        let text = std::str::from_utf8(&fetched.payload)
            .map_err(|_| corrupt("payload is not UTF-8 PEM".into()))?;
        let (chain, key) = certinfo::split_bundle(text).map_err(|e| corrupt(e.to_string()))?;
        let issued_at = fetched.create_time.unwrap_or_else(OffsetDateTime::now_utc);
        let bundle = Bundle::from_pem(name, chain, Secret::new(key), issued_at)
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(Some(bundle))
    }

    async fn current_meta(&self, name: &str) -> Result<Option<CertMeta>, BundleError> {
        Ok(self.current(name).await?.map(|b| b.meta))
    }
}

/// `existing` with our labels set for `meta`.
fn desired_labels(existing: &HashMap<String, String>, meta: &CertMeta) -> HashMap<String, String> {
    let mut labels = existing.clone();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_CERTIFICATE.into(), label_value(&meta.name));
    labels.insert(LABEL_SERIAL.into(), label_value(&meta.serial));
    labels.insert(
        LABEL_NOT_AFTER.into(),
        meta.not_after.unix_timestamp().to_string(),
    );
    labels
}

/// A label value the service accepts: lowercase `[a-z0-9_-]`, at most 63 characters.
pub fn label_value(s: &str) -> String {
    s.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_sanitized() {
        assert_eq!(label_value("App.Example_1-x"), "app_example_1-x");
        assert_eq!(label_value("é"), "_");
        assert_eq!(label_value(&"a".repeat(100)).len(), 63);
        assert_eq!(label_value(""), "");
    }
}
