//! Decoding a request to the function into an [`Event`]: a plain HTTP trigger, or a CloudEvent
//! in binary or structured mode (CloudEvents 1.0 and its HTTP binding and JSON format).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use base64::Engine;
use serde::Serialize;

/// How the function was invoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A plain HTTP trigger: the body as sent (may be empty).
    Http {
        /// The `Content-Type` header, if any.
        content_type: Option<String>,
        /// The body.
        #[serde(serialize_with = "lossy")]
        body: Bytes,
    },
    /// A CloudEvent (v1.0 or 0.3), whichever way it was encoded.
    CloudEvent(CloudEvent),
}

impl Event {
    /// The payload the function should act on: the HTTP body, or the event's data.
    pub fn payload(&self) -> &[u8] {
        match self {
            Event::Http { body, .. } => body,
            Event::CloudEvent(ce) => &ce.data,
        }
    }
}

/// The attributes and data of a CloudEvent (CloudEvents 1.0 §3.1, §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloudEvent {
    /// `id`: unique per source.
    pub id: String,
    /// `source`: who sent it (a URI reference).
    pub source: String,
    /// `type`: what happened (`google.cloud.pubsub.topic.v1.messagePublished`).
    #[serde(rename = "type")]
    pub ty: String,
    /// `specversion`: `1.0` or `0.3`.
    pub specversion: String,
    /// `subject`, if given.
    pub subject: Option<String>,
    /// `time`, as sent (RFC 3339), if given.
    pub time: Option<String>,
    /// `datacontenttype` (binary mode: the `Content-Type` header), if given.
    pub datacontenttype: Option<String>,
    /// Extension attributes (other `ce-*` headers or top-level members), as strings.
    pub extensions: BTreeMap<String, String>,
    /// The data: the body in binary mode; in structured mode `data_base64` decoded, a JSON
    /// string's text when the content type is not JSON, or else `data` serialized as JSON.
    #[serde(serialize_with = "lossy")]
    pub data: Bytes,
}

/// Bytes as text (invalid UTF-8 replaced), for the events' JSON form.
fn lossy<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// Decode the request into an [`Event`] (see the module docs for the three forms).
pub fn decode_event(headers: &HeaderMap, body: Bytes) -> Result<Event, String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if content_type.as_deref().map(media_type).as_deref() == Some("application/cloudevents+json") {
        return structured(&body).map(Event::CloudEvent);
    }
    if headers.contains_key("ce-specversion")
        || headers.contains_key("ce-id")
        || headers.contains_key("ce-type")
    {
        return binary(headers, content_type, body).map(Event::CloudEvent);
    }
    Ok(Event::Http { content_type, body })
}

/// The CloudEvents versions understood.
const SPEC_VERSIONS: [&str; 2] = ["1.0", "0.3"];

/// The required attributes: a known `specversion`, and non-empty `id`, `source`, `type`.
fn check_required(id: &str, source: &str, ty: &str, specversion: &str) -> Result<(), String> {
    if !SPEC_VERSIONS.contains(&specversion) {
        return Err(format!(
            "CloudEvent specversion {specversion:?} is not supported (1.0 or 0.3)"
        ));
    }
    for (name, value) in [("id", id), ("source", source), ("type", ty)] {
        if value.is_empty() {
            return Err(format!("CloudEvent attribute {name} must not be empty"));
        }
    }
    Ok(())
}

/// Binary content mode: attributes in `ce-*` headers (CloudEvents HTTP binding §3.1).
fn binary(
    headers: &HeaderMap,
    content_type: Option<String>,
    body: Bytes,
) -> Result<CloudEvent, String> {
    let mut attrs = BTreeMap::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| format!("header {name} is not visible ASCII"))?;
        // Header values are percent-encoded where they are not printable ASCII (§3.1.3.2).
        let value = percent_decode(value).ok_or_else(|| format!("header {name}: bad escape"))?;
        attrs.insert(attr.to_string(), value);
    }
    let mut take = |name: &str| attrs.remove(name);
    let id = take("id").ok_or("CloudEvent header ce-id is missing")?;
    let source = take("source").ok_or("CloudEvent header ce-source is missing")?;
    let ty = take("type").ok_or("CloudEvent header ce-type is missing")?;
    let specversion = take("specversion").ok_or("CloudEvent header ce-specversion is missing")?;
    check_required(&id, &source, &ty, &specversion)?;
    Ok(CloudEvent {
        subject: take("subject"),
        time: take("time"),
        datacontenttype: content_type,
        id,
        source,
        ty,
        specversion,
        extensions: attrs,
        data: body,
    })
}

/// Structured content mode: the whole event as one JSON object (JSON event format §3).
fn structured(body: &[u8]) -> Result<CloudEvent, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not a JSON CloudEvent: {e}"))?;
    let serde_json::Value::Object(mut members) = value else {
        return Err("a structured CloudEvent must be a JSON object".into());
    };
    let mut text = |name: &str| -> Result<Option<String>, String> {
        match members.remove(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("CloudEvent attribute {name} must be a string")),
        }
    };
    let id = text("id")?.ok_or("CloudEvent attribute id is missing")?;
    let source = text("source")?.ok_or("CloudEvent attribute source is missing")?;
    let ty = text("type")?.ok_or("CloudEvent attribute type is missing")?;
    let specversion = text("specversion")?.ok_or("CloudEvent attribute specversion is missing")?;
    check_required(&id, &source, &ty, &specversion)?;
    let subject = text("subject")?;
    let time = text("time")?;
    let datacontenttype = text("datacontenttype")?;
    let data_base64 = text("data_base64")?;
    let data = members.remove("data");
    let data = match (data, data_base64) {
        (Some(_), Some(_)) => return Err("a CloudEvent has data or data_base64, not both".into()),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("CloudEvent data_base64 is not base64: {e}"))?,
        (None, None) | (Some(serde_json::Value::Null), None) => Vec::new(),
        (Some(serde_json::Value::String(s)), None) if !is_json(datacontenttype.as_deref()) => {
            s.into_bytes()
        }
        (Some(v), None) => serde_json::to_vec(&v).map_err(|e| e.to_string())?,
    };
    let extensions = members
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    Ok(CloudEvent {
        id,
        source,
        ty,
        specversion,
        subject,
        time,
        datacontenttype,
        extensions,
        data: Bytes::from(data),
    })
}

/// JSON data unless a non-JSON content type says otherwise (JSON event format §3.1).
fn is_json(content_type: Option<&str>) -> bool {
    match content_type {
        None => true,
        Some(ct) => {
            let ct = media_type(ct);
            ct == "application/json" || ct.ends_with("+json") || ct == "text/json"
        }
    }
}

/// The media type of a `Content-Type` value: before any parameter, trimmed, lowercase.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// `%XX` escapes decoded; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
    }
}
