//! The `renewer` command line: parse the arguments, load the config, run one command, and
//! map its result to the documented exit codes. `anyhow`-free: every failure is an [`Exit`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::shared::config::Config;
use crate::shared::logging;

mod cloud;
mod exit;
mod node;

pub use exit::{Exit, Status};

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
    ///
    /// The primary CA's account is checked with the CA (and replaced if the CA no longer
    /// knows it). The fallback CAs' accounts are listed from the store only (each is
    /// registered on first use with the same key, so the one thumbprint answers every CA; an
    /// account with another key is shown with a warning), unless --all-cas asks for them too.
    #[command(after_help = EXIT_CODES)]
    Account {
        /// Only show an existing account; fail if there is none.
        #[arg(long)]
        no_create: bool,
        /// Also register (or check) every fallback CA's account now, with its EAB, so a wrong
        /// EAB key or an unreachable fallback shows before the day it is needed (exit 3,
        /// naming the CA).
        #[arg(long, conflicts_with = "no_create")]
        all_cas: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The `renewer` binary: parse, run, exit with the documented code.
#[tokio::main]
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(logging::detect_format());
    match dispatch(cli).await {
        Ok(status) => status.into(),
        Err(exit) => {
            tracing::error!("{exit}");
            // Also on stderr as plain text when logs are JSON, so a person running it by hand
            // in a pipeline still reads the reason.
            if logging::detect_format() == logging::Format::Json {
                eprintln!("renewer: {exit}");
            }
            ExitCode::from(exit.code())
        }
    }
}

/// Reads the config file named on the command line, with the process's `RENEWER__*` overrides.
struct Loader {
    path: PathBuf,
    env: Vec<(String, String)>,
}

impl Loader {
    fn load(&self) -> Result<Config, Exit> {
        Config::load(&self.path, &self.env).map_err(|e| Exit::Config(e.to_string()))
    }

    /// The file's name, for errors found after loading.
    fn source_name(&self) -> String {
        self.path.display().to_string()
    }
}

async fn dispatch(cli: Cli) -> Result<Status, Exit> {
    let loader = Loader {
        path: cli.global.config,
        env: std::env::vars().collect(),
    };
    match cli.command {
        Command::Run { force, only, json } => cloud::run(&loader, force, only, json).await,
        Command::Serve { address, port } => cloud::serve(&loader, address, port).await,
        Command::Status { json } => cloud::status(&loader, json).await,
        Command::Account {
            no_create,
            all_cas,
            json,
        } => cloud::account(&loader, no_create, all_cas, json).await,
        Command::Sync {
            once: _,
            watch,
            init,
            certificate,
            source,
            dir,
            on_change,
        } => node::sync(&loader, watch, init, certificate, source, dir, on_change).await,
        Command::Members {
            once: _,
            watch,
            init,
            dir,
        } => node::members(&loader, watch, init, dir).await,
    }
}
