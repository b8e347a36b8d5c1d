//! The cloud-side commands: `run`, `serve`, `status`, `account`.

use crate::cloud::acme::{stored_accounts, AccountInfo, Acme, AcmeError};
use crate::cloud::function::Stopped;
use crate::cloud::run::{CertReport, Outcome, Renewer, RunOptions};
use crate::cloud::status;
use crate::shared::clock::rfc3339;
use crate::shared::config::Config;
use crate::shared::process::{cancel_on_signal, listen_address};
use crate::RenewerError;

use super::exit::{Exit, Status};
use super::Loader;

/// `renewer run`: one renewal pass, a summary line (or JSON) per certificate.
pub(super) async fn run(
    loader: &Loader,
    force: bool,
    only: Vec<String>,
    json: bool,
) -> Result<Status, Exit> {
    // What another renewer stores from now on, a forced run takes (one issuance for
    // many forced runs queued on the lease).
    let requested_at = Some(time::OffsetDateTime::now_utc());
    let config = loader.load()?;
    for name in &only {
        if config.certificate(name).is_none() {
            return Err(Exit::Config(format!(
                "--only {name}: no certificate with that name in the config"
            )));
        }
    }
    let renewer = open(config).await?;
    // Cloud Run sends SIGTERM when a job task is cancelled or times out: end the pass
    // cleanly (lease released, challenge answers removed) instead of dying mid-order.
    let cancel = cancel_on_signal(|signal| {
        tracing::warn!(signal, "stopping: the renewal in progress is cancelled")
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
    Ok(Status::from_ok(report.ok()))
}

/// `renewer serve`: the HTTP function until SIGTERM.
pub(super) async fn serve(loader: &Loader, address: String, port: String) -> Result<Status, Exit> {
    let config = loader.load()?;
    let addr = listen_address(&address, Some(&port)).map_err(Exit::Config)?;
    let serve_config = config.serve.clone();
    let renewer = std::sync::Arc::new(open(config).await?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Exit::Setup(format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(address = %addr, "renewer serve listening");
    let stopped = crate::cloud::serve::run(renewer, &serve_config, listener)
        .await
        .map_err(|e| Exit::Setup(format!("server error: {e}")))?;
    match stopped {
        Stopped::Drained => {
            tracing::info!("stopped");
            Ok(Status::Success)
        }
        Stopped::DeadlineExceeded => {
            tracing::warn!("stopped with requests still running");
            Ok(Status::Failed)
        }
    }
}

/// `renewer status`: the table (or JSON) of what the store holds.
pub(super) async fn status(loader: &Loader, json: bool) -> Result<Status, Exit> {
    let renewer = open(loader.load()?).await?;
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
    Ok(Status::from_ok(ok))
}

/// `renewer account`: the ACME account, checked with the CA (and replaced if the CA forgot it).
pub(super) async fn account(
    loader: &Loader,
    no_create: bool,
    all_cas: bool,
    json: bool,
) -> Result<Status, Exit> {
    let config = loader.load()?;
    config
        .require_acme(&loader.source_name())
        .map_err(|e| Exit::Config(e.to_string()))?;
    let store = crate::shared::store::open(&config.store.url, config.store.gcs_endpoint.as_deref())
        .await
        .map_err(|e| Exit::Setup(e.to_string()))?;
    let fallbacks = config.other_ca_directories(0);
    let mut info = open_checked(&config, &store, !no_create, &fallbacks)
        .await
        .map_err(Exit::Setup)?;
    if all_cas {
        for (i, ca) in config.per_ca().iter().enumerate().skip(1) {
            open_checked(ca, &store, true, &config.other_ca_directories(i))
                .await
                .map_err(|e| Exit::Setup(format!("fallback CA {}: {e}", ca.directory_url())))?;
        }
    }
    info.fallbacks = stored_accounts(&store, &fallbacks)
        .await
        .map_err(|e| Exit::Setup(format!("the fallback CAs' accounts: {e}")))?;
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
            println!("(the CA no longer knew the stored account {old}; registered this new one)");
        } else if info.created {
            println!("(created now)");
        } else {
            println!("status:      known to the CA (checked now)");
        }
        for fallback in &info.fallbacks {
            println!("fallback:    {}", fallback.directory);
            match &fallback.thumbprint {
                None => println!(
                    "             no account yet: registered on first use, with this key"
                ),
                Some(t) if *t == info.thumbprint => {
                    println!("             account in {}, the same key", fallback.object)
                }
                Some(t) => println!(
                    "             warning: account in {} has another key (thumbprint {t}): the edge filter's stateless mode cannot answer this CA's challenges (store mode can); delete that object to have the account registered again with this key on first use",
                    fallback.object
                ),
            }
        }
    }
    Ok(Status::Success)
}

/// `ca`'s account for `renewer account`: opened (registered unless `create` is false, with
/// the key of `key_from`'s first stored account, see `Acme::open`), and a stored one checked
/// with the CA. One the CA no longer knows is replaced (`replaced` says which), or with
/// `create` false is an error.
async fn open_checked(
    ca: &Config,
    store: &crate::shared::store::SharedStore,
    create: bool,
    key_from: &[String],
) -> Result<AccountInfo, String> {
    let (_, info) = Acme::open(ca, store, create, key_from)
        .await
        .map_err(|e| e.to_string())?;
    if info.created {
        return Ok(info);
    }
    // A stored account may be dead (deactivated, CA reset): ask the CA.
    match Acme::check_with_ca(ca, store).await {
        Ok(()) => Ok(info),
        Err(AcmeError::AccountGone(why)) if !create => Err(format!(
            "the CA no longer knows the stored account {} ({why}); run `renewer account` without --no-create to register a new one",
            info.account_url
        )),
        Err(AcmeError::AccountGone(_)) => {
            let gone = info.account_url;
            let (_, mut info, backup) = Acme::replace_gone_account(ca, store, &gone)
                .await
                .map_err(|e| e.to_string())?;
            let backup =
                backup.unwrap_or_else(|| "(replaced meanwhile by another renewer)".into());
            info.replaced = Some(format!("{gone} (credentials kept in {backup})"));
            Ok(info)
        }
        Err(e) => Err(format!("cannot check the account with the CA: {e}")),
    }
}

/// The renewer for `config`, or the exit that says why not.
async fn open(config: Config) -> Result<Renewer, Exit> {
    Renewer::new(config).await.map_err(|e| match e {
        RenewerError::Config(e) => Exit::Config(e.to_string()),
        other => Exit::Setup(other.to_string()),
    })
}

fn summary_line(c: &CertReport) -> String {
    let expiry = c.not_after.map(rfc3339).unwrap_or_else(|| "none".into());
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
                .map(|t| format!(", next renewal {}", rfc3339(t)))
                .unwrap_or_default()
        ),
        Outcome::Failed { error } => format!("{}: FAILED: {error}; in service: {expiry}", c.name),
    }
}
