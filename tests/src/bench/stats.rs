//! Statistics over repetitions, and the order in which compared things take turns.

/// Median; NaN for no values. An even count gives the mean of the middle two.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// p-th percentile by nearest rank (p in 0..=100); NaN for no values.
pub fn percentile(mut xs: Vec<f64>, p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * xs.len() as f64).ceil().max(1.0) as usize;
    xs[rank.min(xs.len()) - 1]
}

/// Smallest and largest value (NaN, NaN for none).
pub fn range(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// `items` in the order of round `i` (0-based): rotated left by one every round, so each runs
/// first, second, … equally often and slow drift of a shared machine does not always favour
/// the same one.
pub fn rotated<T: Copy, const N: usize>(items: [T; N], i: usize) -> [T; N] {
    let mut order = items;
    if N > 0 {
        order.rotate_left(i % N);
    }
    order
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        assert_eq!(range(&[2.0, 1.0, 3.0]), (1.0, 3.0));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let xs: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(xs.clone(), 90.0), 18.0);
        assert_eq!(percentile(xs.clone(), 100.0), 20.0);
        assert_eq!(percentile(xs, 0.0), 1.0);
        assert_eq!(percentile(vec![5.0], 90.0), 5.0);
        assert!(percentile(vec![], 50.0).is_nan());
    }

    #[test]
    fn rotation_by_one_per_round() {
        assert_eq!(rotated([1, 2, 3], 0), [1, 2, 3]);
        assert_eq!(rotated([1, 2, 3], 1), [2, 3, 1]);
        assert_eq!(rotated([1, 2, 3], 2), [3, 1, 2]);
        assert_eq!(rotated([1, 2, 3], 3), [1, 2, 3]);
    }
}
