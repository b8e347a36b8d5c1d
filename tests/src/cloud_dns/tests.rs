//! The fake's change semantics (on the model), its mirroring plan, and its wire (over HTTP, with
//! an in-process stand-in for challtestsrv's management API). No process is started.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::Router;
use serde_json::{json, Value};

use super::mirror::{plan, MirrorOp};
use super::model::{quote_txt, unquote_txt, RecordSet, Zone};
use super::FakeCloudDns;
use crate::client::{http_request, RawResponse};
use crate::server::ServerTask;

const NAME: &str = "_acme-challenge.example.test.";

fn zone() -> Zone {
    Zone::new(
        "example-test",
        "Example.test",
        &[],
        1,
        "2026-01-01T00:00:00Z",
    )
}

fn txt(name: &str, ttl: u32, values: &[&str]) -> Value {
    RecordSet::txt(name, ttl, values).to_json()
}

fn challenge_sets(zone: &Zone) -> Vec<RecordSet> {
    zone.rrsets
        .iter()
        .filter(|r| r.rtype == "TXT")
        .cloned()
        .collect()
}

#[test]
fn a_zone_comes_with_its_soa_and_ns_and_change_0() {
    let z = zone();
    assert_eq!(z.dns_name, "example.test.");
    let types: Vec<&str> = z.rrsets.iter().map(|r| r.rtype.as_str()).collect();
    assert_eq!(types, ["SOA", "NS"]);
    assert_eq!(z.rrsets[1].rrdatas.len(), 4);
    assert_eq!(z.changes.len(), 1);
    assert_eq!(z.changes[0].id, "0");
    let v = z.to_json();
    assert_eq!(v["id"], "1");
    assert_eq!(v["visibility"], "public");
    assert_eq!(v["nameServers"][0], "ns-cloud-a1.googledomains.com.");
}

#[test]
fn additions_apply_and_a_second_addition_of_the_set_is_409() {
    let mut z = zone();
    let change = z
        .apply(&json!({"additions": [txt(NAME, 60, &["a"])]}), false, "t")
        .unwrap()
        .clone();
    assert_eq!(change.id, "1");
    assert_eq!(change.to_json()["status"], "done");
    assert_eq!(change.to_json()["additions"][0]["rrdatas"][0], "\"a\"");
    assert!(change.to_json().get("deletions").is_none());

    let err = z
        .apply(&json!({"additions": [txt(NAME, 60, &["b"])]}), false, "t")
        .unwrap_err();
    assert_eq!((err.status, err.reason), (409, "alreadyExists"));
    assert_eq!(
        err.message,
        "The resource 'entity.change.additions[0]' named '_acme-challenge.example.test. (TXT)' already exists"
    );
    assert_eq!(challenge_sets(&z), [RecordSet::txt(NAME, 60, &["a"])]);
}

#[test]
fn deletions_must_match_exactly() {
    let mut z = zone();
    let absent = z
        .apply(&json!({"deletions": [txt(NAME, 60, &["a"])]}), false, "t")
        .unwrap_err();
    assert_eq!((absent.status, absent.reason), (404, "notFound"));
    assert!(absent.message.contains("'entity.change.deletions[0]'"));

    z.apply(
        &json!({"additions": [txt(NAME, 60, &["a", "b"])]}),
        false,
        "t",
    )
    .unwrap();
    for wrong in [
        txt(NAME, 300, &["a", "b"]),
        txt(NAME, 60, &["a"]),
        txt(NAME, 60, &["a", "c"]),
        json!({"name": NAME, "type": "TXT", "rrdatas": ["\"a\"", "\"b\""]}),
    ] {
        let err = z
            .apply(&json!({ "deletions": [wrong] }), false, "t")
            .unwrap_err();
        assert_eq!(
            (err.status, err.reason),
            (412, "conditionNotMet"),
            "{wrong}"
        );
        assert_eq!(
            err.to_json()["error"]["status"],
            "FAILED_PRECONDITION",
            "{wrong}"
        );
    }
    // The rrdatas in another order still match.
    z.apply(
        &json!({"deletions": [txt(NAME, 60, &["b", "a"])]}),
        false,
        "t",
    )
    .unwrap();
    assert!(challenge_sets(&z).is_empty());
}

#[test]
fn a_change_applies_all_or_nothing_deletions_first() {
    let mut z = zone();
    z.apply(&json!({"additions": [txt(NAME, 60, &["a"])]}), false, "t")
        .unwrap();
    let other = "_acme-challenge.www.example.test.";
    z.apply(&json!({"additions": [txt(other, 60, &["w"])]}), false, "t")
        .unwrap();

    // A valid deletion next to a conflicting addition: nothing happens.
    let err = z
        .apply(
            &json!({"deletions": [txt(NAME, 60, &["a"])], "additions": [txt(other, 60, &["x"])]}),
            false,
            "t",
        )
        .unwrap_err();
    assert_eq!(err.status, 409);
    assert_eq!(challenge_sets(&z).len(), 2);

    // Replacing a set in one change (deletion of the old, addition of the new) is the way to
    // add a value to an existing set.
    let change = z
        .apply(
            &json!({"deletions": [txt(NAME, 60, &["a"])], "additions": [txt(NAME, 60, &["a", "b"])]}),
            false,
            "t",
        )
        .unwrap();
    assert_eq!(change.id, "3");
    assert_eq!(change.txt_names(), [NAME]);
    let set = z.list_rrsets(Some(NAME), Some("TXT"));
    assert_eq!(set[0].txt_values(), ["a", "b"]);
}

#[test]
fn malformed_changes_are_400() {
    let mut z = zone();
    let cases = [
        (json!({}), "required"),
        (json!({"additions": []}), "required"),
        (json!([1]), "required"),
        (
            json!({"additions": [txt("_acme-challenge.other.test.", 60, &["a"])]}),
            "invalid",
        ),
        (
            json!({"additions": [txt("_acme-challenge.badexample.test.", 60, &["a"])]}),
            "invalid",
        ),
        (
            json!({"additions": [txt("_acme-challenge.example.test", 60, &["a"])]}),
            "invalid",
        ),
        (
            json!({"additions": [{"name": NAME, "type": "TXT", "rrdatas": ["\"a\""]}]}),
            "required",
        ),
        (
            json!({"additions": [{"name": NAME, "type": "TXT", "ttl": 60, "rrdatas": []}]}),
            "required",
        ),
        (
            json!({"additions": [{"name": NAME, "type": "txt", "ttl": 60, "rrdatas": ["a"]}]}),
            "invalid",
        ),
        (
            json!({"additions": [txt(NAME, 60, &["a"]), txt(NAME, 60, &["b"])]}),
            "invalid",
        ),
    ];
    for (body, reason) in cases {
        let err = z.apply(&body, false, "t").unwrap_err();
        assert_eq!((err.status, err.reason), (400, reason), "{body}");
    }
    assert_eq!(z.changes.len(), 1);
    // The apex is inside the zone; names are lower-cased.
    z.apply(
        &json!({"additions": [txt("EXAMPLE.test.", 300, &["v=spf1 -all"])]}),
        false,
        "t",
    )
    .unwrap();
    assert_eq!(z.list_rrsets(Some("example.test."), Some("TXT")).len(), 1);
}

#[test]
fn txt_strings_are_quoted_and_unquoted_as_in_zone_files() {
    assert_eq!(quote_txt("abc"), "\"abc\"");
    assert_eq!(quote_txt("a\"b\\"), "\"a\\\"b\\\\\"");
    assert_eq!(unquote_txt(&quote_txt("a\"b\\")), "a\"b\\");
    assert_eq!(unquote_txt("abc"), "abc");
    assert_eq!(unquote_txt("\"ab\" \"cd\""), "abcd");
    assert_eq!(unquote_txt("\"a b\""), "a b");
    assert_eq!(unquote_txt("\"\\065\""), "A");
}

#[test]
fn mirroring_sets_new_values_and_clears_only_to_remove() {
    let mut mirrored = BTreeMap::new();
    let set = |v: &str| MirrorOp::Set(NAME.into(), v.into());
    assert_eq!(plan(&mut mirrored, NAME, vec!["a".into()]), [set("a")]);
    assert_eq!(
        plan(&mut mirrored, NAME, vec!["a".into(), "b".into()]),
        [set("b")]
    );
    assert_eq!(
        plan(&mut mirrored, NAME, vec!["b".into()]),
        [MirrorOp::Clear(NAME.into()), set("b")]
    );
    // A value twice is served twice.
    assert_eq!(
        plan(&mut mirrored, NAME, vec!["b".into(), "b".into()]),
        [set("b")]
    );
    assert_eq!(
        plan(&mut mirrored, NAME, vec![]),
        [MirrorOp::Clear(NAME.into())]
    );
    assert!(mirrored.is_empty());
    assert_eq!(plan(&mut mirrored, NAME, vec![]), []);
}

type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// Stands in for challtestsrv's management API: records `(path, body)`.
async fn fake_challtestsrv() -> (ServerTask, Calls) {
    async fn record(State(calls): State<Calls>, uri: Uri, body: Bytes) {
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        calls.lock().unwrap().push((uri.path().to_string(), body));
    }
    let calls = Calls::default();
    let router = Router::new().fallback(record).with_state(calls.clone());
    (ServerTask::spawn(router).await.unwrap(), calls)
}

fn taken(calls: &Calls) -> Vec<(String, Value)> {
    std::mem::take(&mut *calls.lock().unwrap())
}

fn set_txt(value: &str) -> (String, Value) {
    ("/set-txt".into(), json!({"host": NAME, "value": value}))
}

fn clear_txt() -> (String, Value) {
    ("/clear-txt".into(), json!({"host": NAME}))
}

async fn call(fake: &FakeCloudDns, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let path = format!("/dns/v1/projects/proj{path}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let headers = [("content-type", "application/json")];
    let resp: RawResponse = http_request(fake.port(), method, &path, &headers, body.as_bytes())
        .await
        .unwrap();
    let json = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, json)
}

async fn change(fake: &FakeCloudDns, body: Value) -> (u16, Value) {
    call(
        fake,
        "POST",
        "/managedZones/example-test/changes?$alt=json",
        Some(body),
    )
    .await
}

#[tokio::test]
async fn zones_and_record_sets_read_as_cloud_dns_answers_them() {
    let fake = FakeCloudDns::start("proj").await.unwrap();
    fake.add_zone("example-test", "example.test.", &["ns1.example.net"]);
    fake.add_zone("other-test", "other.test", &[]);

    let (status, v) = call(&fake, "GET", "/managedZones?dnsName=example.test.", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["managedZones"].as_array().unwrap().len(), 1);
    assert_eq!(v["managedZones"][0]["name"], "example-test");
    assert_eq!(
        v["managedZones"][0]["nameServers"],
        json!(["ns1.example.net."])
    );
    let (_, v) = call(&fake, "GET", "/managedZones", None).await;
    assert_eq!(v["managedZones"].as_array().unwrap().len(), 2);
    let (_, v) = call(&fake, "GET", "/managedZones?dnsName=none.test.", None).await;
    assert_eq!(v, json!({"kind": "dns#managedZonesListResponse"}));

    let (status, v) = call(&fake, "GET", "/managedZones/missing", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        v,
        json!({"error": {
            "code": 404,
            "message": "The 'parameters.managedZone' resource named 'missing' does not exist.",
            "status": "NOT_FOUND",
            "errors": [{
                "reason": "notFound",
                "message": "The 'parameters.managedZone' resource named 'missing' does not exist.",
                "domain": "global",
            }],
        }})
    );
    let (status, _) = call(&fake, "GET", "/managedZones/missing/rrsets", None).await;
    assert_eq!(status, 404);

    let (status, v) = change(&fake, json!({"additions": [txt(NAME, 60, &["a"])]})).await;
    assert_eq!(
        (status, &v["status"], &v["id"]),
        (200, &json!("done"), &json!("1"))
    );
    let rrsets = "/managedZones/example-test/rrsets";
    let (_, v) = call(
        &fake,
        "GET",
        &format!("{rrsets}?name={NAME}&type=TXT"),
        None,
    )
    .await;
    assert_eq!(
        v["rrsets"],
        json!([{"kind": "dns#resourceRecordSet", "name": NAME, "type": "TXT", "ttl": 60, "rrdatas": ["\"a\""]}])
    );
    let (_, v) = call(&fake, "GET", rrsets, None).await;
    assert_eq!(v["rrsets"].as_array().unwrap().len(), 3);
    let (_, v) = call(&fake, "GET", &format!("{rrsets}?name={NAME}&type=A"), None).await;
    assert!(v.get("rrsets").is_none());
    let (status, _) = call(&fake, "GET", &format!("{rrsets}?type=TXT"), None).await;
    assert_eq!(status, 400);

    let (status, v) = call(&fake, "GET", "/managedZones/example-test/changes/1", None).await;
    assert_eq!((status, &v["status"]), (200, &json!("done")));
    let (status, _) = call(&fake, "GET", "/managedZones/example-test/changes/9", None).await;
    assert_eq!(status, 404);
    let (status, v) = call(&fake, "DELETE", "/managedZones/example-test", None).await;
    assert_eq!(
        (status, &v["error"]["status"]),
        (501, &json!("UNIMPLEMENTED"))
    );

    let calls = fake.calls();
    assert_eq!(calls[0], "GET /dns/v1/projects/proj/managedZones");
    assert!(fake.requests()[5].path.ends_with("?$alt=json"));
    assert_eq!(fake.requests()[5].body["additions"][0]["name"], NAME);
    assert_eq!(fake.txt_values(NAME), ["a"]);
    assert_eq!(fake.challenge_rrsets().len(), 1);
}

#[tokio::test]
async fn applied_changes_are_mirrored_into_challtestsrv() {
    let (server, calls) = fake_challtestsrv().await;
    let fake = FakeCloudDns::with_challtestsrv("proj", server.port())
        .await
        .unwrap();
    fake.add_zone("example-test", "example.test", &[]);

    // A name, then its wildcard: the second value is added, the first one stays served.
    assert_eq!(
        change(&fake, json!({"additions": [txt(NAME, 60, &["a"])]}))
            .await
            .0,
        200
    );
    assert_eq!(taken(&calls), [set_txt("a")]);
    let replace =
        json!({"deletions": [txt(NAME, 60, &["a"])], "additions": [txt(NAME, 60, &["a", "b"])]});
    assert_eq!(change(&fake, replace).await.0, 200);
    assert_eq!(taken(&calls), [set_txt("b")]);
    // Removing one value: cleared, the other set again.
    let shrink =
        json!({"deletions": [txt(NAME, 60, &["a", "b"])], "additions": [txt(NAME, 60, &["b"])]});
    assert_eq!(change(&fake, shrink).await.0, 200);
    assert_eq!(taken(&calls), [clear_txt(), set_txt("b")]);

    // Refused changes write nothing.
    let (status, v) = change(&fake, json!({"additions": [txt(NAME, 60, &["c"])]})).await;
    assert_eq!(
        (status, &v["error"]["errors"][0]["reason"]),
        (409, &json!("alreadyExists"))
    );
    fake.deny_changes(true);
    let (status, v) = change(&fake, json!({"deletions": [txt(NAME, 60, &["b"])]})).await;
    assert_eq!(status, 403);
    assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(v["error"]["errors"][0]["reason"], "forbidden");
    assert_eq!(v["error"]["errors"][0]["domain"], "global");
    assert!(taken(&calls).is_empty());
    fake.deny_changes(false);
    fake.unavailable_changes(true);
    let (status, v) = change(&fake, json!({"deletions": [txt(NAME, 60, &["b"])]})).await;
    assert_eq!(status, 503);
    assert_eq!(v["error"]["status"], "UNAVAILABLE");
    assert_eq!(v["error"]["errors"][0]["reason"], "backendError");
    assert!(taken(&calls).is_empty());
    fake.unavailable_changes(false);

    // Not applied to DNS: done in the API, never served.
    fake.apply_to_dns(false);
    let (_, v) = change(&fake, json!({"deletions": [txt(NAME, 60, &["b"])]})).await;
    assert_eq!(v["status"], "done");
    assert!(taken(&calls).is_empty());
    assert!(fake.challenge_rrsets().is_empty());
    fake.apply_to_dns(true);
    // challtestsrv still serves "b"; the next change to the name brings it in line.
    assert_eq!(
        change(&fake, json!({"additions": [txt(NAME, 60, &["d"])]}))
            .await
            .0,
        200
    );
    assert_eq!(taken(&calls), [clear_txt(), set_txt("d")]);

    // Pending: served only once the client asks about the change.
    fake.pending_changes(true);
    let (_, v) = change(&fake, json!({"deletions": [txt(NAME, 60, &["d"])]})).await;
    assert_eq!(v["status"], "pending");
    let id = v["id"].as_str().unwrap().to_string();
    assert!(taken(&calls).is_empty());
    assert!(fake.challenge_rrsets().is_empty());
    let path = format!("/managedZones/example-test/changes/{id}");
    let (_, v) = call(&fake, "GET", &path, None).await;
    assert_eq!(v["status"], "done");
    assert_eq!(taken(&calls), [clear_txt()]);
    let (_, v) = call(&fake, "GET", &path, None).await;
    assert_eq!(v["status"], "done");
    assert!(taken(&calls).is_empty());
    assert!(fake.mirror_errors().is_empty());
}

#[tokio::test]
async fn mirror_failures_are_recorded() {
    let (mut server, _calls) = fake_challtestsrv().await;
    let fake = FakeCloudDns::with_challtestsrv("proj", server.port())
        .await
        .unwrap();
    server.stop().await;
    fake.add_zone("example-test", "example.test", &[]);
    let (status, _) = change(&fake, json!({"additions": [txt(NAME, 60, &["a"])]})).await;
    assert_eq!(status, 200);
    assert_eq!(fake.mirror_errors().len(), 1);
    let (status, v) = call(&fake, "POST", "/managedZones/example-test/changes", None).await;
    assert_eq!(
        (status, &v["error"]["errors"][0]["reason"]),
        (400, &json!("required"))
    );
    let (status, _) = call(&fake, "GET", "/managedZones/x/changes/1", None).await;
    assert_eq!(status, 404);
    let resp = http_request(
        fake.port(),
        "POST",
        "/dns/v1/projects/proj/managedZones/example-test/changes",
        &[],
        b"{",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 400);
    assert!(
        resp.body_text().contains("parseError"),
        "{}",
        resp.body_text()
    );
    let (status, v) = call(&fake, "GET", "/../other/managedZones", None).await;
    assert_eq!(
        (status, &v["error"]["status"]),
        (501, &json!("UNIMPLEMENTED"))
    );
}
