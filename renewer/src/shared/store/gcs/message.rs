//! Errors of the Cloud Storage store as one short line: the HTTP status and the service's
//! message, or an error and its causes, never object content.

/// A one-line description of a client library error: the HTTP status and the service's
/// message when there was an answer, else the error and its causes.
pub(super) fn describe(e: &google_cloud_storage::Error) -> String {
    match (e.http_status_code(), e.status()) {
        (Some(code), Some(status)) => with_detail(format!("HTTP {code}"), &status.message),
        (Some(code), None) => with_detail(
            format!("HTTP {code}"),
            &e.http_payload()
                .map(|p| error_message(p))
                .unwrap_or_default(),
        ),
        (None, Some(status)) => with_detail(status.code.name().to_string(), &status.message),
        (None, None) => one_line(e),
    }
}

/// `head: detail` on one line, or `head` when there is no detail.
pub(super) fn with_detail(head: String, detail: &str) -> String {
    let detail = truncate_line(detail);
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

/// The `error.message` of a JSON API error document, else the start of the body as text.
pub(super) fn error_message(body: &[u8]) -> String {
    let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    truncate_line(&message)
}

/// An error and its causes on one line (causes already in the text are not repeated).
pub(super) fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    truncate_line(&text)
}

/// Control characters (newlines) become spaces, runs of spaces one, at most 300 characters.
fn truncate_line(s: &str) -> String {
    const MAX: usize = 300;
    let mut out = String::with_capacity(s.len().min(MAX));
    let mut count = 0;
    for c in s.trim().chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && out.ends_with(' ') {
            continue;
        }
        if count == MAX {
            out.push('…');
            break;
        }
        out.push(c);
        count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_one_short_line() {
        let body = br#"{"error":{"code":412,"message":"At least one of the pre-conditions you specified did not hold.","errors":[]}}"#;
        assert_eq!(
            error_message(body),
            "At least one of the pre-conditions you specified did not hold."
        );
        assert_eq!(error_message(b"Not Found\n"), "Not Found");
        let long = "x\n".repeat(1000);
        let line = truncate_line(&long);
        assert!(!line.contains('\n'));
        assert!(line.chars().count() <= 301);
    }
}
