//! Mirroring applied changes into pebble-challtestsrv, the DNS server Pebble's VA asks, through
//! its management API (pebble 2.4, verified by running it):
//!
//! * `POST /set-txt {"host":"<name>.","value":"<text>"}` appends one value to the host's TXT
//!   answer (a value set twice is answered twice); `value` must not be empty (400);
//! * `POST /clear-txt {"host":"<name>."}` drops every value of the host; there is no way to
//!   drop one value;
//! * `host` is matched exactly against the query name: it needs the trailing dot, and the
//!   match is case-sensitive (so names are mirrored lower case, as ACME identifiers are);
//! * answers carry TTL 0; a name without values is answered NOERROR with no records.
//!
//! So a change that only adds values to a name sets the new ones, and a change that removes
//! any clears the name and sets what remains: other values of that name are briefly absent.

use std::collections::BTreeMap;

use serde_json::json;

use crate::client::http_request;

/// One call to challtestsrv's management API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MirrorOp {
    Clear(String),
    Set(String, String),
}

/// The calls that take `mirrored` (what challtestsrv serves, per name) to `wanted` for
/// `name`, and records `wanted` as mirrored.
pub(super) fn plan(
    mirrored: &mut BTreeMap<String, Vec<String>>,
    name: &str,
    wanted: Vec<String>,
) -> Vec<MirrorOp> {
    let served = mirrored.get(name).cloned().unwrap_or_default();
    let mut missing = wanted.clone();
    let only_adds = served.iter().all(|v| {
        let pos = missing.iter().position(|m| m == v);
        pos.map(|p| missing.remove(p)).is_some()
    });
    let mut ops = Vec::new();
    let to_set = if only_adds {
        missing
    } else {
        ops.push(MirrorOp::Clear(name.to_string()));
        wanted.clone()
    };
    ops.extend(
        to_set
            .into_iter()
            .map(|v| MirrorOp::Set(name.to_string(), v)),
    );
    if wanted.is_empty() {
        mirrored.remove(name);
    } else {
        mirrored.insert(name.to_string(), wanted);
    }
    ops
}

/// Sends `ops` in order to challtestsrv's management API on 127.0.0.1:`port`; the failures,
/// as messages.
pub(super) async fn run(port: u16, ops: Vec<MirrorOp>) -> Vec<String> {
    let mut errors = Vec::new();
    for op in ops {
        let (path, body) = match &op {
            MirrorOp::Clear(host) => ("/clear-txt", json!({ "host": host })),
            MirrorOp::Set(host, value) => ("/set-txt", json!({ "host": host, "value": value })),
        };
        let headers = [("content-type", "application/json")];
        let result = http_request(port, "POST", path, &headers, body.to_string().as_bytes()).await;
        match result {
            Ok(resp) if resp.status == 200 => {}
            Ok(resp) => errors.push(format!(
                "challtestsrv {path} {body}: {} {}",
                resp.status,
                resp.body_text()
            )),
            Err(e) => errors.push(format!("challtestsrv {path} {body}: {e:#}")),
        }
    }
    errors
}
