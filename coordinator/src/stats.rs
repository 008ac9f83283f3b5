//! Pure statistics over samples: no measuring, no printing.

use serde::Serialize;

/// The four figures every timing is reported with, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub min_seconds: f64,
    pub median_seconds: f64,
    pub p90_seconds: f64,
    pub max_seconds: f64,
}

impl Summary {
    /// `None` for no samples. Samples need not be sorted.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            min_seconds: *sorted.first()?,
            median_seconds: quantile(&sorted, 0.5),
            p90_seconds: quantile(&sorted, 0.9),
            max_seconds: *sorted.last()?,
        })
    }
}

/// The `q`-quantile of sorted samples, interpolating linearly between the
/// two nearest ranks (R's and NumPy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let low = rank.floor() as usize;
            let high = (low + 1).min(n - 1);
            sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
        }
    }
}

/// The median of unsorted samples.
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    quantile(&sorted, 0.5)
}

/// The Karp-Flatt metric: the serial fraction that explains a measured
/// speedup on `workers` processors, e = (1/S - 1/p) / (1 - 1/p). `None` for
/// one worker, where it is undefined.
pub fn karp_flatt(speedup: f64, workers: usize) -> Option<f64> {
    let p = workers as f64;
    (workers > 1).then(|| (1.0 / speedup - 1.0 / p) / (1.0 - 1.0 / p))
}

/// Amdahl's law: the speedup on `workers` processors of a job whose serial
/// fraction is `serial`, 1 / (s + (1 - s) / p).
pub fn amdahl_speedup(serial: f64, workers: f64) -> f64 {
    1.0 / (serial + (1.0 - serial) / workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let s = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(quantile(&s, 0.5), 5.5);
        assert!((quantile(&s, 0.9) - 9.1).abs() < 1e-12);
        assert_eq!(quantile(&s, 0.0), 1.0);
        assert_eq!(quantile(&s, 1.0), 10.0);
        assert_eq!(quantile(&[3.0], 0.9), 3.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn karp_flatt_and_amdahl_agree() {
        assert_eq!(karp_flatt(1.0, 1), None);
        // Perfect speedup: no serial part.
        assert!(karp_flatt(4.0, 4).unwrap().abs() < 1e-12);
        // No speedup at all: all serial.
        assert!((karp_flatt(1.0, 4).unwrap() - 1.0).abs() < 1e-12);
        // Amdahl with the Karp-Flatt fraction gives the measured speedup back.
        let e = karp_flatt(1.9, 2).unwrap();
        assert!((amdahl_speedup(e, 2.0) - 1.9).abs() < 1e-12);
        assert!((e - (1.0 / 1.9 - 0.5) / 0.5).abs() < 1e-12);
        assert!((amdahl_speedup(0.1, 4.0) - 1.0 / (0.1 + 0.9 / 4.0)).abs() < 1e-12);
    }

    #[test]
    fn summary_sorts_first() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!(
            s,
            Summary {
                min_seconds: 1.0,
                median_seconds: 3.0,
                p90_seconds: 4.6,
                max_seconds: 5.0
            }
        );
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
