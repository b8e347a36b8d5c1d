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

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The CA. Required by the commands that talk to it (`run`, `serve`, `status`,
    /// `account`); the node agents (`sync`, `members`) never do, and their settings leave it
    /// out, so a change of CA settings does not touch the nodes.
    #[serde(default)]
    pub acme: AcmeConfig,
    #[serde(default)]
    pub renewal: RenewalConfig,
    pub store: StoreConfig,
    /// Optional mirror of every issued bundle into Secret Manager.
    #[serde(default)]
    pub secret_manager: Option<SecretManagerConfig>,
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
    /// The certificates to keep issued. At least one.
    #[serde(default)]
    pub certificates: Vec<CertificateConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// `letsencrypt`, `letsencrypt-staging`, or the https URL of an ACME directory. No default:
    /// which CA (and staging or production) is a choice to make in words.
    #[serde(default)]
    pub directory: String,
    /// Contact addresses for the account (`ops@example.com` or `mailto:ops@example.com`).
    #[serde(default)]
    pub contact: Vec<String>,
    /// PEM file with extra root certificates to trust for the CA's API (Pebble, a private CA),
    /// in addition to the built-in web roots.
    #[serde(default)]
    pub extra_root_ca: Option<PathBuf>,
    /// External account binding, required by some CAs (Google Trust Services, ZeroSSL).
    #[serde(default)]
    pub eab: Option<EabConfig>,
    /// Seconds to wait for the CA to validate an order and to issue, per order.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_seconds: u64,
    /// Seconds before a single HTTP request to the CA is abandoned.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// Attempts per certificate when the CA is unreachable, answers 5xx or rate-limits (429).
    /// Waits between attempts follow `Retry-After` when given, else exponential backoff.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
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

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EabConfig {
    /// The key identifier the CA gave you.
    pub key_id: String,
    /// Environment variable holding the base64url HMAC key (Cloud Run: a secret exposed as an
    /// environment variable). Exactly one of `hmac_key_env` and `hmac_key_file`.
    #[serde(default)]
    pub hmac_key_env: Option<String>,
    /// File holding the base64url HMAC key (Cloud Run: a secret mounted as a volume).
    #[serde(default)]
    pub hmac_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RenewalConfig {
    /// Renew when less than this fraction of the certificate's lifetime is left (0 < f < 1).
    /// The default, 1/3, renews a 90-day certificate 30 days before it expires.
    #[serde(default = "default_fraction")]
    pub fraction_left: f64,
    /// Ask the CA for ACME Renewal Information (RFC 9773) when it offers it, and renew inside
    /// the window it suggests; the lifetime rule still applies as a backstop.
    #[serde(default = "default_true")]
    pub ari: bool,
    /// How many certificates one pass renews at the same time (1 to 64). Each has its own
    /// order and lease; the account is shared. The report keeps the configuration's order.
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

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `file:///absolute/dir` or `gs://bucket/optional/prefix`.
    pub url: String,
    /// Cloud Storage API endpoint, for an emulator (`http://127.0.0.1:4443`). When set, requests
    /// are sent without credentials. Default: the real service with Application Default
    /// Credentials. `STORAGE_EMULATOR_HOST` is honoured as well.
    #[serde(default)]
    pub gcs_endpoint: Option<String>,
    /// Issued certificates (`certs/<name>/<serial>/`) kept per certificate, the current one
    /// included; older ones are removed after each renewal, never the current one.
    #[serde(default = "default_keep")]
    pub keep_serials: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretManagerConfig {
    /// Google Cloud project id that holds the secrets.
    pub project: String,
    /// Secret id prefix; certificate `app` is kept in secret `<prefix>app`.
    #[serde(default = "default_secret_prefix")]
    pub secret_prefix: String,
    /// Enabled versions to keep per secret; older ones are disabled (not destroyed, so an
    /// operator can still roll back by hand).
    #[serde(default = "default_keep")]
    pub keep_versions: u32,
    /// API endpoint override (tests, private endpoints). Requests are sent without
    /// credentials when set. Default: the real service with Application Default Credentials.
    #[serde(default)]
    pub endpoint: Option<String>,
}

fn default_secret_prefix() -> String {
    "acme-edge-".into()
}
fn default_keep() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// Seconds a renewal lease is valid. A renewer that crashes holding the lease blocks that
    /// certificate for at most this long; it must exceed the time one issuance takes.
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
    /// Seconds to wait for another renewer's lease before giving up (and failing the run).
    #[serde(default = "default_wait")]
    pub wait_seconds: u64,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            ttl_seconds: default_ttl(),
            wait_seconds: default_wait(),
        }
    }
}

fn default_ttl() -> u64 {
    600
}
fn default_wait() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Largest request body accepted, bytes; larger requests get 413.
    pub max_body_bytes: usize,
    /// After SIGTERM, seconds a running renewal pass may still take before it is cancelled
    /// (its order abandoned, challenge answers removed, lease released).
    pub pass_grace_seconds: u64,
    /// After SIGTERM, seconds until the process exits whatever still runs. Cloud Run kills
    /// the instance 10 s after SIGTERM, hence 9.
    pub shutdown_timeout_seconds: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_body_bytes: 64 * 1024,
            pass_grace_seconds: 5,
            shutdown_timeout_seconds: 9,
        }
    }
}

/// Where `renewer sync` reads the certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum SyncSource {
    /// The `[store]` (directory or bucket) the renewer publishes to.
    #[default]
    #[serde(rename = "store")]
    Store,
    /// The `[secret_manager]` mirror.
    #[serde(rename = "secret-manager")]
    SecretManager,
}

impl fmt::Display for SyncSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncSource::Store => "store",
            SyncSource::SecretManager => "secret-manager",
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// The certificate to install, by name. Default: the only configured certificate (set it
    /// when there are several).
    pub certificate: Option<String>,
    /// `store` (default) or `secret-manager`.
    pub source: SyncSource,
    /// The directory Envoy's SDS configuration points at (`TLS_DIR` of deploy/envoy/render.sh).
    pub dir: PathBuf,
    /// SDS secret name written into `sds.yaml`; the Envoy listener refers to it.
    pub secret_name: String,
    /// Seconds between checks with `--watch` when no interval is given on the command line.
    pub interval_seconds: u64,
    /// Installed versions kept in `dir` (the current one included), for rolling back by hand.
    pub keep_versions: u32,
    /// Shell command (`sh -c`) run after a new certificate is installed, e.g. to notify a
    /// process that does not watch files. Envoy needs none.
    pub on_change: Option<String>,
    /// Seconds `on_change` may run before it is killed.
    pub on_change_timeout_seconds: u64,
    /// With `--watch`: where `GET /ready` (200 when this node is ready for users, else 503,
    /// with the reason) and `GET /metrics` are served; Envoy's `/.edge/healthz` asks `/ready`
    /// (render.sh `READY_ADDRESS`). Empty: neither is served.
    pub status_address: String,
    /// Envoy's TLS listener, which the readiness check handshakes with to see that it presents
    /// the installed certificate.
    pub ready_tls_address: String,
    /// SNI of that handshake. Default: the certificate's first name.
    pub ready_server_name: Option<String>,
    /// The app's health URL on this node (`http://HOST:PORT/PATH`); ready needs a 2xx or 3xx
    /// answer. Unset: the app is not checked.
    pub ready_app_url: Option<String>,
    /// Seconds between readiness checks.
    pub ready_interval_seconds: u64,
    /// A PEM file of CA root certificates. When set, a bundle whose chain does not lead to
    /// one of them is refused (the installed certificate stays): a store someone else can
    /// write to cannot make this node serve a certificate of their choosing. Unset: any
    /// chain is accepted. `make deploy` sets the configured CA's roots where they are known.
    pub trusted_roots: Option<PathBuf>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            certificate: None,
            source: SyncSource::Store,
            dir: PathBuf::from("/var/lib/acme-edge/tls"),
            secret_name: "server_cert".into(),
            interval_seconds: 300,
            keep_versions: 3,
            on_change: None,
            on_change_timeout_seconds: 60,
            status_address: "127.0.0.1:9903".into(),
            ready_tls_address: "127.0.0.1:443".into(),
            ready_server_name: None,
            ready_app_url: None,
            ready_interval_seconds: 5,
            trusted_roots: None,
        }
    }
}

/// `renewer members`: which managed instance group makes the cluster, and where Envoy reads it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MembersConfig {
    /// Google Cloud project of the managed instance group.
    pub project: String,
    /// Region of the (regional) managed instance group.
    pub region: String,
    /// The managed instance group's name. Its instances carry the label
    /// `acme-edge-group=<group>` (set by `make deploy`'s instance template), by which their
    /// addresses are listed in one call.
    pub group: String,
    /// Port the application listens on, on every node (`APP_PORT`).
    pub port: u16,
    /// Directory of `eds.json`, which Envoy watches (`MEMBERS_DIR` of deploy/envoy/render.sh).
    #[serde(default = "default_members_dir")]
    pub dir: PathBuf,
    /// The Envoy cluster the endpoints belong to (render.sh's is `app`).
    #[serde(default = "default_members_cluster")]
    pub cluster: String,
    /// Seconds between refreshes with `--watch` when no interval is given on the command line.
    #[serde(default = "default_members_interval")]
    pub interval_seconds: u64,
    /// Where `--watch` serves its Prometheus metrics (`GET /metrics`); empty: none.
    #[serde(default = "default_members_metrics")]
    pub metrics_address: String,
    /// Compute Engine API endpoint override (tests). Requests are sent without credentials
    /// when set. Default: the real service with Application Default Credentials (on a node,
    /// its service account through the metadata server).
    #[serde(default)]
    pub endpoint: Option<String>,
}

fn default_members_dir() -> PathBuf {
    PathBuf::from("/var/lib/acme-edge/members")
}
fn default_members_cluster() -> String {
    "app".into()
}
fn default_members_interval() -> u64 {
    10
}
fn default_members_metrics() -> String {
    "127.0.0.1:9902".into()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// Identifier used in object keys, secret ids and logs: `[A-Za-z0-9_-]`, 1 to 64 chars.
    pub name: String,
    /// DNS names, all in one certificate (the first is only first; there is no "common name").
    pub domains: Vec<String>,
    /// Key algorithm of the certificate's key; a fresh key is generated for every issuance.
    #[serde(default)]
    pub key_type: KeyType,
    /// How the CA validates control of the names. Only `http-01` so far.
    #[serde(default)]
    pub challenge: ChallengeKind,
    /// ACME profile to request (draft-aaron-acme-profiles), e.g. `tlsserver` or `shortlived`
    /// at Let's Encrypt. Default: the CA's default profile.
    #[serde(default)]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum KeyType {
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ChallengeKind {
    #[default]
    #[serde(rename = "http-01")]
    Http01,
}

/// Where the store lives, parsed from `store.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    File(PathBuf),
    Gcs { bucket: String, prefix: String },
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
        let overridden = apply_env(&mut table, env)?;
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
        config
            .validate()
            .map_err(|(field, message)| err(&field, message))?;
        Ok(config)
    }

    /// The ACME directory URL, with aliases resolved.
    pub fn directory_url(&self) -> &str {
        match self.acme.directory.as_str() {
            "letsencrypt" => LETSENCRYPT,
            "letsencrypt-staging" => LETSENCRYPT_STAGING,
            url => url,
        }
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

    pub fn store_url(&self) -> StoreUrl {
        // validate() has checked the URL; parse_store_url cannot fail here.
        parse_store_url(&self.store.url).unwrap_or(StoreUrl::File(PathBuf::from("/nonexistent")))
    }

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
        self.validate().map_err(|(field, message)| ConfigError {
            source_name: source_name.to_string(),
            field,
            message,
        })
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let dir = self.acme.directory.as_str();
        if !dir.is_empty()
            && !matches!(dir, "letsencrypt" | "letsencrypt-staging")
            && !dir.starts_with("https://")
        {
            return Err((
                "acme.directory".into(),
                format!(
                    "{dir:?} is neither `letsencrypt`, `letsencrypt-staging` nor an https:// URL"
                ),
            ));
        }
        for (i, c) in self.acme.contact.iter().enumerate() {
            let addr = c.strip_prefix("mailto:").unwrap_or(c);
            let ok = matches!(addr.split_once('@'), Some((user, host))
                if !user.is_empty() && check_domain(host).is_ok() && !addr.contains([',', ' ']));
            if !ok {
                return Err((
                    format!("acme.contact[{i}]"),
                    format!("{c:?} is not an email address"),
                ));
            }
        }
        if let Some(eab) = &self.acme.eab {
            if eab.key_id.trim().is_empty() {
                return Err(("acme.eab.key_id".into(), "must not be empty".into()));
            }
            if eab.hmac_key_env.is_some() == eab.hmac_key_file.is_some() {
                return Err((
                    "acme.eab".into(),
                    "set exactly one of hmac_key_env and hmac_key_file".into(),
                ));
            }
        }
        if self.acme.poll_timeout_seconds == 0 {
            return Err(("acme.poll_timeout_seconds".into(), "must be > 0".into()));
        }
        if self.acme.request_timeout_seconds == 0 {
            return Err(("acme.request_timeout_seconds".into(), "must be > 0".into()));
        }
        if self.acme.attempts == 0 || self.acme.attempts > 10 {
            return Err(("acme.attempts".into(), "must be 1 to 10".into()));
        }
        let f = self.renewal.fraction_left;
        if !(f > 0.0 && f < 1.0) {
            return Err((
                "renewal.fraction_left".into(),
                format!("{f} is not strictly between 0 and 1"),
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.renewal.concurrency) {
            return Err((
                "renewal.concurrency".into(),
                format!(
                    "{} is not between 1 and {MAX_CONCURRENCY}",
                    self.renewal.concurrency
                ),
            ));
        }
        parse_store_url(&self.store.url).map_err(|m| ("store.url".to_string(), m))?;
        if let Some(endpoint) = &self.store.gcs_endpoint {
            check_http_url(endpoint).map_err(|m| ("store.gcs_endpoint".to_string(), m))?;
        }
        if self.store.keep_serials == 0 {
            return Err((
                "store.keep_serials".into(),
                "must be at least 1 (the current certificate is always kept)".into(),
            ));
        }
        if let Some(sm) = &self.secret_manager {
            if !is_project_id(&sm.project) {
                return Err((
                    "secret_manager.project".into(),
                    format!("{:?} is not a Google Cloud project id", sm.project),
                ));
            }
            if !sm
                .secret_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                || sm.secret_prefix.len() > 180
            {
                return Err((
                    "secret_manager.secret_prefix".into(),
                    "only [A-Za-z0-9_-], at most 180 characters".into(),
                ));
            }
            if sm.keep_versions == 0 {
                return Err((
                    "secret_manager.keep_versions".into(),
                    "must be at least 1".into(),
                ));
            }
            if let Some(endpoint) = &sm.endpoint {
                check_http_url(endpoint).map_err(|m| ("secret_manager.endpoint".to_string(), m))?;
            }
        }
        if self.lock.ttl_seconds < 30 {
            return Err((
                "lock.ttl_seconds".into(),
                "must be at least 30 (an issuance takes longer than that)".into(),
            ));
        }
        let serve = &self.serve;
        if serve.max_body_bytes == 0 || serve.max_body_bytes > 16 * 1024 * 1024 {
            return Err((
                "serve.max_body_bytes".into(),
                "must be 1 to 16777216".into(),
            ));
        }
        if serve.shutdown_timeout_seconds == 0 || serve.shutdown_timeout_seconds > 3600 {
            return Err((
                "serve.shutdown_timeout_seconds".into(),
                "must be 1 to 3600".into(),
            ));
        }
        if serve.pass_grace_seconds >= serve.shutdown_timeout_seconds {
            return Err((
                "serve.pass_grace_seconds".into(),
                format!(
                    "must be less than serve.shutdown_timeout_seconds ({}), to leave time to clean up",
                    serve.shutdown_timeout_seconds
                ),
            ));
        }
        let sync = &self.sync;
        if let Some(name) = &sync.certificate {
            if !self.certificates.iter().any(|c| &c.name == name) {
                return Err((
                    "sync.certificate".into(),
                    format!("{name:?} is not the name of a [[certificates]] entry"),
                ));
            }
        }
        if sync.source == SyncSource::SecretManager && self.secret_manager.is_none() {
            return Err((
                "sync.source".into(),
                "\"secret-manager\" needs a [secret_manager] section".into(),
            ));
        }
        if !sync.dir.is_absolute() {
            return Err((
                "sync.dir".into(),
                format!("{:?} is not an absolute path", sync.dir),
            ));
        }
        let dir_ok = sync.dir.to_str().is_some_and(|d| {
            d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
        });
        if !dir_ok {
            return Err((
                "sync.dir".into(),
                "use only [A-Za-z0-9/._-] (the path is written into Envoy's YAML)".into(),
            ));
        }
        if sync.secret_name.is_empty()
            || !sync
                .secret_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err((
                "sync.secret_name".into(),
                "use 1 or more characters from [A-Za-z0-9._-]".into(),
            ));
        }
        if sync.interval_seconds == 0 {
            return Err(("sync.interval_seconds".into(), "must be > 0".into()));
        }
        if let Some(members) = &self.members {
            members.validate()?;
        }
        if sync.keep_versions == 0 {
            return Err(("sync.keep_versions".into(), "must be at least 1".into()));
        }
        if sync
            .on_change
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(("sync.on_change".into(), "must not be empty".into()));
        }
        if sync.on_change_timeout_seconds == 0 {
            return Err((
                "sync.on_change_timeout_seconds".into(),
                "must be > 0".into(),
            ));
        }
        if !sync.status_address.is_empty() {
            crate::node::ready::parse_listen(&sync.status_address)
                .map_err(|e| ("sync.status_address".to_string(), e))?;
        }
        crate::node::ready::parse_listen(&sync.ready_tls_address)
            .map_err(|e| ("sync.ready_tls_address".to_string(), e))?;
        if let Some(name) = &sync.ready_server_name {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err((
                    "sync.ready_server_name".into(),
                    format!("{name:?} is not a DNS name or an IP address"),
                ));
            }
        }
        if let Some(url) = &sync.ready_app_url {
            crate::node::ready::AppUrl::parse(url)
                .map_err(|e| ("sync.ready_app_url".to_string(), e))?;
        }
        if sync.ready_interval_seconds == 0 {
            return Err(("sync.ready_interval_seconds".into(), "must be > 0".into()));
        }
        if sync
            .trusted_roots
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err((
                "sync.trusted_roots".into(),
                "must name a PEM file (or be left out)".into(),
            ));
        }
        if self.certificates.is_empty() {
            return Err((
                "certificates".into(),
                "no certificates configured (add a [[certificates]] table)".into(),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, cert) in self.certificates.iter().enumerate() {
            let n = &cert.name;
            if n.is_empty()
                || n.len() > 64
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err((
                    format!("certificates[{i}].name"),
                    format!("{n:?}: use 1 to 64 characters from [A-Za-z0-9_-]"),
                ));
            }
            if !names.insert(n.as_str()) {
                return Err((
                    format!("certificates[{i}].name"),
                    format!("duplicate certificate name {n:?}"),
                ));
            }
            if cert.domains.is_empty() {
                return Err((
                    format!("certificates[{i}].domains"),
                    "no domains (a certificate needs at least one name)".into(),
                ));
            }
            if cert.domains.len() > 100 {
                return Err((
                    format!("certificates[{i}].domains"),
                    "more than 100 names (the CA limit)".into(),
                ));
            }
            let mut seen = BTreeSet::new();
            for (j, d) in cert.domains.iter().enumerate() {
                let field = format!("certificates[{i}].domains[{j}]");
                if d.starts_with("*.") {
                    return Err((
                        field,
                        format!("{d:?}: wildcard names need the dns-01 challenge, and only http-01 is supported"),
                    ));
                }
                check_domain(d).map_err(|m| (field.clone(), format!("{d:?}: {m}")))?;
                if !seen.insert(d.to_ascii_lowercase()) {
                    return Err((field, format!("duplicate domain {d:?}")));
                }
            }
            if let Some(p) = &cert.profile {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err((
                        format!("certificates[{i}].profile"),
                        "must be a non-empty token".into(),
                    ));
                }
            }
        }
        Ok(())
    }
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

/// Apply `RENEWER__SECTION__FIELD=value` variables. Returns (field path, variable) pairs so that
/// errors can name the variable.
fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("RENEWER__") else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError {
                source_name: "environment".into(),
                field: var.clone(),
                message: "expected RENEWER__<SECTION>__<FIELD>".into(),
            });
        }
        let parsed = parse_env_value(value);
        let mut node = &mut *table;
        let (last, parents) = path.split_last().ok_or_else(|| ConfigError {
            source_name: "environment".into(),
            field: var.clone(),
            message: "empty path".into(),
        })?;
        for p in parents {
            let entry = node
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry.as_table_mut().ok_or_else(|| ConfigError {
                source_name: "environment".into(),
                field: var.clone(),
                message: format!("`{p}` is not a table"),
            })?;
        }
        node.insert(last.clone(), parsed);
        applied.push((path.join("."), var.clone()));
    }
    Ok(applied)
}

fn parse_env_value(value: &str) -> toml::Value {
    // `x = <value>` parses only when value is a TOML value (number, bool, array, quoted string).
    match format!("x = {value}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("x")
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

pub fn parse_store_url(url: &str) -> Result<StoreUrl, String> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!(
                "{url:?}: a file store needs an absolute path (file:///var/lib/acme-edge)"
            ));
        }
        return Ok(StoreUrl::File(PathBuf::from(path)));
    }
    if let Some(rest) = url.strip_prefix("gs://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let ok_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            })
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok_bucket {
            return Err(format!("{bucket:?} is not a valid bucket name"));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            crate::store::check_key(prefix).map_err(|m| format!("prefix: {m}"))?;
        }
        return Ok(StoreUrl::Gcs {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        });
    }
    Err(format!(
        "{url:?}: expected file:///absolute/dir or gs://bucket/prefix"
    ))
}

impl MembersConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, message: String| Err((format!("members.{field}"), message));
        if !is_project_id(&self.project) {
            return bad(
                "project",
                format!("{:?} is not a Google Cloud project id", self.project),
            );
        }
        let region_ok = self.region.split_once('-').is_some_and(|(a, b)| {
            !a.is_empty()
                && a.bytes().all(|c| c.is_ascii_lowercase())
                && b.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && b.ends_with(|c: char| c.is_ascii_digit())
        });
        if !region_ok {
            return bad(
                "region",
                format!("{:?} is not a region such as europe-west1", self.region),
            );
        }
        // A resource name, and a label value (RFC 1035 label, at most 63 characters).
        let group_ok = (1..=63).contains(&self.group.len())
            && self.group.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .group
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !group_ok {
            return bad(
                "group",
                format!("{:?} is not a managed instance group name", self.group),
            );
        }
        if self.port == 0 {
            return bad("port", "must be 1-65535".into());
        }
        let dir_ok = self.dir.is_absolute()
            && self.dir.to_str().is_some_and(|d| {
                d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
            });
        if !dir_ok {
            return bad(
                "dir",
                format!("{:?} is not an absolute path of [A-Za-z0-9/._-]", self.dir),
            );
        }
        if self.cluster.is_empty()
            || !self
                .cluster
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return bad("cluster", "use 1 or more of [A-Za-z0-9._-]".into());
        }
        if !(1..=3600).contains(&self.interval_seconds) {
            return bad("interval_seconds", "must be 1 to 3600".into());
        }
        if !self.metrics_address.is_empty()
            && self
                .metrics_address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return bad(
                "metrics_address",
                format!(
                    "{:?} is not an address:port such as 127.0.0.1:9902 (empty: no metrics)",
                    self.metrics_address
                ),
            );
        }
        if let Some(endpoint) = &self.endpoint {
            check_http_url(endpoint).map_err(|m| ("members.endpoint".to_string(), m))?;
        }
        Ok(())
    }
}

fn check_http_url(url: &str) -> Result<(), String> {
    if (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<http::Uri>().is_ok()
    {
        Ok(())
    } else {
        Err(format!("{url:?} is not an http(s) URL"))
    }
}

fn is_project_id(p: &str) -> bool {
    (6..=30).contains(&p.len())
        && p.starts_with(|c: char| c.is_ascii_lowercase())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !p.ends_with('-')
}

/// A DNS name the CA can validate with HTTP-01: LDH labels of 1..=63, at most 253 in total,
/// at least two labels, no IP address.
pub fn check_domain(d: &str) -> Result<(), String> {
    if d.is_empty() || d.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return Err("needs at least two labels (example.com)".into());
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err("labels must be 1 to 63 characters".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("only letters, digits and '-' are allowed in labels".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels must not start or end with '-'".into());
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("IP addresses are not DNS names".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[acme]
directory = "letsencrypt-staging"
contact = ["ops@example.com"]

[store]
url = "file:///var/lib/acme-edge"

[[certificates]]
name = "app"
domains = ["app.example.com", "www.example.com"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "renewer.toml", &[])
    }

    fn field_of(text: &str) -> String {
        parse(text).expect_err("must be refused").field
    }

    #[test]
    fn good_config_and_defaults() {
        let c = parse(GOOD).expect("good config");
        assert_eq!(c.directory_url(), LETSENCRYPT_STAGING);
        assert_eq!(c.contact_urls(), vec!["mailto:ops@example.com"]);
        assert_eq!(c.certificates[0].key_type, KeyType::EcdsaP256);
        assert!((c.renewal.fraction_left - 1.0 / 3.0).abs() < 1e-9);
        assert!(c.renewal.ari);
        assert_eq!(c.renewal.concurrency, 8);
        assert_eq!(c.lock.ttl_seconds, 600);
        assert_eq!(c.serve.shutdown_timeout_seconds, 9);
        assert_eq!(c.sync.dir, PathBuf::from("/var/lib/acme-edge/tls"));
        assert_eq!(c.sync.source, SyncSource::Store);
        assert_eq!(c.sync.secret_name, "server_cert");
        assert_eq!(
            c.store_url(),
            StoreUrl::File(PathBuf::from("/var/lib/acme-edge"))
        );
    }

    /// Found by `make fuzz` (corpus `renewer_config/crash-c1466721…`): an empty key made an
    /// error whose field was empty.
    #[test]
    fn an_empty_key_still_names_a_field() {
        let e = parse(&format!("{GOOD}\n['']\n")).expect_err("must be refused");
        assert_eq!(e.field, "(top level)");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn example_file_is_valid() {
        let text = include_str!("../renewer.example.toml");
        parse(text).expect("renewer.example.toml must be valid");
    }

    const MEMBERS_OK: &str = "[members]\nproject = \"my-project\"\nregion = \"europe-west1\"\n\
                              group = \"acme-edge-nodes\"\nport = 8080\n";
    const MEMBERS_BAD_PROJECT: &str =
        "[members]\nproject = \"P\"\nregion = \"europe-west1\"\ngroup = \"g\"\nport = 8080\n";
    const MEMBERS_BAD_REGION: &str =
        "[members]\nproject = \"my-project\"\nregion = \"europe\"\ngroup = \"g\"\nport = 8080\n";
    const MEMBERS_BAD_GROUP: &str =
        "[members]\nproject = \"my-project\"\nregion = \"europe-west1\"\n\
                                     group = \"Nodes_1\"\nport = 8080\n";
    const MEMBERS_BAD_PORT: &str =
        "[members]\nproject = \"my-project\"\nregion = \"europe-west1\"\ngroup = \"g\"\nport = 0\n";
    const MEMBERS_BAD_DIR: &str =
        "[members]\nproject = \"my-project\"\nregion = \"europe-west1\"\n\
                                   group = \"g\"\nport = 1\ndir = \"members\"\n";
    const MEMBERS_BAD_METRICS: &str =
        "[members]\nproject = \"my-project\"\nregion = \"europe-west1\"\n\
                                       group = \"g\"\nport = 1\nmetrics_address = \"localhost\"\n";

    #[test]
    fn the_ca_is_required_only_where_it_is_used() {
        // The node agents' settings carry no [acme] section.
        let node = GOOD.replace(
            "[acme]\ndirectory = \"letsencrypt-staging\"\ncontact = [\"ops@example.com\"]",
            "",
        );
        let c = parse(&node).expect("a config without [acme]");
        let e = c.require_acme("node.env").expect_err("no CA");
        assert_eq!(e.field, "acme.directory");
        parse(GOOD)
            .unwrap()
            .require_acme("x")
            .expect("GOOD has a CA");
    }

    #[test]
    fn members_section_defaults() {
        let c = parse(&format!("{GOOD}\n{MEMBERS_OK}")).expect("members section");
        let m = c.members.expect("members");
        assert_eq!(m.dir, PathBuf::from("/var/lib/acme-edge/members"));
        assert_eq!(m.cluster, "app");
        assert_eq!(m.interval_seconds, 10);
        assert_eq!(m.metrics_address, "127.0.0.1:9902");
        assert!(parse(GOOD).unwrap().members.is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("[acme]\ndirectory = \"x\"", "acme.directory"),
            ("colour = 1", "colour"),
            ("[acme]\ndirektory = 1", "acme.direktory"),
            ("[renewal]\nfraction_left = 1.5", "renewal.fraction_left"),
            ("[renewal]\nconcurrency = 0", "renewal.concurrency"),
            ("[renewal]\nconcurrency = 65", "renewal.concurrency"),
            ("[renewal]\nconcurrency = -1", "renewal.concurrency"),
            ("[store]\nurl = \"s3://x\"", "store.url"),
            (
                "[store]\nurl = \"file:///x\"\nkeep_serials = 0",
                "store.keep_serials",
            ),
            ("[lock]\nttl_seconds = 1", "lock.ttl_seconds"),
            ("[serve]\nmax_body_bytes = 0", "serve.max_body_bytes"),
            (
                "[serve]\npass_grace_seconds = 9",
                "serve.pass_grace_seconds",
            ),
            ("[serve]\nport = 80", "serve.port"),
            ("[sync]\ncertificate = \"other\"", "sync.certificate"),
            ("[sync]\nsource = \"secret-manager\"", "sync.source"),
            ("[sync]\nsource = \"s3\"", "sync.source"),
            ("[sync]\ndir = \"relative/tls\"", "sync.dir"),
            ("[sync]\ndir = \"/var/lib/tls dir\"", "sync.dir"),
            ("[sync]\nsecret_name = \"a b\"", "sync.secret_name"),
            ("[sync]\ninterval_seconds = 0", "sync.interval_seconds"),
            ("[sync]\nkeep_versions = 0", "sync.keep_versions"),
            ("[sync]\non_change = \" \"", "sync.on_change"),
            (
                "[sync]\nstatus_address = \"localhost\"",
                "sync.status_address",
            ),
            (
                "[sync]\nready_tls_address = \":443\"",
                "sync.ready_tls_address",
            ),
            (
                "[sync]\nready_server_name = \"a b\"",
                "sync.ready_server_name",
            ),
            (
                "[sync]\nready_app_url = \"https://a:1/\"",
                "sync.ready_app_url",
            ),
            (
                "[sync]\nready_interval_seconds = 0",
                "sync.ready_interval_seconds",
            ),
            ("[members]\nproject = \"p\"", "members"),
            (MEMBERS_BAD_PROJECT, "members.project"),
            (MEMBERS_BAD_REGION, "members.region"),
            (MEMBERS_BAD_GROUP, "members.group"),
            (MEMBERS_BAD_PORT, "members.port"),
            (MEMBERS_BAD_DIR, "members.dir"),
            (MEMBERS_BAD_METRICS, "members.metrics_address"),
        ];
        for (extra, field) in cases {
            // Replace the section in GOOD when the case redefines it.
            let text = if extra.starts_with("[acme]") {
                GOOD.replace(
                    "[acme]\ndirectory = \"letsencrypt-staging\"\ncontact = [\"ops@example.com\"]",
                    extra,
                )
            } else if extra.starts_with("[store]") {
                GOOD.replace("[store]\nurl = \"file:///var/lib/acme-edge\"", extra)
            } else if extra.starts_with('[') {
                format!("{GOOD}\n{extra}")
            } else {
                format!("{extra}\n{GOOD}")
            };
            let e = parse(&text).expect_err(extra);
            assert!(
                e.field.starts_with(field),
                "{extra}: field {:?}, wanted {field}: {e}",
                e.field
            );
        }
    }

    #[test]
    fn certificate_errors() {
        let with = |cert: &str| {
            format!(
                "{}\n{cert}",
                GOOD.split("[[certificates]]").next().unwrap_or("")
            )
        };
        assert_eq!(field_of(&with("")), "certificates");
        assert_eq!(
            field_of(&with("[[certificates]]\nname = \"a\"\ndomains = []")),
            "certificates[0].domains"
        );
        assert_eq!(
            field_of(&with("[[certificates]]\nname = \"a\"\ndomains = [\"ok.example.com\", \"bad..example.com\"]")),
            "certificates[0].domains[1]"
        );
        assert_eq!(
            field_of(&with(
                "[[certificates]]\nname = \"a\"\ndomains = [\"a.example.com\", \"A.example.com\"]"
            )),
            "certificates[0].domains[1]"
        );
        assert_eq!(
            field_of(&with(
                "[[certificates]]\nname = \"a\"\ndomains = [\"*.example.com\"]"
            )),
            "certificates[0].domains[0]"
        );
        assert_eq!(
            field_of(&with("[[certificates]]\nname = \"a\"\ndomains = [\"a.example.com\"]\nkey_type = \"ed25519\"")),
            "certificates[0].key_type"
        );
        assert_eq!(
            field_of(&with("[[certificates]]\nname = \"a\"\ndomains = [\"a.example.com\"]\n[[certificates]]\nname = \"a\"\ndomains = [\"b.example.com\"]")),
            "certificates[1].name"
        );
        assert_eq!(
            field_of(&with(
                "[[certificates]]\nname = \"a/b\"\ndomains = [\"a.example.com\"]"
            )),
            "certificates[0].name"
        );
        assert_eq!(
            field_of(&with(
                "[[certificates]]\nname = \"a\"\ndomains = [\"a.example.com\"]\ncolour = 1"
            )),
            "certificates[0].colour"
        );
    }

    #[test]
    fn env_overrides() {
        let env = vec![
            (
                "RENEWER__STORE__URL".to_string(),
                "gs://my-bucket/acme".to_string(),
            ),
            ("RENEWER__RENEWAL__ARI".to_string(), "false".to_string()),
            ("RENEWER__RENEWAL__CONCURRENCY".to_string(), "2".to_string()),
            (
                "RENEWER__ACME__CONTACT".to_string(),
                "[\"a@example.org\"]".to_string(),
            ),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let c = Config::parse(GOOD, "renewer.toml", &env).expect("overrides apply");
        assert_eq!(
            c.store_url(),
            StoreUrl::Gcs {
                bucket: "my-bucket".into(),
                prefix: "acme".into()
            }
        );
        assert!(!c.renewal.ari);
        assert_eq!(c.renewal.concurrency, 2);
        assert_eq!(c.acme.contact, vec!["a@example.org"]);

        let bad = vec![("RENEWER__STORE__URLL".to_string(), "x".to_string())];
        let e = Config::parse(GOOD, "renewer.toml", &bad).expect_err("unknown env key");
        assert!(e.source_name.contains("RENEWER__STORE__URLL"), "{e}");

        let bad = vec![(
            "RENEWER__RENEWAL__FRACTION_LEFT".to_string(),
            "yes".to_string(),
        )];
        let e = Config::parse(GOOD, "renewer.toml", &bad).expect_err("bad type");
        assert_eq!(e.field, "renewal.fraction_left");
        assert!(
            e.source_name.contains("RENEWER__RENEWAL__FRACTION_LEFT"),
            "{e}"
        );
    }

    #[test]
    fn domains() {
        for ok in ["example.com", "a-b.example.co.uk", "xn--bcher-kva.example"] {
            assert!(check_domain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "com",
            "-a.example.com",
            "a_b.example.com",
            "1.2.3.4",
            "a..b",
            &"a".repeat(64),
        ] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn store_urls() {
        assert!(parse_store_url("file://relative").is_err());
        assert!(parse_store_url("gs://UPPER").is_err());
        assert_eq!(
            parse_store_url("gs://bucket").expect("bucket only"),
            StoreUrl::Gcs {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
        assert!(parse_store_url("gs://bucket/../x").is_err());
    }
}
