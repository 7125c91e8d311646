//! Checking, live, whether a diagnosed symptom has cleared: what the
//! recovery ladder polls after each step before deciding to escalate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal_detect::stall::StallShared;
use selfheal_event::{Blame, Target};
use selfheal_procfs::task::{list_pids, parse_task_stat};
use selfheal_recover::{blamed_set, ProcInfo, Recheck, SymptomProbe};

use crate::cgroups::CgroupScanner;
use crate::class::Symptom;
use crate::snapshot::parse_schedstat;

/// Live checks for one symptom. Stateful: the RT-monopoly check measures
/// run time between successive calls.
pub struct SymptomCheck {
    symptom: Symptom,
    proc_root: PathBuf,
    stall: Option<Arc<StallShared>>,
    scanner: Option<Arc<std::sync::Mutex<CgroupScanner>>>,
    last_runtime: Option<(u64, Instant)>,
    /// When the stuck tasks were first all seen out of D.
    out_of_d_since: Option<Instant>,
    /// When a fork bomb's count was first seen below its bound.
    tasks_low_since: Option<Instant>,
    /// A spinning kernel thread's voluntary switches when first checked.
    kthread_nvcsw: Option<u64>,
    /// When the machine's available memory was first seen back up.
    memory_back_since: Option<Instant>,
}

impl std::fmt::Debug for SymptomCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SymptomCheck")
            .field("symptom", &self.symptom)
            .finish_non_exhaustive()
    }
}

/// How long a runaway kernel thread is watched before it is acted on.
const KTHREAD_WINDOW: Duration = Duration::from_secs(1);

/// Minimum window for measuring a thread's CPU share.
const SHARE_WINDOW: Duration = Duration::from_millis(50);

/// A stuck task that left D must stay out of it this long to count as
/// recovered: a killed task can block again on its way out (a FUSE reader
/// dying waits, uninterruptibly, for the page its own read locked).
const OUT_OF_D_SETTLE: Duration = Duration::from_millis(200);

/// A fork bomb's count must stay below its bound this long to count as
/// recovered: one listing of /proc is not atomic (a member forked into a
/// pid the listing already passed is missed), and a member left alive
/// refills what the kill freed within milliseconds.
const TASKS_LOW_SETTLE: Duration = Duration::from_millis(300);

/// The machine's available memory must stay back up this long to count as
/// recovered: under a kernel leak it flaps as reclaim and compaction free
/// cache and the OOM killer takes a process, each for a moment, while the
/// leak goes on (the hang lab's kmem_leak read "recovered" 6 ms after its
/// diagnosis, and the guest then panicked on memory).
const MEMORY_BACK_SETTLE: Duration = Duration::from_millis(500);

impl SymptomCheck {
    /// A check of `symptom` against the live system.
    pub fn new(
        symptom: Symptom,
        proc_root: &Path,
        stall: Option<Arc<StallShared>>,
        scanner: Option<Arc<std::sync::Mutex<CgroupScanner>>>,
    ) -> SymptomCheck {
        SymptomCheck {
            symptom,
            proc_root: proc_root.to_path_buf(),
            stall,
            scanner,
            last_runtime: None,
            out_of_d_since: None,
            tasks_low_since: None,
            kthread_nvcsw: None,
            memory_back_since: None,
        }
    }

    /// True when the symptom is gone.
    pub fn cleared(&mut self) -> bool {
        match self.symptom.clone() {
            Symptom::CpuStalled { cpu } => self
                .stall
                .as_ref()
                .is_none_or(|s| s.stalled().iter().all(|(c, _)| *c != cpu)),
            Symptom::RtMonopoly {
                pid,
                tid,
                starttime,
                percent,
            } => self.rt_monopoly_cleared(pid, tid, starttime, percent),
            Symptom::Stuck { tasks } => {
                let states: Vec<Option<char>> = tasks
                    .iter()
                    .map(|&(pid, tid, st)| self.state_of(pid, tid, st))
                    .collect();
                if states.iter().all(Option::is_none) {
                    return true; // all gone
                }
                if states.contains(&Some('D')) {
                    self.out_of_d_since = None;
                    return false;
                }
                let since = *self.out_of_d_since.get_or_insert_with(Instant::now);
                since.elapsed() >= OUT_OF_D_SETTLE
            }
            // Live members, not pids.current: killed tasks stay counted
            // there until their (re-parented) zombies are reaped, which on
            // some inits takes a second or more.
            Symptom::CgroupTasks { path, below } => {
                let low = self.members(&path) < below as usize;
                self.settled_low(low)
            }
            Symptom::CgroupMemory { path, percent } => self
                .cgroup(&path)
                .and_then(|u| u.memory)
                .is_none_or(|m| m.percent() < percent),
            Symptom::TreeTasks { target, below } => {
                let low = self.blamed_count(&target) < below;
                self.settled_low(low)
            }
            Symptom::MachineMemory { available_percent } => {
                let text = std::fs::read(self.proc_root.join("meminfo")).unwrap_or_default();
                let mut m = selfheal_procfs::meminfo::MemInfo::default();
                selfheal_procfs::meminfo::parse_meminfo(&text, &mut m);
                let back = m.available_bytes.is_some_and(|a| {
                    a as f64 * 100.0 / m.total_bytes.max(1) as f64 >= available_percent
                });
                if !back {
                    self.memory_back_since = None;
                    return false;
                }
                let since = *self.memory_back_since.get_or_insert_with(Instant::now);
                since.elapsed() >= MEMORY_BACK_SETTLE
            }
            Symptom::KthreadSpin { tid, starttime } => {
                if self.state_of(tid, tid, starttime).is_none() {
                    return true;
                }
                let now = crate::classify::voluntary_switches(&self.proc_root, tid, tid);
                let first = *self.kthread_nvcsw.get_or_insert(now.unwrap_or(0));
                now.is_some_and(|n| n > first)
            }
            Symptom::Unverifiable => false,
        }
    }

    /// Whether a count has been low for [`TASKS_LOW_SETTLE`], given
    /// whether it is low now.
    fn settled_low(&mut self, low: bool) -> bool {
        if !low {
            self.tasks_low_since = None;
            return false;
        }
        let since = *self.tasks_low_since.get_or_insert_with(Instant::now);
        since.elapsed() >= TASKS_LOW_SETTLE
    }

    fn task_file(&self, pid: i32, tid: i32, name: &str) -> Option<String> {
        std::fs::read_to_string(
            self.proc_root
                .join(pid.to_string())
                .join("task")
                .join(tid.to_string())
                .join(name),
        )
        .ok()
    }

    fn rt_monopoly_cleared(&mut self, pid: i32, tid: i32, starttime: u64, percent: f64) -> bool {
        let Some(stat) = self
            .task_file(pid, tid, "stat")
            .and_then(|t| parse_task_stat(&t))
        else {
            return true; // gone
        };
        if stat.starttime_ticks != starttime
            || !matches!(stat.policy, 1 | 2 | 6)
            || matches!(stat.state, 'T' | 't' | 'Z' | 'X')
        {
            return true;
        }
        let Some(run) = self
            .task_file(pid, tid, "schedstat")
            .and_then(|t| parse_schedstat(&t))
            .map(|s| s.runtime_ns)
        else {
            return false;
        };
        let now = Instant::now();
        match self.last_runtime {
            Some((r0, t0)) if now - t0 >= SHARE_WINDOW => {
                self.last_runtime = Some((run, now));
                let share = run.saturating_sub(r0) as f64 / (now - t0).as_nanos() as f64;
                share * 100.0 < percent
            }
            Some(_) => false,
            None => {
                self.last_runtime = Some((run, now));
                false
            }
        }
    }

    /// The thread's state, `None` when it is gone (or its tid was reused).
    fn state_of(&self, pid: i32, tid: i32, starttime: u64) -> Option<char> {
        self.task_file(pid, tid, "stat")
            .and_then(|t| parse_task_stat(&t))
            .filter(|s| s.starttime_ticks == starttime && !matches!(s.state, 'Z' | 'X'))
            .map(|s| s.state)
    }

    fn members(&self, path: &str) -> usize {
        self.scanner.as_ref().map_or(0, |s| {
            s.lock()
                .unwrap_or_else(|p| p.into_inner())
                .members(path)
                .len()
        })
    }

    fn cgroup(&self, path: &str) -> Option<crate::cgroups::CgroupUsage> {
        let scanner = self.scanner.as_ref()?;
        let mut s = scanner.lock().unwrap_or_else(|p| p.into_inner());
        s.set_detail_above(None);
        s.scan().into_iter().find(|u| u.path == path)
    }

    /// Live processes `target` blames (recovery's own definition), read
    /// lightly: `stat` of every process, `status` only for those whose
    /// command a program blame names.
    fn blamed_count(&self, target: &Target) -> usize {
        let comm = match &target.blame {
            Blame::Program(scope) => Some(scope.comm.as_str()),
            Blame::Tree | Blame::Cgroup => None,
        };
        let all: Vec<ProcInfo> = list_pids(&self.proc_root)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|pid| {
                let dir = self.proc_root.join(pid.to_string());
                let s = parse_task_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
                let uid = if comm == Some(s.comm.as_str()) {
                    owner_uid(&dir)
                } else {
                    None
                };
                Some(ProcInfo {
                    pid,
                    ppid: s.ppid,
                    kernel_thread: s.is_kernel_thread(),
                    comm: s.comm,
                    starttime: s.starttime_ticks,
                    uid,
                    cgroups: Vec::new(),
                    unit: None,
                    pgid: s.pgrp,
                    sid: s.session,
                    state: s.state,
                })
            })
            .collect();
        blamed_set(&all, target, &[]).len()
    }

    /// Measures the symptom now, with what was measured.
    pub fn recheck(&mut self) -> Recheck {
        let (present, what) = match self.symptom.clone() {
            Symptom::CpuStalled { cpu } => {
                let stalled = self
                    .stall
                    .as_ref()
                    .and_then(|s| s.stalled().into_iter().find(|(c, _)| *c == cpu));
                match stalled {
                    Some((_, d)) => (true, format!("cpu {cpu} stalled for {} ms", d.as_millis())),
                    None if self.stall.is_none() => return Recheck::Unverifiable,
                    None => (false, format!("cpu {cpu} is no longer stalled")),
                }
            }
            Symptom::RtMonopoly {
                pid,
                tid,
                starttime,
                percent,
            } => match self.rt_share(pid, tid, starttime) {
                Ok(share) => (
                    share >= percent,
                    format!(
                        "thread {tid} ran {share:.0}% of the last {} ms (monopoly from {percent:.0}%)",
                        SHARE_WINDOW.as_millis()
                    ),
                ),
                Err(why) => (false, why.to_string()),
            },
            Symptom::Stuck { tasks } => {
                let in_d = tasks
                    .iter()
                    .filter(|&&(pid, tid, st)| self.state_of(pid, tid, st) == Some('D'))
                    .count();
                (
                    in_d > 0,
                    format!("{in_d} of {} stuck threads still in D", tasks.len()),
                )
            }
            Symptom::CgroupTasks { path, below } => {
                let n = self.members(&path);
                (
                    n >= below as usize,
                    format!("{path} holds {n} processes (cleared below {below})"),
                )
            }
            Symptom::TreeTasks { target, below } => {
                let n = self.blamed_count(&target);
                (
                    n >= below,
                    format!("{n} blamed processes live (cleared below {below})"),
                )
            }
            Symptom::CgroupMemory { path, percent } => {
                match self.cgroup(&path).and_then(|u| u.memory) {
                    Some(m) => (
                        m.percent() >= percent,
                        format!(
                            "{path} at {:.0}% of its memory limit (cleared below {percent:.0}%)",
                            m.percent()
                        ),
                    ),
                    None => (false, format!("{path} has no memory limit any more")),
                }
            }
            Symptom::MachineMemory { available_percent } => {
                let text = std::fs::read(self.proc_root.join("meminfo")).unwrap_or_default();
                let mut m = selfheal_procfs::meminfo::MemInfo::default();
                selfheal_procfs::meminfo::parse_meminfo(&text, &mut m);
                let Some(a) = m.available_bytes else {
                    return Recheck::Unverifiable;
                };
                let pct = a as f64 * 100.0 / m.total_bytes.max(1) as f64;
                (
                    pct < available_percent,
                    format!(
                        "{pct:.1}% of memory available (cleared from {available_percent:.1}%)"
                    ),
                )
            }
            Symptom::KthreadSpin { tid, starttime } => self
                .kthread_spin(tid, starttime)
                .unwrap_or_else(|why| (false, why.to_string())),
            Symptom::Unverifiable => return Recheck::Unverifiable,
        };
        if present {
            Recheck::Present(what)
        } else {
            Recheck::Cleared(what)
        }
    }

    /// Whether a kernel thread still spins over [`KTHREAD_WINDOW`]: it never
    /// slept (no voluntary context switch) and was runnable nearly all of
    /// it. Whether it does and what was measured, or why it cannot.
    fn kthread_spin(&self, tid: i32, starttime: u64) -> Result<(bool, String), Unmeasurable> {
        let read = || -> Result<(u64, u64, u64), Unmeasurable> {
            if self.state_of(tid, tid, starttime).is_none() {
                return Err(Unmeasurable::KthreadGone(tid));
            }
            let s = self
                .task_file(tid, tid, "schedstat")
                .and_then(|t| parse_schedstat(&t))
                .ok_or(Unmeasurable::KthreadSchedstat(tid))?;
            let n = crate::classify::voluntary_switches(&self.proc_root, tid, tid)
                .ok_or(Unmeasurable::KthreadStatus(tid))?;
            Ok((s.runtime_ns, s.wait_ns, n))
        };
        let (r0, w0, n0) = read()?;
        let t0 = Instant::now();
        std::thread::sleep(KTHREAD_WINDOW);
        let (r1, w1, n1) = read()?;
        let ns = t0.elapsed().as_nanos().max(1) as f64;
        let run = r1.saturating_sub(r0) as f64 / ns * 100.0;
        let runnable = (r1.saturating_sub(r0) + w1.saturating_sub(w0)) as f64 / ns * 100.0;
        let what = format!(
            "kernel thread {tid} ran {run:.0}% and was runnable {:.0}% of {} ms with {} voluntary switches",
            runnable.min(100.0),
            KTHREAD_WINDOW.as_millis(),
            n1.saturating_sub(n0)
        );
        Ok((n1 == n0 && runnable >= 90.0, what))
    }

    /// A real-time thread's share of a fresh [`SHARE_WINDOW`], percent; or
    /// why it no longer monopolises anything.
    fn rt_share(&self, pid: i32, tid: i32, starttime: u64) -> Result<f64, Unmeasurable> {
        let runtime = || -> Result<u64, Unmeasurable> {
            let stat = self
                .task_file(pid, tid, "stat")
                .and_then(|t| parse_task_stat(&t))
                .filter(|s| s.starttime_ticks == starttime)
                .ok_or(Unmeasurable::Gone(tid))?;
            if !matches!(stat.policy, 1 | 2 | 6) {
                return Err(Unmeasurable::NotRealTime(tid));
            }
            if matches!(stat.state, 'T' | 't' | 'Z' | 'X') {
                return Err(Unmeasurable::Stopped(tid));
            }
            self.task_file(pid, tid, "schedstat")
                .and_then(|t| parse_schedstat(&t))
                .map(|s| s.runtime_ns)
                .ok_or(Unmeasurable::Schedstat(tid))
        };
        let (r0, t0) = (runtime()?, Instant::now());
        std::thread::sleep(SHARE_WINDOW);
        let r1 = runtime()?;
        Ok(r1.saturating_sub(r0) as f64 * 100.0 / t0.elapsed().as_nanos().max(1) as f64)
    }
}

/// Why a thread's symptom can no longer be measured: it is gone or changed,
/// so the symptom counts as cleared with this as the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Unmeasurable {
    #[error("kernel thread {0} is gone")]
    KthreadGone(i32),
    #[error("kernel thread {0} has no schedstat")]
    KthreadSchedstat(i32),
    #[error("kernel thread {0} has no status")]
    KthreadStatus(i32),
    #[error("thread {0} is gone")]
    Gone(i32),
    #[error("thread {0} is no longer real-time")]
    NotRealTime(i32),
    #[error("thread {0} is stopped or exited")]
    Stopped(i32),
    #[error("thread {0} has no schedstat")]
    Schedstat(i32),
}

impl SymptomProbe for SymptomCheck {
    fn cleared(&mut self) -> bool {
        SymptomCheck::cleared(self)
    }

    fn recheck(&mut self) -> Recheck {
        SymptomCheck::recheck(self)
    }
}

fn owner_uid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_child_clears_when_stopped_or_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let read = || {
            parse_task_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap()).unwrap()
        };
        // Until it sleeps: a child still in exec can be briefly in D (page
        // faults) on a busy machine, which would restart the settle time.
        let t0 = Instant::now();
        while read().state != 'S' && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stat = read();
        let mut stuck = SymptomCheck::new(
            Symptom::Stuck {
                tasks: vec![(pid, pid, stat.starttime_ticks)],
            },
            Path::new("/proc"),
            None,
            None,
        );
        // Sleeping (S), not D: not stuck once it stays so for a moment.
        assert!(!stuck.cleared());
        assert!(matches!(stuck.recheck(), Recheck::Cleared(m) if m.contains("0 of 1")));
        std::thread::sleep(OUT_OF_D_SETTLE);
        assert!(stuck.cleared());
        let mut tree = SymptomCheck::new(
            Symptom::TreeTasks {
                target: Target::tree(pid, stat.starttime_ticks),
                below: 1,
            },
            Path::new("/proc"),
            None,
            None,
        );
        assert!(!tree.cleared(), "a live root counts itself");
        assert!(matches!(tree.recheck(), Recheck::Present(m) if m.contains("1 blamed")));
        // A normal-policy thread is not a real-time monopoly.
        let mut rt = SymptomCheck::new(
            Symptom::RtMonopoly {
                pid,
                tid: pid,
                starttime: stat.starttime_ticks,
                percent: 80.0,
            },
            Path::new("/proc"),
            None,
            None,
        );
        assert!(rt.cleared());
        assert!(matches!(rt.recheck(), Recheck::Cleared(m) if m.contains("no longer real-time")));
        child.kill().unwrap();
        child.wait().unwrap();
        // Gone, but one listing is not proof: the count must stay at zero.
        assert!(!tree.cleared(), "cleared at the first empty listing");
        std::thread::sleep(TASKS_LOW_SETTLE);
        assert!(tree.cleared());
        assert!(
            SymptomCheck::new(Symptom::Unverifiable, Path::new("/proc"), None, None)
                .cleared()
                .eq(&false)
        );
    }

    /// Available memory back above the bound for a moment is not recovery:
    /// it must stay there; a dip starts the wait again.
    #[test]
    fn machine_memory_clears_only_when_it_stays_back() {
        let root = tempfile::tempdir().unwrap();
        let set = |avail_kb: u64| {
            std::fs::write(
                root.path().join("meminfo"),
                format!(
                    "MemTotal: 1000000 kB\nMemFree: {avail_kb} kB\nMemAvailable: {avail_kb} kB\n"
                ),
            )
            .unwrap()
        };
        let mut c = SymptomCheck::new(
            Symptom::MachineMemory {
                available_percent: 20.0,
            },
            root.path(),
            None,
            None,
        );
        set(100_000);
        assert!(!c.cleared(), "10% < 20%");
        assert!(matches!(c.recheck(), Recheck::Present(m) if m.contains("10.0% of memory")));
        set(300_000);
        assert!(!c.cleared(), "back up for a moment only");
        std::thread::sleep(MEMORY_BACK_SETTLE / 2);
        set(150_000);
        assert!(!c.cleared(), "dipped again");
        set(300_000);
        assert!(!c.cleared(), "the wait starts again");
        std::thread::sleep(MEMORY_BACK_SETTLE);
        assert!(c.cleared());
    }
}
