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
//! arms the canaries. So one parked canary still wakes every
//! [`PARKED_CHECK`] and looks at the driver's heartbeat
//! ([`StallShared::watch_driver`]): when it is older than its limit, every
//! canary is armed and their silence counts from the driver's last beat.
//! The driver can only be trapped on the CPU it last ran on (a sleeping
//! thread wakes where it slept), which it notes after every sample, so the
//! checker is the canary of another CPU; the driver wakes a new checker
//! when it moves onto the checker's CPU. The other parked canaries wake
//! only every [`PARKED_BACKSTOP`]: at idle the canaries cost one wake-up a
//! second on any number of CPUs, not one per CPU.
//!
//! **Evacuation.** A stalled CPU also traps selfheal's own threads whose
//! wake-ups land there (the kernel keeps a waking real-time task on its
//! previous CPU when that CPU runs a normal-priority task, even one
//! looping with preemption off). While a CPU is stalled, a canary on a
//! healthy CPU re-pins every other thread of this process to the CPUs
//! that still run ([`StallShared::evacuations`] counts it), and restores
//! their affinity when the stall clears.
//!
//! Cost: one wake-up per [`PARKED_CHECK`] in all while CPUs have idle time;
//! `1/tick` wake-ups a second on each busy CPU. Detection: at `bound` after the stall began (the driver
//! wakes for it when a canary falls silent), give or take the sample's
//! tick resolution. See `bench/hang/` for both, measured.

mod canary;
mod driver;
mod shared;
#[cfg(test)]
mod tests;

pub use canary::CpuCanary;
pub use driver::{free_percent, StallDriver};
pub use shared::StallShared;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use canary::canary;

/// How long [`StallDetector::stop`] waits for its threads before leaving
/// a stuck one behind.
const JOIN_BOUND: Duration = Duration::from_secs(3);

/// A canary armed less than this long ago is not yet reported: it gets a
/// moment to be scheduled and prove its CPU free.
pub const ARM_GRACE: Duration = Duration::from_millis(20);

/// The parked canary that checks on the driver (the light thread) wakes
/// this often to see that it still runs.
pub const PARKED_CHECK: Duration = Duration::from_secs(1);

/// The other parked canaries wake this often (in case the checker cannot).
pub const PARKED_BACKSTOP: Duration = Duration::from_secs(10);

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
