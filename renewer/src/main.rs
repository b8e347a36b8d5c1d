//! `renewer`: the ACME certificate renewer of acme-edge. A thin CLI over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use renewer::config::Config;
use renewer::run::{Renewer, RunOptions};
use renewer::{logging, status, RenewerError};

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
    /// HTTP runtime for Cloud Run / Cloud Functions (not implemented yet).
    Serve,
    /// Install the current certificate for Envoy on an app node (not implemented yet).
    Sync,
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
        Command::Serve | Command::Sync => Err((
            EXIT_CONFIG,
            "`renewer serve` and `renewer sync` are not implemented yet".into(),
        )),
        Command::Run { force, only, json } => {
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
            let report = renewer.run(&RunOptions { force, only }).await;
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
            let store = renewer::store::open(&config)
                .await
                .map_err(|e| (EXIT_SETUP, e.to_string()))?;
            let (_, info) = renewer::acme::Acme::open(&config, &store, !no_create)
                .await
                .map_err(|e| (EXIT_SETUP, e.to_string()))?;
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
                if info.created {
                    println!("(created now)");
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
