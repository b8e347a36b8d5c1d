//! One renewal pass over the configured certificates (`renewer run`, and `POST /` of
//! `renewer serve`).
//!
//! Per certificate: read the current certificate and state → decide (policy) → if due, take
//! the lease, re-read and re-decide (another renewer may just have renewed), order with
//! bounded retries, publish to the store (`current.json` last), mirror to Secret Manager,
//! record the outcome, release the lease. A failure at any step leaves the certificate in
//! service untouched. Up to `renewal.concurrency` certificates go through this at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cloud::acme::{Acme, AcmeError, OrderSpec};
use crate::shared::bundle::{Bundle, BundleStore, CertMeta, ObjectBundles};
use crate::shared::config::{CertificateConfig, Config};
use crate::cloud::lock;
use crate::cloud::policy::{self, Decision, Inputs, Reason};
use crate::cloud::state::{self, AriCache, CertState};
use crate::shared::store::SharedStore;

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

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub force: bool,
    /// Only these certificates (all when empty).
    pub only: Vec<String>,
    /// Cancelled when the process must stop (`renewer serve` on SIGTERM): waits for a lease,
    /// orders and retry pauses end at once, challenge answers are removed, the lease is
    /// released, and the certificate in service stays as it was. Not counted as a failure.
    pub cancel: CancellationToken,
    /// When the caller asked for this pass (`renewer run`: the process start; `renewer
    /// serve`: the trigger's arrival, which may have waited for another pass). A forced run
    /// takes a certificate stored after this instead of ordering again. Default: when each
    /// certificate's turn comes.
    pub requested_at: Option<OffsetDateTime>,
}

/// The long-lived parts of a renewer: configuration, stores, and (opened on first use) the
/// ACME account.
pub struct Renewer {
    pub config: Config,
    pub store: SharedStore,
    pub primary: ObjectBundles,
    pub mirror: Option<Arc<dyn BundleStore>>,
    owner: String,
    acme: tokio::sync::Mutex<Option<Arc<Acme>>>,
    /// The last state each certificate's pass recorded, kept in memory too: when the state
    /// object cannot be written, a long-lived `renewer serve` still backs off.
    remembered: std::sync::Mutex<std::collections::HashMap<String, CertState>>,
}

impl Renewer {
    pub async fn new(config: Config) -> Result<Renewer, crate::RenewerError> {
        config.require_acme("configuration")?;
        let store =
            crate::shared::store::open(&config.store.url, config.store.gcs_endpoint.as_deref())
                .await?;
        crate::shared::store::check_reachable(&store)
            .await
            .map_err(crate::RenewerError::Unreachable)?;
        let mirror: Option<Arc<dyn BundleStore>> = match &config.secret_manager {
            Some(sm) => Some(Arc::new(
                crate::shared::bundle::secret_manager::SecretManagerMirror::new(sm).await?,
            )),
            None => None,
        };
        Ok(Renewer {
            primary: ObjectBundles::new(store.clone()),
            store,
            mirror,
            config,
            owner: lock::owner_id(),
            acme: tokio::sync::Mutex::new(None),
            remembered: Default::default(),
        })
    }

    /// The ACME account, opened (and created if needed) on first use.
    pub async fn acme(&self) -> Result<Arc<Acme>, AcmeError> {
        let mut slot = self.acme.lock().await;
        if let Some(acme) = slot.as_ref() {
            return Ok(acme.clone());
        }
        let (acme, _) = Acme::open(&self.config, &self.store, true).await?;
        let acme = Arc::new(acme);
        *slot = Some(acme.clone());
        Ok(acme)
    }

    /// The CA refused `gone` as unknown: register a new account (once, however many
    /// certificates of this pass hit it) and say so loudly.
    async fn replace_account(&self, gone: &Arc<Acme>) -> Result<Arc<Acme>, AcmeError> {
        let mut slot = self.acme.lock().await;
        if let Some(current) = slot.as_ref().filter(|a| !Arc::ptr_eq(a, gone)) {
            return Ok(current.clone()); // another certificate of this pass replaced it
        }
        let (acme, info, backup) =
            Acme::replace_gone_account(&self.config, &self.store, gone.account_url()).await?;
        tracing::error!(
            old_account = gone.account_url(),
            new_account = info.account_url,
            backup = backup
                .as_deref()
                .unwrap_or("(already replaced by another renewer)"),
            thumbprint = info.thumbprint,
            "the CA no longer knows the stored ACME account (deactivated, or the CA was reset); \
             registered a new one and kept the old credentials as a backup. The account \
             thumbprint changed: update ACME_THUMBPRINT wherever the filter answers challenges \
             from it"
        );
        let acme = Arc::new(acme);
        *slot = Some(acme.clone());
        Ok(acme)
    }

    /// The certificate's state: the stored object, or what this process last recorded when
    /// that is newer (a state write that failed).
    async fn load_state(&self, name: &str) -> CertState {
        let stored = state::load(&self.store, name).await;
        let remembered = self
            .remembered
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned());
        match remembered {
            Some(mem) if state::newer(&mem, &stored) => mem,
            _ => stored,
        }
    }

    /// Record the state in the store, and in memory whatever the store says.
    async fn save_state(&self, name: &str, st: &CertState) -> Result<(), crate::shared::store::StoreError> {
        if let Ok(mut m) = self.remembered.lock() {
            m.insert(name.to_string(), st.clone());
        }
        state::save(&self.store, name, st).await
    }

    /// One pass. Never returns early: every selected certificate gets a report, in the
    /// configuration's order. Up to `renewal.concurrency` certificates are renewed at once:
    /// each has its own lease, order and state object, and the account is shared.
    pub async fn run(&self, options: &RunOptions) -> RunReport {
        // The futures are made up front (nothing runs until polled): a stream built from
        // closures here would not be `Send` to the compiler, and `renewer serve` spawns this.
        let jobs: Vec<_> = self
            .config
            .certificates
            .iter()
            .filter(|cert| options.only.is_empty() || options.only.contains(&cert.name))
            .enumerate()
            .map(|(i, cert)| async move { (i, self.run_one(cert, options).await) })
            .collect();
        // Unordered, so a slot frees up as soon as any certificate is done (`buffered` would
        // hold finished ones behind a slow first one); the report is put back in order after.
        let mut done: Vec<(usize, CertReport)> = futures_util::stream::iter(jobs)
            .buffer_unordered(self.config.renewal.concurrency.max(1))
            .collect()
            .await;
        done.sort_by_key(|(i, _)| *i);
        if !options.cancel.is_cancelled() {
            crate::cloud::housekeeping::sweep_challenges(&self.store, OffsetDateTime::now_utc()).await;
        }
        RunReport {
            certificates: done.into_iter().map(|(_, report)| report).collect(),
        }
    }

    /// One certificate of a pass, with its span and its outcome logged.
    async fn run_one(&self, cert: &CertificateConfig, options: &RunOptions) -> CertReport {
        // Checked when the certificate's turn comes: after a shutdown began, the ones not
        // started yet are not started.
        if options.cancel.is_cancelled() {
            return failed(&cert.name, None, CANCELLED.into());
        }
        // Every event of this certificate carries `certificate` through the span (a field
        // of each JSON log line, a prefix on a terminal). `instrument`, not `enter`: other
        // certificates of this pass, and in `renewer serve` other requests, run on the same
        // threads meanwhile.
        let span = tracing::info_span!("certificate", certificate = %cert.name);
        let report = self
            .renew_one(cert, options.force, options.requested_at, &options.cancel)
            .instrument(span.clone())
            .await;
        let _enter = span.enter();
        match &report.outcome {
            Outcome::Renewed { serial, reason } => {
                tracing::info!(serial, reason, "renewed")
            }
            Outcome::Unchanged { reason, .. } => {
                tracing::info!(reason, "no renewal needed")
            }
            Outcome::Failed { error } => {
                tracing::error!(
                    error,
                    "renewal failed; the certificate in service is unchanged"
                )
            }
        }
        report
    }

    async fn renew_one(
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
                    return failed(
                        name,
                        None,
                        format!("{e} (renew with --force to replace it)"),
                    );
                }
                tracing::warn!(error = %e, "unreadable current certificate; --force replaces it");
                None
            }
        };

        let ari = self.ari_window(current.as_ref(), &mut st).await;
        let decision = policy::decide(&Inputs {
            now: OffsetDateTime::now_utc(),
            config: cert,
            current: current.as_ref(),
            fraction_left: self.config.renewal.fraction_left,
            ari,
            failures: st.failures(),
            force,
        });
        if !decision.renew {
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
        tracing::info!(reason = %decision.reason, "renewal due");

        let acquire = lock::acquire(
            &self.store,
            name,
            &self.owner,
            Duration::from_secs(self.config.lock.ttl_seconds),
            Duration::from_secs(self.config.lock.wait_seconds),
        );
        let lease = tokio::select! {
            l = acquire => match l {
                Ok(l) => l,
                Err(e) => return failed(name, current.as_ref(), e.to_string()),
            },
            _ = cancel.cancelled() => return failed(name, current.as_ref(), CANCELLED.into()),
        };
        let report = self
            .renew_locked(
                cert,
                current,
                decision,
                force.then_some(started),
                st,
                cancel,
            )
            .await;
        lease.release().await;
        report
    }

    /// A run stopped mid-order (killed, timed out) leaves its challenge answers: remove them
    /// when the lease is free (so that run is really over), without waiting for it.
    async fn clean_interrupted_order(&self, name: &str) {
        if !crate::cloud::housekeeping::has_leftover_tokens(&self.store, name).await {
            return;
        }
        let ttl = Duration::from_secs(self.config.lock.ttl_seconds);
        match lock::acquire(&self.store, name, &self.owner, ttl, Duration::ZERO).await {
            Ok(lease) => {
                crate::cloud::housekeeping::clear_order_tokens(&self.store, name).await;
                lease.release().await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "an order is in flight; its challenge answers stay")
            }
        }
    }

    async fn renew_locked(
        &self,
        cert: &CertificateConfig,
        before: Option<CertMeta>,
        mut decision: Decision,
        // When the run is forced: the moment it started.
        forced_since: Option<OffsetDateTime>,
        mut st: CertState,
        cancel: &CancellationToken,
    ) -> CertReport {
        let name = cert.name.as_str();
        let force = forced_since.is_some();
        // Holding the lease, any earlier run on this certificate is over: its leftover
        // challenge answers go (a resumed order publishes what it still needs).
        crate::cloud::housekeeping::clear_order_tokens(&self.store, name).await;
        // Re-read under the lease: if another renewer published while we waited, its
        // certificate is what the policy must look at.
        let current = match self.primary.current_meta(name).await {
            Ok(c) => c,
            Err(_) if force => None,
            Err(e) => return failed(name, before.as_ref(), e.to_string()),
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
        if changed && !force {
            decision = policy::decide(&Inputs {
                now: OffsetDateTime::now_utc(),
                config: cert,
                current: current.as_ref(),
                fraction_left: self.config.renewal.fraction_left,
                ari: None,
                failures: Default::default(),
                force: false,
            });
            if !decision.renew {
                tracing::info!("another renewer renewed this certificate meanwhile");
                return unchanged(name, current.as_ref(), &decision);
            }
        }

        // The attempt counts as a failure until it is known to have succeeded: a run that
        // dies, or cannot record how it ended, must not let the next trigger order again
        // without backing off. If even this cannot be recorded, do not order at all.
        let begun = OffsetDateTime::now_utc();
        let mut attempt = st.clone();
        attempt.consecutive_failures = attempt.consecutive_failures.saturating_add(1);
        attempt.last_failure = Some(begun);
        attempt.last_error = Some(format!(
            "an attempt started at {} did not finish (the renewer stopped, or could not record the outcome)",
            policy::rfc3339(begun)
        ));
        if let Err(e) = self.save_state(name, &attempt).await {
            return failed(
                name,
                current.as_ref(),
                format!(
                    "cannot record the attempt in the state object ({e}); not ordering, so that \
                     a failure could not escape the failure backoff"
                ),
            );
        }

        let replaces = current.as_ref().and_then(|c| c.ari_id.clone());
        let result = self
            .issue_with_retries(cert, replaces.as_deref(), cancel)
            .await;
        let now = OffsetDateTime::now_utc();
        let outcome = match result {
            Ok(bundle) => match self.publish(&bundle).await {
                Ok(()) => {
                    crate::cloud::housekeeping::prune_serials(
                        &self.store,
                        name,
                        &bundle.meta.serial,
                        self.config.store.keep_serials as usize,
                    )
                    .await;
                    st.consecutive_failures = 0;
                    st.last_error = None;
                    st.last_failure = None;
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
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                st.last_failure = Some(now);
                st.last_error = Some(error.clone());
                if let Err(e) = self.save_state(name, &st).await {
                    tracing::warn!(error = %e, "could not record the failure in the state object (the attempt is recorded as failed)");
                }
                // Report what is in service now (the publish may have failed after the
                // pointer switched only if the mirror failed).
                let in_service = self.primary.current_meta(name).await.ok().flatten();
                failed(name, in_service.as_ref().or(current.as_ref()), error)
            }
        }
    }

    async fn issue_with_retries(
        &self,
        cert: &CertificateConfig,
        replaces: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<Bundle, String> {
        let attempts = self.config.acme.attempts;
        let domains = cert.normalized_domains();
        let mut attempt = 1;
        let mut account_replaced = false;
        loop {
            let mut used: Option<Arc<Acme>> = None;
            let result = async {
                let acme = self.acme().await?;
                used = Some(acme.clone());
                acme.issue(
                    &self.store,
                    &OrderSpec {
                        name: &cert.name,
                        domains: &domains,
                        key_type: cert.key_type,
                        profile: cert.profile.as_deref(),
                        replaces,
                    },
                    cancel,
                )
                .await
            }
            .await;
            let err = match result {
                Ok((chain, key)) => {
                    let checked = self.check_issued(cert, chain, key);
                    if checked.is_err() {
                        // Resuming that order would only fetch the same certificate again.
                        if let Err(e) = crate::cloud::inflight::clear(&self.store, &cert.name).await {
                            tracing::warn!(error = %e, "could not remove the order record");
                        }
                    }
                    return checked;
                }
                Err(e) => e,
            };
            if matches!(err, AcmeError::Cancelled) {
                return Err(CANCELLED.into());
            }
            if let (AcmeError::AccountGone(_), Some(gone), false) = (&err, &used, account_replaced)
            {
                account_replaced = true;
                match self.replace_account(gone).await {
                    Ok(_) => continue, // not an attempt of this order: try again at once
                    Err(e) => {
                        return Err(format!("{err}; registering a new account failed too: {e}"))
                    }
                }
            }
            let (transient, retry_after) = match &err {
                AcmeError::Transient { retry_after, .. } => (true, *retry_after),
                _ => (false, None),
            };
            if !transient || attempt >= attempts {
                let suffix = if transient && attempts > 1 {
                    format!(" (gave up after {attempts} attempts)")
                } else {
                    String::new()
                };
                return Err(format!("{err}{suffix}"));
            }
            let delay = retry_delay(attempt, retry_after, SystemTime::now());
            let Some(delay) = delay else {
                return Err(format!(
                    "{err} (the CA asks to retry later than {} s from now; giving up for this run)",
                    MAX_RETRY_AFTER.as_secs()
                ));
            };
            tracing::warn!(attempt, attempts, error = %err, wait_ms = delay.as_millis() as u64, "transient CA error; retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return Err(CANCELLED.into()),
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
    ) -> Result<Bundle, String> {
        let bundle = Bundle::from_pem(&cert.name, chain, key, OffsetDateTime::now_utc())
            .map_err(|e| format!("the CA returned an unusable certificate: {e}"))?;
        let wanted = cert.normalized_domains();
        if bundle.meta.domains != wanted {
            return Err(format!(
                "the CA returned a certificate for [{}], not the requested [{}]",
                bundle.meta.domains.join(", "),
                wanted.join(", ")
            ));
        }
        if bundle.meta.not_after <= OffsetDateTime::now_utc() {
            return Err("the CA returned an expired certificate".into());
        }
        Ok(bundle)
    }

    async fn publish(&self, bundle: &Bundle) -> Result<(), String> {
        self.primary.publish(bundle).await.map_err(|e| {
            format!("storing the new certificate failed, the previous one stays current: {e}")
        })?;
        tracing::info!(
            store = %self.primary.location(),
            serial = %bundle.meta.serial,
            not_after = %policy::rfc3339(bundle.meta.not_after),
            "new certificate is current"
        );
        // The order has delivered: nothing of it is left to resume.
        if let Err(e) = crate::cloud::inflight::clear(&self.store, &bundle.meta.name).await {
            tracing::warn!(error = %e, "could not remove the finished order's record");
        }
        if let Some(mirror) = &self.mirror {
            mirror.publish(bundle).await.map_err(|e| {
                format!("the new certificate is current in the store, but mirroring it failed: {e}")
            })?;
            tracing::info!(mirror = %mirror.location(), "mirrored");
        }
        Ok(())
    }

    /// Bring the mirror up to date when an earlier run could not (mirror down at the time).
    async fn reconcile_mirror(&self, meta: &CertMeta) -> Result<(), String> {
        let Some(mirror) = &self.mirror else {
            return Ok(());
        };
        let mirrored = mirror
            .current_meta(&meta.name)
            .await
            .map_err(|e| format!("cannot read the mirror: {e}"))?;
        if mirrored.is_some_and(|m| m.serial == meta.serial) {
            return Ok(());
        }
        let bundle = self
            .primary
            .current(&meta.name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "current certificate vanished".to_string())?;
        mirror
            .publish(&bundle)
            .await
            .map_err(|e| format!("mirroring the current certificate failed: {e}"))?;
        tracing::info!(mirror = %mirror.location(), serial = %meta.serial, "mirror caught up with the current certificate");
        Ok(())
    }

    /// The ARI window for the current certificate: cached until the CA's `Retry-After`, else
    /// fetched. Any failure only means "no ARI this time" — the lifetime rule still applies.
    async fn ari_window(
        &self,
        current: Option<&CertMeta>,
        st: &mut CertState,
    ) -> Option<policy::AriWindow> {
        if !self.config.renewal.ari {
            return None;
        }
        let current = current?;
        let ari_id = current.ari_id.as_deref()?;
        let now = OffsetDateTime::now_utc();
        if let Some(cache) = st.ari.as_ref().filter(|a| a.serial == current.serial) {
            if now < cache.next_check {
                return st.ari_window(&current.serial);
            }
        }
        let acme = match self.acme().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the CA for renewal information; using the lifetime rule");
                return st.ari_window(&current.serial);
            }
        };
        match acme.renewal_info(ari_id).await {
            Ok(Some((window, next_check))) => {
                tracing::info!(
                    start = %policy::rfc3339(window.start),
                    end = %policy::rfc3339(window.end),
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

/// The error of a certificate whose renewal was cut short by a shutdown.
pub const CANCELLED: &str =
    "cancelled: the renewer is shutting down; the certificate in service is unchanged";

/// Never wait longer than this inside one run for a `Retry-After`; a later time fails the run
/// (the next scheduled run tries again).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

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

fn failed(name: &str, current: Option<&CertMeta>, error: String) -> CertReport {
    CertReport {
        name: name.to_string(),
        outcome: Outcome::Failed { error },
        serial: current.map(|c| c.serial.clone()),
        not_after: current.map(|c| c.not_after),
    }
}

fn unchanged(name: &str, current: Option<&CertMeta>, decision: &Decision) -> CertReport {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays() {
        let now = SystemTime::now();
        assert_eq!(retry_delay(1, None, now), Some(Duration::from_secs(2)));
        assert_eq!(retry_delay(2, None, now), Some(Duration::from_secs(4)));
        assert_eq!(retry_delay(9, None, now), Some(Duration::from_secs(60)));
        assert_eq!(
            retry_delay(1, Some(now + Duration::from_secs(30)), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_delay(1, Some(now + Duration::from_secs(3600)), now),
            None
        );
        assert_eq!(
            retry_delay(1, Some(now - Duration::from_secs(5)), now),
            Some(Duration::from_millis(100))
        );
    }
}
