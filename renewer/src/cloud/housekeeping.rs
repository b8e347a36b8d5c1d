//! What a pass cleans up so the store and the DNS zones do not grow without bound: challenge
//! answers and DNS-01 records a killed run left behind, and issued certificates older than
//! the `store.keep_serials` newest.
//!
//! The decisions ([`stale_challenges`], [`serials_to_remove`]) are pure; the functions around
//! them list and delete. Nothing here ever touches the certificate in service, and every
//! failure is only logged: housekeeping never fails a pass.

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime};

use crate::cloud::dns01::TxtRecords;
use crate::cloud::inflight;
use crate::shared::store::{Listed, Precondition, SharedStore};

/// How long an ACME order and its pending authorizations live at Let's Encrypt (7 days; RFC
/// 8555 §7.1.3 `expires`). A challenge answer older than that can no longer be asked for.
pub const ORDER_LIFETIME: Duration = Duration::days(7);

/// The challenge answers older than [`ORDER_LIFETIME`].
pub fn stale_challenges(listed: &[Listed], now: OffsetDateTime) -> Vec<String> {
    listed
        .iter()
        .filter(|l| now - l.updated > ORDER_LIFETIME)
        .map(|l| l.key.clone())
        .collect()
}

/// The serial folders of certificate `name` to remove: all but the `keep` newest (by their
/// newest object), never `current`. `listed` is the listing of `certs/<name>/`.
pub fn serials_to_remove(
    listed: &[Listed],
    name: &str,
    current: &str,
    keep: usize,
) -> BTreeMap<String, Vec<String>> {
    let prefix = format!("certs/{name}/");
    let mut serials: BTreeMap<String, (OffsetDateTime, Vec<String>)> = BTreeMap::new();
    for l in listed {
        let Some(rest) = l.key.strip_prefix(&prefix) else {
            continue;
        };
        // `<serial>/<file>`; `current.json`, `state.json`, `order.json` are not serials.
        let Some((serial, _file)) = rest.split_once('/') else {
            continue;
        };
        let entry = serials
            .entry(serial.to_string())
            .or_insert((OffsetDateTime::UNIX_EPOCH, Vec::new()));
        entry.0 = entry.0.max(l.updated);
        entry.1.push(l.key.clone());
    }
    let mut others: Vec<(String, OffsetDateTime, Vec<String>)> = serials
        .into_iter()
        .filter(|(serial, _)| serial != current)
        .map(|(serial, (updated, keys))| (serial, updated, keys))
        .collect();
    // Newest first; the current one takes one of the `keep` places.
    others.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    others
        .into_iter()
        .skip(keep.saturating_sub(1))
        .map(|(serial, _, keys)| (serial, keys))
        .collect()
}

/// Remove challenge answers older than the order lifetime (any certificate's).
pub async fn sweep_challenges(store: &SharedStore, now: OffsetDateTime) {
    let listed = match store.list("acme-challenge/").await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "could not list challenge answers; leftovers stay until the next pass");
            return;
        }
    };
    let stale = stale_challenges(&listed, now);
    let mut removed = 0usize;
    for key in &stale {
        match store.delete(key, Precondition::None).await {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(key, error = %e, "could not remove a stale challenge answer"),
        }
    }
    if removed > 0 {
        tracing::info!(
            removed,
            "removed challenge answers older than the order lifetime"
        );
    }
}

/// Remove the challenge answers of `name`'s order record: the run that published them is
/// over (the caller holds the certificate's lease). The record stays, without its tokens,
/// so the order can still be resumed (resuming publishes what it needs again).
pub async fn clear_order_tokens(store: &SharedStore, name: &str) {
    let mut rec = match inflight::load(store, name).await {
        Ok(Some(rec)) if !rec.tokens.is_empty() => rec,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the order record");
            return;
        }
    };
    let removed = inflight::remove_answers(store, &mut rec).await;
    if let Err(e) = inflight::save(store, name, &rec).await {
        tracing::warn!(error = %e, "could not update the order record");
    }
    if removed > 0 {
        tracing::info!(
            removed,
            "removed challenge answers left by an interrupted run"
        );
    }
}

/// Take out the DNS-01 TXT records listed in `name`'s order record: the run that wrote them
/// is over (the caller holds the certificate's lease). The record stays, without them, so the
/// order can still be resumed (resuming writes what it needs again).
pub async fn clear_order_dns(store: &SharedStore, name: &str, dns: Option<&dyn TxtRecords>) {
    let mut rec = match inflight::load(store, name).await {
        Ok(Some(rec)) if !rec.dns_records.is_empty() => rec,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the order record");
            return;
        }
    };
    let removed = inflight::remove_dns_records(store, name, dns, &mut rec).await;
    if removed > 0 {
        tracing::info!(removed, "removed DNS-01 records left by an interrupted run");
    }
}

/// What a run stopped mid-order (killed, timed out) left listed in `name`'s order record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leftovers {
    /// HTTP-01 challenge answers in the store.
    pub tokens: bool,
    /// DNS-01 TXT records.
    pub dns_records: bool,
}

impl Leftovers {
    pub fn any(self) -> bool {
        self.tokens || self.dns_records
    }
}

/// What `name`'s order record still lists (nothing when there is none, or it is unreadable).
pub async fn leftovers(store: &SharedStore, name: &str) -> Leftovers {
    match inflight::load(store, name).await {
        Ok(Some(rec)) => Leftovers {
            tokens: !rec.tokens.is_empty(),
            dns_records: !rec.dns_records.is_empty(),
        },
        _ => Leftovers::default(),
    }
}

/// Remove issued certificates of `name` beyond the `keep` newest, never `current`.
pub async fn prune_serials(store: &SharedStore, name: &str, current: &str, keep: usize) {
    let listed = match store.list(&format!("certs/{name}/")).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "could not list issued certificates; old ones stay until the next renewal");
            return;
        }
    };
    for (serial, objects) in serials_to_remove(&listed, name, current, keep) {
        let mut ok = true;
        for key in objects {
            if let Err(e) = store.delete(&key, Precondition::None).await {
                tracing::warn!(key, error = %e, "could not remove an old certificate object");
                ok = false;
            }
        }
        if ok {
            tracing::info!(
                serial,
                keep,
                "removed an old certificate (store.keep_serials)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::store::keys;

    fn at(key: &str, days_ago: i64) -> Listed {
        Listed {
            key: key.to_string(),
            updated: OffsetDateTime::UNIX_EPOCH + Duration::days(100 - days_ago),
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(100)
    }

    #[test]
    fn only_challenges_older_than_an_order_are_stale() {
        let listed = [
            at("acme-challenge/new", 0),
            at("acme-challenge/six-days", 6),
            at("acme-challenge/eight-days", 8),
        ];
        assert_eq!(
            stale_challenges(&listed, now()),
            ["acme-challenge/eight-days"]
        );
    }

    #[test]
    fn the_newest_serials_and_the_current_one_are_kept() {
        let mut listed = Vec::new();
        // s1 oldest … s5 newest; s2 is current (an operator rolled back, say).
        for (i, serial) in ["s1", "s2", "s3", "s4", "s5"].iter().enumerate() {
            let age = 10 - i as i64;
            listed.push(at(&format!("certs/app/{serial}/fullchain.pem"), age));
            listed.push(at(&format!("certs/app/{serial}/privkey.pem"), age));
        }
        listed.push(at("certs/app/current.json", 0));
        listed.push(at("certs/app/state.json", 0));
        listed.push(at("certs/app/order.json", 0));
        listed.push(at("certs/other/s0/fullchain.pem", 50));
        let gone = serials_to_remove(&listed, "app", "s2", 3);
        assert_eq!(gone.keys().collect::<Vec<_>>(), ["s1", "s3"]);
        assert_eq!(gone["s1"].len(), 2);
        // keep = 1: only the current one.
        let gone = serials_to_remove(&listed, "app", "s5", 1);
        assert_eq!(gone.keys().collect::<Vec<_>>(), ["s1", "s2", "s3", "s4"]);
        // Fewer than keep: nothing.
        assert!(serials_to_remove(&listed, "app", "s5", 9).is_empty());
    }

    #[tokio::test]
    async fn sweeping_a_file_store_removes_only_old_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: SharedStore =
            std::sync::Arc::new(crate::shared::store::fs::FsStore::new(dir.path()).expect("store"));
        for token in ["old", "fresh"] {
            store
                .put(
                    &keys::challenge(token),
                    b"k",
                    Precondition::None,
                    crate::shared::store::Sensitivity::Public,
                )
                .await
                .expect("put");
        }
        let old = std::fs::File::options()
            .write(true)
            .open(dir.path().join("acme-challenge/old"))
            .expect("open");
        old.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 86400))
            .expect("mtime");
        sweep_challenges(&store, OffsetDateTime::now_utc()).await;
        assert!(store
            .get("acme-challenge/old")
            .await
            .expect("get")
            .is_none());
        assert!(store
            .get("acme-challenge/fresh")
            .await
            .expect("get")
            .is_some());
    }
}
