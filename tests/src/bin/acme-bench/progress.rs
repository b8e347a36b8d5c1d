//! Progress goes to stderr, one line at a time, so stdout carries only the report.

pub fn progress(message: impl AsRef<str>) {
    eprintln!("acme-bench: {}", message.as_ref());
}
