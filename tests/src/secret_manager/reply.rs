//! The fake's answers: JSON, and Google's JSON errors.

use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::model::SmState;

/// A Google JSON error.
pub(super) fn error(status: StatusCode, code_name: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "error": {
            "code": status.as_u16(),
            "message": message.into(),
            "status": code_name,
        }
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn not_found(message: impl Into<String>) -> Response {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", message)
}

pub(super) fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

pub(super) fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn unimplemented(method: &Method, path: &str) -> Response {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "UNIMPLEMENTED",
        format!("fake Secret Manager does not serve {method} {path}"),
    )
}

pub(super) fn secret_missing(st: &SmState, id: &str) -> Response {
    not_found(format!(
        "Secret [{}] not found or has no versions.",
        st.secret_name(id)
    ))
}
