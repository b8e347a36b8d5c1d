//! One Secret Manager API call: bounded by [`CALL_TIMEOUT`], its error classified (to act on
//! `NOT_FOUND` and friends) and described on one line that names the call and the resource,
//! never request or response content.

use std::future::Future;

use google_cloud_gax::error::rpc::Code;

use super::CALL_TIMEOUT;

/// A failed call, classified enough to act on `NOT_FOUND` and friends.
#[derive(Debug)]
pub(super) struct CallError {
    /// The service's status code, when it answered with one.
    code: Option<Code>,
    /// `<rpc> <resource>: <status>: <message>`.
    pub(super) message: String,
}

impl CallError {
    /// Whether the service answered with `code`.
    pub(super) fn is(&self, code: Code) -> bool {
        self.code == Some(code)
    }
}

/// Run one API call under [`CALL_TIMEOUT`], turning its error into a message that names the
/// call, the resource and the service's answer (never request or response content).
pub(super) async fn call<T>(
    rpc: &str,
    resource: &str,
    fut: impl Future<Output = google_cloud_secretmanager_v1::Result<T>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(rpc, resource, &e)),
        Err(_) => Err(CallError {
            code: Some(Code::DeadlineExceeded),
            message: format!("{rpc} {resource}: no answer within {CALL_TIMEOUT:?}"),
        }),
    }
}

/// The service's status and message (or the client's error), as a [`CallError`].
fn classify(rpc: &str, resource: &str, e: &google_cloud_secretmanager_v1::Error) -> CallError {
    let http = e
        .http_status_code()
        .map(|c| format!("HTTP {c} "))
        .unwrap_or_default();
    match e.status() {
        Some(status) => CallError {
            code: Some(status.code),
            message: format!(
                "{rpc} {resource}: {http}{}: {}",
                status.code.name(),
                truncate(&status.message, 500)
            ),
        },
        None => CallError {
            code: None,
            message: format!("{rpc} {resource}: {http}{}", truncate(&e.to_string(), 500)),
        },
    }
}

/// At most `max` bytes of `s` (cut on a character boundary), `…` marking a cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
