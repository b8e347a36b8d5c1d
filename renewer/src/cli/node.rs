//! The node-side commands: `sync` and `members`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::node::agent::{Agent, Refreshed};
use crate::node::compute::ComputeSource;
use crate::node::ready::{self, LocalProbe, SyncStatus};
use crate::node::sync::{
    self as sync_mod, parse_interval, Outcome as SyncOutcome, SyncError, Target,
};
use crate::shared::bundle::secret_manager::SecretManagerMirror;
use crate::shared::bundle::{BundleStore, ObjectBundles};
use crate::shared::certinfo::days_left;
use crate::shared::clock::rfc3339;
use crate::shared::config::syntax::AppUrl;
use crate::shared::config::{Config, MembersConfig, SyncSource};
use crate::shared::process::cancel_on_signal;
use crate::shared::store;

use super::exit::{Exit, Status};
use super::Loader;

/// `renewer sync`: command-line overrides of `[sync]`, then the sync itself.
pub(super) async fn sync(
    loader: &Loader,
    watch: Option<String>,
    init: bool,
    certificate: Option<String>,
    source: Option<String>,
    dir: Option<PathBuf>,
    on_change: Option<String>,
) -> Result<Status, Exit> {
    let mut config = loader.load()?;
    let cli = "command line";
    if let Some(c) = certificate {
        config.sync.certificate = Some(c);
    }
    if let Some(s) = source {
        config.sync.source = match s.as_str() {
            "store" => SyncSource::Store,
            "secret-manager" => SyncSource::SecretManager,
            other => {
                return Err(Exit::Config(format!(
                    "--source {other:?}: use store or secret-manager"
                )))
            }
        };
    }
    if let Some(d) = dir {
        config.sync.dir = d;
    }
    if on_change.is_some() {
        config.sync.on_change = on_change;
    }
    config
        .revalidate(cli)
        .map_err(|e| Exit::Config(e.to_string()))?;
    let interval = match watch.as_deref() {
        None => None,
        Some("") => Some(Duration::from_secs(config.sync.interval_seconds)),
        Some(text) => {
            Some(parse_interval(text).map_err(|e| Exit::Config(format!("--watch: {e}")))?)
        }
    };
    sync_command(config, init, interval).await
}

/// `renewer members`: command-line overrides of `[members]`, then the agent.
pub(super) async fn members(
    loader: &Loader,
    watch: Option<String>,
    init: bool,
    dir: Option<PathBuf>,
) -> Result<Status, Exit> {
    let mut config = loader.load()?;
    let mut members = config.members.clone().ok_or(Exit::Config(
        "members: no [members] section (project, region, group, port)".to_string(),
    ))?;
    if let Some(d) = dir {
        members.dir = d;
    }
    config.members = Some(members.clone());
    config
        .revalidate("command line")
        .map_err(|e| Exit::Config(e.to_string()))?;
    let interval = match watch.as_deref() {
        None => None,
        Some("") => Some(Duration::from_secs(members.interval_seconds)),
        Some(text) => {
            Some(parse_interval(text).map_err(|e| Exit::Config(format!("--watch: {e}")))?)
        }
    };
    members_command(members, init, interval).await
}

/// `renewer sync`: prepare the directory, then one check (`--once`) or a loop (`--watch`).
async fn sync_command(
    config: Config,
    init_only: bool,
    interval: Option<Duration>,
) -> Result<Status, Exit> {
    let sync = config.sync.clone();
    let name =
        match (&sync.certificate, config.certificates.as_slice()) {
            (Some(n), _) => n.clone(),
            (None, [only]) => only.name.clone(),
            (None, _) => return Err(Exit::Config(
                "sync.certificate: several certificates are configured; name the one to install \
                 (sync.certificate or --certificate)"
                    .into(),
            )),
        };
    let wanted = config
        .certificate(&name)
        .map(|c| c.normalized_domains())
        .unwrap_or_default();
    let trusted_roots = match &sync.trusted_roots {
        Some(path) => {
            Some(Arc::new(sync_mod::load_roots(path).map_err(|e| {
                Exit::Config(format!("sync.trusted_roots: {e}"))
            })?))
        }
        None => None,
    };
    let target = Target {
        trusted_roots,
        dir: sync.dir.clone(),
        secret_name: sync.secret_name.clone(),
        keep_versions: sync.keep_versions as usize,
    };
    if init_only {
        let wrote = sync_mod::prepare(&target)
            .map_err(|e| Exit::Failed(format!("cannot prepare {}: {e}", target.dir.display())))?;
        tracing::info!(dir = %target.dir.display(), wrote_sds = wrote, "SDS directory ready");
        return Ok(Status::Success);
    }
    let source: Box<dyn BundleStore> = match sync.source {
        SyncSource::Store => {
            let store = store::open(&config.store.url, config.store.gcs_endpoint.as_deref())
                .await
                .map_err(|e| Exit::Setup(e.to_string()))?;
            // --once answers now: an unreachable store is exit 3. --watch retries instead.
            if interval.is_none() {
                store::check_reachable(&store)
                    .await
                    .map_err(|e| Exit::Setup(format!("the store cannot be reached: {e}")))?;
            }
            Box::new(ObjectBundles::new(store))
        }
        SyncSource::SecretManager => {
            let sm = config.secret_manager.as_ref().ok_or(Exit::Config(
                "sync.source: secret-manager needs [secret_manager]".to_string(),
            ))?;
            Box::new(
                SecretManagerMirror::new(sm)
                    .await
                    .map_err(|e| Exit::Setup(e.to_string()))?,
            )
        }
    };
    let hook_timeout = Duration::from_secs(sync.on_change_timeout_seconds);
    let check = || async {
        let outcome = sync_mod::sync_once(source.as_ref(), &name, &wanted, &target).await?;
        report_sync(&outcome, &wanted, interval.is_some());
        if let (SyncOutcome::Installed { installed, .. }, Some(cmd)) = (&outcome, &sync.on_change) {
            sync_mod::run_hook(cmd, installed, &target.dir, hook_timeout).await?;
            tracing::info!("on_change command succeeded");
        }
        Ok::<_, SyncError>(outcome)
    };
    let Some(interval) = interval else {
        return match check().await {
            Ok(_) => Ok(Status::Success),
            Err(e) => Err(Exit::Failed(format!(
                "{e}; the installed certificate stays"
            ))),
        };
    };
    let stop = cancel_on_signal(|signal| tracing::info!(signal, "renewer sync stopping"));
    let status = Arc::new(SyncStatus::new(
        wanted.clone(),
        sync_mod::installed(&target.dir),
    ));
    if !sync.status_address.is_empty() {
        let listener = tokio::net::TcpListener::bind(&sync.status_address)
            .await
            .map_err(|e| {
                Exit::Setup(format!(
                        "sync.status_address {}: {e} (choose another address, or \"\" to serve no status)",
                        sync.status_address
                    ),
                )
            })?;
        let server_name = sync
            .ready_server_name
            .clone()
            .or_else(|| wanted.first().cloned())
            .ok_or(Exit::Config(
                "sync.ready_server_name: the certificate has no name to check Envoy with"
                    .to_string(),
            ))?;
        let app = sync
            .ready_app_url
            .as_deref()
            .map(AppUrl::parse)
            .transpose()
            .map_err(|e| Exit::Config(format!("sync.ready_app_url: {e}")))?;
        let probe = LocalProbe::new(&sync.ready_tls_address, &server_name, app)
            .map_err(|e| Exit::Config(format!("sync.ready_server_name: {e}")))?;
        tracing::info!(
            address = sync.status_address,
            tls = sync.ready_tls_address,
            app = sync.ready_app_url.as_deref().unwrap_or("(not checked)"),
            "node readiness at /ready, metrics at /metrics"
        );
        tokio::spawn(ready::serve(
            status.clone(),
            Arc::new(probe),
            listener,
            Duration::from_secs(sync.ready_interval_seconds),
            stop.clone(),
        ));
    }
    tracing::info!(
        certificate = name,
        source = %source.location(),
        dir = %target.dir.display(),
        interval_seconds = interval.as_secs(),
        "renewer sync watching"
    );
    loop {
        let result = check().await;
        status.record(
            &result,
            sync_mod::installed(&target.dir),
            time::OffsetDateTime::now_utc(),
        );
        match &result {
            Ok(_) => {}
            // Before the first issuance: expected, and the node answers challenges meanwhile.
            Err(e @ SyncError::Missing { .. }) => {
                tracing::warn!(error = %e, "nothing to install yet")
            }
            Err(e) => {
                tracing::error!(error = %e, "sync failed; the installed certificate stays; retrying at the next check")
            }
        }
        let wait = sync_mod::jittered(interval, rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return Ok(Status::Success),
        }
    }
}

/// `renewer members`: make sure the EDS file exists (`--init`), refresh once, or keep it
/// current (`--watch`).
async fn members_command(
    members: MembersConfig,
    init_only: bool,
    interval: Option<Duration>,
) -> Result<Status, Exit> {
    let source = ComputeSource::new(&members).await.map_err(Exit::Setup)?;
    let dir = members.dir.clone();
    let agent = Arc::new(Agent::new(Box::new(source), members));
    let write_error = |e: std::io::Error| {
        Exit::Failed(format!(
            "cannot write the membership file in {}: {e}",
            dir.display()
        ))
    };
    if init_only {
        agent.init().await.map_err(write_error)?;
        return Ok(Status::Success);
    }
    let Some(interval) = interval else {
        return match agent.refresh().await.map_err(write_error)? {
            Refreshed::Written(_) | Refreshed::Unchanged => Ok(Status::Success),
            Refreshed::Kept(_) => Ok(Status::Failed),
        };
    };
    let stop = cancel_on_signal(|signal| tracing::info!(signal, "renewer members stopping"));
    agent
        .watch(interval, stop)
        .await
        .map_err(|e| Exit::Setup(format!("members metrics: {e}")))?;
    Ok(Status::Success)
}

fn report_sync(outcome: &SyncOutcome, wanted: &[String], watching: bool) {
    let now = time::OffsetDateTime::now_utc();
    let current = match outcome {
        SyncOutcome::Installed { installed, .. } | SyncOutcome::Unchanged(installed) => installed,
    };
    let missing = sync_mod::missing_names(&current.domains, wanted);
    if !missing.is_empty() {
        // Served anyway: the best certificate there is beats none (a node started right after
        // DOMAINS grew, before the renewer added the new names).
        tracing::warn!(
            serial = current.serial,
            missing = missing.join(" "),
            "the certificate in service does not cover every configured name yet; serving it until the renewer issues one that does"
        );
    }
    match outcome {
        SyncOutcome::Installed {
            installed,
            previous,
        } => {
            tracing::info!(
                serial = installed.serial,
                previous = previous.as_deref().unwrap_or("none"),
                not_after = %rfc3339(installed.not_after),
                version = installed.version,
                "installed a new certificate; Envoy reloads it"
            );
        }
        SyncOutcome::Unchanged(installed) => {
            let days = days_left(installed.not_after, now);
            if days < 7 {
                tracing::warn!(
                    serial = installed.serial,
                    days_left = days,
                    "the installed certificate expires soon and the source has no newer one; is the renewer running?"
                );
            } else if watching {
                tracing::debug!(
                    serial = installed.serial,
                    days_left = days,
                    "certificate unchanged"
                );
            } else {
                tracing::info!(
                    serial = installed.serial,
                    days_left = days,
                    "certificate unchanged"
                );
            }
        }
    }
}
