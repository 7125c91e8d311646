//! Snapshots of every task and of the system counters diagnosis needs.
//!
//! One snapshot reads, for every thread: `stat` (state, CPU, policy,
//! priority, CPU time, parent, RSS, start time) and `schedstat` (runtime in
//! ns, run-queue wait in ns, times scheduled in); for D and R threads also
//! `wchan`. Per process it reads the uid (from `status`). System-wide:
//! meminfo, PSI, `procs_running`/`procs_blocked`, major faults, per-disk
//! counters. Files of tasks that exit mid-read are skipped (normal).
//!
//! Nothing here ever reads a file that can block on a stuck task's locks
//! (`cmdline`, `environ` and `maps` take the task's mmap lock; a task hung
//! holding it would hang us too).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use selfheal_procfs::diskstats::{is_interesting_device, parse_diskstats};
use selfheal_procfs::meminfo::{parse_meminfo, MemInfo};
use selfheal_procfs::pressure::{parse_pressure, Pressure};
use selfheal_procfs::stat::{count_cpu_lines, parse_stat, StatCounters};
use selfheal_procfs::task::{list_pids, list_tids, parse_task_stat, TaskStat};
use selfheal_procfs::vmstat::{parse_vmstat, VmStat};
use selfheal_procfs::ProcError;

/// `/proc/PID/task/TID/schedstat`: precise scheduler accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStat {
    /// Time spent running, ns.
    pub runtime_ns: u64,
    /// Time spent runnable but waiting for a CPU, ns.
    pub wait_ns: u64,
    /// Times the task was scheduled in (a context switch each).
    pub timeslices: u64,
}

/// Parses `schedstat` (`runtime wait timeslices`).
pub fn parse_schedstat(text: &str) -> Option<SchedStat> {
    let mut it = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(SchedStat {
        runtime_ns: it.next()??,
        wait_ns: it.next()??,
        timeslices: it.next()??,
    })
}

/// One thread at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSample {
    /// Thread-group id (the process).
    pub pid: i32,
    /// Thread id.
    pub tid: i32,
    /// What `stat` says.
    pub stat: TaskStat,
    /// Scheduler accounting, when the kernel has it (CONFIG_SCHED_INFO).
    pub sched: Option<SchedStat>,
    /// Where it sleeps in the kernel (D and R threads only).
    pub wchan: Option<String>,
    /// Owner uid of the process.
    pub uid: Option<u32>,
}

impl TaskSample {
    /// (tid, start time): a thread's identity; a reused tid has another start time.
    pub fn key(&self) -> (i32, u64) {
        (self.tid, self.stat.starttime_ticks)
    }

    /// True for kernel threads.
    pub fn is_kernel_thread(&self) -> bool {
        self.stat.is_kernel_thread()
    }
}

/// System-wide counters at the moment of a snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemSample {
    /// /proc/meminfo.
    pub mem: MemInfo,
    /// PSI memory, when available.
    pub psi_memory: Option<Pressure>,
    /// PSI io.
    pub psi_io: Option<Pressure>,
    /// PSI cpu.
    pub psi_cpu: Option<Pressure>,
    /// /proc/stat counters (per-CPU ticks, procs_running, procs_blocked).
    pub stat: StatCounters,
    /// /proc/vmstat counters.
    pub vm: VmStat,
    /// Per block device: (name, reads+writes completed, in flight, io ticks ms).
    pub disks: Vec<DiskSample>,
}

/// One block device's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSample {
    /// Device name.
    pub name: String,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Reads and writes completed since boot.
    pub completed: u64,
    /// I/Os in flight now.
    pub in_flight: u64,
    /// Milliseconds the device was busy, since boot.
    pub io_ticks_ms: u64,
}

/// Every task and the system counters, at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken (monotonic).
    pub taken_at: Instant,
    /// Every thread, sorted by (pid, tid).
    pub tasks: Vec<TaskSample>,
    /// System counters.
    pub system: SystemSample,
    /// Time the snapshot took to read.
    pub read_time: Duration,
}

impl Snapshot {
    /// Threads indexed by identity.
    pub fn index(&self) -> HashMap<(i32, u64), &TaskSample> {
        self.tasks.iter().map(|t| (t.key(), t)).collect()
    }

    /// One sample per process (its main thread, or its first thread).
    pub fn processes(&self) -> Vec<&TaskSample> {
        let mut out: Vec<&TaskSample> = Vec::new();
        for t in &self.tasks {
            match out.last() {
                Some(last) if last.pid == t.pid => {}
                _ => out.push(t),
            }
        }
        out
    }
}

/// Reads snapshots under a procfs root.
#[derive(Debug, Clone)]
pub struct SnapshotReader {
    root: PathBuf,
    cpus: usize,
}

impl SnapshotReader {
    /// A reader of `proc_root` (normally `/proc`; tests use fixture dirs).
    pub fn new(proc_root: &Path) -> SnapshotReader {
        let cpus = std::fs::read(proc_root.join("stat"))
            .map(|b| count_cpu_lines(&b))
            .unwrap_or(0)
            .max(selfheal_sys::sched::cpus_configured());
        SnapshotReader {
            root: proc_root.to_path_buf(),
            cpus,
        }
    }

    /// The procfs root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes a snapshot. Only a missing /proc root is an error; vanished
    /// tasks are skipped.
    pub fn take(&self) -> Result<Snapshot, ProcError> {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for pid in list_pids(&self.root)? {
            let uid = read_uid(&self.root, pid);
            let tids = match list_tids(&self.root, pid) {
                Ok(t) => t,
                Err(e) if e.is_gone() => continue,
                Err(e) if e.is_permission() => vec![pid],
                Err(e) => return Err(e),
            };
            for tid in tids {
                if let Some(t) = self.read_task(pid, tid, uid) {
                    tasks.push(t);
                }
            }
        }
        let system = self.read_system();
        Ok(Snapshot {
            taken_at: Instant::now(),
            tasks,
            system,
            read_time: start.elapsed(),
        })
    }

    fn task_dir(&self, pid: i32, tid: i32) -> PathBuf {
        self.root
            .join(pid.to_string())
            .join("task")
            .join(tid.to_string())
    }

    /// Reads one thread; `None` when it is gone or unreadable.
    pub fn read_task(&self, pid: i32, tid: i32, uid: Option<u32>) -> Option<TaskSample> {
        let dir = self.task_dir(pid, tid);
        let stat = parse_task_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
        let sched = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|t| parse_schedstat(&t));
        let wchan = if matches!(stat.state, 'D' | 'R') {
            std::fs::read_to_string(dir.join("wchan"))
                .ok()
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty() && w != "0")
        } else {
            None
        };
        Some(TaskSample {
            pid,
            tid,
            stat,
            sched,
            wchan,
            uid,
        })
    }

    /// The kernel stack of a thread (root only; `None` otherwise).
    pub fn kernel_stack(&self, pid: i32, tid: i32) -> Option<String> {
        std::fs::read_to_string(self.task_dir(pid, tid).join("stack"))
            .ok()
            .filter(|s| !s.trim().is_empty())
    }

    /// The system counters.
    pub fn read_system(&self) -> SystemSample {
        let mut s = SystemSample {
            stat: StatCounters::with_cpus(self.cpus),
            ..SystemSample::default()
        };
        if let Ok(b) = std::fs::read(self.root.join("meminfo")) {
            parse_meminfo(&b, &mut s.mem);
        }
        let psi = |name: &str| {
            let b = std::fs::read(self.root.join("pressure").join(name)).ok()?;
            let mut p = Pressure::default();
            parse_pressure(&b, &mut p).then_some(p)
        };
        s.psi_memory = psi("memory");
        s.psi_io = psi("io");
        s.psi_cpu = psi("cpu");
        if let Ok(b) = std::fs::read(self.root.join("stat")) {
            parse_stat(&b, &mut s.stat);
        }
        if let Ok(b) = std::fs::read(self.root.join("vmstat")) {
            parse_vmstat(&b, &mut s.vm);
        }
        if let Ok(b) = std::fs::read(self.root.join("diskstats")) {
            // Loop devices too (the sampler skips them): a loop device
            // whose backing file stopped answering is a stalled device.
            parse_diskstats(&b, |d| {
                let name = d.name.as_bytes();
                if is_interesting_device(name) || name.starts_with(b"loop") {
                    s.disks.push(DiskSample {
                        name: d.name.as_str().to_string(),
                        major: d.major,
                        minor: d.minor,
                        completed: d.reads + d.writes,
                        in_flight: d.in_flight,
                        io_ticks_ms: d.io_ticks_ms,
                    });
                }
            });
        }
        s
    }

    /// Number of CPU slots.
    pub fn cpus(&self) -> usize {
        self.cpus
    }
}

/// The process's real uid from `status` (`Uid:` line).
fn read_uid(root: &Path, pid: i32) -> Option<u32> {
    let text = std::fs::read_to_string(root.join(pid.to_string()).join("status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines() {
        assert_eq!(
            parse_schedstat("175910158 10540566 387\n"),
            Some(SchedStat {
                runtime_ns: 175_910_158,
                wait_ns: 10_540_566,
                timeslices: 387
            })
        );
        assert_eq!(parse_schedstat("1 2"), None);
    }

    #[test]
    fn live_snapshot_sees_this_thread() {
        let r = SnapshotReader::new(Path::new("/proc"));
        let s = r.take().unwrap();
        let me = std::process::id() as i32;
        let mine: Vec<&TaskSample> = s.tasks.iter().filter(|t| t.pid == me).collect();
        assert!(!mine.is_empty());
        // This thread is running while it reads itself.
        let tid = selfheal_sys::sched::gettid();
        let t = mine.iter().find(|t| t.tid == tid).unwrap();
        assert_eq!(t.stat.state, 'R');
        assert!(t.sched.is_some_and(|s| s.runtime_ns > 0));
        assert!(s.tasks.iter().any(|t| t.pid == 1));
        assert!(s.system.mem.total_bytes > 0);
        assert!(s.processes().len() < s.tasks.len() + 1);
    }
}
