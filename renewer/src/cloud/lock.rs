//! A renewal lease per certificate, `locks/<name>`, so that concurrent renewers (a retried
//! Cloud Run job overlapping the next schedule, or several replicas of `renewer serve`) place
//! one order, not several.
//!
//! The lease is an object `{owner, expires_at}` created only if absent (GCS
//! `ifGenerationMatch=0`, a hard link on files). An expired lease — its holder crashed — is
//! taken over by a compare-and-swap on the generation that was read, so of two renewers that
//! both see it expired only one wins. Release deletes the lease only if it is still ours.
//!
//! The holder re-reads the certificate after acquiring: a renewer that waited while another
//! one renewed then finds the certificate fresh and does nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::shared::clock::Clock;
use crate::shared::store::{keys, Generation, Precondition, Sensitivity, SharedStore, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Who holds it: `host/pid/random`, for operators reading the object.
    pub owner: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "certificate {name} is being renewed by {owner} (lease until {until}); waited {waited_s} s"
    )]
    Held {
        name: String,
        owner: String,
        until: String,
        waited_s: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A held lease. Release it with [`Lease::release`]; if the process dies instead, the lease
/// expires after its TTL.
#[derive(Debug)]
pub struct Lease {
    store: SharedStore,
    key: String,
    generation: Generation,
    /// Who holds it until when; read by the tests (the owner token of each attempt).
    #[cfg_attr(not(test), allow(dead_code))]
    record: LeaseRecord,
}

/// A fresh owner identity for this process.
pub fn owner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown-host".into());
    format!(
        "{host}/{}/{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Take the lease of certificate `name`, waiting up to `wait` for another holder.
pub async fn acquire(
    store: &SharedStore,
    clock: &dyn Clock,
    name: &str,
    owner: &str,
    ttl: Duration,
    wait: Duration,
) -> Result<Lease, LockError> {
    let key = keys::lock(name);
    let started = tokio::time::Instant::now();
    // This attempt's own identity: the process owner plus a token of this call, so that two
    // passes of one `renewer serve` process never mistake each other's lease for their own.
    let owner = format!("{owner}#{:08x}", rand::random::<u32>());
    loop {
        let record = LeaseRecord {
            owner: owner.clone(),
            expires_at: clock.now() + ttl,
        };
        let body = serde_json::to_vec(&record).unwrap_or_default();
        let created = store
            .put(&key, &body, Precondition::DoesNotExist, Sensitivity::Public)
            .await;
        match created {
            Ok(generation) => return Ok(lease(store, &key, generation, record)),
            Err(e) if e.is_precondition_failed() => {}
            // The create may have reached the store with its answer lost: the read below
            // tells (our own record is there), else the error stands.
            Err(e) => match store.get(&key).await {
                Ok(Some(existing)) if is_ours(&existing.data, &owner) => {
                    tracing::info!(
                        certificate = name,
                        "the renewal lease was created though its answer was lost; it is ours"
                    );
                    return Ok(lease_from(store, &key, existing, &owner));
                }
                _ => return Err(e.into()),
            },
        }
        let Some(existing) = store.get(&key).await? else {
            continue; // released between our create and our read: try again at once
        };
        // A create that reached the store but whose answer was lost is retried by the client
        // library, which then meets its own object (412): that lease is ours, not another
        // renewer's. Waiting for it would block this renewer (and every other) on itself.
        if is_ours(&existing.data, &owner) {
            tracing::info!(
                certificate = name,
                "the renewal lease is already ours (a retried create met its own write)"
            );
            return Ok(lease_from(store, &key, existing, &owner));
        }
        let held: Option<LeaseRecord> = serde_json::from_slice(&existing.data).ok();
        let expired = held.as_ref().is_none_or(|h| h.expires_at <= clock.now());
        if expired {
            // An unreadable lease is treated as expired: nobody can prove they hold it.
            match store
                .put(
                    &key,
                    &body,
                    Precondition::GenerationMatches(existing.generation.clone()),
                    Sensitivity::Public,
                )
                .await
            {
                Ok(generation) => {
                    tracing::warn!(
                        certificate = name,
                        previous_owner = held.as_ref().map_or("(unreadable)", |h| h.owner.as_str()),
                        "took over an expired renewal lease"
                    );
                    return Ok(lease(store, &key, generation, record));
                }
                Err(e) if e.is_precondition_failed() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let waited = started.elapsed();
        if waited >= wait {
            let (owner, until) = held
                .map(|h| (h.owner, crate::shared::clock::rfc3339(h.expires_at)))
                .unwrap_or_default();
            return Err(LockError::Held {
                name: name.to_string(),
                owner,
                until,
                waited_s: waited.as_secs(),
            });
        }
        tracing::debug!(
            certificate = name,
            "renewal lease held by another renewer; waiting"
        );
        let pause = Duration::from_millis(250 + u64::from(rand::random::<u8>()) * 3);
        tokio::time::sleep(
            pause
                .min(wait.saturating_sub(waited))
                .max(Duration::from_millis(50)),
        )
        .await;
    }
}

/// Whether the stored lease was written by this very attempt.
fn is_ours(data: &[u8], owner: &str) -> bool {
    serde_json::from_slice::<LeaseRecord>(data).is_ok_and(|r| r.owner == owner)
}

/// The lease we find we already hold, at the generation it was read.
fn lease_from(
    store: &SharedStore,
    key: &str,
    existing: crate::shared::store::Object,
    owner: &str,
) -> Lease {
    let record = serde_json::from_slice::<LeaseRecord>(&existing.data).unwrap_or(LeaseRecord {
        owner: owner.to_string(),
        expires_at: OffsetDateTime::now_utc(),
    });
    lease(store, key, existing.generation, record)
}

fn lease(store: &SharedStore, key: &str, generation: Generation, record: LeaseRecord) -> Lease {
    Lease {
        store: store.clone(),
        key: key.to_string(),
        generation,
        record,
    }
}

impl Lease {
    /// Give the lease back. If it was taken over meanwhile (we overran the TTL), say so and
    /// leave the new holder's lease alone.
    pub async fn release(self) {
        match self
            .store
            .delete(&self.key, Precondition::GenerationMatches(self.generation))
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_precondition_failed() => tracing::warn!(
                lease = self.key,
                "the renewal lease was taken over before release; the renewal outlasted lock.ttl_seconds"
            ),
            Err(e) => tracing::warn!(lease = self.key, error = %e, "could not release the renewal lease; it expires on its own"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::shared::clock::SystemClock;
    use crate::shared::store::fs::FsStore;

    fn store() -> (tempfile::TempDir, SharedStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s: SharedStore = Arc::new(FsStore::new(dir.path()).expect("store"));
        (dir, s)
    }

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn one_holder_at_a_time() {
        let (_d, s) = store();
        let a = acquire(&s, &SystemClock, "app", "a", TTL, Duration::ZERO)
            .await
            .expect("a");
        let e = acquire(&s, &SystemClock, "app", "b", TTL, Duration::ZERO)
            .await
            .expect_err("held");
        assert!(
            matches!(&e, LockError::Held { owner, .. } if owner.starts_with("a#")),
            "{e}"
        );
        // Another certificate is independent.
        let other = acquire(&s, &SystemClock, "api", "b", TTL, Duration::ZERO)
            .await
            .expect("api");
        a.release().await;
        let b = acquire(&s, &SystemClock, "app", "b", TTL, Duration::ZERO)
            .await
            .expect("b after release");
        b.release().await;
        other.release().await;
        assert!(s.get("locks/app").await.expect("get").is_none());
    }

    #[tokio::test]
    async fn expired_and_corrupt_leases_are_taken_over() {
        let (_d, s) = store();
        let stale = LeaseRecord {
            owner: "crashed".into(),
            expires_at: OffsetDateTime::now_utc() - time::Duration::seconds(1),
        };
        s.put(
            "locks/app",
            &serde_json::to_vec(&stale).expect("json"),
            Precondition::None,
            Sensitivity::Public,
        )
        .await
        .expect("seed");
        let l = acquire(&s, &SystemClock, "app", "b", TTL, Duration::ZERO)
            .await
            .expect("takeover");
        assert!(l.record.owner.starts_with("b#"), "{}", l.record.owner);
        l.release().await;
        s.put(
            "locks/app",
            b"{not json",
            Precondition::None,
            Sensitivity::Public,
        )
        .await
        .expect("seed");
        acquire(&s, &SystemClock, "app", "c", TTL, Duration::ZERO)
            .await
            .expect("corrupt lease");
    }

    #[tokio::test]
    async fn release_leaves_a_new_holder_alone() {
        let (_d, s) = store();
        let a = acquire(&s, &SystemClock, "app", "a", TTL, Duration::ZERO)
            .await
            .expect("a");
        // Simulate a takeover after a's lease expired.
        s.put("locks/app", b"{}", Precondition::None, Sensitivity::Public)
            .await
            .expect("overwrite");
        a.release().await;
        assert!(s.get("locks/app").await.expect("get").is_some());
    }

    #[tokio::test]
    async fn waiters_get_it_after_release() {
        let (_d, s) = store();
        let a = acquire(&s, &SystemClock, "app", "a", TTL, Duration::ZERO)
            .await
            .expect("a");
        let s2 = s.clone();
        let waiter = tokio::spawn(async move {
            acquire(&s2, &SystemClock, "app", "b", TTL, Duration::from_secs(30)).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.release().await;
        let b = waiter
            .await
            .expect("join")
            .expect("b acquires after release");
        assert!(b.record.owner.starts_with("b#"), "{}", b.record.owner);
    }

    /// A store whose first create lands but answers with an error, as when the answer is
    /// lost and the client library's retry then meets its own object (412).
    #[derive(Debug)]
    struct LostAnswer {
        inner: SharedStore,
        lost: std::sync::atomic::AtomicBool,
        precondition: bool,
    }

    #[async_trait::async_trait]
    impl crate::shared::store::ObjectStore for LostAnswer {
        fn location(&self) -> &str {
            self.inner.location()
        }
        async fn get(&self, key: &str) -> Result<Option<crate::shared::store::Object>, StoreError> {
            self.inner.get(key).await
        }
        async fn put(
            &self,
            key: &str,
            data: &[u8],
            precondition: Precondition,
            sensitivity: Sensitivity,
        ) -> Result<Generation, StoreError> {
            let generation = self.inner.put(key, data, precondition, sensitivity).await?;
            if self.lost.swap(false, std::sync::atomic::Ordering::SeqCst) {
                let (location, key) = (self.location().to_string(), key.to_string());
                return Err(if self.precondition {
                    StoreError::PreconditionFailed { location, key }
                } else {
                    StoreError::Backend {
                        location,
                        key,
                        message: "connection reset".into(),
                    }
                });
            }
            Ok(generation)
        }
        async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), StoreError> {
            self.inner.delete(key, precondition).await
        }
        async fn list(
            &self,
            prefix: &str,
        ) -> Result<Vec<crate::shared::store::Listed>, StoreError> {
            self.inner.list(prefix).await
        }
    }

    #[tokio::test]
    async fn a_lease_whose_create_answer_was_lost_is_recognised_as_ours() {
        for precondition in [true, false] {
            let (_d, inner) = store();
            let s: SharedStore = Arc::new(LostAnswer {
                inner,
                lost: true.into(),
                precondition,
            });
            // No wait allowed: waiting for our own lease would fail here.
            let l = acquire(&s, &SystemClock, "app", "a", TTL, Duration::ZERO)
                .await
                .expect("our own lease");
            assert!(l.record.owner.starts_with("a#"));
            l.release().await;
            assert!(s.get("locks/app").await.expect("get").is_none(), "released");
        }
    }

    #[tokio::test]
    async fn racing_acquirers_one_winner() {
        let (_d, s) = store();
        let mut tasks = Vec::new();
        for i in 0..6 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                acquire(
                    &s,
                    &SystemClock,
                    "app",
                    &format!("r{i}"),
                    TTL,
                    Duration::ZERO,
                )
                .await
                .is_ok()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.expect("join"));
        }
        assert_eq!(wins, 1);
    }
}
