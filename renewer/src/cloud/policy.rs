//! Should a certificate be renewed now, and why. A pure function of its inputs (the clock is a
//! parameter), so every rule is unit-tested without a CA.
//!
//! Rules, in order:
//! 1. `--force` renews.
//! 2. No current certificate, or it has expired: renew.
//! 3. The configured names or key type differ from the certificate's: renew.
//! 4. ACME Renewal Information (RFC 9773), when the CA gave a window: renew once a point chosen
//!    uniformly at random inside the window has passed (or the window has ended). The point is
//!    derived from the certificate and the window, so every run, and `status`, agree on it
//!    while the window stays the same.
//! 5. Otherwise (the backstop, and the only rule without ARI): renew when less than
//!    `fraction_left` of the lifetime remains.
//!
//! Every rule but the first waits, with the time of the next attempt, while an earlier failed
//! attempt at the same names and key type backs off ([`crate::cloud::backoff`]): a failing CA
//! or DNS setup must not be hammered every time the job fires, and Let's Encrypt locks a name
//! out for the hour after 5 failed validations. With no valid certificate in service the wait
//! is at most an hour.

use std::fmt;

use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::cloud::backoff::{retry_at, FailureHistory, Subject, Urgency};
use crate::shared::bundle::CertMeta;
pub use crate::shared::clock::rfc3339;
use crate::shared::config::{CertificateConfig, KeyType};

/// A renewal window suggested by the CA (RFC 9773 `suggestedWindow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AriWindow {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Forced,
    Missing,
    Expired,
    NamesChanged {
        added: Vec<String>,
        removed: Vec<String>,
    },
    KeyTypeChanged {
        from: KeyType,
        to: KeyType,
    },
    AriWindow {
        at: OffsetDateTime,
    },
    LifetimeLow {
        fraction_left: f64,
    },
    NotDue,
    /// `due` would renew, but an earlier failure's backoff still runs.
    BackingOff {
        failures: u32,
        due: Box<Reason>,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Forced => f.write_str("forced (--force)"),
            Reason::Missing => f.write_str("no certificate yet"),
            Reason::Expired => f.write_str("the certificate has expired"),
            Reason::NamesChanged { added, removed } => write!(
                f,
                "names changed (added: [{}], removed: [{}])",
                added.join(", "),
                removed.join(", ")
            ),
            Reason::KeyTypeChanged { from, to } => {
                write!(f, "key type changed from {from} to {to}")
            }
            Reason::AriWindow { at } => write!(
                f,
                "the CA's renewal window (ARI) is open; chosen time {} has passed",
                rfc3339(*at)
            ),
            Reason::LifetimeLow { fraction_left } => write!(
                f,
                "{:.1}% of the lifetime left, below the renewal threshold",
                fraction_left * 100.0
            ),
            Reason::NotDue => f.write_str("not due"),
            Reason::BackingOff { failures, due } => {
                write!(
                    f,
                    "backing off after {failures} consecutive failure(s) (due: {due})"
                )
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub renew: bool,
    pub reason: Reason,
    /// When the certificate is (next) due, if it is not due now; for `status` and logs.
    pub next_renewal: Option<OffsetDateTime>,
}

/// Everything the policy looks at.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub now: OffsetDateTime,
    pub config: &'a CertificateConfig,
    pub current: Option<&'a CertMeta>,
    pub fraction_left: f64,
    pub ari: Option<AriWindow>,
    pub failures: FailureHistory,
    pub force: bool,
}

pub fn decide(i: &Inputs<'_>) -> Decision {
    if i.force {
        return Decision {
            renew: true,
            reason: Reason::Forced,
            next_renewal: None,
        };
    }
    // What an order would ask for now; earlier failures count only against the same.
    let subject = Subject::of(i.config);
    let due = |reason, urgency| due(i, &subject, reason, urgency);
    let Some(current) = i.current else {
        return due(Reason::Missing, Urgency::NoneValid);
    };
    if i.now >= current.not_after {
        return due(Reason::Expired, Urgency::NoneValid);
    }
    let wanted = &subject.domains;
    if *wanted != current.domains {
        let added = wanted
            .iter()
            .filter(|d| !current.domains.contains(d))
            .cloned()
            .collect();
        let removed = current
            .domains
            .iter()
            .filter(|d| !wanted.contains(d))
            .cloned()
            .collect();
        return due(Reason::NamesChanged { added, removed }, Urgency::InService);
    }
    if i.config.key_type != current.key_type {
        let reason = Reason::KeyTypeChanged {
            from: current.key_type,
            to: i.config.key_type,
        };
        return due(reason, Urgency::InService);
    }

    let lifetime_due = lifetime_due_at(current, effective_fraction(current, i.fraction_left));
    let ari_due = i.ari.map(|w| ari_point(w, current));
    // ARI can only bring a renewal forward of the lifetime rule's time, never delay it past it:
    // a CA that suggests a late window must not let a certificate run out.
    let (due_at, due_reason) = match ari_due {
        Some(at) if at <= lifetime_due => (at, Reason::AriWindow { at }),
        _ => (
            lifetime_due,
            Reason::LifetimeLow {
                fraction_left: fraction_left(current, i.now),
            },
        ),
    };
    if i.now < due_at {
        return Decision {
            renew: false,
            reason: Reason::NotDue,
            next_renewal: Some(due_at),
        };
    }
    due(due_reason, Urgency::InService)
}

/// `reason` makes the certificate due now: renew, unless an earlier failed attempt at the same
/// names and key type is still backing off.
fn due(i: &Inputs<'_>, subject: &Subject, reason: Reason, urgency: Urgency) -> Decision {
    match retry_at(&i.failures, subject, urgency) {
        Some(retry) if i.now < retry => Decision {
            renew: false,
            reason: Reason::BackingOff {
                failures: i.failures.consecutive_failures,
                due: Box::new(reason),
            },
            next_renewal: Some(retry),
        },
        _ => Decision {
            renew: true,
            reason,
            next_renewal: None,
        },
    }
}

/// Certificates whose lifetime is this or shorter are short-lived: Let's Encrypt's
/// `shortlived` profile issues 6-day certificates (160 hours); 47-day ones are not.
pub const SHORT_LIVED: Duration = Duration::days(10);

/// The share of its lifetime a short-lived certificate has left, at the least, when it
/// renews without ARI: half. A 6-day certificate renews every 3 days — Let's Encrypt advises
/// renewing short-lived certificates every 2 to 3 days — which leaves 3 days, not 2, to notice
/// and fix a CA that keeps failing. A larger `renewal.fraction_left` still wins.
pub const SHORT_LIVED_FRACTION_LEFT: f64 = 0.5;

/// The fraction of its lifetime `current` has left when the lifetime rule renews it: the
/// configured one, raised to [`SHORT_LIVED_FRACTION_LEFT`] for a short-lived certificate.
pub fn effective_fraction(current: &CertMeta, configured: f64) -> f64 {
    if current.not_after - current.not_before <= SHORT_LIVED {
        configured.max(SHORT_LIVED_FRACTION_LEFT)
    } else {
        configured
    }
}

/// When the lifetime rule makes the certificate due: `not_after - lifetime * fraction_left`.
pub fn lifetime_due_at(current: &CertMeta, fraction_left: f64) -> OffsetDateTime {
    let lifetime = current.not_after - current.not_before;
    let margin = Duration::seconds_f64(lifetime.as_seconds_f64() * fraction_left);
    current.not_after - margin
}

fn fraction_left(current: &CertMeta, now: OffsetDateTime) -> f64 {
    let lifetime = (current.not_after - current.not_before).as_seconds_f64();
    if lifetime <= 0.0 {
        return 0.0;
    }
    ((current.not_after - now).as_seconds_f64() / lifetime).clamp(0.0, 1.0)
}

/// The moment inside the ARI window at which this certificate renews. RFC 9773 asks for a
/// uniformly random point so that a CA's fleet of clients does not renew at once; hashing the
/// serial with the window gives that spread while staying stable from run to run.
pub fn ari_point(window: AriWindow, current: &CertMeta) -> OffsetDateTime {
    if window.end <= window.start {
        return window.start;
    }
    let mut h = Sha256::new();
    h.update(current.serial.as_bytes());
    h.update(window.start.unix_timestamp().to_be_bytes());
    h.update(window.end.unix_timestamp().to_be_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    // 53 random bits → a float in [0, 1).
    let u = (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    let span = (window.end - window.start).as_seconds_f64();
    window.start + Duration::seconds_f64(span * u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::backoff::backoff;
    use time::macros::datetime;

    fn config(domains: &[&str], key_type: KeyType) -> CertificateConfig {
        CertificateConfig {
            name: "app".into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            key_type,
            challenge: Default::default(),
            profile: None,
        }
    }

    fn meta(domains: &[&str]) -> CertMeta {
        CertMeta {
            name: "app".into(),
            serial: "0a1b".into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            key_type: KeyType::EcdsaP256,
            issuer: "CN=test".into(),
            not_before: datetime!(2026-01-01 0:00 UTC),
            not_after: datetime!(2026-04-01 0:00 UTC), // 90 days
            ari_id: Some("aki.serial".into()),
            chain_sha256: String::new(),
            issued_at: datetime!(2026-01-01 0:00 UTC),
            profile: None,
            ca: None,
        }
    }

    fn inputs<'a>(
        now: OffsetDateTime,
        config: &'a CertificateConfig,
        current: Option<&'a CertMeta>,
    ) -> Inputs<'a> {
        Inputs {
            now,
            config,
            current,
            fraction_left: 1.0 / 3.0,
            ari: None,
            failures: FailureHistory::default(),
            force: false,
        }
    }

    #[test]
    fn missing_forced_expired() {
        let c = config(&["a.example.com"], KeyType::EcdsaP256);
        let m = meta(&["a.example.com"]);
        let now = datetime!(2026-01-10 0:00 UTC);
        assert_eq!(decide(&inputs(now, &c, None)).reason, Reason::Missing);
        let mut i = inputs(now, &c, Some(&m));
        i.force = true;
        assert_eq!(decide(&i).reason, Reason::Forced);
        let d = decide(&inputs(datetime!(2026-04-02 0:00 UTC), &c, Some(&m)));
        assert_eq!(d.reason, Reason::Expired);
    }

    #[test]
    fn lifetime_rule() {
        let c = config(&["a.example.com"], KeyType::EcdsaP256);
        let m = meta(&["a.example.com"]);
        // 90-day certificate, 1/3 → due 30 days before not_after = 2026-03-02.
        let d = decide(&inputs(datetime!(2026-03-01 0:00 UTC), &c, Some(&m)));
        assert!(!d.renew);
        assert_eq!(d.reason, Reason::NotDue);
        assert_eq!(d.next_renewal, Some(datetime!(2026-03-02 0:00 UTC)));
        let d = decide(&inputs(datetime!(2026-03-03 0:00 UTC), &c, Some(&m)));
        assert!(d.renew);
        assert!(
            matches!(d.reason, Reason::LifetimeLow { fraction_left } if fraction_left < 1.0 / 3.0)
        );
    }

    #[test]
    fn names_and_key_type() {
        let m = meta(&["a.example.com"]);
        let now = datetime!(2026-01-10 0:00 UTC);
        let c = config(&["A.example.com", "b.example.com"], KeyType::EcdsaP256);
        let d = decide(&inputs(now, &c, Some(&m)));
        assert_eq!(
            d.reason,
            Reason::NamesChanged {
                added: vec!["b.example.com".into()],
                removed: vec![]
            }
        );
        // Case and order do not matter.
        let c = config(&["A.EXAMPLE.COM"], KeyType::EcdsaP256);
        assert!(!decide(&inputs(now, &c, Some(&m))).renew);
        let c = config(&["a.example.com"], KeyType::Rsa2048);
        assert_eq!(
            decide(&inputs(now, &c, Some(&m))).reason,
            Reason::KeyTypeChanged {
                from: KeyType::EcdsaP256,
                to: KeyType::Rsa2048
            }
        );
    }

    #[test]
    fn ari_window_fixture() {
        let c = config(&["a.example.com"], KeyType::EcdsaP256);
        let m = meta(&["a.example.com"]);
        // A window the CA moved early (e.g. for a revocation): 2026-01-20 .. 2026-01-22.
        let w = AriWindow {
            start: datetime!(2026-01-20 0:00 UTC),
            end: datetime!(2026-01-22 0:00 UTC),
        };
        let point = ari_point(w, &m);
        assert!(point >= w.start && point < w.end, "{point}");
        assert_eq!(point, ari_point(w, &m), "stable across runs");
        let mut i = inputs(datetime!(2026-01-19 0:00 UTC), &c, Some(&m));
        i.ari = Some(w);
        let d = decide(&i);
        assert!(!d.renew);
        assert_eq!(d.next_renewal, Some(point));
        i.now = point;
        assert_eq!(decide(&i).reason, Reason::AriWindow { at: point });
        // Window entirely in the past: renew now.
        i.now = datetime!(2026-02-01 0:00 UTC);
        assert!(decide(&i).renew);
        // A window later than the lifetime rule does not delay renewal.
        i.ari = Some(AriWindow {
            start: datetime!(2026-03-20 0:00 UTC),
            end: datetime!(2026-03-25 0:00 UTC),
        });
        i.now = datetime!(2026-03-05 0:00 UTC);
        assert!(matches!(decide(&i).reason, Reason::LifetimeLow { .. }));
    }

    #[test]
    fn ari_points_spread_over_the_window() {
        let w = AriWindow {
            start: datetime!(2026-01-20 0:00 UTC),
            end: datetime!(2026-01-30 0:00 UTC),
        };
        let mut halves = [0u32; 2];
        for n in 0..400 {
            let mut m = meta(&["a.example.com"]);
            m.serial = format!("{n:x}");
            let p = ari_point(w, &m);
            assert!(p >= w.start && p < w.end);
            halves[usize::from(p >= datetime!(2026-01-25 0:00 UTC))] += 1;
        }
        assert!(halves[0] > 120 && halves[1] > 120, "{halves:?}");
    }

    #[test]
    fn failures_back_off() {
        let c = config(&["a.example.com"], KeyType::EcdsaP256);
        let m = meta(&["a.example.com"]);
        let mut i = inputs(datetime!(2026-03-10 0:00 UTC), &c, Some(&m));
        i.failures = FailureHistory {
            consecutive_failures: 2,
            last_failure: Some(datetime!(2026-03-09 23:55 UTC)),
            subject: Some(Subject::of(&c)),
        };
        let d = decide(&i);
        let Reason::BackingOff { failures: 2, due } = &d.reason else {
            panic!("{:?}", d.reason);
        };
        assert!(matches!(**due, Reason::LifetimeLow { .. }), "{due:?}");
        assert!(d.reason.to_string().starts_with("backing off after 2"));
        assert_eq!(d.next_renewal, Some(datetime!(2026-03-10 0:05 UTC)));
        i.now = datetime!(2026-03-10 0:06 UTC);
        assert!(decide(&i).renew);
        // --force never waits.
        i.now = datetime!(2026-03-10 0:00 UTC);
        i.force = true;
        assert_eq!(decide(&i).reason, Reason::Forced);
        assert_eq!(backoff(1), Duration::minutes(5));
        assert_eq!(backoff(30), Duration::hours(6));
    }

    #[test]
    fn no_certificate_backs_off_at_most_an_hour() {
        let c = config(&["a.example.com"], KeyType::EcdsaP256);
        let mut i = inputs(datetime!(2026-03-10 0:30 UTC), &c, None);
        i.failures = FailureHistory {
            consecutive_failures: 6,
            last_failure: Some(datetime!(2026-03-10 0:00 UTC)),
            subject: Some(Subject::of(&c)),
        };
        let d = decide(&i);
        assert!(!d.renew);
        assert!(
            matches!(&d.reason, Reason::BackingOff { due, .. } if **due == Reason::Missing),
            "{:?}",
            d.reason
        );
        assert_eq!(d.next_renewal, Some(datetime!(2026-03-10 1:00 UTC)));
        i.now = datetime!(2026-03-10 1:00 UTC);
        assert_eq!(decide(&i).reason, Reason::Missing);
        // Expired counts as none: the same hour at most (in service it would be 6 h).
        let m = meta(&["a.example.com"]);
        i.current = Some(&m);
        i.now = datetime!(2026-04-01 0:30 UTC);
        i.failures.last_failure = Some(datetime!(2026-04-01 0:00 UTC));
        assert_eq!(
            decide(&i).next_renewal,
            Some(datetime!(2026-04-01 1:00 UTC))
        );
    }

    #[test]
    fn a_changed_configuration_is_tried_at_once_then_backs_off() {
        let before = config(&["a.example.com", "new.example.com"], KeyType::EcdsaP256);
        let after = config(&["a.example.com", "b.example.com"], KeyType::EcdsaP256);
        let m = meta(&["a.example.com"]);
        // The name added last time failed to validate.
        let failures = FailureHistory {
            consecutive_failures: 3,
            last_failure: Some(datetime!(2026-02-01 0:00 UTC)),
            subject: Some(Subject::of(&before)),
        };
        let mut i = inputs(datetime!(2026-02-01 0:10 UTC), &before, Some(&m));
        i.failures = failures.clone();
        let d = decide(&i);
        assert!(
            matches!(&d.reason, Reason::BackingOff { failures: 3, due } if matches!(**due, Reason::NamesChanged { .. })),
            "{:?}",
            d.reason
        );
        assert_eq!(d.next_renewal, Some(datetime!(2026-02-01 0:20 UTC)));
        // The operator replaced it: a new order at the next trigger.
        let mut i = inputs(datetime!(2026-02-01 0:10 UTC), &after, Some(&m));
        i.failures = failures;
        assert!(decide(&i).renew);
        // Back to the names in service: not due, whatever failed.
        let same = config(&["a.example.com"], KeyType::EcdsaP256);
        let mut i = inputs(datetime!(2026-02-01 0:10 UTC), &same, Some(&m));
        i.failures.consecutive_failures = 3;
        assert_eq!(decide(&i).reason, Reason::NotDue);
    }

    #[test]
    fn short_lived_certificates_renew_at_half_their_life() {
        let c = config(&["a.example.com"], KeyType::EcdsaP256);
        // Let's Encrypt's shortlived profile: 160 hours.
        let mut m = meta(&["a.example.com"]);
        m.not_after = m.not_before + Duration::hours(160);
        assert_eq!(effective_fraction(&m, 1.0 / 3.0), SHORT_LIVED_FRACTION_LEFT);
        assert_eq!(lifetime_due_at(&m, 0.5), m.not_before + Duration::hours(80));
        // Not due at 81 hours left, due at 79: half the life, not a third (53 h).
        let before = inputs(m.not_before + Duration::hours(79), &c, Some(&m));
        assert_eq!(decide(&before).reason, Reason::NotDue);
        assert_eq!(
            decide(&before).next_renewal,
            Some(m.not_before + Duration::hours(80))
        );
        let after = inputs(m.not_before + Duration::hours(81), &c, Some(&m));
        assert!(decide(&after).renew, "{:?}", decide(&after));
        // A larger configured share wins; a 90-day certificate keeps the configured one.
        assert_eq!(effective_fraction(&m, 0.6), 0.6);
        let long = meta(&["a.example.com"]);
        assert_eq!(effective_fraction(&long, 0.2), 0.2);
        // The boundary: 10 days is short-lived, 47 days is not.
        m.not_after = m.not_before + SHORT_LIVED;
        assert_eq!(effective_fraction(&m, 0.2), 0.5);
        m.not_after = m.not_before + Duration::days(47);
        assert_eq!(effective_fraction(&m, 0.2), 0.2);
    }
}
