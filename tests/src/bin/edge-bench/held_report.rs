//! The held-connection rows of the filter-cost section: memory per held WebSocket per variant.

use std::fmt::Write as _;

use harness::bench;

use crate::held::HeldRound;
use crate::metrics::{order_text, paired, ratio_cells, Ratio};
use crate::nodes::{Variant, VARIANTS};

/// Which memory reading a held-connection ratio uses.
#[derive(Debug, Clone, Copy)]
pub enum HeldReading {
    Rss,
    Allocated,
}

fn held_value(r: &HeldRound, v: Variant, reading: HeldReading) -> f64 {
    let s = r.get(v);
    match reading {
        HeldReading::Rss => s.rss_per_connection(),
        HeldReading::Allocated => s.allocated_per_connection(),
    }
}

pub fn held_ratio(held: &[HeldRound], num: Variant, den: Variant, reading: HeldReading) -> Ratio {
    paired(
        held.iter()
            .map(|r| held_value(r, num, reading) / held_value(r, den, reading))
            .collect(),
    )
}

/// The two readings, as the report names them.
const READINGS: [(&str, HeldReading); 2] = [
    ("memory per held WebSocket, RSS (KiB)", HeldReading::Rss),
    (
        "memory per held WebSocket, allocated (KiB)",
        HeldReading::Allocated,
    ),
];

fn kib(bytes: f64) -> String {
    format!("{:.2}", bytes / 1024.0)
}

pub fn held_raw(w: &mut String, held: &[HeldRound]) {
    for (name, reading) in READINGS {
        for (i, r) in held.iter().enumerate() {
            let cells: Vec<String> = VARIANTS
                .iter()
                .map(|&v| {
                    let s = r.get(v);
                    let value = kib(held_value(r, v, reading));
                    match s.errors {
                        0 => format!("{value} ({} held)", s.held),
                        n => format!("{value} ({} held, {n} errors)", s.held),
                    }
                })
                .collect();
            let _ = writeln!(
                w,
                "| {name} | {} ({}) | {} |",
                i + 1,
                order_text(&r.order),
                cells.join(" | ")
            );
        }
    }
}

pub fn held_medians(w: &mut String, held: &[HeldRound]) {
    for (name, reading) in READINGS {
        let medians: Vec<String> = VARIANTS
            .iter()
            .map(|&v| {
                kib(bench::median(
                    held.iter().map(|r| held_value(r, v, reading)).collect(),
                ))
            })
            .collect();
        let _ = writeln!(
            w,
            "| {name} | {} | {} |",
            medians.join(" | "),
            ratio_cells(|num, den| held_ratio(held, num, den, reading))
        );
    }
}
