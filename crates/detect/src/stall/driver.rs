//! The stall detector's part on the light thread: arms a CPU's canary when
//! the CPU could be monopolised, parks it when the CPU is idle again, and
//! checks the armed canaries between their own cross-checks.
//!
//! Everything here runs on the real-time light thread after each sample:
//! atomics, arithmetic and at most a futex wake per CPU; no lock, no
//! allocation, no system call besides the wake (`sched_getcpu` reads the
//! vDSO or the rseq area).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal_sampler::{CpuMetric, Sample};

use super::{StallEvent, StallShared};
use crate::light::SampleHook;

/// Below this idle share (percent) a sample counts as busy from end to end
/// (`/proc/stat` counts in 10 ms ticks: a 100 ms sample has no idle tick).
const FULLY_BUSY_BELOW: f64 = 0.5;

/// Share of the sample interval (percent) that CPU `cpu` spent idle, as far
/// as the kernel accounted for it: idle + iowait, scaled by how much of the
/// interval was accounted at all (a CPU looping with interrupts off takes
/// no ticks, so its shares freeze and `cpu_accounted_percent` falls).
/// `None` when the sample says nothing about the CPU (offline, or an
/// interval too short to tell).
pub fn free_percent(sample: &Sample, cpu: usize) -> Option<f64> {
    let idle = sample.cpu(cpu, CpuMetric::IdlePercent);
    let iowait = sample.cpu(cpu, CpuMetric::IowaitPercent);
    let accounted = sample.cpu(cpu, CpuMetric::AccountedPercent);
    let free = idle + if iowait.is_finite() { iowait } else { 0.0 };
    match (free.is_finite(), accounted.is_finite()) {
        (true, true) => Some(free * accounted.clamp(0.0, 100.0) / 100.0),
        (true, false) => Some(free),
        // No tick at all over a long enough interval: accounting stopped.
        (false, true) if accounted < 1.0 => Some(0.0),
        _ => None,
    }
}

/// Per-CPU state only the light thread touches.
#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    /// Estimated start of the CPU's current busy streak (`None` before the
    /// first sample).
    busy_since: Option<Instant>,
    /// Consecutive samples with idle time at or above the arming threshold.
    idle_samples: u32,
}

/// Arms, parks and checks the canaries from the light thread's samples
/// (a [`SampleHook`]).
pub struct StallDriver {
    shared: Arc<StallShared>,
    on_event: Arc<dyn Fn(StallEvent) + Send + Sync>,
    arm_idle_percent: f64,
    disarm_after: u32,
    streaks: Vec<Streak>,
}

impl std::fmt::Debug for StallDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StallDriver")
            .field("arm_idle_percent", &self.arm_idle_percent)
            .field("disarm_after", &self.disarm_after)
            .finish_non_exhaustive()
    }
}

impl StallDriver {
    /// A driver over `shared`. Arms a canary when its CPU's idle share of a
    /// sample is below `arm_idle_percent`; parks it after `disarm_after`
    /// consecutive samples at or above it. `on_event` must not block.
    pub fn new(
        shared: Arc<StallShared>,
        on_event: Arc<dyn Fn(StallEvent) + Send + Sync>,
        arm_idle_percent: f64,
        disarm_after: u32,
    ) -> StallDriver {
        let n = shared.cpus.len();
        StallDriver {
            shared,
            on_event,
            arm_idle_percent,
            disarm_after: disarm_after.max(1),
            streaks: vec![Streak::default(); n],
        }
    }

    /// Feeds one sample: updates the busy streaks, arms and parks canaries,
    /// checks the armed ones. Returns when to check again before the next
    /// sample (a silent canary reaching the bound), if at all.
    pub fn feed(&mut self, sample: &Sample) -> Option<Instant> {
        let taken = sample.taken_at;
        for (i, c) in self.shared.cpus.iter().enumerate() {
            if !c.alive.load(Ordering::Acquire) {
                continue;
            }
            let Some(free) = free_percent(sample, c.cpu as usize) else {
                continue;
            };
            let st = &mut self.streaks[i];
            // The busy part of the interval is taken to be its end: a CPU
            // 60 % busy over 100 ms became busy ~60 ms before the sample.
            // Without idle time, the streak goes on from the last one.
            let busy = Duration::from_secs_f64(
                sample.interval.as_secs_f64() * (1.0 - free / 100.0).clamp(0.0, 1.0),
            );
            let tail = taken.checked_sub(busy).unwrap_or(taken);
            if free >= FULLY_BUSY_BELOW || st.busy_since.is_none() {
                st.busy_since = Some(tail);
            }
            if free < self.arm_idle_percent {
                st.idle_samples = 0;
                self.shared.arm(i, st.busy_since.unwrap_or(tail));
            } else {
                st.idle_samples = st.idle_samples.saturating_add(1);
                if st.idle_samples >= self.disarm_after {
                    self.shared.disarm(i);
                }
            }
        }
        self.shared.heartbeat.beat();
        self.shared
            .note_driver_cpu(selfheal_sys::sched::current_cpu());
        self.shared.check(self.on_event.as_ref())
    }

    /// Checks the armed canaries now (between samples).
    pub fn check(&self) -> Option<Instant> {
        self.shared.check(self.on_event.as_ref())
    }
}

impl SampleHook for StallDriver {
    fn on_sample(&mut self, sample: &Sample) -> Option<Instant> {
        self.feed(sample)
    }

    fn on_deadline(&mut self, _now: Instant) -> Option<Instant> {
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stall::StallOptions;
    use selfheal_sampler::CpuMetric;
    use std::sync::Mutex;

    fn sample(taken_at: Instant, cpus: &[(f64, f64)]) -> Sample {
        let mut s = Sample::with_cpus(cpus.len());
        s.taken_at = taken_at;
        s.interval = Duration::from_millis(100);
        for (i, &(idle, accounted)) in cpus.iter().enumerate() {
            s.cpus[i][CpuMetric::IdlePercent.index()] = idle;
            s.cpus[i][CpuMetric::IowaitPercent.index()] = 0.0;
            s.cpus[i][CpuMetric::AccountedPercent.index()] = accounted;
        }
        s
    }

    fn shared(cpus: usize, bound_ms: u64) -> Arc<StallShared> {
        let s = StallShared::new(&StallOptions {
            bound: Duration::from_millis(bound_ms),
            tick: Duration::from_millis(100),
            canary_priority: 1,
            perf_counters: false,
            cpus: (0..cpus).collect(),
            on_demand: true,
            arm_idle_percent: 20.0,
            disarm_after: 3,
        });
        // Canaries without threads: alive, ticked once at start.
        for c in &s.cpus {
            c.alive.store(true, Ordering::Release);
            c.last_tick_ns.store(1, Ordering::Release);
        }
        Arc::new(s)
    }

    #[test]
    fn free_share_counts_stopped_accounting_as_busy() {
        let t = Instant::now();
        let s = sample(t, &[(100.0, 100.0), (30.0, 50.0), (f64::NAN, 0.0)]);
        assert_eq!(free_percent(&s, 0), Some(100.0));
        assert_eq!(free_percent(&s, 1), Some(15.0));
        assert_eq!(free_percent(&s, 2), Some(0.0));
        assert_eq!(free_percent(&s, 7), None, "unknown CPU");
        let mut short = sample(t, &[(f64::NAN, f64::NAN)]);
        short.interval = Duration::from_millis(5);
        assert_eq!(free_percent(&short, 0), None);
    }

    #[test]
    fn idle_cpus_are_parked_busy_ones_armed() {
        let sh = shared(2, 200);
        let seen: Arc<Mutex<Vec<StallEvent>>> = Arc::default();
        let s2 = seen.clone();
        let mut d = StallDriver::new(
            sh.clone(),
            Arc::new(move |e| s2.lock().unwrap().push(e)),
            20.0,
            3,
        );
        let t0 = Instant::now();
        // Everything armed at start; cpu 1 stays busy, cpu 0 idles.
        for k in 1..=2 {
            d.feed(&sample(
                t0 + Duration::from_millis(100 * k),
                &[(90.0, 100.0), (5.0, 100.0)],
            ));
            assert!(sh.cpus[0].is_armed(), "parked after {k} idle samples");
        }
        d.feed(&sample(
            t0 + Duration::from_millis(300),
            &[(90.0, 100.0), (5.0, 100.0)],
        ));
        assert!(!sh.cpus[0].is_armed(), "idle for 3 samples: parked");
        assert!(sh.cpus[1].is_armed());
        // cpu 0 gets busy: armed again, watching from when it became busy.
        let t4 = t0 + Duration::from_millis(400);
        d.feed(&sample(t4, &[(10.0, 100.0), (5.0, 100.0)]));
        assert!(sh.cpus[0].is_armed());
        let from = sh.cpus[0].watch_from_ns.load(Ordering::Acquire);
        let expected = sh.ns_at(t4 - Duration::from_millis(90));
        assert!(from.abs_diff(expected) < 1_000_000, "{from} vs {expected}");
        assert_eq!(sh.cpus[0].arms.load(Ordering::Relaxed), 1);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn a_silent_armed_canary_is_reported_at_the_bound_from_its_busy_streak() {
        let sh = shared(2, 60);
        let seen: Arc<Mutex<Vec<StallEvent>>> = Arc::default();
        let s2 = seen.clone();
        let mut d = StallDriver::new(
            sh.clone(),
            Arc::new(move |e| s2.lock().unwrap().push(e)),
            20.0,
            1,
        );
        // Both idle: parked. (Samples 100 ms apart, dated in the past.)
        std::thread::sleep(Duration::from_millis(120));
        let t = Instant::now();
        d.feed(&sample(
            t - Duration::from_millis(100),
            &[(100.0, 100.0), (100.0, 100.0)],
        ));
        assert!(!sh.cpus[1].is_armed());
        // Then cpu 1 is busy for the whole next sample, and its canary
        // never runs.
        let due = d.feed(&sample(t, &[(100.0, 100.0), (0.0, 100.0)]));
        assert!(sh.cpus[1].is_armed());
        // Fully busy: the streak began 100 ms ago (the sample before had
        // no busy tail), already past the 60 ms bound, but the canary was
        // armed just now and gets its grace first.
        assert!(seen.lock().unwrap().is_empty());
        let due = due.expect("a silent armed canary asks for a check");
        assert!(
            due >= t && due <= t + Duration::from_millis(40),
            "{:?}",
            due - t
        );
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        assert!(d.check().is_none());
        let ev = seen.lock().unwrap().clone();
        assert_eq!(ev.len(), 1, "{ev:?}");
        let StallEvent::Stalled {
            cpu,
            stalled_for,
            since,
        } = ev[0]
        else {
            panic!("{ev:?}")
        };
        assert_eq!(cpu, 1);
        assert!(stalled_for >= Duration::from_millis(100), "{stalled_for:?}");
        assert!(
            since <= t - Duration::from_millis(95),
            "dated from the busy streak"
        );
        // Still busy but stalled: never parked; cleared when it runs.
        d.feed(&sample(Instant::now(), &[(100.0, 100.0), (100.0, 100.0)]));
        assert!(sh.cpus[1].is_armed());
        sh.cpus[1]
            .last_tick_ns
            .store(sh.now_ns(), Ordering::Release);
        d.check();
        let ev = seen.lock().unwrap().clone();
        assert!(
            matches!(ev[1], StallEvent::Cleared { cpu: 1, .. }),
            "{ev:?}"
        );
        assert!(sh.stalled().is_empty());
        // Idle again: parked.
        d.feed(&sample(Instant::now(), &[(100.0, 100.0), (100.0, 100.0)]));
        assert!(!sh.cpus[1].is_armed());
    }

    #[test]
    fn a_ticking_canary_is_never_reported_and_needs_no_extra_check() {
        let sh = shared(1, 200);
        let seen: Arc<Mutex<Vec<StallEvent>>> = Arc::default();
        let s2 = seen.clone();
        let mut d = StallDriver::new(
            sh.clone(),
            Arc::new(move |e| s2.lock().unwrap().push(e)),
            20.0,
            3,
        );
        // Busy for a long time (normal load), the canary ticking.
        let t0 = Instant::now();
        for k in 0..5 {
            sh.cpus[0]
                .last_tick_ns
                .store(sh.now_ns(), Ordering::Release);
            let due = d.feed(&sample(
                t0 + Duration::from_millis(100 * k),
                &[(0.0, 100.0)],
            ));
            assert_eq!(due, None);
        }
        assert!(seen.lock().unwrap().is_empty());
        assert!(sh.heartbeat.beats() >= 5);
    }
}
