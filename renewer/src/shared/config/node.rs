//! `[sync]` and `[members]`: what runs on an app node.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::syntax::{check_http_url, is_project_id, parse_listen, AppUrl};
use super::{CertificateConfig, FieldError};

/// `sync.source`: where `renewer sync` reads the certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum SyncSource {
    /// `store`: the `[store]` (directory or bucket) the renewer publishes to (the default).
    #[default]
    #[serde(rename = "store")]
    Store,
    /// `secret-manager`: the `[secret_manager]` mirror.
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

/// `[sync]`: `renewer sync`, which installs the certificate for Envoy on an app node, and its
/// readiness endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// The certificate to install, by name. Default: the only configured certificate (set it
    /// when there are several).
    pub certificate: Option<String>,
    /// `store` (default) or `secret-manager`.
    pub source: SyncSource,
    /// The directory Envoy's SDS configuration points at (`TLS_DIR` of deploy/envoy/render.sh):
    /// an absolute path of `[A-Za-z0-9/._-]`. Default: `/var/lib/acme-edge/tls`.
    pub dir: PathBuf,
    /// SDS secret name written into `sds.yaml`; the Envoy listener refers to it.
    /// Default: `server_cert`.
    pub secret_name: String,
    /// Seconds between checks with `--watch` when no interval is given on the command line
    /// (each wait ±10 %, so nodes do not read the store in step). Default: 300.
    pub interval_seconds: u64,
    /// Installed versions kept in `dir` (the current one included), for rolling back by hand.
    /// Default: 3.
    pub keep_versions: u32,
    /// Shell command (`sh -c`) run after a new certificate is installed, e.g. to notify a
    /// process that does not watch files; it gets `RENEWER_SYNC_SERIAL`,
    /// `RENEWER_SYNC_NOT_AFTER`, `RENEWER_SYNC_DIR` and `RENEWER_SYNC_NAME`. Envoy needs none.
    /// Default: none.
    pub on_change: Option<String>,
    /// Seconds `on_change` may run before it is killed. Default: 60.
    pub on_change_timeout_seconds: u64,
    /// With `--watch`: where `GET /ready` (200 when this node is ready for users, else 503,
    /// with the reason) and `GET /metrics` are served; Envoy's `/.edge/healthz` asks `/ready`
    /// (render.sh `READY_ADDRESS`). Empty: neither is served. Default: `127.0.0.1:9903`.
    pub status_address: String,
    /// Envoy's TLS listener, which the readiness check handshakes with to see that it presents
    /// the installed certificate. Default: `127.0.0.1:443`.
    pub ready_tls_address: String,
    /// SNI of that handshake. Default: the certificate's first name.
    pub ready_server_name: Option<String>,
    /// The app's health URL on this node (`http://HOST:PORT/PATH`); ready needs a 2xx or 3xx
    /// answer. Unset (the default): the app is not checked.
    pub ready_app_url: Option<String>,
    /// Seconds between readiness checks. Default: 5.
    pub ready_interval_seconds: u64,
    /// A PEM file of CA root certificates. When set, a bundle whose chain does not lead to
    /// one of them is refused (the installed certificate stays): a store someone else can
    /// write to cannot make this node serve a certificate of their choosing. Unset: any
    /// chain is accepted (the default). `make deploy` sets the configured CA's roots where they
    /// are known: Let's Encrypt's, shipped in the image as `/etc/acme-edge/roots/letsencrypt.pem`
    /// (`renewer/roots/`).
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

/// `[members]`: for `renewer members` (and needed by it only): which managed instance group
/// makes the cluster, and where Envoy reads it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MembersConfig {
    /// Google Cloud project of the managed instance group. Required.
    pub project: String,
    /// Region of the (regional) managed instance group, e.g. `europe-west1`. Required.
    pub region: String,
    /// The managed instance group's name. Its instances carry the label
    /// `acme-edge-group=<group>` (set by `make deploy`'s instance template), by which their
    /// addresses are listed in one call. Required.
    pub group: String,
    /// Port the application listens on, on every node (`APP_PORT`). Required.
    pub port: u16,
    /// Directory of `eds.json`, which Envoy watches (`MEMBERS_DIR` of deploy/envoy/render.sh).
    /// Default: `/var/lib/acme-edge/members`.
    #[serde(default = "default_members_dir")]
    pub dir: PathBuf,
    /// The Envoy cluster the endpoints belong to. Default: `app` (render.sh's).
    #[serde(default = "default_members_cluster")]
    pub cluster: String,
    /// Seconds between refreshes with `--watch` when no interval is given on the command line
    /// (1 to 3600). Default: 10.
    #[serde(default = "default_members_interval")]
    pub interval_seconds: u64,
    /// Where `--watch` serves its Prometheus metrics (`GET /metrics`); empty: none.
    /// Default: `127.0.0.1:9902`.
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

impl MembersConfig {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        let bad = |field: &str, message: String| {
            Err(FieldError::new(format!("members.{field}"), message))
        };
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
            check_http_url(endpoint).map_err(|m| FieldError::new("members.endpoint", m))?;
        }
        Ok(())
    }
}

impl SyncConfig {
    /// `certificates` and `has_secret_manager` are the sections `sync` may refer to.
    pub(super) fn validate(
        &self,
        certificates: &[CertificateConfig],
        has_secret_manager: bool,
    ) -> Result<(), FieldError> {
        if let Some(name) = &self.certificate {
            if !certificates.iter().any(|c| &c.name == name) {
                return Err(FieldError::new(
                    "sync.certificate",
                    format!("{name:?} is not the name of a [[certificates]] entry"),
                ));
            }
        }
        if self.source == SyncSource::SecretManager && !has_secret_manager {
            return Err(FieldError::new(
                "sync.source",
                "\"secret-manager\" needs a [secret_manager] section",
            ));
        }
        if !self.dir.is_absolute() {
            return Err(FieldError::new(
                "sync.dir",
                format!("{:?} is not an absolute path", self.dir),
            ));
        }
        let dir_ok = self.dir.to_str().is_some_and(|d| {
            d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
        });
        if !dir_ok {
            return Err(FieldError::new(
                "sync.dir",
                "use only [A-Za-z0-9/._-] (the path is written into Envoy's YAML)",
            ));
        }
        if self.secret_name.is_empty()
            || !self
                .secret_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(FieldError::new(
                "sync.secret_name",
                "use 1 or more characters from [A-Za-z0-9._-]",
            ));
        }
        if self.interval_seconds == 0 {
            return Err(FieldError::new("sync.interval_seconds", "must be > 0"));
        }
        if self.keep_versions == 0 {
            return Err(FieldError::new("sync.keep_versions", "must be at least 1"));
        }
        if self
            .on_change
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(FieldError::new("sync.on_change", "must not be empty"));
        }
        if self.on_change_timeout_seconds == 0 {
            return Err(FieldError::new(
                "sync.on_change_timeout_seconds",
                "must be > 0",
            ));
        }
        self.validate_readiness()
    }

    /// The `ready_*` and `status_address` fields (`renewer sync --watch`'s health endpoint).
    fn validate_readiness(&self) -> Result<(), FieldError> {
        if !self.status_address.is_empty() {
            parse_listen(&self.status_address)
                .map_err(|e| FieldError::new("sync.status_address", e))?;
        }
        parse_listen(&self.ready_tls_address)
            .map_err(|e| FieldError::new("sync.ready_tls_address", e))?;
        if let Some(name) = &self.ready_server_name {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(FieldError::new(
                    "sync.ready_server_name",
                    format!("{name:?} is not a DNS name or an IP address"),
                ));
            }
        }
        if let Some(url) = &self.ready_app_url {
            AppUrl::parse(url).map_err(|e| FieldError::new("sync.ready_app_url", e))?;
        }
        if self.ready_interval_seconds == 0 {
            return Err(FieldError::new(
                "sync.ready_interval_seconds",
                "must be > 0",
            ));
        }
        if self
            .trusted_roots
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(FieldError::new(
                "sync.trusted_roots",
                "must name a PEM file (or be left out)",
            ));
        }
        Ok(())
    }
}
