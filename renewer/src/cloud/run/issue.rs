//! Getting a certificate: from the primary CA, then each `[[acme.fallback]]` in order, each
//! with bounded retries of transient errors; checks of what came back; publishing (primary
//! store first, then the mirror); and the ARI window.

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::error::{PassError, MAX_RETRY_AFTER};
use super::Renewer;
use crate::cloud::acme::{AcmeError, OrderSpec};
use crate::cloud::inflight;
use crate::cloud::issuer::Issuer;
use crate::cloud::policy;
use crate::cloud::state::{AriCache, CertState};
use crate::shared::bundle::{Bundle, BundleStore, CertMeta};
use crate::shared::clock::rfc3339;
use crate::shared::config::CertificateConfig;

impl Renewer {
    /// Order `cert` from the CAs in order until one issues it. A CA is left for the next one
    /// only after its own retries, and not for a cancellation or a store failure (which the
    /// next CA would meet too). Every pass starts with the primary again.
    pub(super) async fn issue(
        &self,
        cert: &CertificateConfig,
        current: Option<&CertMeta>,
        cancel: &CancellationToken,
    ) -> Result<Bundle, PassError> {
        let mut failed: Vec<(String, PassError)> = Vec::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            let directory = issuer.directory();
            // `replaces` (RFC 9773) names a certificate of this CA only.
            let replaces = current
                .filter(|c| c.ca.as_deref().unwrap_or(self.primary_directory()) == directory)
                .and_then(|c| c.ari_id.as_deref());
            if i > 0 {
                tracing::warn!(ca = directory, "trying the next CA ([[acme.fallback]] {i})");
            }
            match self
                .issue_with_retries(issuer.as_ref(), cert, replaces, cancel)
                .await
            {
                Ok(mut bundle) => {
                    bundle.meta.ca = Some(directory.to_string());
                    return Ok(bundle);
                }
                Err(e) if !e.is_ca_fault() || self.issuers.len() == 1 => return Err(e),
                Err(e) => {
                    tracing::warn!(ca = directory, error = %e, "this CA failed");
                    failed.push((directory.to_string(), e));
                }
            }
        }
        Err(PassError::EveryCaFailed(failed))
    }

    /// The primary CA's directory URL.
    pub(super) fn primary_directory(&self) -> &str {
        self.issuers.first().map_or("", |i| i.directory())
    }

    /// Order `cert` from `issuer`, retrying transient CA errors (and Cloud DNS 429/5xx) up to
    /// `acme.attempts` times, with the CA's `Retry-After` or an exponential pause.
    async fn issue_with_retries(
        &self,
        issuer: &dyn Issuer,
        cert: &CertificateConfig,
        replaces: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<Bundle, PassError> {
        let attempts = self.config.acme.attempts;
        let domains = cert.normalized_domains();
        let mut attempt = 1;
        loop {
            let order = OrderSpec {
                name: &cert.name,
                domains: &domains,
                key_type: cert.key_type,
                profile: cert.profile.as_deref(),
                replaces,
                challenge: cert.challenge,
            };
            let err = match issuer.issue(&order, cancel).await {
                Ok((chain, key)) => {
                    let checked = self.check_issued(cert, chain, key);
                    if checked.is_err() {
                        // Resuming that order would only fetch the same certificate again.
                        if let Err(e) = inflight::clear(&self.store, &cert.name).await {
                            tracing::warn!(error = %e, "could not remove the order record");
                        }
                    }
                    return checked;
                }
                Err(e) => e,
            };
            if matches!(err, AcmeError::Cancelled) {
                return Err(PassError::Cancelled);
            }
            let (transient, retry_after) = match &err {
                AcmeError::Transient { retry_after, .. } => (true, *retry_after),
                AcmeError::DnsTransient(_) => (true, None),
                _ => (false, None),
            };
            if !transient || attempt >= attempts {
                return Err(PassError::Ca {
                    error: err,
                    gave_up_after: (transient && attempts > 1).then_some(attempts),
                });
            }
            let delay = retry_delay(attempt, retry_after, SystemTime::from(self.clock.now()));
            let Some(delay) = delay else {
                return Err(PassError::RetryTooLate(err));
            };
            if matches!(err, AcmeError::DnsTransient(_)) {
                tracing::warn!(attempt, attempts, error = %err, wait_ms = delay.as_millis() as u64, "Cloud DNS unavailable; retrying");
            } else {
                tracing::warn!(attempt, attempts, error = %err, wait_ms = delay.as_millis() as u64, "transient CA error; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return Err(PassError::Cancelled),
            }
            attempt += 1;
        }
    }

    /// Check what the CA returned before anything is published.
    fn check_issued(
        &self,
        cert: &CertificateConfig,
        chain: String,
        key: crate::shared::bundle::Secret,
    ) -> Result<Bundle, PassError> {
        let mut bundle = Bundle::from_pem(&cert.name, chain, key, self.clock.now())
            .map_err(PassError::Unusable)?;
        bundle.meta.profile = cert.profile.clone();
        let wanted = cert.normalized_domains();
        if bundle.meta.domains != wanted {
            return Err(PassError::WrongNames {
                got: bundle.meta.domains.join(", "),
                wanted: wanted.join(", "),
            });
        }
        if bundle.meta.not_after <= self.clock.now() {
            return Err(PassError::Expired);
        }
        Ok(bundle)
    }

    /// Publish to the primary store (the new certificate is current from then on), then
    /// to the mirror.
    pub(super) async fn publish(&self, bundle: &Bundle) -> Result<(), PassError> {
        self.primary
            .publish(bundle)
            .await
            .map_err(PassError::Publish)?;
        tracing::info!(
            store = %self.primary.location(),
            serial = %bundle.meta.serial,
            not_after = %rfc3339(bundle.meta.not_after),
            ca = bundle.meta.ca.as_deref().unwrap_or("-"),
            "new certificate is current"
        );
        // The order has delivered: nothing of it is left to resume.
        if let Err(e) = inflight::clear(&self.store, &bundle.meta.name).await {
            tracing::warn!(error = %e, "could not remove the finished order's record");
        }
        if let Some(mirror) = &self.mirror {
            mirror.publish(bundle).await.map_err(PassError::Mirror)?;
            tracing::info!(mirror = %mirror.location(), "mirrored");
        }
        Ok(())
    }

    /// Bring the mirror up to date when an earlier run could not (mirror down at the time).
    pub(super) async fn reconcile_mirror(&self, meta: &CertMeta) -> Result<(), PassError> {
        let Some(mirror) = &self.mirror else {
            return Ok(());
        };
        let mirrored = mirror
            .current_meta(&meta.name)
            .await
            .map_err(PassError::MirrorRead)?;
        if mirrored.is_some_and(|m| m.serial == meta.serial) {
            return Ok(());
        }
        let bundle = self
            .primary
            .current(&meta.name)
            .await
            .map_err(PassError::Read)?
            .ok_or(PassError::Vanished)?;
        mirror
            .publish(&bundle)
            .await
            .map_err(PassError::MirrorCatchUp)?;
        tracing::info!(mirror = %mirror.location(), serial = %meta.serial, "mirror caught up with the current certificate");
        Ok(())
    }

    /// The ARI window for the current certificate: cached until the CA's `Retry-After`, else
    /// fetched. Any failure only means "no ARI this time" — the lifetime rule still applies.
    pub(super) async fn ari_window(
        &self,
        current: Option<&CertMeta>,
        st: &mut CertState,
    ) -> Option<policy::AriWindow> {
        if !self.config.renewal.ari {
            return None;
        }
        let current = current?;
        let ari_id = current.ari_id.as_deref()?;
        let now = self.clock.now();
        if let Some(cache) = st.ari.as_ref().filter(|a| a.serial == current.serial) {
            if now < cache.next_check {
                return st.ari_window(&current.serial);
            }
        }
        // Ask the CA that issued it: another CA knows nothing of this certificate.
        let issued_by = current.ca.as_deref().unwrap_or(self.primary_directory());
        let issuer = self.issuers.iter().find(|i| i.directory() == issued_by)?;
        match issuer.renewal_info(ari_id).await {
            Ok(Some((window, next_check))) => {
                tracing::info!(
                    start = %rfc3339(window.start),
                    end = %rfc3339(window.end),
                    "renewal window from the CA (ARI)"
                );
                st.ari = Some(AriCache {
                    serial: current.serial.clone(),
                    start: window.start,
                    end: window.end,
                    next_check: OffsetDateTime::from(next_check),
                });
                Some(window)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "renewal information unavailable; using the lifetime rule");
                st.ari_window(&current.serial)
            }
        }
    }
}

/// How long to wait before attempt `attempt + 1`: the CA's `Retry-After` when it gave one
/// (None if that is beyond [`MAX_RETRY_AFTER`]), else 2 s, 4 s, 8 s … capped at 60 s.
pub fn retry_delay(
    attempt: u32,
    retry_after: Option<SystemTime>,
    now: SystemTime,
) -> Option<Duration> {
    match retry_after {
        Some(at) => {
            let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
            (wait <= MAX_RETRY_AFTER).then_some(wait.max(Duration::from_millis(100)))
        }
        None => Some(Duration::from_secs(
            2u64.saturating_pow(attempt.min(6)).min(60),
        )),
    }
}
