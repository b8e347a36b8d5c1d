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

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};

use crate::shared::config::{ChallengeKind, Config, KeyType};
use crate::shared::store::{Precondition, Sensitivity, SharedStore, StoreError};

mod ca_http;
mod dns01;
mod keygen;
mod order;
mod register;
#[cfg(test)]
mod tests;

use ca_http::{build_http, classify, hint_slot, HintSlot};
pub use keygen::account_key;
use keygen::eab_hmac_key;

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
    /// The renewer is shutting down (SIGTERM to `renewer run` or `renewer serve`): the order
    /// was abandoned, its challenge answers removed.
    #[error("cancelled: the renewer is shutting down")]
    Cancelled,
    /// The DNS-01 records could not be written or were not served (no zone, no permission,
    /// a refused change, records that never appeared): another CA would meet the same.
    #[error("{0}")]
    Dns(String),
    /// Cloud DNS answered 429 or 5xx, or could not be reached, while the DNS-01 records were
    /// written or removed: worth another attempt, like [`AcmeError::Transient`], but the CA
    /// is not to blame and every fallback CA writes to the same zones, so it never moves the
    /// order to another CA.
    #[error("{0}")]
    DnsTransient(String),
    /// The CA does not know the stored account any more (deactivated, or the CA was reset):
    /// RFC 8555 §7.3.1 `accountDoesNotExist`. Only a new account helps.
    #[error("{0}")]
    AccountGone(String),
}

impl AcmeError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AcmeError::Transient { .. } | AcmeError::DnsTransient(_)
        )
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
    /// How the CA validates the names: `http-01` answers from the store, `dns-01` TXT records.
    pub challenge: ChallengeKind,
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
    /// The fallback CAs' accounts, from the store (`renewer account` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<StoredAccount>,
}

impl Acme {
    /// Load the account of `config`'s directory from the store, creating and storing it when
    /// there is none (unless `create` is false). A new account is registered with the key of
    /// the first of `key_from` (the other CAs' directories) that has an account in the store,
    /// so that every CA's HTTP-01 answers carry one thumbprint (the edge filter's stateless
    /// mode knows one); with none, or `key_from` empty, with a new key.
    pub async fn open(
        config: &Config,
        store: &SharedStore,
        create: bool,
        key_from: &[String],
    ) -> Result<(Acme, AccountInfo), AcmeError> {
        let directory_url = config.directory_url().to_string();
        let last_error = Arc::new(Mutex::new(None));
        let key = account_key(&directory_url);
        let object = format!("{}/{key}", store.location());
        let hint = last_error.clone();
        let classify_ = move |e: instant_acme::Error| classify(e, &hint_slot(&hint));

        let (json, created) = match store.get(&key).await? {
            Some(obj) => (obj.data, false),
            None if !create => {
                return Err(AcmeError::Other(format!(
                "no ACME account for {directory_url} in {} (run `renewer account` to create one)",
                store.location()
            )))
            }
            None => {
                let json = register_new(config, store, key_from, &last_error).await?;
                match store
                    .put(&key, &json, Precondition::DoesNotExist, Sensitivity::Secret)
                    .await
                {
                    Ok(_) => (json, true),
                    Err(e) if e.is_precondition_failed() => {
                        // Another renewer created one at the same moment: use theirs, so every
                        // renewer (and the filter's thumbprint) agrees on one account.
                        return Box::pin(Acme::open(config, store, false, &[])).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let creds: AccountCredentials = serde_json::from_slice(&json).map_err(|e| {
            AcmeError::Other(format!("{object}: not valid account credentials: {e}"))
        })?;
        let http = build_http(config, last_error.clone())?;
        let account = Account::builder_with_http(Box::new(http))
            .from_credentials(creds)
            .await
            .map_err(&classify_)?;
        let info = AccountInfo {
            directory: directory_url.clone(),
            account_url: account.id().to_string(),
            thumbprint: account.key_thumbprint().to_string(),
            contact: config.contact_urls(),
            object,
            created,
            replaced: None,
            fallbacks: Vec::new(),
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
        let Some(creds) = stored_credentials(store, &directory_url).await? else {
            return Err(AcmeError::Other(format!(
                "no ACME account for {directory_url} in {}",
                store.location()
            )));
        };
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
        // A new key: a CA that deactivated the account refuses its key for good (and any
        // other CA's account with that key keeps its own thumbprint, logged below).
        let (acme, info) = Acme::open(config, store, true, &[]).await?;
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
}

impl From<crate::cloud::dns01::Dns01Error> for AcmeError {
    fn from(e: crate::cloud::dns01::Dns01Error) -> AcmeError {
        match e {
            crate::cloud::dns01::Dns01Error::Transient(_) => AcmeError::DnsTransient(e.to_string()),
            crate::cloud::dns01::Dns01Error::Failed(_) => AcmeError::Dns(e.to_string()),
        }
    }
}

/// Register a new account at `config`'s CA, with the key of the first of `key_from` that has
/// an account in the store, else a new one; its credentials as they are stored (JSON).
async fn register_new(
    config: &Config,
    store: &SharedStore,
    key_from: &[String],
    last_error: &HintSlot,
) -> Result<Vec<u8>, AcmeError> {
    let directory_url = config.directory_url();
    let contact = config.contact_urls();
    let eab = config.acme.eab.as_ref().map(eab_hmac_key).transpose()?;
    let http = build_http(config, last_error.clone())?;
    let json = match shared_key(store, key_from).await {
        Some((from, key_pkcs8)) => {
            tracing::info!(
                directory = %directory_url,
                key_of = from,
                "registering the ACME account with the account key of another CA, so challenges carry one thumbprint"
            );
            let registration = register::Registration {
                directory_url,
                key_pkcs8,
                contact: &contact,
                eab: eab.as_ref(),
            };
            serde_json::to_vec(&register::register(http, last_error, registration).await?)
        }
        None => {
            let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
            let eab = eab.map(|k| ExternalAccountKey::new(k.key_id, &k.hmac_key));
            let (_, creds) = Account::builder_with_http(Box::new(http))
                .create(
                    &NewAccount {
                        contact: &contact,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    directory_url.to_string(),
                    eab.as_ref(),
                )
                .await
                .map_err(|e| classify(e, &hint_slot(last_error)))?;
            serde_json::to_vec(&creds)
        }
    };
    json.map_err(|e| AcmeError::Other(format!("serialize account: {e}")))
}

/// Another CA's account as the store holds it (`renewer account` lists the fallback CAs'):
/// nothing is asked of the CA.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredAccount {
    pub directory: String,
    /// Store object holding the credentials.
    pub object: String,
    /// The thumbprint of its key; `None` when there is no account yet (it is registered on
    /// first use, with the primary's key).
    pub thumbprint: Option<String>,
}

/// The credentials stored for `directory`'s account, if any.
async fn stored_credentials(
    store: &SharedStore,
    directory: &str,
) -> Result<Option<AccountCredentials>, AcmeError> {
    let key = account_key(directory);
    let Some(obj) = store.get(&key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&obj.data).map(Some).map_err(|e| {
        AcmeError::Other(format!(
            "{}/{key}: not valid account credentials: {e}",
            store.location()
        ))
    })
}

/// The stored accounts of `directories` (see [`StoredAccount`]).
pub async fn stored_accounts(
    store: &SharedStore,
    directories: &[String],
) -> Result<Vec<StoredAccount>, AcmeError> {
    let mut accounts = Vec::with_capacity(directories.len());
    for directory in directories {
        let object = format!("{}/{}", store.location(), account_key(directory));
        let thumbprint = match stored_credentials(store, directory).await? {
            Some(creds) => Some(register::thumbprint(creds.private_key())?),
            None => None,
        };
        accounts.push(StoredAccount {
            directory: directory.clone(),
            object,
            thumbprint,
        });
    }
    Ok(accounts)
}

/// The key of the first of `directories` whose account is in the store: a new account for
/// another CA is registered with it. An unreadable one is skipped (with a warning): the new
/// account then gets a key of its own, as it would with none.
async fn shared_key(
    store: &SharedStore,
    directories: &[String],
) -> Option<(String, rustls::pki_types::PrivatePkcs8KeyDer<'static>)> {
    for directory in directories {
        match stored_credentials(store, directory).await {
            Ok(Some(creds)) => return Some((directory.clone(), creds.private_key().clone_key())),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the account of another CA; not sharing its key")
            }
        }
    }
    None
}
