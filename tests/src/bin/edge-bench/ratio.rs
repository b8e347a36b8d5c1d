//! A ratio over the rounds (median and range): a leaf, shared by the metrics, the side-by-side
//! report and the own-work breakdown.

use harness::bench::{median, range};

/// A ratio between two variants over all rounds: the median of the per-round ratios and their
/// range. Targets are judged on it: the runs of a round are back to back, so something else
/// slowing the machine for a while hits all of them and mostly cancels in their ratio, while a
/// ratio of medians can pair a disturbed round of one variant with a quiet round of another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// The median and range of per-round ratios.
pub fn paired(ratios: Vec<f64>) -> Ratio {
    let (min, max) = range(&ratios);
    Ratio {
        median: median(ratios),
        min,
        max,
    }
}
