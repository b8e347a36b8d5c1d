//! `certs/<name>/order.json`: the order a renewer is driving, so that no issuance is ever
//! thrown away.
//!
//! Let's Encrypt allows 5 duplicate certificates per week per set of names. An order that was
//! finalized but whose answer was lost (a bad nonce, a reset connection, a killed process) may
//! already have produced a certificate; ordering again would spend a second issuance on the
//! same names. So the order URL is recorded as soon as the CA accepts the order, the new
//! certificate key is recorded *before* the order is finalized, and every retry — in the same
//! run or the next one — resumes that order (RFC 8555 §7.1.3: POST-as-GET the order URL,
//! then finish what its status says is left) instead of placing a new one. Only an order the
//! CA calls `invalid`, or cannot find, is replaced.
//!
//! The record also lists the challenge answers published for the order, so a pass can remove
//! the ones a killed run left behind.
//!
//! The object is secret (it holds the certificate key until the certificate is stored) and is
//! removed once the certificate is current.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::shared::bundle::Secret;
use crate::shared::config::KeyType;
use crate::shared::store::{keys, Precondition, Sensitivity, SharedStore, StoreError};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// The order's URL at the CA.
    pub url: String,
    /// The names ordered, sorted (an order for other names is never resumed).
    pub domains: Vec<String>,
    pub key_type: KeyType,
    #[serde(with = "time::serde::rfc3339")]
    pub placed_at: OffsetDateTime,
    /// HTTP-01 tokens whose answers were published for this order.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// The certificate key (PEM), written before the order is finalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
    /// DNS-01 TXT values published for this order (record name → values), so they are
    /// removed whatever ends the order, also by a later pass after a killed run.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dns_records: crate::cloud::dns01::ChallengeRecords,
    /// The directory URL of the CA the order was placed with (absent in records written
    /// before CA fallback existed: those belong to the primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
}

impl std::fmt::Debug for InFlight {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("url", &self.url)
            .field("domains", &self.domains)
            .field("key_type", &self.key_type)
            .field("placed_at", &self.placed_at)
            .field("tokens", &self.tokens)
            .field("dns_records", &self.dns_records)
            .field("directory", &self.directory)
            .field("key", &self.key_pem.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl InFlight {
    /// A record of the order at `url`, placed with the CA at `directory` at `now`.
    pub fn new(
        url: &str,
        domains: &[String],
        key_type: KeyType,
        now: OffsetDateTime,
        directory: &str,
    ) -> Self {
        InFlight {
            url: url.to_string(),
            domains: domains.to_vec(),
            key_type,
            placed_at: now,
            tokens: Vec::new(),
            key_pem: None,
            dns_records: Default::default(),
            directory: Some(directory.to_string()),
        }
    }

    /// Whether this record is an order for exactly what is wanted now, at this CA (an order
    /// at another CA is not this CA's to resume: its URL means nothing here).
    pub fn matches(&self, domains: &[String], key_type: KeyType, directory: &str) -> bool {
        self.domains == domains
            && self.key_type == key_type
            && self.directory.as_deref().is_none_or(|d| d == directory)
    }

    pub fn key(&self) -> Option<Secret> {
        self.key_pem.clone().map(Secret::new)
    }
}

/// The record of `name`'s order in flight, if any. An unreadable record is treated as absent
/// (logged): the worst case is one new order, never a wrong certificate.
pub async fn load(store: &SharedStore, name: &str) -> Result<Option<InFlight>, StoreError> {
    let key = keys::order(name);
    let Some(obj) = store.get(&key).await? else {
        return Ok(None);
    };
    match serde_json::from_slice(&obj.data) {
        Ok(rec) => Ok(Some(rec)),
        Err(e) => {
            tracing::warn!(object = %format!("{}/{key}", store.location()), error = %e, "ignoring an unreadable order record");
            Ok(None)
        }
    }
}

pub async fn save(store: &SharedStore, name: &str, rec: &InFlight) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(rec).unwrap_or_default();
    store
        .put(
            &keys::order(name),
            &json,
            Precondition::None,
            Sensitivity::Secret,
        )
        .await
        .map(|_| ())
}

/// Delete the challenge answers `rec` lists; the tokens whose answer could not be deleted
/// stay listed (logged). Returns how many were removed. The record itself is not saved.
pub async fn remove_answers(store: &SharedStore, rec: &mut InFlight) -> usize {
    let before = rec.tokens.len();
    let mut left = Vec::new();
    for token in rec.tokens.drain(..) {
        if let Err(e) = store
            .delete(&keys::challenge(&token), Precondition::None)
            .await
        {
            tracing::warn!(error = %e, "could not remove a challenge answer");
            left.push(token);
        }
    }
    rec.tokens = left;
    before - rec.tokens.len()
}

/// Take the DNS-01 TXT values `rec` lists out of DNS with `dns`, and save the record: without
/// them once removed, with them (for the next pass to try again) when removal failed or there
/// is no `[dns]` to remove them with (both logged). Returns how many record names were removed.
pub async fn remove_dns_records(
    store: &SharedStore,
    name: &str,
    dns: Option<&dyn crate::cloud::dns01::TxtRecords>,
    rec: &mut InFlight,
) -> usize {
    let removed = match dns {
        None => {
            tracing::warn!(
                certificate = name,
                "DNS-01 records of this order stay: no [dns] section to remove them with"
            );
            0
        }
        Some(dns) => match dns.remove(&rec.dns_records).await {
            Ok(()) => std::mem::take(&mut rec.dns_records).len(),
            Err(e) => {
                tracing::warn!(certificate = name, error = %e, "could not remove the DNS-01 records; the next pass tries again");
                0
            }
        },
    };
    if let Err(e) = save(store, name, rec).await {
        tracing::warn!(certificate = name, error = %e, "could not update the order record");
    }
    removed
}

pub async fn clear(store: &SharedStore, name: &str) -> Result<(), StoreError> {
    store.delete(&keys::order(name), Precondition::None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_key_never_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: SharedStore =
            std::sync::Arc::new(crate::shared::store::fs::FsStore::new(dir.path()).expect("store"));
        assert!(load(&store, "app").await.expect("load").is_none());
        let mut rec = InFlight::new(
            "https://ca/order/1",
            &["a.example.com".into()],
            KeyType::EcdsaP256,
            OffsetDateTime::UNIX_EPOCH,
            "https://ca/dir",
        );
        rec.key_pem = Some("-----BEGIN PRIVATE KEY-----secret".into());
        rec.tokens.push("tok".into());
        save(&store, "app", &rec).await.expect("save");
        let back = load(&store, "app").await.expect("load").expect("some");
        assert_eq!(back, rec);
        let a = ["a.example.com".to_string()];
        assert!(back.matches(&a, KeyType::EcdsaP256, "https://ca/dir"));
        assert!(!back.matches(
            &["b.example.com".into()],
            KeyType::EcdsaP256,
            "https://ca/dir"
        ));
        assert!(!back.matches(&a, KeyType::Rsa2048, "https://ca/dir"));
        assert!(!back.matches(&a, KeyType::EcdsaP256, "https://other-ca/dir"));
        // A record from before fallback existed has no CA: the primary resumes it.
        let legacy = InFlight {
            directory: None,
            ..back.clone()
        };
        assert!(legacy.matches(&a, KeyType::EcdsaP256, "https://other-ca/dir"));
        assert!(!format!("{back:?}").contains("secret"));
        store
            .put(
                &keys::order("app"),
                b"{broken",
                Precondition::None,
                Sensitivity::Secret,
            )
            .await
            .expect("put");
        assert!(load(&store, "app").await.expect("load").is_none());
        clear(&store, "app").await.expect("clear");
        clear(&store, "app").await.expect("clear is idempotent");
    }
}
