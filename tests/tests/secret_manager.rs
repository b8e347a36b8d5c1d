//! The renewer's Secret Manager mirror (`renewer::bundle::secret_manager`) against the fake
//! Secret Manager of the harness, through the official REST client.

use harness::secret_manager::VersionState;
use harness::tls::self_signed_pem;
use harness::FakeSecretManager;
use renewer::bundle::secret_manager::SecretManagerMirror;
use renewer::bundle::{Bundle, BundleError, BundleStore, Secret};
use renewer::config::SecretManagerConfig;
use time::OffsetDateTime;

const PROJECT: &str = "acme-edge-test";
const SECRET: &str = "acme-edge-app";

fn bundle(name: &str, domain: &str) -> Bundle {
    let (cert, key) = self_signed_pem(&[domain]).expect("self-signed");
    Bundle::from_pem(name, cert, Secret::new(key), OffsetDateTime::now_utc()).expect("bundle")
}

async fn mirror(fake: &FakeSecretManager, keep_versions: u32) -> SecretManagerMirror {
    SecretManagerMirror::new(&SecretManagerConfig {
        project: PROJECT.into(),
        secret_prefix: "acme-edge-".into(),
        keep_versions,
        endpoint: Some(fake.endpoint()),
    })
    .await
    .expect("mirror")
}

fn enabled(fake: &FakeSecretManager, secret: &str) -> Vec<u64> {
    fake.versions(secret)
        .into_iter()
        .filter(|(_, state, _)| *state == VersionState::Enabled)
        .map(|(n, _, _)| n)
        .collect()
}

fn assert_same(got: &Bundle, want: &Bundle) {
    assert_eq!(got.meta.name, want.meta.name);
    assert_eq!(got.meta.serial, want.meta.serial);
    assert_eq!(got.meta.domains, want.meta.domains);
    assert_eq!(got.meta.not_after, want.meta.not_after);
    assert_eq!(got.meta.chain_sha256, want.meta.chain_sha256);
    assert_eq!(got.fullchain_pem, want.fullchain_pem);
    assert_eq!(got.privkey_pem.expose(), want.privkey_pem.expose());
}

#[tokio::test]
async fn publish_round_trips_through_the_rest_api() {
    let fake = FakeSecretManager::start(PROJECT).await.expect("fake");
    let sm = mirror(&fake, 3).await;
    assert_eq!(sm.location(), "secretmanager://acme-edge-test/acme-edge-");

    let b = bundle("app", "a.example.com");
    let before = OffsetDateTime::now_utc();
    sm.publish(&b).await.expect("publish");

    let versions = fake.versions(SECRET);
    assert_eq!(versions.len(), 1);
    let (number, state, payload) = &versions[0];
    assert_eq!((*number, *state), (1, VersionState::Enabled));
    assert_eq!(payload.as_slice(), b.to_combined_pem().expose().as_bytes());
    assert_eq!(
        fake.checksums_sent(SECRET),
        [true],
        "CRC32C sent (and checked by the fake)"
    );

    let labels = fake.labels(SECRET).expect("secret exists");
    assert_eq!(
        labels.get("managed-by").map(String::as_str),
        Some("acme-edge")
    );
    assert_eq!(labels.get("certificate").map(String::as_str), Some("app"));
    assert_eq!(labels.get("serial"), Some(&b.meta.serial));
    assert_eq!(
        labels.get("not-after"),
        Some(&b.meta.not_after.unix_timestamp().to_string())
    );

    fake.clear_requests();
    let got = sm.current("app").await.expect("current").expect("a bundle");
    assert_same(&got, &b);
    // issued_at is the version's createTime (seconds resolution or better).
    assert!(got.meta.issued_at >= before - time::Duration::seconds(1));
    assert!(got.meta.issued_at <= OffsetDateTime::now_utc());
    let meta = sm.current_meta("app").await.expect("meta").expect("some");
    assert_eq!(meta.serial, b.meta.serial);

    // `current` reads `latest` and the version's metadata, pinned to the number it got.
    let calls = fake.calls();
    let base = format!("/v1/projects/{PROJECT}/secrets/{SECRET}");
    assert_eq!(
        calls[..2],
        [
            format!("GET {base}/versions/latest:access"),
            format!("GET {base}/versions/1"),
        ]
    );
}

#[tokio::test]
async fn the_fake_serves_the_calls_the_client_really_makes() {
    let fake = FakeSecretManager::start(PROJECT).await.expect("fake");
    let sm = mirror(&fake, 3).await;
    sm.publish(&bundle("app", "a.example.com"))
        .await
        .expect("publish");

    let base = format!("/v1/projects/{PROJECT}/secrets/{SECRET}");
    assert_eq!(
        fake.calls(),
        [
            format!("GET {base}"),
            format!("POST /v1/projects/{PROJECT}/secrets"),
            format!("GET {base}/versions/latest:access"),
            format!("POST {base}:addVersion"),
            format!("GET {base}/versions"),
        ],
        "labels were set at creation, so no UpdateSecret"
    );
    let requests = fake.requests();
    let create = &requests[1];
    assert_eq!(
        create.path,
        format!(
            "/v1/projects/{PROJECT}/secrets?secretId={SECRET}&%24alt=json%3Benum-encoding%3Dint"
        )
    );
    let list = &requests[4];
    assert!(
        list.path.contains("filter=state%3AENABLED"),
        "{}",
        list.path
    );
    for r in &requests {
        // Emulator mode: anonymous credentials, and the client's telemetry header.
        assert_eq!(r.header("authorization"), None, "{r:?}");
        assert!(
            r.header("x-goog-api-client")
                .is_some_and(|v| v.contains("gapic/")),
            "{r:?}"
        );
        assert!(
            r.path.contains("%24alt=json%3Benum-encoding%3Dint"),
            "{}",
            r.path
        );
    }
    let add = &requests[3];
    assert_eq!(add.header("content-type"), Some("application/json"));

    // A second bundle: the labels change, so UpdateSecret is sent with its mask.
    fake.clear_requests();
    sm.publish(&bundle("app", "a.example.com"))
        .await
        .expect("publish");
    let patch = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("an UpdateSecret call");
    assert_eq!(
        patch.path,
        format!("{base}?updateMask=labels&%24alt=json%3Benum-encoding%3Dint")
    );
}

#[tokio::test]
async fn publishing_the_same_bundle_again_adds_no_version() {
    let fake = FakeSecretManager::start(PROJECT).await.expect("fake");
    let sm = mirror(&fake, 3).await;
    let b = bundle("app", "a.example.com");
    sm.publish(&b).await.expect("first publish");
    sm.publish(&b).await.expect("second publish");
    assert_eq!(fake.versions(SECRET).len(), 1);
    let adds = fake
        .calls()
        .iter()
        .filter(|c| c.ends_with(":addVersion"))
        .count();
    assert_eq!(adds, 1);

    // Same certificate written by another tool with different formatting (CRLF): same serial,
    // so still no new version.
    let crlf = b.to_combined_pem().expose().replace('\n', "\r\n");
    fake.add_version(SECRET, crlf.as_bytes());
    sm.publish(&b).await.expect("third publish");
    assert_eq!(fake.versions(SECRET).len(), 2);
}

#[tokio::test]
async fn only_the_newest_versions_stay_enabled() {
    let fake = FakeSecretManager::start(PROJECT).await.expect("fake");
    let sm = mirror(&fake, 3).await;
    let bundles: Vec<Bundle> = (0..5)
        .map(|i| bundle("app", &format!("a{i}.example.com")))
        .collect();
    for b in &bundles {
        sm.publish(b).await.expect("publish");
    }
    let versions = fake.versions(SECRET);
    assert_eq!(
        versions.len(),
        5,
        "old versions are disabled, not destroyed"
    );
    assert_eq!(enabled(&fake, SECRET), [3, 4, 5]);
    for (n, state, _) in &versions[..2] {
        assert_eq!(*state, VersionState::Disabled, "version {n}");
    }
    let current = sm.current("app").await.expect("current").expect("some");
    assert_same(&current, &bundles[4]);

    // The listing went through more than one page (the fake pages by 2).
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.contains("/versions?") && r.path.contains("pageToken=offset-")),
        "no paginated listing"
    );
    assert!(fake.calls().contains(&format!(
        "POST /v1/projects/{PROJECT}/secrets/{SECRET}/versions/1:disable"
    )));
}

#[tokio::test]
async fn a_missing_secret_is_none() {
    let fake = FakeSecretManager::start(PROJECT).await.expect("fake");
    let sm = mirror(&fake, 3).await;
    assert!(sm.current("app").await.expect("current").is_none());
    assert!(sm.current_meta("app").await.expect("meta").is_none());
    assert_eq!(
        fake.calls()[0],
        format!("GET /v1/projects/{PROJECT}/secrets/{SECRET}/versions/latest:access")
    );
}

#[tokio::test]
async fn a_corrupt_payload_names_its_version() {
    let fake = FakeSecretManager::start(PROJECT).await.expect("fake");
    let sm = mirror(&fake, 3).await;
    sm.publish(&bundle("app", "a.example.com"))
        .await
        .expect("publish");
    let n = fake.add_version(SECRET, b"-----BEGIN PRIVATE KEY-----\nnot really\n");
    match sm.current("app").await {
        Err(BundleError::Corrupt { object, message }) => {
            assert_eq!(
                object,
                format!("secretmanager://{PROJECT}/{SECRET}/versions/{n}")
            );
            assert!(!message.is_empty());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let n = fake.add_version(SECRET, &[0xff, 0xfe, 0x00]);
    assert!(matches!(
        sm.current("app").await,
        Err(BundleError::Corrupt { object, .. }) if object.ends_with(&format!("/versions/{n}"))
    ));

    // Publishing replaces a corrupt current version.
    let b = bundle("app", "b.example.com");
    sm.publish(&b).await.expect("publish over corrupt");
    let current = sm.current("app").await.expect("current").expect("some");
    assert_same(&current, &b);
}

#[tokio::test]
async fn disabling_the_newest_version_rolls_back() {
    let fake = FakeSecretManager::start(PROJECT).await.expect("fake");
    let sm = mirror(&fake, 3).await;
    let old = bundle("app", "a.example.com");
    let new = bundle("app", "a.example.com");
    sm.publish(&old).await.expect("publish old");
    sm.publish(&new).await.expect("publish new");
    // An operator rolls back the way Secret Manager suggests: disable the bad version.
    fake.set_state(SECRET, 2, VersionState::Disabled);
    fake.clear_requests();
    let current = sm.current("app").await.expect("current").expect("some");
    assert_same(&current, &old);
    let base = format!("/v1/projects/{PROJECT}/secrets/{SECRET}");
    // `latest` is version 2 whatever its state: the access fails, the client falls back.
    assert_eq!(
        fake.calls(),
        [
            format!("GET {base}/versions/latest:access"),
            format!("GET {base}/versions"),
            format!("GET {base}/versions/1:access"),
        ]
    );

    // Nothing enabled at all: no current bundle.
    fake.set_state(SECRET, 1, VersionState::Disabled);
    assert!(sm.current("app").await.expect("current").is_none());
}

#[tokio::test]
async fn an_unavailable_service_is_a_backend_error() {
    let fake = FakeSecretManager::start(PROJECT).await.expect("fake");
    let sm = mirror(&fake, 3).await;
    let b = bundle("app", "a.example.com");

    fake.fail_next(100);
    for result in [
        sm.publish(&b).await.map(|_| ()),
        sm.current("app").await.map(|_| ()),
    ] {
        match result {
            Err(BundleError::Backend { location, message }) => {
                assert_eq!(location, format!("secretmanager://{PROJECT}/{SECRET}"));
                assert!(message.contains("503"), "{message}");
                assert!(message.contains("UNAVAILABLE"), "{message}");
                assert!(!message.contains("BEGIN"), "{message}");
            }
            other => panic!("expected Backend, got {other:?}"),
        }
    }
    assert!(fake.versions(SECRET).is_empty());
    // A GET is retried a bounded number of times, then given up.
    let accesses = fake
        .calls()
        .iter()
        .filter(|c| c.ends_with("/versions/latest:access"))
        .count();
    assert!((2..=5).contains(&accesses), "{accesses} attempts");

    // One transient failure of a GET is absorbed by the client's retry.
    fake.fail_next(0);
    sm.publish(&b)
        .await
        .expect("publish once the service is back");
    fake.clear_requests();
    fake.fail_next(1);
    let got = sm.current("app").await.expect("retried").expect("some");
    assert_same(&got, &b);
    assert_eq!(
        fake.calls()[..2],
        [
            format!("GET /v1/projects/{PROJECT}/secrets/{SECRET}/versions/latest:access"),
            format!("GET /v1/projects/{PROJECT}/secrets/{SECRET}/versions/latest:access"),
        ]
    );

    // A failing addVersion (a POST: not retried) fails the publish and leaves the old bundle
    // current.
    fake.fail_next_matching(":addVersion", 1);
    let next = bundle("app", "a.example.com");
    assert!(matches!(
        sm.publish(&next).await,
        Err(BundleError::Backend { message, .. }) if message.starts_with("AddSecretVersion ")
    ));
    assert_eq!(fake.versions(SECRET).len(), 1);
    let got = sm.current("app").await.expect("current").expect("some");
    assert_eq!(got.meta.serial, b.meta.serial);
    sm.publish(&next).await.expect("publish again");
    assert_eq!(fake.versions(SECRET).len(), 2);
}

#[tokio::test]
async fn bad_secret_ids_are_refused_before_any_call() {
    let fake = FakeSecretManager::start(PROJECT).await.expect("fake");
    let sm = mirror(&fake, 3).await;
    assert!(matches!(
        sm.current("a/b").await,
        Err(BundleError::Backend { .. })
    ));
    assert!(fake.requests().is_empty());
}
