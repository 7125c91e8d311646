//! Counters of the hang pipeline and a Prometheus collector over them (and
//! over the stall detector's, the kmsg follower's and the watchdog chain's
//! own atomics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use selfheal_config::Action;
use selfheal_detect::stall::StallShared;
use selfheal_detect::watchdog::ChainHealth;
use selfheal_diagnose::class::TriggerKind;
use selfheal_event::{Event, EventKind, EventSink};
use selfheal_kmsg::{KmsgStats, VerdictKind};
use selfheal_metrics::{
    AtomicHistogram, Collector, Encoder, MetricType, DETECTION_BUCKETS, DIAGNOSIS_BUCKETS,
    RECOVERY_BUCKETS,
};
use selfheal_recover::{Outcome, Refusal};

use selfheal_event::Class;

/// Lock-free pipeline counters.
#[derive(Debug)]
pub struct PipelineStats {
    /// Diagnoses per class ([`Class::ALL`] order).
    pub diagnoses: Vec<AtomicU64>,
    /// Recovery steps per action × outcome.
    pub recoveries: Vec<AtomicU64>,
    /// Refused recovery steps per class × refusal reason.
    pub refusals: Vec<AtomicU64>,
    /// Heavy-detector runs per trigger kind ([`TriggerKind::ALL`] order).
    pub heavy_runs: Vec<AtomicU64>,
    /// Duration of the last heavy run (both snapshots and diagnosis), µs.
    pub heavy_last_us: AtomicU64,
    /// Longest heavy run, µs.
    pub heavy_max_us: AtomicU64,
    /// Duration of the last sweep, µs.
    pub sweep_last_us: AtomicU64,
    /// Threads read by the last sweep.
    pub sweep_threads: AtomicU64,
    /// Sweeps run.
    pub sweeps: AtomicU64,
    /// Inputs dropped because the pipeline queue was full.
    pub inputs_dropped: AtomicU64,
    /// CPU stalls not reported because the host's checkpoint stops and
    /// the vCPU's waits for a host CPU explain them (a guest under
    /// `selfheal vm`).
    pub stalls_excused: AtomicU64,
    /// Alerts received from the light detector.
    pub alerts: AtomicU64,
    /// 1 while the eBPF D-state tracer runs.
    pub dstate_tracer: AtomicU64,
    /// Tasks in D in the tracer's map at the last sweep.
    pub dstate_traced: AtomicU64,
    /// Detection latency per class ([`Class::ALL`] order): from the
    /// symptom's start (as far as the trigger knows it) to the diagnosis.
    pub detection_latency: Vec<AtomicHistogram>,
    /// Every heavy run (both snapshots and the diagnosis).
    pub heavy_run: AtomicHistogram,
    /// Recovery steps that acted (act + verify), per action ([`Action::ALL`]).
    pub recovery_step: Vec<AtomicHistogram>,
}

impl Default for PipelineStats {
    fn default() -> Self {
        let n = |k: usize| (0..k).map(|_| AtomicU64::new(0)).collect();
        PipelineStats {
            diagnoses: n(Class::ALL.len()),
            recoveries: n(Action::ALL.len() * Outcome::ALL.len()),
            refusals: n(Class::ALL.len() * Refusal::ALL.len()),
            heavy_runs: n(TriggerKind::ALL.len()),
            heavy_last_us: AtomicU64::new(0),
            heavy_max_us: AtomicU64::new(0),
            sweep_last_us: AtomicU64::new(0),
            sweep_threads: AtomicU64::new(0),
            sweeps: AtomicU64::new(0),
            inputs_dropped: AtomicU64::new(0),
            stalls_excused: AtomicU64::new(0),
            alerts: AtomicU64::new(0),
            dstate_tracer: AtomicU64::new(0),
            dstate_traced: AtomicU64::new(0),
            detection_latency: Class::ALL
                .iter()
                .map(|_| AtomicHistogram::new(DETECTION_BUCKETS))
                .collect(),
            heavy_run: AtomicHistogram::new(DIAGNOSIS_BUCKETS),
            recovery_step: Action::ALL
                .iter()
                .map(|_| AtomicHistogram::new(RECOVERY_BUCKETS))
                .collect(),
        }
    }
}

impl PipelineStats {
    /// Counts a recovery step by the names in its event, and times the
    /// steps that acted (not dry runs, refusals, rate limits or skips).
    fn count_recovery(&self, action: &str, outcome: &str, secs: Option<f64>) {
        let a = Action::ALL.iter().position(|x| x.as_str() == action);
        let o = Outcome::ALL.iter().position(|x| x.as_str() == outcome);
        if let (Some(a), Some(o)) = (a, o) {
            self.recoveries[a * Outcome::ALL.len() + o].fetch_add(1, Ordering::Relaxed);
            let acted = matches!(
                Outcome::ALL[o],
                Outcome::Recorded | Outcome::Recovered | Outcome::NotCleared | Outcome::Failed
            );
            if let (true, Some(secs)) = (acted, secs) {
                self.recovery_step[a].observe_secs(secs);
            }
        }
    }

    /// Counts a refused step by the names in its event.
    fn count_refusal(&self, class: &str, reason: &str) {
        let c = Class::ALL.iter().position(|x| x.as_str() == class);
        let r = Refusal::ALL.iter().position(|x| x.as_str() == reason);
        if let (Some(c), Some(r)) = (c, r) {
            self.refusals[c * Refusal::ALL.len() + r].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refused steps counted for `class` with `reason`.
    pub fn refusals_of(&self, class: Class, reason: Refusal) -> u64 {
        let c = class.index();
        let r = Refusal::ALL.iter().position(|x| *x == reason).unwrap_or(0);
        self.refusals[c * Refusal::ALL.len() + r].load(Ordering::Relaxed)
    }

    /// Counts a heavy run for a trigger kind.
    pub fn count_run(&self, kind: TriggerKind) {
        self.heavy_runs[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Recovery steps counted with `action` and `outcome`.
    pub fn recoveries_of(&self, action: Action, outcome: Outcome) -> u64 {
        let a = Action::ALL.iter().position(|x| *x == action).unwrap_or(0);
        let o = Outcome::ALL.iter().position(|x| *x == outcome).unwrap_or(0);
        self.recoveries[a * Outcome::ALL.len() + o].load(Ordering::Relaxed)
    }
}

/// A sink that counts diagnoses and recovery steps on their way to the real sink.
pub struct CountingSink {
    /// Where events go.
    pub inner: Arc<dyn EventSink>,
    /// The counters.
    pub stats: Arc<PipelineStats>,
}

impl EventSink for CountingSink {
    fn emit(&self, event: Event) -> bool {
        match event.kind {
            EventKind::Recovery => {
                let ms = |k: &str| event.details[k].as_f64();
                let secs = match (ms("act_ms"), ms("verify_ms")) {
                    (None, None) => None,
                    (a, v) => Some((a.unwrap_or(0.0) + v.unwrap_or(0.0)) / 1000.0),
                };
                self.stats.count_recovery(
                    event.details["action"].as_str().unwrap_or(""),
                    event.details["outcome"].as_str().unwrap_or(""),
                    secs,
                );
                if let Some(reason) = event.details["refusal"].as_str() {
                    self.stats
                        .count_refusal(event.details["class"].as_str().unwrap_or(""), reason);
                }
            }
            EventKind::Diagnosis | EventKind::Dismissed => {
                if let Some(c) = Class::ALL
                    .iter()
                    .find(|c| event.details["class"] == c.as_str())
                {
                    self.stats.diagnoses[c.index()].fetch_add(1, Ordering::Relaxed);
                    if let Some(ms) = event.details["detection_latency_ms"].as_f64() {
                        self.stats.detection_latency[c.index()].observe_secs(ms / 1000.0);
                    }
                }
            }
            _ => {}
        }
        self.inner.emit(event)
    }

    fn flush(&self, timeout: std::time::Duration) -> bool {
        self.inner.flush(timeout)
    }
}

/// The `/metrics` collector for everything the pipeline owns.
pub struct PipelineCollector {
    /// Pipeline counters.
    pub stats: Arc<PipelineStats>,
    /// Stall detector state, when it runs.
    pub stall: Option<Arc<StallShared>>,
    /// kmsg follower counters, when it runs.
    pub kmsg: Option<Arc<KmsgStats>>,
    /// Watchdog chain health, once started.
    pub chain: Arc<OnceLock<Arc<ChainHealth>>>,
}

impl Collector for PipelineCollector {
    fn collect(&self, enc: &mut Encoder<'_>) {
        let s = &self.stats;
        enc.family(
            "selfheal_diagnoses_total",
            "Heavy-detector conclusions by class (legitimate_load = dismissed alerts).",
            MetricType::Counter,
        );
        for c in Class::ALL {
            enc.sample(
                &[("class", c.as_str())],
                s.diagnoses[c.index()].load(Ordering::Relaxed) as f64,
            );
        }
        enc.family(
            "selfheal_recovery_steps_total",
            "Recovery ladder steps by action and outcome.",
            MetricType::Counter,
        );
        for (ai, a) in Action::ALL.iter().enumerate() {
            for (oi, o) in Outcome::ALL.iter().enumerate() {
                let v = s.recoveries[ai * Outcome::ALL.len() + oi].load(Ordering::Relaxed);
                // The outcomes alerts watch are exported from 0, so that
                // the first failure is an increase Prometheus can see.
                let watched = matches!(
                    o,
                    Outcome::Recovered | Outcome::NotCleared | Outcome::Failed
                );
                if v > 0 || watched {
                    enc.sample(&[("action", a.as_str()), ("outcome", o.as_str())], v as f64);
                }
            }
        }
        enc.family(
            "selfheal_recovery_step_duration_seconds",
            "Recovery steps that acted, by action: acting and verifying that the symptom cleared.",
            MetricType::Histogram,
        );
        for (ai, a) in Action::ALL.iter().enumerate() {
            enc.histogram(&[("action", a.as_str())], &s.recovery_step[ai].snapshot());
        }
        enc.family(
            "selfheal_detection_latency_seconds",
            "From a hang's first sign (as far as its trigger knows) to its diagnosis, by class.",
            MetricType::Histogram,
        );
        for c in Class::ALL {
            enc.histogram(
                &[("class", c.as_str())],
                &s.detection_latency[c.index()].snapshot(),
            );
        }
        enc.family(
            "selfheal_diagnosis_duration_seconds",
            "Heavy-detector runs: two snapshots of every task and the diagnosis.",
            MetricType::Histogram,
        );
        enc.histogram(&[], &s.heavy_run.snapshot());
        enc.family(
            "selfheal_recovery_refusals_total",
            "Recovery steps refused, by diagnosis class and reason (protected, \
             identity_changed, not_blamed, symptom_gone, unverifiable, innocent_members, \
             cgroup_scope, reboot_not_allowed).",
            MetricType::Counter,
        );
        for c in Class::ALL {
            for (ri, r) in Refusal::ALL.iter().enumerate() {
                let v = s.refusals[c.index() * Refusal::ALL.len() + ri].load(Ordering::Relaxed);
                if v > 0 {
                    enc.sample(&[("class", c.as_str()), ("reason", r.as_str())], v as f64);
                }
            }
        }
        enc.family(
            "selfheal_heavy_runs_total",
            "Heavy-detector runs by what woke it.",
            MetricType::Counter,
        );
        for (i, k) in TriggerKind::ALL.iter().enumerate() {
            enc.sample(
                &[("trigger", k.as_str())],
                s.heavy_runs[i].load(Ordering::Relaxed) as f64,
            );
        }
        let secs = |us: &AtomicU64| us.load(Ordering::Relaxed) as f64 / 1e6;
        enc.single(
            "selfheal_heavy_last_run_seconds",
            "Duration of the last heavy run (two snapshots and the diagnosis).",
            MetricType::Gauge,
            secs(&s.heavy_last_us),
        );
        enc.single(
            "selfheal_heavy_max_run_seconds",
            "Longest heavy run.",
            MetricType::Gauge,
            secs(&s.heavy_max_us),
        );
        enc.single(
            "selfheal_sweeps_total",
            "D-state and cgroup-limit sweeps run.",
            MetricType::Counter,
            s.sweeps.load(Ordering::Relaxed) as f64,
        );
        enc.single(
            "selfheal_sweep_last_seconds",
            "Duration of the last sweep.",
            MetricType::Gauge,
            secs(&s.sweep_last_us),
        );
        enc.single(
            "selfheal_sweep_threads",
            "Threads whose state the last sweep read.",
            MetricType::Gauge,
            s.sweep_threads.load(Ordering::Relaxed) as f64,
        );
        enc.single(
            "selfheal_dstate_tracer_active",
            "1 while the eBPF D-state tracer runs (0: the sweep scans /proc instead).",
            MetricType::Gauge,
            s.dstate_tracer.load(Ordering::Relaxed) as f64,
        );
        enc.single(
            "selfheal_dstate_traced_tasks",
            "Tasks in uninterruptible sleep in the tracer's map at the last sweep.",
            MetricType::Gauge,
            s.dstate_traced.load(Ordering::Relaxed) as f64,
        );
        enc.single(
            "selfheal_pipeline_inputs_dropped_total",
            "Stall, watchdog or kernel reports dropped because the pipeline queue was full.",
            MetricType::Counter,
            s.inputs_dropped.load(Ordering::Relaxed) as f64,
        );
        enc.single(
            "selfheal_stalls_excused_total",
            "CPU stalls not reported because the host's checkpoint stops and the vCPU's waits for a host CPU explain them (a guest under selfheal vm).",
            MetricType::Counter,
            s.stalls_excused.load(Ordering::Relaxed) as f64,
        );
        if let Some(st) = &self.stall {
            enc.single(
                "selfheal_cpu_stalls_total",
                "CPU stalls reported by the stall detector.",
                MetricType::Counter,
                st.stalls_total.load(Ordering::Relaxed) as f64,
            );
            enc.single(
                "selfheal_stall_evacuations_total",
                "Times selfheal re-pinned its own threads off stalled CPUs (or back home when they cleared).",
                MetricType::Counter,
                st.evacuations.load(Ordering::Relaxed) as f64,
            );
            enc.single(
                "selfheal_stall_self_arms_total",
                "Times the parked canaries armed themselves because the light detector stopped beating.",
                MetricType::Counter,
                st.self_arms.load(Ordering::Relaxed) as f64,
            );
            enc.family(
                "selfheal_cpu_canary_age_seconds",
                "Time since each CPU's canary last ran (grows while it is parked).",
                MetricType::Gauge,
            );
            for (cpu, age) in st.ages() {
                let c = cpu.to_string();
                enc.sample(&[("cpu", &c)], age.map_or(f64::NAN, |a| a.as_secs_f64()));
            }
            enc.family(
                "selfheal_cpu_canary_armed",
                "1 while the CPU's canary is armed (ticking); 0 while parked because the CPU shows idle time.",
                MetricType::Gauge,
            );
            for c in &st.cpus {
                let name = c.cpu.to_string();
                enc.sample(&[("cpu", &name)], f64::from(u8::from(c.is_armed())));
            }
            enc.family(
                "selfheal_cpu_canary_arms_total",
                "Times the CPU's canary was armed because the CPU was busy.",
                MetricType::Counter,
            );
            for c in &st.cpus {
                let name = c.cpu.to_string();
                enc.sample(&[("cpu", &name)], c.arms.load(Ordering::Relaxed) as f64);
            }
            let stalled = st.stalled();
            enc.family(
                "selfheal_cpu_stalled",
                "1 while the CPU is stalled.",
                MetricType::Gauge,
            );
            for c in &st.cpus {
                let name = c.cpu.to_string();
                let v = stalled.iter().any(|(x, _)| *x == c.cpu);
                enc.sample(&[("cpu", &name)], f64::from(u8::from(v)));
            }
            if st.cpus.iter().any(|c| c.counting.load(Ordering::Relaxed)) {
                enc.family(
                    "selfheal_cpu_context_switches_total",
                    "Context switches per CPU (perf software counter, read by that CPU's canary).",
                    MetricType::Counter,
                );
                for c in &st.cpus {
                    let name = c.cpu.to_string();
                    enc.sample(
                        &[("cpu", &name)],
                        c.context_switches.load(Ordering::Relaxed) as f64,
                    );
                }
            }
        }
        if let Some(k) = &self.kmsg {
            enc.family(
                "selfheal_kernel_reports_total",
                "Kernel verdicts read from /dev/kmsg, by kind.",
                MetricType::Counter,
            );
            for kind in VerdictKind::ALL {
                enc.sample(&[("verdict", kind.as_str())], k.reports_of(*kind) as f64);
            }
            enc.single(
                "selfheal_kmsg_records_lost_total",
                "Kernel log records overwritten before selfheal read them.",
                MetricType::Counter,
                k.records_lost.load(Ordering::Relaxed) as f64,
            );
        }
        if let Some(h) = self.chain.get() {
            enc.single(
                "selfheal_watchdog_chain_healthy",
                "1 while every detector heartbeat is fresh.",
                MetricType::Gauge,
                f64::from(u8::from(h.is_healthy())),
            );
            enc.single(
                "selfheal_watchdog_misses_total",
                "Times a detector heartbeat went stale.",
                MetricType::Counter,
                h.misses.load(Ordering::Relaxed) as f64,
            );
            enc.family(
                "selfheal_heartbeat_age_seconds",
                "Age of each detector heartbeat the chain watches.",
                MetricType::Gauge,
            );
            for (name, age, _) in h.components() {
                enc.sample(
                    &[("component", name.as_str())],
                    age.map_or(f64::NAN, |a| a.as_secs_f64()),
                );
            }
            if h.device.load(Ordering::Relaxed) {
                enc.single(
                    "selfheal_hardware_watchdog_pets_total",
                    "Hardware watchdog keep-alives sent.",
                    MetricType::Counter,
                    h.pets.load(Ordering::Relaxed) as f64,
                );
            }
        }
    }
}
