//! The DNS-01 half of an order (RFC 8555 §8.4): every pending authorization's TXT value is
//! published — all of them first, and served by the zone's servers — before the CA is asked
//! to look; the records are removed when the order is over, whatever happened.

use instant_acme::{AuthorizationStatus, ChallengeStatus, ChallengeType};

use crate::cloud::dns01::{self, ChallengeRecords, TxtRecords};
use crate::cloud::inflight::{self, InFlight};
use crate::shared::store::SharedStore;

use super::order::needs_challenge;
use super::{Acme, AcmeError};

impl Acme {
    /// Publish the TXT record of every pending authorization, wait until they are served,
    /// then ask the CA to validate each.
    pub(super) async fn answer_dns01(
        &self,
        order: &mut instant_acme::Order,
        store: &SharedStore,
        name: &str,
        dns: &dyn TxtRecords,
        record: &mut InFlight,
    ) -> Result<(), AcmeError> {
        let mut records = ChallengeRecords::new();
        let mut pending = order.authorizations();
        while let Some(authz) = pending.next().await {
            let mut authz = authz.map_err(|e| self.classify(e))?;
            let domain = authz.identifier().to_string();
            if !needs_challenge(authz.status, name, &domain)? {
                continue;
            }
            let challenge = authz.challenge(ChallengeType::Dns01).ok_or_else(|| {
                AcmeError::Rejected(format!("{domain}: the CA offers no dns-01 challenge"))
            })?;
            dns01::add(
                &mut records,
                &domain,
                challenge.key_authorization().dns_value(),
            );
        }
        if records.is_empty() {
            return Ok(());
        }
        // Recorded first: a run killed from here on leaves records the next pass can find.
        for (record_name, values) in &records {
            let known = record.dns_records.entry(record_name.clone()).or_default();
            *known = dns01::with_values(known, values);
        }
        inflight::save(store, name, record).await?;
        let started = tokio::time::Instant::now();
        dns.publish(&records).await?;
        tracing::info!(
            certificate = name,
            records = records.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "DNS-01 records published and served; asking the CA to validate"
        );

        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| self.classify(e))?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let domain = authz.identifier().to_string();
            let Some(mut challenge) = authz.challenge(ChallengeType::Dns01) else {
                continue;
            };
            // A resumed order's challenge may already be under validation.
            if challenge.status != ChallengeStatus::Pending {
                tracing::info!(certificate = name, domain, status = ?challenge.status, "challenge already submitted; waiting for the CA");
                continue;
            }
            challenge.set_ready().await.map_err(|e| self.classify(e))?;
        }
        Ok(())
    }

    /// Take this order's TXT values out of DNS (see [`inflight::remove_dns_records`]).
    pub(super) async fn remove_dns_records(
        &self,
        store: &SharedStore,
        name: &str,
        dns: Option<&dyn TxtRecords>,
        record: &mut InFlight,
    ) {
        let removed = inflight::remove_dns_records(store, name, dns, record).await;
        if removed > 0 {
            tracing::info!(
                certificate = name,
                records = removed,
                "DNS-01 records removed"
            );
        }
    }
}
