//! DNS-01 (RFC 8555 §8.4): the CA looks up `_acme-challenge.<name>` TXT records holding
//! `base64url(SHA-256(key authorization))`. The records are written through Cloud DNS
//! ([`cloud_dns::CloudDns`]), and the CA is told to look only once the zone's authoritative
//! servers answer every value ([`propagation`]).
//!
//! A name and its wildcard (`example.com`, `*.example.com`) share one record name, so a record
//! set may hold several values; two certificates may share one too. Values are therefore
//! added to and removed from whatever the record set holds, never written over it.

use std::collections::BTreeMap;

use async_trait::async_trait;

pub mod cloud_dns;
pub mod propagation;

/// The TXT values a set of challenges needs: record name (absolute, with the trailing dot)
/// → values. A `BTreeMap` of sorted values, so two equal sets compare equal.
pub type ChallengeRecords = BTreeMap<String, Vec<String>>;

/// The record name of the DNS-01 challenge for `identifier` (`example.com` or
/// `*.example.com`): `_acme-challenge.example.com.` (RFC 8555 §8.4; a wildcard's challenge is
/// at its base name, §7.1.3).
pub fn record_name(identifier: &str) -> String {
    let base = identifier.strip_prefix("*.").unwrap_or(identifier);
    format!(
        "_acme-challenge.{}.",
        base.trim_end_matches('.').to_ascii_lowercase()
    )
}

/// Add `value` for `identifier`'s record to `records` (once).
pub fn add(records: &mut ChallengeRecords, identifier: &str, value: String) {
    let values = records.entry(record_name(identifier)).or_default();
    if !values.contains(&value) {
        values.push(value);
        values.sort();
    }
}

/// What a record set holds after `ours` are added to `existing` (kept in order, no repeats).
pub fn with_values(existing: &[String], ours: &[String]) -> Vec<String> {
    let mut all = existing.to_vec();
    for v in ours {
        if !all.contains(v) {
            all.push(v.clone());
        }
    }
    all
}

/// What a record set holds after `ours` are taken out of `existing`.
pub fn without_values(existing: &[String], ours: &[String]) -> Vec<String> {
    existing
        .iter()
        .filter(|v| !ours.contains(v))
        .cloned()
        .collect()
}

/// A TXT value in zone-file form, as Cloud DNS stores it: `"value"`.
pub fn quoted(value: &str) -> String {
    format!("\"{value}\"")
}

/// The value of a zone-file TXT string: quotes removed, and the strings of a long record
/// joined (RFC 1035 §3.3.14: `"abc" "def"` is `abcdef`).
pub fn unquoted(rrdata: &str) -> String {
    let trimmed = rrdata.trim();
    if !trimmed.starts_with('"') {
        return trimmed.to_string();
    }
    trimmed
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect()
}

/// Why the records could not be written, served or removed. The message names the zone, the
/// record or the servers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dns01Error {
    /// Worth another attempt: Cloud DNS answered 429 or 5xx, or could not be reached.
    #[error("Cloud DNS: {0}")]
    Transient(String),
    /// No zone, no permission, a refused change, records that never appeared.
    #[error("DNS-01: {0}")]
    Failed(String),
}

/// Where the renewer writes DNS-01 records.
#[async_trait]
pub trait TxtRecords: Send + Sync {
    /// Add `records` and return once the zone's servers answer every value.
    async fn publish(&self, records: &ChallengeRecords) -> Result<(), Dns01Error>;

    /// Take `records` out again (other values of the same record sets stay).
    async fn remove(&self, records: &ChallengeRecords) -> Result<(), Dns01Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_and_its_wildcard_share_one_record() {
        let mut records = ChallengeRecords::new();
        add(&mut records, "Example.COM", "b".into());
        add(&mut records, "*.example.com", "a".into());
        add(&mut records, "*.example.com", "a".into());
        add(&mut records, "www.example.com", "c".into());
        assert_eq!(
            records,
            ChallengeRecords::from([
                (
                    "_acme-challenge.example.com.".into(),
                    vec!["a".into(), "b".into()]
                ),
                ("_acme-challenge.www.example.com.".into(), vec!["c".into()]),
            ])
        );
    }

    #[test]
    fn values_are_added_to_and_taken_from_what_is_there() {
        let there = vec!["old".to_string(), "other".to_string()];
        let ours = vec!["new".to_string(), "old".to_string()];
        assert_eq!(with_values(&there, &ours), ["old", "other", "new"]);
        assert_eq!(
            without_values(&with_values(&there, &ours), &ours),
            ["other"]
        );
        assert!(without_values(&ours, &ours).is_empty());
    }

    #[test]
    fn txt_strings() {
        assert_eq!(quoted("abc"), "\"abc\"");
        assert_eq!(unquoted("\"abc\""), "abc");
        assert_eq!(unquoted("\"ab\" \"c\""), "abc");
        assert_eq!(unquoted("plain"), "plain");
    }
}
