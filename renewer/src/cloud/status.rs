//! `renewer status`: what is in service and when it renews, from the store alone (no CA
//! round trip; the ARI window is the one cached by the last run).

use serde::Serialize;
use time::OffsetDateTime;

use crate::cloud::inflight::{self, InFlight};
use crate::cloud::policy::{self, Inputs};
use crate::cloud::run::Renewer;
use crate::cloud::state;
use crate::shared::bundle::BundleStore;
use crate::shared::certinfo::days_left;

#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub name: String,
    /// Names in the certificate in service (the configured ones when there is none).
    pub domains: Vec<String>,
    pub issuer: Option<String>,
    pub serial: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    pub days_left: Option<i64>,
    /// "now (reason)" or an RFC 3339 time.
    pub next_renewal: String,
    /// The ACME profile the certificate in service was ordered with.
    pub profile: Option<String>,
    /// Directory URL of the CA that issued it (the primary or an `[[acme.fallback]]`).
    pub ca: Option<String>,
    /// Its lifetime (notAfter − notBefore), in hours: 144 for a 6-day certificate.
    pub lifetime_hours: Option<i64>,
    /// The share of its lifetime left at which the lifetime rule renews it: the configured
    /// `renewal.fraction_left`, or more for a short-lived certificate.
    pub renew_with_fraction_left: Option<f64>,
    /// The rule in words, for the table: "1/3 left", "1/2 left (short-lived)", with "ARI or"
    /// in front when the CA's renewal window is known.
    pub renewal_rule: Option<String>,
    pub last_error: Option<String>,
    /// The order the renewer is driving (`certs/<name>/order.json`): the next renewal resumes
    /// it rather than order again, unless the CA can no longer finish it (RFC 8555 §7.1.6).
    pub order_in_flight: Option<OrderInFlight>,
}

/// An order in flight, as `status` shows it (never its key).
#[derive(Debug, Clone, Serialize)]
pub struct OrderInFlight {
    /// The order's URL at the CA.
    pub url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub placed_at: OffsetDateTime,
    /// Directory URL of the CA it was placed with (absent: the primary).
    pub ca: Option<String>,
    /// HTTP-01 challenge answers it still lists: left by a run that stopped mid-order; the
    /// next pass removes them once that run's lease is free.
    pub challenge_answers: usize,
    /// DNS-01 record names it still lists, likewise.
    pub dns_records: usize,
}

impl From<InFlight> for OrderInFlight {
    fn from(rec: InFlight) -> Self {
        OrderInFlight {
            url: rec.url,
            placed_at: rec.placed_at,
            ca: rec.directory,
            challenge_answers: rec.tokens.len(),
            dns_records: rec.dns_records.len(),
        }
    }
}

pub async fn collect(renewer: &Renewer) -> Vec<StatusRow> {
    let now = OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    for cert in &renewer.config.certificates {
        // An unreadable state is an error to show: the failures it records are unknown.
        let (st, state_error) = match state::read(&renewer.store, &cert.name).await {
            Ok(st) => (st, None),
            Err(e) => (state::CertState::default(), Some(e)),
        };
        let (current, read_error) = match renewer.primary.current_meta(&cert.name).await {
            Ok(c) => (c, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let ari = current
            .as_ref()
            .filter(|_| renewer.config.renewal.ari)
            .and_then(|c| st.ari_window(&c.serial));
        let decision = policy::decide(&Inputs {
            now,
            config: cert,
            current: current.as_ref(),
            fraction_left: renewer.config.renewal.fraction_left,
            ari,
            failures: st.failures(),
            force: false,
        });
        let configured = renewer.config.renewal.fraction_left;
        let rule = current.as_ref().map(|c| {
            let f = policy::effective_fraction(c, configured);
            let short = c.not_after - c.not_before <= policy::SHORT_LIVED;
            let text = format!(
                "{}{} left{}",
                if ari.is_some() { "ARI or " } else { "" },
                fraction_text(f),
                if short { " (short-lived)" } else { "" }
            );
            (f, text)
        });
        let next_renewal = if read_error.is_some() {
            "unknown (unreadable current certificate)".to_string()
        } else if decision.renew {
            format!("now ({})", decision.reason)
        } else {
            let at = decision
                .next_renewal
                .map(policy::rfc3339)
                .unwrap_or_else(|| "-".into());
            match decision.reason {
                policy::Reason::BackingOff { failures, .. } => {
                    format!("{at} (backing off after {failures} failure(s))")
                }
                _ => at,
            }
        };
        // Unreadable is shown as none: the renewer itself treats it so (one new order).
        let order_in_flight = inflight::load(&renewer.store, &cert.name)
            .await
            .ok()
            .flatten()
            .map(OrderInFlight::from);
        rows.push(StatusRow {
            name: cert.name.clone(),
            domains: current
                .as_ref()
                .map(|c| c.domains.clone())
                .unwrap_or_else(|| cert.normalized_domains()),
            issuer: current.as_ref().map(|c| c.issuer.clone()),
            serial: current.as_ref().map(|c| c.serial.clone()),
            not_after: current.as_ref().map(|c| c.not_after),
            days_left: current.as_ref().map(|c| days_left(c.not_after, now)),
            next_renewal,
            profile: current.as_ref().and_then(|c| c.profile.clone()),
            ca: current.as_ref().and_then(|c| c.ca.clone()),
            lifetime_hours: current
                .as_ref()
                .map(|c| (c.not_after - c.not_before).whole_hours()),
            renew_with_fraction_left: rule.as_ref().map(|(f, _)| *f),
            renewal_rule: rule.map(|(_, text)| text),
            last_error: read_error.or(state_error).or(st.last_error),
            order_in_flight,
        });
    }
    rows
}

/// The host of a directory URL (`acme-v02.api.letsencrypt.org`), to keep the table narrow;
/// `--json` has the whole URL.
fn ca_host(directory: &str) -> String {
    let rest = directory.split_once("://").map_or(directory, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

/// 1/2, 1/3, 1/4 as fractions; anything else as a percentage.
fn fraction_text(f: f64) -> String {
    (2..=4)
        .find(|d| (f - 1.0 / f64::from(*d)).abs() < 1e-9)
        .map(|d| format!("1/{d}"))
        .unwrap_or_else(|| format!("{:.0}%", f * 100.0))
}

/// A plain-text table, one certificate per row.
pub fn render(rows: &[StatusRow]) -> String {
    let header = [
        "NAME",
        "NAMES",
        "ISSUER",
        "CA",
        "NOT AFTER",
        "DAYS LEFT",
        "NEXT RENEWAL",
        "RULE",
        "PROFILE",
        "LAST ERROR",
    ];
    let dash = || "-".to_string();
    let table: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.domains.join(","),
                r.issuer.clone().unwrap_or_else(dash),
                r.ca.as_deref().map(ca_host).unwrap_or_else(dash),
                r.not_after.map(policy::rfc3339).unwrap_or_else(dash),
                r.days_left.map(|d| d.to_string()).unwrap_or_else(dash),
                r.next_renewal.clone(),
                r.renewal_rule.clone().unwrap_or_else(dash),
                r.profile.clone().unwrap_or_else(dash),
                r.last_error.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths.iter()).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in &table {
        line(row.iter().map(String::as_str).collect());
    }
    for (name, order) in rows
        .iter()
        .filter_map(|r| r.order_in_flight.as_ref().map(|o| (&r.name, o)))
    {
        out.push_str(&order_line(name, order));
        out.push('\n');
    }
    out
}

/// One line under the table per order in flight.
fn order_line(name: &str, order: &OrderInFlight) -> String {
    let mut line = format!(
        "{name}: order in flight since {}",
        policy::rfc3339(order.placed_at)
    );
    if let Some(ca) = &order.ca {
        line.push_str(&format!(" at {}", ca_host(ca)));
    }
    line.push_str(" (the next renewal resumes it if the CA still can)");
    let left: Vec<String> = [
        (order.challenge_answers, "challenge answer"),
        (order.dns_records, "DNS-01 record"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}{}", if n == 1 { "" } else { "s" }))
    .collect();
    if !left.is_empty() {
        line.push_str(&format!(
            "; left by an interrupted run: {} (removed by the next pass once its lease is free)",
            left.join(", ")
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_read_as_people_write_them() {
        assert_eq!(fraction_text(0.5), "1/2");
        assert_eq!(fraction_text(1.0 / 3.0), "1/3");
        assert_eq!(fraction_text(0.25), "1/4");
        assert_eq!(fraction_text(0.2), "20%");
    }

    #[test]
    fn the_table_shows_the_rule_and_the_profile() {
        let row = StatusRow {
            name: "app".into(),
            domains: vec!["a.example.com".into()],
            issuer: Some("CN=R10".into()),
            serial: Some("0a".into()),
            not_after: None,
            days_left: Some(5),
            next_renewal: "2026-12-02T00:00:00Z".into(),
            profile: Some("shortlived".into()),
            ca: Some("https://acme-v02.api.letsencrypt.org/directory".into()),
            lifetime_hours: Some(160),
            renew_with_fraction_left: Some(0.5),
            renewal_rule: Some("1/2 left (short-lived)".into()),
            last_error: None,
            order_in_flight: None,
        };
        let table = render(std::slice::from_ref(&row));
        let mut lines = table.lines();
        let header = lines.next().unwrap_or("");
        assert!(
            header.contains("RULE") && header.contains("PROFILE"),
            "{table}"
        );
        let line = lines.next().unwrap_or("");
        assert!(line.contains("1/2 left (short-lived)"), "{table}");
        assert!(line.contains("shortlived"), "{table}");
        assert!(line.contains(" acme-v02.api.letsencrypt.org "), "{table}");
        assert_eq!(lines.next(), None, "{table}");

        // An order in flight: a line under the table, with what an interrupted run left.
        let order = OrderInFlight {
            url: "https://ca.test/order/1".into(),
            placed_at: time::macros::datetime!(2026-12-01 10:00 UTC),
            ca: Some("https://acme-v02.api.letsencrypt.org/directory".into()),
            challenge_answers: 0,
            dns_records: 2,
        };
        let with_order = StatusRow {
            order_in_flight: Some(order.clone()),
            ..row
        };
        let table = render(&[with_order]);
        assert_eq!(
            table.lines().nth(2),
            Some(
                "app: order in flight since 2026-12-01T10:00:00Z at acme-v02.api.letsencrypt.org \
                 (the next renewal resumes it if the CA still can); left by an interrupted run: \
                 2 DNS-01 records (removed by the next pass once its lease is free)"
            ),
            "{table}"
        );
        let clean = OrderInFlight {
            ca: None,
            dns_records: 0,
            challenge_answers: 1,
            ..order
        };
        assert_eq!(
            order_line("app", &clean),
            "app: order in flight since 2026-12-01T10:00:00Z (the next renewal resumes it if the \
             CA still can); left by an interrupted run: 1 challenge answer (removed by the next \
             pass once its lease is free)"
        );
    }
}
