//! `renewer.toml`: what to issue, from which CA, and where to keep it.
//!
//! One TOML file, plus environment overrides so a Cloud Run job can change a setting without a
//! new image: `RENEWER__<SECTION>__<FIELD>=value` sets `[section] field = value` (the value is
//! read as TOML when it parses as a TOML value, e.g. `["a@b.c"]` or `true`, else as a string).
//! Unknown keys, in the file or the environment, are errors: a typo must not silently fall
//! back to a default. Every error names the field it is about.
//!
//! Every field is documented here and in `renewer/README.md`; `renewer.example.toml` is a
//! complete example.

use std::path::Path;

use serde::{Deserialize, Serialize};

mod acme;
mod dns;
mod env;
mod node;
mod serve;
mod storage;
pub mod syntax;

pub use acme::{
    resolve_directory, AcmeConfig, CertificateConfig, ChallengeKind, EabConfig, FallbackConfig,
    KeyType, RenewalConfig, MAX_CONCURRENCY,
};
pub use dns::DnsConfig;
pub use node::{MembersConfig, SyncConfig, SyncSource};
pub use serve::ServeConfig;
pub use storage::{LockConfig, SecretManagerConfig, StoreConfig};
pub use syntax::check_domain;

/// Let's Encrypt production.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt staging (untrusted certificates, generous rate limits).
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// A configuration problem, with the dotted path of the field (`certificates[1].domains[0]`)
/// or the environment variable it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {field}: {message}")]
pub struct ConfigError {
    /// The file (or `environment`) the bad value came from.
    pub source_name: String,
    /// The dotted path of the field (`certificates[1].domains[0]`, `store.url`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// What a section's check finds wrong: the field (dotted path from the top) and why. The
/// loader adds the file or variable it came from, making it a [`ConfigError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The dotted path of the field.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// `field` is wrong because of `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same problem, reported against the file or variable it came from.
    fn in_source(self, source_name: &str) -> ConfigError {
        ConfigError {
            source_name: source_name.to_string(),
            field: self.field,
            message: self.message,
        }
    }
}

/// The whole `renewer.toml`, validated: a value of this type has passed every check.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The CA. Required by the commands that talk to it (`run`, `serve`, `status`,
    /// `account`); the node agents (`sync`, `members`) never do, and their settings leave it
    /// out, so a change of CA settings does not touch the nodes.
    #[serde(default)]
    pub acme: AcmeConfig,
    /// When certificates are due. Default: every field's default.
    #[serde(default)]
    pub renewal: RenewalConfig,
    /// Where certificates, the account and leases are kept. Required.
    pub store: StoreConfig,
    /// Optional mirror of every issued bundle into Secret Manager.
    #[serde(default)]
    pub secret_manager: Option<SecretManagerConfig>,
    /// The renewal lease. Default: every field's default.
    #[serde(default)]
    pub lock: LockConfig,
    /// `renewer serve` (the HTTP runtime).
    #[serde(default)]
    pub serve: ServeConfig,
    /// `renewer sync` (installing the certificate for Envoy on an app node).
    #[serde(default)]
    pub sync: SyncConfig,
    /// `renewer members` (the cluster membership Envoy routes over, on an app node).
    #[serde(default)]
    pub members: Option<MembersConfig>,
    /// Cloud DNS, for the certificates validated with `dns-01`. Required by those only.
    #[serde(default)]
    pub dns: Option<DnsConfig>,
    /// The certificates to keep issued. At least one.
    #[serde(default)]
    pub certificates: Vec<CertificateConfig>,
}

impl Config {
    /// Read `path`, apply `RENEWER__*` overrides from `env`, and validate.
    pub fn load(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: source_name.clone(),
            field: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &source_name, env)
    }

    /// Parse TOML text (named `source_name` in errors), apply overrides, validate.
    pub fn parse(
        text: &str,
        source_name: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let err = |field: &str, message: String| ConfigError {
            source_name: source_name.to_string(),
            field: field.to_string(),
            message,
        };
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let field = e
                .span()
                .map(|s| {
                    let line = text.get(..s.start).map_or(0, |t| t.lines().count().max(1));
                    format!("line {line}")
                })
                .unwrap_or_else(|| "(syntax)".into());
            err(&field, e.message().to_string())
        })?;
        let overridden = env::apply(&mut table, env)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let field = e.path().to_string();
                // A bad value that came from the environment is reported against its variable.
                let source = overridden
                    .iter()
                    .find(|(path, _)| field == *path || field.starts_with(&format!("{path}.")))
                    .map(|(_, var)| format!("environment {var}"))
                    .unwrap_or_else(|| source_name.to_string());
                ConfigError {
                    source_name: source,
                    // The root is "." (or "" when the offending key itself is empty:
                    // `['']`, found by `make fuzz`): name the top level rather than nothing.
                    field: if field == "." || field.is_empty() {
                        "(top level)".into()
                    } else {
                        field
                    },
                    message: e.inner().message().to_string(),
                }
            })?;
        config.validate().map_err(|e| e.in_source(source_name))?;
        Ok(config)
    }

    /// The ACME directory URL, with aliases resolved.
    pub fn directory_url(&self) -> &str {
        acme::resolve_directory(&self.acme.directory)
    }

    /// One config per CA, in the order they are tried: this one (the primary), then one per
    /// `[[acme.fallback]]` with its directory, extra roots and EAB in `[acme]` (and no
    /// fallbacks of its own). The account, timeouts and attempts are shared.
    pub fn per_ca(&self) -> Vec<Config> {
        let mut primary = self.clone();
        primary.acme.fallback.clear();
        let mut all = vec![primary.clone()];
        for f in &self.acme.fallback {
            let mut c = primary.clone();
            c.acme.directory = f.directory.clone();
            c.acme.extra_root_ca = f.extra_root_ca.clone();
            c.acme.eab = f.eab.clone();
            all.push(c);
        }
        all
    }

    /// The directories of every CA but the `index`-th of [`Config::per_ca`], in that order
    /// (the primary first): a new account at that CA shares the key of the first of them
    /// that has an account, so every CA's HTTP-01 answers carry one thumbprint.
    pub fn other_ca_directories(&self, index: usize) -> Vec<String> {
        std::iter::once(self.acme.directory.as_str())
            .chain(self.acme.fallback.iter().map(|f| f.directory.as_str()))
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, d)| acme::resolve_directory(d).to_string())
            .collect()
    }

    /// Contacts as ACME wants them (`mailto:` URLs).
    pub fn contact_urls(&self) -> Vec<String> {
        self.acme
            .contact
            .iter()
            .map(|c| {
                if c.starts_with("mailto:") {
                    c.clone()
                } else {
                    format!("mailto:{c}")
                }
            })
            .collect()
    }

    /// The `[[certificates]]` entry called `name`.
    pub fn certificate(&self, name: &str) -> Option<&CertificateConfig> {
        self.certificates.iter().find(|c| c.name == name)
    }

    /// For the commands that talk to the CA: `acme.directory` must be set.
    pub fn require_acme(&self, source_name: &str) -> Result<(), ConfigError> {
        if self.acme.directory.is_empty() {
            return Err(ConfigError {
                source_name: source_name.to_string(),
                field: "acme.directory".into(),
                message: "required to talk to the CA: letsencrypt, letsencrypt-staging or an \
                          https:// directory URL"
                    .into(),
            });
        }
        Ok(())
    }

    /// Validate again after fields were changed in code (command-line overrides); errors are
    /// reported against `source_name`.
    pub fn revalidate(&self, source_name: &str) -> Result<(), ConfigError> {
        self.validate().map_err(|e| e.in_source(source_name))
    }

    /// Every section's checks, in the order of the file's documentation; the first problem
    /// found is reported.
    fn validate(&self) -> Result<(), FieldError> {
        self.acme.validate()?;
        self.renewal.validate()?;
        self.store.validate()?;
        if let Some(sm) = &self.secret_manager {
            sm.validate()?;
        }
        self.lock.validate()?;
        self.serve.validate()?;
        self.sync
            .validate(&self.certificates, self.secret_manager.is_some())?;
        if let Some(members) = &self.members {
            members.validate()?;
        }
        if let Some(dns) = &self.dns {
            dns.validate()?;
        }
        acme::validate_certificates(&self.certificates, self.dns.is_some())
    }
}

#[cfg(test)]
mod tests;
