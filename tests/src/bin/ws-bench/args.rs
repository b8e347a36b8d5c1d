//! The command line.

use std::path::PathBuf;

use anyhow::Result;
use harness::bench::{one_of, positive, BenchOptions};

use crate::policy::LbPolicy;

pub const USAGE: &str = "\
ws-bench: sticky routing (key spread, movement when a backend joins) and held WebSockets

Usage: ws-bench [options]   (normally via: make bench)

Options:
  --keys N                  keys per sticky pass (room=k00000...)               [10000]
  --trials N                sticky trials, each with four fresh backends          [5]
  --cluster-trials N        trials on the cluster as deployed (3 nodes behind the
                            load balancer; a 4th joins, one leaves); 0: none      [3]
  --compare LIST            other lb policies measured on the same backends, for
                            the record: auto (the other of RING_HASH and MAGLEV),
                            none, or a comma list of maglev[:TABLE_SIZE],
                            ring:MIN[:MAX]                                       [auto]
  --connections N           WebSockets held at once                               [10000]
  --connect-concurrency N   handshakes in flight while opening them               [100]
  --rounds N                held-connection rounds, each with a fresh Envoy        [5]
  --only sticky|held        run one part only
  --out PATH                also write the Markdown report here
  -h, --help                this text

Needs Envoy ($ENVOY or .venv/bin/envoy) and the filter ($EDGE_FILTER_WASM or
target/wasm/edge_filter.wasm). Progress goes to stderr, the report to stdout.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Sticky,
    Held,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The other of RING_HASH and MAGLEV, whichever the shipped config does not use.
    Auto,
    List(Vec<LbPolicy>),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub keys: usize,
    pub trials: usize,
    pub cluster_trials: usize,
    pub compare: Compare,
    pub connections: usize,
    pub connect_concurrency: usize,
    pub rounds: usize,
    pub only: Option<Part>,
    pub out: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keys: 10_000,
            trials: 5,
            cluster_trials: 3,
            compare: Compare::Auto,
            connections: 10_000,
            connect_concurrency: 100,
            rounds: 5,
            only: None,
            out: None,
        }
    }
}

impl Options {
    pub fn runs(&self, part: Part) -> bool {
        self.only.is_none_or(|p| p == part)
    }
}

impl BenchOptions for Options {
    fn flag(&mut self, flag: &str, value: &mut dyn FnMut() -> Result<String>) -> Result<bool> {
        match flag {
            "--keys" => self.keys = positive(flag, &value()?)?,
            "--trials" => self.trials = positive(flag, &value()?)?,
            "--cluster-trials" => {
                self.cluster_trials = value()?
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{flag} wants a number"))?
            }
            "--compare" => self.compare = parse_compare(&value()?)?,
            "--connections" => self.connections = positive(flag, &value()?)?,
            "--connect-concurrency" => self.connect_concurrency = positive(flag, &value()?)?,
            "--rounds" => self.rounds = positive(flag, &value()?)?,
            "--only" => {
                self.only = Some(one_of(
                    flag,
                    &value()?,
                    &[("sticky", Part::Sticky), ("held", Part::Held)],
                )?)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn out_mut(&mut self) -> &mut Option<PathBuf> {
        &mut self.out
    }
}

fn parse_compare(s: &str) -> Result<Compare> {
    match s {
        "auto" => Ok(Compare::Auto),
        "none" => Ok(Compare::List(Vec::new())),
        list => Ok(Compare::List(
            list.split(',')
                .map(LbPolicy::parse)
                .collect::<Result<Vec<_>>>()?,
        )),
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use harness::bench::parse_line;

    #[test]
    fn parses_options() {
        let o = parse_line::<Options>(
            "--keys 1000 --trials=1 --connections 500 --only held --compare maglev,ring:8192",
        )
        .unwrap()
        .unwrap();
        assert_eq!((o.keys, o.trials, o.connections), (1000, 1, 500));
        assert_eq!(o.only, Some(Part::Held));
        assert!(o.runs(Part::Held) && !o.runs(Part::Sticky));
        assert_eq!(
            o.compare,
            Compare::List(vec![
                LbPolicy::Maglev { table: None },
                LbPolicy::Ring {
                    min: 8192,
                    max: None
                }
            ])
        );
        assert!(parse_line::<Options>("--help").unwrap().is_none());
        assert!(parse_line::<Options>("--keys 0").is_err());
        assert!(parse_line::<Options>("--only both").is_err());
        assert!(parse_line::<Options>("--bogus").is_err());
        assert_eq!(parse_compare("none").unwrap(), Compare::List(vec![]));
        assert_eq!(parse_compare("auto").unwrap(), Compare::Auto);
    }
}
