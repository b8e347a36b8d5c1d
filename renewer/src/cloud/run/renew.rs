//! One certificate's renewal: the decision, the lease, the re-decision under it, and the
//! attempt recorded before anything is ordered.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::error::PassError;
use super::report::{failed, unchanged, CertReport, Outcome};
use super::Renewer;
use crate::cloud::backoff::Subject;
use crate::cloud::housekeeping;
use crate::cloud::lock;
use crate::cloud::policy::{self, Decision, Inputs};
use crate::cloud::state::{self, CertState};
use crate::shared::bundle::{BundleStore, CertMeta};
use crate::shared::clock::rfc3339;
use crate::shared::config::CertificateConfig;

/// What a run saw before it took the lease: the certificate in service, the CA's renewal
/// window for it, and the decision on them.
struct Seen {
    current: Option<CertMeta>,
    ari: Option<policy::AriWindow>,
    decision: Decision,
}

impl Renewer {
    /// One certificate: decide, and if due take the lease and renew under it.
    pub(super) async fn renew_one(
        &self,
        cert: &CertificateConfig,
        force: bool,
        requested_at: Option<OffsetDateTime>,
        cancel: &CancellationToken,
    ) -> CertReport {
        let name = cert.name.as_str();
        // Before anything is read: a certificate stored after this moment was ordered by
        // another renewer while this one was on its way (a forced run takes that one).
        let started = requested_at.unwrap_or_else(OffsetDateTime::now_utc);
        let mut st = self.load_state(name).await;
        let loaded = st.clone();
        let current = match self.primary.current_meta(name).await {
            Ok(c) => c,
            Err(e) => {
                if !force {
                    return failed(name, None, PassError::CurrentUnreadable(e));
                }
                tracing::warn!(error = %e, "unreadable current certificate; --force replaces it");
                None
            }
        };

        let ari = self.ari_window(current.as_ref(), &mut st).await;
        let decision = policy::decide(&Inputs {
            now: self.clock.now(),
            config: cert,
            current: current.as_ref(),
            fraction_left: self.config.renewal.fraction_left,
            ari,
            failures: st.failures(),
            force,
        });
        // Backing off because of an attempt that has not ended (its record is written before
        // it orders): another renewer may be ordering right now. Wait for its lease and look
        // at how it ended, instead of reporting its attempt as a failure.
        let attempt_open =
            matches!(decision.reason, policy::Reason::BackingOff { .. }) && st.attempt_open;
        if !decision.renew && !attempt_open {
            self.clean_interrupted_order(name).await;
            let mirror_error = match &current {
                Some(meta) => self.reconcile_mirror(meta).await.err(),
                None => None,
            };
            // Only a fresh ARI answer changes the state here: skip the write otherwise, so a
            // run with nothing to do writes nothing.
            if st != loaded {
                if let Err(e) = state::save(&self.store, name, &st).await {
                    tracing::warn!(error = %e, "could not cache the renewal information");
                }
            }
            return match mirror_error {
                Some(error) => failed(name, current.as_ref(), error),
                None => unchanged(name, current.as_ref(), &decision),
            };
        }
        if attempt_open {
            tracing::info!("an attempt on this certificate has not ended; waiting for its lease");
        } else {
            tracing::info!(reason = %decision.reason, "renewal due");
        }

        let acquire = lock::acquire(
            &self.store,
            self.clock.as_ref(),
            name,
            &self.owner,
            Duration::from_secs(self.config.lock.ttl_seconds),
            Duration::from_secs(self.config.lock.wait_seconds),
        );
        let lease = tokio::select! {
            l = acquire => match l {
                Ok(l) => l,
                // The open attempt still holds the lease: it is running, or its run was
                // killed and the lease has not expired yet. Either way its record already
                // counts as a failure, so this run backs off as after one (exit 0 with a
                // certificate in service) instead of failing on the lease.
                Err(lock::LockError::Held { owner, until, .. }) if attempt_open => {
                    tracing::info!(
                        owner,
                        until,
                        reason = %decision.reason,
                        "the open attempt still holds the lease; not ordering"
                    );
                    return unchanged(name, current.as_ref(), &decision);
                }
                Err(e) => return failed(name, current.as_ref(), PassError::Lease(e)),
            },
            _ = cancel.cancelled() => return failed(name, current.as_ref(), PassError::Cancelled),
        };
        let report = self
            .renew_locked(
                cert,
                Seen {
                    current,
                    ari,
                    decision,
                },
                force.then_some(started),
                st,
                cancel,
            )
            .await;
        lease.release().await;
        report
    }

    /// A run stopped mid-order (killed, timed out) leaves its challenge answers, and for
    /// DNS-01 its TXT records: remove them when the lease is free (so that run is really
    /// over), without waiting for it. (A certificate that is due meets them in its order.)
    async fn clean_interrupted_order(&self, name: &str) {
        let left = housekeeping::leftovers(&self.store, name).await;
        if !left.any() {
            return;
        }
        let ttl = Duration::from_secs(self.config.lock.ttl_seconds);
        match lock::acquire(
            &self.store,
            self.clock.as_ref(),
            name,
            &self.owner,
            ttl,
            Duration::ZERO,
        )
        .await
        {
            Ok(lease) => {
                housekeeping::clear_order_tokens(&self.store, name).await;
                if left.dns_records {
                    self.clear_order_dns(name).await;
                }
                lease.release().await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "an order is in flight; its challenge answers stay")
            }
        }
    }

    /// Take out the DNS-01 records `name`'s order record lists, with the primary CA's `[dns]`
    /// (every CA's orders write to the same zones).
    async fn clear_order_dns(&self, name: &str) {
        let dns = match self.issuers.first() {
            Some(issuer) => match issuer.txt_records().await {
                Ok(dns) => dns,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open Cloud DNS; the DNS-01 records of an interrupted run stay until the next pass");
                    return;
                }
            },
            None => None,
        };
        housekeeping::clear_order_dns(&self.store, name, dns.as_deref()).await;
    }

    /// Under the lease: re-decide on what is stored now, record the attempt, order, publish,
    /// record the outcome.
    async fn renew_locked(
        &self,
        cert: &CertificateConfig,
        seen: Seen,
        // When the run is forced: the moment it started.
        forced_since: Option<OffsetDateTime>,
        mut st: CertState,
        cancel: &CancellationToken,
    ) -> CertReport {
        let name = cert.name.as_str();
        let Seen {
            current: before,
            ari,
            mut decision,
        } = seen;
        let force = forced_since.is_some();
        // Holding the lease, any earlier run on this certificate is over: its leftover
        // challenge answers go (a resumed order publishes what it still needs).
        housekeeping::clear_order_tokens(&self.store, name).await;
        // Re-read under the lease: if another renewer published while we waited, its
        // certificate is what the policy must look at.
        let current = match self.primary.current_meta(name).await {
            Ok(c) => c,
            Err(_) if force => None,
            Err(e) => return failed(name, before.as_ref(), PassError::Read(e)),
        };
        let changed = current.as_ref().map(|c| &c.serial) != before.as_ref().map(|c| &c.serial);
        if let Some(started) = forced_since {
            // A forced run asks for a certificate newer than the one it found, not for one
            // order per caller: ten `run --force` queued on the lease, or two forced passes
            // of `renewer serve`, must cost the CA one issuance (Let's Encrypt allows five
            // duplicates per week). What another renewer stored after this run started is
            // that newer certificate.
            if let Some(c) = current
                .as_ref()
                .filter(|c| changed || c.issued_at >= started)
            {
                tracing::info!(
                    serial = c.serial,
                    "another renewer issued a certificate after this forced run started; taking it instead of ordering again"
                );
                return CertReport {
                    name: name.to_string(),
                    outcome: Outcome::Unchanged {
                        reason: "forced, but another renewer issued a certificate after this run started; taken instead of ordering again".into(),
                        next_renewal: None,
                    },
                    serial: Some(c.serial.clone()),
                    not_after: Some(c.not_after),
                };
            }
        }
        if !force {
            // What other renewers recorded while this one waited (a failure backs this order
            // off too: every failed order may be a failed validation).
            let was_open = st.take_outcomes(self.load_state(name).await);
            decision = policy::decide(&Inputs {
                now: self.clock.now(),
                config: cert,
                current: current.as_ref(),
                fraction_left: self.config.renewal.fraction_left,
                // A new certificate's window is not known yet (the lifetime rule holds).
                ari: if changed { None } else { ari },
                failures: st.failures(),
                force: false,
            });
            if !decision.renew {
                if changed {
                    tracing::info!("another renewer renewed this certificate meanwhile");
                } else {
                    tracing::info!(reason = %decision.reason, "an earlier attempt failed; not ordering");
                }
                if was_open {
                    if let Err(e) = self.save_state(name, &st).await {
                        tracing::warn!(error = %e, "could not close the ended attempt in the state object");
                    }
                }
                return unchanged(name, current.as_ref(), &decision);
            }
        }

        // The attempt counts as a failure until it is known to have succeeded: a run that
        // dies, or cannot record how it ended, must not let the next trigger order again
        // without backing off. If even this cannot be recorded, do not order at all.
        // Failures count per subject (names and key type): the first failure of a changed
        // configuration starts the count again (`backoff`).
        let subject = Subject::of(cert);
        st.attempt_open = false;
        let failures_after = st.failures().after_failure(&subject);
        let begun = self.clock.now();
        let mut attempt = st.clone();
        attempt.consecutive_failures = failures_after;
        attempt.last_failure = Some(begun);
        attempt.failed_for = Some(subject.clone());
        attempt.attempt_open = true;
        attempt.last_error = Some(format!(
            "an attempt started at {} did not finish (the renewer stopped, or could not record the outcome)",
            rfc3339(begun)
        ));
        if let Err(e) = self.save_state(name, &attempt).await {
            return failed(name, current.as_ref(), PassError::AttemptNotRecorded(e));
        }

        let result = self.issue(cert, current.as_ref(), cancel).await;
        let now = self.clock.now();
        let outcome = match result {
            Ok(bundle) => match self.publish(&bundle).await {
                Ok(()) => {
                    housekeeping::prune_serials(
                        &self.store,
                        name,
                        &bundle.meta.serial,
                        self.config.store.keep_serials as usize,
                    )
                    .await;
                    st.consecutive_failures = 0;
                    st.last_error = None;
                    st.last_failure = None;
                    st.failed_for = None;
                    st.last_success = Some(now);
                    st.ari = None;
                    let report = CertReport {
                        name: name.to_string(),
                        outcome: Outcome::Renewed {
                            serial: bundle.meta.serial.clone(),
                            reason: decision.reason.to_string(),
                        },
                        serial: Some(bundle.meta.serial.clone()),
                        not_after: Some(bundle.meta.not_after),
                    };
                    Ok(report)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(report) => {
                if let Err(e) = self.save_state(name, &st).await {
                    tracing::warn!(error = %e, "could not record the success in the state object");
                }
                report
            }
            Err(error) if cancel.is_cancelled() => {
                // Stopping is not the CA's fault: no backoff, no recorded error (the
                // attempt's provisional failure is taken back).
                if let Err(e) = self.save_state(name, &st).await {
                    tracing::warn!(error = %e, "could not take back the attempt in the state object");
                }
                failed(name, current.as_ref(), error)
            }
            Err(error) => {
                st.consecutive_failures = failures_after;
                st.last_failure = Some(now);
                st.failed_for = Some(subject);
                st.last_error = Some(error.to_string());
                if let Err(e) = self.save_state(name, &st).await {
                    tracing::warn!(error = %e, "could not record the failure in the state object (the attempt is recorded as failed)");
                }
                // Report what is in service now: if only the mirror failed, the new
                // certificate is already current in the primary store.
                let in_service = self.primary.current_meta(name).await.ok().flatten();
                failed(name, in_service.as_ref().or(current.as_ref()), error)
            }
        }
    }
}
