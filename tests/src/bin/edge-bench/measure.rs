//! The measurement of one round on its fresh Envoys: an unrecorded warm-up, then every load
//! against every variant back to back, in an order that rotates every round, then side by
//! side.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use harness::bench::{self, CpuTime};

use crate::args::Options;
use crate::nodes::{PerVariant, Variant, APP_PATH, N_VARIANTS, STICKY_PATH, VARIANTS};
use crate::own_work::{read_split, FloorEnvoy, ReadSplit, SideEnvoy};
use crate::pinning::{with_cpu, SplitCpus};
use crate::wrk::{run_wrk, run_wrk_on, Plain, WrkResult};
use crate::ws_load::{handshake_load, ws_echo_load, RateResult};

/// One variant's runs of the loads, each with Envoy's CPU per operation.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    /// `GET /`: the app route, filter skipped.
    pub plain: WrkResult,
    /// `GET /sticky` with the affinity cookie: the filter runs.
    pub sticky: WrkResult,
    pub echo: RateResult,
    pub handshakes: RateResult,
    /// Envoy's CPU time per operation of each load, µs: see [`with_cpu`].
    pub cpu: CpuPerOp,
}

#[derive(Debug, Clone, Default)]
pub struct CpuPerOp {
    pub plain: f64,
    pub sticky: f64,
    pub echo: f64,
    pub handshake: f64,
}

/// One variant's numbers in one round: each load back to back (this variant alone) and side
/// by side (every variant at once, on one CPU: [`Envoys::side_by_side`]).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub back: Runs,
    pub side: Runs,
}

/// The four loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    App,
    Sticky,
    Echo,
    Handshakes,
}

pub const LOADS: [Load; 4] = [Load::App, Load::Sticky, Load::Echo, Load::Handshakes];

impl Load {
    pub fn label(self) -> &'static str {
        match self {
            Load::App => "app route",
            Load::Sticky => "sticky route",
            Load::Echo => "WebSocket echo",
            Load::Handshakes => "WebSocket handshakes",
        }
    }

    /// What one operation is, for "CPU µs per …".
    pub fn op(self) -> &'static str {
        match self {
            Load::App | Load::Sticky => "request",
            Load::Echo => "echoed message",
            Load::Handshakes => "handshake",
        }
    }

    /// Whether `--loads` asked for it.
    pub fn ran(self, loads: &crate::args::Loads) -> bool {
        match self {
            Load::App => loads.app,
            Load::Sticky => loads.sticky,
            Load::Echo => loads.echo,
            Load::Handshakes => loads.handshakes,
        }
    }
}

impl Runs {
    /// Operations done and Envoy CPU µs per operation of `load`.
    pub fn of(&self, load: Load) -> (u64, f64) {
        match load {
            Load::App => (self.plain.requests, self.cpu.plain),
            Load::Sticky => (self.sticky.requests, self.cpu.sticky),
            Load::Echo => (self.echo.done, self.cpu.echo),
            Load::Handshakes => (self.handshakes.done, self.cpu.handshake),
        }
    }

    /// Take `load`'s run and CPU per operation from `other` (the rest stays).
    fn take(&mut self, load: Load, other: Runs) {
        match load {
            Load::App => (self.plain, self.cpu.plain) = (other.plain, other.cpu.plain),
            Load::Sticky => (self.sticky, self.cpu.sticky) = (other.sticky, other.cpu.sticky),
            Load::Echo => (self.echo, self.cpu.echo) = (other.echo, other.cpu.echo),
            Load::Handshakes => {
                (self.handshakes, self.cpu.handshake) = (other.handshakes, other.cpu.handshake);
            }
        }
    }

    /// Operations per second of `load`.
    pub fn per_s(&self, load: Load) -> f64 {
        match load {
            Load::App => self.plain.requests_per_s,
            Load::Sticky => self.sticky.requests_per_s,
            Load::Echo => self.echo.per_s,
            Load::Handshakes => self.handshakes.per_s,
        }
    }
}

/// CPU seconds all the Envoys used per second of their side-by-side run of `load`: below
/// ~0.9 they were not saturated (the load generator or the backends ran short), and the
/// comparison would understate the differences.
pub fn side_busy(round: &Round, load: Load, duration: Duration) -> f64 {
    let cpu_s: f64 = round
        .samples
        .iter()
        .map(|s| {
            let (ops, us) = s.side.of(load);
            us * ops as f64 / 1e6
        })
        .sum();
    cpu_s / duration.as_secs_f64()
}

/// A round of the throughput loads.
pub type Round = PerVariant<Sample>;

/// Order of the variants in round `i`: rotated by one every round, so each runs in every
/// position equally often.
pub fn order(i: usize) -> Vec<Variant> {
    bench::rotated(VARIANTS, i).to_vec()
}

/// The Envoys under load (indexed by [`Variant::index`]): their TLS ports and CPU clocks.
pub struct Envoys<'a> {
    pub opts: &'a Options,
    pub ports: [u16; N_VARIANTS],
    pub cpus: [CpuTime; N_VARIANTS],
    pub pids: [u32; N_VARIANTS],
    pub tls: &'a Arc<rustls::ClientConfig>,
    /// The sticky load's `Cookie` header ([`crate::nodes::sticky_cookie`]).
    pub sticky_cookie: &'a str,
    /// The read floor's Envoy, when the sticky load runs ([`crate::own_work`]).
    pub read_floor: Option<FloorEnvoy>,
}

/// The app route's load: plain requests, no cookie (the filter is skipped there anyway).
pub const APP_LOAD: Plain<'static> = Plain {
    path: APP_PATH,
    header: None,
};

/// The sticky route's load: every request carries the affinity cookie `header`.
pub fn sticky_load(header: &str) -> Plain<'_> {
    Plain {
        path: STICKY_PATH,
        header: Some(header),
    }
}

impl Envoys<'_> {
    fn port(&self, v: Variant) -> u16 {
        self.ports[v.index()]
    }

    /// Warm-up: V8 compiles the module per worker and tiers up hot functions, LuaJIT traces;
    /// connections, TLS session state and allocator pools fill up. None of that is measured.
    pub async fn warm_up(&self) -> Result<()> {
        let opts = self.opts;
        if opts.warmup.is_zero() {
            return Ok(());
        }
        for v in VARIANTS {
            eprintln!("edge-bench: warm-up {}", v.label());
            let port = self.port(v);
            if opts.loads.app {
                run_wrk(opts, opts.warmup, port, APP_LOAD).await?;
            }
            if opts.loads.sticky {
                let load = sticky_load(self.sticky_cookie);
                run_wrk(opts, opts.warmup, port, load).await?;
                if let (Variant::Empty, Some(floor)) = (v, &self.read_floor) {
                    eprintln!("edge-bench: warm-up read floor");
                    run_wrk(opts, opts.warmup, floor.port, load).await?;
                }
            }
            if opts.loads.echo {
                let cpu = &self.cpus[v.index()];
                ws_echo_load(port, self.tls, opts.ws_connections, opts.warmup, cpu).await?;
            }
            if opts.loads.handshakes {
                handshake_load(port, self.tls, opts.handshake_concurrency, opts.warmup).await?;
            }
        }
        Ok(())
    }

    /// Round `i` of `--rounds` (the variants' order rotates with `i`), and with the sticky
    /// load its [`ReadSplit`]; it fails when no WebSocket traffic got through. Every round
    /// meets fresh Envoys (see `run` in main.rs).
    pub async fn round(&self, i: usize) -> Result<(Round, Option<ReadSplit>)> {
        let opts = self.opts;
        let mut round = Round {
            order: order(i),
            ..Round::default()
        };
        let tag = |v: Variant| format!("round {}/{} {:>11}", i + 1, opts.rounds, v.label());
        for v in order(i).into_iter().filter(|_| opts.loads.app) {
            let s = &mut round.samples[v.index()].back;
            (s.plain, s.cpu.plain) = self.wrk(v, APP_LOAD, "app route", &tag(v)).await?;
        }
        for v in order(i).into_iter().filter(|_| opts.loads.sticky) {
            let s = &mut round.samples[v.index()].back;
            (s.sticky, s.cpu.sticky) = self
                .wrk(v, sticky_load(self.sticky_cookie), "sticky route", &tag(v))
                .await?;
        }
        for v in order(i).into_iter().filter(|_| opts.loads.echo) {
            let (r, us) = self.echo(v).await?;
            eprintln!(
                "edge-bench: {}: ws echo {:.0} msg/s, Envoy {us:.1} µs CPU/echo",
                tag(v),
                r.per_s
            );
            let s = &mut round.samples[v.index()].back;
            (s.echo, s.cpu.echo) = (r, us);
        }
        for v in order(i).into_iter().filter(|_| opts.loads.handshakes) {
            let (r, us) = self.handshakes(v).await?;
            let per_s = r.per_s;
            eprintln!(
                "edge-bench: {}: handshakes {per_s:.0}/s, Envoy {us:.0} µs CPU/handshake",
                tag(v)
            );
            let s = &mut round.samples[v.index()].back;
            (s.handshakes, s.cpu.handshake) = (r, us);
        }
        let label = format!("round {}/{}", i + 1, opts.rounds);
        for load in LOADS.into_iter().filter(|l| l.ran(&opts.loads)) {
            self.side_by_side(&mut round, load, &label).await?;
        }
        let mut split = None;
        if let Some(floor) = self.read_floor.as_ref().filter(|_| opts.loads.sticky) {
            let side = |v: Variant| SideEnvoy {
                port: self.port(v),
                cpu: &self.cpus[v.index()],
                pid: self.pids[v.index()],
            };
            let three = [side(Variant::Empty), floor.side(), side(Variant::Wasm)];
            split = Some(read_split(opts, three, self.sticky_cookie, &label).await?);
        }
        for s in round.samples.iter().flat_map(|s| [&s.back, &s.side]) {
            ensure!(
                (s.echo.done > 0 || !opts.loads.echo)
                    && (s.handshakes.done > 0 || !opts.loads.handshakes),
                "no WebSocket traffic got through (last errors: {:?} / {:?})",
                s.echo.last_error,
                s.handshakes.last_error
            );
        }
        Ok((round, split))
    }

    /// `load` on every variant's Envoy at the same time, with the Envoys pinned to the last
    /// CPU and the load generators and the backends to the others.
    ///
    /// Back to back, two runs see this shared VM at two moments, and identical work takes
    /// ±30 % more or less CPU time from one second to the next, so a few percent between
    /// variants drown. Side by side on one CPU, the Envoys take turns in the same seconds:
    /// saturated (the CPU's busy share is checked), each one's CPU per operation is its cost,
    /// and what slows the machine slows them all.
    async fn side_by_side(&self, round: &mut Round, load: Load, tag: &str) -> Result<()> {
        let cpus = SplitCpus::new()?;
        let _pinned = cpus.pin(&self.pids)?;
        let d = self.opts.duration;
        let load_cpus = cpus.load.as_str();
        let results = futures_util::future::try_join_all(VARIANTS.map(|v| async move {
            let mut runs = Runs::default();
            match load {
                Load::App | Load::Sticky => {
                    let plain = if load == Load::App {
                        APP_LOAD
                    } else {
                        sticky_load(self.sticky_cookie)
                    };
                    let wrk = run_wrk_on(self.opts, d, self.port(v), plain, Some(load_cpus));
                    let (r, us) = with_cpu(&self.cpus[v.index()], wrk, |r| r.requests).await?;
                    if load == Load::App {
                        (runs.plain, runs.cpu.plain) = (r, us);
                    } else {
                        (runs.sticky, runs.cpu.sticky) = (r, us);
                    }
                }
                Load::Echo => (runs.echo, runs.cpu.echo) = self.echo(v).await?,
                Load::Handshakes => {
                    (runs.handshakes, runs.cpu.handshake) = self.handshakes(v).await?;
                }
            }
            Ok::<_, anyhow::Error>((v, runs))
        }))
        .await?;
        let mut line = Vec::new();
        for (v, runs) in results {
            let (_, us) = runs.of(load);
            line.push(format!(
                "{} {:.0}/s {us:.1} µs",
                v.label(),
                runs.per_s(load)
            ));
            round.samples[v.index()].side.take(load, runs);
        }
        eprintln!(
            "edge-bench: {tag}: {} side by side (Envoy CPU per {}): {}; busy {:.0} %",
            load.label(),
            load.op(),
            line.join(", "),
            side_busy(round, load, d) * 100.0
        );
        Ok(())
    }

    /// The echo load on `v`, with Envoy's CPU µs per echoed message.
    async fn echo(&self, v: Variant) -> Result<(RateResult, f64)> {
        let opts = self.opts;
        let cpu = &self.cpus[v.index()];
        ws_echo_load(
            self.port(v),
            self.tls,
            opts.ws_connections,
            opts.duration,
            cpu,
        )
        .await
    }

    /// The handshake load on `v`, with Envoy's CPU µs per handshake.
    async fn handshakes(&self, v: Variant) -> Result<(RateResult, f64)> {
        let opts = self.opts;
        let load = handshake_load(
            self.port(v),
            self.tls,
            opts.handshake_concurrency,
            opts.duration,
        );
        with_cpu(&self.cpus[v.index()], load, |r| r.done).await
    }

    /// One measured wrk run on `path` (`what` names the route in the progress line), with
    /// Envoy's CPU µs per request.
    async fn wrk(
        &self,
        v: Variant,
        load: Plain<'_>,
        what: &str,
        tag: &str,
    ) -> Result<(WrkResult, f64)> {
        let load = run_wrk(self.opts, self.opts.duration, self.port(v), load);
        let (r, us) = with_cpu(&self.cpus[v.index()], load, |r| r.requests).await?;
        eprintln!(
            "edge-bench: {tag}: {what} {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, Envoy {us:.1} µs CPU/req",
            r.requests_per_s,
            r.p50_ms,
            r.p99_ms
        );
        Ok((r, us))
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn rounds_rotate_the_order() {
        use Variant::*;
        assert_eq!(order(0), [Baseline, Empty, Wasm, Lua]);
        assert_eq!(order(1), [Empty, Wasm, Lua, Baseline]);
        assert_eq!(order(3), [Lua, Baseline, Empty, Wasm]);
        assert_eq!(order(4), order(0));
    }
}
