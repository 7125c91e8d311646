//! Scheduling policy, CPU affinity and memory locking.

use crate::error::{Result, SysError};

/// A scheduling policy as `sched_setscheduler(2)` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// SCHED_OTHER (CFS/EEVDF), the default.
    Other,
    /// SCHED_FIFO real-time.
    Fifo,
    /// SCHED_RR real-time.
    RoundRobin,
    /// SCHED_BATCH.
    Batch,
    /// SCHED_IDLE.
    Idle,
    /// SCHED_DEADLINE or a policy this crate does not know.
    Unknown(i32),
}

impl Policy {
    fn from_raw(raw: i32) -> Policy {
        // Strip SCHED_RESET_ON_FORK, which getscheduler may report.
        match raw & !0x4000_0000 {
            libc::SCHED_OTHER => Policy::Other,
            libc::SCHED_FIFO => Policy::Fifo,
            libc::SCHED_RR => Policy::RoundRobin,
            libc::SCHED_BATCH => Policy::Batch,
            libc::SCHED_IDLE => Policy::Idle,
            other => Policy::Unknown(other),
        }
    }

    /// True for SCHED_FIFO and SCHED_RR.
    pub fn is_realtime(self) -> bool {
        matches!(self, Policy::Fifo | Policy::RoundRobin)
    }

    /// The name `chrt` would print.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Other => "SCHED_OTHER",
            Policy::Fifo => "SCHED_FIFO",
            Policy::RoundRobin => "SCHED_RR",
            Policy::Batch => "SCHED_BATCH",
            Policy::Idle => "SCHED_IDLE",
            Policy::Unknown(_) => "SCHED_UNKNOWN",
        }
    }
}

fn set_scheduler(tid: i32, policy: i32, priority: i32) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid, initialised sched_param that lives for the
    // duration of the call; the kernel only reads it.
    let rc = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(format!(
            "sched_setscheduler(tid {tid}, policy {policy}, priority {priority})"
        )))
    }
}

/// Puts thread `tid` (0 = the calling thread) under SCHED_FIFO at `priority`
/// (1..=99).
pub fn set_fifo(tid: i32, priority: i32) -> Result<()> {
    set_scheduler(tid, libc::SCHED_FIFO, priority)
}

/// Puts thread `tid` back under SCHED_OTHER (priority 0). This is how an RT
/// hog is demoted.
pub fn set_other(tid: i32) -> Result<()> {
    set_scheduler(tid, libc::SCHED_OTHER, 0)
}

/// Puts thread `tid` under SCHED_IDLE: it runs only when nothing else on
/// its CPU wants to (how a runaway kernel thread is moved out of the way).
pub fn set_idle(tid: i32) -> Result<()> {
    set_scheduler(tid, libc::SCHED_IDLE, 0)
}

/// Sets the nice value of thread `tid` (`setpriority(PRIO_PROCESS, tid)`:
/// on Linux that names one thread).
pub fn set_nice(tid: i32, nice: i32) -> Result<()> {
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(format!("setpriority(tid {tid}, {nice})")))
    }
}

/// The policy and real-time priority of thread `tid`.
pub fn get_scheduler(tid: i32) -> Result<(Policy, i32)> {
    // SAFETY: plain syscall with an integer argument.
    let raw = unsafe { libc::sched_getscheduler(tid) };
    if raw < 0 {
        return Err(SysError::last(format!("sched_getscheduler(tid {tid})")));
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::sched_getparam(tid, &mut param) };
    if rc != 0 {
        return Err(SysError::last(format!("sched_getparam(tid {tid})")));
    }
    Ok((Policy::from_raw(raw), param.sched_priority))
}

/// Pins thread `tid` (0 = calling thread) to a single CPU.
pub fn pin_to_cpu(tid: i32, cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(SysError {
            call: format!("sched_setaffinity(tid {tid}, cpu {cpu})"),
            errno: crate::Errno(libc::EINVAL),
        });
    }
    // SAFETY: `cpu` is within the set's capacity, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(format!(
            "sched_setaffinity(tid {tid}, cpu {cpu})"
        )))
    }
}

/// Restricts thread `tid` (0 = calling thread) to `cpus`. CPUs beyond
/// the kernel's fixed-size set (1024) are rejected, as is an empty list.
pub fn set_affinity(tid: i32, cpus: &[usize]) -> Result<()> {
    let cap = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpus.is_empty() || cpus.iter().any(|&c| c >= cap) {
        return Err(SysError {
            call: format!("sched_setaffinity(tid {tid}, cpus {cpus:?})"),
            errno: crate::Errno(libc::EINVAL),
        });
    }
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` is within the set's capacity, checked above.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(format!(
            "sched_setaffinity(tid {tid}, cpus {cpus:?})"
        )))
    }
}

/// The CPUs thread `tid` (0 = calling thread) may run on.
pub fn affinity(tid: i32) -> Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(SysError::last(format!("sched_getaffinity(tid {tid})")));
    }
    let cap = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: every index is below the set's capacity.
    Ok((0..cap)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// The CPU the calling thread is running on right now.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: no arguments; returns -1 on failure.
    let cpu = unsafe { libc::sched_getcpu() };
    (cpu >= 0).then_some(cpu as usize)
}

/// Locks the process's memory so the detector is never paged out.
///
/// Uses `MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT` where the kernel supports
/// it (4.4+), so reserved-but-untouched memory (thread stacks, malloc arenas)
/// is not populated just to be locked; falls back to plain
/// `MCL_CURRENT | MCL_FUTURE` otherwise.
pub fn mlockall() -> Result<()> {
    const MCL_ONFAULT: i32 = 4;
    // SAFETY: plain syscall with integer flags.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | MCL_ONFAULT) };
    if rc == 0 {
        return Ok(());
    }
    let first = SysError::last("mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT)");
    if first.errno.0 != libc::EINVAL {
        return Err(first);
    }
    // SAFETY: as above.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last("mlockall(MCL_CURRENT|MCL_FUTURE)"))
    }
}

/// Undoes [`mlockall`].
pub fn munlockall() -> Result<()> {
    // SAFETY: plain syscall without arguments.
    let rc = unsafe { libc::munlockall() };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last("munlockall"))
    }
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i32 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() }
}

/// Number of CPUs the kernel can bring online (`_SC_NPROCESSORS_CONF`).
pub fn cpus_configured() -> usize {
    // SAFETY: sysconf with a valid name has no side effects.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    if n < 1 {
        1
    } else {
        n as usize
    }
}

/// Clock ticks per second (`_SC_CLK_TCK`), the unit of /proc times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf with a valid name has no side effects.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n < 1 {
        100
    } else {
        n as u64
    }
}

/// Page size in bytes.
pub fn page_size() -> usize {
    // SAFETY: sysconf with a valid name has no side effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n < 1 {
        4096
    } else {
        n as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_policy_is_readable() {
        let (policy, prio) = get_scheduler(0).unwrap();
        assert!(!policy.is_realtime() || prio > 0);
    }

    #[test]
    fn vanished_tid_is_gone() {
        // pid_max is at most 2^22, so this tid cannot exist.
        let err = get_scheduler(0x7fff_fff0).unwrap_err();
        assert!(err.is_gone(), "{err}");
    }

    #[test]
    fn pin_and_sysconf() {
        assert!(cpus_configured() >= 1);
        assert!(clock_ticks_per_second() >= 1);
        assert!(page_size() >= 4096);
        std::thread::spawn(|| {
            pin_to_cpu(0, 0).unwrap();
            assert_eq!(current_cpu(), Some(0));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn affinity_round_trips() {
        std::thread::spawn(|| {
            let all = affinity(0).unwrap();
            assert!(!all.is_empty());
            set_affinity(0, &all[..1]).unwrap();
            assert_eq!(affinity(0).unwrap(), all[..1].to_vec());
            set_affinity(0, &all).unwrap();
            assert_eq!(affinity(0).unwrap(), all);
            assert!(set_affinity(0, &[]).is_err(), "an empty set is refused");
            assert!(set_affinity(0, &[1 << 20]).is_err());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_can_be_moved_to_sched_idle_and_niced() {
        std::thread::spawn(|| {
            let tid = gettid();
            set_nice(tid, 19).unwrap();
            set_idle(tid).unwrap();
            assert_eq!(get_scheduler(tid).unwrap().0, Policy::Idle);
            assert!(set_nice(0x7fff_fff0, 19).unwrap_err().is_gone());
        })
        .join()
        .unwrap();
    }
}
