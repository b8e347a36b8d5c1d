//! `renewer`: the ACME certificate renewer of acme-edge. A thin CLI over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use std::time::Duration;

use renewer::bundle::BundleStore;
use renewer::config::{Config, SyncSource};
use renewer::node::ready::{self, AppUrl, LocalProbe, SyncStatus};
use renewer::node::sync::{self as sync_mod, Outcome as SyncOutcome, SyncError, Target};
use renewer::run::{Renewer, RunOptions};
use renewer::{logging, status, RenewerError};
use tokio_util::sync::CancellationToken;

const EXIT_CODES: &str = "\
Exit codes:
  0  success: every selected certificate is valid and nothing failed
  1  at least one certificate failed to renew, or none is in service
  2  usage or configuration error (the message names the field)
  3  setup error: the store, Secret Manager or the CA account could not be reached

Environment:
  RENEWER_CONFIG        config file (instead of --config)
  RENEWER__<SECTION>__<FIELD>=value
                        override one config field, e.g. RENEWER__STORE__URL=gs://bucket/prefix
  RENEWER_LOG           log filter (default: info), e.g. debug
  RENEWER_LOG_FORMAT    json | text (default: text on a terminal, JSON otherwise)";

const SERVE_HELP: &str = "\
POST / body (optional, JSON): {\"only\": [\"name\", ...], \"force\": true}
  as a plain HTTP request (Cloud Scheduler), a CloudEvent (binary or structured),
  or a Pub/Sub push envelope. Answers the per-certificate summary: 200 if all
  are fine, 500 if one failed, 400 for a bad body, 503 while shutting down.

On SIGTERM: stops accepting, gives a running pass serve.pass_grace_seconds, then
cancels it (the certificate in service never changes half-way), and exits within
serve.shutdown_timeout_seconds.

Exit codes: 0 stopped cleanly, 1 stopped with work cut off, 2 config, 3 setup.";

const SYNC_HELP: &str = "\
Writes <dir>/sds.yaml once, then each new certificate into <dir>/<version>/ and
swaps the <dir>/current symlink by rename; Envoy (watched_directory) reloads it.
A bundle that does not parse, whose key does not match or that has expired is
refused; the installed certificate stays. One that lacks a configured name is
installed when it is the best there is (logged, acme_edge_sync_missing_names),
never over one that covers that name.

The on_change command gets RENEWER_SYNC_SERIAL, RENEWER_SYNC_NOT_AFTER,
RENEWER_SYNC_DIR and RENEWER_SYNC_NAME in its environment.

Exit codes (--once): 0 installed or already current, 1 refused or failed (the
installed certificate stays), 2 usage/config, 3 the source could not be opened.
With --watch, faults are logged and retried; SIGTERM exits 0; and
sync.status_address serves GET /ready (200 when the app answers
sync.ready_app_url and Envoy at sync.ready_tls_address presents the installed
certificate, or before any certificate exists; else 503, with the reason) and
GET /metrics.";

const MEMBERS_HELP: &str = "\
Writes <dir>/eds.json, the endpoints of Envoy's `app` cluster: the application of
every member of the managed instance group ([members] group), i.e. every instance
that is RUNNING, not being created, deleted or otherwise acted on by the group,
and HEALTHY by the group's health check. The list is sorted the same way on every
node, so Envoy's Maglev maps a key to the same instance from any node. A new list
is written to a temporary file and renamed over eds.json; Envoy reloads it without
a restart and keeps open connections.

A source that fails, or answers no usable member, never empties the list: the
last known one stays (logged as a warning; acme_edge_members_stale is 1 until a
good answer comes back).

Exit codes: --init 0 once eds.json exists (an empty list when the source is
down and nothing was there: Envoy can start); --once 0 written or unchanged,
1 the last known list was kept; 2 usage/config; 3 the source could not be set
up. --watch serves metrics on members.metrics_address; SIGTERM exits 0.";

/// Keeps acme-edge certificates issued and renewed with an ACME CA (Let's Encrypt, …).
#[derive(Parser)]
#[command(version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// The configuration file (see renewer.example.toml).
    #[arg(
        long,
        short,
        global = true,
        env = "RENEWER_CONFIG",
        default_value = "renewer.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// One renewal pass over the configured certificates, then exit (the Cloud Run job).
    #[command(after_help = EXIT_CODES)]
    Run {
        /// Renew even if not due (new key, new serial).
        #[arg(long)]
        force: bool,
        /// Only this certificate (by name); repeat for several.
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// HTTP runtime for Cloud Run / Cloud Functions: `POST /` runs a renewal pass; also
    /// `GET /healthz`, `GET /metrics` and `GET /.well-known/acme-challenge/{token}`.
    #[command(after_help = SERVE_HELP)]
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        address: String,
        /// Port to listen on (Cloud Run sets $PORT).
        #[arg(long, env = "PORT", default_value = "8080")]
        port: String,
    },
    /// Install the current certificate for Envoy on an app node (SDS files, atomic swap).
    #[command(after_help = SYNC_HELP)]
    Sync {
        /// Check once and exit (the default).
        #[arg(long, conflicts_with = "watch")]
        once: bool,
        /// Keep running and check every INTERVAL (30s, 5m, 1h; default: sync.interval_seconds).
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "")]
        watch: Option<String>,
        /// Only create the directory and sds.yaml, then exit (before Envoy first starts).
        #[arg(long, conflicts_with_all = ["once", "watch"])]
        init: bool,
        /// The certificate to install (default: sync.certificate, or the only one).
        #[arg(long, value_name = "NAME")]
        certificate: Option<String>,
        /// Where to read it: store or secret-manager (default: sync.source).
        #[arg(long, value_name = "SOURCE")]
        source: Option<String>,
        /// Directory Envoy's SDS config reads (default: sync.dir).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Command (sh -c) to run after a new certificate is installed (default: sync.on_change).
        #[arg(long, value_name = "COMMAND")]
        on_change: Option<String>,
    },
    /// Keep the cluster's membership for Envoy on an app node (EDS file, atomic swap): every
    /// healthy node's application, from the managed instance group.
    #[command(after_help = MEMBERS_HELP)]
    Members {
        /// Refresh once and exit (the default).
        #[arg(long, conflicts_with = "watch")]
        once: bool,
        /// Keep running and refresh every INTERVAL (10s, 1m; default: members.interval_seconds).
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "")]
        watch: Option<String>,
        /// Make sure eds.json exists, then exit (before Envoy first starts).
        #[arg(long, conflicts_with_all = ["once", "watch"])]
        init: bool,
        /// Directory of eds.json (default: members.dir).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Show the certificates in the store: names, issuer, expiry, next renewal, last error.
    #[command(after_help = EXIT_CODES)]
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create the ACME account if needed and show it, with the JWK thumbprint that the edge
    /// filter's stateless challenge mode needs.
    #[command(after_help = EXIT_CODES)]
    Account {
        /// Only show an existing account; fail if there is none.
        #[arg(long)]
        no_create: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_SETUP: u8 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(logging::detect_format());
    match dispatch(cli).await {
        Ok(code) => ExitCode::from(code),
        Err((code, message)) => {
            tracing::error!("{message}");
            // Also on stderr as plain text when logs are JSON, so a person running it by hand
            // in a pipeline still reads the reason.
            if logging::detect_format() == logging::Format::Json {
                eprintln!("renewer: {message}");
            }
            ExitCode::from(code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8, (u8, String)> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let load = || Config::load(&cli.global.config, &env).map_err(|e| (EXIT_CONFIG, e.to_string()));
    match cli.command {
        Command::Serve { address, port } => {
            let config = load()?;
            let addr = renewer::function::listen_address(&address, Some(&port))
                .map_err(|e| (EXIT_CONFIG, e))?;
            let serve_config = config.serve.clone();
            let renewer = std::sync::Arc::new(open(config).await?);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| (EXIT_SETUP, format!("cannot listen on {addr}: {e}")))?;
            tracing::info!(address = %addr, "renewer serve listening");
            let stopped = renewer::serve::run(renewer, &serve_config, listener)
                .await
                .map_err(|e| (EXIT_SETUP, format!("server error: {e}")))?;
            match stopped {
                renewer::function::Stopped::Drained => {
                    tracing::info!("stopped");
                    Ok(0)
                }
                renewer::function::Stopped::DeadlineExceeded => {
                    tracing::warn!("stopped with requests still running");
                    Ok(EXIT_FAILED)
                }
            }
        }
        Command::Sync {
            once: _,
            watch,
            init,
            certificate,
            source,
            dir,
            on_change,
        } => {
            let mut config = load()?;
            let cli = "command line";
            if let Some(c) = certificate {
                config.sync.certificate = Some(c);
            }
            if let Some(s) = source {
                config.sync.source = match s.as_str() {
                    "store" => SyncSource::Store,
                    "secret-manager" => SyncSource::SecretManager,
                    other => {
                        return Err((
                            EXIT_CONFIG,
                            format!("--source {other:?}: use store or secret-manager"),
                        ))
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
                .map_err(|e| (EXIT_CONFIG, e.to_string()))?;
            let interval = match watch.as_deref() {
                None => None,
                Some("") => Some(Duration::from_secs(config.sync.interval_seconds)),
                Some(text) => Some(
                    renewer::node::sync::parse_interval(text)
                        .map_err(|e| (EXIT_CONFIG, format!("--watch: {e}")))?,
                ),
            };
            sync_command(config, init, interval).await
        }
        Command::Members {
            once: _,
            watch,
            init,
            dir,
        } => {
            let mut config = load()?;
            let mut members = config.members.clone().ok_or((
                EXIT_CONFIG,
                "members: no [members] section (project, region, group, port)".to_string(),
            ))?;
            if let Some(d) = dir {
                members.dir = d;
            }
            config.members = Some(members.clone());
            config
                .revalidate("command line")
                .map_err(|e| (EXIT_CONFIG, e.to_string()))?;
            let interval = match watch.as_deref() {
                None => None,
                Some("") => Some(Duration::from_secs(members.interval_seconds)),
                Some(text) => Some(
                    renewer::node::sync::parse_interval(text)
                        .map_err(|e| (EXIT_CONFIG, format!("--watch: {e}")))?,
                ),
            };
            members_command(members, init, interval).await
        }
        Command::Run { force, only, json } => {
            // What another renewer stores from now on, a forced run takes (one issuance for
            // many forced runs queued on the lease).
            let requested_at = Some(time::OffsetDateTime::now_utc());
            let config = load()?;
            for name in &only {
                if config.certificate(name).is_none() {
                    return Err((
                        EXIT_CONFIG,
                        format!("--only {name}: no certificate with that name in the config"),
                    ));
                }
            }
            let renewer = open(config).await?;
            // Cloud Run sends SIGTERM when a job task is cancelled or times out: end the pass
            // cleanly (lease released, challenge answers removed) instead of dying mid-order.
            let cancel = CancellationToken::new();
            let on_signal = cancel.clone();
            tokio::spawn(async move {
                let signal = renewer::function::shutdown_signal().await;
                tracing::warn!(signal, "stopping: the renewal in progress is cancelled");
                on_signal.cancel();
            });
            let report = renewer
                .run(&RunOptions {
                    force,
                    only,
                    cancel,
                    requested_at,
                })
                .await;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                for c in &report.certificates {
                    println!("{}", summary_line(c));
                }
            }
            Ok(if report.ok() { 0 } else { EXIT_FAILED })
        }
        Command::Status { json } => {
            let renewer = open(load()?).await?;
            let rows = status::collect(&renewer).await;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
            } else {
                print!("{}", status::render(&rows));
            }
            let now = time::OffsetDateTime::now_utc();
            let ok = rows
                .iter()
                .all(|r| r.last_error.is_none() && r.not_after.is_some_and(|t| t > now));
            Ok(if ok { 0 } else { EXIT_FAILED })
        }
        Command::Account { no_create, json } => {
            let config = load()?;
            config
                .require_acme(&cli.global.config.display().to_string())
                .map_err(|e| (EXIT_CONFIG, e.to_string()))?;
            let store = renewer::store::open(&config)
                .await
                .map_err(|e| (EXIT_SETUP, e.to_string()))?;
            let (_, mut info) = renewer::acme::Acme::open(&config, &store, !no_create)
                .await
                .map_err(|e| (EXIT_SETUP, e.to_string()))?;
            if !info.created {
                // A stored account may be dead (deactivated, CA reset): ask the CA.
                match renewer::acme::Acme::check_with_ca(&config, &store).await {
                    Ok(()) => {}
                    Err(renewer::acme::AcmeError::AccountGone(why)) if no_create => {
                        return Err((
                            EXIT_SETUP,
                            format!(
                                "the CA no longer knows the stored account {} ({why}); run `renewer account` without --no-create to register a new one",
                                info.account_url
                            ),
                        ))
                    }
                    Err(renewer::acme::AcmeError::AccountGone(_)) => {
                        let gone = info.account_url.clone();
                        let (_, new_info, backup) =
                            renewer::acme::Acme::replace_gone_account(&config, &store, &gone)
                                .await
                                .map_err(|e| (EXIT_SETUP, e.to_string()))?;
                        let backup = backup.unwrap_or_else(|| "(replaced meanwhile by another renewer)".into());
                        info = new_info;
                        info.replaced = Some(format!("{gone} (credentials kept in {backup})"));
                    }
                    Err(e) => {
                        return Err((
                            EXIT_SETUP,
                            format!("cannot check the account with the CA: {e}"),
                        ))
                    }
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).unwrap_or_default()
                );
            } else {
                println!("directory:   {}", info.directory);
                println!("account:     {}", info.account_url);
                println!("contact:     {}", info.contact.join(", "));
                println!("credentials: {}", info.object);
                println!("thumbprint:  {}", info.thumbprint);
                if let Some(old) = &info.replaced {
                    println!(
                        "(the CA no longer knew the stored account {old}; registered this new one)"
                    );
                } else if info.created {
                    println!("(created now)");
                } else {
                    println!("status:      known to the CA (checked now)");
                }
            }
            Ok(0)
        }
    }
}

async fn open(config: Config) -> Result<Renewer, (u8, String)> {
    Renewer::new(config).await.map_err(|e| match e {
        RenewerError::Config(e) => (EXIT_CONFIG, e.to_string()),
        other => (EXIT_SETUP, other.to_string()),
    })
}

fn summary_line(c: &renewer::run::CertReport) -> String {
    use renewer::run::Outcome;
    let expiry = c
        .not_after
        .map(renewer::policy::rfc3339)
        .unwrap_or_else(|| "none".into());
    match &c.outcome {
        Outcome::Renewed { serial, reason } => {
            format!(
                "{}: renewed ({reason}); serial {serial}, valid until {expiry}",
                c.name
            )
        }
        Outcome::Unchanged {
            reason,
            next_renewal,
        } => format!(
            "{}: unchanged ({reason}); valid until {expiry}{}",
            c.name,
            next_renewal
                .map(|t| format!(", next renewal {}", renewer::policy::rfc3339(t)))
                .unwrap_or_default()
        ),
        Outcome::Failed { error } => format!("{}: FAILED: {error}; in service: {expiry}", c.name),
    }
}

/// `renewer sync`: prepare the directory, then one check (`--once`) or a loop (`--watch`).
async fn sync_command(
    config: Config,
    init_only: bool,
    interval: Option<Duration>,
) -> Result<u8, (u8, String)> {
    let sync = config.sync.clone();
    let name =
        match (&sync.certificate, config.certificates.as_slice()) {
            (Some(n), _) => n.clone(),
            (None, [only]) => only.name.clone(),
            (None, _) => return Err((
                EXIT_CONFIG,
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
        Some(path) => Some(std::sync::Arc::new(
            sync_mod::load_roots(path)
                .map_err(|e| (EXIT_CONFIG, format!("sync.trusted_roots: {e}")))?,
        )),
        None => None,
    };
    let target = Target {
        trusted_roots,
        dir: sync.dir.clone(),
        secret_name: sync.secret_name.clone(),
        keep_versions: sync.keep_versions as usize,
    };
    if init_only {
        let wrote = sync_mod::prepare(&target).map_err(|e| {
            (
                EXIT_FAILED,
                format!("cannot prepare {}: {e}", target.dir.display()),
            )
        })?;
        tracing::info!(dir = %target.dir.display(), wrote_sds = wrote, "SDS directory ready");
        return Ok(0);
    }
    let source: Box<dyn BundleStore> = match sync.source {
        SyncSource::Store => {
            let store = renewer::store::open(&config)
                .await
                .map_err(|e| (EXIT_SETUP, e.to_string()))?;
            // --once answers now: an unreachable store is exit 3. --watch retries instead.
            if interval.is_none() {
                renewer::store::check_reachable(&store)
                    .await
                    .map_err(|e| (EXIT_SETUP, format!("the store cannot be reached: {e}")))?;
            }
            Box::new(renewer::bundle::ObjectBundles::new(store))
        }
        SyncSource::SecretManager => {
            let sm = config.secret_manager.as_ref().ok_or((
                EXIT_CONFIG,
                "sync.source: secret-manager needs [secret_manager]".to_string(),
            ))?;
            Box::new(
                renewer::store::secret_manager::SecretManagerMirror::new(sm)
                    .await
                    .map_err(|e| (EXIT_SETUP, e.to_string()))?,
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
            Ok(_) => Ok(0),
            Err(e) => Err((EXIT_FAILED, format!("{e}; the installed certificate stays"))),
        };
    };
    let stop = CancellationToken::new();
    let status = std::sync::Arc::new(SyncStatus::new(
        wanted.clone(),
        sync_mod::installed(&target.dir),
    ));
    if !sync.status_address.is_empty() {
        let listener = tokio::net::TcpListener::bind(&sync.status_address)
            .await
            .map_err(|e| {
                (
                    EXIT_SETUP,
                    format!(
                        "sync.status_address {}: {e} (choose another address, or \"\" to serve no status)",
                        sync.status_address
                    ),
                )
            })?;
        let server_name = sync
            .ready_server_name
            .clone()
            .or_else(|| wanted.first().cloned())
            .ok_or((
                EXIT_CONFIG,
                "sync.ready_server_name: the certificate has no name to check Envoy with"
                    .to_string(),
            ))?;
        let app = sync
            .ready_app_url
            .as_deref()
            .map(AppUrl::parse)
            .transpose()
            .map_err(|e| (EXIT_CONFIG, format!("sync.ready_app_url: {e}")))?;
        let probe = LocalProbe::new(&sync.ready_tls_address, &server_name, app)
            .map_err(|e| (EXIT_CONFIG, format!("sync.ready_server_name: {e}")))?;
        tracing::info!(
            address = sync.status_address,
            tls = sync.ready_tls_address,
            app = sync.ready_app_url.as_deref().unwrap_or("(not checked)"),
            "node readiness at /ready, metrics at /metrics"
        );
        tokio::spawn(ready::serve(
            status.clone(),
            std::sync::Arc::new(probe),
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
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let signal = renewer::function::shutdown_signal().await;
        tracing::info!(signal, "renewer sync stopping");
        on_signal.cancel();
    });
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
            _ = stop.cancelled() => return Ok(0),
        }
    }
}

/// `renewer members`: make sure the EDS file exists (`--init`), refresh once, or keep it
/// current (`--watch`).
async fn members_command(
    members: renewer::config::MembersConfig,
    init_only: bool,
    interval: Option<Duration>,
) -> Result<u8, (u8, String)> {
    use renewer::node::agent::{Agent, Refreshed};
    let source = renewer::node::compute::ComputeSource::new(&members)
        .await
        .map_err(|e| (EXIT_SETUP, e))?;
    let dir = members.dir.clone();
    let agent = std::sync::Arc::new(Agent::new(Box::new(source), members));
    let write_error = |e: std::io::Error| {
        (
            EXIT_FAILED,
            format!("cannot write the membership file in {}: {e}", dir.display()),
        )
    };
    if init_only {
        agent.init().await.map_err(write_error)?;
        return Ok(0);
    }
    let Some(interval) = interval else {
        return match agent.refresh().await.map_err(write_error)? {
            Refreshed::Written(_) | Refreshed::Unchanged => Ok(0),
            Refreshed::Kept(_) => Ok(EXIT_FAILED),
        };
    };
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let signal = renewer::function::shutdown_signal().await;
        tracing::info!(signal, "renewer members stopping");
        on_signal.cancel();
    });
    agent
        .watch(interval, stop)
        .await
        .map_err(|e| (EXIT_SETUP, format!("members metrics: {e}")))?;
    Ok(0)
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
                not_after = %renewer::policy::rfc3339(installed.not_after),
                version = installed.version,
                "installed a new certificate; Envoy reloads it"
            );
        }
        SyncOutcome::Unchanged(installed) => {
            let days = renewer::certinfo::days_left(installed.not_after, now);
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
