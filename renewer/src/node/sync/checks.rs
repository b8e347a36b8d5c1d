//! What a bundle must pass before it is served, and whether it replaces what is installed:
//! pure decisions (`load_roots` only reads the roots file).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::Installed;
use crate::shared::bundle::Bundle;
use crate::shared::certinfo::{self, LeafInfo};
use crate::shared::clock::rfc3339;

/// The roots of `sync.trusted_roots`: every certificate of the PEM file (at least one).
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "{}: no usable CA certificate in the file",
            path.display()
        ));
    }
    Ok(roots)
}

/// Whether the bundle's chain (leaf first, then intermediates) leads to one of `roots` for
/// the leaf's first name, at `now` (RFC 5280 path validation, as a TLS client would do it).
pub fn chain_trusted(
    fullchain_pem: &str,
    roots: &Arc<rustls::RootCertStore>,
    leaf: &LeafInfo,
    now: OffsetDateTime,
) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let certs = CertificateDer::pem_slice_iter(fullchain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("its chain does not parse: {e}"))?;
    let (end_entity, intermediates) = certs
        .split_first()
        .ok_or_else(|| "its chain is empty".to_string())?;
    let name = leaf
        .domains
        .first()
        .ok_or_else(|| "it names no DNS name".to_string())?;
    let server_name = ServerName::try_from(name.clone()).map_err(|e| format!("{name:?}: {e}"))?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots.clone(),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| format!("trusted roots: {e}"))?;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    verifier
        .verify_server_cert(end_entity, intermediates, &server_name, &[], at)
        .map(|_| ())
        .map_err(|e| format!("its chain does not lead to a trusted root (sync.trusted_roots): {e}"))
}

/// Check a bundle before it may be served: the chain parses, the key is the leaf's, and it is
/// valid now. Which configured names it covers is [`missing_names`]' and [`accept`]'s business.
pub fn verify(bundle: &Bundle, now: OffsetDateTime) -> Result<LeafInfo, String> {
    let leaf = certinfo::inspect(&bundle.fullchain_pem).map_err(|e| e.to_string())?;
    certinfo::check_key_matches(bundle.privkey_pem.expose(), &leaf).map_err(|e| e.to_string())?;
    if leaf.not_after <= now {
        return Err(format!("it expired at {}", rfc3339(leaf.not_after)));
    }
    // A few minutes of clock skew between the CA and this node are normal.
    if leaf.not_before > now + time::Duration::minutes(10) {
        return Err(format!(
            "it is not valid before {} (check this node's clock)",
            rfc3339(leaf.not_before)
        ));
    }
    Ok(leaf)
}

/// The configured names (`wanted`) a certificate for `domains` does not cover, in `wanted`'s
/// order. Names compare without regard to case (RFC 4343).
pub fn missing_names(domains: &[String], wanted: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| !domains.iter().any(|d| d.eq_ignore_ascii_case(w)))
        .cloned()
        .collect()
}

/// Whether the source's (verified) certificate may replace what is installed. It may, unless
/// the installed one is still valid and covers configured names the new one lacks: a node
/// serves the best certificate it has, and a gap never grows by a sync.
pub fn accept(
    installed: Option<&Installed>,
    leaf: &LeafInfo,
    wanted: &[String],
    now: OffsetDateTime,
) -> Result<(), String> {
    let new_gap = missing_names(&leaf.domains, wanted);
    if new_gap.is_empty() {
        return Ok(());
    }
    if let Some(i) = installed.filter(|i| i.not_after > now) {
        let old_gap = missing_names(&i.domains, wanted);
        let lost: Vec<&str> = new_gap
            .iter()
            .filter(|n| !old_gap.contains(n))
            .map(String::as_str)
            .collect();
        if !lost.is_empty() {
            return Err(format!(
                "it does not cover {} which the installed certificate {} does (it has {})",
                lost.join(", "),
                i.serial,
                leaf.domains.join(", ")
            ));
        }
    }
    Ok(())
}

/// What to do, given what is installed and what the source has (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The installed certificate is the source's, intact: nothing to write.
    Keep,
    /// Install the source's certificate (after it passes [`verify`] and [`accept`]).
    Install,
}

/// [`Plan::Keep`] only when the installed version has the source's serial and chain digest.
pub fn plan(installed: Option<&Installed>, source_serial: &str, source_sha256: &str) -> Plan {
    match installed {
        Some(i) if i.serial == source_serial && i.chain_sha256 == source_sha256 => Plan::Keep,
        _ => Plan::Install,
    }
}
