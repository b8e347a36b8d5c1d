//! Keys: account key names, certificate keys and CSRs, and the EAB key (RFC 8555 §7.3.4).

use sha2::{Digest, Sha256};

use crate::shared::bundle::Secret;
use crate::shared::config::KeyType;
use crate::shared::store::keys;

use super::AcmeError;

/// Store key of the account credentials for this directory: one account per CA.
pub fn account_key(directory_url: &str) -> String {
    let digest = hex::encode(Sha256::digest(directory_url.as_bytes()));
    keys::account(digest.get(..16).unwrap_or(&digest))
}

/// The EAB key of the config: its id, and the MAC key from the variable or file named.
pub(super) fn eab_hmac_key(
    eab: &crate::shared::config::EabConfig,
) -> Result<super::register::EabKey, AcmeError> {
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
    Ok(super::register::EabKey {
        key_id: eab.key_id.clone(),
        hmac_key: key,
    })
}

/// A CSR for `domains` with a fresh key of `key_type`; returns the CSR DER and the key PEM.
#[cfg(test)]
pub(super) fn csr_for(
    domains: Vec<String>,
    key_type: KeyType,
) -> Result<(Vec<u8>, Secret), AcmeError> {
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
