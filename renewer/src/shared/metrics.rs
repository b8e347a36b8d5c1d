//! Prometheus text exposition (format 0.0.4) of the renewer's state, for `GET /metrics` of
//! `renewer serve`. Pure: [`render`] turns a [`Snapshot`] into text; `serve` fills the snapshot
//! from the store (what is in service) and from its own counters (what this process did).
//!
//! The node agents' `/metrics` (`renewer sync --watch`, `renewer members --watch`) write
//! their few families with [`family`] and [`single`], and all three answer with [`response`].

use std::collections::BTreeMap;
use std::fmt::{Display, Write};

use axum::http::header;
use axum::response::{IntoResponse, Response};

use time::OffsetDateTime;

/// The content type Prometheus expects for the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What one certificate looks like right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CertSample {
    /// notAfter of the certificate in service (none issued yet: absent).
    pub not_after: Option<OffsetDateTime>,
    /// Last successful renewal recorded in the store's state (by any renewer).
    pub last_success: Option<OffsetDateTime>,
    /// Consecutive failed renewals recorded in the store's state.
    pub consecutive_failures: u32,
    /// Directory URL of the CA that issued the certificate in service, if known.
    pub ca: Option<String>,
}

/// Counters of this process since it started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Per certificate: renewals that made a new certificate current.
    pub renewals: BTreeMap<String, u64>,
    /// Per certificate: passes in which its renewal failed.
    pub failures: BTreeMap<String, u64>,
    /// Passes that ended with every certificate fine / with a failure.
    pub passes_ok: u64,
    pub passes_failed: u64,
    /// Duration of the last pass, seconds, and when it ended.
    pub last_pass_seconds: Option<f64>,
    pub last_pass_end: Option<OffsetDateTime>,
    /// Sum of all pass durations, seconds (with the pass count: a mean).
    pub pass_seconds_sum: f64,
}

/// Everything `/metrics` shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Per configured certificate; `None` when the store could not be read for it.
    pub certificates: BTreeMap<String, Option<CertSample>>,
    pub counters: Counters,
    /// Whether every store read of this scrape succeeded.
    pub store_up: bool,
}

fn unix(t: OffsetDateTime) -> String {
    t.unix_timestamp().to_string()
}

/// Label values are quoted; `\`, `"` and newlines are escaped (exposition format spec).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A per-certificate counter's value: 0 for a certificate this process has not counted yet.
fn count(counts: &BTreeMap<String, u64>, name: &str) -> String {
    counts.get(name).copied().unwrap_or(0).to_string()
}

/// The `# HELP` and `# TYPE` lines of family `name` (`kind`: `gauge`, `counter`, `summary`).
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A family with one sample and no labels: [`family`]'s lines, then `name value`.
pub(crate) fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The answer to `GET /metrics`: `text`, with the exposition format's [`CONTENT_TYPE`].
pub(crate) fn response(text: String) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// The exposition text. Every family is present with its HELP/TYPE lines even without samples,
/// so dashboards and alerts can be written before the first issuance.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let certs = &s.certificates;

    let per_cert =
        |out: &mut String,
         metric: &str,
         kind: &str,
         help: &str,
         value: &dyn Fn(&str, Option<&CertSample>) -> Option<String>| {
            family(out, metric, kind, help);
            for (name, sample) in certs {
                if let Some(v) = value(name, sample.as_ref()) {
                    let _ = writeln!(out, "{metric}{{certificate=\"{}\"}} {v}", label(name));
                }
            }
        };
    per_cert(
        &mut out,
        "acme_edge_certificate_not_after_timestamp_seconds",
        "gauge",
        "Expiry (notAfter) of the certificate in service, Unix time.",
        &|_, c| c.and_then(|c| c.not_after).map(unix),
    );
    per_cert(
        &mut out,
        "acme_edge_certificate_last_success_timestamp_seconds",
        "gauge",
        "Last successful renewal of the certificate (any renewer), Unix time.",
        &|_, c| c.and_then(|c| c.last_success).map(unix),
    );
    per_cert(
        &mut out,
        "acme_edge_certificate_consecutive_failures",
        "gauge",
        "Failed renewals in a row recorded in the store (0 after a success).",
        &|_, c| c.map(|c| c.consecutive_failures.to_string()),
    );
    per_cert(
        &mut out,
        "acme_edge_renewal_failures_total",
        "counter",
        "Failed renewals of the certificate in passes of this process.",
        &|name, _| Some(count(&s.counters.failures, name)),
    );
    family(
        &mut out,
        "acme_edge_certificate_info",
        "gauge",
        "Always 1: which CA (directory URL) issued the certificate in service.",
    );
    for (name, sample) in certs {
        if let Some(ca) = sample.as_ref().and_then(|c| c.ca.as_deref()) {
            let _ = writeln!(
                out,
                "acme_edge_certificate_info{{certificate=\"{}\",ca=\"{}\"}} 1",
                label(name),
                label(ca)
            );
        }
    }
    per_cert(
        &mut out,
        "acme_edge_renewals_total",
        "counter",
        "New certificates made current by passes of this process.",
        &|name, _| Some(count(&s.counters.renewals, name)),
    );
    family(
        &mut out,
        "acme_edge_passes_total",
        "counter",
        "Renewal passes run by this process, by result.",
    );
    let _ = writeln!(
        out,
        "acme_edge_passes_total{{result=\"ok\"}} {}",
        s.counters.passes_ok
    );
    let _ = writeln!(
        out,
        "acme_edge_passes_total{{result=\"failed\"}} {}",
        s.counters.passes_failed
    );
    family(
        &mut out,
        "acme_edge_pass_duration_seconds",
        "summary",
        "Duration of renewal passes run by this process.",
    );
    let _ = writeln!(
        out,
        "acme_edge_pass_duration_seconds_sum {}",
        s.counters.pass_seconds_sum
    );
    let _ = writeln!(
        out,
        "acme_edge_pass_duration_seconds_count {}",
        s.counters.passes_ok + s.counters.passes_failed
    );
    family(
        &mut out,
        "acme_edge_last_pass_duration_seconds",
        "gauge",
        "Duration of the last renewal pass of this process.",
    );
    if let Some(d) = s.counters.last_pass_seconds {
        let _ = writeln!(out, "acme_edge_last_pass_duration_seconds {d}");
    }
    family(
        &mut out,
        "acme_edge_last_pass_end_timestamp_seconds",
        "gauge",
        "When the last renewal pass of this process ended, Unix time.",
    );
    if let Some(t) = s.counters.last_pass_end {
        let _ = writeln!(out, "acme_edge_last_pass_end_timestamp_seconds {}", unix(t));
    }
    family(
        &mut out,
        "acme_edge_store_up",
        "gauge",
        "1 if the store could be read for this scrape, else 0.",
    );
    let _ = writeln!(out, "acme_edge_store_up {}", u8::from(s.store_up));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn renders_every_family_with_samples() {
        let mut snapshot = Snapshot {
            store_up: true,
            ..Default::default()
        };
        snapshot.certificates.insert(
            "app".into(),
            Some(CertSample {
                not_after: Some(datetime!(2026-12-01 00:00 UTC)),
                last_success: Some(datetime!(2026-11-01 00:00 UTC)),
                consecutive_failures: 2,
                ca: Some("https://ca.test/dir".into()),
            }),
        );
        snapshot.certificates.insert("new".into(), None);
        snapshot.counters.failures.insert("app".into(), 3);
        snapshot.counters.renewals.insert("new".into(), 1);
        snapshot.counters.passes_ok = 4;
        snapshot.counters.passes_failed = 1;
        snapshot.counters.pass_seconds_sum = 12.5;
        snapshot.counters.last_pass_seconds = Some(2.5);
        let text = render(&snapshot);
        for line in [
            "acme_edge_certificate_not_after_timestamp_seconds{certificate=\"app\"} 1796083200",
            "acme_edge_certificate_last_success_timestamp_seconds{certificate=\"app\"} 1793491200",
            "acme_edge_certificate_consecutive_failures{certificate=\"app\"} 2",
            "acme_edge_certificate_info{certificate=\"app\",ca=\"https://ca.test/dir\"} 1",
            "acme_edge_renewal_failures_total{certificate=\"app\"} 3",
            "acme_edge_renewal_failures_total{certificate=\"new\"} 0",
            "acme_edge_renewals_total{certificate=\"new\"} 1",
            "acme_edge_passes_total{result=\"ok\"} 4",
            "acme_edge_passes_total{result=\"failed\"} 1",
            "acme_edge_pass_duration_seconds_sum 12.5",
            "acme_edge_pass_duration_seconds_count 5",
            "acme_edge_last_pass_duration_seconds 2.5",
            "acme_edge_store_up 1",
            "# TYPE acme_edge_renewal_failures_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // No sample for a certificate the store could not tell about.
        assert!(!text.contains("not_after_timestamp_seconds{certificate=\"new\"}"));
    }

    #[test]
    fn every_sample_line_is_well_formed() {
        let text = render(&Snapshot::default());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
