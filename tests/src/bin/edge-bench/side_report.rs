//! The side-by-side part of the report: each load on every variant's Envoy at the same time,
//! on one CPU ([`crate::measure::Envoys`]'s `side_by_side`). The throughput targets are judged
//! on it.

use std::fmt::Write as _;
use std::time::Duration;

use harness::bench::median;

use crate::args::Loads;
use crate::measure::{side_busy, Load, Round, LOADS};
use crate::metrics::{paired, ratio_cells, ratio_header, Ratio, RATIO_COLUMNS};
use crate::nodes::{Variant, N_VARIANTS, VARIANTS};

/// `num` / `den` in operations of `load` per Envoy CPU-second, side by side: per round,
/// `den`'s Envoy CPU per operation over `num`'s, both measured over the same seconds on the
/// same CPU. (Operations per CPU-second is the rate one Envoy worker sustains with a core to
/// itself.)
pub fn side_ratio(rounds: &[Round], load: Load, num: Variant, den: Variant) -> Ratio {
    paired(
        rounds
            .iter()
            .map(|r| side_cpu_of(r, load, den) / side_cpu_of(r, load, num))
            .collect(),
    )
}

fn side_cpu_of(r: &Round, load: Load, v: Variant) -> f64 {
    r.get(v).side.of(load).1
}

/// Median Envoy CPU µs per operation of `load` for `v`, side by side.
pub fn side_cpu(rounds: &[Round], load: Load, v: Variant) -> f64 {
    median(rounds.iter().map(|r| side_cpu_of(r, load, v)).collect())
}

/// Per load: the rounds' CPU per operation of each variant, the busy share, the medians; then
/// the ratios the targets are judged on.
pub fn side_by_side_section(w: &mut String, rounds: &[Round], loads: &Loads, duration: Duration) {
    let ran: Vec<Load> = LOADS.into_iter().filter(|l| l.ran(loads)).collect();
    if ran.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "\n### Side by side: every variant at once on one CPU\n\n\
         Each round also runs each load on the four Envoys at the same time (the commands \
         above, one per Envoy), with the Envoys pinned to the last CPU and the load \
         generators and the backends to the others (`taskset`). Back to back, two runs see \
         this shared VM at two moments, and identical work takes ±30 % more or less CPU \
         time from one second to the next; side by side, the Envoys take turns on one CPU in \
         the same seconds, so each one's CPU per operation is its cost and what slows the \
         machine slows them all. \"busy\" is the CPU seconds they used together per second: \
         near 100 % they were saturated; lower, the load generators ran short, which the \
         throughput shares show but the CPU per operation does not depend on. Operations \
         per Envoy CPU-second (10⁶ / µs per operation) is the rate one Envoy worker \
         sustains on a core of its own. The throughput targets are judged on these ratios."
    );
    let labels = VARIANTS.map(Variant::label);
    for &load in &ran {
        let _ = writeln!(
            w,
            "\n{}: Envoy CPU µs per {} (operations/s in the shared second)\n",
            load.label(),
            load.op()
        );
        let _ = writeln!(w, "| round | {} | busy |", labels.join(" | "));
        let _ = writeln!(w, "|---|{}---:|", "---:|".repeat(N_VARIANTS));
        for (i, r) in rounds.iter().enumerate() {
            let cells = VARIANTS.map(|v| {
                let runs = &r.get(v).side;
                format!("{:.1} ({:.0}/s)", runs.of(load).1, runs.per_s(load))
            });
            let _ = writeln!(
                w,
                "| {} | {} | {:.0} % |",
                i + 1,
                cells.join(" | "),
                side_busy(r, load, duration) * 100.0
            );
        }
        let medians = VARIANTS.map(|v| format!("{:.1}", side_cpu(rounds, load, v)));
        let busy = median(
            rounds
                .iter()
                .map(|r| side_busy(r, load, duration))
                .collect(),
        );
        let _ = writeln!(
            w,
            "| median | {} | {:.0} % |",
            medians.join(" | "),
            busy * 100.0
        );
    }
    let _ = writeln!(
        w,
        "\nRatios side by side, operations per Envoy CPU-second (median of the rounds, range \
         in brackets):\n"
    );
    let _ = writeln!(w, "| load | {} |", ratio_header());
    let _ = writeln!(w, "|---|{}", "---:|".repeat(RATIO_COLUMNS.len()));
    for &load in &ran {
        let _ = writeln!(
            w,
            "| {} | {} |",
            load.label(),
            ratio_cells(|num, den| side_ratio(rounds, load, num, den))
        );
    }
}
