//! CPU-level hangs: a real-time task monopolising a CPU (`rt_hog`) and a
//! CPU stalled in the kernel (`kernel_stall`).
//!
//! A kernel thread that held a CPU not stalled (it is preemptible, so the
//! canary runs) for at least half the interval, runnable throughout, is a
//! `runaway_kthread`, unless it is one whose long runs are its job (reclaim,
//! compaction, softirq processing, migration, RCU).
//!
//! A CPU is *stalled* when the stall detector's canary on it has not run
//! for the bound, or the kernel reported a lockup or RCU stall on it. Who
//! ran there: the thread with the most run time on that CPU between the
//! snapshots. A real-time user thread that ran most of the interval is an
//! RT hog, stalled CPU or not. On a stalled CPU anything else (a kernel
//! thread, a task looping in a system call, or nothing accounted at all
//! because interrupts are off) is a kernel stall.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use selfheal_event::Culprit;

use super::evidence::{DiagnosisEvidence, KernelReportEvidence, TaskEvidence};
use super::{round1, Deltas, Diagnoser, Observation, TaskDelta};
use crate::class::{Diagnosis, Symptom};
use selfheal_event::Class;

pub(super) fn diagnose(dx: &Diagnoser, obs: &Observation<'_>, d: &Deltas<'_>) -> Vec<Diagnosis> {
    let mut stalled: BTreeMap<u32, Option<Duration>> = BTreeMap::new();
    for &(cpu, dur) in obs.stalled_cpus {
        stalled.insert(cpu, Some(dur));
    }
    for r in obs.kernel.iter().filter(|r| r.kind.is_cpu_stall()) {
        if let Some(cpu) = r.cpu {
            stalled.entry(cpu).or_insert(None);
        }
    }
    let mono = dx.thresholds.monopoly_percent / 100.0;
    let mut cpus: Vec<u32> = d
        .tasks
        .iter()
        .filter_map(|t| t.after.stat.processor)
        .collect();
    cpus.extend(stalled.keys().copied());
    cpus.sort_unstable();
    cpus.dedup();

    let mut out = Vec::new();
    for cpu in cpus {
        let mut runners: Vec<&TaskDelta<'_>> = d
            .tasks
            .iter()
            .filter(|t| t.after.stat.processor == Some(cpu) && !dx.is_own(t.after.pid))
            .collect();
        runners.sort_by_key(|t| std::cmp::Reverse(t.runtime_ns));
        let top = runners.first().copied();
        let share = top.map_or(0.0, |t| d.share(t));
        let is_stalled = stalled.contains_key(&cpu);
        let rt =
            top.is_some_and(|t| is_realtime(t.after.stat.policy) && !t.after.is_kernel_thread());
        let kernel = Diagnoser::kernel_reports(obs, |r| {
            r.cpu == Some(cpu) || r.kind.as_str() == "rt_throttling"
        });
        let waiting: Vec<Waiting> = runners
            .iter()
            .skip(1)
            .filter(|t| t.wait_ns > 0 && matches!(t.after.stat.state, 'R'))
            .take(5)
            .map(|t| Waiting {
                pid: t.after.pid,
                comm: t.after.stat.comm.clone(),
                wait_ms: t.wait_ns as f64 / 1e6,
            })
            .collect();
        let stall_ms = stalled
            .get(&cpu)
            .copied()
            .flatten()
            .map(|s| s.as_millis() as u64);

        if let (Some(top), true) = (top, rt && share >= mono) {
            let (mut culprit, target) = dx.culprit_of(top.after);
            culprit.cpu = Some(cpu);
            let t = top.after;
            out.push(Diagnosis {
                class: Class::RtHog,
                summary: format!(
                    "rt_hog: {} pid {} (tid {}, {} priority {}) ran {:.0}% of cpu {}{}",
                    t.stat.comm,
                    t.pid,
                    t.tid,
                    super::policy_name(t.stat.policy),
                    t.stat.rt_priority,
                    share * 100.0,
                    cpu,
                    stall_ms.map_or(String::new(), |ms| format!("; cpu stalled for {ms} ms")),
                ),
                culprit,
                target: Some(target),
                evidence: DiagnosisEvidence::RtHog(RtHogEvidence {
                    cpu,
                    cpu_stalled_ms: stall_ms,
                    culprit: dx.task_evidence(t, Some((top, share))),
                    runnable_waiting_on_cpu: waiting,
                    kernel_reports: kernel,
                    interval_ms: d.interval.as_secs_f64() * 1000.0,
                }),
                blocker: None,
                symptom: Symptom::RtMonopoly {
                    tid: t.tid,
                    pid: t.pid,
                    starttime: t.stat.starttime_ticks,
                    percent: dx.thresholds.monopoly_percent,
                },
                no_target: None,
                restart_veto: None,
            });
            continue;
        }
        if !is_stalled {
            if let Some(k) = top.and_then(|t| runaway_kthread(dx, d, cpu, t)) {
                out.push(k);
            }
            continue;
        }
        // Kernel stall. The culprit is whoever held the CPU: the top runner
        // if it ran at all, else the thread last seen runnable there.
        let suspect = top
            .filter(|t| d.share(t) > 0.05)
            .map(|t| t.after)
            .or_else(|| {
                obs.after.tasks.iter().find(|t| {
                    t.stat.processor == Some(cpu) && t.stat.state == 'R' && !dx.is_own(t.pid)
                })
            });
        let (culprit, target, culprit_json) = match suspect {
            Some(t) => {
                let (mut c, target) = dx.culprit_of(t);
                c.cpu = Some(cpu);
                let delta = top
                    .filter(|d| d.after.tid == t.tid)
                    .map(|x| (x, d.share(x)));
                (c, Some(target), Some(dx.task_evidence(t, delta)))
            }
            None => (
                Culprit {
                    cpu: Some(cpu),
                    ..Culprit::default()
                },
                None,
                None,
            ),
        };
        let stack = suspect.and_then(|t| dx.stack_of(t.pid, t.tid));
        let who = suspect.map_or("nothing accounted (interrupts off?)".to_string(), |t| {
            format!(
                "{} pid {}{}",
                t.stat.comm,
                t.pid,
                if t.is_kernel_thread() {
                    " (kernel thread)"
                } else {
                    " in the kernel"
                }
            )
        });
        out.push(Diagnosis {
            class: Class::KernelStall,
            summary: format!(
                "kernel_stall: cpu {cpu} makes no scheduling progress{}; on it: {who}",
                stall_ms.map_or(String::new(), |ms| format!(" for {ms} ms")),
            ),
            culprit,
            target,
            evidence: DiagnosisEvidence::KernelStall(StallEvidence {
                cpu,
                cpu_stalled_ms: stall_ms,
                top_share_percent: round1(share * 100.0),
                culprit: culprit_json,
                kernel_stack: stack,
                kernel_reports: kernel,
                interval_ms: d.interval.as_secs_f64() * 1000.0,
            }),
            blocker: None,
            symptom: Symptom::CpuStalled { cpu },
            no_target: None,
            restart_veto: None,
        });
    }
    out
}

/// Kernel threads whose long runs are their job: memory reclaim and
/// compaction, softirq processing, task migration, RCU, CPU hotplug.
const BUSY_BY_DESIGN: &[&str] = &[
    "kswapd",
    "kcompactd",
    "khugepaged",
    "ksoftirqd/",
    "migration/",
    "rcu_",
    "cpuhp/",
    "idle_inject/",
];

/// Share of the interval a runaway kernel thread runs, at least.
const KTHREAD_RUN_SHARE: f64 = 0.5;
/// Share of the interval it is runnable (running or waiting for the CPU).
const KTHREAD_RUNNABLE_SHARE: f64 = 0.9;

/// A kernel thread on a CPU that is not stalled, running at least half the
/// interval and runnable all of it (it never slept): a runaway kernel
/// thread. Its voluntary context switches are re-checked over a second
/// before anything acts on it (`Symptom::KthreadSpin`).
fn runaway_kthread(
    dx: &Diagnoser,
    d: &Deltas<'_>,
    cpu: u32,
    t: &TaskDelta<'_>,
) -> Option<Diagnosis> {
    let a = t.after;
    if !a.is_kernel_thread()
        || dx.is_own(a.pid)
        || a.stat.state != 'R'
        || t.before.stat.state != 'R'
        || BUSY_BY_DESIGN.iter().any(|p| a.stat.comm.starts_with(p))
    {
        return None;
    }
    let interval = d.interval.as_nanos() as f64;
    let run = d.share(t);
    let runnable = (t.runtime_ns + t.wait_ns) as f64 / interval;
    if run < KTHREAD_RUN_SHARE || runnable < KTHREAD_RUNNABLE_SHARE {
        return None;
    }
    let (mut culprit, mut target) = dx.culprit_of(a);
    culprit.cpu = Some(cpu);
    // A kernel thread has no descendants to blame with it.
    target.pid = a.tid;
    target.starttime = a.stat.starttime_ticks;
    let nvcsw = dx.voluntary_switches(a.pid, a.tid);
    Some(Diagnosis {
        class: Class::RunawayKthread,
        summary: format!(
            "runaway_kthread: kernel thread {} pid {} ran {:.0}% of cpu {} and was runnable {:.0}% of {} ms without sleeping; the cpu is not stalled (it is preemptible)",
            a.stat.comm,
            a.tid,
            run * 100.0,
            cpu,
            runnable.min(1.0) * 100.0,
            d.interval.as_millis()
        ),
        culprit,
        target: Some(target),
        evidence: DiagnosisEvidence::RunawayKthread(KthreadEvidence {
            cpu,
            culprit: dx.task_evidence(a, Some((t, run))),
            runnable_percent: round1(runnable * 100.0),
            voluntary_context_switches: nvcsw,
            kernel_stack: dx.stack_of(a.pid, a.tid),
            interval_ms: d.interval.as_secs_f64() * 1000.0,
        }),
        blocker: None,
        symptom: Symptom::KthreadSpin {
            tid: a.tid,
            starttime: a.stat.starttime_ticks,
        },
        no_target: None,
        restart_veto: None,
    })
}

/// SCHED_FIFO, SCHED_RR and SCHED_DEADLINE all beat normal tasks outright.
pub(super) fn is_realtime(policy: u32) -> bool {
    matches!(policy, 1 | 2 | 6)
}

/// A thread waiting runnable on a monopolised CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    pub pid: i32,
    pub comm: String,
    /// Time it waited over the interval, ms.
    pub wait_ms: f64,
}

/// `evidence` of an `rt_hog` diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RtHogEvidence {
    pub cpu: u32,
    /// How long the CPU's stall canary had not run; `null` when it ran.
    pub cpu_stalled_ms: Option<u64>,
    /// The real-time thread.
    pub culprit: TaskEvidence,
    /// Threads waiting runnable on the CPU (at most 5).
    pub runnable_waiting_on_cpu: Vec<Waiting>,
    /// Kernel reports about the CPU or RT throttling.
    pub kernel_reports: Vec<KernelReportEvidence>,
    pub interval_ms: f64,
}

/// `evidence` of a `kernel_stall` diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallEvidence {
    pub cpu: u32,
    pub cpu_stalled_ms: Option<u64>,
    /// The top runner's share of the interval, percent.
    pub top_share_percent: f64,
    /// Whoever held the CPU; `null` when nothing ran.
    pub culprit: Option<TaskEvidence>,
    /// Its kernel stack, when readable.
    pub kernel_stack: Option<Vec<String>>,
    pub kernel_reports: Vec<KernelReportEvidence>,
    pub interval_ms: f64,
}

/// `evidence` of a `runaway_kthread` diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KthreadEvidence {
    pub cpu: u32,
    /// The kernel thread.
    pub culprit: TaskEvidence,
    /// Share of the interval it was runnable, percent.
    pub runnable_percent: f64,
    /// Unchanged while it never sleeps; `null` when unreadable.
    pub voluntary_context_switches: Option<u64>,
    pub kernel_stack: Option<Vec<String>>,
    pub interval_ms: f64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use selfheal_event::details_value;

    /// Each evidence document is exactly the JSON the old `json!`
    /// literals built, unknown values `null`.
    #[test]
    fn cpu_evidence_matches_the_documented_json() {
        let task_ev = TaskEvidence {
            pid: 5,
            tid: 5,
            comm: "spin".into(),
            state: "R".into(),
            cpu: Some(1),
            policy: "SCHED_FIFO".into(),
            rt_priority: 50,
            nice: 0,
            ppid: 1,
            rss_bytes: 4096,
            kernel_thread: false,
            wchan: None,
            uid: Some(0),
            cpu_use: None,
        };
        let report_ev = KernelReportEvidence {
            verdict: selfheal_kmsg::VerdictKind::SoftLockup,
            headline: "BUG: soft lockup".into(),
            cpu: Some(1),
            pid: None,
            comm: None,
            kernel_ts_us: 5,
        };
        // Their own shapes are checked in evidence.rs.
        let task = details_value(&task_ev);
        let report = details_value(&report_ev);
        let rt = RtHogEvidence {
            cpu: 1,
            cpu_stalled_ms: None,
            culprit: task_ev.clone(),
            runnable_waiting_on_cpu: vec![Waiting {
                pid: 6,
                comm: "sh".into(),
                wait_ms: 12.5,
            }],
            kernel_reports: vec![report_ev],
            interval_ms: 100.0,
        };
        assert_eq!(
            details_value(&rt),
            json!({
                "cpu": 1, "cpu_stalled_ms": null, "culprit": task,
                "runnable_waiting_on_cpu": [{"pid": 6, "comm": "sh", "wait_ms": 12.5}],
                "kernel_reports": [report], "interval_ms": 100.0,
            })
        );
        let stall = StallEvidence {
            cpu: 0,
            cpu_stalled_ms: Some(900),
            top_share_percent: 0.0,
            culprit: None,
            kernel_stack: Some(vec!["[<0>] schedule+0x1".into()]),
            kernel_reports: vec![],
            interval_ms: 250.0,
        };
        assert_eq!(
            details_value(&stall),
            json!({
                "cpu": 0, "cpu_stalled_ms": 900, "top_share_percent": 0.0, "culprit": null,
                "kernel_stack": ["[<0>] schedule+0x1"], "kernel_reports": [],
                "interval_ms": 250.0,
            })
        );
        let k = KthreadEvidence {
            cpu: 2,
            culprit: task_ev,
            runnable_percent: 99.9,
            voluntary_context_switches: None,
            kernel_stack: None,
            interval_ms: 100.0,
        };
        assert_eq!(
            details_value(&k),
            json!({
                "cpu": 2, "culprit": task, "runnable_percent": 99.9,
                "voluntary_context_switches": null, "kernel_stack": null, "interval_ms": 100.0,
            })
        );
    }
}
