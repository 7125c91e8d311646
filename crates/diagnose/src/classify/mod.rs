//! Diagnosis: from two snapshots and what the sweep and the stall detector
//! know, decide which hang this is (if any), name the culprit and collect
//! the evidence. Pure over its inputs, so it is tested on snapshots
//! recorded while real faults ran.
//!
//! One file per family: [`cpu`] (RT hog, kernel stall), [`blocked`]
//! (D state, I/O stall), [`forkbomb`], [`memory`], [`oom`] (memory
//! cgroups in a fill-and-kill loop). Whatever none of them claims is
//! legitimate load.

mod blocked;
mod cpu;
pub mod evidence;
mod forkbomb;
mod memory;
mod oom;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use selfheal_event::Culprit;
use selfheal_kmsg::KernelReport;

use crate::blocker::BlockerReader;
use crate::cgroups::CgroupUsage;
use crate::class::{Diagnosis, Symptom, Trigger};
use crate::oomloop::OomLoop;
use crate::snapshot::{Snapshot, TaskSample};
use crate::sweep::StuckTask;
use evidence::{
    AbsorbedStall, BusyTask, CpuUse, DiagnosisEvidence, DismissEvidence, KernelReportEvidence,
    TaskEvidence,
};
use selfheal_event::{Class, Target};

/// A fork bomb stalls CPUs too (thousands of tasks forking keep the kernel
/// busy, and under voluntary preemption the canaries wait): when one is
/// found, CPU stalls seen in the same observation are its symptoms. They
/// become evidence of the fork bomb, which goes first, rather than
/// `kernel_stall` diagnoses whose recovery would stop one member of the
/// bomb and call it recovered. A stall that outlives the bomb is diagnosed
/// again on its own.
fn absorb_stalls_into_fork_bomb(out: &mut Vec<Diagnosis>) {
    let Some(bomb) = out.iter().position(|d| d.class == Class::ForkBomb) else {
        return;
    };
    let stalls: Vec<AbsorbedStall> = out
        .iter()
        .filter(|d| d.class == Class::KernelStall)
        .map(|d| AbsorbedStall {
            summary: d.summary.clone(),
            cpu: d.culprit.cpu,
            on_cpu: d.culprit.comm.clone(),
        })
        .collect();
    if stalls.is_empty() {
        return;
    }
    let mut fork_bomb = out.remove(bomb);
    if let DiagnosisEvidence::ForkBomb(e) = &mut fork_bomb.evidence {
        e.cpu_stalls = Some(stalls);
    }
    out.retain(|d| d.class != Class::KernelStall);
    out.insert(0, fork_bomb);
}

/// Thresholds (from `[heavy]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Share of an interval that counts as monopolising a CPU, percent.
    pub monopoly_percent: f64,
    /// D-state bound.
    pub dstate_bound: Duration,
    /// Machine: MemAvailable below this percentage is exhaustion.
    pub mem_available_percent: f64,
    /// Machine: below twice `mem_available_percent` and falling to zero
    /// within this is exhaustion too (zero: off).
    pub mem_exhaustion_horizon: Duration,
    /// Machine: memory no process accounts for, falling to zero within
    /// `mem_exhaustion_horizon`, is imminent exhaustion below this.
    pub mem_unaccounted_percent: f64,
    /// Machine: PSI memory full avg10 at least this is thrashing.
    pub psi_memory_full: f64,
    /// Cgroup: unreclaimable memory at this share of the limit.
    pub cgroup_memory_percent: f64,
    /// Cgroup: tasks at this share of the pids limit (with refused forks).
    pub cgroup_pids_percent: f64,
    /// Tree/user task count for a fork bomb without pids limit.
    pub fork_bomb_tasks: u32,
}

impl Thresholds {
    /// From the `[heavy]` config section.
    pub fn from_config(c: &selfheal_config::HeavyConfig) -> Thresholds {
        Thresholds {
            monopoly_percent: c.monopoly_percent,
            dstate_bound: c.dstate_bound.get(),
            mem_available_percent: c.mem_available_percent,
            mem_exhaustion_horizon: c.mem_exhaustion_horizon.get(),
            mem_unaccounted_percent: c.mem_unaccounted_percent,
            psi_memory_full: c.psi_memory_full,
            cgroup_memory_percent: c.cgroup_memory_percent,
            cgroup_pids_percent: c.cgroup_pids_percent,
            fork_bomb_tasks: c.fork_bomb_tasks,
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds::from_config(&selfheal_config::HeavyConfig::default())
    }
}

/// Everything diagnosis looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// What woke the detector.
    pub trigger: &'a Trigger,
    /// The first snapshot.
    pub before: &'a Snapshot,
    /// The second snapshot.
    pub after: &'a Snapshot,
    /// CPUs the stall detector currently reports stalled, with for how long.
    pub stalled_cpus: &'a [(u32, Duration)],
    /// Threads in D without progress (from the sweep), oldest first.
    pub stuck: &'a [StuckTask],
    /// Limited cgroups' readings.
    pub cgroups: &'a [CgroupUsage],
    /// Members of the cgroups in `cgroups` that look exhausted, by path.
    pub cgroup_members: &'a HashMap<String, Vec<i32>>,
    /// Kernel reports from the correlation window.
    pub kernel: &'a [KernelReport],
    /// Processes recovery acted on within the settle window, as (pid,
    /// start time): never counted as part of a new fault.
    pub settling: &'a HashSet<(i32, u64)>,
    /// Memory cgroups the kernel's OOM killer keeps killing in (their
    /// members are in `cgroup_members`).
    pub oom_loops: &'a [OomLoop],
}

/// Produces diagnoses.
#[derive(Debug, Clone)]
pub struct Diagnoser {
    /// Thresholds.
    pub thresholds: Thresholds,
    /// procfs root, to read culprits' cgroups and kernel stacks.
    pub proc_root: PathBuf,
    /// Processes that are selfheal itself (never a culprit).
    pub own_pids: Vec<i32>,
    /// Clock ticks per second of /proc times.
    pub clk_tck: u64,
    /// Finds what stuck tasks wait for.
    pub blockers: BlockerReader,
}

impl Diagnoser {
    /// A diagnoser reading culprit details under `proc_root`.
    pub fn new(thresholds: Thresholds, proc_root: &Path) -> Diagnoser {
        Diagnoser {
            thresholds,
            proc_root: proc_root.to_path_buf(),
            own_pids: vec![std::process::id() as i32],
            clk_tck: selfheal_sys::sched::clock_ticks_per_second(),
            blockers: BlockerReader::new(proc_root),
        }
    }

    /// Diagnoses an observation: every hang found, or one `legitimate_load`
    /// dismissal saying why nothing is wrong.
    pub fn diagnose(&self, obs: &Observation<'_>) -> Vec<Diagnosis> {
        let deltas = Deltas::new(obs.before, obs.after, self.clk_tck);
        let mut out = Vec::new();
        out.extend(cpu::diagnose(self, obs, &deltas));
        out.extend(blocked::diagnose(self, obs, &deltas));
        out.extend(forkbomb::diagnose(self, obs, &deltas));
        out.extend(memory::diagnose(self, obs, &deltas));
        out.extend(oom::diagnose(self, obs));
        oom::absorb_limit_diagnoses(&mut out);
        absorb_stalls_into_fork_bomb(&mut out);
        if out.is_empty() {
            out.push(self.dismiss(obs, &deltas));
        }
        out
    }

    /// The legitimate-load verdict, with what was checked.
    fn dismiss(&self, obs: &Observation<'_>, d: &Deltas<'_>) -> Diagnosis {
        let mut busiest: Vec<&TaskDelta<'_>> = d.tasks.iter().collect();
        busiest.sort_by_key(|t| std::cmp::Reverse(t.runtime_ns));
        let top: Vec<BusyTask> = busiest
            .iter()
            .take(5)
            .map(|t| BusyTask {
                pid: t.after.pid,
                tid: t.after.tid,
                comm: t.after.stat.comm.clone(),
                cpu_percent: round1(d.share(t) * 100.0),
                policy: policy_name(t.after.stat.policy).into(),
            })
            .collect();
        let mem = &obs.after.system.mem;
        let avail = mem
            .available_bytes
            .map(|a| round1(a as f64 * 100.0 / mem.total_bytes.max(1) as f64));
        let in_d = obs
            .after
            .tasks
            .iter()
            .filter(|t| t.stat.state == 'D')
            .count();
        let runnable = obs
            .after
            .tasks
            .iter()
            .filter(|t| t.stat.state == 'R')
            .count();
        let why = format!(
            "no hang: {} runnable and {} blocked threads all progressing, no CPU stalled, memory {} available",
            runnable,
            in_d,
            avail.map_or("?".to_string(), |a| format!("{a}%"))
        );
        Diagnosis {
            class: Class::LegitimateLoad,
            culprit: Culprit::default(),
            target: None,
            summary: format!("{} dismissed: {why}", trigger_label(obs.trigger)),
            evidence: DiagnosisEvidence::Dismissed(DismissEvidence {
                reason: why.clone(),
                runnable_threads: runnable,
                d_state_threads: in_d,
                mem_available_percent: avail,
                busiest: top,
                interval_ms: d.interval.as_secs_f64() * 1000.0,
            }),
            blocker: None,
            symptom: Symptom::Unverifiable,
            no_target: None,
            restart_veto: None,
        }
    }

    /// Culprit and target (its process, blamed with its descendants) for
    /// one thread, with cgroup and unit read live.
    pub(crate) fn culprit_of(&self, t: &TaskSample) -> (Culprit, Target) {
        let (cgroup, unit) = self.cgroup_of(t.pid);
        let culprit = Culprit {
            pid: Some(t.pid),
            tid: Some(t.tid),
            comm: Some(t.stat.comm.clone()),
            cgroup,
            unit,
            cpu: t.stat.processor,
            app: None,
            vm: None,
        };
        (culprit, Target::tree(t.pid, self.process_starttime(t)))
    }

    /// The start time of the *process* (its main thread) of `t`.
    fn process_starttime(&self, t: &TaskSample) -> u64 {
        if t.pid == t.tid {
            return t.stat.starttime_ticks;
        }
        std::fs::read_to_string(self.proc_root.join(t.pid.to_string()).join("stat"))
            .ok()
            .and_then(|s| selfheal_procfs::task::parse_task_stat(&s))
            .map_or(t.stat.starttime_ticks, |s| s.starttime_ticks)
    }

    /// The most specific cgroup of `pid` and its systemd unit.
    pub(crate) fn cgroup_of(&self, pid: i32) -> (Option<String>, Option<String>) {
        match selfheal_cgroup::read_pid_cgroup_at(&self.proc_root, pid) {
            Ok(entries) => {
                let best = selfheal_cgroup::most_specific(&entries);
                let path = best.map(|e| e.path.clone());
                let unit = path
                    .as_deref()
                    .and_then(selfheal_cgroup::systemd_unit_of)
                    .map(str::to_string);
                (path, unit)
            }
            Err(_) => (None, None),
        }
    }

    /// A thread, for evidence.
    pub(crate) fn task_evidence(
        &self,
        t: &TaskSample,
        delta: Option<(&TaskDelta<'_>, f64)>,
    ) -> TaskEvidence {
        TaskEvidence {
            pid: t.pid,
            tid: t.tid,
            comm: t.stat.comm.clone(),
            state: t.stat.state.to_string(),
            cpu: t.stat.processor,
            policy: policy_name(t.stat.policy).into(),
            rt_priority: t.stat.rt_priority,
            nice: t.stat.nice,
            ppid: t.stat.ppid,
            rss_bytes: t.stat.rss_pages * selfheal_sys::sched::page_size() as u64,
            kernel_thread: t.is_kernel_thread(),
            wchan: t.wchan.clone(),
            uid: t.uid,
            cpu_use: delta.map(|(d, share)| CpuUse {
                cpu_percent: round1(share * 100.0),
                user_ms: d.user_ticks * 1000 / self.clk_tck.max(1),
                system_ms: d.system_ticks * 1000 / self.clk_tck.max(1),
                timeslices: d.timeslices,
                wait_ms: d.wait_ns as f64 / 1e6,
            }),
        }
    }

    /// Kernel reports matching a CPU or a pid, for evidence.
    pub(crate) fn kernel_reports(
        obs: &Observation<'_>,
        keep: impl Fn(&KernelReport) -> bool,
    ) -> Vec<KernelReportEvidence> {
        obs.kernel
            .iter()
            .filter(|r| keep(r))
            .map(|r| KernelReportEvidence {
                verdict: r.kind,
                headline: r.headline.clone(),
                cpu: r.cpu,
                pid: r.pid,
                comm: r.comm.clone(),
                kernel_ts_us: r.ts_us,
            })
            .collect()
    }

    /// `voluntary_ctxt_switches` of a thread: unchanged while it never sleeps.
    pub(crate) fn voluntary_switches(&self, pid: i32, tid: i32) -> Option<u64> {
        voluntary_switches(&self.proc_root, pid, tid)
    }

    /// The kernel stack of a thread (root only), trimmed for evidence.
    pub(crate) fn stack_of(&self, pid: i32, tid: i32) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(
            self.proc_root
                .join(pid.to_string())
                .join("task")
                .join(tid.to_string())
                .join("stack"),
        )
        .ok()?;
        let lines: Vec<String> = text
            .lines()
            .take(24)
            .map(|l| l.trim().to_string())
            .collect();
        (!lines.is_empty()).then_some(lines)
    }

    /// True when a process counts towards a fault: alive (not a zombie or
    /// dead) and not acted upon by recovery within the settle window.
    pub(crate) fn counts(&self, obs: &Observation<'_>, t: &TaskSample) -> bool {
        !matches!(t.stat.state, 'Z' | 'X' | 'x')
            && !obs.settling.contains(&(t.pid, t.stat.starttime_ticks))
    }

    pub(crate) fn is_own(&self, pid: i32) -> bool {
        self.own_pids.contains(&pid)
    }
}

/// `voluntary_ctxt_switches` from `/proc/PID/task/TID/status` under `proc_root`.
pub fn voluntary_switches(proc_root: &Path, pid: i32, tid: i32) -> Option<u64> {
    std::fs::read_to_string(
        proc_root
            .join(pid.to_string())
            .join("task")
            .join(tid.to_string())
            .join("status"),
    )
    .ok()?
    .lines()
    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
    .and_then(|v| v.trim().parse().ok())
}

/// One thread's change between the snapshots.
#[derive(Debug, Clone)]
pub struct TaskDelta<'a> {
    /// The thread in the second snapshot.
    pub after: &'a TaskSample,
    /// The thread in the first snapshot.
    pub before: &'a TaskSample,
    /// Time run, ns.
    pub runtime_ns: u64,
    /// Time waiting for a CPU, ns.
    pub wait_ns: u64,
    /// Times scheduled in.
    pub timeslices: u64,
    /// User ticks.
    pub user_ticks: u64,
    /// System ticks.
    pub system_ticks: u64,
}

/// The deltas of every thread present in both snapshots.
#[derive(Debug)]
pub struct Deltas<'a> {
    /// Per thread.
    pub tasks: Vec<TaskDelta<'a>>,
    /// Time between the snapshots.
    pub interval: Duration,
}

impl<'a> Deltas<'a> {
    fn new(before: &'a Snapshot, after: &'a Snapshot, clk_tck: u64) -> Deltas<'a> {
        let index = before.index();
        let interval = after
            .taken_at
            .saturating_duration_since(before.taken_at)
            .max(Duration::from_millis(1));
        let tasks = after
            .tasks
            .iter()
            .filter_map(|a| {
                let b = index.get(&a.key())?;
                let user = a.stat.utime_ticks.saturating_sub(b.stat.utime_ticks);
                let system = a.stat.stime_ticks.saturating_sub(b.stat.stime_ticks);
                let (runtime_ns, wait_ns, timeslices) = match (a.sched, b.sched) {
                    (Some(x), Some(y)) => (
                        x.runtime_ns.saturating_sub(y.runtime_ns),
                        x.wait_ns.saturating_sub(y.wait_ns),
                        x.timeslices.saturating_sub(y.timeslices),
                    ),
                    _ => ((user + system) * 1_000_000_000 / clk_tck.max(1), 0, 0),
                };
                Some(TaskDelta {
                    after: a,
                    before: b,
                    runtime_ns,
                    wait_ns,
                    timeslices,
                    user_ticks: user,
                    system_ticks: system,
                })
            })
            .collect();
        Deltas { tasks, interval }
    }

    /// Share of the interval a thread ran (0..≈1).
    pub fn share(&self, t: &TaskDelta<'_>) -> f64 {
        t.runtime_ns as f64 / self.interval.as_nanos() as f64
    }
}

/// `SCHED_*` name of a policy number.
pub fn policy_name(policy: u32) -> &'static str {
    match policy {
        0 => "SCHED_OTHER",
        1 => "SCHED_FIFO",
        2 => "SCHED_RR",
        3 => "SCHED_BATCH",
        5 => "SCHED_IDLE",
        6 => "SCHED_DEADLINE",
        _ => "SCHED_UNKNOWN",
    }
}

fn trigger_label(t: &Trigger) -> String {
    match t {
        Trigger::Alert { rule, cpu, .. } => match cpu {
            Some(c) => format!("alert {rule} on cpu {c}"),
            None => format!("alert {rule}"),
        },
        Trigger::Stall { cpu, .. } => format!("stall of cpu {cpu}"),
        Trigger::Watchdog { component, .. } => format!("watchdog ({component})"),
        Trigger::Kernel { verdict, .. } => format!("kernel {}", verdict.as_str()),
        Trigger::DState { .. } => "D-state sweep".to_string(),
        Trigger::Cgroup { path, resource } => format!("{resource} sweep of {path}"),
        Trigger::Manual => "manual check".to_string(),
    }
}

pub(crate) fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
