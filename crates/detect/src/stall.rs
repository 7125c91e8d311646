//! Per-CPU stall detection in user space (RMK's idea without kernel
//! changes): a CPU that makes no scheduling progress while work waits for
//! it is hung.
//!
//! One *canary* thread per CPU, pinned there at a low SCHED_FIFO priority
//! (1), wakes every `tick` and stamps the time. Normal-priority load can
//! never keep a real-time canary off its CPU; only a real-time task of
//! higher priority, or the kernel itself (a loop with preemption or
//! interrupts off), can. After stamping, each canary checks the others:
//! a CPU whose canary has not run for `bound` (default 200 ms) is reported
//! stalled, and cleared when it runs again. One healthy CPU is enough to
//! notice any other stalling, and no extra thread has to wake up: on a VM
//! a wake-up costs ~20 µs, so wake-ups are the whole cost of this detector.
//!
//! With `perf_counters`, each canary also reads its CPU's context-switch
//! (and, where the machine has a PMU, instruction) counter, always on that
//! CPU (a cross-CPU read would wait on an IPI the stalled CPU never
//! answers), so a cleared stall reports how many switches happened during it.
//!
//! Cost: each canary wakes `1/tick` times a second for a few microseconds;
//! detection latency is between `bound` and `bound + tick` after the
//! stalled canary's last run. See `bench/hang/` for both, measured.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use selfheal_sys::perf::{Counter, Event as PerfEvent, Target as PerfTarget};

use crate::heartbeat::Heartbeat;

/// How the stall detector runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StallOptions {
    /// A canary silent this long means its CPU is stalled.
    pub bound: Duration,
    /// Canary period.
    pub tick: Duration,
    /// SCHED_FIFO priority of the canaries.
    pub canary_priority: u8,
    /// Count context switches (and instructions) per CPU.
    pub perf_counters: bool,
    /// CPUs to watch (default: every configured CPU).
    pub cpus: Vec<usize>,
}

impl StallOptions {
    /// From the `[stall]` config section.
    pub fn from_config(c: &selfheal_config::StallConfig) -> StallOptions {
        StallOptions {
            bound: c.bound.get(),
            tick: c.tick.get(),
            canary_priority: c.canary_priority,
            perf_counters: c.perf_counters,
            cpus: (0..selfheal_sys::sched::cpus_configured()).collect(),
        }
    }
}

/// A stall starting or ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallEvent {
    /// A CPU's canary has not run for at least the bound.
    Stalled {
        /// The CPU.
        cpu: u32,
        /// How long its canary had been silent when noticed.
        stalled_for: Duration,
        /// When the canary last ran (≈ when the stall began).
        since: Instant,
    },
    /// The canary ran again.
    Cleared {
        /// The CPU.
        cpu: u32,
        /// How long the stall lasted.
        lasted: Duration,
        /// Context switches on the CPU during the stall, when counted.
        context_switches: Option<u64>,
    },
}

/// One CPU's canary state, lock-free.
#[derive(Debug)]
pub struct CpuCanary {
    /// The CPU.
    pub cpu: u32,
    /// Last tick, ns since the detector's base instant (0 = never).
    pub last_tick_ns: AtomicU64,
    /// Ticks so far.
    pub ticks: AtomicU64,
    /// Start of the current stall, ns since base (0 = not stalled).
    pub stalled_since_ns: AtomicU64,
    /// Context switches counted on this CPU (perf), if counting.
    pub context_switches: AtomicU64,
    /// Instructions counted on this CPU (perf, hardware only).
    pub instructions: AtomicU64,
    /// Context switches during the last gap longer than the bound.
    pub gap_context_switches: AtomicU64,
    /// The canary runs under SCHED_FIFO.
    pub realtime: AtomicBool,
    /// The canary is pinned and running.
    pub alive: AtomicBool,
    /// The canary could pin itself to its CPU.
    pub pinned: AtomicBool,
    /// The canary counts context switches.
    pub counting: AtomicBool,
    /// The canary counts instructions.
    pub counting_instructions: AtomicBool,
}

/// State shared by the canaries and readers (`/metrics`, the pipeline).
#[derive(Debug)]
pub struct StallShared {
    base: Instant,
    bound_ns: u64,
    /// One per watched CPU.
    pub cpus: Vec<CpuCanary>,
    /// Stalls reported so far.
    pub stalls_total: AtomicU64,
    /// Stamped by every canary tick: the detector is alive while any CPU is.
    pub heartbeat: Arc<Heartbeat>,
}

impl StallShared {
    fn now_ns(&self) -> u64 {
        (self.base.elapsed().as_nanos() as u64).max(1)
    }

    fn instant(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }

    /// CPUs stalled now, with how long.
    pub fn stalled(&self) -> Vec<(u32, Duration)> {
        let now = self.now_ns();
        self.cpus
            .iter()
            .filter_map(|c| {
                let since = c.stalled_since_ns.load(Ordering::Acquire);
                (since != 0).then(|| (c.cpu, Duration::from_nanos(now.saturating_sub(since))))
            })
            .collect()
    }

    /// Age of each canary's last tick (`None` before its first).
    pub fn ages(&self) -> Vec<(u32, Option<Duration>)> {
        let now = self.now_ns();
        self.cpus
            .iter()
            .map(|c| {
                let last = c.last_tick_ns.load(Ordering::Acquire);
                (
                    c.cpu,
                    (last != 0).then(|| Duration::from_nanos(now.saturating_sub(last))),
                )
            })
            .collect()
    }

    /// True when every canary runs real-time (otherwise normal load could
    /// starve one and the detector would be unreliable).
    pub fn all_realtime(&self) -> bool {
        self.cpus
            .iter()
            .all(|c| c.realtime.load(Ordering::Relaxed) || !c.alive.load(Ordering::Relaxed))
    }

    /// Compares every canary's age with the bound and reports transitions.
    /// Safe to call from several threads: each transition is claimed once.
    fn check(&self, on_event: &(dyn Fn(StallEvent) + Send + Sync)) {
        let now = self.now_ns();
        for c in &self.cpus {
            if !c.alive.load(Ordering::Acquire) {
                continue;
            }
            let last = c.last_tick_ns.load(Ordering::Acquire);
            if last == 0 {
                continue;
            }
            let age = now.saturating_sub(last);
            let since = c.stalled_since_ns.load(Ordering::Acquire);
            if since == 0 && age >= self.bound_ns {
                if c.stalled_since_ns
                    .compare_exchange(0, last, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.stalls_total.fetch_add(1, Ordering::Relaxed);
                    on_event(StallEvent::Stalled {
                        cpu: c.cpu,
                        stalled_for: Duration::from_nanos(age),
                        since: self.instant(last),
                    });
                }
            } else if since != 0
                && age < self.bound_ns
                && c.stalled_since_ns
                    .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                let counting = c.counting.load(Ordering::Relaxed);
                on_event(StallEvent::Cleared {
                    cpu: c.cpu,
                    lasted: Duration::from_nanos(last.saturating_sub(since)),
                    context_switches: counting
                        .then(|| c.gap_context_switches.load(Ordering::Relaxed)),
                });
            }
        }
    }
}

/// The running detector.
pub struct StallDetector {
    shared: Arc<StallShared>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    notes: Vec<String>,
}

impl std::fmt::Debug for StallDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StallDetector")
            .field("cpus", &self.shared.cpus.len())
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

impl StallDetector {
    /// Starts one canary per CPU. `on_event` runs on a canary thread: it
    /// must not block (use `try_send`).
    pub fn spawn(
        options: StallOptions,
        on_event: Arc<dyn Fn(StallEvent) + Send + Sync>,
    ) -> std::io::Result<StallDetector> {
        let shared = Arc::new(StallShared {
            base: Instant::now(),
            bound_ns: options.bound.as_nanos() as u64,
            cpus: options
                .cpus
                .iter()
                .map(|&cpu| CpuCanary {
                    cpu: cpu as u32,
                    last_tick_ns: AtomicU64::new(0),
                    ticks: AtomicU64::new(0),
                    stalled_since_ns: AtomicU64::new(0),
                    context_switches: AtomicU64::new(0),
                    instructions: AtomicU64::new(0),
                    gap_context_switches: AtomicU64::new(0),
                    realtime: AtomicBool::new(false),
                    alive: AtomicBool::new(false),
                    pinned: AtomicBool::new(false),
                    counting: AtomicBool::new(false),
                    counting_instructions: AtomicBool::new(false),
                })
                .collect(),
            stalls_total: AtomicU64::new(0),
            heartbeat: Arc::new(Heartbeat::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let hardware = options.perf_counters && selfheal_sys::perf::hardware_counters_available();
        for i in 0..shared.cpus.len() {
            let (shared, stop, on_event, opts) = (
                shared.clone(),
                stop.clone(),
                on_event.clone(),
                options.clone(),
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("selfheal-canary{}", shared.cpus[i].cpu))
                    .stack_size(64 * 1024)
                    .spawn(move || canary(i, &shared, &stop, on_event.as_ref(), &opts, hardware))?,
            );
        }
        // Wait briefly for the canaries to report how they are set up.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline
            && shared
                .cpus
                .iter()
                .any(|c| c.ticks.load(Ordering::Relaxed) == 0 && !stop.load(Ordering::Relaxed))
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut notes = Vec::new();
        for c in &shared.cpus {
            if !c.pinned.load(Ordering::Relaxed) {
                notes.push(format!("cpu {}: no canary (offline or not allowed)", c.cpu));
            } else if !c.realtime.load(Ordering::Relaxed) {
                notes.push(format!(
                    "cpu {}: canary cannot run under SCHED_FIFO; stall detection on it is off \
                     (run as root or grant CAP_SYS_NICE)",
                    c.cpu
                ));
            }
        }
        Ok(StallDetector {
            shared,
            stop,
            threads,
            notes,
        })
    }

    /// Shared state (for metrics and the pipeline).
    pub fn shared(&self) -> Arc<StallShared> {
        self.shared.clone()
    }

    /// Limitations found at start (for the caller to report).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Stops every thread.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for StallDetector {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn canary(
    i: usize,
    shared: &StallShared,
    stop: &AtomicBool,
    on_event: &(dyn Fn(StallEvent) + Send + Sync),
    opts: &StallOptions,
    hardware: bool,
) {
    let me = &shared.cpus[i];
    if let Err(e) = selfheal_sys::sched::pin_to_cpu(0, me.cpu as usize) {
        tracing::warn!("stall canary for cpu {}: {e}", me.cpu);
        me.ticks.store(1, Ordering::Relaxed);
        return;
    }
    me.pinned.store(true, Ordering::Relaxed);
    // A canary at normal priority would be starved by ordinary load and
    // report false stalls: without SCHED_FIFO it does not watch at all.
    if selfheal_sys::sched::set_fifo(0, i32::from(opts.canary_priority.max(1))).is_err() {
        me.ticks.store(1, Ordering::Relaxed);
        return;
    }
    me.realtime.store(true, Ordering::Relaxed);
    let cpu = me.cpu as usize;
    let cs = opts
        .perf_counters
        .then(|| Counter::open(PerfEvent::ContextSwitches, PerfTarget::Cpu(cpu)).ok())
        .flatten();
    let ins = hardware
        .then(|| Counter::open(PerfEvent::Instructions, PerfTarget::Cpu(cpu)).ok())
        .flatten();
    me.counting.store(cs.is_some(), Ordering::Relaxed);
    me.counting_instructions
        .store(ins.is_some(), Ordering::Relaxed);
    let mut last_cs = cs.as_ref().and_then(|c| c.read().ok()).unwrap_or(0);
    let mut last_ns = shared.now_ns();
    me.last_tick_ns.store(last_ns, Ordering::Release);
    me.alive.store(true, Ordering::Release);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(opts.tick);
        let now = shared.now_ns();
        // Counters are read here, on this CPU: never across CPUs.
        if let Some(c) = &cs {
            if let Ok(v) = c.read() {
                if now - last_ns >= shared.bound_ns {
                    me.gap_context_switches
                        .store(v.saturating_sub(last_cs), Ordering::Relaxed);
                }
                me.context_switches.store(v, Ordering::Relaxed);
                last_cs = v;
            }
        }
        if let Some(c) = &ins {
            if let Ok(v) = c.read() {
                me.instructions.store(v, Ordering::Relaxed);
            }
        }
        me.last_tick_ns.store(now, Ordering::Release);
        me.ticks.fetch_add(1, Ordering::Relaxed);
        last_ns = now;
        shared.heartbeat.beat();
        shared.check(on_event);
    }
    me.alive.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn options(bound_ms: u64) -> StallOptions {
        StallOptions {
            bound: Duration::from_millis(bound_ms),
            tick: Duration::from_millis(5),
            canary_priority: 1,
            perf_counters: true,
            cpus: (0..selfheal_sys::sched::cpus_configured()).collect(),
        }
    }

    #[test]
    fn transitions_are_reported_once() {
        let shared = StallShared {
            base: Instant::now() - Duration::from_secs(10),
            bound_ns: 200_000_000,
            cpus: vec![CpuCanary {
                cpu: 3,
                last_tick_ns: AtomicU64::new(1),
                ticks: AtomicU64::new(1),
                stalled_since_ns: AtomicU64::new(0),
                context_switches: AtomicU64::new(0),
                instructions: AtomicU64::new(0),
                gap_context_switches: AtomicU64::new(7),
                realtime: AtomicBool::new(true),
                alive: AtomicBool::new(true),
                pinned: AtomicBool::new(true),
                counting: AtomicBool::new(true),
                counting_instructions: AtomicBool::new(false),
            }],
            stalls_total: AtomicU64::new(0),
            heartbeat: Arc::new(Heartbeat::new()),
        };
        let seen: Mutex<Vec<StallEvent>> = Mutex::default();
        let record = |e: StallEvent| seen.lock().unwrap().push(e);
        shared.check(&record);
        shared.check(&record);
        assert_eq!(shared.stalled().len(), 1);
        // The canary ticks again.
        shared.cpus[0]
            .last_tick_ns
            .store(shared.now_ns(), Ordering::Release);
        shared.check(&record);
        shared.check(&record);
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            matches!(seen[0], StallEvent::Stalled { cpu: 3, stalled_for, .. } if stalled_for >= Duration::from_secs(9))
        );
        assert!(matches!(
            seen[1],
            StallEvent::Cleared {
                cpu: 3,
                context_switches: Some(7),
                ..
            }
        ));
        assert_eq!(shared.stalls_total.load(Ordering::Relaxed), 1);
        assert!(shared.stalled().is_empty());
    }

    #[test]
    fn canaries_tick_on_every_cpu() {
        if !selfheal_sys::process::is_root() {
            eprintln!(
                "SKIP canaries_tick_on_every_cpu: canaries need SCHED_FIFO (root or CAP_SYS_NICE)"
            );
            return;
        }
        let events: Arc<Mutex<Vec<StallEvent>>> = Arc::default();
        let e2 = events.clone();
        // A generous bound: the shared test machine may run other RT work.
        let d = StallDetector::spawn(
            options(2_000),
            Arc::new(move |e| e2.lock().unwrap().push(e)),
        )
        .unwrap();
        let shared = d.shared();
        std::thread::sleep(Duration::from_millis(300));
        assert!(shared.all_realtime(), "{:?}", d.notes());
        for (cpu, age) in shared.ages() {
            let age = age.unwrap_or_else(|| panic!("cpu {cpu} never ticked"));
            assert!(
                age < Duration::from_secs(1),
                "cpu {cpu} last ticked {age:?} ago"
            );
        }
        assert!(shared
            .cpus
            .iter()
            .all(|c| c.ticks.load(Ordering::Relaxed) > 10));
        assert!(shared.heartbeat.is_fresh(Duration::from_secs(1)));
        let t = Instant::now();
        d.stop();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(events
            .lock()
            .unwrap()
            .iter()
            .all(|e| !matches!(e, StallEvent::Stalled { .. })));
    }
}
