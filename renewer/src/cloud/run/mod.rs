//! One renewal pass over the configured certificates (`renewer run`, and `POST /` of
//! `renewer serve`).
//!
//! Per certificate: read the current certificate and state → decide (policy) → if due, take
//! the lease, re-read and re-decide (another renewer may just have renewed), order with
//! bounded retries, publish to the store (`current.json` last), mirror to Secret Manager,
//! record the outcome, release the lease. A failure at any step leaves the certificate in
//! service untouched. Up to `renewal.concurrency` certificates go through this at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cloud::housekeeping;
use crate::cloud::issuer::{AcmeIssuer, Issuer};
use crate::cloud::lock;
use crate::cloud::state::{self, CertState};
use crate::shared::bundle::{BundleStore, ObjectBundles};
use crate::shared::clock::{Clock, SystemClock};
use crate::shared::config::{CertificateConfig, Config};
use crate::shared::store::{SharedStore, StoreError};

mod error;
mod issue;
mod renew;
mod report;
#[cfg(test)]
mod tests;

pub use error::PassError;
use report::failed;
pub use report::{CertReport, Outcome, RunReport};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub force: bool,
    /// Only these certificates (all when empty).
    pub only: Vec<String>,
    /// Cancelled when the process must stop (SIGTERM to `renewer run`, e.g. a Cloud Run job
    /// cancelled or timed out, or to `renewer serve`): waits for a lease,
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
    /// The CAs in the order they are tried: the primary, then `[[acme.fallback]]`.
    issuers: Vec<Arc<dyn Issuer>>,
    clock: Arc<dyn Clock>,
    /// The last state each certificate's pass recorded, kept in memory too: when the state
    /// object cannot be written, a long-lived `renewer serve` still backs off.
    remembered: Mutex<HashMap<String, CertState>>,
}

impl Renewer {
    /// Open the store (and the mirror) of `config`; the CA is contacted on first use.
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
        let issuers = config
            .per_ca()
            .into_iter()
            .enumerate()
            .map(|(i, ca)| {
                let key_from = config.other_ca_directories(i);
                Arc::new(AcmeIssuer::new(ca, store.clone(), key_from)) as Arc<dyn Issuer>
            })
            .collect();
        Ok(Renewer::with_parts(
            config,
            store,
            mirror,
            issuers,
            Arc::new(SystemClock),
        ))
    }

    /// A renewer over given parts: [`Renewer::new`] gives it the real CA and clock; the unit
    /// tests a fake issuer and a clock they set.
    pub(crate) fn with_parts(
        config: Config,
        store: SharedStore,
        mirror: Option<Arc<dyn BundleStore>>,
        issuers: Vec<Arc<dyn Issuer>>,
        clock: Arc<dyn Clock>,
    ) -> Renewer {
        Renewer {
            primary: ObjectBundles::new(store.clone()),
            store,
            mirror,
            config,
            owner: lock::owner_id(),
            issuers,
            clock,
            remembered: Default::default(),
        }
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
    async fn save_state(&self, name: &str, st: &CertState) -> Result<(), StoreError> {
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
            housekeeping::sweep_challenges(&self.store, self.clock.now()).await;
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
            return failed(&cert.name, None, PassError::Cancelled);
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
}
