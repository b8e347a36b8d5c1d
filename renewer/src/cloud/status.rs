//! `renewer status`: what is in service and when it renews, from the store alone (no CA
//! round trip; the ARI window is the one cached by the last run).

use serde::Serialize;
use time::OffsetDateTime;

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
    pub last_error: Option<String>,
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
        let next_renewal = if read_error.is_some() {
            "unknown (unreadable current certificate)".to_string()
        } else if decision.renew {
            format!("now ({})", decision.reason)
        } else {
            decision
                .next_renewal
                .map(policy::rfc3339)
                .unwrap_or_else(|| "-".into())
        };
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
            last_error: read_error.or(state_error).or(st.last_error),
        });
    }
    rows
}

/// A plain-text table, one certificate per row.
pub fn render(rows: &[StatusRow]) -> String {
    let header = [
        "NAME",
        "NAMES",
        "ISSUER",
        "NOT AFTER",
        "DAYS LEFT",
        "NEXT RENEWAL",
        "LAST ERROR",
    ];
    let dash = || "-".to_string();
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.domains.join(","),
                r.issuer.clone().unwrap_or_else(dash),
                r.not_after.map(policy::rfc3339).unwrap_or_else(dash),
                r.days_left.map(|d| d.to_string()).unwrap_or_else(dash),
                r.next_renewal.clone(),
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
    out
}
