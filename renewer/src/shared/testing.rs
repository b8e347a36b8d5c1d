//! Fixtures for the unit tests: certificates and bundles made on the spot with rcgen, so no
//! test depends on a stored certificate that expires.

use time::OffsetDateTime;

use crate::shared::bundle::{Bundle, Secret};

/// A self-signed ECDSA P-256 certificate for `names`, valid from a day ago until `days` days
/// from now: (certificate PEM, PKCS#8 key PEM).
pub(crate) fn self_signed(names: &[&str], days: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
    let cert = params.self_signed(&key).expect("cert");
    (cert.pem(), key.serialize_pem())
}

/// [`self_signed`] as the bundle of certificate `name`, issued now.
pub(crate) fn bundle(name: &str, names: &[&str], days: i64) -> Bundle {
    let (chain, key) = self_signed(names, days);
    Bundle::from_pem(name, chain, Secret::new(key), OffsetDateTime::now_utc()).expect("bundle")
}
