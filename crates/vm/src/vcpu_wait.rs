//! How long each vCPU thread waited for a host CPU, read for the guest
//! ([`selfheal_guestlink::HostMessage::Waited`]): under TCG a vCPU is a
//! host thread, and while it waits on the host's run queue the guest's
//! clocks run on with none of that vCPU's code run — to the guest's stall
//! canaries, that CPU stalled.
//!
//! The wait is the second field of `/proc/PID/task/TID/schedstat` (ns,
//! `run_delay`; the thread ids from QMP `query-cpus-fast`). The kernel adds
//! a wait to it when the wait ends, so what it grew by between two reads
//! ended after the first and began at most that long before it: the wait
//! lies within `[first read − growth, second read)`, the interval sent.

use std::path::PathBuf;

use selfheal_guestlink::VcpuWait;
use selfheal_procfs::error::ProcError;
use selfheal_procfs::task::TaskDir;

/// Waits shorter than this over one interval are not told (µs).
pub const WAIT_MIN_US: u64 = 1_000;
/// A run-queue wait that still reads 0 on every vCPU this long after the
/// first read is taken for one the kernel does not keep (µs).
const ZERO_AFTER_US: u64 = 2_000_000;

/// Why the host tells the guest none of its vCPUs' waits.
#[derive(Debug, thiserror::Error)]
pub enum WaitsUnavailable {
    /// The file cannot be read while the thread is there.
    #[error("cannot read vCPU {cpu}'s run-queue wait ({source}); the guest is not told of its vCPUs' waits for a host CPU")]
    Unreadable {
        /// The vCPU.
        cpu: u32,
        /// Why.
        source: ProcError,
    },
    /// Every vCPU's wait reads 0.
    #[error("every vCPU thread's run-queue wait reads 0 in {path} {secs} s after the first read (a kernel without CONFIG_SCHED_INFO?); the guest is not told of its vCPUs' waits for a host CPU")]
    Zero {
        /// One of the files.
        path: PathBuf,
        /// Seconds waited for a non-zero value.
        secs: u64,
    },
}

/// One read of the vCPU threads' waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitSample {
    /// Host CLOCK_MONOTONIC just after the read, µs: every wait that
    /// ended before it is counted.
    pub host_us: u64,
    /// Per vCPU, what it waited since the read before (over
    /// [`WAIT_MIN_US`] only).
    pub waits: Vec<VcpuWait>,
}

/// A vCPU thread's wait at the last read.
#[derive(Debug, Clone, Copy)]
struct Last {
    cpu: u32,
    tid: i32,
    /// Host µs just before the read.
    before_us: u64,
    wait_ns: u64,
}

/// Reads the vCPU threads' waits of one QEMU.
#[derive(Debug)]
pub struct VcpuWaits {
    proc_root: PathBuf,
    pid: i32,
    vcpus: Vec<(u32, i32)>,
    last: Vec<Last>,
    /// Host µs of the first read, until a wait reads above 0.
    zero_since: Option<u64>,
    seen_wait: bool,
    off: bool,
}

impl VcpuWaits {
    /// For QEMU `pid` under `proc_root`.
    pub fn new(proc_root: PathBuf, pid: i32) -> VcpuWaits {
        VcpuWaits {
            proc_root,
            pid,
            vcpus: Vec::new(),
            last: Vec::new(),
            zero_since: None,
            seen_wait: false,
            off: false,
        }
    }

    /// The vCPU threads (cpu index, tid), from QMP `query-cpus-fast`.
    pub fn set_vcpus(&mut self, vcpus: &[(u32, i32)]) {
        self.vcpus = vcpus.to_vec();
        self.last.clear();
    }

    /// Reads every vCPU thread's wait; `clock` is host CLOCK_MONOTONIC in
    /// µs. `Ok(None)`: nothing to read (vCPUs not known yet, or turned
    /// off); `Err` once, when the waits turn out not to be readable (then
    /// `Ok(None)` for good).
    pub fn sample(
        &mut self,
        clock: impl Fn() -> u64,
    ) -> Result<Option<WaitSample>, WaitsUnavailable> {
        if self.off || self.vcpus.is_empty() {
            return Ok(None);
        }
        let mut now = Vec::with_capacity(self.vcpus.len());
        for &(cpu, tid) in &self.vcpus {
            let before_us = clock();
            let t = TaskDir::thread(&self.proc_root, self.pid, tid);
            match t.schedstat() {
                Ok(s) => now.push(Last {
                    cpu,
                    tid,
                    before_us,
                    wait_ns: s.wait_ns,
                }),
                // The thread exited (QEMU is going): skipped, and its
                // next read starts afresh.
                Err(ProcError::Gone { .. }) if !t.exists() => {}
                Err(source) => {
                    self.off = true;
                    return Err(WaitsUnavailable::Unreadable { cpu, source });
                }
            }
        }
        let host_us = clock();
        if !self.seen_wait {
            if now.iter().any(|l| l.wait_ns > 0) {
                self.seen_wait = true;
            } else {
                let since = *self.zero_since.get_or_insert(host_us);
                if host_us.saturating_sub(since) >= ZERO_AFTER_US && !now.is_empty() {
                    self.off = true;
                    return Err(WaitsUnavailable::Zero {
                        path: TaskDir::thread(&self.proc_root, self.pid, now[0].tid)
                            .path()
                            .join("schedstat"),
                        secs: ZERO_AFTER_US / 1_000_000,
                    });
                }
            }
        }
        let waits = now
            .iter()
            .filter_map(|n| {
                let prev = self
                    .last
                    .iter()
                    .find(|l| l.cpu == n.cpu && l.tid == n.tid)?;
                wait_between(n.cpu, prev.before_us, prev.wait_ns, host_us, n.wait_ns)
            })
            .collect();
        self.last = now;
        Ok(Some(WaitSample { host_us, waits }))
    }
}

/// What vCPU `cpu` waited between a read started at `prev_us` (wait
/// `prev_ns` then) and one ended at `now_us` (wait `now_ns`), when it is
/// at least [`WAIT_MIN_US`]: the growth, within `[prev_us − growth,
/// now_us)` (a wait that ended after the first read began at most its own
/// length before it).
pub fn wait_between(
    cpu: u32,
    prev_us: u64,
    prev_ns: u64,
    now_us: u64,
    now_ns: u64,
) -> Option<VcpuWait> {
    // A counter that went down is not the same thread's.
    let wait_us = now_ns.checked_sub(prev_ns)? / 1000;
    if wait_us < WAIT_MIN_US {
        return None;
    }
    let from_us = prev_us.saturating_sub(wait_us);
    (from_us < now_us).then(|| VcpuWait {
        cpu,
        from_us,
        until_us: now_us,
        wait_us: wait_us.min(now_us - from_us),
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::fs;

    use super::*;

    #[test]
    fn a_wait_lies_between_the_reads_or_just_before_the_first() {
        // 30 ms of wait ended between reads at 1.000 s and 1.050 s: it
        // may have begun up to 30 ms before the first.
        assert_eq!(
            wait_between(1, 1_000_000, 5_000_000, 1_050_000, 35_000_000),
            Some(VcpuWait {
                cpu: 1,
                from_us: 970_000,
                until_us: 1_050_000,
                wait_us: 30_000,
            })
        );
        // Under the threshold, or a counter that went back: nothing.
        assert_eq!(
            wait_between(0, 1_000_000, 5_000_000, 1_050_000, 5_900_000),
            None
        );
        assert_eq!(wait_between(0, 1_000_000, 5_000_000, 1_050_000, 0), None);
        // Near the clock's start: clamped at 0, never longer than it.
        assert_eq!(
            wait_between(0, 10, 0, 2_000, 2_000_000),
            Some(VcpuWait {
                cpu: 0,
                from_us: 0,
                until_us: 2_000,
                wait_us: 2_000,
            })
        );
    }

    /// A fake /proc with QEMU pid 7 and vCPU threads 8 and 9.
    fn fake_proc(waits: &[(i32, u64)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for &(tid, wait_ns) in waits {
            let t = d.path().join(format!("7/task/{tid}"));
            fs::create_dir_all(&t).unwrap();
            fs::write(t.join("schedstat"), format!("123456789 {wait_ns} 42\n")).unwrap();
        }
        d
    }

    #[test]
    fn each_vcpu_threads_wait_is_read_and_mapped_to_its_cpu_index() {
        let d = fake_proc(&[(8, 1_000_000), (9, 2_000_000)]);
        let mut w = VcpuWaits::new(d.path().into(), 7);
        let t = Cell::new(1_000_000u64);
        let clock = || {
            t.set(t.get() + 10);
            t.get()
        };
        assert_eq!(w.sample(clock).unwrap(), None, "vCPUs not known yet");
        w.set_vcpus(&[(0, 8), (1, 9)]);
        let first = w.sample(clock).unwrap().unwrap();
        assert!(first.waits.is_empty(), "no read before: {first:?}");
        // vCPU 1 (thread 9) waited 20 ms more; vCPU 0 0.5 ms (not told).
        fs::write(d.path().join("7/task/8/schedstat"), "1 1500000 43\n").unwrap();
        fs::write(d.path().join("7/task/9/schedstat"), "1 22000000 43\n").unwrap();
        t.set(1_050_000);
        let s = w.sample(clock).unwrap().unwrap();
        assert_eq!(s.host_us, 1_050_030);
        assert_eq!(
            s.waits,
            vec![VcpuWait {
                cpu: 1,
                from_us: 1_000_020 - 20_000,
                until_us: 1_050_030,
                wait_us: 20_000,
            }]
        );
    }

    #[test]
    fn waits_that_read_zero_turn_it_off_with_one_error() {
        let d = fake_proc(&[(8, 0)]);
        let mut w = VcpuWaits::new(d.path().into(), 7);
        w.set_vcpus(&[(0, 8)]);
        let t = Cell::new(0u64);
        assert!(w.sample(|| t.get()).unwrap().is_some());
        t.set(ZERO_AFTER_US);
        let e = w.sample(|| t.get()).unwrap_err();
        assert!(e.to_string().contains("reads 0"), "{e}");
        assert_eq!(w.sample(|| t.get()).unwrap(), None, "off for good");
    }

    #[test]
    fn an_unreadable_file_turns_it_off_and_a_gone_thread_is_skipped() {
        let d = fake_proc(&[(8, 5)]);
        // Thread 9 exists but has no schedstat (a kernel without it).
        fs::create_dir_all(d.path().join("7/task/9")).unwrap();
        let mut w = VcpuWaits::new(d.path().into(), 7);
        // Thread 10 is gone.
        w.set_vcpus(&[(0, 8), (2, 10)]);
        assert!(w.sample(|| 5).unwrap().is_some());
        w.set_vcpus(&[(0, 8), (1, 9)]);
        let e = w.sample(|| 5).unwrap_err();
        assert!(
            matches!(e, WaitsUnavailable::Unreadable { cpu: 1, .. }),
            "{e}"
        );
        assert_eq!(w.sample(|| 5).unwrap(), None);
    }
}
