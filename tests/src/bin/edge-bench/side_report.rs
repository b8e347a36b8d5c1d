//! The side-by-side part of the report: the sticky load on the empty filter and the edge
//! filter at the same time, on one CPU ([`crate::measure::SIDE_BY_SIDE`]). The filter's
//! own-work target is judged on it.

use std::fmt::Write as _;
use std::time::Duration;

use harness::bench::median;

use crate::measure::{side_busy, Round, SIDE_BY_SIDE};
use crate::metrics::{fmt_ratio, paired, Ratio};
use crate::nodes::Variant;

/// `num` / `den` (two of [`SIDE_BY_SIDE`]) in sticky requests per Envoy CPU-second, side by
/// side: per round, `den`'s Envoy CPU per request over `num`'s, both measured over the same
/// seconds on the same CPU. (Requests per CPU-second is the requests/s one Envoy worker
/// sustains with a core to itself.)
pub fn side_by_side_ratio(rounds: &[Round], num: Variant, den: Variant) -> Ratio {
    paired(
        rounds
            .iter()
            .map(|r| r.get(den).cpu.sticky_side / r.get(num).cpu.sticky_side)
            .collect(),
    )
}

/// Median Envoy CPU µs per sticky request of `v` side by side.
pub fn side_by_side_cpu(rounds: &[Round], v: Variant) -> f64 {
    median(rounds.iter().map(|r| r.get(v).cpu.sticky_side).collect())
}

/// The per-round table and its medians.
pub fn side_by_side_section(w: &mut String, rounds: &[Round], duration: Duration) {
    let [a, b] = SIDE_BY_SIDE;
    let (la, lb) = (a.label(), b.label());
    let _ = writeln!(
        w,
        "\n### Sticky route side by side: the edge filter's own work\n\n\
         Each round also runs the sticky load on the {la} and the {lb} Envoys at the same \
         time, one wrk each (the command above against both ports), with both Envoys pinned \
         to the last CPU and wrk and the backends to the others (`taskset`). Back to back, \
         two runs see this shared VM at two moments, and identical work takes ±30 % more or \
         less CPU time from one second to the next; side by side, the two Envoys take turns \
         on one CPU in the same seconds, both saturated (\"busy\": CPU seconds both used per \
         second), so each one's CPU per request is its cost and what slows the machine slows \
         both. Requests per Envoy CPU-second (10⁶ / µs per request) is the requests/s one \
         Envoy worker sustains on a core of its own.\n"
    );
    let _ = writeln!(
        w,
        "| round | {la} req/s | {lb} req/s | {la} CPU µs/req | {lb} CPU µs/req | busy | \
         {lb} / {la}, requests per CPU-second |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|");
    for (i, r) in rounds.iter().enumerate() {
        let (sa, sb) = (r.get(a), r.get(b));
        let _ = writeln!(
            w,
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} % | {:.3} |",
            i + 1,
            sa.sticky_side.requests_per_s,
            sb.sticky_side.requests_per_s,
            sa.cpu.sticky_side,
            sb.cpu.sticky_side,
            side_busy(r, duration) * 100.0,
            sa.cpu.sticky_side / sb.cpu.sticky_side
        );
    }
    let med = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let _ = writeln!(
        w,
        "| median | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} % | {} |",
        med(&|r| r.get(a).sticky_side.requests_per_s),
        med(&|r| r.get(b).sticky_side.requests_per_s),
        side_by_side_cpu(rounds, a),
        side_by_side_cpu(rounds, b),
        med(&|r| side_busy(r, duration)) * 100.0,
        fmt_ratio(side_by_side_ratio(rounds, b, a))
    );
    let _ = writeln!(
        w,
        "\nThe own-work target is judged on this ratio; the back-to-back ratio of the same load \
         (above) is shown next to it."
    );
}
