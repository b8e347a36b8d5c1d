//! Reading certificates: what a PEM chain says about its leaf, and whether a key belongs to it.
//!
//! Used after issuance (to name the serial and check the CA gave us what we asked for), by the
//! stores when they read a bundle back, by `status`, and by `sync` before it installs anything.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::shared::config::KeyType;

/// Why a chain or key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The text holds no `CERTIFICATE` PEM block (or, for a bundle, nothing before the key).
    #[error("no PEM certificate found")]
    NoCertificate,
    /// A PEM block is malformed (bad base64, unterminated).
    #[error("PEM does not parse: {0}")]
    Pem(String),
    /// The leaf is not a certificate the renewer can read, or uses a key it does not issue.
    #[error("certificate does not parse: {0}")]
    X509(String),
    /// The private key is missing or does not parse.
    #[error("private key does not parse (expected PKCS#8, SEC1 or PKCS#1 PEM)")]
    Key,
    /// The private key belongs to another certificate.
    #[error("private key does not match the certificate's public key")]
    KeyMismatch,
}

/// What the renewer needs to know about an issued leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Serial number as lowercase hex of its DER content bytes (what `openssl x509 -serial`
    /// prints, modulo case); used as the per-issuance object key.
    pub serial: String,
    /// DNS names of the subjectAltName extension, lowercased, sorted, deduplicated.
    pub domains: Vec<String>,
    /// Issuer distinguished name, RFC 4514 style.
    pub issuer: String,
    /// Start of validity (notBefore).
    pub not_before: OffsetDateTime,
    /// End of validity (notAfter).
    pub not_after: OffsetDateTime,
    /// RFC 9773 certificate identifier (`base64url(AKI keyIdentifier).base64url(serial DER)`),
    /// when the certificate has an authority key identifier.
    pub ari_id: Option<String>,
    /// The key algorithm, when it is one the renewer issues.
    pub key_type: Option<KeyType>,
    /// SubjectPublicKeyInfo DER, to match a private key against.
    pub spki: Vec<u8>,
    /// SHA-256 of the whole PEM chain as given, hex; identifies a bundle in logs without its key.
    pub chain_sha256: String,
}

/// The certificates of a PEM chain, in order (leaf first).
pub fn parse_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    Ok(certs)
}

/// Inspect the first (leaf) certificate of a PEM chain.
pub fn inspect(chain_pem: &str) -> Result<LeafInfo, CertError> {
    let chain = parse_chain(chain_pem)?;
    let leaf = chain.first().ok_or(CertError::NoCertificate)?;
    let mut info = inspect_der(leaf.as_ref())?;
    info.chain_sha256 = hex::encode(Sha256::digest(chain_pem.as_bytes()));
    Ok(info)
}

/// The serial (as in [`LeafInfo::serial`]) of one DER certificate, e.g. what a server presented.
pub fn serial_of_der(der: &[u8]) -> Result<String, CertError> {
    inspect_der(der).map(|i| i.serial)
}

fn inspect_der(der: &[u8]) -> Result<LeafInfo, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::X509(e.to_string()))?;
    let serial_der = cert.tbs_certificate.raw_serial();
    let mut domains = Vec::new();
    let mut aki = None;
    for ext in cert.iter_extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::DNSName(dns) = name {
                        domains.push(dns.to_ascii_lowercase());
                    }
                }
            }
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec());
            }
            _ => {}
        }
    }
    domains.sort();
    domains.dedup();
    let ari_id = aki.map(|aki| {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(aki),
            URL_SAFE_NO_PAD.encode(serial_der)
        )
    });
    let validity = cert.validity();
    Ok(LeafInfo {
        serial: hex::encode(
            serial_der
                .iter()
                .skip_while(|b| **b == 0)
                .copied()
                .collect::<Vec<u8>>(),
        ),
        domains,
        issuer: cert.issuer().to_string(),
        not_before: validity.not_before.to_datetime(),
        not_after: validity.not_after.to_datetime(),
        ari_id,
        key_type: key_type_of(&cert),
        spki: cert.public_key().raw.to_vec(),
        chain_sha256: String::new(),
    })
}

fn key_type_of(cert: &X509Certificate<'_>) -> Option<KeyType> {
    use x509_parser::public_key::PublicKey;
    match cert.public_key().parsed().ok()? {
        PublicKey::EC(point) => match point.key_size() {
            256 => Some(KeyType::EcdsaP256),
            384 => Some(KeyType::EcdsaP384),
            _ => None,
        },
        PublicKey::RSA(rsa) => match rsa.key_size() {
            2048 => Some(KeyType::Rsa2048),
            4096 => Some(KeyType::Rsa4096),
            _ => None,
        },
        _ => None,
    }
}

/// Check that `key_pem` is the private key of the leaf described by `leaf`.
pub fn check_key_matches(key_pem: &str, leaf: &LeafInfo) -> Result<(), CertError> {
    let der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| CertError::Key)?;
    let pair = rcgen::KeyPair::try_from(&der).map_err(|_| CertError::Key)?;
    use rcgen::PublicKeyData;
    if pair.subject_public_key_info() == leaf.spki {
        Ok(())
    } else {
        Err(CertError::KeyMismatch)
    }
}

/// Split a Secret Manager style bundle (certificates, then the private key, all PEM) into the
/// chain and the key. The key is whatever `PRIVATE KEY` block comes first.
pub fn split_bundle(bundle: &str) -> Result<(String, String), CertError> {
    let start = bundle
        .find("-----BEGIN PRIVATE KEY-----")
        .or_else(|| bundle.find("-----BEGIN EC PRIVATE KEY-----"))
        .or_else(|| bundle.find("-----BEGIN RSA PRIVATE KEY-----"))
        .ok_or(CertError::Key)?;
    let (chain, key) = bundle.split_at(start);
    if chain.trim().is_empty() {
        return Err(CertError::NoCertificate);
    }
    Ok((chain.trim_end().to_string() + "\n", key.to_string()))
}

/// Days (rounded down) from `now` to `not_after`; negative once expired.
pub fn days_left(not_after: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (not_after - now).whole_days()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        crate::shared::testing::self_signed(names, 90)
    }

    #[test]
    fn inspects_a_leaf() {
        let (cert, key) = self_signed(&["b.example.com", "A.example.com"]);
        let info = inspect(&cert).expect("inspect");
        assert_eq!(info.domains, vec!["a.example.com", "b.example.com"]);
        assert_eq!(info.key_type, Some(KeyType::EcdsaP256));
        assert!(!info.serial.is_empty());
        assert!(info.not_after > info.not_before);
        check_key_matches(&key, &info).expect("own key matches");
        let (_, other) = self_signed(&["a.example.com"]);
        assert!(matches!(
            check_key_matches(&other, &info),
            Err(CertError::KeyMismatch)
        ));
        assert!(matches!(
            check_key_matches("junk", &info),
            Err(CertError::Key)
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(inspect(""), Err(CertError::NoCertificate)));
        assert!(inspect("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }

    #[test]
    fn splits_a_bundle() {
        let (cert, key) = self_signed(&["a.example.com"]);
        let (chain, k) = split_bundle(&format!("{cert}{key}")).expect("split");
        assert_eq!(chain.trim(), cert.trim());
        assert_eq!(k, key);
        assert!(split_bundle(&cert).is_err());
        assert!(split_bundle(&key).is_err());
    }
}
