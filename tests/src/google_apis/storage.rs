//! Cloud Storage: objects (uploads, metadata, content) and bucket IAM, which the JSON API
//! keeps as a sub-resource (`b/BUCKET/iam`) with base64 etags.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::iam::{iam_key, not_yet_a_member, unseen_member};
use super::reply::{error, ok};
use super::state::State;
use crate::percent::percent_encode;

/// Store an object (its content and the metadata gcloud checks: size and CRC32C).
pub(super) fn put_object(st: &mut State, bucket: &str, name: &str, media: Vec<u8>) -> Value {
    use base64::Engine;
    st.counter += 1;
    let crc =
        base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(&media).to_be_bytes());
    let object = json!({"kind": "storage#object", "name": name, "bucket": bucket,
        "size": media.len().to_string(), "generation": st.counter.to_string(),
        "metageneration": "1", "crc32c": crc, "contentType": "application/octet-stream",
        "id": format!("{bucket}/{name}/{}", st.counter),
        "mediaLink": format!("http://storage.fake/download/storage/v1/b/{bucket}/o/{}?generation={}&alt=media",
            percent_encode(name), st.counter),
        "selfLink": format!("http://storage.fake/storage/v1/b/{bucket}/o/{}", percent_encode(name))});
    let path = format!("b/{bucket}/o/{name}");
    st.resources
        .insert(("storage".into(), path.clone()), object.clone());
    st.media.insert(path, media);
    object
}

/// What storage answers itself: bucket IAM, uploads, and an object's metadata or content;
/// `None` for what the generic store handles.
pub(super) fn respond(
    st: &mut State,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &Value,
    upload: Option<(Value, Vec<u8>)>,
) -> Option<Response> {
    let key = |p: &str| ("storage".to_string(), p.to_string());
    if let Some(bucket_path) = path.strip_suffix("/iam") {
        let k = key(&iam_key(bucket_path));
        return Some(match *method {
            Method::PUT => {
                if let Some(email) = unseen_member(st, body) {
                    return Some(not_yet_a_member(&email));
                }
                let mut policy = body.clone();
                // Etags are base64, as gcloud decodes them.
                use base64::Engine;
                st.counter += 1;
                policy["etag"] = json!(
                    base64::engine::general_purpose::STANDARD.encode(st.counter.to_be_bytes())
                );
                st.resources.insert(k, policy.clone());
                ok(policy)
            }
            _ => ok(st
                .resources
                .get(&k)
                .cloned()
                .unwrap_or(json!({"bindings": [], "etag": "CAE=", "version": 1}))),
        });
    }
    if let Some((metadata, media)) = upload {
        let name = query
            .get("name")
            .cloned()
            .or_else(|| metadata["name"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("upload-{}", st.counter));
        let bucket = path.split('/').nth(1).unwrap_or("").to_string();
        return Some(ok(put_object(st, &bucket, &name, media)));
    }
    // An object's metadata, or its content with `alt=media`.
    if *method == Method::GET && path.contains("/o/") {
        let Some(object) = st.resources.get(&key(path)).cloned() else {
            return Some(error(
                StatusCode::NOT_FOUND,
                &format!(
                    "No such object: {}",
                    path.replacen("b/", "", 1).replacen("/o/", "/", 1)
                ),
            ));
        };
        if query.get("alt").map(String::as_str) == Some("media") {
            let media = st.media.get(path).cloned().unwrap_or_default();
            return Some((StatusCode::OK, media).into_response());
        }
        return Some(ok(object));
    }
    None
}

/// A multipart/related upload: (the metadata part as JSON, the media part).
/// A plain media upload has no metadata.
pub(super) fn upload_parts(content_type: &str, body: &[u8]) -> (Value, Vec<u8>) {
    let Some(boundary) = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches(['"', '\'']).to_string())
    else {
        return (Value::Null, body.to_vec());
    };
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + d.len() <= body.len() {
        if &body[i..i + d.len()] == d {
            starts.push(i);
            i += d.len();
        } else {
            i += 1;
        }
    }
    let mut parts = Vec::new();
    for w in starts.windows(2) {
        let part = &body[w[0] + d.len()..w[1]];
        // Python's email generator ends lines with \n, others with \r\n.
        let (h, sep) = match part.windows(4).position(|x| x == b"\r\n\r\n") {
            Some(h) => (h, 4),
            None => match part.windows(2).position(|x| x == b"\n\n") {
                Some(h) => (h, 2),
                None => continue,
            },
        };
        let mut data = &part[h + sep..];
        if let Some(d) = data
            .strip_suffix(b"\r\n")
            .or_else(|| data.strip_suffix(b"\n"))
        {
            data = d;
        }
        parts.push(data);
    }
    match parts.as_slice() {
        [meta, media, ..] => (
            serde_json::from_slice(meta).unwrap_or(Value::Null),
            media.to_vec(),
        ),
        [media] => (Value::Null, media.to_vec()),
        [] => (Value::Null, body.to_vec()),
    }
}
