//! CA fallback (`[[acme.fallback]]`): which failures move a certificate to the next CA, and
//! which never do; the pass's fakes are the parent module's.

use super::*;

async fn current_ca(s: &Setup) -> Option<String> {
    let meta = ObjectBundles::new(s.store.clone())
        .current_meta(NAME)
        .await
        .expect("current");
    meta.and_then(|m| m.ca)
}

#[tokio::test]
async fn a_primary_that_keeps_failing_hands_over_to_the_fallback() {
    let fallback = Arc::new(FakeIssuer::default().fallback());
    let s = Setup::with_fallback(FakeIssuer::failing_with(unreachable_ca()), fallback.clone());
    assert_renewed(&s.pass().await);
    // The primary had its 3 attempts first.
    assert_eq!(s.issuer.orders(), 3);
    assert_eq!(fallback.orders(), 1);
    assert_eq!(current_ca(&s).await.as_deref(), Some(FALLBACK));

    // The next pass starts with the primary again (healthy now).
    let forced = RunOptions {
        force: true,
        ..RunOptions::default()
    };
    assert_renewed(&s.pass_with(&forced).await);
    assert_eq!(s.issuer.orders(), 4);
    assert_eq!(fallback.orders(), 1);
    assert_eq!(current_ca(&s).await.as_deref(), Some(PRIMARY));
}

#[tokio::test]
async fn an_order_the_primary_refuses_goes_to_the_fallback_at_once() {
    let fallback = Arc::new(FakeIssuer::default().fallback());
    let refused = AcmeError::Rejected("the CA answered: policy forbids this name".into());
    let s = Setup::with_fallback(FakeIssuer::failing_with([refused]), fallback.clone());
    assert_renewed(&s.pass().await);
    assert_eq!((s.issuer.orders(), fallback.orders()), (1, 1));
    assert_eq!(current_ca(&s).await.as_deref(), Some(FALLBACK));
}

/// Cloud DNS unavailable (429/5xx) while the primary's order writes its DNS-01 records:
/// retried there like a CA's transient error, but every fallback CA would write to the
/// same zones, so no order is placed elsewhere (it would only add a pending order at a
/// second CA, and an order in flight there ties the next pass to it).
#[tokio::test(start_paused = true)]
async fn cloud_dns_unavailable_is_retried_but_never_hands_over_to_the_fallback() {
    let fallback = Arc::new(FakeIssuer::default().fallback());
    let unavailable =
        (0..3).map(|_| AcmeError::DnsTransient("Cloud DNS: HTTP 503: backend unavailable".into()));
    let s = Setup::with_fallback(FakeIssuer::failing_with(unavailable), fallback.clone());
    let outcome = s.pass().await;
    assert!(
        matches!(&outcome, Outcome::Failed { error }
            if error == "Cloud DNS: HTTP 503: backend unavailable (gave up after 3 attempts)"),
        "{outcome:?}"
    );
    assert_eq!((s.issuer.orders(), fallback.orders()), (3, 0));
    assert_eq!(s.current_serial().await, None);

    // Once Cloud DNS answers again, the retries within a pass get the certificate.
    let fallback = Arc::new(FakeIssuer::default().fallback());
    let once = AcmeError::DnsTransient("Cloud DNS: HTTP 429: rate limited".into());
    let s = Setup::with_fallback(FakeIssuer::failing_with([once]), fallback.clone());
    assert_renewed(&s.pass().await);
    assert_eq!((s.issuer.orders(), fallback.orders()), (2, 0));
    assert_eq!(current_ca(&s).await.as_deref(), Some(PRIMARY));
}

#[tokio::test]
async fn when_every_ca_fails_the_error_names_each() {
    let fallback = Arc::new(
        FakeIssuer::failing_with([AcmeError::Rejected("the CA answered: no".into())]).fallback(),
    );
    let s = Setup::with_fallback(FakeIssuer::failing_with(unreachable_ca()), fallback.clone());
    let outcome = s.pass().await;
    let Outcome::Failed { error } = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(error.starts_with("every CA failed: "), "{error}");
    assert!(
        error.contains(&format!(
            "{PRIMARY}: cannot reach the CA (gave up after 3 attempts)"
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!("{FALLBACK}: the CA answered: no")),
        "{error}"
    );
    assert_eq!(s.current_serial().await, None);
}

#[tokio::test]
async fn a_single_ca_reports_its_own_error_unchanged() {
    let s = Setup::new(FakeIssuer::failing_with(unreachable_ca()), 0, None);
    let outcome = s.pass().await;
    assert!(
        matches!(&outcome, Outcome::Failed { error } if error == "cannot reach the CA (gave up after 3 attempts)"),
        "{outcome:?}"
    );
}
