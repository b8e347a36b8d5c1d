//! The CA as the renewal pass sees it: order a certificate, ask for a renewal window. A trait,
//! so the pass's decisions (leases, retries, backoff, mirroring) are unit-tested with a fake
//! issuer; [`AcmeIssuer`] is the real one, and the Pebble tests prove its wiring.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::cloud::acme::{Acme, AcmeError, OrderSpec};
use crate::cloud::dns01::cloud_dns::CloudDns;
use crate::cloud::dns01::TxtRecords;
use crate::cloud::policy::AriWindow;
use crate::shared::bundle::Secret;
use crate::shared::config::{ChallengeKind, Config};
use crate::shared::store::SharedStore;

/// Where certificates come from.
#[async_trait]
pub trait Issuer: Send + Sync {
    /// The CA's directory URL: which CA this is, in logs, `status` and the stored metadata.
    fn directory(&self) -> &str;

    /// Order (or resume the order in flight for) one certificate; the full chain in PEM and
    /// its private key. The error says whether another attempt may help
    /// ([`AcmeError::Transient`]).
    async fn issue(
        &self,
        order: &OrderSpec<'_>,
        cancel: &CancellationToken,
    ) -> Result<(String, Secret), AcmeError>;

    /// The CA's suggested renewal window for the certificate with this ARI id (RFC 9773),
    /// and when to ask again; `None` when the CA offers no renewal information.
    async fn renewal_info(
        &self,
        ari_id: &str,
    ) -> Result<Option<(AriWindow, SystemTime)>, AcmeError>;

    /// Where this CA's DNS-01 orders write their TXT records (`[dns]`), so a pass can take
    /// out what an interrupted order left; `None` when nothing is configured to write them.
    async fn txt_records(&self) -> Result<Option<Arc<dyn TxtRecords>>, AcmeError>;
}

/// The ACME CA of the config, through the account kept in the store. The account is opened
/// (and registered if needed) on first use, and replaced at most once per pass if the CA no
/// longer knows it.
pub struct AcmeIssuer {
    directory: String,
    config: Config,
    store: SharedStore,
    account: tokio::sync::Mutex<Option<Arc<Acme>>>,
    /// The other CAs' directories, the primary first: a new account here is registered with
    /// the key of the first of them that has one ([`Acme::open`]).
    key_from: Vec<String>,
    /// Cloud DNS for `dns-01` certificates, opened on first use.
    dns: tokio::sync::Mutex<Option<Arc<CloudDns>>>,
}

impl AcmeIssuer {
    /// An issuer for `config`'s CA (its primary: see [`Config::per_ca`]); nothing is sent
    /// until the first order. `key_from`: the other CAs' directories, whose account key a new
    /// account here shares.
    pub fn new(config: Config, store: SharedStore, key_from: Vec<String>) -> AcmeIssuer {
        AcmeIssuer {
            directory: config.directory_url().to_string(),
            config,
            store,
            account: tokio::sync::Mutex::new(None),
            key_from,
            dns: tokio::sync::Mutex::new(None),
        }
    }

    /// Cloud DNS of `[dns]`, opened on first use.
    async fn dns(&self) -> Result<Arc<CloudDns>, AcmeError> {
        let mut slot = self.dns.lock().await;
        if let Some(dns) = slot.as_ref() {
            return Ok(dns.clone());
        }
        let config = self.config.dns.as_ref().ok_or_else(|| {
            AcmeError::Other("dns-01 needs the [dns] section; none is configured".into())
        })?;
        let dns = Arc::new(CloudDns::new(config).await?);
        *slot = Some(dns.clone());
        Ok(dns)
    }

    /// The ACME account, opened (and created if needed) on first use.
    async fn account(&self) -> Result<Arc<Acme>, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(acme) = slot.as_ref() {
            return Ok(acme.clone());
        }
        let (acme, _) = Acme::open(&self.config, &self.store, true, &self.key_from).await?;
        let acme = Arc::new(acme);
        *slot = Some(acme.clone());
        Ok(acme)
    }

    /// The CA refused `gone` as unknown: register a new account (once, however many
    /// certificates of this pass hit it).
    async fn replace_account(&self, gone: &Arc<Acme>) -> Result<Arc<Acme>, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(current) = slot.as_ref().filter(|a| !Arc::ptr_eq(a, gone)) {
            return Ok(current.clone()); // another certificate of this pass replaced it
        }
        // replace_gone_account logs the replacement (old and new account, the backup, the
        // new thumbprint) for every caller.
        let (acme, _, _) =
            Acme::replace_gone_account(&self.config, &self.store, gone.account_url()).await?;
        let acme = Arc::new(acme);
        *slot = Some(acme.clone());
        Ok(acme)
    }
}

#[async_trait]
impl Issuer for AcmeIssuer {
    fn directory(&self) -> &str {
        &self.directory
    }

    async fn issue(
        &self,
        order: &OrderSpec<'_>,
        cancel: &CancellationToken,
    ) -> Result<(String, Secret), AcmeError> {
        let dns = match order.challenge {
            ChallengeKind::Dns01 => Some(self.dns().await?),
            ChallengeKind::Http01 => None,
        };
        let dns = dns.as_deref().map(|d| d as &dyn TxtRecords);
        let acme = self.account().await?;
        match acme.issue(&self.store, order, dns, cancel).await {
            // RFC 8555 §7.3.1: only a new account helps. Registering it is not an attempt of
            // this order: the order is tried again at once, with the new account.
            Err(AcmeError::AccountGone(why)) => {
                let acme = self.replace_account(&acme).await.map_err(|e| {
                    AcmeError::Other(format!("{why}; registering a new account failed too: {e}"))
                })?;
                acme.issue(&self.store, order, dns, cancel).await
            }
            other => other,
        }
    }

    async fn renewal_info(
        &self,
        ari_id: &str,
    ) -> Result<Option<(AriWindow, SystemTime)>, AcmeError> {
        self.account().await?.renewal_info(ari_id).await
    }

    async fn txt_records(&self) -> Result<Option<Arc<dyn TxtRecords>>, AcmeError> {
        if self.config.dns.is_none() {
            return Ok(None);
        }
        let dns: Arc<dyn TxtRecords> = self.dns().await?;
        Ok(Some(dns))
    }
}
