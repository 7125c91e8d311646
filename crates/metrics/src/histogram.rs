//! A histogram a real-time thread can feed: fixed bucket bounds, atomic
//! counters, no allocation and no lock after construction. It is read at
//! scrape time into a [`HistogramSnapshot`] and encoded with the rest.
//! (prometheus-client's own `Histogram` takes a lock per observation.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Light-detector cycle and sample times: 10 µs to 10 ms.
pub const SAMPLE_BUCKETS: &[f64] = &[1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2];
/// Detection latency: 50 ms to 30 s (the stall bound is 200 ms, the D-state
/// bound 2 s, memory trends several seconds).
pub const DETECTION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 1.0, 2.0, 2.5, 3.0, 5.0, 10.0, 30.0,
];
/// Heavy-detector runs (two snapshots 100 ms apart and the diagnosis).
pub const DIAGNOSIS_BUCKETS: &[f64] = &[0.1, 0.125, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0];
/// One recovery step, acting and verifying: 1 ms to 30 s.
pub const RECOVERY_BUCKETS: &[f64] =
    &[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Checkpoint pauses and rollbacks: 100 µs to 250 ms.
pub const PAUSE_BUCKETS: &[f64] = &[
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25,
];
/// Crash noticed to program running again (backoff included): 1 ms to 60 s.
pub const RESTART_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Observations in fixed buckets, updated with relaxed atomics.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram with these upper bounds in seconds (ascending, finite).
    pub fn new(bounds: &'static [f64]) -> AtomicHistogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must ascend");
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration. Allocation- and lock-free.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Records a duration given in seconds (negative values count as 0).
    pub fn observe_secs(&self, secs: f64) {
        self.observe(Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX));
    }

    /// The current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(self.bounds.len() + 1);
        let mut total = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            total += n;
            let le = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((le, n));
        }
        HistogramSnapshot {
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: total,
            buckets,
        }
    }
}

/// A histogram's state at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of the observations, seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
    /// (upper bound, observations in this bucket alone), the last bound
    /// `+Inf`; the exposition makes them cumulative.
    pub buckets: Vec<(f64, u64)>,
}

impl HistogramSnapshot {
    /// No observations in buckets with these bounds.
    pub fn empty(bounds: &[f64]) -> HistogramSnapshot {
        HistogramSnapshot {
            sum: 0.0,
            count: 0,
            buckets: bounds
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .map(|b| (b, 0))
                .collect(),
        }
    }

    /// Adds `other`'s observations (a histogram with the same bounds; one
    /// with other bounds is ignored and returns false).
    pub fn add(&mut self, other: &HistogramSnapshot) -> bool {
        let same = self.buckets.len() == other.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&other.buckets)
                .all(|(a, b)| a.0 == b.0);
        if same {
            self.sum += other.sum;
            self.count += other.count;
            for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                a.1 += b.1;
            }
        }
        same
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = AtomicHistogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1)); // on the bound: counted in it
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(3));
        h.observe_secs(-1.0);
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets, vec![(0.001, 3), (0.01, 1), (f64::INFINITY, 1)]);
        assert!((s.sum - 3.0065).abs() < 1e-9, "{}", s.sum);

        let mut total = HistogramSnapshot::empty(&[0.001, 0.01]);
        assert!(total.add(&s) && total.add(&s));
        assert_eq!(total.count, 10);
        assert_eq!(total.buckets[0], (0.001, 6));
        assert!(
            !total.add(&HistogramSnapshot::empty(&[1.0])),
            "other bounds"
        );
    }
}
