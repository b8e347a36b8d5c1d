//! `[acme]`, `[renewal]` and `[[certificates]]`: which CA, when to renew, what to issue.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::syntax::check_domain;
use super::FieldError;

/// `[acme]`: the CA, the account's contacts, and how patiently to talk to the CA.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// `letsencrypt`, `letsencrypt-staging`, or the https URL of an ACME directory. No default:
    /// which CA (and staging or production) is a choice to make in words.
    #[serde(default)]
    pub directory: String,
    /// Contact addresses for the account (`ops@example.com` or `mailto:ops@example.com`; the
    /// `mailto:` is added when missing). Default: none.
    #[serde(default)]
    pub contact: Vec<String>,
    /// PEM file with extra root certificates to trust for the CA's API (Pebble, a private CA),
    /// in addition to the built-in web roots. Default: none.
    #[serde(default)]
    pub extra_root_ca: Option<PathBuf>,
    /// External account binding, required by some CAs (Google Trust Services, ZeroSSL).
    /// Default: none.
    #[serde(default)]
    pub eab: Option<EabConfig>,
    /// Seconds to wait for the CA to validate an order and to issue, per order (> 0).
    /// Default: 120.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_seconds: u64,
    /// Seconds before a single HTTP request to the CA is abandoned (> 0). Default: 30.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// Attempts per certificate on transient CA errors (unreachable, 5xx, 429, `badNonce`),
    /// 1 to 10. Waits between attempts follow `Retry-After` (up to 5 min) when given, else
    /// back off 2 s, 4 s, 8 s… Default: 3.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// `[[acme.fallback]]`: other CAs, tried in order when this one still fails after its
    /// `attempts` (unreachable, 5xx, rate limited, or an order it refuses) — never for a
    /// DNS-01 failure, Cloud DNS 429/5xx included: every CA would meet the same zones. Each has its own
    /// account (and EAB); every pass starts with the primary again. Default: none.
    #[serde(default)]
    pub fallback: Vec<FallbackConfig>,
}

/// `[[acme.fallback]]`: one more CA to try when the ones before it failed.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// `letsencrypt`, `letsencrypt-staging`, or the https URL of an ACME directory (e.g.
    /// Google Trust Services, `https://dv.acme-v02.api.pki.goog/directory`). Required.
    pub directory: String,
    /// PEM file with extra root certificates to trust for this CA's API. Default: none.
    #[serde(default)]
    pub extra_root_ca: Option<PathBuf>,
    /// External account binding for this CA, if it requires one. Default: none.
    #[serde(default)]
    pub eab: Option<EabConfig>,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory: String::new(),
            contact: Vec::new(),
            extra_root_ca: None,
            eab: None,
            poll_timeout_seconds: default_poll_timeout(),
            request_timeout_seconds: default_request_timeout(),
            attempts: default_attempts(),
            fallback: Vec::new(),
        }
    }
}

fn default_poll_timeout() -> u64 {
    120
}
fn default_request_timeout() -> u64 {
    30
}
fn default_attempts() -> u32 {
    3
}

/// `[acme.eab]`: external account binding (RFC 8555 §7.3.4), the key id and HMAC key the CA
/// gave you to tie the ACME account to your account with it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EabConfig {
    /// The key identifier the CA gave you. Required.
    pub key_id: String,
    /// Environment variable holding the base64url HMAC key (Cloud Run: a secret exposed as an
    /// environment variable). Exactly one of `hmac_key_env` and `hmac_key_file`.
    #[serde(default)]
    pub hmac_key_env: Option<String>,
    /// File holding the base64url HMAC key (Cloud Run: a secret mounted as a volume). Exactly
    /// one of `hmac_key_env` and `hmac_key_file`.
    #[serde(default)]
    pub hmac_key_file: Option<PathBuf>,
}

/// `[renewal]`: when a certificate is due, and how many a pass renews at once.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RenewalConfig {
    /// Renew when less than this fraction of the certificate's lifetime is left (0 < f < 1).
    /// The default, 1/3, renews a 90-day certificate 30 days before it expires.
    #[serde(default = "default_fraction")]
    pub fraction_left: f64,
    /// Ask the CA for ACME Renewal Information (RFC 9773) when it offers it, and renew inside
    /// the window it suggests; the lifetime rule still applies as a backstop. Default: true.
    #[serde(default = "default_true")]
    pub ari: bool,
    /// How many certificates one pass renews at the same time (1 to 64). Each has its own
    /// order and lease; the account is shared. The report keeps the configuration's order.
    /// Default: 8.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

impl Default for RenewalConfig {
    fn default() -> Self {
        RenewalConfig {
            fraction_left: default_fraction(),
            ari: true,
            concurrency: default_concurrency(),
        }
    }
}

fn default_fraction() -> f64 {
    1.0 / 3.0
}
/// Enough to renew dozens of certificates in seconds, few enough that a pass stays a small
/// burst of requests for the CA.
fn default_concurrency() -> usize {
    8
}
/// The largest `renewal.concurrency`: beyond it a pass would look like a flood to the CA.
pub const MAX_CONCURRENCY: usize = 64;
fn default_true() -> bool {
    true
}

/// One `[[certificates]]` entry: a certificate to keep issued.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// Identifier used in object keys, secret ids and logs: `[A-Za-z0-9_-]`, 1 to 64 chars,
    /// unique. Required.
    pub name: String,
    /// DNS names, all in one certificate (the first is only first; there is no "common name"):
    /// 1 to 100, distinct, no wildcards (HTTP-01 cannot validate them). Required.
    pub domains: Vec<String>,
    /// Key algorithm of the certificate's key; a fresh key is generated for every issuance.
    /// Default: `ecdsa-p256`.
    #[serde(default)]
    pub key_type: KeyType,
    /// How the CA validates control of the names. Only `http-01` (the default) so far.
    #[serde(default)]
    pub challenge: ChallengeKind,
    /// ACME profile to request (draft-aaron-acme-profiles), e.g. `tlsserver` or `shortlived`
    /// at Let's Encrypt. Default: the CA's default profile.
    #[serde(default)]
    pub profile: Option<String>,
}

/// `certificates[].key_type`: the algorithm of a certificate's key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum KeyType {
    /// `ecdsa-p256`: ECDSA on the P-256 curve (the default).
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// `ecdsa-p384`: ECDSA on the P-384 curve.
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    /// `rsa-2048`: RSA with a 2048-bit modulus.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// `rsa-4096`: RSA with a 4096-bit modulus.
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa4096 => "rsa-4096",
        })
    }
}

/// `certificates[].challenge`: how the CA validates control of a name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ChallengeKind {
    /// `http-01` (RFC 8555 §8.3): the CA fetches a token from
    /// `http://<name>/.well-known/acme-challenge/` (the default).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// `dns-01` (RFC 8555 §8.4): the CA looks up a TXT record at `_acme-challenge.<name>`,
    /// written through Cloud DNS (`[dns]`). Needed for wildcard names, and for names that do
    /// not point at the cluster yet.
    #[serde(rename = "dns-01")]
    Dns01,
}

impl CertificateConfig {
    /// The configured names, lowercased and sorted: what a certificate must contain.
    pub fn normalized_domains(&self) -> Vec<String> {
        let mut d: Vec<String> = self
            .domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        d.sort();
        d.dedup();
        d
    }
}

/// `letsencrypt`, `letsencrypt-staging` or an `https://` URL (empty: not set).
fn check_directory(field: &str, dir: &str) -> Result<(), FieldError> {
    if !dir.is_empty()
        && !matches!(dir, "letsencrypt" | "letsencrypt-staging")
        && !dir.starts_with("https://")
    {
        return Err(FieldError::new(
            field,
            format!("{dir:?} is neither `letsencrypt`, `letsencrypt-staging` nor an https:// URL"),
        ));
    }
    Ok(())
}

/// The directory URL a `directory` setting names (the aliases resolved).
pub fn resolve_directory(dir: &str) -> &str {
    match dir {
        "letsencrypt" => super::LETSENCRYPT,
        "letsencrypt-staging" => super::LETSENCRYPT_STAGING,
        url => url,
    }
}

impl EabConfig {
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        if self.key_id.trim().is_empty() {
            return Err(FieldError::new(
                format!("{field}.key_id"),
                "must not be empty",
            ));
        }
        if self.hmac_key_env.is_some() == self.hmac_key_file.is_some() {
            return Err(FieldError::new(
                field,
                "set exactly one of hmac_key_env and hmac_key_file",
            ));
        }
        Ok(())
    }
}

impl AcmeConfig {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        check_directory("acme.directory", &self.directory)?;
        for (i, c) in self.contact.iter().enumerate() {
            let addr = c.strip_prefix("mailto:").unwrap_or(c);
            let ok = matches!(addr.split_once('@'), Some((user, host))
                if !user.is_empty() && check_domain(host).is_ok() && !addr.contains([',', ' ']));
            if !ok {
                return Err(FieldError::new(
                    format!("acme.contact[{i}]"),
                    format!("{c:?} is not an email address"),
                ));
            }
        }
        if let Some(eab) = &self.eab {
            eab.validate("acme.eab")?;
        }
        let mut directories = vec![resolve_directory(&self.directory)];
        for (i, f) in self.fallback.iter().enumerate() {
            let field = format!("acme.fallback[{i}]");
            if f.directory.is_empty() {
                return Err(FieldError::new(
                    format!("{field}.directory"),
                    "required: letsencrypt, letsencrypt-staging or an https:// directory URL",
                ));
            }
            check_directory(&format!("{field}.directory"), &f.directory)?;
            let url = resolve_directory(&f.directory);
            if directories.contains(&url) {
                return Err(FieldError::new(
                    format!("{field}.directory"),
                    format!("{url} is already tried before (a CA is listed once)"),
                ));
            }
            directories.push(url);
            if let Some(eab) = &f.eab {
                eab.validate(&format!("{field}.eab"))?;
            }
        }
        if self.poll_timeout_seconds == 0 {
            return Err(FieldError::new("acme.poll_timeout_seconds", "must be > 0"));
        }
        if self.request_timeout_seconds == 0 {
            return Err(FieldError::new(
                "acme.request_timeout_seconds",
                "must be > 0",
            ));
        }
        if self.attempts == 0 || self.attempts > 10 {
            return Err(FieldError::new("acme.attempts", "must be 1 to 10"));
        }
        Ok(())
    }
}

impl RenewalConfig {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        let f = self.fraction_left;
        if !(f > 0.0 && f < 1.0) {
            return Err(FieldError::new(
                "renewal.fraction_left",
                format!("{f} is not strictly between 0 and 1"),
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(FieldError::new(
                "renewal.concurrency",
                format!(
                    "{} is not between 1 and {MAX_CONCURRENCY}",
                    self.concurrency
                ),
            ));
        }
        Ok(())
    }
}

/// `[[certificates]]`: at least one; unique names; 1 to 100 distinct, valid domains each.
pub(super) fn validate_certificates(
    certificates: &[CertificateConfig],
    has_dns: bool,
) -> Result<(), FieldError> {
    if certificates.is_empty() {
        return Err(FieldError::new(
            "certificates",
            "no certificates configured (add a [[certificates]] table)",
        ));
    }
    let mut names = BTreeSet::new();
    for (i, cert) in certificates.iter().enumerate() {
        let n = &cert.name;
        if n.is_empty()
            || n.len() > 64
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(FieldError::new(
                format!("certificates[{i}].name"),
                format!("{n:?}: use 1 to 64 characters from [A-Za-z0-9_-]"),
            ));
        }
        if !names.insert(n.as_str()) {
            return Err(FieldError::new(
                format!("certificates[{i}].name"),
                format!("duplicate certificate name {n:?}"),
            ));
        }
        if cert.challenge == ChallengeKind::Dns01 && !has_dns {
            return Err(FieldError::new(
                format!("certificates[{i}].challenge"),
                "\"dns-01\" needs a [dns] section (the Cloud DNS project, and the zone)",
            ));
        }
        cert.validate_domains(i)?;
        if let Some(p) = &cert.profile {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(FieldError::new(
                    format!("certificates[{i}].profile"),
                    "must be a non-empty token",
                ));
            }
        }
    }
    Ok(())
}

impl CertificateConfig {
    fn validate_domains(&self, i: usize) -> Result<(), FieldError> {
        if self.domains.is_empty() {
            return Err(FieldError::new(
                format!("certificates[{i}].domains"),
                "no domains (a certificate needs at least one name)",
            ));
        }
        if self.domains.len() > 100 {
            return Err(FieldError::new(
                format!("certificates[{i}].domains"),
                "more than 100 names (the CA limit)",
            ));
        }
        let mut seen = BTreeSet::new();
        for (j, d) in self.domains.iter().enumerate() {
            let field = format!("certificates[{i}].domains[{j}]");
            // RFC 8555 §7.1.3: a wildcard is `*.` and a name; only DNS-01 can prove it (§8.4).
            let name = match d.strip_prefix("*.") {
                Some(_) if self.challenge != ChallengeKind::Dns01 => {
                    return Err(FieldError::new(
                        field,
                        format!("{d:?}: wildcard names need challenge = \"dns-01\""),
                    ));
                }
                Some(base) => base,
                None => d.as_str(),
            };
            check_domain(name)
                .map_err(|m| FieldError::new(field.clone(), format!("{d:?}: {m}")))?;
            if !seen.insert(d.to_ascii_lowercase()) {
                return Err(FieldError::new(field, format!("duplicate domain {d:?}")));
            }
        }
        Ok(())
    }
}
