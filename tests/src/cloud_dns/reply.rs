//! The fake's answers: JSON, and Google's JSON errors as Cloud DNS sends them (the legacy
//! `errors[]` list with its `reason`, next to the canonical `status`).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// A refused call: HTTP status, the legacy `reason` (`notFound`, `alreadyExists`,
/// `conditionNotMet`, `invalid`, `required`, `forbidden`, …) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub(super) fn new(status: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason,
            message: message.into(),
        }
    }

    pub(super) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "notFound", message)
    }

    pub(super) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid", message)
    }

    /// `The '<what>' parameter is required but was missing.`
    pub(super) fn required(what: &str) -> ApiError {
        ApiError::new(
            400,
            "required",
            format!("The '{what}' parameter is required but was missing."),
        )
    }

    /// The canonical code name Google sends in `error.status`.
    pub fn status_name(&self) -> &'static str {
        match self.status {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            409 => "ALREADY_EXISTS",
            412 => "FAILED_PRECONDITION",
            429 => "RESOURCE_EXHAUSTED",
            501 => "UNIMPLEMENTED",
            503 => "UNAVAILABLE",
            _ => "INTERNAL",
        }
    }

    /// `{"error":{"code":…,"message":…,"status":…,"errors":[{"reason":…,"message":…,"domain":"global"}]}}`
    pub fn to_json(&self) -> Value {
        json!({
            "error": {
                "code": self.status,
                "message": self.message,
                "status": self.status_name(),
                "errors": [{
                    "reason": self.reason,
                    "message": self.message,
                    "domain": "global",
                }],
            }
        })
    }

    pub(super) fn response(&self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, &self.to_json())
    }
}

pub(super) fn ok(body: &Value) -> Response {
    json_response(StatusCode::OK, body)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}
