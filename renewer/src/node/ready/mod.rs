//! `renewer sync --watch`'s status: whether this node is ready to take users, and its metrics.
//!
//! The load balancer's health check and the managed instance group's autohealing ask Envoy's
//! `/.edge/healthz`, which Envoy answers from this agent's `/ready` (deploy/envoy/render.sh,
//! `READY_ADDRESS`). A node is ready when what users need works on it:
//!
//! * its app answers its health URL, and
//! * Envoy presents on :443 the certificate `sync` installed (checked by a TLS handshake, every
//!   few seconds), or, before any certificate exists anywhere (a first deploy), the node is
//!   bootstrapping: it must answer HTTP-01 challenges for the first issuance to happen.
//!
//! With `max-unavailable=0`, a rolling update waits for a new node to be ready before it
//! removes an old one, so a node that cannot serve the certificate never replaces one that can.
//!
//! [`assess`] is the pure rule; [`SyncStatus`] records what each sync saw (here);
//! [`LocalProbe`] does the two checks (`probe`); [`serve`] runs the checks and answers
//! `/ready` and `/metrics` (`server`).

mod probe;
mod server;

use std::fmt::Write as _;
use std::sync::Mutex;

use time::OffsetDateTime;

use super::sync::{missing_names, Installed, Outcome, SyncError};
use crate::shared::metrics::{family, single};

pub use probe::{LocalProbe, NodeProbe};
pub use server::serve;

/// How long after a new certificate is installed Envoy may still present the one it replaced
/// and the node stays ready: Envoy reloads within a second or two of the swap, and a health
/// check flapping at every renewal would pull every node out of the load balancer at once.
const RELOAD_GRACE: time::Duration = time::Duration::seconds(60);

/// What the source said at the last sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SourceView {
    /// Not read yet.
    #[default]
    NotRead,
    /// Read: no certificate has been issued yet.
    Empty,
    /// Read: it has a certificate, installed or kept.
    Current,
    /// Its certificate was refused, or it could not be read (the message says which).
    Failing(String),
}

/// What `renewer sync --watch` knows, updated after every sync and every readiness check.
#[derive(Debug, Clone, Default)]
pub struct StatusState {
    /// What the source said at the last sync.
    pub source: SourceView,
    /// What is installed now (read back from the directory after each sync).
    pub installed: Option<Installed>,
    /// The serial the current certificate replaced, and when.
    pub replaced: Option<(String, OffsetDateTime)>,
    /// Configured names the installed certificate lacks.
    pub missing: Vec<String>,
    /// Certificates installed since the agent started.
    pub installs: u64,
    /// Syncs that failed since the agent started (source unreadable, refused, not installed).
    pub failures: u64,
    /// When a sync last read the source successfully.
    pub last_success: Option<OffsetDateTime>,
    /// The last readiness verdict.
    pub readiness: Readiness,
}

/// The verdict `/ready` serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// 200 or 503.
    pub ready: bool,
    /// Why, in words, for the answer's body and the logs.
    pub reason: String,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            ready: false,
            reason: "starting".into(),
        }
    }
}

impl Readiness {
    fn yes(reason: impl Into<String>) -> Readiness {
        Readiness {
            ready: true,
            reason: reason.into(),
        }
    }

    fn no(reason: impl Into<String>) -> Readiness {
        Readiness {
            ready: false,
            reason: reason.into(),
        }
    }
}

/// What the two checks saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The app's health URL (`Ok` also when no URL is configured).
    pub app: Result<(), String>,
    /// The serial Envoy presented on the TLS port (`None`: not asked, nothing is installed).
    pub served: Option<Result<String, String>>,
}

/// The readiness rule (see the module documentation).
pub fn assess(state: &StatusState, observed: &Observed, now: OffsetDateTime) -> Readiness {
    if let Err(e) = &observed.app {
        return Readiness::no(format!("app: {e}"));
    }
    let Some(installed) = &state.installed else {
        return match &state.source {
            SourceView::Empty => Readiness::yes(
                "bootstrapping: no certificate has been issued yet; ACME challenges are answered",
            ),
            SourceView::NotRead => Readiness::no("the certificate source has not been read yet"),
            SourceView::Current => Readiness::no("no certificate installed yet"),
            SourceView::Failing(e) => Readiness::no(format!("no certificate installed: {e}")),
        };
    };
    let served = match &observed.served {
        Some(Ok(serial)) => serial,
        Some(Err(e)) => return Readiness::no(format!("TLS: {e}")),
        None => return Readiness::no("TLS not checked yet"),
    };
    let gap = if state.missing.is_empty() {
        String::new()
    } else {
        format!(" (it lacks {})", state.missing.join(", "))
    };
    if *served == installed.serial {
        let expired = if installed.not_after <= now {
            " (expired, and the source has nothing newer)"
        } else {
            ""
        };
        return Readiness::yes(format!("serving {served}{gap}{expired}"));
    }
    match &state.replaced {
        Some((previous, at)) if previous == served && now - *at < RELOAD_GRACE => Readiness::yes(
            format!("serving {served} while Envoy loads {}", installed.serial),
        ),
        _ => Readiness::no(format!(
            "Envoy presents certificate {served}, not the installed {}",
            installed.serial
        )),
    }
}

/// The shared status of one `renewer sync --watch`.
#[derive(Debug, Default)]
pub struct SyncStatus {
    state: Mutex<StatusState>,
    wanted: Vec<String>,
}

impl SyncStatus {
    /// A status for a certificate configured with `wanted` names, starting from what is
    /// installed.
    pub fn new(wanted: Vec<String>, installed: Option<Installed>) -> SyncStatus {
        let missing = installed
            .as_ref()
            .map(|i| missing_names(&i.domains, &wanted))
            .unwrap_or_default();
        SyncStatus {
            state: Mutex::new(StatusState {
                installed,
                missing,
                ..StatusState::default()
            }),
            wanted,
        }
    }

    /// A copy of the state.
    pub fn state(&self) -> StatusState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut StatusState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    /// Record a sync: its result and what the directory holds after it.
    pub fn record(
        &self,
        result: &Result<Outcome, SyncError>,
        installed_now: Option<Installed>,
        now: OffsetDateTime,
    ) {
        let wanted = self.wanted.clone();
        self.update(|s| {
            match result {
                Ok(Outcome::Installed { .. }) => {
                    s.installs += 1;
                    s.source = SourceView::Current;
                    s.last_success = Some(now);
                }
                Ok(Outcome::Unchanged(_)) => {
                    s.source = SourceView::Current;
                    s.last_success = Some(now);
                }
                Err(SyncError::Missing { .. }) => {
                    s.source = SourceView::Empty;
                    s.last_success = Some(now);
                }
                Err(e) => {
                    s.failures += 1;
                    s.source = SourceView::Failing(e.to_string());
                }
            }
            let before = s.installed.as_ref().map(|i| i.serial.clone());
            let after = installed_now.as_ref().map(|i| i.serial.clone());
            if let Some(b) = before.filter(|b| after.as_ref() != Some(b)) {
                s.replaced = Some((b, now));
            }
            s.missing = installed_now
                .as_ref()
                .map(|i| missing_names(&i.domains, &wanted))
                .unwrap_or_default();
            s.installed = installed_now;
        });
    }

    /// Record a readiness check; returns the verdict.
    pub fn observe(&self, observed: &Observed, now: OffsetDateTime) -> Readiness {
        let mut verdict = Readiness::default();
        self.update(|s| {
            verdict = assess(s, observed, now);
            if verdict != s.readiness {
                if verdict.ready {
                    tracing::info!(reason = verdict.reason, "node ready");
                } else {
                    tracing::warn!(reason = verdict.reason, "node not ready");
                }
            }
            s.readiness = verdict.clone();
        });
        verdict
    }

    /// Prometheus text of the status.
    pub fn metrics(&self) -> String {
        let s = self.state();
        let mut out = String::new();
        single(
            &mut out,
            "acme_edge_sync_ready",
            "gauge",
            "1 when this node is ready: its app answers and Envoy serves the installed certificate (or no certificate exists yet).",
            u8::from(s.readiness.ready),
        );
        single(
            &mut out,
            "acme_edge_sync_missing_names",
            "gauge",
            "Configured names the installed certificate does not cover (served anyway until the renewer adds them).",
            s.missing.len(),
        );
        single(
            &mut out,
            "acme_edge_sync_certificate_not_after_timestamp_seconds",
            "gauge",
            "Expiry of the installed certificate (0: none installed).",
            s.installed
                .as_ref()
                .map_or(0, |i| i.not_after.unix_timestamp()),
        );
        single(
            &mut out,
            "acme_edge_sync_installs_total",
            "counter",
            "New certificates installed for Envoy.",
            s.installs,
        );
        single(
            &mut out,
            "acme_edge_sync_failures_total",
            "counter",
            "Syncs that could not read the source, refused its certificate, or could not install it.",
            s.failures,
        );
        single(
            &mut out,
            "acme_edge_sync_last_success_timestamp_seconds",
            "gauge",
            "When a sync last read the source (0: never).",
            s.last_success.map_or(0, |t| t.unix_timestamp()),
        );
        if !s.missing.is_empty() {
            family(
                &mut out,
                "acme_edge_sync_missing_name",
                "gauge",
                "A configured name the installed certificate lacks.",
            );
            for name in &s.missing {
                let _ = writeln!(out, "acme_edge_sync_missing_name{{name=\"{name}\"}} 1");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::config::syntax::AppUrl;

    fn installed(serial: &str, names: &[&str], days: i64) -> Installed {
        let now = OffsetDateTime::now_utc();
        Installed {
            name: "site".into(),
            serial: serial.into(),
            domains: names.iter().map(|s| s.to_string()).collect(),
            issuer: "CN=test".into(),
            not_before: now - time::Duration::days(1),
            not_after: now + time::Duration::days(days),
            chain_sha256: "00".into(),
            source: "test".into(),
            installed_at: now,
            version: format!("v-{serial}"),
        }
    }

    fn seen(app: Result<(), &str>, served: Option<Result<&str, &str>>) -> Observed {
        Observed {
            app: app.map_err(str::to_string),
            served: served.map(|r| r.map(str::to_string).map_err(str::to_string)),
        }
    }

    #[test]
    fn ready_only_when_the_app_answers_and_envoy_serves_the_installed_certificate() {
        let now = OffsetDateTime::now_utc();
        let mut s = StatusState::default();
        // Before anything was read: not ready.
        assert!(!assess(&s, &seen(Ok(()), None), now).ready);
        // No certificate anywhere yet: bootstrapping is ready (challenges must be answered)...
        s.source = SourceView::Empty;
        let r = assess(&s, &seen(Ok(()), None), now);
        assert!(r.ready && r.reason.starts_with("bootstrapping"), "{r:?}");
        // ...but not without the app.
        let r = assess(&s, &seen(Err("refused"), None), now);
        assert_eq!(r, Readiness::no("app: refused"));
        // The source has one but it could not be installed: not ready.
        s.source = SourceView::Failing("cannot read".into());
        assert!(!assess(&s, &seen(Ok(()), None), now).ready);

        s.source = SourceView::Current;
        s.installed = Some(installed("aa", &["a.example"], 30));
        assert!(assess(&s, &seen(Ok(()), Some(Ok("aa"))), now).ready);
        let r = assess(&s, &seen(Ok(()), Some(Ok("bb"))), now);
        assert!(
            !r.ready && r.reason.contains("not the installed aa"),
            "{r:?}"
        );
        assert!(!assess(&s, &seen(Ok(()), Some(Err("refused"))), now).ready);
        assert!(!assess(&s, &seen(Ok(()), None), now).ready);
        // A gap is reported, not fatal.
        s.missing = vec!["b.example".into()];
        let r = assess(&s, &seen(Ok(()), Some(Ok("aa"))), now);
        assert!(r.ready && r.reason.contains("lacks b.example"), "{r:?}");
    }

    #[test]
    fn envoy_may_present_the_replaced_certificate_for_a_short_while() {
        let now = OffsetDateTime::now_utc();
        let s = StatusState {
            source: SourceView::Current,
            installed: Some(installed("new", &["a.example"], 90)),
            replaced: Some(("old".into(), now)),
            ..StatusState::default()
        };
        assert!(assess(&s, &seen(Ok(()), Some(Ok("old"))), now).ready);
        let later = now + RELOAD_GRACE + time::Duration::seconds(1);
        assert!(!assess(&s, &seen(Ok(()), Some(Ok("old"))), later).ready);
        assert!(!assess(&s, &seen(Ok(()), Some(Ok("other"))), now).ready);
    }

    #[test]
    fn record_tracks_the_source_the_installed_certificate_and_its_gap() {
        let status = SyncStatus::new(vec!["a.example".into(), "b.example".into()], None);
        let now = OffsetDateTime::now_utc();
        status.record(
            &Err(SyncError::Missing {
                name: "site".into(),
                location: "x".into(),
            }),
            None,
            now,
        );
        assert_eq!(status.state().source, SourceView::Empty);
        let first = installed("aa", &["a.example"], 30);
        status.record(
            &Ok(Outcome::Installed {
                installed: first.clone(),
                previous: None,
            }),
            Some(first.clone()),
            now,
        );
        let s = status.state();
        assert_eq!(s.missing, vec!["b.example"]);
        assert_eq!(s.installs, 1);
        assert!(s.replaced.is_none());
        let second = installed("bb", &["a.example", "b.example"], 30);
        status.record(
            &Ok(Outcome::Installed {
                installed: second.clone(),
                previous: Some("aa".into()),
            }),
            Some(second),
            now,
        );
        let s = status.state();
        assert!(s.missing.is_empty());
        assert_eq!(s.replaced, Some(("aa".into(), now)));
        status.record(
            &Err(SyncError::Fetch {
                location: "x".into(),
                message: "down".into(),
            }),
            s.installed.clone(),
            now,
        );
        let s = status.state();
        assert_eq!(s.failures, 1);
        assert!(matches!(s.source, SourceView::Failing(_)));
        assert_eq!(s.installed.map(|i| i.serial).as_deref(), Some("bb"));
        let text = status.metrics();
        assert!(text.contains("acme_edge_sync_missing_names 0"), "{text}");
        assert!(text.contains("acme_edge_sync_failures_total 1"), "{text}");
    }

    #[test]
    fn app_urls() {
        assert_eq!(
            AppUrl::parse("http://10.0.0.2:8080/healthz"),
            Ok(AppUrl {
                authority: "10.0.0.2:8080".into(),
                path: "/healthz".into()
            })
        );
        assert_eq!(
            AppUrl::parse("http://app:80").map(|u| u.path),
            Ok("/".into())
        );
        for bad in [
            "https://a:1/",
            "http://a/",
            "http://:80/",
            "http://a:0/",
            "http://a:1/x y",
        ] {
            assert!(AppUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
