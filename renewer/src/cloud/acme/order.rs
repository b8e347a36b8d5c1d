//! One order (RFC 8555 §7.4): new or resumed, HTTP-01 answers published to the store before
//! the CA validates, finalize with a fresh key, download the chain; and ARI (RFC 9773).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use instant_acme::{
    AuthorizationStatus, CertificateIdentifier, ChallengeStatus, ChallengeType, Identifier,
    NewOrder, OrderStatus, Problem, RetryPolicy,
};

use tokio_util::sync::CancellationToken;

use crate::cloud::dns01::TxtRecords;
use crate::cloud::inflight::{self, InFlight};
use crate::shared::bundle::Secret;
use crate::shared::config::ChallengeKind;
use crate::shared::store::{keys, Precondition, Sensitivity, SharedStore};

use super::ca_http::{is_transient, problem_text, with_own_hints};
use super::keygen::{csr_with_key, generate_key};
use super::{Acme, AcmeError, OrderSpec};

impl Acme {
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
    /// `dns` writes the TXT records of a `dns-01` order (required for one).
    pub async fn issue(
        &self,
        store: &SharedStore,
        order: &OrderSpec<'_>,
        dns: Option<&dyn TxtRecords>,
        cancel: &CancellationToken,
    ) -> Result<(String, Secret), AcmeError> {
        with_own_hints(self.issue_inner(store, order, dns, cancel)).await
    }

    async fn issue_inner(
        &self,
        store: &SharedStore,
        order: &OrderSpec<'_>,
        dns: Option<&dyn TxtRecords>,
        cancel: &CancellationToken,
    ) -> Result<(String, Secret), AcmeError> {
        let name = order.name;
        self.take_hint();
        let (mut acme_order, mut record) = self.open_order(store, order).await?;

        // On cancellation the order is dropped where it stands; its record stays, so the
        // next pass resumes it rather than ordering again. The cleanup below still runs.
        let result = tokio::select! {
            r = self.complete(&mut acme_order, store, order, dns, &mut record) => r,
            _ = cancel.cancelled() => Err(AcmeError::Cancelled),
        };
        // Challenge answers are only useful while the CA validates: remove them whatever
        // happened (a resumed order publishes them again). A failure to clean up is logged.
        if !record.dns_records.is_empty() {
            self.remove_dns_records(store, name, dns, &mut record).await;
        }
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
            ..
        } = *spec;
        let loaded = inflight::load(store, name).await?;
        // DNS-01 values an earlier attempt published and could not remove: this order
        // removes them with its own when it ends.
        let leftover_dns = loaded
            .as_ref()
            .map(|r| r.dns_records.clone())
            .unwrap_or_default();
        match loaded {
            Some(rec) if rec.matches(domains, key_type, &self.directory_url) => {
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
                "the order in flight was for other names, another key type or another CA; placing a new one"
            ),
            None => {}
        }
        let identifiers: Vec<Identifier> =
            domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        let order = self.new_order(&identifiers, profile, replaces).await?;
        tracing::info!(certificate = name, order = order.url(), "order placed");
        let mut rec = InFlight::new(
            order.url(),
            domains,
            key_type,
            time::OffsetDateTime::now_utc(),
            &self.directory_url,
        );
        rec.dns_records = leftover_dns;
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
        dns: Option<&dyn TxtRecords>,
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
            match (spec.challenge, dns) {
                (ChallengeKind::Http01, _) => {
                    self.answer_challenges(order, store, name, record).await?
                }
                (ChallengeKind::Dns01, Some(dns)) => {
                    self.answer_dns01(order, store, name, dns, record).await?
                }
                (ChallengeKind::Dns01, None) => {
                    return Err(AcmeError::Other(
                        "dns-01 needs the [dns] section; none is configured".into(),
                    ))
                }
            }
            status = match order.poll_ready(&retries).await {
                Ok(status) => status,
                // A problem about the request itself (a rejected nonce, a 5xx while polling)
                // says nothing about the names: classify it, so it is retried.
                Err(instant_acme::Error::Api(problem))
                    if !is_transient(
                        problem.status.unwrap_or(0),
                        problem.r#type.as_deref().unwrap_or(""),
                    ) =>
                {
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
            if !needs_challenge(authz.status, name, &domain)? {
                continue;
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

pub(super) fn certificate_identifier(ari_id: &str) -> Option<CertificateIdentifier<'static>> {
    let (aki, serial) = ari_id.split_once('.')?;
    if aki.is_empty() || serial.is_empty() || serial.contains('.') {
        return None;
    }
    Some(CertificateIdentifier {
        authority_key_identifier: Cow::Owned(aki.to_string()),
        serial: Cow::Owned(serial.to_string()),
    })
}

/// Whether an authorization still needs its challenge answered: not when it is already valid
/// (the CA reuses it, logged), an error when it is neither valid nor pending.
pub(super) fn needs_challenge(
    status: AuthorizationStatus,
    name: &str,
    domain: &str,
) -> Result<bool, AcmeError> {
    match status {
        AuthorizationStatus::Valid => {
            tracing::info!(
                certificate = name,
                domain,
                "authorization already valid; no challenge needed"
            );
            Ok(false)
        }
        AuthorizationStatus::Pending => Ok(true),
        other => Err(AcmeError::Rejected(format!(
            "{domain}: authorization is {other:?}"
        ))),
    }
}
