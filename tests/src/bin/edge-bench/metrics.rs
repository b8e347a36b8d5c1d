//! What the report compares: the metrics of a sample, and ratios between variants over the
//! rounds.

use harness::bench::median;

use crate::measure::{Round, Runs};
use crate::nodes::Variant;
pub use crate::ratio::{paired, Ratio};

/// One reported metric: how to get it from a variant's runs, and how to print it.
pub struct Metric {
    pub name: &'static str,
    pub get: fn(&Runs) -> f64,
    pub decimals: usize,
    /// Counted failures in the run that produced it, shown next to the raw numbers.
    pub errors: fn(&Runs) -> u64,
}

pub const APP_RPS: usize = 0;
pub const STICKY_RPS: usize = 3;
pub const ECHO: usize = 6;
pub const HANDSHAKES: usize = 7;

pub const METRICS: [Metric; 12] = [
    Metric {
        name: "app route `/` requests/s",
        get: |s| s.plain.requests_per_s,
        decimals: 0,
        errors: |s| s.plain.socket_errors,
    },
    Metric {
        name: "app route `/` latency p50 (ms)",
        get: |s| s.plain.p50_ms,
        decimals: 2,
        errors: |s| s.plain.socket_errors,
    },
    Metric {
        name: "app route `/` latency p99 (ms)",
        get: |s| s.plain.p99_ms,
        decimals: 2,
        errors: |s| s.plain.socket_errors,
    },
    Metric {
        name: "sticky route `/sticky` requests/s",
        get: |s| s.sticky.requests_per_s,
        decimals: 0,
        errors: |s| s.sticky.socket_errors,
    },
    Metric {
        name: "sticky route `/sticky` latency p50 (ms)",
        get: |s| s.sticky.p50_ms,
        decimals: 2,
        errors: |s| s.sticky.socket_errors,
    },
    Metric {
        name: "sticky route `/sticky` latency p99 (ms)",
        get: |s| s.sticky.p99_ms,
        decimals: 2,
        errors: |s| s.sticky.socket_errors,
    },
    Metric {
        name: "WebSocket echo messages/s",
        get: |s| s.echo.per_s,
        decimals: 0,
        errors: |s| s.echo.errors,
    },
    Metric {
        name: "WebSocket handshakes/s",
        get: |s| s.handshakes.per_s,
        decimals: 0,
        errors: |s| s.handshakes.errors,
    },
    Metric {
        name: "Envoy CPU µs per request, app route",
        get: |s| s.cpu.plain,
        decimals: 1,
        errors: |s| s.plain.socket_errors,
    },
    Metric {
        name: "Envoy CPU µs per request, sticky route",
        get: |s| s.cpu.sticky,
        decimals: 1,
        errors: |s| s.sticky.socket_errors,
    },
    Metric {
        name: "Envoy CPU µs per echoed message",
        get: |s| s.cpu.echo,
        decimals: 1,
        errors: |s| s.echo.errors,
    },
    Metric {
        name: "Envoy CPU µs per handshake",
        get: |s| s.cpu.handshake,
        decimals: 0,
        errors: |s| s.handshakes.errors,
    },
];

pub fn ratio(metric: &Metric, rounds: &[Round], num: Variant, den: Variant) -> Ratio {
    paired(
        rounds
            .iter()
            .map(|r| (metric.get)(&r.get(num).back) / (metric.get)(&r.get(den).back))
            .collect(),
    )
}

/// The ratio columns of the medians table, numerator first.
pub const RATIO_COLUMNS: [(Variant, Variant); 5] = [
    (Variant::Wasm, Variant::Baseline),
    (Variant::Wasm, Variant::Empty),
    (Variant::Wasm, Variant::Lua),
    (Variant::Empty, Variant::Baseline),
    (Variant::Lua, Variant::Baseline),
];

/// The header cells of [`RATIO_COLUMNS`]: `edge filter / no filter | …`.
pub fn ratio_header() -> String {
    RATIO_COLUMNS
        .map(|(num, den)| format!("{} / {}", num.label(), den.label()))
        .join(" | ")
}

/// The cells of [`RATIO_COLUMNS`], each `ratio(num, den)` formatted.
pub fn ratio_cells(ratio: impl Fn(Variant, Variant) -> Ratio) -> String {
    RATIO_COLUMNS
        .map(|(num, den)| fmt_ratio(ratio(num, den)))
        .join(" | ")
}

pub fn variant_median(metric: &Metric, rounds: &[Round], v: Variant) -> f64 {
    median(
        rounds
            .iter()
            .map(|r| (metric.get)(&r.get(v).back))
            .collect(),
    )
}

/// A ratio with its range, for the report: `0.950 (0.900–1.010)`.
pub fn fmt_ratio(r: Ratio) -> String {
    format!("{:.3} ({:.3}–{:.3})", r.median, r.min, r.max)
}

/// The order the variants ran in, for the report.
pub fn order_text(order: &[Variant]) -> String {
    order
        .iter()
        .map(|v| v.label())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::measure::{order, Sample};
    use crate::wrk::WrkResult;

    #[test]
    fn targets_use_paired_ratios() {
        let sample = |rps| Sample {
            back: Runs {
                plain: WrkResult {
                    requests_per_s: rps,
                    ..WrkResult::default()
                },
                ..Runs::default()
            },
            ..Sample::default()
        };
        let round = |none, wasm, lua| Round {
            order: order(0),
            samples: [sample(none), sample(none), sample(wasm), sample(lua)],
        };
        // The third round ran while the machine was busy: every variant slowed down.
        let rounds = [
            round(100.0, 90.0, 80.0),
            round(100.0, 92.0, 80.0),
            round(45.0, 40.0, 20.0),
        ];
        let m = &METRICS[APP_RPS];
        assert_eq!(variant_median(m, &rounds, Variant::Wasm), 90.0);
        let r = ratio(m, &rounds, Variant::Wasm, Variant::Baseline);
        assert_eq!(r.median, 0.9);
        assert_eq!((r.min, r.max), (40.0 / 45.0, 0.92));
        assert_eq!(ratio(m, &rounds, Variant::Wasm, Variant::Lua).median, 1.15);
    }

    #[test]
    fn ratio_columns_are_named_after_the_variants() {
        assert_eq!(
            ratio_header(),
            "edge filter / no filter | edge filter / empty wasm | edge filter / Lua | \
             empty wasm / no filter | Lua / no filter"
        );
    }
}
