//! `selfheal_vm_*` metrics: one [`VmMetrics`] per VM (it outlives QEMU
//! restarts, so counters never go back), read by [`VmCollector`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use selfheal_metrics::{
    AtomicHistogram, Collector, Encoder, MetricType, PAUSE_BUCKETS, RECOVERY_BUCKETS,
};

/// Triggers, in label order.
pub const TRIGGERS: [&str; 3] = ["panic", "hang", "guest_diagnosis"];

/// Lock-free counters of one VM.
#[derive(Debug)]
pub struct VmMetrics {
    /// QEMU is running.
    pub up: AtomicU64,
    /// Checkpoints taken.
    pub checkpoints: AtomicU64,
    /// Checkpoints that failed.
    pub checkpoint_failures: AtomicU64,
    /// Checkpoint pauses (QEMU stopped).
    pub pause: AtomicHistogram,
    /// Bytes of page copies held now.
    pub memory_bytes: AtomicU64,
    /// Checkpoints held now.
    pub held: AtomicU64,
    /// Incidents by trigger ([`TRIGGERS`] order).
    pub incidents: [AtomicU64; 3],
    /// Rollbacks done.
    pub rollbacks: AtomicU64,
    /// Rollback durations (QEMU stopped).
    pub rollback: AtomicHistogram,
    /// Rollbacks the engine refused.
    pub rollbacks_impossible: AtomicU64,
    /// Incidents over: the guest ran on after its last rollback.
    pub recovered: AtomicU64,
    /// From detection to the guest's first heartbeat after the rollback.
    pub detect_to_serving: AtomicHistogram,
    /// QEMU started again.
    pub restarts: AtomicU64,
    /// Heartbeats received.
    pub heartbeats: AtomicU64,
    /// Events forwarded from the guest.
    pub guest_events: AtomicU64,
    /// Guest events not stored (over the rate limit, or repeated lines).
    pub guest_events_dropped: AtomicU64,
    /// Lines from the guest that were not messages.
    pub guest_bad_lines: AtomicU64,
    last_heartbeat: Mutex<Option<Instant>>,
}

impl Default for VmMetrics {
    fn default() -> Self {
        VmMetrics {
            up: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            checkpoint_failures: AtomicU64::new(0),
            pause: AtomicHistogram::new(PAUSE_BUCKETS),
            memory_bytes: AtomicU64::new(0),
            held: AtomicU64::new(0),
            incidents: Default::default(),
            rollbacks: AtomicU64::new(0),
            rollback: AtomicHistogram::new(RECOVERY_BUCKETS),
            rollbacks_impossible: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            detect_to_serving: AtomicHistogram::new(RECOVERY_BUCKETS),
            restarts: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            guest_events: AtomicU64::new(0),
            guest_events_dropped: AtomicU64::new(0),
            guest_bad_lines: AtomicU64::new(0),
            last_heartbeat: Mutex::new(None),
        }
    }
}

impl VmMetrics {
    /// Adds one to a counter.
    pub fn inc(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }

    /// A heartbeat arrived now.
    pub fn heartbeat(&self, now: Instant) {
        Self::inc(&self.heartbeats);
        *self
            .last_heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(now);
    }

    /// Seconds since the last heartbeat (NaN before the first).
    pub fn heartbeat_age(&self) -> f64 {
        self.last_heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(f64::NAN, |t| t.elapsed().as_secs_f64())
    }

    /// Counts an incident of `trigger` (a [`TRIGGERS`] name).
    pub fn incident(&self, trigger: &str) {
        if let Some(i) = TRIGGERS.iter().position(|t| *t == trigger) {
            Self::inc(&self.incidents[i]);
        }
    }
}

/// Every VM's metrics, for `/metrics`.
#[derive(Debug, Default)]
pub struct VmCollector {
    vms: Vec<(String, Arc<VmMetrics>)>,
}

impl VmCollector {
    /// A collector over these VMs.
    pub fn new(vms: Vec<(String, Arc<VmMetrics>)>) -> VmCollector {
        VmCollector { vms }
    }
}

impl Collector for VmCollector {
    fn collect(&self, enc: &mut Encoder<'_>) {
        use MetricType::{Counter, Gauge, Histogram};
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        // One series per VM in each family.
        let each = |enc: &mut Encoder<'_>, get: fn(&VmMetrics) -> f64| {
            for (vm, m) in &self.vms {
                enc.sample(&[("vm", vm)], get(m));
            }
        };
        enc.family("selfheal_vm_up", "QEMU is running (1) or not (0).", Gauge);
        each(enc, |m| m.up.load(Ordering::Relaxed) as f64);
        enc.family(
            "selfheal_vm_guest_heartbeat_age_seconds",
            "Time since the guest's last heartbeat over the guest link (NaN before the first).",
            Gauge,
        );
        each(enc, VmMetrics::heartbeat_age);
        enc.family(
            "selfheal_vm_checkpoints_total",
            "VM checkpoints taken.",
            Counter,
        );
        each(enc, |m| m.checkpoints.load(Ordering::Relaxed) as f64);
        enc.family(
            "selfheal_vm_checkpoint_failures_total",
            "VM checkpoints that failed.",
            Counter,
        );
        each(enc, |m| {
            m.checkpoint_failures.load(Ordering::Relaxed) as f64
        });
        enc.family(
            "selfheal_vm_checkpoint_memory_bytes",
            "Bytes of guest page copies held for the VM's checkpoints.",
            Gauge,
        );
        each(enc, |m| m.memory_bytes.load(Ordering::Relaxed) as f64);
        enc.family(
            "selfheal_vm_checkpoints_held",
            "VM checkpoints held now.",
            Gauge,
        );
        each(enc, |m| m.held.load(Ordering::Relaxed) as f64);
        enc.family(
            "selfheal_vm_rollbacks_total",
            "Whole-VM rollbacks done.",
            Counter,
        );
        each(enc, |m| m.rollbacks.load(Ordering::Relaxed) as f64);
        enc.family(
            "selfheal_vm_rollbacks_impossible_total",
            "VM rollbacks the checkpoint engine refused (then the guest restarts).",
            Counter,
        );
        each(enc, |m| {
            m.rollbacks_impossible.load(Ordering::Relaxed) as f64
        });
        enc.family(
            "selfheal_vm_recovered_total",
            "Incidents over: the guest ran on after its last rollback.",
            Counter,
        );
        each(enc, |m| m.recovered.load(Ordering::Relaxed) as f64);
        enc.family(
            "selfheal_vm_restarts_total",
            "Times QEMU was started again.",
            Counter,
        );
        each(enc, |m| m.restarts.load(Ordering::Relaxed) as f64);
        enc.family(
            "selfheal_vm_guest_heartbeats_total",
            "Heartbeats received from the guest.",
            Counter,
        );
        each(enc, |m| m.heartbeats.load(Ordering::Relaxed) as f64);
        enc.family(
            "selfheal_vm_guest_events_total",
            "Events forwarded from inside the guest and stored.",
            Counter,
        );
        each(enc, |m| m.guest_events.load(Ordering::Relaxed) as f64);
        enc.family(
            "selfheal_vm_guest_events_dropped_total",
            "Guest events not stored: over the rate limit, or lines repeated by a rollback.",
            Counter,
        );
        each(enc, |m| {
            m.guest_events_dropped.load(Ordering::Relaxed) as f64
        });
        enc.family(
            "selfheal_vm_guest_bad_lines_total",
            "Lines from the guest that were not messages (cut by a rollback, or garbage).",
            Counter,
        );
        each(enc, |m| m.guest_bad_lines.load(Ordering::Relaxed) as f64);
        enc.family(
            "selfheal_vm_incidents_total",
            "Guest panics, hangs and unrecovered guest diagnoses seen from the host.",
            Counter,
        );
        for (vm, m) in &self.vms {
            for (i, t) in TRIGGERS.iter().enumerate() {
                enc.sample(&[("vm", vm), ("trigger", t)], ld(&m.incidents[i]));
            }
        }
        let each_histogram = |enc: &mut Encoder<'_>, get: fn(&VmMetrics) -> &AtomicHistogram| {
            for (vm, m) in &self.vms {
                enc.histogram(&[("vm", vm)], &get(m).snapshot());
            }
        };
        enc.family(
            "selfheal_vm_checkpoint_pause_seconds",
            "Time QEMU was stopped for each VM checkpoint.",
            Histogram,
        );
        each_histogram(enc, |m| &m.pause);
        enc.family(
            "selfheal_vm_rollback_seconds",
            "Time QEMU was stopped for each whole-VM rollback.",
            Histogram,
        );
        each_histogram(enc, |m| &m.rollback);
        enc.family(
            "selfheal_vm_detect_to_serving_seconds",
            "From detecting a guest fault to the guest's first heartbeat after its last rollback.",
            Histogram,
        );
        each_histogram(enc, |m| &m.detect_to_serving);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_carry_the_vm_label() {
        let m = Arc::new(VmMetrics::default());
        m.incident("panic");
        VmMetrics::inc(&m.rollbacks);
        m.pause.observe(std::time::Duration::from_millis(3));
        let c = VmCollector::new(vec![("web".into(), m)]);
        let mut out = String::new();
        c.collect(&mut Encoder::new(&mut out));
        assert!(
            out.contains("selfheal_vm_rollbacks_total{vm=\"web\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("selfheal_vm_incidents_total{vm=\"web\",trigger=\"panic\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("selfheal_vm_checkpoint_pause_seconds_count{vm=\"web\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("selfheal_vm_guest_heartbeat_age_seconds{vm=\"web\"} NaN"),
            "{out}"
        );
    }
}
