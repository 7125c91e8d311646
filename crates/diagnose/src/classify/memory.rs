//! Memory exhaustion and thrashing, for the whole machine or for one cgroup
//! near its limit.
//!
//! - Machine: MemAvailable below `mem_available_percent`, or PSI memory
//!   `full` avg10 at least `psi_memory_full` (every task stalled on memory),
//!   or below twice `mem_available_percent` and falling fast enough to reach
//!   zero within `mem_exhaustion_horizon` (a fast hog: otherwise the
//!   kernel's OOM killer acts before the level test ever fires).
//! - Cgroup: unreclaimable memory (anon + shmem) at `cgroup_memory_percent`
//!   of the limit. The kernel OOM-kills inside the cgroup when it reaches
//!   100%; we act before that, on the process whose growth caused it.
//!
//! The culprit is the process whose resident set grew most between the
//! snapshots, or the largest one when nothing grew. Machine-wide, a process
//! is blamed only when it accounts for the shortage: its growth is at least
//! a quarter of what MemAvailable lost between the snapshots, or (memory
//! not falling) it holds at least a tenth of the machine; and either way it
//! holds enough that its death lifts MemAvailable back over twice the
//! level (1 % of memory at least: a process that started within the
//! interval has all it holds as growth). Otherwise the
//! memory went to the kernel (a leak, page tables, buffers) or to
//! processes that exited, and the diagnosis names no process: recovery
//! then only records, and never kills a bystander that happened to be the
//! largest.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::evidence::{DiagnosisEvidence, MemoryScope, Name};
use super::{round1, Deltas, Diagnoser, Observation};
use crate::class::{Diagnosis, Symptom};
use crate::snapshot::TaskSample;
use selfheal_event::Class;

pub(super) fn diagnose(dx: &Diagnoser, obs: &Observation<'_>, d: &Deltas<'_>) -> Vec<Diagnosis> {
    let th = &dx.thresholds;
    let page = selfheal_sys::sched::page_size() as u64;
    let before: HashMap<(i32, u64), u64> = obs
        .before
        .processes()
        .iter()
        .map(|t| ((t.pid, t.stat.starttime_ticks), t.stat.rss_pages * page))
        .collect();
    let growth = |t: &TaskSample| -> i64 {
        let now = (t.stat.rss_pages * page) as i64;
        let then = before
            .get(&(t.pid, t.stat.starttime_ticks))
            .copied()
            .unwrap_or(0) as i64;
        now - then
    };
    let candidates = |members: Option<&HashSet<i32>>| -> Vec<&TaskSample> {
        let mut v: Vec<&TaskSample> = obs
            .after
            .processes()
            .into_iter()
            .filter(|t| !t.is_kernel_thread() && !dx.is_own(t.pid))
            .filter(|t| members.is_none_or(|m| m.contains(&t.pid)))
            .collect();
        v.sort_by(|a, b| {
            growth(b)
                .cmp(&growth(a))
                .then(b.stat.rss_pages.cmp(&a.stat.rss_pages))
        });
        v
    };
    let describe = |list: &[&'_ TaskSample]| -> Vec<Holder> {
        list.iter()
            .take(5)
            .map(|t| Holder {
                pid: t.pid,
                comm: t.stat.comm.clone(),
                rss_bytes: t.stat.rss_pages * page,
                rss_growth_bytes: growth(t),
            })
            .collect()
    };
    let per_second = |g: i64| g as f64 / d.interval.as_secs_f64().max(1e-3);

    let mut out = Vec::new();
    for cg in obs.cgroups {
        let Some(m) = cg.memory else { continue };
        if m.percent() < th.cgroup_memory_percent {
            continue;
        }
        let members: HashSet<i32> = obs
            .cgroup_members
            .get(&cg.path)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        let list = candidates(Some(&members));
        let Some(top) = list.first().copied() else {
            continue;
        };
        let (mut culprit, target) = dx.culprit_of(top);
        culprit.cgroup = Some(cg.path.clone());
        out.push(Diagnosis {
            class: Class::MemoryExhaustion,
            summary: format!(
                "memory_exhaustion: cgroup {} at {:.0}% of its {} MiB limit (unreclaimable); {} pid {} holds {} MiB, growing {:.1} MiB/s",
                cg.path,
                m.percent(),
                m.limit_bytes >> 20,
                top.stat.comm,
                top.pid,
                (top.stat.rss_pages * page) >> 20,
                per_second(growth(top)) / (1 << 20) as f64,
            ),
            culprit,
            target: Some(target),
            evidence: DiagnosisEvidence::CgroupMemory(CgroupEvidence {
                scope: MemoryScope::Cgroup,
                cgroup: cg.path.clone(),
                limit_bytes: m.limit_bytes,
                usage_bytes: m.usage_bytes,
                unreclaimable_bytes: m.unreclaimable_bytes,
                percent: round1(m.percent()),
                psi_some_avg10: m.psi_some_avg10,
                psi_full_avg10: m.psi_full_avg10,
                limit_hits: m.limit_hits,
                largest: describe(&list),
            }),
            blocker: None,
            symptom: Symptom::CgroupMemory {
                path: cg.path.clone(),
                percent: th.cgroup_memory_percent,
            },
            no_target: None,
            restart_veto: Some(format!(
                "the shortage is cgroup {}'s: recovery acts inside it, never restarts the machine",
                cg.path
            )),
        });
    }

    let sys = &obs.after.system;
    let avail = sys
        .mem
        .available_bytes
        .map(|a| a as f64 * 100.0 / sys.mem.total_bytes.max(1) as f64);
    let full = sys.psi_memory.and_then(|p| p.full).map(|l| l.avg10);
    let low = avail.is_some_and(|a| a < th.mem_available_percent);
    let thrashing = full.is_some_and(|f| f >= th.psi_memory_full);
    // The trend: how fast MemAvailable fell between the snapshots, and when
    // it would reach zero at that rate.
    let falling = match (
        obs.before.system.mem.available_bytes,
        sys.mem.available_bytes,
    ) {
        (Some(b), Some(a)) if b > a => Some((b - a) as f64 / d.interval.as_secs_f64().max(1e-3)),
        _ => None,
    };
    let eta_s = falling
        .zip(sys.mem.available_bytes)
        .map(|(r, a)| a as f64 / r);
    let trend_below = |percent: f64| {
        !th.mem_exhaustion_horizon.is_zero()
            && avail.is_some_and(|a| a < percent)
            && eta_s.is_some_and(|e| e <= th.mem_exhaustion_horizon.as_secs_f64())
    };
    let imminent = trend_below(2.0 * th.mem_available_percent);
    // A kernel leak is caught higher up: nothing can be killed to stop
    // it, and the restart that can needs seconds (see
    // `mem_unaccounted_percent`). Only when no process accounts for it.
    let unaccounted_level = th
        .mem_unaccounted_percent
        .max(2.0 * th.mem_available_percent);
    let leak_trend = trend_below(unaccounted_level);
    // The level the symptom is re-checked against: the one that fired.
    let level_fired = |trend_level: f64| {
        if low || thrashing {
            th.mem_available_percent
        } else {
            trend_level
        }
    };
    if low || thrashing || imminent || leak_trend {
        let list = candidates(None);
        let fall = match (
            obs.before.system.mem.available_bytes,
            sys.mem.available_bytes,
        ) {
            (Some(b), Some(a)) => b.saturating_sub(a),
            _ => 0,
        };
        // What killing it gives back must matter too: at least what lifts
        // MemAvailable over twice the level, and 1 % of memory at least. A
        // process started within the interval counts all it holds as
        // growth: during a kernel leak a new 1 MiB gzip "grew" a quarter of
        // what the machine lost in 100 ms and was killed for it (the lab's
        // kmem_leak-006).
        let deficit_percent = (2.0 * th.mem_available_percent - avail.unwrap_or(0.0)).max(1.0);
        let gives_back = |t: &TaskSample| {
            (t.stat.rss_pages * page) as f64 * 100.0 >= deficit_percent * sys.mem.total_bytes as f64
        };
        let accounts = |t: &TaskSample| {
            let g = growth(t).max(0) as u64;
            if !gives_back(t) {
                false
            } else if fall > 0 {
                g > 0 && g.saturating_mul(4) >= fall
            } else {
                (t.stat.rss_pages * page).saturating_mul(10) >= sys.mem.total_bytes
            }
        };
        // What the machine looks like, for both summaries below.
        let state = format!(
            "{}{}{}",
            avail.map_or(String::new(), |a| format!("has {a:.1}% memory available")),
            eta_s
                .filter(|_| (imminent || leak_trend) && !low)
                .map_or(String::new(), |e| format!(
                    ", gone in {e:.1} s at the current rate"
                )),
            full.filter(|_| thrashing)
                .map_or(String::new(), |f| format!(
                    ", thrashing (PSI memory full {f:.0}%)"
                )),
        );
        let user_growth: i64 = list.iter().map(|t| growth(t).max(0)).sum();
        // tmpfs and shared memory leave MemAvailable like a leak, but they
        // are files: the OOM killer cannot free them and neither can a
        // restart without losing them. Named, and never restarted for.
        let shmem_growth = sys
            .mem
            .shmem_bytes
            .saturating_sub(obs.before.system.mem.shmem_bytes);
        let shmem_explains = fall > 0 && shmem_growth.saturating_mul(4) >= fall;
        if let Some(top) = list.first().copied().filter(|t| !accounts(t)) {
            out.push(Diagnosis {
                class: Class::MemoryExhaustion,
                summary: format!(
                    "memory_exhaustion: machine {}; no process accounts for it ({} MiB available lost, processes grew {} MiB; largest grower {} pid {}): {}",
                    state,
                    fall >> 20,
                    user_growth >> 20,
                    top.stat.comm,
                    top.pid,
                    if shmem_explains {
                        format!("shared memory and tmpfs grew {} MiB", shmem_growth >> 20)
                    } else {
                        "kernel memory or exited processes".to_string()
                    },
                ),
                culprit: Default::default(),
                target: None,
                evidence: DiagnosisEvidence::UnaccountedMemory(UnaccountedEvidence {
                    scope: MemoryScope::Machine,
                    culprit: "none: no process accounts for the shortage".into(),
                    mem_available_percent: avail.map(round1),
                    available_lost_bytes: fall,
                    process_growth_bytes: user_growth,
                    psi_memory_full_avg10: full,
                    available_falling_bytes_per_second: falling.map(|r| r.round()),
                    seconds_to_exhaustion: eta_s.map(round1),
                    largest: describe(&list),
                    shmem_growth_bytes: shmem_growth,
                }),
                blocker: None,
                // Caught on a trend: cleared only back above the level
                // that trend test watches, as below.
                symptom: Symptom::MachineMemory {
                    available_percent: level_fired(if imminent {
                        2.0 * th.mem_available_percent
                    } else {
                        unaccounted_level
                    }),
                },
                no_target: None,
                restart_veto: shmem_explains.then(|| {
                    format!(
                        "shared memory and tmpfs grew {} MiB of the {} MiB lost: files, not a kernel leak, and a restart would lose them",
                        shmem_growth >> 20,
                        fall >> 20
                    )
                }),
            });
        } else if let Some(top) = list
            .first()
            .copied()
            .filter(|_| low || thrashing || imminent)
        {
            let (culprit, target) = dx.culprit_of(top);
            let majflt = sys
                .vm
                .pgmajfault
                .saturating_sub(obs.before.system.vm.pgmajfault);
            out.push(Diagnosis {
                class: Class::MemoryExhaustion,
                summary: format!(
                    "memory_exhaustion: machine {}; {} pid {} holds {} MiB, growing {:.1} MiB/s",
                    state,
                    top.stat.comm,
                    top.pid,
                    (top.stat.rss_pages * page) >> 20,
                    per_second(growth(top)) / (1 << 20) as f64,
                ),
                culprit,
                target: Some(target),
                evidence: DiagnosisEvidence::MachineMemory(MachineEvidence {
                    scope: MemoryScope::Machine,
                    mem_available_percent: avail.map(round1),
                    psi_memory_full_avg10: full,
                    available_falling_bytes_per_second: falling.map(|r| r.round()),
                    seconds_to_exhaustion: eta_s.map(round1),
                    trend: imminent && !low && !thrashing,
                    major_faults_per_second: round1(
                        majflt as f64 / d.interval.as_secs_f64().max(1e-3),
                    ),
                    largest: describe(&list),
                }),
                blocker: None,
                symptom: Symptom::MachineMemory {
                    // Caught on the trend: cleared only back above the
                    // level the trend test watches.
                    available_percent: level_fired(2.0 * th.mem_available_percent),
                },
                no_target: None,
                restart_veto: Some(format!(
                    "{} pid {} accounts for the shortage: recovery acts on it, never restarts the machine",
                    top.stat.comm, top.pid
                )),
            });
        }
    }
    out
}

/// One of the largest memory holders (`largest[]`, at most 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: i32,
    pub comm: String,
    pub rss_bytes: u64,
    /// RSS gained over the interval (negative: shrank).
    pub rss_growth_bytes: i64,
}

/// `evidence` of a cgroup's `memory_exhaustion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgroupEvidence {
    /// Always `cgroup`.
    pub scope: MemoryScope,
    pub cgroup: String,
    pub limit_bytes: u64,
    pub usage_bytes: u64,
    pub unreclaimable_bytes: u64,
    /// Unreclaimable share of the limit, percent.
    pub percent: f64,
    /// The cgroup's memory PSI `some` avg10, when readable.
    pub psi_some_avg10: Option<f64>,
    /// The cgroup's memory PSI `full` avg10, when readable.
    pub psi_full_avg10: Option<f64>,
    /// `memory.events` `max` count.
    pub limit_hits: Option<u64>,
    pub largest: Vec<Holder>,
}

/// `evidence` of a machine `memory_exhaustion` no process accounts for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnaccountedEvidence {
    /// Always `machine`.
    pub scope: MemoryScope,
    /// Why nobody is blamed.
    pub culprit: Name,
    pub mem_available_percent: Option<f64>,
    pub available_lost_bytes: u64,
    pub process_growth_bytes: i64,
    /// The machine's memory PSI `full` avg10, when readable.
    pub psi_memory_full_avg10: Option<f64>,
    pub available_falling_bytes_per_second: Option<f64>,
    pub seconds_to_exhaustion: Option<f64>,
    pub largest: Vec<Holder>,
    /// Shmem (tmpfs, shared memory) gained over the interval: a quarter
    /// of the loss or more names files, not a kernel leak, and vetoes a
    /// restart. Absent from records written before it existed (read as 0).
    #[serde(default)]
    pub shmem_growth_bytes: u64,
}

/// `evidence` of a machine `memory_exhaustion` a process accounts for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineEvidence {
    /// Always `machine`.
    pub scope: MemoryScope,
    pub mem_available_percent: Option<f64>,
    /// The machine's memory PSI `full` avg10, when readable.
    pub psi_memory_full_avg10: Option<f64>,
    pub available_falling_bytes_per_second: Option<f64>,
    pub seconds_to_exhaustion: Option<f64>,
    /// True when caught on the trend alone (not yet low, not thrashing).
    pub trend: bool,
    pub major_faults_per_second: f64,
    pub largest: Vec<Holder>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use selfheal_event::details_value;

    /// Each evidence document is exactly the JSON the old `json!`
    /// literals built, unknown values `null`.
    #[test]
    fn memory_evidence_matches_the_documented_json() {
        let largest = || {
            vec![Holder {
                pid: 7,
                comm: "hog".into(),
                rss_bytes: 1 << 30,
                rss_growth_bytes: -4096,
            }]
        };
        let largest_json = json!([{"pid": 7, "comm": "hog", "rss_bytes": 1_u64 << 30,
                                   "rss_growth_bytes": -4096}]);
        let cg = CgroupEvidence {
            scope: MemoryScope::Cgroup,
            cgroup: "/a".into(),
            limit_bytes: 100,
            usage_bytes: 99,
            unreclaimable_bytes: 95,
            percent: 95.0,
            psi_some_avg10: Some(12.5),
            psi_full_avg10: None,
            limit_hits: Some(3),
            largest: largest(),
        };
        assert_eq!(
            details_value(&cg),
            json!({
                "scope": "cgroup", "cgroup": "/a", "limit_bytes": 100, "usage_bytes": 99,
                "unreclaimable_bytes": 95, "percent": 95.0, "psi_some_avg10": 12.5,
                "psi_full_avg10": null, "limit_hits": 3, "largest": largest_json,
            })
        );
        let none = UnaccountedEvidence {
            scope: MemoryScope::Machine,
            culprit: "none: no process accounts for the shortage".into(),
            mem_available_percent: Some(3.2),
            available_lost_bytes: 1 << 20,
            process_growth_bytes: 4096,
            psi_memory_full_avg10: None,
            available_falling_bytes_per_second: Some(1e6),
            seconds_to_exhaustion: None,
            largest: largest(),
            shmem_growth_bytes: 0,
        };
        assert_eq!(
            details_value(&none),
            json!({
                "scope": "machine", "culprit": "none: no process accounts for the shortage",
                "mem_available_percent": 3.2, "available_lost_bytes": 1 << 20,
                "process_growth_bytes": 4096, "psi_memory_full_avg10": null,
                "available_falling_bytes_per_second": 1e6, "seconds_to_exhaustion": null,
                "largest": largest_json, "shmem_growth_bytes": 0,
            })
        );
        let machine = MachineEvidence {
            scope: MemoryScope::Machine,
            mem_available_percent: None,
            psi_memory_full_avg10: Some(40.0),
            available_falling_bytes_per_second: None,
            seconds_to_exhaustion: Some(4.5),
            trend: true,
            major_faults_per_second: 0.0,
            largest: vec![],
        };
        assert_eq!(
            details_value(&machine),
            json!({
                "scope": "machine", "mem_available_percent": null, "psi_memory_full_avg10": 40.0,
                "available_falling_bytes_per_second": null, "seconds_to_exhaustion": 4.5,
                "trend": true, "major_faults_per_second": 0.0, "largest": [],
            })
        );
    }
}
