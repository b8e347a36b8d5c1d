//! `renewer`: the ACME certificate renewer of acme-edge.
//!
//! Only the command-line surface exists so far; the subcommands land with the renewer issue.

use clap::{Parser, Subcommand};

/// Keeps acme-edge certificates issued and renewed with an ACME CA.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One renewal pass over all configured certificates, then exit.
    Run,
    /// HTTP runtime for Cloud Run / Cloud Functions.
    Serve,
    /// Install the current certificate for Envoy on an app node.
    Sync,
    /// Show the configured certificates.
    Status,
    /// Create or show the ACME account.
    Account,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Run => "run",
        Command::Serve => "serve",
        Command::Sync => "sync",
        Command::Status => "status",
        Command::Account => "account",
    };
    anyhow::bail!("`renewer {name}` is not implemented yet")
}
