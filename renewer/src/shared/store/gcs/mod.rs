//! The store in a Cloud Storage bucket, under an optional key prefix: key `k` is object
//! `<prefix>/k` (or `k` when the prefix is empty), so `gs://bucket/acme` holds
//! `acme/certs/app/current.json`.
//!
//! Compare-and-swap is the service's own: every conditional write sends `ifGenerationMatch`
//! (`0` for "does not exist"), and the object generation is the [`Generation`].
//!
//! # Which client does what, and why
//!
//! Every request this store makes in production is also made by the integration tests against
//! fake-gcs-server (`tests/tests/gcs_store.rs`), so the choice of operations follows what both
//! the real service and the emulator speak:
//!
//! * **get**: `Storage::read_object` of the official `google-cloud-storage` crate (JSON API media
//!   download). The generation comes from the same response (`x-goog-generation`), so content
//!   and generation always belong together.
//! * **put**: `Storage::write_object(..).set_if_generation_match(..).send_buffered()`, with the
//!   resumable-upload threshold raised to "never": every write is one multipart upload that
//!   carries its precondition. (fake-gcs-server honours `ifGenerationMatch` on multipart uploads
//!   only; a single request is also the cheapest way to write objects this small.)
//! * **delete**: a plain JSON API `DELETE /storage/v1/b/<bucket>/o/<object>?ifGenerationMatch=N`
//!   with reqwest and a bearer token from the same `google-cloud-auth` credentials. The crate
//!   only deletes through the gRPC `StorageControl` service, which fake-gcs-server does not
//!   speak, so a crate-based delete could never be tested here.
//!
//! The client library retries transient failures of conditional writes. If a write did reach
//! the service but its answer was lost, the retry meets its own result and gets 412: the caller
//! sees `PreconditionFailed` for a write that won. The lease (`crate::cloud::lock`) reads the
//! object back and recognises its own owner token, so it proceeds instead of waiting for itself.
//!
//! A conditional delete first reads the object (the `get` path) and refuses a stale generation
//! itself, then sends the `DELETE` with `ifGenerationMatch`, which is what makes it atomic on
//! the real service (a writer that slips in between gets 412). The read is there because
//! fake-gcs-server ignores every precondition on `DELETE` (as of v1.54/v1.55): without it the
//! emulator could not show a stale delete being refused.
//!
//! # Credentials, endpoints, limits
//!
//! With an endpoint (the `endpoint` argument, else `$STORAGE_EMULATOR_HOST`) requests go there
//! without credentials (an emulator); otherwise to `https://storage.googleapis.com` with
//! Application Default Credentials. Every request is bounded by [`REQUEST_TIMEOUT`], retries
//! included, so an unreachable endpoint fails instead of hanging.
//!
//! Object content is never logged nor put in an error. Secret objects are written with
//! `Cache-Control: no-store`; access to them is the bucket's IAM, nothing per object.
//!
//! Here: the store and the operations the client library makes (get, put); `json_api`: the
//! requests it makes through reqwest (delete, list); `message`: errors as one short line.

mod json_api;
mod message;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_auth::credentials::{anonymous, Builder as CredentialsBuilder, Credentials};
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_storage::client::Storage;
use google_cloud_storage::retry_policy::RetryableErrors;

use self::json_api::DeleteOutcome;
use self::message::{describe, one_line};
use super::{
    check_key, Generation, Listed, Object, ObjectStore, Precondition, Sensitivity, StoreError,
};

/// Upper bound of one store operation (one request and its retries).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The Cloud Storage JSON API.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// The variable the Google client libraries read to find a Cloud Storage emulator.
pub const EMULATOR_ENV: &str = "STORAGE_EMULATOR_HOST";

/// Attempts per operation for transient failures (connection refused, 408, 429, 5xx).
const ATTEMPTS: u32 = 3;
/// Time budget of the crate's retry loop; kept under [`REQUEST_TIMEOUT`] so its own error
/// (more precise than "timed out") is what normally surfaces.
const RETRY_BUDGET: Duration = Duration::from_secs(25);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The store in a Cloud Storage bucket (see the module documentation).
#[derive(Clone)]
pub struct GcsStore {
    bucket: String,
    prefix: String,
    location: String,
    /// JSON API base URL without a trailing slash.
    endpoint: String,
    storage: Storage,
    http: reqwest::Client,
    credentials: Credentials,
}

impl fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsStore")
            .field("location", &self.location)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl GcsStore {
    /// A store on `gs://<bucket>/<prefix>` (`prefix` may be empty; slashes around it are
    /// ignored). `endpoint` (`http://127.0.0.1:4443`, or `host:port`) selects an emulator and
    /// anonymous requests; `None` falls back to `$STORAGE_EMULATOR_HOST`, then to the real
    /// service with Application Default Credentials. Nothing is sent yet: a missing bucket or
    /// missing permissions show up on the first operation.
    pub async fn new(
        bucket: &str,
        prefix: &str,
        endpoint: Option<&str>,
    ) -> Result<GcsStore, StoreError> {
        let prefix = prefix.trim_matches('/');
        let location = if prefix.is_empty() {
            format!("gs://{bucket}")
        } else {
            format!("gs://{bucket}/{prefix}")
        };
        let fail = |message: String| StoreError::backend(&location, "", message);
        if bucket.is_empty() || bucket.contains('/') {
            return Err(fail(format!("{bucket:?} is not a bucket name")));
        }
        if !prefix.is_empty() {
            check_key(prefix).map_err(|m| fail(format!("prefix: {m}")))?;
        }
        let from_env = std::env::var(EMULATOR_ENV).ok();
        let emulator = resolve_endpoint(endpoint, from_env.as_deref());

        // reqwest (through the google crates and here) is built without a crypto provider; the
        // process-wide default is ring. A no-op when someone installed one already.
        super::install_crypto_provider();

        let credentials = match &emulator {
            Some(_) => anonymous::Builder::new().build(),
            None => CredentialsBuilder::default()
                .build()
                .map_err(|e| fail(format!("Application Default Credentials: {}", one_line(&e))))?,
        };
        let endpoint = emulator.unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let storage = Storage::builder()
            .with_endpoint(endpoint.clone())
            .with_credentials(credentials.clone())
            .with_retry_policy(
                RetryableErrors
                    .with_attempt_limit(ATTEMPTS)
                    .with_time_limit(RETRY_BUDGET),
            )
            // Single-shot (multipart) uploads only: see the module documentation.
            .with_resumable_upload_threshold(usize::MAX)
            .build()
            .await
            .map_err(|e| fail(format!("Cloud Storage client: {}", one_line(&e))))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| fail(format!("HTTP client: {}", one_line(&e))))?;
        Ok(GcsStore {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            location,
            endpoint,
            storage,
            http,
            credentials,
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix, without slashes around it; empty for the bucket root.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The JSON API base URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The object name of `key` (checked).
    pub fn object_name(&self, key: &str) -> Result<String, StoreError> {
        check_key(key).map_err(|m| self.err(key, m))?;
        Ok(if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }

    fn bucket_resource(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket)
    }

    fn err(&self, key: &str, message: impl Into<String>) -> StoreError {
        StoreError::backend(&self.location, key, message)
    }

    fn precondition_failed(&self, key: &str) -> StoreError {
        StoreError::precondition_failed(&self.location, key)
    }

    /// Run `op` within [`REQUEST_TIMEOUT`].
    async fn bounded<T>(
        &self,
        key: &str,
        what: &str,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, op).await {
            Ok(result) => result,
            Err(_) => Err(self.err(
                key,
                format!(
                    "{what}: no answer from {} within {}s",
                    self.endpoint,
                    REQUEST_TIMEOUT.as_secs()
                ),
            )),
        }
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    fn location(&self) -> &str {
        &self.location
    }

    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        let name = self.object_name(key)?;
        self.bounded(key, "read", async {
            let sent = self
                .storage
                .read_object(self.bucket_resource(), name)
                .send()
                .await;
            let mut response = match sent {
                Ok(r) => r,
                Err(e) if e.http_status_code() == Some(404) => return Ok(None),
                Err(e) => return Err(self.err(key, format!("read: {}", describe(&e)))),
            };
            let generation = response.object().generation;
            let mut data = Vec::new();
            while let Some(chunk) = response.next().await {
                let chunk = chunk.map_err(|e| self.err(key, format!("read: {}", describe(&e))))?;
                data.extend_from_slice(&chunk);
            }
            Ok(Some(Object {
                data,
                generation: Generation(generation.to_string()),
            }))
        })
        .await
    }

    async fn put(
        &self,
        key: &str,
        data: &[u8],
        precondition: Precondition,
        sensitivity: Sensitivity,
    ) -> Result<Generation, StoreError> {
        let name = self.object_name(key)?;
        let if_generation_match = match &precondition {
            Precondition::None => None,
            Precondition::DoesNotExist => Some(0),
            Precondition::GenerationMatches(g) => match parse_generation(g) {
                Some(g) => Some(g),
                // Not a Cloud Storage generation: no object can be at it.
                None => return Err(self.precondition_failed(key)),
            },
        };
        let mut request = self
            .storage
            .write_object(
                self.bucket_resource(),
                name,
                bytes::Bytes::copy_from_slice(data),
            )
            .set_content_type(content_type(key));
        if sensitivity == Sensitivity::Secret {
            request = request.set_cache_control("no-store");
        }
        request = match if_generation_match {
            Some(g) => request.set_if_generation_match(g),
            // Writing the same whole object again is harmless, so an unconditional write may be
            // retried (the crate only retries conditional ones by default).
            None => request.with_idempotency(true),
        };
        self.bounded(key, "write", async {
            match request.send_buffered().await {
                Ok(object) => Ok(Generation(object.generation.to_string())),
                Err(e) if e.http_status_code() == Some(412) => Err(self.precondition_failed(key)),
                Err(e) => Err(self.err(key, format!("write: {}", describe(&e)))),
            }
        })
        .await
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), StoreError> {
        let name = self.object_name(key)?;
        match precondition {
            Precondition::None => match self.delete_request(key, &name, None).await? {
                DeleteOutcome::Deleted | DeleteOutcome::Missing => Ok(()),
                DeleteOutcome::PreconditionFailed => Err(self.precondition_failed(key)),
            },
            // "Delete only if it does not exist" deletes nothing: it only reports whether the
            // object is there, like the file store.
            Precondition::DoesNotExist => match self.get(key).await? {
                None => Ok(()),
                Some(_) => Err(self.precondition_failed(key)),
            },
            Precondition::GenerationMatches(expected) => {
                let Some(generation) = parse_generation(&expected) else {
                    return Err(self.precondition_failed(key));
                };
                // See the module documentation: this read is what the emulator can check; the
                // `ifGenerationMatch` below is what makes the delete atomic on the service.
                match self.get(key).await? {
                    Some(current) if parse_generation(&current.generation) == Some(generation) => {}
                    _ => return Err(self.precondition_failed(key)),
                }
                match self.delete_request(key, &name, Some(generation)).await? {
                    DeleteOutcome::Deleted => Ok(()),
                    DeleteOutcome::Missing | DeleteOutcome::PreconditionFailed => {
                        Err(self.precondition_failed(key))
                    }
                }
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        self.list_objects(prefix).await
    }
}

/// The endpoint to use, if any: `explicit`, else the emulator variable's value. A bare
/// `host:port` (the usual form of `STORAGE_EMULATOR_HOST`) means plain HTTP.
fn resolve_endpoint(explicit: Option<&str>, from_env: Option<&str>) -> Option<String> {
    let raw = explicit
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .or_else(|| from_env.map(str::trim).filter(|e| !e.is_empty()))?;
    let url = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    Some(url.trim_end_matches('/').to_string())
}

/// A Cloud Storage generation: a positive integer. `0` is not one (as a precondition it would
/// mean "does not exist").
fn parse_generation(g: &Generation) -> Option<i64> {
    g.0.parse::<i64>().ok().filter(|g| *g > 0)
}

/// The `Content-Type` an object is stored with, by the extension of its key's last segment.
fn content_type(key: &str) -> &'static str {
    let name = key.rsplit('/').next().unwrap_or(key);
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("json") => "application/json",
        Some("pem") => "application/x-pem-file",
        _ => "text/plain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_resolved() {
        assert_eq!(resolve_endpoint(None, None), None);
        assert_eq!(resolve_endpoint(Some(""), Some(" ")), None);
        assert_eq!(
            resolve_endpoint(Some("http://127.0.0.1:4443/"), Some("other:1")).as_deref(),
            Some("http://127.0.0.1:4443")
        );
        assert_eq!(
            resolve_endpoint(None, Some("localhost:4443")).as_deref(),
            Some("http://localhost:4443")
        );
        assert_eq!(
            resolve_endpoint(None, Some("https://gcs.example:8443")).as_deref(),
            Some("https://gcs.example:8443")
        );
    }

    #[test]
    fn generations_are_positive_integers() {
        let g = |s: &str| parse_generation(&Generation(s.into()));
        assert_eq!(g("1795299567383460"), Some(1_795_299_567_383_460));
        assert_eq!(g("0"), None);
        assert_eq!(g("-3"), None);
        assert_eq!(g("e3b0c44298fc1c14"), None);
        assert_eq!(g(""), None);
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("certs/app/current.json"), "application/json");
        assert_eq!(
            content_type("certs/app/1a/privkey.pem"),
            "application/x-pem-file"
        );
        assert_eq!(content_type("acme-challenge/tok.en"), "text/plain");
        assert_eq!(content_type("locks/app"), "text/plain");
        assert_eq!(content_type("a.json/b"), "text/plain");
    }
}
