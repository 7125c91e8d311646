//! Per-CPU canaries: their lock-free state, the canary thread itself, and
//! moving this process's other threads off a stalled CPU.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;

use selfheal_sys::perf::{Counter, Event as PerfEvent, Target as PerfTarget};

use super::{StallEvent, StallOptions, StallShared};

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
    pub(super) thread: OnceLock<Thread>,
}

impl CpuCanary {
    pub(super) fn new(cpu: u32, armed_at_ns: u64) -> CpuCanary {
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

pub(super) fn canary(
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
            // case the driver is trapped: every PARKED_CHECK for the one
            // canary that checks on it, a backstop for the others. A
            // spurious return only costs one extra tick.
            std::thread::park_timeout(shared.parked_wait(i));
        }
    }
    me.alive.store(false, Ordering::Release);
}

/// Restricts every thread of this process except the canaries to
/// `cpus`; returns how many it moved. Threads that exit meanwhile are
/// skipped.
pub(super) fn repin_threads(cpus: &[usize]) -> usize {
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
