//! `acme-bench`: the renewer against peer ACME clients (lego, certbot) on the same Pebble, and
//! the cold start and size of what Cloud Run runs.
//!
//! Run by `make bench`; `acme-bench --help` lists the options. This is a measurement, not a
//! test: it prints numbers and PASS/MISS against the targets and exits 0 either way. It fails
//! (non-zero) only if something could not run: a tool is missing, an issuance failed (its
//! output is printed), `renewer serve` did not come up.
//!
//! Why it is built the way it is:
//!
//! * One Pebble (the harness's: `PEBBLE_VA_NOSLEEP=1`, no nonce rejection) serves all three
//!   tools, with `PEBBLE_AUTHZREUSE=0`, and every issuance uses names never used before
//!   (`r<rep>-c<i>.n<count>.<tool>.bench.test`): no client gets an authorization it did not
//!   validate. Pebble's HTTP-01 port is one port on 127.0.0.1, taken in turn by each tool's
//!   responder.
//! * Each tool answers HTTP-01 the way it ships: lego and certbot with their standalone
//!   servers (inside the process being timed), the renewer with `renewer serve`'s challenge
//!   route reading the store (started before the timed run, stopped after; its memory is
//!   reported apart). A standalone responder holds the port for its whole invocation, so a
//!   lego or certbot user issues N certificates as N invocations in a row: that is how they
//!   are run, and their time is the sum. The renewer issues N certificates in one `renewer
//!   run` with N `[[certificates]]`, `renewal.concurrency` at a time (its default).
//! * Accounts are registered before anything is timed (a user registers once), and every
//!   tool issues one untimed certificate first (page cache, Python imports). Each case then
//!   starts from a fresh directory holding only a copy of the account.
//! * Tools take turns in every repetition, and the order rotates between repetitions
//!   (renewer, lego, certbot; then lego, certbot, renewer; …) so drift of a shared machine
//!   does not always favour the same one. Times are medians over repetitions.
//! * Peak RSS comes from GNU time (`wait4`'s `ru_maxrss`) via `harness::bench::measure`.
//! * The renewer is the release build (`target/release/renewer`), which is what the image
//!   ships; the benchmark does not build it (`make bench` does, first).
//!
//! The modules: [`args`] (the command line), [`tools`] (the binaries and their versions),
//! [`commands`] (each tool's command line and the renewer's config), [`serve`] (`renewer
//! serve` as a child process), [`clients`] and [`cold_start`] (the measurements),
//! [`clients_report`] and [`cold_start_report`] (their Markdown sections), [`progress`] (the
//! progress lines on stderr).

mod args;
mod clients;
mod clients_report;
mod cold_start;
mod cold_start_report;
mod commands;
mod progress;
mod serve;
mod tools;

use anyhow::Result;
use harness::bench;

use crate::args::{Only, Options, USAGE};
use crate::tools::{renewer_release_bin, stale_note, Tools};

fn main() {
    bench::main("acme-bench", USAGE, |opts: Options| run(&opts));
}

fn run(opts: &Options) -> Result<()> {
    let renewer = renewer_release_bin()?;
    let stale = stale_note(&renewer);
    if let Some(note) = &stale {
        eprintln!("acme-bench: warning: {note}");
    }
    let mut report = String::new();
    if opts.only != Only::ColdStart {
        let tools = Tools::find(renewer.clone())?;
        let (setup, results) = clients::measure(opts, &tools)?;
        let section = clients_report::render(opts, &tools, &setup, &results, stale.as_deref());
        report.push_str(&section);
    }
    if opts.only != Only::Acme {
        let measured = cold_start::measure(opts, &renewer)?;
        report.push_str(&cold_start_report::render(
            opts,
            &measured,
            stale.as_deref(),
        ));
    }
    bench::emit_report(&report, opts.out.as_deref())
}
