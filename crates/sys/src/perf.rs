//! Counting perf events (`perf_event_open(2)`): per-CPU software counters
//! (context switches, task clock) and, where the machine has a PMU,
//! hardware counters (instructions).
//!
//! Only counting mode is offered: no sampling, no ring buffers. A per-CPU
//! counter must be read *on that CPU*: reading it from another CPU makes the
//! kernel send an IPI and spin until the target answers, which a CPU that
//! stalled with interrupts off never does (the reader would stall too). The
//! stall detector therefore reads each CPU's counters from the canary
//! thread pinned to that CPU.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Errno, Result, SysError};

const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `perf_event_attr` as of PERF_ATTR_SIZE_VER0: the fields we set all live
/// in the first 64 bytes, and the kernel accepts this size forever.
const PERF_ATTR_SIZE_VER0: u32 = 64;
const ATTR_EXCLUDE_HV: u64 = 1 << 6;

/// The first 64 bytes of the kernel's `struct perf_event_attr`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// Which event to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Context switches (software, always available).
    ContextSwitches,
    /// Time the CPU/task was running, ns (software).
    TaskClock,
    /// CPU migrations (software).
    CpuMigrations,
    /// Retired instructions (hardware; absent in most VMs).
    Instructions,
    /// CPU cycles (hardware).
    CpuCycles,
}

impl Event {
    fn type_and_config(self) -> (u32, u64) {
        match self {
            Event::TaskClock => (PERF_TYPE_SOFTWARE, 1),
            Event::ContextSwitches => (PERF_TYPE_SOFTWARE, 3),
            Event::CpuMigrations => (PERF_TYPE_SOFTWARE, 4),
            Event::CpuCycles => (PERF_TYPE_HARDWARE, 0),
            Event::Instructions => (PERF_TYPE_HARDWARE, 1),
        }
    }

    /// True for events that need a hardware PMU.
    pub fn is_hardware(self) -> bool {
        self.type_and_config().0 == PERF_TYPE_HARDWARE
    }

    /// Short name, as `perf stat` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Event::ContextSwitches => "context-switches",
            Event::TaskClock => "task-clock",
            Event::CpuMigrations => "cpu-migrations",
            Event::Instructions => "instructions",
            Event::CpuCycles => "cycles",
        }
    }
}

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every task on one CPU (needs CAP_PERFMON/root or perf_event_paranoid <= 0).
    Cpu(usize),
    /// One thread on any CPU (0 = the calling thread).
    Thread(i32),
}

/// An open counting event.
#[derive(Debug)]
pub struct Counter {
    fd: OwnedFd,
    event: Event,
    target: Target,
}

impl Counter {
    /// Opens and starts a counter.
    pub fn open(event: Event, target: Target) -> Result<Counter> {
        let (type_, config) = event.type_and_config();
        let attr = PerfEventAttr {
            type_,
            size: PERF_ATTR_SIZE_VER0,
            config,
            flags: if event.is_hardware() {
                ATTR_EXCLUDE_HV
            } else {
                0
            },
            ..PerfEventAttr::default()
        };
        let (pid, cpu) = match target {
            Target::Cpu(c) => (-1, c as i32),
            Target::Thread(t) => (t, -1),
        };
        let call = || format!("perf_event_open({}, {target:?})", event.name());
        if let Target::Cpu(c) = target {
            if c > i32::MAX as usize {
                return Err(SysError {
                    call: call(),
                    errno: Errno(libc::EINVAL),
                });
            }
        }
        // SAFETY: `attr` is a valid, initialised perf_event_attr prefix whose
        // `size` field says how many bytes the kernel may read; it outlives
        // the call. The other arguments are plain integers.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                pid,
                cpu,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(SysError::last(call()));
        }
        // SAFETY: the kernel just returned this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Counter { fd, event, target })
    }

    /// The current count. For a [`Target::Cpu`] counter call this only on
    /// that CPU (see the module docs).
    pub fn read(&self) -> Result<u64> {
        let mut value: u64 = 0;
        // SAFETY: `value` is a valid 8-byte buffer for the duration of the
        // call; the kernel writes at most 8 bytes (no read_format flags).
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut value as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if n != std::mem::size_of::<u64>() as isize {
            return Err(SysError::last(format!(
                "read(perf {} {:?})",
                self.event.name(),
                self.target
            )));
        }
        Ok(value)
    }

    /// The event counted.
    pub fn event(&self) -> Event {
        self.event
    }

    /// What is counted.
    pub fn target(&self) -> Target {
        self.target
    }
}

/// True when the machine exposes a hardware PMU to us (tries to count this
/// thread's instructions). VMs without PMU passthrough return false.
pub fn hardware_counters_available() -> bool {
    Counter::open(Event::Instructions, Target::Thread(0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_thread_task_clock_advances() {
        let c = match Counter::open(Event::TaskClock, Target::Thread(0)) {
            Ok(c) => c,
            Err(e)
                if e.is_permission() || e.errno.is_unsupported() || e.errno.0 == libc::ENOENT =>
            {
                eprintln!("SKIP: perf_event_open not permitted here: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let a = c.read().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = c.read().unwrap();
        assert!(b > a, "task clock did not advance: {a} -> {b}");
    }

    #[test]
    fn per_cpu_context_switches_read_on_that_cpu() {
        std::thread::spawn(|| {
            crate::sched::pin_to_cpu(0, 0).unwrap();
            let c = match Counter::open(Event::ContextSwitches, Target::Cpu(0)) {
                Ok(c) => c,
                Err(e) if e.is_permission() => {
                    eprintln!("SKIP: per-CPU perf counters need root/CAP_PERFMON: {e}");
                    return;
                }
                Err(e) => panic!("{e}"),
            };
            let a = c.read().unwrap();
            for _ in 0..5 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            let b = c.read().unwrap();
            assert!(b >= a + 5, "sleeping 5 times switched only {} times", b - a);
        })
        .join()
        .unwrap();
        // Whatever the answer, asking must not fail or hang.
        let _ = hardware_counters_available();
    }
}
