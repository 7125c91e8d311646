//! Per-CPU stall detection in user space (RMK's idea without kernel
//! changes): a CPU that makes no scheduling progress while work waits for
//! it is hung.
//!
//! One *canary* thread per CPU, pinned there at a low SCHED_FIFO priority
//! (1), stamps the time every `tick` while it is *armed*. Normal-priority
//! load can never keep a real-time canary off its CPU; only a real-time
//! task of higher priority, or the kernel itself (a loop with preemption
//! or interrupts off), can. A CPU whose armed canary has not run for
//! `bound` (default 200 ms) is reported stalled, and cleared when it runs
//! again.
//!
//! **On demand** (the default): a CPU that shows idle time cannot be
//! monopolised, so its canary stays parked (no wake-ups at all; on a VM a
//! wake-up costs ~20–30 µs, which is this detector's whole cost). The light
//! detector's thread, which samples every CPU's idle share anyway, runs a
//! [`StallDriver`] after each sample: it arms a CPU's canary when the CPU
//! was (nearly) fully busy or its time accounting stopped (interrupts off:
//! no ticks), and disarms it after a few samples with idle time again. The
//! driver also checks the armed canaries itself, with atomics only, so a
//! stall is noticed even when no other canary is armed; a stall counts from
//! the later of the canary's last run and the start of the CPU's busy
//! streak (estimated from the sample: a CPU 60 % busy in a 100 ms sample
//! became busy ~60 ms before it). Armed canaries still check each other
//! after every tick. Until a driver runs, and whenever the watchdog chain
//! sees the light detector starve ([`StallShared::arm_all`]), every canary
//! is armed and the canaries watch each other as they always did.
//!
//! With `perf_counters`, each canary also reads its CPU's context-switch
//! (and, where the machine has a PMU, instruction) counter, always on that
//! CPU (a cross-CPU read would wait on an IPI the stalled CPU never
//! answers), so a cleared stall reports how many switches happened during it.
//!
//! **Self-check while parked.** The light thread can itself be trapped on
//! a stalled CPU (its timer or wake-up queued there), and then nothing
//! arms the canaries. So a parked canary still wakes every
//! [`PARKED_CHECK`] and looks at the driver's heartbeat
//! ([`StallShared::watch_driver`]): when it is older than its limit, every
//! canary is armed and their silence counts from the driver's last beat.
//!
//! **Evacuation.** A stalled CPU also traps selfheal's own threads whose
//! wake-ups land there (the kernel keeps a waking real-time task on its
//! previous CPU when that CPU runs a normal-priority task, even one
//! looping with preemption off). While a CPU is stalled, a canary on a
//! healthy CPU re-pins every other thread of this process to the CPUs
//! that still run ([`StallShared::evacuations`] counts it), and restores
//! their affinity when the stall clears.
//!
//! Cost: one wake-up per [`PARKED_CHECK`] on CPUs with idle time;
//! `1/tick` wake-ups a second on each busy CPU. Detection: at `bound` after the stall began (the driver
//! wakes for it when a canary falls silent), give or take the sample's
//! tick resolution. See `bench/hang/` for both, measured.

mod driver;

pub use driver::{free_percent, StallDriver};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use selfheal_sys::perf::{Counter, Event as PerfEvent, Target as PerfTarget};

use crate::heartbeat::Heartbeat;

/// How long [`StallDetector::stop`] waits for its threads before leaving
/// a stuck one behind.
const JOIN_BOUND: Duration = Duration::from_secs(3);

/// A canary armed less than this long ago is not yet reported: it gets a
/// moment to be scheduled and prove its CPU free.
pub const ARM_GRACE: Duration = Duration::from_millis(20);

/// A parked canary wakes this often to check that the driver (the light
/// thread) still runs.
pub const PARKED_CHECK: Duration = Duration::from_secs(1);

/// Where this process's threads may run, and which stalled CPUs they are
/// kept off now.
#[derive(Debug, Default)]
struct Evacuation {
    /// The process's affinity when the detector started.
    home: Vec<usize>,
    /// CPUs excluded now (sorted).
    excluded: Vec<u32>,
}

/// How the stall detector runs.
#[derive(Debug, Clone, PartialEq)]
pub struct StallOptions {
    /// A canary silent this long means its CPU is stalled.
    pub bound: Duration,
    /// Canary period while armed.
    pub tick: Duration,
    /// SCHED_FIFO priority of the canaries.
    pub canary_priority: u8,
    /// Count context switches (and instructions) per CPU.
    pub perf_counters: bool,
    /// CPUs to watch (default: every configured CPU).
    pub cpus: Vec<usize>,
    /// Park each canary while its CPU shows idle time, armed by a
    /// [`StallDriver`] on the light thread; `false` keeps them all armed.
    pub on_demand: bool,
    /// Arm when the CPU's idle share of the last sample is below this (%).
    pub arm_idle_percent: f64,
    /// Disarm after this many consecutive samples at or above it.
    pub disarm_after: u32,
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
            on_demand: c.on_demand,
            arm_idle_percent: c.arm_idle_percent,
            disarm_after: c.disarm_after.max(1),
        }
    }
}

/// A stall starting or ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallEvent {
    /// A CPU's armed canary has not run for at least the bound.
    Stalled {
        /// The CPU.
        cpu: u32,
        /// How long the stall had lasted when noticed.
        stalled_for: Duration,
        /// When it began: the canary's last run, or the start of the CPU's
        /// busy streak if that is later.
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
    /// When the canary was armed, ns since base (0 = parked).
    pub armed_at_ns: AtomicU64,
    /// Silence before this instant (ns since base) does not count: the
    /// start of the CPU's busy streak when armed.
    pub watch_from_ns: AtomicU64,
    /// Times the canary was armed.
    pub arms: AtomicU64,
    /// Context switches counted on this CPU (perf), if counting.
    pub context_switches: AtomicU64,
    /// Instructions counted on this CPU (perf, hardware only).
    pub instructions: AtomicU64,
    /// Context switches during the last stall.
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
    /// The canary's thread, to unpark it.
    thread: OnceLock<Thread>,
}

impl CpuCanary {
    fn new(cpu: u32, armed_at_ns: u64) -> CpuCanary {
        CpuCanary {
            cpu,
            last_tick_ns: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            stalled_since_ns: AtomicU64::new(0),
            armed_at_ns: AtomicU64::new(armed_at_ns),
            watch_from_ns: AtomicU64::new(0),
            arms: AtomicU64::new(0),
            context_switches: AtomicU64::new(0),
            instructions: AtomicU64::new(0),
            gap_context_switches: AtomicU64::new(0),
            realtime: AtomicBool::new(false),
            alive: AtomicBool::new(false),
            pinned: AtomicBool::new(false),
            counting: AtomicBool::new(false),
            counting_instructions: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }

    /// True while the canary is armed (ticking, or due to tick).
    pub fn is_armed(&self) -> bool {
        self.armed_at_ns.load(Ordering::Acquire) != 0
    }
}

/// State shared by the canaries, the driver and readers (`/metrics`, the
/// pipeline).
#[derive(Debug)]
pub struct StallShared {
    base: Instant,
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
    /// (for [`StallDetector::spawn`], and tests of the driver).
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

    /// Arms every canary when the driver's heartbeat is stale, their
    /// silence counting from its last beat. Returns true when it armed one.
    fn arm_if_driver_silent(&self) -> bool {
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

    fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    /// `t` as ns since base (at least 1: 0 means "never").
    fn ns_at(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.base).as_nanos() as u64).max(1)
    }

    fn instant(&self, ns: u64) -> Instant {
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
    fn check(&self, on_event: &(dyn Fn(StallEvent) + Send + Sync)) -> Option<Instant> {
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

/// The running detector.
pub struct StallDetector {
    shared: Arc<StallShared>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    notes: Vec<String>,
    options: StallOptions,
    on_event: Arc<dyn Fn(StallEvent) + Send + Sync>,
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
    /// Starts one canary per CPU, all armed. `on_event` runs on a canary
    /// or the driver's thread: it must not block (use `try_send`).
    pub fn spawn(
        options: StallOptions,
        on_event: Arc<dyn Fn(StallEvent) + Send + Sync>,
    ) -> std::io::Result<StallDetector> {
        let shared = Arc::new(StallShared::new(&options));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let hardware = options.perf_counters && selfheal_sys::perf::hardware_counters_available();
        for i in 0..shared.cpus.len() {
            let (shared2, stop, on_event, opts) = (
                shared.clone(),
                stop.clone(),
                on_event.clone(),
                options.clone(),
            );
            let handle = std::thread::Builder::new()
                .name(format!("selfheal-canary{}", shared.cpus[i].cpu))
                .stack_size(64 * 1024)
                .spawn(move || canary(i, &shared2, &stop, on_event.as_ref(), &opts, hardware))?;
            let _ = shared.cpus[i].thread.set(handle.thread().clone());
            threads.push(handle);
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
            options,
            on_event,
        })
    }

    /// Shared state (for metrics and the pipeline).
    pub fn shared(&self) -> Arc<StallShared> {
        self.shared.clone()
    }

    /// The light thread's part when canaries are armed on demand (`None`
    /// when they are always armed): hand it to the light thread with
    /// [`crate::light::attach_sample_hook`].
    pub fn driver(&self) -> Option<StallDriver> {
        self.options.on_demand.then(|| {
            StallDriver::new(
                self.shared.clone(),
                self.on_event.clone(),
                self.options.arm_idle_percent,
                self.options.disarm_after,
            )
        })
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
        for t in &self.threads {
            t.thread().unpark();
        }
        // A thread blocked in a read of a task's /proc file (a task in
        // exec under ptrace holds the lock those reads take) must not keep
        // the daemon from stopping: it is left behind after a bound.
        let deadline = Instant::now() + JOIN_BOUND;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::error!(
                    "stall detector thread {:?} did not stop within {JOIN_BOUND:?}; leaving it",
                    t.thread().name()
                );
            }
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
    me.last_tick_ns.store(shared.now_ns(), Ordering::Release);
    me.alive.store(true, Ordering::Release);
    loop {
        // Counters are read here, on this CPU: never across CPUs.
        if let Some(c) = &cs {
            if let Ok(v) = c.read() {
                if me.stalled_since_ns.load(Ordering::Acquire) != 0 {
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
        shared.record_tick(i);
        shared.heartbeat.beat();
        shared.arm_if_driver_silent();
        shared.check(on_event);
        shared.evacuate_if_due();
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if me.is_armed() {
            std::thread::sleep(opts.tick);
        } else {
            // Parked until armed (or stopped), with a slow self-check in
            // case the driver is trapped. A spurious return only costs one
            // extra tick.
            std::thread::park_timeout(PARKED_CHECK);
        }
    }
    me.alive.store(false, Ordering::Release);
}

/// Restricts every thread of this process except the canaries to
/// `cpus`; returns how many it moved. Threads that exit meanwhile are
/// skipped.
fn repin_threads(cpus: &[usize]) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut moved = 0;
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        // "selfheal-canaryN", cut to 15 bytes by the kernel.
        if comm.starts_with("selfheal-canary") {
            continue;
        }
        if selfheal_sys::sched::set_affinity(tid, cpus).is_ok() {
            moved += 1;
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn options(bound_ms: u64, tick_ms: u64, on_demand: bool) -> StallOptions {
        StallOptions {
            bound: Duration::from_millis(bound_ms),
            tick: Duration::from_millis(tick_ms),
            canary_priority: 1,
            perf_counters: true,
            cpus: (0..selfheal_sys::sched::cpus_configured()).collect(),
            on_demand,
            arm_idle_percent: 20.0,
            disarm_after: 3,
        }
    }

    #[test]
    fn transitions_are_reported_once() {
        let mut shared = StallShared::new(&StallOptions {
            cpus: vec![3],
            ..options(200, 100, false)
        });
        shared.base -= Duration::from_secs(10);
        let c = &shared.cpus[0];
        c.alive.store(true, Ordering::Release);
        c.last_tick_ns.store(1, Ordering::Release);
        c.counting.store(true, Ordering::Relaxed);
        c.gap_context_switches.store(7, Ordering::Relaxed);
        let seen: Mutex<Vec<StallEvent>> = Mutex::default();
        let record = |e: StallEvent| seen.lock().unwrap().push(e);
        shared.check(&record);
        shared.check(&record);
        assert_eq!(shared.stalled().len(), 1);
        // A stalled CPU's canary stays armed.
        assert!(!shared.disarm(0));
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
    fn a_parked_canary_is_never_reported() {
        let mut shared = StallShared::new(&options(200, 100, true));
        shared.base -= Duration::from_secs(10);
        for (i, c) in shared.cpus.iter().enumerate() {
            c.alive.store(true, Ordering::Release);
            c.last_tick_ns.store(1, Ordering::Release);
            assert!(shared.disarm(i));
        }
        let record = |e: StallEvent| panic!("{e:?}");
        assert_eq!(shared.check(&record), None);
        // Armed again: its silence counts from the arming, not from its
        // last tick 10 s ago.
        assert!(shared.arm(0, Instant::now()));
        assert!(!shared.arm(0, Instant::now()), "already armed");
        let due = shared.check(&record).expect("a check at the bound");
        let left = due.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_millis(150) && left <= Duration::from_millis(200),
            "{left:?}"
        );
    }

    fn root_or_skip(test: &str) -> bool {
        let root = selfheal_sys::process::is_root();
        if !root {
            eprintln!("SKIP {test}: canaries need SCHED_FIFO (root or CAP_SYS_NICE)");
        }
        root
    }

    #[test]
    fn canaries_tick_on_every_cpu() {
        if !root_or_skip("canaries_tick_on_every_cpu") {
            return;
        }
        let events: Arc<Mutex<Vec<StallEvent>>> = Arc::default();
        let e2 = events.clone();
        // A generous bound: the shared test machine may run other RT work.
        let d = StallDetector::spawn(
            options(2_000, 5, false),
            Arc::new(move |e| e2.lock().unwrap().push(e)),
        )
        .unwrap();
        assert!(d.driver().is_none(), "always armed: no driver");
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

    #[test]
    fn parked_canaries_do_not_run_until_armed() {
        if !root_or_skip("parked_canaries_do_not_run_until_armed") {
            return;
        }
        let events: Arc<Mutex<Vec<StallEvent>>> = Arc::default();
        let e2 = events.clone();
        let d = StallDetector::spawn(
            options(2_000, 10, true),
            Arc::new(move |e| e2.lock().unwrap().push(e)),
        )
        .unwrap();
        let shared = d.shared();
        assert!(shared.all_realtime(), "{:?}", d.notes());
        for i in 0..shared.cpus.len() {
            shared.disarm(i);
        }
        std::thread::sleep(Duration::from_millis(50));
        let ticks = |s: &StallShared| -> Vec<u64> {
            s.cpus
                .iter()
                .map(|c| c.ticks.load(Ordering::Relaxed))
                .collect()
        };
        let parked = ticks(&shared);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ticks(&shared), parked, "a parked canary ticked");
        // Armed: it runs at once (it is real-time), then every tick.
        let t = Instant::now();
        assert!(shared.arm(0, t));
        let first = (0..200).find_map(|_| {
            std::thread::sleep(Duration::from_millis(1));
            (shared.cpus[0].ticks.load(Ordering::Relaxed) > parked[0]).then(|| t.elapsed())
        });
        let first = first.expect("armed canary ran within 200 ms");
        eprintln!("armed canary ran {first:?} after the arming");
        std::thread::sleep(Duration::from_millis(200));
        assert!(shared.cpus[0].ticks.load(Ordering::Relaxed) >= parked[0] + 5);
        // Stopping wakes parked canaries too.
        let t = Instant::now();
        d.stop();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(shared.cpus.iter().all(|c| !c.alive.load(Ordering::Relaxed)));
        assert!(events
            .lock()
            .unwrap()
            .iter()
            .all(|e| !matches!(e, StallEvent::Stalled { .. })));
    }

    #[test]
    fn parked_canaries_arm_themselves_when_the_driver_is_silent() {
        let shared = StallShared::new(&options(200, 100, true));
        for i in 0..shared.cpus.len() {
            shared.disarm(i);
        }
        // No driver known: nothing happens.
        assert!(!shared.arm_if_driver_silent());
        let hb = Arc::new(Heartbeat::new());
        shared.watch_driver(hb.clone(), Duration::from_millis(50));
        // A driver that never beat has not started yet.
        assert!(!shared.arm_if_driver_silent());
        hb.beat();
        assert!(!shared.arm_if_driver_silent(), "fresh beat");
        std::thread::sleep(Duration::from_millis(80));
        let before = Instant::now();
        assert!(shared.arm_if_driver_silent());
        assert!(shared.cpus.iter().all(CpuCanary::is_armed));
        assert_eq!(shared.self_arms.load(Ordering::Relaxed), 1);
        // Silence counts from the driver's last beat, not from now.
        let from = shared.cpus[0].watch_from_ns.load(Ordering::Acquire);
        assert!(shared.instant(from) + Duration::from_millis(70) <= before);
        // Already armed: no second count.
        assert!(!shared.arm_if_driver_silent());
        assert_eq!(shared.self_arms.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn threads_leave_a_stalled_cpu_and_come_back() {
        let home = selfheal_sys::sched::affinity(0).unwrap();
        if home.len() < 2 {
            eprintln!("SKIP: needs two CPUs, this process may use {home:?}");
            return;
        }
        let shared = StallShared::new(&StallOptions {
            cpus: home.clone(),
            ..options(200, 100, true)
        });
        // Nothing stalled: nothing to do.
        assert!(!shared.evacuate_if_due());
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            tx.send(selfheal_sys::sched::gettid()).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let last = shared.cpus.len() - 1;
        let stalled_cpu = shared.cpus[last].cpu as usize;
        shared.cpus[last]
            .stalled_since_ns
            .store(1, Ordering::Release);
        assert!(shared.evacuate_if_due());
        let mask = selfheal_sys::sched::affinity(tid).unwrap();
        assert!(
            !mask.contains(&stalled_cpu),
            "{mask:?} still has cpu {stalled_cpu}"
        );
        assert!(!shared.evacuate_if_due(), "already moved");
        shared.cpus[last]
            .stalled_since_ns
            .store(0, Ordering::Release);
        assert!(shared.evacuate_if_due());
        assert_eq!(selfheal_sys::sched::affinity(tid).unwrap(), home);
        assert_eq!(shared.evacuations.load(Ordering::Relaxed), 2);
        drop(done_tx);
        helper.join().unwrap();
    }
}
