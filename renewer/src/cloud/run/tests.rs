//! Unit tests of the renewal pass: a file store, a fake issuer and a clock the test sets; no
//! CA, no network. The Pebble tests (tests/tests/renewer.rs, rate_limits.rs) prove the wiring.

use std::time::{Duration, SystemTime};

use super::issue::retry_delay;

#[test]
fn retry_delays() {
    let now = SystemTime::now();
    assert_eq!(retry_delay(1, None, now), Some(Duration::from_secs(2)));
    assert_eq!(retry_delay(2, None, now), Some(Duration::from_secs(4)));
    assert_eq!(retry_delay(9, None, now), Some(Duration::from_secs(60)));
    assert_eq!(
        retry_delay(1, Some(now + Duration::from_secs(30)), now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        retry_delay(1, Some(now + Duration::from_secs(3600)), now),
        None
    );
    assert_eq!(
        retry_delay(1, Some(now - Duration::from_secs(5)), now),
        Some(Duration::from_millis(100))
    );
}

mod pass {
    //! The pass end to end on a file store, with a fake CA and a clock the test sets.

    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    use async_trait::async_trait;
    use time::OffsetDateTime;
    use tokio_util::sync::CancellationToken;

    use crate::cloud::acme::{AcmeError, OrderSpec};
    use crate::cloud::dns01::{ChallengeRecords, Dns01Error, TxtRecords};
    use crate::cloud::inflight::{self, InFlight};
    use crate::cloud::issuer::Issuer;
    use crate::cloud::lock::LeaseRecord;
    use crate::cloud::policy::AriWindow;
    use crate::cloud::run::{Outcome, Renewer, RunOptions, RunReport};
    use crate::cloud::state::{self, CertState};
    use crate::shared::bundle::{Bundle, BundleStore, ObjectBundles, Secret};
    use crate::shared::clock::Clock;
    use crate::shared::config::Config;
    use crate::shared::store::fs::FsStore;
    use crate::shared::store::{keys, Precondition, Sensitivity, SharedStore};
    use crate::shared::testing;

    const NAME: &str = "site";
    const DOMAIN: &str = "a.example.com";

    /// A clock that moves only when the test says so.
    #[derive(Debug)]
    struct TestClock(Mutex<OffsetDateTime>);

    impl TestClock {
        fn advance(&self, by: time::Duration) {
            let mut now = self.0.lock().expect("clock");
            *now += by;
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> OffsetDateTime {
            *self.0.lock().expect("clock")
        }
    }

    const PRIMARY: &str = "https://ca.test/directory";
    const FALLBACK: &str = "https://fallback.test/directory";

    /// A CA that answers from a script (then issues), and counts the orders it was given.
    struct FakeIssuer {
        directory: &'static str,
        script: Mutex<VecDeque<AcmeError>>,
        orders: AtomicUsize,
        /// Its `[dns]`, when the test gives it one.
        txt: Option<Arc<FakeTxt>>,
    }

    /// DNS-01 records: what was asked to be removed.
    #[derive(Default)]
    struct FakeTxt {
        removed: Mutex<Vec<ChallengeRecords>>,
    }

    #[async_trait]
    impl TxtRecords for FakeTxt {
        async fn publish(&self, _records: &ChallengeRecords) -> Result<(), Dns01Error> {
            Ok(())
        }

        async fn remove(&self, records: &ChallengeRecords) -> Result<(), Dns01Error> {
            self.removed.lock().expect("removed").push(records.clone());
            Ok(())
        }
    }

    impl Default for FakeIssuer {
        fn default() -> FakeIssuer {
            FakeIssuer::failing_with([])
        }
    }

    impl FakeIssuer {
        fn failing_with(errors: impl IntoIterator<Item = AcmeError>) -> FakeIssuer {
            FakeIssuer {
                directory: PRIMARY,
                script: Mutex::new(errors.into_iter().collect()),
                orders: AtomicUsize::new(0),
                txt: None,
            }
        }

        /// The same, as the CA of the first `[[acme.fallback]]`.
        fn fallback(self) -> FakeIssuer {
            FakeIssuer {
                directory: FALLBACK,
                ..self
            }
        }

        fn orders(&self) -> usize {
            self.orders.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Issuer for FakeIssuer {
        fn directory(&self) -> &str {
            self.directory
        }

        async fn issue(
            &self,
            order: &OrderSpec<'_>,
            _cancel: &CancellationToken,
        ) -> Result<(String, Secret), AcmeError> {
            self.orders.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = self.script.lock().expect("script").pop_front() {
                return Err(e);
            }
            let names: Vec<&str> = order.domains.iter().map(String::as_str).collect();
            let (chain, key) = testing::self_signed(&names, 400);
            Ok((chain, Secret::new(key)))
        }

        async fn renewal_info(
            &self,
            _ari_id: &str,
        ) -> Result<Option<(AriWindow, SystemTime)>, AcmeError> {
            Ok(None)
        }

        async fn txt_records(&self) -> Result<Option<Arc<dyn TxtRecords>>, AcmeError> {
            Ok(self.txt.clone().map(|t| t as Arc<dyn TxtRecords>))
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        store: SharedStore,
        clock: Arc<TestClock>,
        issuer: Arc<FakeIssuer>,
        renewer: Renewer,
    }

    /// Transient errors enough to use up the `attempts = 3` of one CA.
    fn unreachable_ca() -> Vec<AcmeError> {
        (0..3)
            .map(|_| AcmeError::Transient {
                message: "cannot reach the CA".into(),
                retry_after: Some(SystemTime::now()),
            })
            .collect()
    }

    impl Setup {
        fn new(
            issuer: FakeIssuer,
            wait_seconds: u64,
            mirror: Option<Arc<dyn BundleStore>>,
        ) -> Setup {
            Setup::with_certificate(issuer, wait_seconds, mirror, "")
        }

        /// The primary `issuer`, then `fallback` as the one `[[acme.fallback]]`.
        fn with_fallback(issuer: FakeIssuer, fallback: Arc<FakeIssuer>) -> Setup {
            Setup::build(issuer, 0, None, "", Some(fallback))
        }

        /// `certificate` is added to the `[[certificates]]` table (e.g. a profile).
        fn with_certificate(
            issuer: FakeIssuer,
            wait_seconds: u64,
            mirror: Option<Arc<dyn BundleStore>>,
            certificate: &str,
        ) -> Setup {
            Setup::build(issuer, wait_seconds, mirror, certificate, None)
        }

        fn build(
            issuer: FakeIssuer,
            wait_seconds: u64,
            mirror: Option<Arc<dyn BundleStore>>,
            certificate: &str,
            fallback: Option<Arc<FakeIssuer>>,
        ) -> Setup {
            let dir = tempfile::tempdir().expect("tempdir");
            let text = format!(
                "[acme]\ndirectory = \"https://ca.test/directory\"\nattempts = 3\n\
                 [renewal]\nari = false\n\
                 [lock]\nttl_seconds = 60\nwait_seconds = {wait_seconds}\n\
                 [store]\nurl = \"file://{}\"\n\
                 [[certificates]]\nname = \"{NAME}\"\ndomains = [\"{DOMAIN}\"]\n{certificate}",
                dir.path().display()
            );
            let config = Config::parse(&text, "test", &[]).expect("config");
            let store: SharedStore = Arc::new(FsStore::new(dir.path()).expect("store"));
            let clock = Arc::new(TestClock(Mutex::new(OffsetDateTime::now_utc())));
            let issuer = Arc::new(issuer);
            let mut issuers: Vec<Arc<dyn Issuer>> = vec![issuer.clone()];
            issuers.extend(fallback.map(|f| f as Arc<dyn Issuer>));
            let renewer =
                Renewer::with_parts(config, store.clone(), mirror, issuers, clock.clone());
            Setup {
                _dir: dir,
                store,
                clock,
                issuer,
                renewer,
            }
        }

        /// A current certificate of 90 days with 5 left on the test's clock: due.
        async fn with_due_certificate(self) -> Setup {
            publish(&self.store, &testing::bundle(NAME, &[DOMAIN], 90)).await;
            self.clock.advance(time::Duration::days(85));
            self
        }

        async fn pass(&self) -> Outcome {
            self.pass_with(&RunOptions::default()).await
        }

        async fn pass_with(&self, options: &RunOptions) -> Outcome {
            let report: RunReport = self.renewer.run(options).await;
            report
                .certificates
                .into_iter()
                .next()
                .expect("one report")
                .outcome
        }

        async fn current_serial(&self) -> Option<String> {
            let meta = ObjectBundles::new(self.store.clone())
                .current_meta(NAME)
                .await
                .expect("current");
            meta.map(|m| m.serial)
        }

        /// The lease, held by another renewer until `expires_at`.
        async fn hold_lease(&self, owner: &str, expires_at: OffsetDateTime) {
            let record = LeaseRecord {
                owner: owner.into(),
                expires_at,
            };
            self.store
                .put(
                    &keys::lock(NAME),
                    &serde_json::to_vec(&record).expect("json"),
                    Precondition::DoesNotExist,
                    Sensitivity::Public,
                )
                .await
                .expect("lease");
        }
    }

    async fn publish(store: &SharedStore, bundle: &Bundle) {
        ObjectBundles::new(store.clone())
            .publish(bundle)
            .await
            .expect("publish");
    }

    async fn release_after(store: SharedStore, millis: u64, meanwhile: Option<Bundle>) {
        tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
        if let Some(bundle) = meanwhile {
            publish(&store, &bundle).await;
        }
        store
            .delete(&keys::lock(NAME), Precondition::None)
            .await
            .expect("release");
    }

    fn assert_renewed(outcome: &Outcome) {
        assert!(matches!(outcome, Outcome::Renewed { .. }), "{outcome:?}");
    }

    #[tokio::test]
    async fn waits_for_a_lease_held_by_another_renewer_then_renews() {
        let s = Setup::new(FakeIssuer::default(), 30, None);
        s.hold_lease("other#1", s.clock.now() + time::Duration::minutes(10))
            .await;
        let release = tokio::spawn(release_after(s.store.clone(), 300, None));
        let outcome = s.pass().await;
        release.await.expect("released");
        assert_renewed(&outcome);
        assert_eq!(s.issuer.orders(), 1);
        assert!(s.current_serial().await.is_some());
        // Released after the pass.
        assert!(s.store.get(&keys::lock(NAME)).await.expect("get").is_none());
    }

    #[tokio::test]
    async fn a_lease_held_past_the_wait_fails_without_ordering() {
        let s = Setup::new(FakeIssuer::default(), 0, None);
        s.hold_lease("other#1", s.clock.now() + time::Duration::minutes(10))
            .await;
        let outcome = s.pass().await;
        assert!(
            matches!(&outcome, Outcome::Failed { error } if error.contains("other#1")),
            "{outcome:?}"
        );
        assert_eq!(s.issuer.orders(), 0);
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over() {
        let s = Setup::new(FakeIssuer::default(), 0, None);
        // Its holder crashed a while ago: the lease ran out on the renewer's clock.
        s.hold_lease("crashed#1", s.clock.now() - time::Duration::seconds(1))
            .await;
        assert_renewed(&s.pass().await);
        assert_eq!(s.issuer.orders(), 1);
        assert!(s.store.get(&keys::lock(NAME)).await.expect("get").is_none());
    }

    #[tokio::test]
    async fn under_the_lease_a_certificate_another_renewer_stored_is_taken() {
        let s = Setup::new(FakeIssuer::default(), 30, None)
            .with_due_certificate()
            .await;
        s.hold_lease("other#1", s.clock.now() + time::Duration::minutes(10))
            .await;
        let fresh = testing::bundle(NAME, &[DOMAIN], 400);
        let fresh_serial = fresh.meta.serial.clone();
        let other = tokio::spawn(release_after(s.store.clone(), 300, Some(fresh)));
        let outcome = s.pass().await;
        other.await.expect("other renewer");
        assert!(
            matches!(&outcome, Outcome::Unchanged { reason, .. } if reason == "not due"),
            "{outcome:?}"
        );
        assert_eq!(s.issuer.orders(), 0, "the work was done: no order");
        assert_eq!(s.current_serial().await, Some(fresh_serial));
    }

    #[tokio::test]
    async fn a_transient_ca_error_is_retried_in_the_same_pass() {
        let s = Setup::new(
            FakeIssuer::failing_with([AcmeError::Transient {
                message: "the CA answered HTTP 503".into(),
                // Now: the retry waits the minimum, not the default 2 s.
                retry_after: Some(SystemTime::now()),
            }]),
            0,
            None,
        );
        assert_renewed(&s.pass().await);
        assert_eq!(s.issuer.orders(), 2);
    }

    #[tokio::test]
    async fn transient_errors_give_up_after_the_configured_attempts() {
        let s = Setup::new(
            FakeIssuer::failing_with((0..3).map(|_| AcmeError::Transient {
                message: "cannot reach the CA".into(),
                retry_after: Some(SystemTime::now()),
            })),
            0,
            None,
        );
        let outcome = s.pass().await;
        assert!(
            matches!(&outcome, Outcome::Failed { error } if error.contains("gave up after 3 attempts")),
            "{outcome:?}"
        );
        assert_eq!(s.issuer.orders(), 3);
        assert_eq!(s.current_serial().await, None);
    }

    #[tokio::test]
    async fn the_mirror_catches_up_with_the_current_certificate() {
        let mirror_dir = tempfile::tempdir().expect("tempdir");
        let mirror_store: SharedStore = Arc::new(FsStore::new(mirror_dir.path()).expect("store"));
        let mirror = Arc::new(ObjectBundles::new(mirror_store));
        let s = Setup::new(FakeIssuer::default(), 0, Some(mirror.clone()));
        // Issued while the mirror was down: only the primary has it.
        let current = testing::bundle(NAME, &[DOMAIN], 90);
        publish(&s.store, &current).await;
        assert!(mirror.current_meta(NAME).await.expect("mirror").is_none());

        let outcome = s.pass().await;
        assert!(matches!(outcome, Outcome::Unchanged { .. }), "{outcome:?}");
        assert_eq!(s.issuer.orders(), 0);
        let mirrored = mirror.current_meta(NAME).await.expect("mirror");
        assert_eq!(mirrored.map(|m| m.serial), Some(current.meta.serial));
    }

    #[tokio::test]
    async fn failures_back_off_before_the_next_order() {
        let rejected = || AcmeError::Rejected("validation failed: connection refused".into());
        let s = Setup::new(FakeIssuer::failing_with([rejected(), rejected()]), 0, None)
            .with_due_certificate()
            .await;
        assert!(matches!(s.pass().await, Outcome::Failed { .. }));
        assert_eq!(s.issuer.orders(), 1);

        // The next trigger, right after: backing off, nothing ordered.
        let outcome = s.pass().await;
        assert!(
            matches!(&outcome, Outcome::Unchanged { reason, .. } if reason.contains("backing off after 1")),
            "{outcome:?}"
        );
        assert_eq!(s.issuer.orders(), 1);

        // 5 minutes later (policy::backoff(1)): one more order, which fails again …
        s.clock
            .advance(time::Duration::minutes(5) + time::Duration::seconds(1));
        assert!(matches!(s.pass().await, Outcome::Failed { .. }));
        assert_eq!(s.issuer.orders(), 2);
        // … and the wait doubles.
        s.clock
            .advance(time::Duration::minutes(5) + time::Duration::seconds(1));
        let outcome = s.pass().await;
        assert!(
            matches!(&outcome, Outcome::Unchanged { reason, .. } if reason.contains("backing off after 2")),
            "{outcome:?}"
        );
        s.clock.advance(time::Duration::minutes(5));
        assert_renewed(&s.pass().await);
        assert_eq!(s.issuer.orders(), 3);
    }

    /// A run killed mid-order leaves its attempt open and its lease held until the lease's TTL.
    /// A trigger in that window backs off as after a failure (the attempt counts as one), not
    /// failing on the lease; once the lease has expired, the next one closes the attempt and
    /// orders when the backoff allows.
    #[tokio::test]
    async fn a_killed_attempt_holding_its_lease_backs_off_the_next_trigger() {
        let s = Setup::new(FakeIssuer::default(), 0, None)
            .with_due_certificate()
            .await;
        let killed = CertState {
            consecutive_failures: 1,
            last_failure: Some(s.clock.now()),
            attempt_open: true,
            last_error: Some("an attempt started … did not finish".into()),
            ..CertState::default()
        };
        state::save(&s.store, NAME, &killed).await.expect("state");
        s.hold_lease("killed#1", s.clock.now() + time::Duration::minutes(10))
            .await;

        let outcome = s.pass().await;
        assert!(
            matches!(&outcome, Outcome::Unchanged { reason, .. } if reason.contains("backing off after 1")),
            "{outcome:?}"
        );
        assert_eq!(s.issuer.orders(), 0);
        assert_eq!(state::load(&s.store, NAME).await, killed, "nothing written");

        // The lease ran out: the attempt is over, and its backoff (5 min) too.
        s.clock.advance(time::Duration::minutes(11));
        assert_renewed(&s.pass().await);
        assert_eq!(s.issuer.orders(), 1);
        let after = state::load(&s.store, NAME).await;
        assert!(
            !after.attempt_open && after.consecutive_failures == 0,
            "{after:?}"
        );
    }

    /// A run killed mid-order (DNS-01) leaves its TXT records listed in the order record. A
    /// later pass with nothing to renew takes them out once the lease is free, and keeps the
    /// record (the order may still be resumed); while another renewer holds the lease, they
    /// stay.
    #[tokio::test]
    async fn dns_records_an_interrupted_run_left_are_removed_when_nothing_is_due() {
        let txt = Arc::new(FakeTxt::default());
        let issuer = FakeIssuer {
            txt: Some(txt.clone()),
            ..FakeIssuer::default()
        };
        let s = Setup::new(issuer, 0, None);
        publish(&s.store, &testing::bundle(NAME, &[DOMAIN], 90)).await;
        let mut rec = InFlight::new(
            "https://ca.test/order/1",
            &[DOMAIN.to_string()],
            crate::shared::config::KeyType::EcdsaP256,
            s.clock.now(),
            PRIMARY,
        );
        let left = ChallengeRecords::from([(
            "_acme-challenge.a.example.com.".to_string(),
            vec!["value-of-the-killed-run".to_string()],
        )]);
        rec.dns_records = left.clone();
        inflight::save(&s.store, NAME, &rec).await.expect("save");

        // Another renewer holds the lease: its order may be using them.
        s.hold_lease("other#1", s.clock.now() + time::Duration::minutes(10))
            .await;
        let outcome = s.pass().await;
        assert!(
            matches!(&outcome, Outcome::Unchanged { reason, .. } if reason == "not due"),
            "{outcome:?}"
        );
        assert!(txt.removed.lock().expect("removed").is_empty());

        s.store
            .delete(&keys::lock(NAME), Precondition::None)
            .await
            .expect("release");
        let outcome = s.pass().await;
        assert!(matches!(&outcome, Outcome::Unchanged { .. }), "{outcome:?}");
        assert_eq!(*txt.removed.lock().expect("removed"), [left]);
        let after = inflight::load(&s.store, NAME)
            .await
            .expect("load")
            .expect("the record stays");
        assert!(after.dns_records.is_empty(), "{after:?}");
        assert_eq!(after.url, rec.url);
        assert_eq!(s.issuer.orders(), 0);
        // Released again, and nothing more to do at the next pass.
        assert!(s.store.get(&keys::lock(NAME)).await.expect("get").is_none());
        s.pass().await;
        assert_eq!(txt.removed.lock().expect("removed").len(), 1);
    }

    #[tokio::test]
    async fn the_ordered_profile_is_recorded_with_the_certificate() {
        let s =
            Setup::with_certificate(FakeIssuer::default(), 0, None, "profile = \"shortlived\"\n");
        assert_renewed(&s.pass().await);
        let meta = ObjectBundles::new(s.store.clone())
            .current_meta(NAME)
            .await
            .expect("current")
            .expect("issued");
        assert_eq!(meta.profile.as_deref(), Some("shortlived"));
    }

    mod fallback;
}
