//! Talking to the ACME CA with `instant-acme`: the HTTP client, the account, and one order.
//!
//! The order flow, for one certificate:
//! 1. one `newOrder` with all its names (and `replaces`, and a profile, when configured);
//! 2. for every authorization not already valid, the HTTP-01 key authorization is written to
//!    `acme-challenge/<token>` in the store *before* the CA is told to validate (`set_ready`),
//!    so whichever node the CA reaches (Envoy's filter, `renewer serve`) can answer;
//! 3. wait for the order to be ready (instant-acme honours `Retry-After` while polling);
//! 4. finalize with a CSR for a freshly generated key (never reused across issuances);
//! 5. download the full chain; remove the challenge objects whatever happened.

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse,
    CertificateIdentifier, ChallengeStatus, ChallengeType, ExternalAccountKey, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, Problem, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use tokio_util::sync::CancellationToken;

use crate::shared::bundle::Secret;
use crate::shared::config::{Config, KeyType};
use crate::cloud::inflight::{self, InFlight};
use crate::shared::store::{keys, Precondition, Sensitivity, SharedStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA could not be reached, answered 5xx, or rate-limited us: worth another attempt.
    #[error("{message}")]
    Transient {
        message: String,
        /// When the CA asked us to come back (`Retry-After`), if it did.
        retry_after: Option<SystemTime>,
    },
    /// The CA refused the domain (failed validation, policy): retrying now will not help.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Local problems: configuration, key generation, an unexpected answer.
    #[error("{0}")]
    Other(String),
    /// The renewer is shutting down (`renewer serve` on SIGTERM): the order was abandoned.
    #[error("cancelled: the renewer is shutting down")]
    Cancelled,
    /// The CA does not know the stored account any more (deactivated, or the CA was reset):
    /// RFC 8555 §7.3.1 `accountDoesNotExist`. Only a new account helps.
    #[error("{0}")]
    AccountGone(String),
}

impl AcmeError {
    pub fn is_transient(&self) -> bool {
        matches!(self, AcmeError::Transient { .. })
    }
}

/// What to order: one certificate for `domains`.
#[derive(Debug, Clone, Copy)]
pub struct OrderSpec<'a> {
    /// The certificate's configured name (logs).
    pub name: &'a str,
    pub domains: &'a [String],
    pub key_type: KeyType,
    /// ACME profile to request, if any.
    pub profile: Option<&'a str>,
    /// RFC 9773 identifier of the certificate this one replaces.
    pub replaces: Option<&'a str>,
}

/// What the last error response of the CA said about retrying, recorded by [`CaHttp`] because
/// `instant-acme` drops the headers of error responses.
#[derive(Debug, Clone, Copy)]
struct ResponseHint {
    status: u16,
    retry_after: Option<SystemTime>,
}

/// Where the last error response is recorded.
type HintSlot = Arc<Mutex<Option<ResponseHint>>>;

tokio::task_local! {
    /// The hint slot of the order (or ARI request) being driven. Several orders share one
    /// account, hence one [`CaHttp`], when a pass renews certificates concurrently: each
    /// order runs inside [`with_own_hints`] so that its errors are explained by its own
    /// responses, not by another order's 429. `scope` sets it only while that order's future
    /// is polled, and instant-acme calls the HTTP client from inside that poll.
    static ORDER_HINT: HintSlot;
}

/// The slot of the current order when there is one, else the account's shared slot
/// (account creation and loading, which happen once).
fn hint_slot(shared: &HintSlot) -> HintSlot {
    ORDER_HINT
        .try_with(Arc::clone)
        .unwrap_or_else(|_| shared.clone())
}

/// Runs `fut` with a hint slot of its own.
async fn with_own_hints<T>(fut: impl Future<Output = T>) -> T {
    ORDER_HINT.scope(Arc::new(Mutex::new(None)), fut).await
}

/// The HTTP client for the CA: web roots plus `acme.extra_root_ca`, a per-request timeout,
/// and a record of the last error status and `Retry-After`.
struct CaHttp {
    client: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    timeout: Duration,
    last_error: HintSlot,
}

impl HttpClient for CaHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.client.request(req);
        let timeout = self.timeout;
        let last_error = hint_slot(&self.last_error);
        Box::pin(async move {
            let rsp = match tokio::time::timeout(timeout, fut).await {
                Ok(Ok(rsp)) => rsp,
                Ok(Err(e)) => return Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => {
                    return Err(instant_acme::Error::Other(
                        format!("no answer from the CA within {} s", timeout.as_secs()).into(),
                    ))
                }
            };
            let status = rsp.status().as_u16();
            if status >= 400 {
                let retry_after = retry_after(rsp.headers());
                if let Ok(mut slot) = last_error.lock() {
                    *slot = Some(ResponseHint {
                        status,
                        retry_after,
                    });
                }
            }
            Ok(BytesResponse::from(rsp))
        })
    }
}

fn retry_after(headers: &http::HeaderMap) -> Option<SystemTime> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(SystemTime::now() + Duration::from_secs(secs));
    }
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822)
        .ok()
        .map(SystemTime::from)
}

/// A connection to the CA with a loaded account.
pub struct Acme {
    account: Account,
    directory_url: String,
    last_error: HintSlot,
    poll_timeout: Duration,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("directory", &self.directory_url)
            .field("account", &self.account.id())
            .finish()
    }
}

/// An account as `renewer account` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountInfo {
    pub directory: String,
    pub account_url: String,
    pub thumbprint: String,
    pub contact: Vec<String>,
    /// Store object holding the credentials.
    pub object: String,
    pub created: bool,
    /// Set when the stored account was unknown to the CA and this one replaced it: the old
    /// account's URL and where its credentials were kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
}

fn build_http(config: &Config, last_error: HintSlot) -> Result<CaHttp, AcmeError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &config.acme.extra_root_ca {
        let added = add_roots(&mut roots, path)?;
        tracing::debug!(file = %path.display(), added, "trusting extra roots for the CA");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| AcmeError::Other(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client = HyperClient::builder(TokioExecutor::new()).build(connector);
    Ok(CaHttp {
        client,
        timeout: Duration::from_secs(config.acme.request_timeout_seconds),
        last_error,
    })
}

fn add_roots(roots: &mut rustls::RootCertStore, path: &Path) -> Result<usize, AcmeError> {
    let bad = |m: String| AcmeError::Other(format!("acme.extra_root_ca {}: {m}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("no usable certificate in the file".into()));
    }
    Ok(added)
}

/// Store key of the account credentials for this directory: one account per CA.
pub fn account_key(directory_url: &str) -> String {
    let digest = hex::encode(Sha256::digest(directory_url.as_bytes()));
    keys::account(digest.get(..16).unwrap_or(&digest))
}

impl Acme {
    /// Load the account of `config`'s directory from the store, creating and storing it when
    /// there is none (unless `create` is false).
    pub async fn open(
        config: &Config,
        store: &SharedStore,
        create: bool,
    ) -> Result<(Acme, AccountInfo), AcmeError> {
        let directory_url = config.directory_url().to_string();
        let last_error = Arc::new(Mutex::new(None));
        let key = account_key(&directory_url);
        let object = format!("{}/{key}", store.location());
        let hint = last_error.clone();
        let classify_ = move |e: instant_acme::Error| classify(e, &hint_slot(&hint));

        let (account, created) = match store.get(&key).await? {
            Some(obj) => {
                let creds: AccountCredentials = serde_json::from_slice(&obj.data).map_err(|e| {
                    AcmeError::Other(format!("{object}: not valid account credentials: {e}"))
                })?;
                let http = build_http(config, last_error.clone())?;
                let account = Account::builder_with_http(Box::new(http))
                    .from_credentials(creds)
                    .await
                    .map_err(&classify_)?;
                (account, false)
            }
            None if !create => {
                return Err(AcmeError::Other(format!(
                "no ACME account for {directory_url} in {} (run `renewer account` to create one)",
                store.location()
            )))
            }
            None => {
                let contact = config.contact_urls();
                let contact_refs: Vec<&str> = contact.iter().map(String::as_str).collect();
                let eab = match &config.acme.eab {
                    Some(eab) => Some(external_account_key(eab)?),
                    None => None,
                };
                let http = build_http(config, last_error.clone())?;
                let (account, creds) = Account::builder_with_http(Box::new(http))
                    .create(
                        &NewAccount {
                            contact: &contact_refs,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        directory_url.clone(),
                        eab.as_ref(),
                    )
                    .await
                    .map_err(&classify_)?;
                let json = serde_json::to_vec(&creds)
                    .map_err(|e| AcmeError::Other(format!("serialize account: {e}")))?;
                match store
                    .put(&key, &json, Precondition::DoesNotExist, Sensitivity::Secret)
                    .await
                {
                    Ok(_) => (account, true),
                    Err(e) if e.is_precondition_failed() => {
                        // Another renewer created one at the same moment: use theirs, so every
                        // renewer (and the filter's thumbprint) agrees on one account.
                        return Box::pin(Acme::open(config, store, false)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let info = AccountInfo {
            directory: directory_url.clone(),
            account_url: account.id().to_string(),
            thumbprint: account.key_thumbprint().to_string(),
            contact: config.contact_urls(),
            object,
            created,
            replaced: None,
        };
        if created {
            tracing::info!(directory = %directory_url, account = %info.account_url, "created ACME account");
        }
        Ok((
            Acme {
                account,
                directory_url,
                last_error,
                poll_timeout: Duration::from_secs(config.acme.poll_timeout_seconds),
            },
            info,
        ))
    }

    /// The account's URL at the CA.
    pub fn account_url(&self) -> &str {
        self.account.id()
    }

    /// Ask the CA whether it still knows the stored account: a `newAccount` request with
    /// `onlyReturnExisting` signed by the account key (RFC 8555 §7.3.1), which changes nothing.
    /// `AccountGone` when it does not.
    pub async fn check_with_ca(config: &Config, store: &SharedStore) -> Result<(), AcmeError> {
        let directory_url = config.directory_url().to_string();
        let key = account_key(&directory_url);
        let Some(obj) = store.get(&key).await? else {
            return Err(AcmeError::Other(format!(
                "no ACME account for {directory_url} in {}",
                store.location()
            )));
        };
        let creds: AccountCredentials = serde_json::from_slice(&obj.data)
            .map_err(|e| AcmeError::Other(format!("{key}: not valid account credentials: {e}")))?;
        let pkcs8 = creds.private_key().clone_key();
        let signing = instant_acme::Key::from_pkcs8_der(pkcs8.clone_key())
            .map_err(|e| AcmeError::Other(format!("{key}: the account key does not load: {e}")))?;
        let last_error: HintSlot = Arc::new(Mutex::new(None));
        let http = build_http(config, last_error.clone())?;
        match Account::builder_with_http(Box::new(http))
            .from_key(
                (signing, rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8)),
                directory_url,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(e, &last_error)),
        }
    }

    /// After `AccountGone`: keep the dead account's credentials as a backup object, remove
    /// them from their place, and register a new account (or use the one another renewer
    /// just registered). Returns the new account and where the old credentials went.
    pub async fn replace_gone_account(
        config: &Config,
        store: &SharedStore,
        gone_url: &str,
    ) -> Result<(Acme, AccountInfo, Option<String>), AcmeError> {
        let key = account_key(config.directory_url());
        let mut backup = None;
        if let Some(obj) = store.get(&key).await? {
            let stored_url = serde_json::from_slice::<serde_json::Value>(&obj.data)
                .ok()
                .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned));
            // Only the account the CA refused is retired: another renewer may already have
            // put a new one in its place.
            if stored_url.as_deref() == Some(gone_url) {
                let name = format!(
                    "{key}.gone-{}",
                    time::OffsetDateTime::now_utc().unix_timestamp()
                );
                store
                    .put(&name, &obj.data, Precondition::None, Sensitivity::Secret)
                    .await?;
                match store
                    .delete(&key, Precondition::GenerationMatches(obj.generation))
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.is_precondition_failed() => {}
                    Err(e) => return Err(e.into()),
                }
                backup = Some(format!("{}/{name}", store.location()));
            }
        }
        let (acme, info) = Acme::open(config, store, true).await?;
        tracing::error!(
            old_account = gone_url,
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
        Ok((acme, info, backup))
    }

    fn classify(&self, e: instant_acme::Error) -> AcmeError {
        classify(e, &hint_slot(&self.last_error))
    }

    fn take_hint(&self) {
        if let Ok(mut slot) = hint_slot(&self.last_error).lock() {
            *slot = None;
        }
    }

    /// The CA's suggested renewal window for a certificate (RFC 9773), and when to ask again.
    /// `Ok(None)` when the CA does not offer renewal information.
    pub async fn renewal_info(
        &self,
        ari_id: &str,
    ) -> Result<Option<(crate::cloud::policy::AriWindow, SystemTime)>, AcmeError> {
        with_own_hints(self.renewal_info_inner(ari_id)).await
    }

    async fn renewal_info_inner(
        &self,
        ari_id: &str,
    ) -> Result<Option<(crate::cloud::policy::AriWindow, SystemTime)>, AcmeError> {
        let Some(id) = certificate_identifier(ari_id) else {
            return Err(AcmeError::Other(format!(
                "malformed ARI certificate id {ari_id:?}"
            )));
        };
        self.take_hint();
        match self.account.renewal_info(&id).await {
            Ok((info, retry_in)) => Ok(Some((
                crate::cloud::policy::AriWindow {
                    start: info.suggested_window.start,
                    end: info.suggested_window.end,
                },
                SystemTime::now() + retry_in,
            ))),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Run one order and return the chain and the new private key.
    pub async fn issue(
        &self,
        store: &SharedStore,
        order: &OrderSpec<'_>,
        cancel: &CancellationToken,
    ) -> Result<(String, Secret), AcmeError> {
        with_own_hints(self.issue_inner(store, order, cancel)).await
    }

    async fn issue_inner(
        &self,
        store: &SharedStore,
        order: &OrderSpec<'_>,
        cancel: &CancellationToken,
    ) -> Result<(String, Secret), AcmeError> {
        let name = order.name;
        self.take_hint();
        let (mut acme_order, mut record) = self.open_order(store, order).await?;

        // On cancellation the order is dropped where it stands; its record stays, so the
        // next pass resumes it rather than ordering again. The cleanup below still runs.
        let result = tokio::select! {
            r = self.complete(&mut acme_order, store, order, &mut record) => r,
            _ = cancel.cancelled() => Err(AcmeError::Cancelled),
        };
        // Challenge answers are only useful while the CA validates: remove them whatever
        // happened (a resumed order publishes them again). A failure to clean up is logged.
        if !record.tokens.is_empty() {
            inflight::remove_answers(store, &mut record).await;
            if result.is_err() {
                if let Err(e) = inflight::save(store, name, &record).await {
                    tracing::warn!(certificate = name, error = %e, "could not update the order record");
                }
            }
        }
        if matches!(result, Err(AcmeError::Rejected(_))) {
            // The order is invalid at the CA: nothing left to resume.
            if let Err(e) = inflight::clear(store, name).await {
                tracing::warn!(certificate = name, error = %e, "could not remove the order record");
            }
        }
        result
    }

    /// The order to drive: the one in flight when it can still produce the certificate, else
    /// a new one, recorded before anything else happens to it.
    async fn open_order(
        &self,
        store: &SharedStore,
        spec: &OrderSpec<'_>,
    ) -> Result<(instant_acme::Order, InFlight), AcmeError> {
        let OrderSpec {
            name,
            domains,
            key_type,
            profile,
            replaces,
        } = *spec;
        match inflight::load(store, name).await? {
            Some(rec) if rec.matches(domains, key_type) => {
                let fetched = self
                    .account
                    .order(rec.url.clone())
                    .await
                    .map(|mut o| (o.state().status, o));
                match fetched {
                    Ok((status, o)) if status != OrderStatus::Invalid => {
                        tracing::info!(
                            certificate = name,
                            order = rec.url,
                            status = ?status,
                            placed_at = %crate::cloud::policy::rfc3339(rec.placed_at),
                            "resuming the order in flight instead of ordering again"
                        );
                        return Ok((o, rec));
                    }
                    Ok(_) => tracing::info!(
                        certificate = name,
                        order = rec.url,
                        "the order in flight is invalid at the CA; placing a new one"
                    ),
                    Err(e) => {
                        let e = self.classify(e);
                        if e.is_transient() {
                            return Err(e);
                        }
                        tracing::warn!(certificate = name, order = rec.url, error = %e, "the order in flight cannot be resumed; placing a new one");
                    }
                }
                self.take_hint();
            }
            Some(rec) => tracing::info!(
                certificate = name,
                order = rec.url,
                "the order in flight was for other names or another key type; placing a new one"
            ),
            None => {}
        }
        let identifiers: Vec<Identifier> =
            domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        let order = self.new_order(&identifiers, profile, replaces).await?;
        tracing::info!(certificate = name, order = order.url(), "order placed");
        let rec = InFlight::new(
            order.url(),
            domains,
            key_type,
            time::OffsetDateTime::now_utc(),
        );
        // Unrecorded, a lost answer later on could cost a second issuance: stop here (the
        // order is not finalized, so it costs nothing but pending authorizations).
        inflight::save(store, name, &rec).await?;
        Ok((order, rec))
    }

    async fn new_order(
        &self,
        identifiers: &[Identifier],
        profile: Option<&str>,
        replaces: Option<&str>,
    ) -> Result<instant_acme::Order, AcmeError> {
        let plain = || {
            let o = NewOrder::new(identifiers);
            match profile {
                Some(p) => o.profile(p),
                None => o,
            }
        };
        if let Some(id) = replaces.and_then(certificate_identifier) {
            match self.account.new_order(&plain().replaces(id)).await {
                Ok(order) => return Ok(order),
                Err(e) => {
                    let e = self.classify(e);
                    // Unreachable, 5xx, rate-limited: the caller's retry loop handles it.
                    if e.is_transient() {
                        return Err(e);
                    }
                    // RFC 9773 §5: a server may refuse `replaces` (already replaced, unknown
                    // certificate, or — Pebble before 2.5 — ignore it so instant-acme sees no
                    // echo). The renewal matters more than the hint: order again without it.
                    tracing::warn!(error = %e, "the CA did not accept `replaces`; ordering without it");
                }
            }
        }
        self.account
            .new_order(&plain())
            .await
            .map_err(|e| self.classify(e))
    }

    async fn complete(
        &self,
        order: &mut instant_acme::Order,
        store: &SharedStore,
        spec: &OrderSpec<'_>,
        record: &mut InFlight,
    ) -> Result<(String, Secret), AcmeError> {
        let name = spec.name;
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(self.poll_timeout);
        let mut status = order.state().status;
        if status == OrderStatus::Ready && record.key_pem.is_none() {
            // RFC 8555 §7.1.6: a new order is `ready` at once when the CA reuses valid
            // authorizations for every name.
            tracing::info!(
                certificate = name,
                "authorization already valid for every name; no challenge needed"
            );
        }
        if status == OrderStatus::Pending {
            self.answer_challenges(order, store, name, record).await?;
            status = match order.poll_ready(&retries).await {
                Ok(status) => status,
                Err(instant_acme::Error::Api(problem)) => {
                    return Err(self.validation_failure(order, Some(problem)).await)
                }
                Err(e) => return Err(self.classify(e)),
            };
        }
        match status {
            OrderStatus::Ready => {
                // The key is recorded before the CA sees the CSR: if the answer to finalize
                // is lost, the certificate it produces can still be downloaded and used.
                let key = match record.key() {
                    Some(k) => k,
                    None => {
                        let key = generate_key(spec.key_type)?;
                        let pem = Secret::new(key.serialize_pem());
                        record.key_pem = Some(pem.expose().to_string());
                        inflight::save(store, name, record).await?;
                        pem
                    }
                };
                // The configured names, not the order's cached authorizations: polling
                // replaces the order state and drops them.
                let csr = csr_with_key(spec.domains.to_vec(), spec.key_type, &key)?;
                order
                    .finalize_csr(&csr)
                    .await
                    .map_err(|e| self.classify(e))?;
            }
            OrderStatus::Processing | OrderStatus::Valid => {
                tracing::info!(
                    certificate = name,
                    "the order was already finalized; fetching its certificate"
                );
            }
            OrderStatus::Invalid => return Err(self.validation_failure(order, None).await),
            OrderStatus::Pending => {
                return Err(AcmeError::Other(
                    "the order is still pending after validation".into(),
                ))
            }
        }
        let key = record.key().ok_or_else(|| {
            // Finalized by something that did not record a key: that certificate is unusable.
            AcmeError::Rejected(
                "the order in flight was finalized without a recorded key; it cannot be used"
                    .into(),
            )
        })?;
        let chain = order
            .poll_certificate(&retries)
            .await
            .map_err(|e| self.classify(e))?;
        Ok((chain, key))
    }

    /// Publish the HTTP-01 answer of every pending authorization, then ask the CA to
    /// validate it. The answer is in the store before the CA is told (RFC 8555 §7.5.1).
    async fn answer_challenges(
        &self,
        order: &mut instant_acme::Order,
        store: &SharedStore,
        name: &str,
        record: &mut InFlight,
    ) -> Result<(), AcmeError> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| self.classify(e))?;
            let domain = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Valid => {
                    tracing::info!(
                        certificate = name,
                        domain,
                        "authorization already valid; no challenge needed"
                    );
                    continue;
                }
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError::Rejected(format!(
                        "{domain}: authorization is {other:?}"
                    )))
                }
            }
            let mut challenge = authz.challenge(ChallengeType::Http01).ok_or_else(|| {
                AcmeError::Rejected(format!("{domain}: the CA offers no http-01 challenge"))
            })?;
            let token = challenge.token.clone();
            let key_auth = challenge.key_authorization();
            if !record.tokens.contains(&token) {
                record.tokens.push(token.clone());
                // Recorded first: a run killed from here on leaves an answer the next pass
                // knows to remove.
                inflight::save(store, name, record).await?;
            }
            store
                .put(
                    &keys::challenge(&token),
                    key_auth.as_str().as_bytes(),
                    Precondition::None,
                    Sensitivity::Public,
                )
                .await?;
            // A resumed order's challenge may already be under validation: asking again
            // would be refused, and waiting is all that is left to do.
            if challenge.status != ChallengeStatus::Pending {
                tracing::info!(certificate = name, domain, status = ?challenge.status, "challenge already submitted; waiting for the CA");
                continue;
            }
            tracing::info!(
                certificate = name,
                domain,
                "challenge answer published; asking the CA to validate"
            );
            challenge.set_ready().await.map_err(|e| self.classify(e))?;
        }
        Ok(())
    }

    /// Explain a failed order: which domain, and the CA's problem detail for it.
    async fn validation_failure(
        &self,
        order: &mut instant_acme::Order,
        order_problem: Option<Problem>,
    ) -> AcmeError {
        let mut reasons = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let Ok(mut authz) = authz else { continue };
            let _ = authz.refresh().await;
            if authz.status == AuthorizationStatus::Valid {
                continue;
            }
            let domain = authz.identifier().to_string();
            let detail = authz
                .challenges
                .iter()
                .find_map(|c| c.error.as_ref())
                .map(problem_text)
                .unwrap_or_else(|| format!("authorization {:?}", authz.status));
            reasons.push(format!("{domain}: {detail}"));
        }
        if reasons.is_empty() {
            reasons.push(match order_problem {
                Some(p) => problem_text(&p),
                None => "the order became invalid".into(),
            });
        }
        AcmeError::Rejected(format!("validation failed: {}", reasons.join("; ")))
    }
}

fn problem_text(p: &Problem) -> String {
    let mut s = p.detail.clone().unwrap_or_else(|| "no detail".into());
    if let Some(t) = &p.r#type {
        s.push_str(&format!(" ({t})"));
    }
    s
}

fn certificate_identifier(ari_id: &str) -> Option<CertificateIdentifier<'static>> {
    let (aki, serial) = ari_id.split_once('.')?;
    if aki.is_empty() || serial.is_empty() || serial.contains('.') {
        return None;
    }
    Some(CertificateIdentifier {
        authority_key_identifier: Cow::Owned(aki.to_string()),
        serial: Cow::Owned(serial.to_string()),
    })
}

fn classify(e: instant_acme::Error, last_error: &Mutex<Option<ResponseHint>>) -> AcmeError {
    let hint = last_error.lock().ok().and_then(|mut s| s.take());
    let retry_after = hint.and_then(|h| h.retry_after);
    match e {
        instant_acme::Error::Api(problem) => {
            let status = problem.status.or(hint.map(|h| h.status)).unwrap_or(0);
            let kind = problem.r#type.as_deref().unwrap_or("");
            let transient = status == 429
                || status >= 500
                || kind.ends_with(":rateLimited")
                || kind.ends_with(":serverInternal")
                || kind.ends_with(":badNonce");
            let message = format!("the CA answered: {}", problem_text(&problem));
            if kind.ends_with(":accountDoesNotExist") {
                AcmeError::AccountGone(message)
            } else if transient {
                AcmeError::Transient {
                    message,
                    retry_after,
                }
            } else {
                AcmeError::Rejected(message)
            }
        }
        // Connection refused, TLS, timeouts, a body that is not JSON (a proxy's 502 page).
        instant_acme::Error::Other(_)
        | instant_acme::Error::Hyper(_)
        | instant_acme::Error::Timeout(_)
        | instant_acme::Error::Json(_) => AcmeError::Transient {
            message: match hint {
                Some(h) if h.status >= 400 => format!("the CA answered HTTP {}: {e}", h.status),
                _ => format!("cannot reach the CA: {e}"),
            },
            retry_after,
        },
        other => AcmeError::Other(format!("ACME: {other}")),
    }
}

fn external_account_key(eab: &crate::shared::config::EabConfig) -> Result<ExternalAccountKey, AcmeError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let raw = match (&eab.hmac_key_env, &eab.hmac_key_file) {
        (Some(var), _) => std::env::var(var).map_err(|_| {
            AcmeError::Other(format!(
                "acme.eab.hmac_key_env: environment variable {var} is not set"
            ))
        })?,
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            AcmeError::Other(format!("acme.eab.hmac_key_file {}: {e}", path.display()))
        })?,
        (None, None) => return Err(AcmeError::Other("acme.eab: no HMAC key source".into())),
    };
    let key = URL_SAFE_NO_PAD
        .decode(raw.trim().trim_end_matches('='))
        .map_err(|_| AcmeError::Other("acme.eab: the HMAC key is not base64url".into()))?;
    Ok(ExternalAccountKey::new(eab.key_id.clone(), &key))
}

/// A CSR for `domains` with a fresh key of `key_type`; returns the CSR DER and the key PEM.
#[cfg(test)]
fn csr_for(domains: Vec<String>, key_type: KeyType) -> Result<(Vec<u8>, Secret), AcmeError> {
    let key = Secret::new(generate_key(key_type)?.serialize_pem());
    let csr = csr_with_key(domains, key_type, &key)?;
    Ok((csr, key))
}

/// A CSR for `domains` signed with `key_pem` (a key of `key_type`).
pub fn csr_with_key(
    domains: Vec<String>,
    key_type: KeyType,
    key_pem: &Secret,
) -> Result<Vec<u8>, AcmeError> {
    let alg = match key_type {
        KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyType::Rsa2048 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
    };
    let key = rcgen::KeyPair::from_pem_and_sign_algo(key_pem.expose(), alg)
        .map_err(|e| AcmeError::Other(format!("CSR: the {key_type} key does not load: {e}")))?;
    let mut params = rcgen::CertificateParams::new(domains)
        .map_err(|e| AcmeError::Other(format!("CSR: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| AcmeError::Other(format!("CSR: {e}")))?;
    Ok(csr.der().to_vec())
}

/// A new private key. ECDSA through ring; RSA through the `rsa` crate, because ring (the
/// crypto backend here) can sign with RSA keys but not generate them.
pub fn generate_key(key_type: KeyType) -> Result<rcgen::KeyPair, AcmeError> {
    let err = |e: String| AcmeError::Other(format!("generate {key_type} key: {e}"));
    match key_type {
        KeyType::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| err(e.to_string())),
        KeyType::EcdsaP384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .map_err(|e| err(e.to_string())),
        KeyType::Rsa2048 | KeyType::Rsa4096 => {
            use rsa::pkcs8::EncodePrivateKey;
            let bits = if key_type == KeyType::Rsa2048 {
                2048
            } else {
                4096
            };
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
                .map_err(|e| err(e.to_string()))?;
            let der = key.to_pkcs8_der().map_err(|e| err(e.to_string()))?;
            let der = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
                .map_err(|e| err(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_every_type_sign_a_csr() {
        for kt in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
            let (csr, key) = csr_for(vec!["a.example.com".into()], kt).expect("csr");
            assert!(!csr.is_empty());
            assert!(key.expose().contains("PRIVATE KEY"), "{kt}");
        }
        // Fresh key every time.
        let (_, k1) = csr_for(vec!["a.example.com".into()], KeyType::EcdsaP256).expect("csr");
        let (_, k2) = csr_for(vec!["a.example.com".into()], KeyType::EcdsaP256).expect("csr");
        assert_ne!(k1, k2);
    }

    #[test]
    fn account_keys_differ_per_directory() {
        let a = account_key("https://a.example/dir");
        assert!(a.starts_with("acme/accounts/") && a.ends_with(".json"));
        assert_ne!(a, account_key("https://b.example/dir"));
        crate::shared::store::check_key(&a).expect("valid key");
    }

    #[test]
    fn ari_ids_parse() {
        assert!(certificate_identifier("aki.serial").is_some());
        for bad in ["", "a", "a.", ".b", "a.b.c"] {
            assert!(certificate_identifier(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("120"),
        );
        let t = retry_after(&h).expect("seconds");
        assert!(t > SystemTime::now() + Duration::from_secs(100));
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("Wed, 21 Oct 2037 07:28:00 GMT"),
        );
        assert!(retry_after(&h).is_some());
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("soon"),
        );
        assert!(retry_after(&h).is_none());
    }

    #[tokio::test]
    async fn concurrent_orders_keep_their_own_error_hints() {
        let shared: HintSlot = Arc::new(Mutex::new(None));
        // What CaHttp does on an error response, then what classify reads, with the other
        // order recording its own error in between.
        let order = |status: u16| {
            let shared = shared.clone();
            with_own_hints(async move {
                if let Ok(mut slot) = hint_slot(&shared).lock() {
                    *slot = Some(ResponseHint {
                        status,
                        retry_after: None,
                    });
                }
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                let seen = hint_slot(&shared).lock().ok().and_then(|mut s| s.take());
                seen.map(|h| h.status)
            })
        };
        let (a, b) = tokio::join!(order(429), order(503));
        assert_eq!((a, b), (Some(429), Some(503)));
        assert!(
            shared.lock().expect("lock").is_none(),
            "orders do not use the shared slot"
        );
        // Outside an order (account loading), the shared slot is used.
        assert!(Arc::ptr_eq(&hint_slot(&shared), &shared));
    }

    #[test]
    fn errors_are_classified() {
        let slot = Mutex::new(Some(ResponseHint {
            status: 429,
            retry_after: Some(SystemTime::now()),
        }));
        let p: Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many","status":429}"#,
        )
        .expect("problem");
        let e = classify(instant_acme::Error::Api(p), &slot);
        assert!(
            matches!(
                e,
                AcmeError::Transient {
                    retry_after: Some(_),
                    ..
                }
            ),
            "{e:?}"
        );
        let p: Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:unauthorized","detail":"no","status":403}"#,
        )
        .expect("problem");
        assert!(matches!(
            classify(instant_acme::Error::Api(p), &Mutex::new(None)),
            AcmeError::Rejected(_)
        ));
    }
}
