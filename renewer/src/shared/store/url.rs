//! `store.url`: where the store lives. Parsed once, when the config is read, so that code
//! holding a [`StoreUrl`] never meets a bad one.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::check_key;

/// Where the store lives: `file:///absolute/dir` or `gs://bucket/optional/prefix`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum StoreUrl {
    /// A local directory (the embedded setup, tests).
    File(PathBuf),
    /// A Cloud Storage bucket, and a prefix inside it (no trailing `/`, may be empty).
    Gcs {
        /// The bucket name.
        bucket: String,
        /// Keys are stored under `<prefix>/`; empty for the bucket's root.
        prefix: String,
    },
}

/// Why a `store.url` was refused: the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadStoreUrl(String);

impl FromStr for StoreUrl {
    type Err = BadStoreUrl;

    fn from_str(url: &str) -> Result<StoreUrl, BadStoreUrl> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(BadStoreUrl(format!(
                    "{url:?}: a file store needs an absolute path (file:///var/lib/acme-edge)"
                )));
            }
            return Ok(StoreUrl::File(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // Cloud Storage bucket naming rules (no dotted names over 63 characters here).
            let ok_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
                })
                && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
                && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !ok_bucket {
                return Err(BadStoreUrl(format!(
                    "{bucket:?} is not a valid bucket name"
                )));
            }
            let prefix = prefix.trim_end_matches('/');
            if !prefix.is_empty() {
                check_key(prefix).map_err(|m| BadStoreUrl(format!("prefix: {m}")))?;
            }
            return Ok(StoreUrl::Gcs {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        Err(BadStoreUrl(format!(
            "{url:?}: expected file:///absolute/dir or gs://bucket/prefix"
        )))
    }
}

impl TryFrom<String> for StoreUrl {
    type Error = BadStoreUrl;

    fn try_from(url: String) -> Result<StoreUrl, BadStoreUrl> {
        url.parse()
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::File(dir) => write!(f, "file://{}", dir.display()),
            StoreUrl::Gcs { bucket, prefix } if prefix.is_empty() => write!(f, "gs://{bucket}"),
            StoreUrl::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
        }
    }
}

impl From<StoreUrl> for String {
    fn from(url: StoreUrl) -> String {
        url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        assert!("file://relative".parse::<StoreUrl>().is_err());
        assert!("gs://UPPER".parse::<StoreUrl>().is_err());
        assert!("gs://bucket/../x".parse::<StoreUrl>().is_err());
        assert!("s3://x".parse::<StoreUrl>().is_err());
        let url: StoreUrl = "gs://bucket/a/b/".parse().expect("bucket and prefix");
        assert_eq!(
            url,
            StoreUrl::Gcs {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(url.to_string(), "gs://bucket/a/b");
        for text in ["gs://bucket", "file:///var/lib/acme-edge"] {
            assert_eq!(text.parse::<StoreUrl>().expect(text).to_string(), text);
        }
    }
}
