//! `GcsStore` against a real fake-gcs-server.
//!
//! Every kind of request the store makes in production is made here: the crate's media
//! download (`get`, and the check before a conditional delete), its multipart upload with and
//! without `ifGenerationMatch` (`put`), and the JSON API `DELETE` (`delete`). Layout and object
//! metadata are checked through the plain JSON API, independently of the store.
//!
//! Two things fake-gcs-server does not do, and how they are covered instead:
//!
//! * it ignores preconditions on `DELETE`: a stale conditional delete is refused by the store's
//!   own check (tested here), and the classification of the service's 412 answer is unit-tested
//!   in `renewer/src/shared/store/gcs/`;
//! * it takes a multipart upload's content type from the media part, not from the metadata part
//!   where the client library puts it (and where Cloud Storage reads it), so its object metadata
//!   has no `contentType`: `what_goes_on_the_wire` checks the requests themselves through a relay.

use std::sync::Arc;
use std::time::Duration;

use harness::{free_port, http_get, percent_encode, FakeGcs, HttpStore};
use renewer::bundle::{Bundle, BundleStore, ObjectBundles, Secret};
use renewer::store::gcs::GcsStore;
use renewer::store::{Generation, ObjectStore, Precondition, Sensitivity, SharedStore, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUCKET: &str = "acme-edge-test";

/// A hang guard for tests that talk to nothing; never reached when the store behaves.
const HANG_GUARD: Duration = Duration::from_secs(120);

async fn fake_gcs() -> FakeGcs {
    let gcs = FakeGcs::start().await.expect("start fake-gcs-server");
    gcs.create_bucket(BUCKET).await.expect("create bucket");
    gcs
}

async fn store(gcs: &FakeGcs, prefix: &str) -> GcsStore {
    GcsStore::new(BUCKET, prefix, Some(&gcs.base_url()))
        .await
        .expect("GcsStore::new")
}

/// The object's JSON API metadata (`GET /storage/v1/b/<bucket>/o/<object>`).
async fn metadata(gcs: &FakeGcs, object: &str) -> serde_json::Value {
    let path = format!(
        "/storage/v1/b/{}/o/{}",
        percent_encode(BUCKET),
        percent_encode(object)
    );
    let resp = http_get(gcs.port(), &path).await.expect("metadata GET");
    assert_eq!(resp.status, 200, "{object}: {}", resp.body_text());
    serde_json::from_slice(&resp.body).expect("metadata JSON")
}

fn assert_precondition_failed<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(e) if e.is_precondition_failed() => {}
        other => panic!("{what}: expected PreconditionFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn round_trip_with_prefix_is_laid_out_under_the_prefix() {
    let gcs = fake_gcs().await;
    // Slashes around the prefix are ignored.
    let s = store(&gcs, "/acme/state/").await;
    assert_eq!(s.location(), "gs://acme-edge-test/acme/state");

    let key = "certs/app/current.json";
    let g = s
        .put(key, b"{\"v\":1}", Precondition::None, Sensitivity::Public)
        .await
        .expect("put");
    let got = s.get(key).await.expect("get").expect("exists");
    assert_eq!(got.data, b"{\"v\":1}");
    assert_eq!(got.generation, g);

    // The layout is `<prefix>/<key>`, readable by anyone speaking the JSON API.
    let object = "acme/state/certs/app/current.json";
    assert_eq!(
        gcs.download(BUCKET, object)
            .await
            .expect("download")
            .as_deref(),
        Some(&b"{\"v\":1}"[..])
    );
    assert_eq!(gcs.download(BUCKET, key).await.expect("download"), None);
    let meta = metadata(&gcs, object).await;
    assert_eq!(meta["generation"].as_str(), Some(g.0.as_str()));
    assert_ne!(meta["cacheControl"], "no-store");

    // An object written by someone else is read with its generation.
    gcs.upload(BUCKET, "acme/state/acme-challenge/tok", b"key-auth")
        .await
        .expect("upload");
    let other = s
        .get("acme-challenge/tok")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(other.data, b"key-auth");
    let meta = metadata(&gcs, "acme/state/acme-challenge/tok").await;
    assert_eq!(
        meta["generation"].as_str(),
        Some(other.generation.0.as_str())
    );
}

#[tokio::test]
async fn empty_prefix_maps_keys_to_object_names() {
    let gcs = fake_gcs().await;
    let s = store(&gcs, "").await;
    assert_eq!(s.location(), "gs://acme-edge-test");
    s.put(
        "locks/app",
        b"lease",
        Precondition::DoesNotExist,
        Sensitivity::Public,
    )
    .await
    .expect("put");
    assert_eq!(
        gcs.download(BUCKET, "locks/app")
            .await
            .expect("download")
            .as_deref(),
        Some(&b"lease"[..])
    );
    s.delete("locks/app", Precondition::None)
        .await
        .expect("delete");
    assert_eq!(
        gcs.download(BUCKET, "locks/app").await.expect("download"),
        None
    );
}

#[tokio::test]
async fn secrets_are_not_cacheable() {
    let gcs = fake_gcs().await;
    let s = store(&gcs, "p").await;
    s.put(
        "certs/app/1a/privkey.pem",
        b"-----BEGIN PRIVATE KEY-----",
        Precondition::None,
        Sensitivity::Secret,
    )
    .await
    .expect("put secret");
    let meta = metadata(&gcs, "p/certs/app/1a/privkey.pem").await;
    assert_eq!(meta["cacheControl"], "no-store");
}

#[tokio::test]
async fn missing_objects_read_as_none() {
    let gcs = fake_gcs().await;
    let s = store(&gcs, "acme").await;
    assert!(s
        .get("certs/none/current.json")
        .await
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn create_only_once() {
    let gcs = fake_gcs().await;
    let s = store(&gcs, "acme").await;
    let g = s
        .put(
            "locks/app",
            b"first",
            Precondition::DoesNotExist,
            Sensitivity::Public,
        )
        .await
        .expect("create");
    assert_precondition_failed(
        s.put(
            "locks/app",
            b"second",
            Precondition::DoesNotExist,
            Sensitivity::Public,
        )
        .await,
        "second create",
    );
    let got = s.get("locks/app").await.expect("get").expect("exists");
    assert_eq!(got.data, b"first");
    assert_eq!(got.generation, g);
}

#[tokio::test]
async fn compare_and_swap() {
    let gcs = fake_gcs().await;
    let s = store(&gcs, "acme").await;
    let g1 = s
        .put(
            "locks/app",
            b"one",
            Precondition::DoesNotExist,
            Sensitivity::Public,
        )
        .await
        .expect("create");
    let g2 = s
        .put(
            "locks/app",
            b"two",
            Precondition::GenerationMatches(g1.clone()),
            Sensitivity::Public,
        )
        .await
        .expect("swap with the current generation");
    assert_ne!(g1, g2);
    assert_precondition_failed(
        s.put(
            "locks/app",
            b"three",
            Precondition::GenerationMatches(g1.clone()),
            Sensitivity::Public,
        )
        .await,
        "swap with a stale generation",
    );
    let got = s.get("locks/app").await.expect("get").expect("exists");
    assert_eq!(got.data, b"two");
    assert_eq!(got.generation, g2);

    // A generation on a missing object, and things that are no generation at all.
    assert_precondition_failed(
        s.put(
            "locks/other",
            b"x",
            Precondition::GenerationMatches(g2.clone()),
            Sensitivity::Public,
        )
        .await,
        "swap of a missing object",
    );
    for bogus in ["0", "-1", "not-a-number"] {
        assert_precondition_failed(
            s.put(
                "locks/app",
                b"x",
                Precondition::GenerationMatches(Generation(bogus.into())),
                Sensitivity::Public,
            )
            .await,
            bogus,
        );
    }
    assert!(s.get("locks/other").await.expect("get").is_none());
}

#[tokio::test]
async fn deletes() {
    let gcs = fake_gcs().await;
    let s = store(&gcs, "acme").await;
    let g1 = s
        .put("locks/app", b"one", Precondition::None, Sensitivity::Public)
        .await
        .expect("put");
    let g2 = s
        .put("locks/app", b"two", Precondition::None, Sensitivity::Public)
        .await
        .expect("overwrite");
    assert_ne!(g1, g2);

    assert_precondition_failed(
        s.delete("locks/app", Precondition::GenerationMatches(g1.clone()))
            .await,
        "delete with a stale generation",
    );
    assert_precondition_failed(
        s.delete("locks/app", Precondition::DoesNotExist).await,
        "delete-if-absent of an existing object",
    );
    assert_eq!(
        s.get("locks/app").await.expect("get").map(|o| o.data),
        Some(b"two".to_vec())
    );

    s.delete("locks/app", Precondition::GenerationMatches(g2.clone()))
        .await
        .expect("delete with the current generation");
    assert!(s.get("locks/app").await.expect("get").is_none());
    assert_eq!(
        gcs.download(BUCKET, "acme/locks/app")
            .await
            .expect("download"),
        None
    );

    // Missing: unconditional deletes are idempotent, conditional ones fail.
    s.delete("locks/app", Precondition::None)
        .await
        .expect("idempotent delete");
    s.delete("locks/app", Precondition::None)
        .await
        .expect("idempotent delete again");
    s.delete("locks/app", Precondition::DoesNotExist)
        .await
        .expect("delete-if-absent of a missing object");
    assert_precondition_failed(
        s.delete("locks/app", Precondition::GenerationMatches(g2))
            .await,
        "conditional delete of a missing object",
    );

    // An unconditional delete of an existing object.
    s.put(
        "acme-challenge/tok",
        b"ka",
        Precondition::None,
        Sensitivity::Public,
    )
    .await
    .expect("put");
    s.delete("acme-challenge/tok", Precondition::None)
        .await
        .expect("delete");
    assert_eq!(
        gcs.download(BUCKET, "acme/acme-challenge/tok")
            .await
            .expect("download"),
        None
    );
}

#[tokio::test]
async fn concurrent_creates_have_one_winner() {
    let gcs = fake_gcs().await;
    let s = Arc::new(store(&gcs, "acme").await);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let data = format!("holder-{i}");
                let result = s
                    .put(
                        "locks/race",
                        data.as_bytes(),
                        Precondition::DoesNotExist,
                        Sensitivity::Public,
                    )
                    .await;
                (data, result)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (data, result) = task.await.expect("task");
        match result {
            Ok(g) => winners.push((data, g)),
            Err(e) => assert!(e.is_precondition_failed(), "a loser failed otherwise: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let got = s.get("locks/race").await.expect("get").expect("exists");
    assert_eq!(got.data, winners[0].0.as_bytes());
    assert_eq!(got.generation, winners[0].1);
}

#[tokio::test]
async fn concurrent_swaps_have_one_winner() {
    let gcs = fake_gcs().await;
    let s = Arc::new(store(&gcs, "acme").await);
    let g = s
        .put(
            "locks/swap",
            b"start",
            Precondition::None,
            Sensitivity::Public,
        )
        .await
        .expect("seed");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (s, g) = (Arc::clone(&s), g.clone());
            tokio::spawn(async move {
                s.put(
                    "locks/swap",
                    format!("{i}").as_bytes(),
                    Precondition::GenerationMatches(g),
                    Sensitivity::Public,
                )
                .await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => wins += 1,
            Err(e) => assert!(e.is_precondition_failed(), "a loser failed otherwise: {e}"),
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn bad_keys_are_refused() {
    let gcs = fake_gcs().await;
    let s = store(&gcs, "acme").await;
    for key in ["../escape", "/abs", "a//b", "a b", ""] {
        let err = s.get(key).await.expect_err(key);
        assert!(matches!(err, StoreError::Backend { .. }), "{key}: {err:?}");
        assert!(
            s.put(key, b"x", Precondition::None, Sensitivity::Public)
                .await
                .is_err(),
            "{key}"
        );
        assert!(s.delete(key, Precondition::None).await.is_err(), "{key}");
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_a_backend_error() {
    // A port nobody listens on: connections are refused.
    let port = free_port();
    let s = GcsStore::new(BUCKET, "acme", Some(&format!("http://127.0.0.1:{port}")))
        .await
        .expect("construction sends nothing");
    let secret = b"-----BEGIN PRIVATE KEY----- do not print me";
    let run = async {
        let get = s.get("certs/app/current.json").await.expect_err("get");
        let put = s
            .put(
                "certs/app/1/privkey.pem",
                secret,
                Precondition::DoesNotExist,
                Sensitivity::Secret,
            )
            .await
            .expect_err("put");
        let del = s
            .delete("locks/app", Precondition::None)
            .await
            .expect_err("delete");
        let cas = s
            .delete(
                "locks/app",
                Precondition::GenerationMatches(Generation("5".into())),
            )
            .await
            .expect_err("conditional delete");
        [get, put, del, cas]
    };
    let errors = tokio::time::timeout(HANG_GUARD, run)
        .await
        .expect("the store hung");
    for e in errors {
        let StoreError::Backend {
            location,
            key,
            message,
        } = &e
        else {
            panic!("expected a Backend error, got {e:?}");
        };
        assert_eq!(location, "gs://acme-edge-test/acme");
        assert!(!key.is_empty());
        assert!(!message.contains('\n'), "{message}");
        assert!(!e.to_string().contains("do not print me"), "{e}");
        assert!(!format!("{e:?}").contains("do not print me"), "{e:?}");
    }
}

#[tokio::test]
async fn emulator_host_variable_is_honoured() {
    let gcs = fake_gcs().await;
    // Only this test in this binary constructs a store without an explicit endpoint.
    std::env::set_var("STORAGE_EMULATOR_HOST", format!("127.0.0.1:{}", gcs.port()));
    let s = GcsStore::new(BUCKET, "env", None).await;
    std::env::remove_var("STORAGE_EMULATOR_HOST");
    let s = s.expect("GcsStore::new from STORAGE_EMULATOR_HOST");
    assert_eq!(s.endpoint(), gcs.base_url());
    s.put(
        "k.json",
        b"{}",
        Precondition::DoesNotExist,
        Sensitivity::Public,
    )
    .await
    .expect("put");
    assert_eq!(
        gcs.download(BUCKET, "env/k.json")
            .await
            .expect("download")
            .as_deref(),
        Some(&b"{}"[..])
    );
}

#[tokio::test]
async fn bundles_round_trip() {
    let gcs = fake_gcs().await;
    let gcs_store = store(&gcs, "acme").await;
    let store: SharedStore = Arc::new(gcs_store);
    let bundles = ObjectBundles::new(store);

    let (chain, key) = harness::tls::self_signed_pem(&["app.example.com"]).expect("self-signed");
    let leaf = renewer::certinfo::inspect(&chain).expect("inspect");
    let bundle = Bundle::from_pem(
        "app",
        chain.clone(),
        Secret::new(key.clone()),
        leaf.not_before,
    )
    .expect("bundle");

    assert!(bundles.current("app").await.expect("current").is_none());
    bundles.publish(&bundle).await.expect("publish");
    let current = bundles
        .current("app")
        .await
        .expect("current")
        .expect("published");
    assert_eq!(current.meta, bundle.meta);
    assert_eq!(current.fullchain_pem, chain);
    assert_eq!(current.privkey_pem, Secret::new(key));
    assert_eq!(
        bundles.current_meta("app").await.expect("meta"),
        Some(bundle.meta.clone())
    );

    // What a reader of the bucket sees: the pointer last, the key not cacheable.
    let serial = &bundle.meta.serial;
    let pointer = gcs
        .download(BUCKET, "acme/certs/app/current.json")
        .await
        .expect("download")
        .expect("current.json");
    let pointer: serde_json::Value = serde_json::from_slice(&pointer).expect("pointer JSON");
    assert_eq!(
        pointer["fullchain"],
        format!("certs/app/{serial}/fullchain.pem")
    );
    let meta = metadata(&gcs, &format!("acme/certs/app/{serial}/privkey.pem")).await;
    assert_eq!(meta["cacheControl"], "no-store");
    let meta = metadata(&gcs, &format!("acme/certs/app/{serial}/fullchain.pem")).await;
    assert_ne!(meta["cacheControl"], "no-store");
}

/// A TCP relay to `upstream` that keeps a copy of every byte clients send through it. Dropping
/// it stops the accept loop and every relayed connection.
struct Tap {
    port: u16,
    sent: Arc<std::sync::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tap {
    async fn start(upstream: u16) -> Tap {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&sent);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                connections.spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match client_read.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            log.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .extend_from_slice(&buf[..n]);
                            if server_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = server_write.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                        let _ = client_write.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Tap { port, sent, task }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

#[tokio::test]
async fn what_goes_on_the_wire() {
    let gcs = fake_gcs().await;
    let tap = Tap::start(gcs.port()).await;
    let s = GcsStore::new(BUCKET, "acme", Some(&tap.base_url()))
        .await
        .expect("GcsStore::new");
    let g = s
        .put(
            "certs/app/current.json",
            b"{}",
            Precondition::DoesNotExist,
            Sensitivity::Public,
        )
        .await
        .expect("create");
    s.put(
        "certs/app/1a/privkey.pem",
        b"key",
        Precondition::None,
        Sensitivity::Secret,
    )
    .await
    .expect("secret");
    s.put(
        "locks/app",
        b"lease",
        Precondition::None,
        Sensitivity::Public,
    )
    .await
    .expect("lease");
    s.delete(
        "certs/app/current.json",
        Precondition::GenerationMatches(g.clone()),
    )
    .await
    .expect("delete");
    let sent = tap.sent();

    // Every write is one multipart upload; the precondition travels with it.
    assert_eq!(
        sent.matches("POST /upload/storage/v1/b/acme-edge-test/o?")
            .count(),
        3,
        "{sent}"
    );
    assert_eq!(sent.matches("uploadType=multipart").count(), 3, "{sent}");
    assert!(!sent.contains("uploadType=resumable"), "{sent}");
    assert_eq!(sent.matches("ifGenerationMatch=0").count(), 1, "{sent}");
    assert!(
        sent.contains("name=acme%2Fcerts%2Fapp%2Fcurrent.json"),
        "{sent}"
    );
    // Content types and cache control are in the metadata part.
    for content_type in ["application/json", "application/x-pem-file", "text/plain"] {
        assert!(
            sent.contains(&format!(r#""contentType":"{content_type}""#)),
            "{content_type}: {sent}"
        );
    }
    assert_eq!(
        sent.matches(r#""cacheControl":"no-store""#).count(),
        1,
        "{sent}"
    );
    // The delete names the object with its slashes encoded, and carries the generation.
    assert!(
        sent.contains(&format!(
            "DELETE /storage/v1/b/acme-edge-test/o/acme%2Fcerts%2Fapp%2Fcurrent.json?ifGenerationMatch={g} "
        )),
        "{sent}"
    );
    // An emulator gets no credentials.
    assert!(
        !sent.to_ascii_lowercase().contains("\r\nauthorization:"),
        "{sent}"
    );
}

#[tokio::test]
async fn service_errors_are_backend_errors_with_the_status() {
    let server = HttpStore::start().await.expect("http store");
    server.force_status(Some(403));
    let s = GcsStore::new(BUCKET, "acme", Some(&server.base_url()))
        .await
        .expect("GcsStore::new");
    let errors = [
        s.get("locks/app").await.expect_err("get"),
        s.put(
            "locks/app",
            b"lease",
            Precondition::DoesNotExist,
            Sensitivity::Public,
        )
        .await
        .expect_err("put"),
        s.delete("locks/app", Precondition::None)
            .await
            .expect_err("delete"),
    ];
    for e in errors {
        let StoreError::Backend { message, .. } = &e else {
            panic!("expected a Backend error, got {e:?}");
        };
        assert!(message.contains("HTTP 403"), "{message}");
    }
    // A forbidden answer is not retried, and nothing carried credentials.
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(
        requests.iter().all(|r| r.header("authorization").is_none()),
        "{requests:?}"
    );
}

/// Housekeeping lists a folder: every object under the prefix, keys relative to the store's
/// own prefix, with when each was written; nothing outside it.
#[tokio::test]
async fn list_finds_the_objects_of_a_folder_only() {
    let gcs = fake_gcs().await;
    let s = store(&gcs, "edge").await;
    for key in [
        "acme-challenge/t1",
        "acme-challenge/t2",
        "certs/app/1/fullchain.pem",
    ] {
        s.put(key, b"x", Precondition::None, Sensitivity::Public)
            .await
            .expect("put");
    }
    // Another prefix in the same bucket is not ours.
    gcs.upload(BUCKET, "other/acme-challenge/t3", b"x")
        .await
        .expect("upload");
    let mut listed = s.list("acme-challenge/").await.expect("list");
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<&str> = listed.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(keys, ["acme-challenge/t1", "acme-challenge/t2"]);
    let now = time::OffsetDateTime::now_utc();
    for l in &listed {
        assert!((now - l.updated).whole_minutes().abs() < 10, "{l:?}");
    }
    assert!(s.list("nothing/").await.expect("list").is_empty());
}
