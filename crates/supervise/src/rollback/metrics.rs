//! `selfheal_app_checkpoint*` / `selfheal_app_rollback*` series: the
//! engine's live atomics for the current run plus what earlier runs of the
//! app added up to, so counters never go back on a restart.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use selfheal_metrics::{Collector, Encoder, HistogramSnapshot, MetricType, PAUSE_BUCKETS};

use super::engine::Metrics;

/// What ended runs contributed.
#[derive(Debug, Clone)]
struct Past {
    checkpoints: u64,
    failures: u64,
    pause_ns: u64,
    max_pause_ns: u64,
    pages: u64,
    rollbacks: u64,
    impossible: u64,
    pauses: HistogramSnapshot,
    rollback_times: HistogramSnapshot,
}

impl Default for Past {
    fn default() -> Self {
        Past {
            checkpoints: 0,
            failures: 0,
            pause_ns: 0,
            max_pause_ns: 0,
            pages: 0,
            rollbacks: 0,
            impossible: 0,
            pauses: HistogramSnapshot::empty(PAUSE_BUCKETS),
            rollback_times: HistogramSnapshot::empty(PAUSE_BUCKETS),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    past: Past,
    current: Option<Arc<Metrics>>,
    /// Runs started without checkpoints because the engine could not start.
    unavailable: u64,
}

/// One app's checkpoint counters across its runs.
#[derive(Debug, Default)]
pub struct CheckpointTotals {
    inner: Mutex<Inner>,
}

/// A reading of [`CheckpointTotals`].
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointSnapshot {
    /// A run is being checkpointed now.
    pub active: bool,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Checkpoints that failed.
    pub failures: u64,
    /// Sum of pauses, seconds.
    pub pause_seconds_total: f64,
    /// Pause of the last checkpoint of the current run, seconds.
    pub last_pause_seconds: f64,
    /// Longest pause, seconds.
    pub max_pause_seconds: f64,
    /// Pages copied by all checkpoints.
    pub pages: u64,
    /// Pages copied by the last checkpoint of the current run.
    pub last_pages: u64,
    /// Bytes of page copies held now.
    pub memory_bytes: u64,
    /// Checkpoints held now.
    pub held: u64,
    /// Rollbacks done.
    pub rollbacks: u64,
    /// Rollbacks found impossible.
    pub impossible: u64,
    /// Duration of the last rollback of the current run, seconds.
    pub last_rollback_seconds: f64,
    /// Runs started without checkpoints (the engine could not start).
    pub unavailable: u64,
    /// Every stop for a checkpoint, all runs.
    pub pauses: HistogramSnapshot,
    /// Every rollback's duration, all runs.
    pub rollback_times: HistogramSnapshot,
}

impl Default for CheckpointSnapshot {
    fn default() -> Self {
        let p = Past::default();
        CheckpointSnapshot {
            active: false,
            checkpoints: 0,
            failures: 0,
            pause_seconds_total: 0.0,
            last_pause_seconds: 0.0,
            max_pause_seconds: 0.0,
            pages: 0,
            last_pages: 0,
            memory_bytes: 0,
            held: 0,
            rollbacks: 0,
            impossible: 0,
            last_rollback_seconds: 0.0,
            unavailable: 0,
            pauses: p.pauses,
            rollback_times: p.rollback_times,
        }
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl CheckpointTotals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A run under checkpoints started; `m` are its engine's metrics.
    pub(crate) fn run_started(&self, m: Arc<Metrics>) {
        let mut g = self.lock();
        if let Some(old) = g.current.take() {
            fold(&mut g.past, &old);
        }
        g.current = Some(m);
    }

    /// The run with metrics `m` ended: its counts become history.
    pub(crate) fn run_ended(&self, m: &Arc<Metrics>) {
        let mut g = self.lock();
        if g.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, m)) {
            g.current = None;
            fold(&mut g.past, m);
        }
    }

    /// A run started without checkpoints.
    pub(crate) fn unavailable(&self) {
        self.lock().unavailable += 1;
    }

    /// The totals now.
    pub fn snapshot(&self) -> CheckpointSnapshot {
        let g = self.lock();
        let p = g.past.clone();
        let mut s = CheckpointSnapshot {
            active: g.current.is_some(),
            checkpoints: p.checkpoints,
            failures: p.failures,
            pause_seconds_total: secs(p.pause_ns),
            max_pause_seconds: secs(p.max_pause_ns),
            pages: p.pages,
            rollbacks: p.rollbacks,
            impossible: p.impossible,
            unavailable: g.unavailable,
            pauses: p.pauses,
            rollback_times: p.rollback_times,
            ..CheckpointSnapshot::default()
        };
        if let Some(m) = &g.current {
            let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            s.checkpoints += r(&m.checkpoints);
            s.failures += r(&m.checkpoint_failures);
            s.pause_seconds_total += secs(r(&m.total_pause_ns));
            s.max_pause_seconds = s.max_pause_seconds.max(secs(r(&m.max_pause_ns)));
            s.last_pause_seconds = secs(r(&m.last_pause_ns));
            s.pages += r(&m.total_pages);
            s.last_pages = r(&m.last_pages);
            s.memory_bytes = r(&m.memory_held_bytes);
            s.held = r(&m.checkpoints_held);
            s.rollbacks += r(&m.rollbacks);
            s.impossible += r(&m.rollbacks_impossible);
            s.last_rollback_seconds = secs(r(&m.last_rollback_ns));
            s.pauses.add(&m.pause_seconds.snapshot());
            s.rollback_times.add(&m.rollback_seconds.snapshot());
        }
        s
    }
}

fn fold(p: &mut Past, m: &Metrics) {
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    p.checkpoints += r(&m.checkpoints);
    p.failures += r(&m.checkpoint_failures);
    p.pause_ns += r(&m.total_pause_ns);
    p.max_pause_ns = p.max_pause_ns.max(r(&m.max_pause_ns));
    p.pages += r(&m.total_pages);
    p.rollbacks += r(&m.rollbacks);
    p.impossible += r(&m.rollbacks_impossible);
    p.pauses.add(&m.pause_seconds.snapshot());
    p.rollback_times.add(&m.rollback_seconds.snapshot());
}

/// The checkpoint series of every app that has checkpoints on.
#[derive(Debug, Default)]
pub struct CheckpointMetrics {
    apps: Vec<(String, Arc<CheckpointTotals>)>,
}

impl CheckpointMetrics {
    /// Series for these apps.
    pub fn new(apps: Vec<(String, Arc<CheckpointTotals>)>) -> CheckpointMetrics {
        CheckpointMetrics { apps }
    }
}

impl Collector for CheckpointMetrics {
    fn collect(&self, enc: &mut Encoder<'_>) {
        if self.apps.is_empty() {
            return;
        }
        let snaps: Vec<(&str, CheckpointSnapshot)> = self
            .apps
            .iter()
            .map(|(n, t)| (n.as_str(), t.snapshot()))
            .collect();
        // One series per app in each family.
        let each = |enc: &mut Encoder<'_>, get: fn(&CheckpointSnapshot) -> f64| {
            for (app, s) in &snaps {
                enc.sample(&[("app", app)], get(s));
            }
        };
        enc.family(
            "selfheal_app_checkpoint_active",
            "1 while the app runs under checkpoints (0: not running, or running without them).",
            MetricType::Gauge,
        );
        each(enc, |s| f64::from(u8::from(s.active)));
        enc.family(
            "selfheal_app_checkpoints_total",
            "Checkpoints taken.",
            MetricType::Counter,
        );
        each(enc, |s| s.checkpoints as f64);
        enc.family(
            "selfheal_app_checkpoint_failures_total",
            "Checkpoints that failed (the program kept running).",
            MetricType::Counter,
        );
        each(enc, |s| s.failures as f64);
        enc.family(
            "selfheal_app_checkpoint_last_pause_seconds",
            "Pause of the last checkpoint.",
            MetricType::Gauge,
        );
        each(enc, |s| s.last_pause_seconds);
        enc.family(
            "selfheal_app_checkpoint_max_pause_seconds",
            "Longest checkpoint pause since supervision started.",
            MetricType::Gauge,
        );
        each(enc, |s| s.max_pause_seconds);
        enc.family(
            "selfheal_app_checkpoint_pages_total",
            "Pages copied by checkpoints.",
            MetricType::Counter,
        );
        each(enc, |s| s.pages as f64);
        enc.family(
            "selfheal_app_checkpoint_last_pages",
            "Pages copied by the last checkpoint.",
            MetricType::Gauge,
        );
        each(enc, |s| s.last_pages as f64);
        enc.family(
            "selfheal_app_checkpoint_memory_bytes",
            "Memory held by checkpoints now (one copy plus per-checkpoint undo pages).",
            MetricType::Gauge,
        );
        each(enc, |s| s.memory_bytes as f64);
        enc.family(
            "selfheal_app_checkpoints_held",
            "Checkpoints kept now.",
            MetricType::Gauge,
        );
        each(enc, |s| s.held as f64);
        enc.family(
            "selfheal_app_rollbacks_total",
            "Rollbacks done (crashes and hangs recovered in place).",
            MetricType::Counter,
        );
        each(enc, |s| s.rollbacks as f64);
        enc.family(
            "selfheal_app_rollbacks_impossible_total",
            "Rollbacks that could not be done (the program was restarted).",
            MetricType::Counter,
        );
        each(enc, |s| s.impossible as f64);
        enc.family(
            "selfheal_app_last_rollback_seconds",
            "Time the program was stopped for its last rollback.",
            MetricType::Gauge,
        );
        each(enc, |s| s.last_rollback_seconds);
        enc.family(
            "selfheal_app_checkpoint_unavailable_total",
            "Runs started without checkpoints because the engine could not start.",
            MetricType::Counter,
        );
        each(enc, |s| s.unavailable as f64);
        // Distributions; their _sum is the total time stopped.
        let each_histogram =
            |enc: &mut Encoder<'_>, get: fn(&CheckpointSnapshot) -> &HistogramSnapshot| {
                for (app, s) in &snaps {
                    enc.histogram(&[("app", app)], get(s));
                }
            };
        enc.family(
            "selfheal_app_checkpoint_pause_seconds",
            "Each stop of the program for a checkpoint (a registration stop before a \
             pre-copy is a stop of its own).",
            MetricType::Histogram,
        );
        each_histogram(enc, |s| &s.pauses);
        enc.family(
            "selfheal_app_rollback_duration_seconds",
            "Time the program was stopped for each rollback.",
            MetricType::Histogram,
        );
        each_histogram(enc, |s| &s.rollback_times);
    }
}

/// Several collectors served as one.
pub(crate) struct Collectors(pub Vec<Arc<dyn Collector>>);

impl Collector for Collectors {
    fn collect(&self, enc: &mut Encoder<'_>) {
        for c in &self.0 {
            c.collect(enc);
        }
    }
}
