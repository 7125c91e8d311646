//! Blocked tasks: threads in uninterruptible sleep (D) without progress for
//! the bound, grouped by what they wait for ([`crate::blocker`]).
//!
//! - Tasks held on purpose (frozen cgroup or filesystem, a stopped or
//!   traced FUSE server, throttled I/O) are one `held` record: a
//!   dismissal, never acted on.
//! - The others, per blocker: `io_stall` when they wait for block I/O on a
//!   device with I/O in flight that completes none; otherwise `d_state`.
//!   The culprit is the blocker's process when there is one (the FUSE
//!   server, the lock owner the kernel names), else the thread stuck first
//!   (the others usually wait behind it). Recovery acts on the blocker
//!   only: a FUSE connection to abort, its server; never a waiter.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use selfheal_event::Culprit;

use super::evidence::{DiagnosisEvidence, KernelReportEvidence, TaskEvidence};
use super::{Deltas, Diagnoser, Observation};
use crate::blocker::{stack::IO_WAITS, Blocker, Held, HeldReason};
use crate::class::{Diagnosis, Symptom};
use crate::sweep::StuckTask;
use selfheal_event::{Class, Target};

/// Stuck threads looked at per observation.
const MAX_STUCK: usize = 64;
/// Blockers diagnosed per observation.
const MAX_GROUPS: usize = 4;

/// A device with I/O in flight that completed none while busy.
struct StalledDisk {
    name: String,
    major: u32,
    minor: u32,
    evidence: DiskEvidence,
}

pub(super) fn diagnose(dx: &Diagnoser, obs: &Observation<'_>, d: &Deltas<'_>) -> Vec<Diagnosis> {
    let bound = dx.thresholds.dstate_bound;
    let stuck: Vec<&StuckTask> = obs
        .stuck
        .iter()
        .filter(|s| s.stuck_for >= bound && !dx.is_own(s.pid))
        .take(MAX_STUCK)
        .collect();
    if stuck.is_empty() {
        return Vec::new();
    }
    let stalled = stalled_disks(obs, d);
    let is_stalled = |dev: &str| {
        stalled
            .iter()
            .any(|s| format!("{}:{}", s.major, s.minor) == dev)
    };
    let blockers: Vec<(&StuckTask, Blocker)> = stuck
        .iter()
        .map(|s| {
            let b = dx
                .blockers
                .blocker_of(s.pid, s.tid, s.wchan.as_deref(), obs.kernel);
            // Throttled, but the disk itself completes nothing: a stall.
            let b = match b {
                Blocker::Held(Held::Throttled {
                    device: Some(dev), ..
                }) if is_stalled(&dev) => Blocker::Device {
                    device: dev,
                    mount: None,
                },
                b => b,
            };
            (*s, b)
        })
        .collect();

    let mut out = Vec::new();
    let (held, faults): (Vec<_>, Vec<_>) = blockers.iter().partition(|(_, b)| b.held().is_some());
    if !held.is_empty() {
        out.push(held_diagnosis(dx, &held));
    }
    // Group by blocker, oldest first; a lock whose owner is stuck too goes
    // with its owner's group (the owner is what everyone waits behind).
    let key_of = |b: &Blocker| -> String {
        if let Blocker::Lock { owner_pid, .. } = b {
            if let Some((_, ob)) = faults.iter().find(|(s, _)| s.pid == *owner_pid) {
                if !matches!(ob, Blocker::Lock { .. }) {
                    return ob.key();
                }
            }
        }
        b.key()
    };
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<&(&StuckTask, Blocker)>> = HashMap::new();
    for f in &faults {
        let k = key_of(&f.1);
        if !groups.contains_key(&k) {
            order.push(k.clone());
        }
        groups.entry(k).or_default().push(f);
    }
    for k in order.into_iter().take(MAX_GROUPS) {
        let group = &groups[&k];
        out.push(fault_diagnosis(dx, obs, &stalled, group, &held));
    }
    out
}

/// Why restarting this machine would not end the wait, for blockers that
/// live elsewhere: a network filesystem's server, a FUSE server (aborted
/// or restarted on its own), a frozen filesystem or cgroup.
fn restart_veto(b: &Blocker) -> Option<String> {
    match b {
        Blocker::NetworkFs { server, .. } => Some(format!(
            "the stuck tasks wait for the network filesystem server {server}: restarting this machine does not bring it back"
        )),
        Blocker::Fuse { .. } => Some(
            "the stuck tasks wait for a FUSE server: its connection is aborted or its unit restarted, never the machine"
                .into(),
        ),
        Blocker::Held(_) => Some("held on purpose: never acted on".into()),
        Blocker::Device { .. } | Blocker::Lock { .. } | Blocker::Unknown { .. } => None,
    }
}

fn stalled_disks(obs: &Observation<'_>, d: &Deltas<'_>) -> Vec<StalledDisk> {
    let interval_ms = d.interval.as_millis() as u64;
    obs.after
        .system
        .disks
        .iter()
        .filter_map(|a| {
            let b = obs.before.system.disks.iter().find(|b| b.name == a.name)?;
            let busy = a.io_ticks_ms.saturating_sub(b.io_ticks_ms);
            let done = a.completed.saturating_sub(b.completed);
            (a.in_flight > 0 && done == 0 && busy * 10 >= interval_ms * 9).then(|| StalledDisk {
                name: a.name.clone(),
                major: a.major,
                minor: a.minor,
                evidence: DiskEvidence {
                    device: a.name.to_string(),
                    dev: format!("{}:{}", a.major, a.minor),
                    in_flight: a.in_flight,
                    completed: done,
                    busy_ms: busy,
                },
            })
        })
        .collect()
}

fn task_json(s: &StuckTask, b: &Blocker) -> StuckEvidence {
    StuckEvidence {
        pid: s.pid,
        tid: s.tid,
        comm: s.comm.clone(),
        stuck_ms: s.stuck_for.as_millis() as u64,
        wchan: s.wchan.clone(),
        kernel_thread: s.kernel_thread,
        blocker: b.clone(),
        reason: None,
    }
}

fn tasks_of(group: &[&(&StuckTask, Blocker)]) -> Vec<(i32, i32, u64)> {
    group
        .iter()
        .take(20)
        .map(|(s, _)| (s.pid, s.tid, s.starttime))
        .collect()
}

/// One record for every task held on purpose: a dismissal.
fn held_diagnosis(dx: &Diagnoser, held: &[&(&StuckTask, Blocker)]) -> Diagnosis {
    let list: Vec<StuckEvidence> = held
        .iter()
        .take(20)
        .map(|(s, b)| StuckEvidence {
            reason: b.held().map(|h| h.reason()),
            ..task_json(s, b)
        })
        .collect();
    let named: Vec<String> = held
        .iter()
        .take(3)
        .map(|(s, b)| format!("{} pid {} ({})", s.comm, s.pid, b.describe()))
        .collect();
    let more = held.len().saturating_sub(3);
    Diagnosis {
        class: Class::Held,
        culprit: Culprit::default(),
        target: None,
        summary: format!(
            "held, not hung: {}{}; never acted on",
            named.join("; "),
            if more > 0 {
                format!("; {more} more")
            } else {
                String::new()
            }
        ),
        evidence: DiagnosisEvidence::Held(HeldEvidence {
            bound_ms: dx.thresholds.dstate_bound.as_millis() as u64,
            held: list,
        }),
        blocker: None,
        symptom: Symptom::Stuck {
            tasks: tasks_of(held),
        },
        no_target: Some("held on purpose: never acted on".into()),
        restart_veto: Some("held on purpose: never acted on".into()),
    }
}

/// `d_state` or `io_stall` for the tasks stuck on one blocker.
fn fault_diagnosis(
    dx: &Diagnoser,
    obs: &Observation<'_>,
    stalled: &[StalledDisk],
    group: &[&(&StuckTask, Blocker)],
    held: &[&(&StuckTask, Blocker)],
) -> Diagnosis {
    let (main, blocker) = group
        .iter()
        .find(|(s, _)| !s.kernel_thread)
        .map(|(s, b)| (*s, b))
        .unwrap_or((group[0].0, &group[0].1));
    let waits_for_io = group.iter().any(|(s, _)| {
        s.wchan
            .as_deref()
            .is_some_and(|w| IO_WAITS.iter().any(|p| w.contains(p)))
    });
    // io_stall: the blocker is a stalled device, or (device unknown) the
    // tasks wait for I/O while some device is stalled.
    let stalled_here: Vec<&StalledDisk> = match blocker {
        Blocker::Device { device, .. } => stalled
            .iter()
            .filter(|s| format!("{}:{}", s.major, s.minor) == *device)
            .collect(),
        Blocker::Unknown { .. } if waits_for_io => stalled.iter().collect(),
        _ => Vec::new(),
    };
    let class = if stalled_here.is_empty() {
        Class::DState
    } else {
        Class::IoStall
    };
    let sample_of = |pid: i32, tid: i32| {
        obs.after
            .tasks
            .iter()
            .find(|t| t.pid == pid && t.tid == tid)
    };
    let waiter = obs
        .after
        .tasks
        .iter()
        .find(|t| t.tid == main.tid && t.stat.starttime_ticks == main.starttime);
    let waiter_culprit = || match waiter {
        Some(t) => dx.culprit_of(t).0,
        None => Culprit {
            pid: Some(main.pid),
            tid: Some(main.tid),
            comm: Some(main.comm.clone()),
            ..Culprit::default()
        },
    };
    // The culprit is the blocking process when there is one; recovery may
    // act on a FUSE server, never on a waiter.
    let (culprit, target, recovery_blocker) = match blocker {
        Blocker::Fuse {
            connection,
            mount,
            server,
            ..
        } => {
            let rb = Some(selfheal_recover::Blocker::FuseConnection {
                connection: *connection,
                mount_id: mount.mount_id,
                mount_point: mount.mount_point.clone(),
            });
            match server {
                Some(s) => {
                    let (c, _) = match sample_of(s.pid, s.pid) {
                        Some(t) => dx.culprit_of(t),
                        None => {
                            let (cgroup, unit) = dx.cgroup_of(s.pid);
                            (
                                Culprit {
                                    pid: Some(s.pid),
                                    tid: Some(s.pid),
                                    comm: Some(s.comm.clone()),
                                    cgroup,
                                    unit,
                                    ..Culprit::default()
                                },
                                Target::tree(s.pid, s.starttime),
                            )
                        }
                    };
                    (c, Some(Target::tree(s.pid, s.starttime)), rb)
                }
                None => (waiter_culprit(), None, rb),
            }
        }
        Blocker::Lock {
            owner_pid,
            owner_comm,
            ..
        } => {
            let c = match sample_of(*owner_pid, *owner_pid) {
                Some(t) => dx.culprit_of(t).0,
                None => Culprit {
                    pid: Some(*owner_pid),
                    comm: Some(owner_comm.clone()),
                    ..Culprit::default()
                },
            };
            (c, None, None)
        }
        _ => (waiter_culprit(), None, None),
    };
    let kernel = Diagnoser::kernel_reports(obs, |r| {
        r.kind.as_str() == "hung_task" && group.iter().any(|(s, _)| Some(s.tid) == r.pid)
    });
    let what = match class {
        Class::IoStall => format!(
            "io_stall: I/O stalled on {}; ",
            stalled_here
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "d_state: ".to_string(),
    };
    let on = blocker.describe();
    let summary = format!(
        "{what}{} pid {} stuck in D state for {} ms without being scheduled{}{}{}",
        main.comm,
        main.pid,
        main.stuck_for.as_millis(),
        main.wchan
            .as_deref()
            .map_or(String::new(), |w| format!(" (in {w})")),
        if on.is_empty() {
            String::new()
        } else {
            format!(", waiting on {on}")
        },
        if group.len() > 1 {
            format!("; {} more threads stuck on it", group.len() - 1)
        } else {
            String::new()
        }
    );
    let no_target = target.is_none().then(|| {
        "the stuck tasks are never acted on (they cannot die until they wake) and no blocking process is known"
            .to_string()
    });
    let list: Vec<StuckEvidence> = group
        .iter()
        .take(20)
        .map(|(s, b)| task_json(s, b))
        .collect();
    let held_list: Vec<StuckEvidence> =
        held.iter().take(20).map(|(s, b)| task_json(s, b)).collect();
    Diagnosis {
        class,
        summary,
        culprit,
        target,
        evidence: DiagnosisEvidence::Stuck(Box::new(StuckGroupEvidence {
            bound_ms: dx.thresholds.dstate_bound.as_millis() as u64,
            blocker: blocker.clone(),
            stuck: list,
            waiter: waiter.map(|t| dx.task_evidence(t, None)),
            kernel_stack: dx.stack_of(main.pid, main.tid),
            stalled_devices: stalled_here.iter().map(|d| d.evidence.clone()).collect(),
            held_elsewhere: held_list,
            kernel_reports: kernel,
        })),
        no_target,
        restart_veto: restart_veto(blocker),
        blocker: recovery_blocker,
        symptom: Symptom::Stuck {
            tasks: tasks_of(group),
        },
    }
}

/// A device that completed nothing while busy (`stalled_devices[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskEvidence {
    /// Its name (`sda`, …).
    pub device: String,
    /// `major:minor`.
    pub dev: String,
    pub in_flight: u64,
    /// Requests completed over the interval.
    pub completed: u64,
    pub busy_ms: u64,
}

/// A task stuck in D state (`stuck[]`, `held[]`, `held_elsewhere[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StuckEvidence {
    pub pid: i32,
    pub tid: i32,
    pub comm: String,
    pub stuck_ms: u64,
    pub wchan: Option<String>,
    pub kernel_thread: bool,
    /// What it waits on.
    pub blocker: Blocker,
    /// Why it is held on purpose (in a held diagnosis only; absent
    /// otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<HeldReason>,
}

/// `evidence` of a `held` (dismissed) diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldEvidence {
    /// `heavy.dstate_bound`, ms.
    pub bound_ms: u64,
    /// The held tasks (at most 20).
    pub held: Vec<StuckEvidence>,
}

/// `evidence` of a `d_state` or `io_stall` diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StuckGroupEvidence {
    pub bound_ms: u64,
    /// What the tasks wait on.
    pub blocker: Blocker,
    /// The stuck tasks (at most 20).
    pub stuck: Vec<StuckEvidence>,
    /// The task holding what they wait on, when known.
    pub waiter: Option<TaskEvidence>,
    /// The main stuck task's kernel stack, when readable.
    pub kernel_stack: Option<Vec<String>>,
    pub stalled_devices: Vec<DiskEvidence>,
    /// Tasks held on purpose meanwhile (at most 20).
    pub held_elsewhere: Vec<StuckEvidence>,
    pub kernel_reports: Vec<KernelReportEvidence>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use selfheal_event::details_value;

    /// Each evidence document is exactly the JSON the old `json!`
    /// literals built: `reason` only on held tasks, unknown values `null`.
    #[test]
    fn stuck_evidence_matches_the_documented_json() {
        let b = Blocker::Device {
            device: "8:0".into(),
            mount: None,
        };
        let b_json = json!({"kind": "device", "device": "8:0", "mount": null});
        let task = StuckEvidence {
            pid: 4,
            tid: 5,
            comm: "dd".into(),
            stuck_ms: 3000,
            wchan: None,
            kernel_thread: false,
            blocker: b.clone(),
            reason: None,
        };
        let task_json = json!({"pid": 4, "tid": 5, "comm": "dd", "stuck_ms": 3000,
                               "wchan": null, "kernel_thread": false, "blocker": b_json});
        let disk = DiskEvidence {
            device: "sda".into(),
            dev: "8:0".into(),
            in_flight: 2,
            completed: 0,
            busy_ms: 1000,
        };
        let group = StuckGroupEvidence {
            bound_ms: 2000,
            blocker: b.clone(),
            stuck: vec![task.clone()],
            waiter: None,
            kernel_stack: None,
            stalled_devices: vec![disk],
            held_elsewhere: vec![],
            kernel_reports: vec![],
        };
        assert_eq!(
            details_value(&group),
            json!({
                "bound_ms": 2000, "blocker": b_json, "stuck": [task_json], "waiter": null,
                "kernel_stack": null,
                "stalled_devices": [{"device": "sda", "dev": "8:0", "in_flight": 2,
                                     "completed": 0, "busy_ms": 1000}],
                "held_elsewhere": [], "kernel_reports": [],
            })
        );
        let held = HeldEvidence {
            bound_ms: 2000,
            held: vec![StuckEvidence {
                reason: Some(HeldReason::FrozenCgroup),
                ..task
            }],
        };
        let mut held_task = task_json;
        held_task["reason"] = json!("frozen_cgroup");
        assert_eq!(
            details_value(&held),
            json!({"bound_ms": 2000, "held": [held_task]})
        );
    }
}
