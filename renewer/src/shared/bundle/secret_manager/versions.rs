//! The versions of a certificate's secret: which one is current (the newest *enabled* one,
//! see the documentation of [`super`]), and disabling those beyond `keep_versions`.

use std::fmt;

use google_cloud_gax::error::rpc::Code;
use google_cloud_secretmanager_v1::model::{secret_version, AccessSecretVersionResponse};
use time::OffsetDateTime;

use super::call::{call, CallError};
use super::{SecretManagerMirror, MAX_PAGES};
use crate::shared::bundle::BundleError;

/// The version a read resolved to.
pub(super) struct Fetched {
    /// The version number.
    pub(super) version: u64,
    /// Its payload: the chain, then the key, PEM.
    pub(super) payload: bytes::Bytes,
    /// When it was added, when asked for.
    pub(super) create_time: Option<OffsetDateTime>,
}

impl SecretManagerMirror {
    /// The resource name of version `version` (a number, or `latest`) of the secret.
    fn version_name(&self, secret_id: &str, version: impl fmt::Display) -> String {
        format!("{}/versions/{version}", self.secret_name(secret_id))
    }

    /// One version's payload (`name` from [`Self::version_name`]).
    async fn access(&self, name: &str) -> Result<AccessSecretVersionResponse, CallError> {
        call(
            "AccessSecretVersion",
            name,
            self.client.access_secret_version().set_name(name).send(),
        )
        .await
    }

    /// The newest enabled version and its payload, or `None` when the secret does not exist or
    /// has no enabled version. `with_time` also fetches the version's creation time.
    pub(super) async fn fetch_current(
        &self,
        secret_id: &str,
        with_time: bool,
    ) -> Result<Option<Fetched>, BundleError> {
        let latest = self.version_name(secret_id, "latest");
        let accessed = self.access(&latest).await;
        let (version, payload, create_time) = match accessed {
            Ok(resp) => {
                let version = version_number(&resp.name).ok_or_else(|| BundleError::Backend {
                    location: self.secret_location(secret_id),
                    message: format!(
                        "AccessSecretVersion {latest}: answer names no version ({:?})",
                        resp.name
                    ),
                })?;
                (version, resp.payload, None)
            }
            // No such secret, or a secret without versions.
            Err(e) if e.is(Code::NotFound) => return Ok(None),
            // The newest version is disabled (or destroyed): an operator rolled back.
            Err(e) if e.is(Code::FailedPrecondition) => {
                let enabled = self.enabled_versions(secret_id).await?;
                let Some((version, create_time)) = enabled.into_iter().next() else {
                    return Ok(None);
                };
                let resp = self
                    .access(&self.version_name(secret_id, version))
                    .await
                    .map_err(|e| self.backend(secret_id, e))?;
                (version, resp.payload, Some(create_time))
            }
            Err(e) => return Err(self.backend(secret_id, e)),
        };
        let corrupt = |message: String| BundleError::Corrupt {
            object: self.version_location(secret_id, version),
            message,
        };
        let payload = payload.ok_or_else(|| corrupt("the version has no payload".into()))?;
        if let Some(expected) = payload.data_crc32c {
            let actual = i64::from(crc32c::crc32c(&payload.data));
            if actual != expected {
                return Err(corrupt(format!(
                    "payload CRC32C is {actual}, the service says {expected}"
                )));
            }
        }
        let create_time = match create_time {
            Some(t) => Some(t),
            None if with_time => {
                let name = self.version_name(secret_id, version);
                let meta = call(
                    "GetSecretVersion",
                    &name,
                    self.client.get_secret_version().set_name(&name).send(),
                )
                .await
                .map_err(|e| self.backend(secret_id, e))?;
                meta.create_time.as_ref().and_then(to_offset_date_time)
            }
            None => None,
        };
        Ok(Some(Fetched {
            version,
            payload: payload.data,
            create_time,
        }))
    }

    /// Enabled versions, newest first, with their creation time (epoch when absent).
    async fn enabled_versions(
        &self,
        secret_id: &str,
    ) -> Result<Vec<(u64, OffsetDateTime)>, BundleError> {
        let parent = self.secret_name(secret_id);
        let mut found = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let page = call(
                "ListSecretVersions",
                &parent,
                self.client
                    .list_secret_versions()
                    .set_parent(&parent)
                    .set_filter("state:ENABLED")
                    .set_page_token(page_token.clone())
                    .send(),
            )
            .await
            .map_err(|e| self.backend(secret_id, e))?;
            for v in &page.versions {
                // The filter already asks for enabled versions; check anyway.
                if v.state != secret_version::State::Enabled {
                    continue;
                }
                if let Some(n) = version_number(&v.name) {
                    let created = v
                        .create_time
                        .as_ref()
                        .and_then(to_offset_date_time)
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                    found.push((n, created));
                }
            }
            if page.next_page_token.is_empty() {
                found.sort_by_key(|v| std::cmp::Reverse(v.0));
                found.dedup_by_key(|v| v.0);
                return Ok(found);
            }
            page_token = page.next_page_token;
        }
        Err(BundleError::Backend {
            location: self.secret_location(secret_id),
            message: format!("ListSecretVersions {parent}: more than {MAX_PAGES} pages"),
        })
    }

    /// Disable enabled versions beyond the `keep_versions` newest. Returns how many.
    pub(super) async fn prune(&self, secret_id: &str) -> Result<usize, BundleError> {
        let enabled = self.enabled_versions(secret_id).await?;
        let keep = usize::try_from(self.keep_versions).unwrap_or(usize::MAX);
        let mut disabled = 0;
        for (version, _) in enabled.iter().skip(keep) {
            let name = self.version_name(secret_id, version);
            match call(
                "DisableSecretVersion",
                &name,
                self.client.disable_secret_version().set_name(&name).send(),
            )
            .await
            {
                Ok(_) => disabled += 1,
                // Disabled or destroyed by someone else meanwhile: nothing left to do.
                Err(e) if e.is(Code::FailedPrecondition) || e.is(Code::NotFound) => {}
                Err(e) => return Err(self.backend(secret_id, e)),
            }
        }
        Ok(disabled)
    }
}

/// `projects/p/secrets/s/versions/7` → 7. The service answers with the project *number* in
/// names, so only the last segment is used.
pub(super) fn version_number(name: &str) -> Option<u64> {
    name.rsplit_once("/versions/")?.1.parse().ok()
}

/// A protobuf timestamp as a time; `None` when it is out of range.
fn to_offset_date_time(t: &google_cloud_wkt::Timestamp) -> Option<OffsetDateTime> {
    let nanos = i128::from(t.seconds()) * 1_000_000_000 + i128::from(t.nanos());
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_come_from_the_last_segment() {
        assert_eq!(version_number("projects/123/secrets/s/versions/7"), Some(7));
        assert_eq!(version_number("projects/p/secrets/s/versions/latest"), None);
        assert_eq!(version_number("projects/p/secrets/s"), None);
        assert_eq!(version_number(""), None);
    }

    #[test]
    fn timestamps_convert() {
        let t = google_cloud_wkt::Timestamp::new(1_700_000_000, 5).expect("timestamp");
        let dt = to_offset_date_time(&t).expect("in range");
        assert_eq!(dt.unix_timestamp(), 1_700_000_000);
        assert_eq!(dt.nanosecond(), 5);
    }
}
