//! What a pass reports, per certificate and as a whole.

use serde::Serialize;
use time::OffsetDateTime;

use crate::cloud::policy::{Decision, Reason};
use crate::shared::bundle::CertMeta;

use super::error::PassError;

/// What happened to one certificate.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A new certificate is now current.
    Renewed { serial: String, reason: String },
    /// Nothing to do.
    Unchanged {
        reason: String,
        #[serde(with = "time::serde::rfc3339::option")]
        next_renewal: Option<OffsetDateTime>,
    },
    /// Something failed; the certificate in service (if any) is untouched.
    Failed { error: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct CertReport {
    pub name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The certificate in service after this pass.
    pub serial: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
}

impl CertReport {
    /// A certificate is fine when nothing failed and the one in service has not expired.
    pub fn ok(&self, now: OffsetDateTime) -> bool {
        !matches!(self.outcome, Outcome::Failed { .. }) && self.not_after.is_some_and(|t| t > now)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub certificates: Vec<CertReport>,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        let now = OffsetDateTime::now_utc();
        self.certificates.iter().all(|c| c.ok(now))
    }
}

pub(super) fn failed(name: &str, current: Option<&CertMeta>, error: PassError) -> CertReport {
    CertReport {
        name: name.to_string(),
        outcome: Outcome::Failed {
            error: error.to_string(),
        },
        serial: current.map(|c| c.serial.clone()),
        not_after: current.map(|c| c.not_after),
    }
}

pub(super) fn unchanged(name: &str, current: Option<&CertMeta>, decision: &Decision) -> CertReport {
    let reason = match &decision.reason {
        Reason::NotDue => "not due".to_string(),
        other => other.to_string(),
    };
    CertReport {
        name: name.to_string(),
        outcome: Outcome::Unchanged {
            reason,
            next_renewal: decision.next_renewal,
        },
        serial: current.map(|c| c.serial.clone()),
        not_after: current.map(|c| c.not_after),
    }
}
