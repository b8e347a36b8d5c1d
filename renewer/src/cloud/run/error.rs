//! Why one certificate's pass failed. The message is what `renewer run` prints, `status`
//! shows as the last error and the state object keeps; every variant says what stays in
//! service when that matters to the operator.

use crate::cloud::acme::AcmeError;
use crate::cloud::lock::LockError;
use crate::shared::bundle::BundleError;
use crate::shared::certinfo::CertError;
use crate::shared::store::StoreError;

use std::time::Duration;

/// The error of a certificate whose renewal was cut short by a shutdown.
pub const CANCELLED: &str =
    "cancelled: the renewer is shutting down; the certificate in service is unchanged";

/// Never wait longer than this inside one run for a `Retry-After`; a later time fails the run
/// (the next scheduled run tries again).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// A failed pass over one certificate; the certificate in service is untouched by all of them.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The process is stopping (SIGTERM); not a failure of the CA.
    #[error("{CANCELLED}")]
    Cancelled,
    /// The current certificate cannot be read; only `--force` replaces it.
    #[error("{0} (renew with --force to replace it)")]
    CurrentUnreadable(#[source] BundleError),
    /// The store could not be read (under the lease, or to bring the mirror up to date).
    #[error("{0}")]
    Read(#[source] BundleError),
    /// Another renewer holds the lease (or the store failed while taking it).
    #[error(transparent)]
    Lease(#[from] LockError),
    /// The attempt could not be recorded before ordering, so nothing was ordered.
    #[error(
        "cannot record the attempt in the state object ({0}); not ordering, so that a failure \
         could not escape the failure backoff"
    )]
    AttemptNotRecorded(#[source] StoreError),
    /// The CA refused, or kept failing after `gave_up_after` attempts.
    #[error("{error}{}", .gave_up_after.map(|n| format!(" (gave up after {n} attempts)")).unwrap_or_default())]
    Ca {
        /// The last error of the CA.
        error: AcmeError,
        /// Set when transient errors used up `acme.attempts` (more than one).
        gave_up_after: Option<u32>,
    },
    /// The CA asked to come back later than this run waits ([`MAX_RETRY_AFTER`]).
    #[error(
        "{0} (the CA asks to retry later than {limit} s from now; giving up for this run)",
        limit = MAX_RETRY_AFTER.as_secs()
    )]
    RetryTooLate(AcmeError),
    /// What the CA returned does not parse, or its key does not match.
    #[error("the CA returned an unusable certificate: {0}")]
    Unusable(#[source] CertError),
    /// What the CA returned is for other names than ordered.
    #[error("the CA returned a certificate for [{got}], not the requested [{wanted}]")]
    WrongNames {
        /// The names in the certificate.
        got: String,
        /// The names ordered.
        wanted: String,
    },
    /// What the CA returned has already expired.
    #[error("the CA returned an expired certificate")]
    Expired,
    /// Publishing to the primary store failed.
    #[error("storing the new certificate failed, the previous one stays current: {0}")]
    Publish(#[source] BundleError),
    /// Published to the primary store, but not to the mirror (the next pass catches up).
    #[error("the new certificate is current in the store, but mirroring it failed: {0}")]
    Mirror(#[source] BundleError),
    /// The mirror could not be read to check whether it is up to date.
    #[error("cannot read the mirror: {0}")]
    MirrorRead(#[source] BundleError),
    /// Bringing the mirror up to date failed.
    #[error("mirroring the current certificate failed: {0}")]
    MirrorCatchUp(#[source] BundleError),
    /// The current certificate disappeared between two reads.
    #[error("current certificate vanished")]
    Vanished,
    /// The primary CA and every `[[acme.fallback]]` failed: each one's last error.
    #[error("every CA failed: {}", .0.iter().map(|(ca, e)| format!("{ca}: {e}")).collect::<Vec<_>>().join("; "))]
    EveryCaFailed(Vec<(String, PassError)>),
}

impl PassError {
    /// Whether the CA is to blame (unreachable, refusing, returning something unusable), so
    /// that another CA may do better; not a cancellation, a lease, or the store.
    pub fn is_ca_fault(&self) -> bool {
        match self {
            PassError::Ca { error, .. } => !matches!(
                error,
                crate::cloud::acme::AcmeError::Store(_)
                    | crate::cloud::acme::AcmeError::Cancelled
                    | crate::cloud::acme::AcmeError::Dns(_)
                    | crate::cloud::acme::AcmeError::DnsTransient(_)
            ),
            PassError::RetryTooLate(_)
            | PassError::Unusable(_)
            | PassError::WrongNames { .. }
            | PassError::Expired => true,
            _ => false,
        }
    }
}
