//! The command line.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use harness::bench::{self, BenchOptions};

pub const USAGE: &str = "\
acme-bench: the renewer vs lego and certbot on one Pebble; renewer serve's cold start and sizes

Usage: acme-bench [options]   (normally via: make bench)

Options:
  --reps N          repetitions of every ACME case; times are medians (use at least 5) [5]
  --certs N         certificates in the \"many\" case                                   [50]
  --cold-starts N   renewer serve starts measured                                     [20]
  --only WHAT       only `acme` (the clients) or `cold-start` (cold start and sizes)
  --out PATH        also write the Markdown report here
  -h, --help        this text

Needs target/release/renewer (cargo build --release --locked -p renewer), Pebble (Debian
`pebble`), GNU time (Debian `time`), lego ($LEGO, default /usr/bin/lego; Debian `lego`) and
certbot ($CERTBOT, default .venv/bin/certbot; PyPI `certbot`). Progress goes to stderr, the
report to stdout.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    All,
    Acme,
    ColdStart,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub reps: usize,
    pub certs: usize,
    pub cold_starts: usize,
    pub only: Only,
    pub out: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reps: 5,
            certs: 50,
            cold_starts: 20,
            only: Only::All,
            out: None,
        }
    }
}

impl BenchOptions for Options {
    fn flag(&mut self, flag: &str, value: &mut dyn FnMut() -> Result<String>) -> Result<bool> {
        match flag {
            "--reps" => self.reps = bench::number(flag, &value()?)?,
            "--certs" => self.certs = bench::number(flag, &value()?)?,
            "--cold-starts" => self.cold_starts = bench::number(flag, &value()?)?,
            "--only" => {
                self.only = bench::one_of(
                    flag,
                    &value()?,
                    &[("acme", Only::Acme), ("cold-start", Only::ColdStart)],
                )?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn out_mut(&mut self) -> &mut Option<PathBuf> {
        &mut self.out
    }

    fn check(&self) -> Result<()> {
        ensure!(self.reps >= 1, "--reps must be at least 1");
        ensure!((2..=999).contains(&self.certs), "--certs must be 2 to 999");
        ensure!(self.cold_starts >= 1, "--cold-starts must be at least 1");
        Ok(())
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use harness::bench::parse_line;

    #[test]
    fn options() {
        let o = parse_line::<Options>("").unwrap().unwrap();
        assert_eq!((o.reps, o.certs, o.cold_starts), (5, 50, 20));
        assert_eq!(o.only, Only::All);
        let o = parse_line::<Options>(
            "--reps 1 --certs=5 --cold-starts 3 --only cold-start --out x.md",
        )
        .unwrap()
        .unwrap();
        assert_eq!((o.reps, o.certs, o.cold_starts), (1, 5, 3));
        assert_eq!(o.only, Only::ColdStart);
        assert_eq!(o.out, Some(PathBuf::from("x.md")));
        assert!(parse_line::<Options>("--help").unwrap().is_none());
        for bad in [
            "--reps 0",
            "--certs 1",
            "--only lego",
            "--reps",
            "--what 1",
            "--reps x",
        ] {
            assert!(parse_line::<Options>(bad).is_err(), "{bad}");
        }
    }
}
