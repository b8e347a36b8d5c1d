//! How long a failed renewal holds back the next order of the same certificate. Pure: the
//! clock is a parameter, so every rule is unit-tested without a CA.
//!
//! Let's Encrypt allows 5 failed validations per hour for a name (and 300 new orders per 3 hours
//! per account; https://letsencrypt.org/docs/rate-limits/). A name locked out by the first
//! limit cannot be validated at all until the hour has passed, so a renewer that ordered again
//! at every trigger of a frequent schedule would turn one mistake (a name not pointing at the
//! cluster yet) into an outage. Every due certificate therefore waits after a failure:
//!
//! * one in service (due by its lifetime or ARI window, or because its names or key type
//!   changed): 5 min after one failure, doubling, up to 6 h ([`backoff`]);
//! * none in service, or an expired one: the same steps, but never more than an hour apart
//!   ([`urgent_backoff`]): the site is down, so it is retried hourly, and still at most 4 orders
//!   fall in any hour (at 0, 5, 15 and 35 min, then every hour), under the CA's 5.
//!
//! The failures count only against what they tried to order: the names and key type
//! ([`Subject`]). An operator who fixes the configuration (drops the name that does not
//! validate, or changes the key type) gets an attempt at the next trigger; `--force` skips the
//! wait in any case.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::shared::config::{CertificateConfig, KeyType};

/// What an order asks for, as far as the CA's limits care: the names (lowercase, sorted, no
/// duplicates) and the key type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub domains: Vec<String>,
    pub key_type: KeyType,
}

impl Subject {
    /// What `config` orders now.
    pub fn of(config: &CertificateConfig) -> Subject {
        Subject {
            domains: config.normalized_domains(),
            key_type: config.key_type,
        }
    }
}

/// Earlier failures of this certificate, from its state object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailureHistory {
    pub consecutive_failures: u32,
    pub last_failure: Option<OffsetDateTime>,
    /// What the failed attempts ordered; `None` in a state written before it was recorded,
    /// which then counts against any order (the safe reading).
    pub subject: Option<Subject>,
}

impl FailureHistory {
    /// Whether these failures hold back an order of `subject`.
    fn concern(&self, subject: &Subject) -> bool {
        self.consecutive_failures > 0 && self.subject.as_ref().is_none_or(|s| s == subject)
    }

    /// The count after one more failed attempt at `subject`: failures of another subject
    /// start again from one.
    pub fn after_failure(&self, subject: &Subject) -> u32 {
        let before = if self.concern(subject) {
            self.consecutive_failures
        } else {
            0
        };
        before.saturating_add(1)
    }
}

/// How urgent the order is: it decides the longest wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// A valid certificate is in service: [`backoff`].
    InService,
    /// No certificate, or an expired one: [`urgent_backoff`].
    NoneValid,
}

/// Backoff after `n` consecutive failures: 5 min, 10, 20, … capped at 6 h.
pub fn backoff(n: u32) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let minutes = 5i64.saturating_mul(1i64 << (n - 1).min(10));
    Duration::minutes(minutes.min(6 * 60))
}

/// The longest wait when no valid certificate is in service.
pub const URGENT_BACKOFF_CAP: Duration = Duration::HOUR;

/// Backoff after `n` consecutive failures with no valid certificate in service: 5 min, 10, 20,
/// 40, then every hour.
pub fn urgent_backoff(n: u32) -> Duration {
    backoff(n).min(URGENT_BACKOFF_CAP)
}

/// When an order of `subject` may be placed again after `failures`, if they hold it back at
/// all.
pub fn retry_at(
    failures: &FailureHistory,
    subject: &Subject,
    urgency: Urgency,
) -> Option<OffsetDateTime> {
    if !failures.concern(subject) {
        return None;
    }
    let wait = match urgency {
        Urgency::InService => backoff(failures.consecutive_failures),
        Urgency::NoneValid => urgent_backoff(failures.consecutive_failures),
    };
    failures.last_failure.map(|t| t + wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn subject(domains: &[&str], key_type: KeyType) -> Subject {
        Subject {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            key_type,
        }
    }

    fn failed(n: u32, subject: Option<Subject>) -> FailureHistory {
        FailureHistory {
            consecutive_failures: n,
            last_failure: Some(datetime!(2026-03-10 0:00 UTC)),
            subject,
        }
    }

    #[test]
    fn steps_double_up_to_their_caps() {
        let steps: Vec<i64> = (0..12).map(|n| backoff(n).whole_minutes()).collect();
        assert_eq!(steps, [0, 5, 10, 20, 40, 80, 160, 320, 360, 360, 360, 360]);
        let urgent: Vec<i64> = (0..8).map(|n| urgent_backoff(n).whole_minutes()).collect();
        assert_eq!(urgent, [0, 5, 10, 20, 40, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), Duration::hours(6));
    }

    #[test]
    fn no_valid_certificate_stays_under_five_orders_an_hour() {
        // Each failure is recorded when its attempt ends, so attempts are at least this far
        // apart; a 60-minute window never holds five of them.
        let mut at = vec![0i64];
        for n in 1..30 {
            let last = at.last().copied().unwrap_or(0);
            at.push(last + urgent_backoff(n).whole_minutes());
        }
        for (i, start) in at.iter().enumerate() {
            let in_hour = at[i..].iter().take_while(|t| **t < start + 60).count();
            assert!(
                in_hour <= 4,
                "{in_hour} attempts in the hour from minute {start}"
            );
        }
    }

    #[test]
    fn failures_count_against_what_they_ordered() {
        let a = subject(&["a.example.com"], KeyType::EcdsaP256);
        let ab = subject(&["a.example.com", "b.example.com"], KeyType::EcdsaP256);
        let rsa = subject(&["a.example.com"], KeyType::Rsa2048);
        let f = failed(2, Some(ab.clone()));
        let expected = Some(datetime!(2026-03-10 0:10 UTC));
        assert_eq!(retry_at(&f, &ab, Urgency::InService), expected);
        assert_eq!(retry_at(&f, &ab, Urgency::NoneValid), expected);
        // The operator dropped the name that failed, or changed the key type: no wait.
        assert_eq!(retry_at(&f, &a, Urgency::InService), None);
        assert_eq!(
            retry_at(&failed(2, Some(a.clone())), &rsa, Urgency::NoneValid),
            None
        );
        assert_eq!(f.after_failure(&ab), 3);
        assert_eq!(f.after_failure(&a), 1);
        // A state from before subjects were recorded holds back every order.
        assert_eq!(retry_at(&failed(2, None), &a, Urgency::InService), expected);
        assert_eq!(failed(2, None).after_failure(&a), 3);
        // No failures, nothing to wait for.
        assert_eq!(
            retry_at(&failed(0, Some(a.clone())), &a, Urgency::InService),
            None
        );
        assert_eq!(failed(0, Some(ab)).after_failure(&a), 1);
    }

    #[test]
    fn the_caps_differ_only_after_four_failures() {
        let a = subject(&["a.example.com"], KeyType::EcdsaP256);
        let f = failed(7, Some(a.clone()));
        let t = datetime!(2026-03-10 0:00 UTC);
        assert_eq!(
            retry_at(&f, &a, Urgency::InService),
            Some(t + Duration::hours(5) + Duration::minutes(20))
        );
        assert_eq!(
            retry_at(&f, &a, Urgency::NoneValid),
            Some(t + Duration::HOUR)
        );
    }
}
