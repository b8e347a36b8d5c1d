//! The requests `google-cloud-storage` cannot make against both the service and the emulator
//! (see the documentation of [`super`]): `DELETE` and `objects.list` through the JSON API, with
//! reqwest and a bearer token from the store's credentials. Transient failures are retried
//! ([`super::ATTEMPTS`]); everything stays within [`super::REQUEST_TIMEOUT`].

use std::time::Duration;

use google_cloud_auth::credentials::CacheableResource;

use super::message::{error_message, one_line, with_detail};
use super::{GcsStore, ATTEMPTS};
use crate::shared::store::{Listed, StoreError};

impl GcsStore {
    /// `DELETE /storage/v1/b/<bucket>/o/<object>[?ifGenerationMatch=N]` through the JSON API.
    pub(super) async fn delete_request(
        &self,
        key: &str,
        name: &str,
        if_generation_match: Option<i64>,
    ) -> Result<DeleteOutcome, StoreError> {
        let mut url = self.objects_url(key, Some(name))?;
        if let Some(g) = if_generation_match {
            url.set_query(Some(&format!("ifGenerationMatch={g}")));
        }
        self.bounded(key, "delete", async {
            let mut attempt = 1;
            loop {
                let retry = match self
                    .send_attempt(reqwest::Method::DELETE, url.clone())
                    .await
                {
                    Ok((status, body)) => match delete_outcome(status) {
                        Some(outcome) => return Ok(outcome),
                        None if attempt < ATTEMPTS && is_retryable_status(status) => {
                            format!("HTTP {status}")
                        }
                        None => {
                            return Err(
                                self.err(key, format!("delete: {}", http_error(status, &body)))
                            )
                        }
                    },
                    Err(Attempt::Transient(message)) if attempt < ATTEMPTS => message,
                    Err(Attempt::Transient(message) | Attempt::Fatal(message)) => {
                        return Err(self.err(key, format!("delete: {message}")))
                    }
                };
                tracing::debug!(
                    location = %self.location,
                    key,
                    attempt,
                    error = %retry,
                    "retrying Cloud Storage delete"
                );
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
                attempt += 1;
            }
        })
        .await
    }

    /// Every object under `prefix` (the store's key prefix added), through the JSON API's
    /// `GET /storage/v1/b/<bucket>/o?prefix=…` page by page.
    pub(super) async fn list_objects(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let full = if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let url = self.objects_url(prefix, None)?;
        let mut found = Vec::new();
        let mut page: Option<String> = None;
        // A bound on pages, so a misbehaving server cannot keep a pass here forever.
        for _ in 0..100 {
            let mut this = url.clone();
            {
                let mut q = this.query_pairs_mut();
                q.append_pair("prefix", &full);
                q.append_pair("fields", "items(name,updated),nextPageToken");
                if let Some(token) = &page {
                    q.append_pair("pageToken", token);
                }
            }
            let (status, body) = self
                .bounded(prefix, "list", async {
                    self.send_attempt(reqwest::Method::GET, this).await.map_err(
                        |(Attempt::Transient(m) | Attempt::Fatal(m))| {
                            self.err(prefix, format!("list: {m}"))
                        },
                    )
                })
                .await?;
            if status != 200 {
                return Err(self.err(prefix, format!("list: {}", http_error(status, &body))));
            }
            let listing: ListPage = serde_json::from_slice(&body)
                .map_err(|e| self.err(prefix, format!("list: unexpected answer: {e}")))?;
            for item in listing.items {
                let Some(key) = item.name.strip_prefix(&strip) else {
                    continue;
                };
                let updated = item
                    .updated
                    .as_deref()
                    .and_then(|t| {
                        time::OffsetDateTime::parse(
                            t,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                    })
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                found.push(Listed {
                    key: key.to_string(),
                    updated,
                });
            }
            match listing.next_page_token {
                Some(t) if !t.is_empty() => page = Some(t),
                _ => return Ok(found),
            }
        }
        Err(self.err(prefix, "list: more than 100 pages"))
    }

    /// `<endpoint>/storage/v1/b/<bucket>/o`, and `/<object>` when given. Each segment is
    /// percent-encoded, so an object name's `/` becomes `%2F`. `key` names the operation's
    /// key in errors.
    fn objects_url(&self, key: &str, object: Option<&str>) -> Result<reqwest::Url, StoreError> {
        let mut url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| self.err(key, format!("endpoint {:?}: {e}", self.endpoint)))?;
        url.path_segments_mut()
            .map_err(|()| {
                self.err(
                    key,
                    format!("endpoint {:?} cannot be a base", self.endpoint),
                )
            })?
            .pop_if_empty()
            .extend(["storage", "v1", "b", &self.bucket, "o"])
            .extend(object);
        Ok(url)
    }

    /// One request with the store's credentials: the status and the body, or why there was
    /// no answer (and whether another attempt may help).
    async fn send_attempt(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
    ) -> Result<(u16, bytes::Bytes), Attempt> {
        let headers = match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => data,
            Ok(CacheableResource::NotModified) => {
                return Err(Attempt::Fatal(
                    "credentials returned no headers (NotModified without an entity tag)".into(),
                ))
            }
            Err(e) if e.is_transient() => {
                return Err(Attempt::Transient(format!("credentials: {}", one_line(&e))))
            }
            Err(e) => return Err(Attempt::Fatal(format!("credentials: {}", one_line(&e)))),
        };
        let response = self
            .http
            .request(method, url)
            .headers(headers)
            .send()
            .await
            .map_err(|e| {
                let message = one_line(&e);
                // Connection failures and timeouts are worth another attempt.
                if e.is_connect() || e.is_timeout() || e.is_request() {
                    Attempt::Transient(message)
                } else {
                    Attempt::Fatal(message)
                }
            })?;
        let status = response.status().as_u16();
        // The body only matters for errors (a JSON error document); a failure to read it is
        // not a reason to fail the operation.
        let body = response.bytes().await.unwrap_or_default();
        Ok((status, body))
    }
}

/// `HTTP <status>`, and the service's message when the body has one.
fn http_error(status: u16, body: &[u8]) -> String {
    with_detail(format!("HTTP {status}"), &error_message(body))
}

/// What a `DELETE` answer means for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeleteOutcome {
    /// 2xx: the object is gone.
    Deleted,
    /// 404: there was no such object.
    Missing,
    /// 412: the object is not at the generation the delete was conditional on.
    PreconditionFailed,
}

/// The outcome of a `DELETE` answer, `None` for an error.
fn delete_outcome(status: u16) -> Option<DeleteOutcome> {
    match status {
        200..=299 => Some(DeleteOutcome::Deleted),
        404 => Some(DeleteOutcome::Missing),
        412 => Some(DeleteOutcome::PreconditionFailed),
        _ => None,
    }
}

/// Answers worth another attempt: timeout, too many requests, server errors.
fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// Why a request got no answer.
enum Attempt {
    /// Worth another attempt (connection, timeout, credentials refresh).
    Transient(String),
    /// Not worth another attempt.
    Fatal(String),
}

/// One page of `objects.list`.
#[derive(serde::Deserialize)]
struct ListPage {
    #[serde(default)]
    items: Vec<ListItem>,
    #[serde(default, rename = "nextPageToken")]
    next_page_token: Option<String>,
}

#[derive(serde::Deserialize)]
struct ListItem {
    name: String,
    #[serde(default)]
    updated: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_answers_are_classified() {
        assert_eq!(delete_outcome(204), Some(DeleteOutcome::Deleted));
        assert_eq!(delete_outcome(200), Some(DeleteOutcome::Deleted));
        assert_eq!(delete_outcome(404), Some(DeleteOutcome::Missing));
        assert_eq!(delete_outcome(412), Some(DeleteOutcome::PreconditionFailed));
        assert_eq!(delete_outcome(403), None);
        assert_eq!(delete_outcome(503), None);
        assert!(is_retryable_status(503) && is_retryable_status(429));
        assert!(!is_retryable_status(403) && !is_retryable_status(412));
    }
}
