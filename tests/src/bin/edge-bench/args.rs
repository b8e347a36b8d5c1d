//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use harness::bench::{number, BenchOptions};

/// wrk's load shape, fixed so runs on different days compare.
pub const WRK_THREADS: u32 = 2;

pub const USAGE: &str = "\
edge-bench: the edge filter's cost: Envoy with it, without a filter, with an empty wasm filter,
and with a Lua equivalent

Usage: edge-bench [options]   (normally via: make bench / bash scripts/bench.sh)

Options:
  --rounds N                 rotating rounds, each on fresh Envoys; medians
                             are over these                               [7]
  --duration SECS            length of every measured run                 [6]
  --warmup SECS              unrecorded warm-up per variant, load, round  [2]
  --connections N            wrk connections (-c)                         [64]
  --ws-connections N         concurrent WebSockets in the echo test       [64]
  --handshake-concurrency N  concurrent connect+close loops               [16]
  --held-connections N       WebSockets held at once for memory per
                             connection (a fresh Envoy per variant/round) [2000]
  --envoy-concurrency N      Envoy worker threads                         [1]
  --loads LIST               comma-separated subset of app,sticky,echo,handshakes,held
                             to run (the others report NaN)               [all]
  --out PATH                 also write the Markdown report here
  -h, --help                 this text

Needs wrk on PATH, Envoy ($ENVOY or .venv/bin/envoy), the filter ($EDGE_FILTER_WASM or
target/wasm/edge_filter.wasm), the empty filter ($EMPTY_FILTER_WASM or empty_filter.wasm
beside it) and, for the sticky load, the read floor ($READ_FLOOR_WASM or read_floor.wasm
beside it: the empty filter plus the read of the Cookie header); `make wasm` builds all
three. Each load also runs on the four Envoys side by side, pinned to one CPU with taskset
(util-linux): needs 2 CPUs or more; the targets are judged on those runs' CPU per operation.
The sticky load then runs on the empty filter, the read floor (a fifth Envoy) and the edge
filter side by side, which takes the filter's own work apart. Any build that lets a foreign
Origin through can stand in the empty slot or the read floor's, e.g. a partial build of the
filter to measure what a part of its work costs. Progress goes to stderr, the report to
stdout.";

#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    pub ws_connections: usize,
    pub handshake_concurrency: usize,
    pub held_connections: usize,
    pub envoy_concurrency: u32,
    pub loads: Loads,
    pub out: Option<PathBuf>,
}

/// Which loads run (`--loads`); a quicker loop while tuning one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loads {
    pub app: bool,
    pub sticky: bool,
    pub echo: bool,
    pub handshakes: bool,
    pub held: bool,
}

impl Loads {
    const ALL: Loads = Loads {
        app: true,
        sticky: true,
        echo: true,
        handshakes: true,
        held: true,
    };

    fn parse(list: &str) -> Result<Loads> {
        let mut loads = Loads {
            app: false,
            sticky: false,
            echo: false,
            handshakes: false,
            held: false,
        };
        for name in list.split(',').map(str::trim) {
            match name {
                "app" => loads.app = true,
                "sticky" => loads.sticky = true,
                "echo" => loads.echo = true,
                "handshakes" => loads.handshakes = true,
                "held" => loads.held = true,
                _ => bail!("--loads: unknown load {name:?} (app, sticky, echo, handshakes, held)"),
            }
        }
        Ok(loads)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 7,
            duration: Duration::from_secs(6),
            warmup: Duration::from_secs(2),
            connections: 64,
            ws_connections: 64,
            handshake_concurrency: 16,
            held_connections: 2000,
            // See `envoy_concurrency_note`.
            envoy_concurrency: 1,
            loads: Loads::ALL,
            out: None,
        }
    }
}

impl BenchOptions for Options {
    fn flag(&mut self, flag: &str, value: &mut dyn FnMut() -> Result<String>) -> Result<bool> {
        match flag {
            "--rounds" => self.rounds = number(flag, &value()?)?,
            "--duration" => self.duration = Duration::from_secs(number(flag, &value()?)?),
            "--warmup" => self.warmup = Duration::from_secs(number(flag, &value()?)?),
            "--connections" => self.connections = number(flag, &value()?)?,
            "--ws-connections" => self.ws_connections = number(flag, &value()?)?,
            "--handshake-concurrency" => self.handshake_concurrency = number(flag, &value()?)?,
            "--held-connections" => self.held_connections = number(flag, &value()?)?,
            "--envoy-concurrency" => self.envoy_concurrency = number(flag, &value()?)?,
            "--loads" => self.loads = Loads::parse(&value()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn out_mut(&mut self) -> &mut Option<PathBuf> {
        &mut self.out
    }

    fn check(&self) -> Result<()> {
        ensure!(self.rounds >= 1, "--rounds must be at least 1");
        ensure!(!self.duration.is_zero(), "--duration must be at least 1");
        ensure!(
            self.connections >= WRK_THREADS as usize,
            "--connections must be at least {WRK_THREADS} (one per wrk thread)"
        );
        ensure!(
            self.ws_connections >= 1,
            "--ws-connections must be at least 1"
        );
        ensure!(
            self.handshake_concurrency >= 1,
            "--handshake-concurrency must be at least 1"
        );
        ensure!(
            self.held_connections >= 1,
            "--held-connections must be at least 1"
        );
        ensure!(
            self.envoy_concurrency >= 1,
            "--envoy-concurrency must be at least 1"
        );
        Ok(())
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use harness::bench::parse_line;

    #[test]
    fn parses_options() {
        let o = parse_line::<Options>("--rounds 5 --duration=3 --out x.md")
            .unwrap()
            .unwrap();
        assert_eq!(o.rounds, 5);
        assert_eq!(o.duration, Duration::from_secs(3));
        assert_eq!(o.out, Some(PathBuf::from("x.md")));
        assert!(parse_line::<Options>("--help").unwrap().is_none());
        assert!(parse_line::<Options>("--rounds").is_err());
        assert!(parse_line::<Options>("--rounds 0").is_err());
        assert!(parse_line::<Options>("--bogus 1").is_err());
        let o = parse_line::<Options>("--loads sticky,echo")
            .unwrap()
            .unwrap();
        assert!(o.loads.sticky && o.loads.echo && !o.loads.app && !o.loads.handshakes);
        assert!(!o.loads.held);
        let o = parse_line::<Options>("--loads held --held-connections 500")
            .unwrap()
            .unwrap();
        assert!(o.loads.held && o.held_connections == 500);
        assert!(parse_line::<Options>("--loads sticky,bogus").is_err());
    }
}
