//! Unit tests of the ACME client: keys, ARI ids, Retry-After, error classes.

use instant_acme::Problem;

use super::ca_http::{classify, retry_after, with_own_hints, ResponseHint};
use super::keygen::csr_for;
use super::order::certificate_identifier;
use super::*;

#[test]
fn keys_of_every_type_sign_a_csr() {
    for kt in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
        let (csr, key) = csr_for(vec!["a.example.com".into()], kt).expect("csr");
        assert!(!csr.is_empty());
        assert!(key.expose().contains("PRIVATE KEY"), "{kt}");
    }
    // Fresh key every time.
    let (_, k1) = csr_for(vec!["a.example.com".into()], KeyType::EcdsaP256).expect("csr");
    let (_, k2) = csr_for(vec!["a.example.com".into()], KeyType::EcdsaP256).expect("csr");
    assert_ne!(k1, k2);
}

#[test]
fn account_keys_differ_per_directory() {
    let a = account_key("https://a.example/dir");
    assert!(a.starts_with("acme/accounts/") && a.ends_with(".json"));
    assert_ne!(a, account_key("https://b.example/dir"));
    crate::shared::store::check_key(&a).expect("valid key");
}

#[test]
fn ari_ids_parse() {
    assert!(certificate_identifier("aki.serial").is_some());
    for bad in ["", "a", "a.", ".b", "a.b.c"] {
        assert!(certificate_identifier(bad).is_none(), "{bad}");
    }
}

#[test]
fn retry_after_forms() {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("120"),
    );
    let t = retry_after(&h).expect("seconds");
    assert!(t > SystemTime::now() + Duration::from_secs(100));
    h.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("Wed, 21 Oct 2037 07:28:00 GMT"),
    );
    assert!(retry_after(&h).is_some());
    h.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("soon"),
    );
    assert!(retry_after(&h).is_none());
}

#[tokio::test]
async fn concurrent_orders_keep_their_own_error_hints() {
    let shared: HintSlot = Arc::new(Mutex::new(None));
    // What CaHttp does on an error response, then what classify reads, with the other
    // order recording its own error in between.
    let order = |status: u16| {
        let shared = shared.clone();
        with_own_hints(async move {
            if let Ok(mut slot) = hint_slot(&shared).lock() {
                *slot = Some(ResponseHint {
                    status,
                    retry_after: None,
                });
            }
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            let seen = hint_slot(&shared).lock().ok().and_then(|mut s| s.take());
            seen.map(|h| h.status)
        })
    };
    let (a, b) = tokio::join!(order(429), order(503));
    assert_eq!((a, b), (Some(429), Some(503)));
    assert!(
        shared.lock().expect("lock").is_none(),
        "orders do not use the shared slot"
    );
    // Outside an order (account loading), the shared slot is used.
    assert!(Arc::ptr_eq(&hint_slot(&shared), &shared));
}

#[test]
fn errors_are_classified() {
    let slot = Mutex::new(Some(ResponseHint {
        status: 429,
        retry_after: Some(SystemTime::now()),
    }));
    let p: Problem = serde_json::from_str(
        r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many","status":429}"#,
    )
    .expect("problem");
    let e = classify(instant_acme::Error::Api(p), &slot);
    assert!(
        matches!(
            e,
            AcmeError::Transient {
                retry_after: Some(_),
                ..
            }
        ),
        "{e:?}"
    );
    let p: Problem = serde_json::from_str(
        r#"{"type":"urn:ietf:params:acme:error:unauthorized","detail":"no","status":403}"#,
    )
    .expect("problem");
    assert!(matches!(
        classify(instant_acme::Error::Api(p), &Mutex::new(None)),
        AcmeError::Rejected(_)
    ));
}

#[test]
fn dns_01_errors_are_never_the_cas() {
    use crate::cloud::dns01::Dns01Error;
    // 429/5xx or unreachable: retried within the pass, like a transient CA error.
    let e = AcmeError::from(Dns01Error::Transient("HTTP 503".into()));
    assert!(matches!(&e, AcmeError::DnsTransient(m) if m == "Cloud DNS: HTTP 503"));
    assert!(e.is_transient());
    // No zone, no permission, records never served: not retried.
    let e = AcmeError::from(Dns01Error::Failed("no zone for a.example.com".into()));
    assert!(matches!(&e, AcmeError::Dns(m) if m == "DNS-01: no zone for a.example.com"));
    assert!(!e.is_transient());
}
