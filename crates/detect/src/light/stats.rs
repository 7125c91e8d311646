//! Counters the light thread bumps and `/metrics` reads: plain atomics, so
//! the real-time thread never takes a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use selfheal_metrics::{AtomicHistogram, SAMPLE_BUCKETS};

/// Light-detector counters.
#[derive(Debug)]
pub struct LightStats {
    /// Samples taken.
    pub samples: AtomicU64,
    /// Samples that failed to read /proc.
    pub sample_errors: AtomicU64,
    /// Alerts raised, per rule index.
    pub alerts: Vec<AtomicU64>,
    /// Alerts dropped because the queue to the heavy detector was full.
    pub alerts_dropped: AtomicU64,
    /// Duration of the last sample + evaluation, nanoseconds.
    pub last_cycle_ns: AtomicU64,
    /// Longest sample + evaluation so far, nanoseconds.
    pub max_cycle_ns: AtomicU64,
    /// Every cycle's sample + evaluation time (atomic buckets: the
    /// real-time thread neither allocates nor locks to record it).
    pub cycle_seconds: AtomicHistogram,
    /// Periods in which the thread woke later than one full period late.
    pub overruns: AtomicU64,
    /// Whether the thread runs under SCHED_FIFO.
    pub realtime: AtomicBool,
}

impl LightStats {
    /// Counters for `rules` rules.
    pub fn new(rules: usize) -> LightStats {
        LightStats {
            samples: AtomicU64::new(0),
            sample_errors: AtomicU64::new(0),
            alerts: (0..rules).map(|_| AtomicU64::new(0)).collect(),
            alerts_dropped: AtomicU64::new(0),
            last_cycle_ns: AtomicU64::new(0),
            max_cycle_ns: AtomicU64::new(0),
            cycle_seconds: AtomicHistogram::new(SAMPLE_BUCKETS),
            overruns: AtomicU64::new(0),
            realtime: AtomicBool::new(false),
        }
    }

    /// Records one cycle's duration.
    pub fn record_cycle(&self, ns: u64) {
        self.last_cycle_ns.store(ns, Ordering::Relaxed);
        self.max_cycle_ns.fetch_max(ns, Ordering::Relaxed);
        self.cycle_seconds.observe(Duration::from_nanos(ns));
    }

    /// Total alerts across rules.
    pub fn alerts_total(&self) -> u64 {
        self.alerts.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }
}
