//! The answers of the Google APIs: JSON, and Google's JSON errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub(super) fn error(status: StatusCode, message: &str) -> Response {
    let code = status.as_u16();
    let reason = match code {
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        400 => "INVALID_ARGUMENT",
        _ => "INTERNAL",
    };
    (
        status,
        [("content-type", "application/json")],
        json!({"error": {"code": code, "message": message, "status": reason,
            "errors": [{"message": message, "domain": "global", "reason": if code == 404 { "notFound" } else { "conflict" }}]}})
        .to_string(),
    )
        .into_response()
}

pub(super) fn ok(value: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}
