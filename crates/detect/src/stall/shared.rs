//! State shared by the canaries, the driver and readers, and the stall
//! check itself.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::canary::repin_threads;
use super::{CpuCanary, StallEvent, StallOptions, ARM_GRACE, PARKED_BACKSTOP, PARKED_CHECK};
use crate::heartbeat::Heartbeat;

/// [`StallShared::driver_cpu`] before the driver's first sample.
const NO_CPU: u32 = u32::MAX;

/// Where this process's threads may run, and which stalled CPUs they are
/// kept off now.
#[derive(Debug, Default)]
struct Evacuation {
    /// The process's affinity when the detector started.
    home: Vec<usize>,
    /// CPUs excluded now (sorted).
    excluded: Vec<u32>,
}

/// State shared by the canaries, the driver and readers (`/metrics`, the
/// pipeline).
#[derive(Debug)]
pub struct StallShared {
    pub(super) base: Instant,
    bound_ns: u64,
    tick_ns: u64,
    /// One per watched CPU.
    pub cpus: Vec<CpuCanary>,
    /// Stalls reported so far.
    pub stalls_total: AtomicU64,
    /// Stamped by every canary tick and every driver sample: stall checks
    /// are running.
    pub heartbeat: Arc<Heartbeat>,
    /// The driver's heartbeat and how old it may get before the canaries
    /// arm themselves.
    driver: OnceLock<(Arc<Heartbeat>, Duration)>,
    /// The CPU the driver ran its last sample on ([`NO_CPU`] before it
    /// said): the one it would be trapped on.
    driver_cpu: AtomicU32,
    /// Threads moved off stalled CPUs (canaries only; never the light
    /// thread, which must not block or allocate).
    evacuation: std::sync::Mutex<Evacuation>,
    /// Some CPU is excluded now (a cheap test before the lock).
    evacuated: AtomicBool,
    /// Times this process's threads were re-pinned (off a stalled CPU, or
    /// back home).
    pub evacuations: AtomicU64,
    /// Times the canaries armed themselves because the driver was silent.
    pub self_arms: AtomicU64,
}

impl StallShared {
    /// State for `options`' CPUs, every canary armed, no thread started
    /// (for [`StallDetector::spawn`](super::StallDetector::spawn), and tests of the driver).
    pub fn new(options: &StallOptions) -> StallShared {
        let base = Instant::now();
        StallShared {
            base,
            bound_ns: options.bound.as_nanos() as u64,
            tick_ns: options.tick.as_nanos() as u64,
            // Armed at 1 ns after base: "now" at start.
            cpus: options
                .cpus
                .iter()
                .map(|&cpu| CpuCanary::new(cpu as u32, 1))
                .collect(),
            stalls_total: AtomicU64::new(0),
            heartbeat: Arc::new(Heartbeat::new()),
            driver: OnceLock::new(),
            driver_cpu: AtomicU32::new(NO_CPU),
            evacuation: std::sync::Mutex::new(Evacuation {
                home: selfheal_sys::sched::affinity(0).unwrap_or_default(),
                excluded: Vec::new(),
            }),
            evacuated: AtomicBool::new(false),
            evacuations: AtomicU64::new(0),
            self_arms: AtomicU64::new(0),
        }
    }

    /// Tells the canaries whose beat arms them on demand (the light
    /// thread's) and how old it may get: past `stale_after`, a canary that
    /// wakes arms every canary itself. Set once; later calls are ignored.
    pub fn watch_driver(&self, heartbeat: Arc<Heartbeat>, stale_after: Duration) {
        let _ = self.driver.set((heartbeat, stale_after));
    }

    /// Notes the CPU the driver (the light thread) runs on, after each of
    /// its samples. When it moved onto the CPU of the canary that checks
    /// on it, the canary of another CPU takes over and is woken to say so.
    /// Lock- and allocation-free (at most a futex wake), for the light
    /// thread.
    pub fn note_driver_cpu(&self, cpu: Option<usize>) {
        let cpu = cpu.map_or(NO_CPU, |c| c as u32);
        let was = self.driver_cpu.swap(cpu, Ordering::AcqRel);
        if was == cpu {
            return;
        }
        let (old, new) = (self.checker(was), self.checker(cpu));
        if let Some(i) = new.filter(|&n| Some(n) != old) {
            if let Some(t) = self.cpus[i].thread.get() {
                t.unpark();
            }
        }
    }

    /// The parked canary that checks on the driver when the driver last
    /// ran on `driver_cpu`: the first live one on another CPU (a canary on
    /// the driver's CPU would be trapped with it). `None`: every parked
    /// canary checks (the driver has not said where it runs, or runs on
    /// the only CPU with a canary).
    fn checker(&self, driver_cpu: u32) -> Option<usize> {
        if driver_cpu == NO_CPU {
            return None;
        }
        self.cpus
            .iter()
            .position(|c| c.cpu != driver_cpu && c.alive.load(Ordering::Acquire))
    }

    /// How long parked canary `i` sleeps before it checks on the driver:
    /// [`PARKED_CHECK`] for the checker (or every canary when there is
    /// none), [`PARKED_BACKSTOP`] for the others.
    pub(super) fn parked_wait(&self, i: usize) -> Duration {
        if self.driver.get().is_none() {
            return PARKED_CHECK;
        }
        match self.checker(self.driver_cpu.load(Ordering::Acquire)) {
            Some(c) if c != i => PARKED_BACKSTOP,
            _ => PARKED_CHECK,
        }
    }

    /// Arms every canary when the driver's heartbeat is stale, their
    /// silence counting from its last beat. Returns true when it armed one.
    pub(super) fn arm_if_driver_silent(&self) -> bool {
        let Some((hb, stale_after)) = self.driver.get() else {
            return false;
        };
        match hb.age() {
            Some(age) if age > *stale_after => {
                let from = Instant::now().checked_sub(age).unwrap_or(self.base);
                let mut armed = false;
                for i in 0..self.cpus.len() {
                    armed |= self.arm(i, from);
                }
                if armed {
                    self.self_arms.fetch_add(1, Ordering::Relaxed);
                }
                armed
            }
            _ => false,
        }
    }

    /// Wakes every canary of a CPU that is not stalled (lock- and
    /// allocation-free): after a stall starts or ends, one of them
    /// re-pins this process's threads.
    fn kick_canaries(&self) {
        for c in &self.cpus {
            if c.stalled_since_ns.load(Ordering::Acquire) == 0 {
                if let Some(t) = c.thread.get() {
                    t.unpark();
                }
            }
        }
    }

    /// Keeps this process's threads, other than the canaries, off the CPUs
    /// stalled now, and lets them back when the stalls clear. Does nothing
    /// when every CPU it may use is stalled, or when another thread is
    /// doing it. Reads `/proc/self/task`: call it only from a canary.
    /// Returns true when it re-pinned.
    pub fn evacuate_if_due(&self) -> bool {
        let any_stalled = self
            .cpus
            .iter()
            .any(|c| c.stalled_since_ns.load(Ordering::Acquire) != 0);
        if !any_stalled && !self.evacuated.load(Ordering::Acquire) {
            return false;
        }
        let mut stalled: Vec<u32> = self
            .cpus
            .iter()
            .filter(|c| c.stalled_since_ns.load(Ordering::Acquire) != 0)
            .map(|c| c.cpu)
            .collect();
        stalled.sort_unstable();
        let Ok(mut ev) = self.evacuation.try_lock() else {
            return false;
        };
        if ev.excluded == stalled || ev.home.is_empty() {
            return false;
        }
        let allowed: Vec<usize> = ev
            .home
            .iter()
            .copied()
            .filter(|&c| !stalled.contains(&(c as u32)))
            .collect();
        if allowed.is_empty() {
            // Nowhere to go: every CPU we may use is stalled.
            self.evacuated.store(true, Ordering::Release);
            ev.excluded = stalled;
            return false;
        }
        let moved = repin_threads(&allowed);
        if stalled.is_empty() {
            tracing::info!("stall cleared: {moved} selfheal threads may use every CPU again");
        } else {
            tracing::warn!(
                "cpu(s) {stalled:?} stalled: moved {moved} selfheal threads to cpu(s) {allowed:?}"
            );
        }
        self.evacuated.store(!stalled.is_empty(), Ordering::Release);
        ev.excluded = stalled;
        self.evacuations.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub(super) fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    /// `t` as ns since base (at least 1: 0 means "never").
    pub(super) fn ns_at(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.base).as_nanos() as u64).max(1)
    }

    pub(super) fn instant(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }

    /// The stall bound.
    pub fn bound(&self) -> Duration {
        Duration::from_nanos(self.bound_ns)
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

    /// Age of each canary's last tick (`None` before its first). A parked
    /// canary's age grows: it does not need to run.
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

    /// Records a tick of canary `i` now (what the canary does when it runs).
    pub fn record_tick(&self, i: usize) {
        if let Some(c) = self.cpus.get(i) {
            c.last_tick_ns.store(self.now_ns(), Ordering::Release);
            c.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Arms canary `i` (index into `cpus`): it ticks from now on, and its
    /// silence counts from `watch_from` at the earliest. Returns true when
    /// it was parked. Lock- and allocation-free (an atomic store and a
    /// futex wake), for the real-time light thread. Waking a thread on a
    /// stalled CPU does not wait for that CPU: the kernel queues the wake-up
    /// or sends an asynchronous reschedule IPI (unlike a cross-CPU perf
    /// counter read, which waits for the answer).
    pub fn arm(&self, i: usize, watch_from: Instant) -> bool {
        let Some(c) = self.cpus.get(i) else {
            return false;
        };
        if c.armed_at_ns.load(Ordering::Acquire) != 0 {
            return false;
        }
        // `watch_from` first: whoever sees the arming sees it too.
        c.watch_from_ns
            .store(self.ns_at(watch_from), Ordering::Release);
        c.armed_at_ns.store(self.now_ns(), Ordering::Release);
        c.arms.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = c.thread.get() {
            t.unpark();
        }
        true
    }

    /// Parks canary `i` after its current tick, unless its CPU is stalled.
    /// Returns true when it was armed.
    pub fn disarm(&self, i: usize) -> bool {
        let Some(c) = self.cpus.get(i) else {
            return false;
        };
        if c.stalled_since_ns.load(Ordering::Acquire) != 0 {
            return false;
        }
        c.armed_at_ns.swap(0, Ordering::AcqRel) != 0
    }

    /// Starts every canary's silence again from now: the whole machine did
    /// not run for a while that was no stall (the VM was rolled back to a
    /// checkpoint and its clocks jumped forward). A CPU still stalled after
    /// this reaches the bound again from now.
    pub fn rebaseline(&self) {
        let now = self.now_ns();
        for c in &self.cpus {
            if c.last_tick_ns.load(Ordering::Acquire) != 0 {
                c.last_tick_ns.store(now, Ordering::Release);
            }
            if c.armed_at_ns.load(Ordering::Acquire) != 0 {
                c.watch_from_ns.store(now, Ordering::Release);
            }
        }
    }

    /// Arms every canary, watching from now: the fallback when no driver
    /// runs (the light detector starved or stopped). A driver that runs
    /// again disarms idle CPUs by itself.
    pub fn arm_all(&self) {
        let now = Instant::now();
        for i in 0..self.cpus.len() {
            self.arm(i, now);
        }
    }

    /// Compares every armed canary's silence with the bound and reports
    /// transitions. Safe to call from several threads: each transition is
    /// claimed once. Returns when a canary that is not ticking will reach
    /// the bound (for a precise re-check), if one is not ticking.
    pub(super) fn check(&self, on_event: &(dyn Fn(StallEvent) + Send + Sync)) -> Option<Instant> {
        let now = self.now_ns();
        let grace = ARM_GRACE.as_nanos() as u64;
        // A canary this late is not ticking (it may only be delayed).
        let late = self.tick_ns + (self.tick_ns / 2).max(5_000_000);
        let mut due: Option<u64> = None;
        for c in &self.cpus {
            if !c.alive.load(Ordering::Acquire) {
                continue;
            }
            let since = c.stalled_since_ns.load(Ordering::Acquire);
            let last = c.last_tick_ns.load(Ordering::Acquire);
            if since != 0 {
                // The canary ran after the stall began: cleared.
                if last > since
                    && c.stalled_since_ns
                        .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.kick_canaries();
                    let counting = c.counting.load(Ordering::Relaxed);
                    on_event(StallEvent::Cleared {
                        cpu: c.cpu,
                        lasted: Duration::from_nanos(last - since),
                        context_switches: counting
                            .then(|| c.gap_context_switches.load(Ordering::Relaxed)),
                    });
                }
                continue;
            }
            let armed = c.armed_at_ns.load(Ordering::Acquire);
            if armed == 0 || last == 0 {
                continue;
            }
            let start = last.max(c.watch_from_ns.load(Ordering::Acquire));
            let age = now.saturating_sub(start);
            if age >= self.bound_ns && now.saturating_sub(armed) >= grace {
                if c.stalled_since_ns
                    .compare_exchange(0, start, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.stalls_total.fetch_add(1, Ordering::Relaxed);
                    self.kick_canaries();
                    on_event(StallEvent::Stalled {
                        cpu: c.cpu,
                        stalled_for: Duration::from_nanos(age),
                        since: self.instant(start),
                    });
                }
            } else if last < armed || now.saturating_sub(last) > late {
                // Not run since armed, or late: worth a check at the bound.
                let at = (start + self.bound_ns).max(armed + grace);
                due = Some(due.map_or(at, |d| d.min(at)));
            }
        }
        due.map(|ns| self.instant(ns))
    }
}
