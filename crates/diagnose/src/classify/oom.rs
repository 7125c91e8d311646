//! Memory cgroups in a fill-and-kill loop (see [`crate::oomloop`]): a
//! `memory_exhaustion` diagnosis for the cgroup, naming the program the
//! kernel keeps killing and the parent that keeps starting it again.
//!
//! Recorded only, and the reason is in the diagnosis: the kernel already
//! kills inside the cgroup each time it fills, so killing the program once
//! more changes nothing; ending the loop means stopping its parent, which
//! holds no memory and may be a supervisor doing its job (the fix is the
//! cgroup's limit or the parent's restart policy, the owner's call). The
//! cgroup-limit diagnosis of the same cgroup, which would kill the current
//! instance, is folded into this one.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use selfheal_event::Culprit;

use super::evidence::{CgroupEvidence, DiagnosisEvidence, MemoryScope};
use super::{Diagnoser, Observation};
use crate::class::{Diagnosis, Symptom};
use crate::snapshot::TaskSample;
use selfheal_event::Class;

pub(super) fn diagnose(dx: &Diagnoser, obs: &Observation<'_>) -> Vec<Diagnosis> {
    let page = selfheal_sys::sched::page_size() as u64;
    let after = obs.after.processes();
    let mut out = Vec::new();
    for lp in obs.oom_loops {
        let Some((program, killed)) = lp.program() else {
            continue;
        };
        let members: HashSet<i32> = obs
            .cgroup_members
            .get(&lp.cgroup)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default();
        let inside = |pid: i32| members.contains(&pid);
        // The instance running now (the newest), and its parent.
        let current: Option<&TaskSample> = after
            .iter()
            .copied()
            .filter(|t| t.stat.comm == program && inside(t.pid) && dx.counts(obs, t))
            .max_by_key(|t| (t.stat.starttime_ticks, t.pid));
        let parent = current.and_then(|c| after.iter().copied().find(|t| t.pid == c.stat.ppid));
        let window_s = lp.window.as_secs();
        let respawner = parent.map_or_else(
            || "its parent (no instance running now to find it by)".to_string(),
            |p| {
                format!(
                    "{} pid {} ({} the cgroup)",
                    p.stat.comm,
                    p.pid,
                    if inside(p.pid) { "inside" } else { "outside" }
                )
            },
        );
        let victims: Vec<Victim> = lp
            .kills
            .iter()
            .rev()
            .take(10)
            .map(|k| Victim {
                pid: k.pid,
                comm: k.comm.clone(),
                task_cgroup: k.task_cgroup.clone(),
                ago_ms: k.at.elapsed().as_millis() as u64,
            })
            .collect();
        let usage = obs
            .cgroups
            .iter()
            .find(|u| u.path == lp.cgroup)
            .and_then(|u| u.memory);
        let mut culprit = match current {
            Some(c) => dx.culprit_of(c).0,
            None => Culprit {
                comm: Some(program.clone()),
                ..Culprit::default()
            },
        };
        culprit.cgroup = Some(lp.cgroup.clone());
        out.push(Diagnosis {
            class: Class::MemoryExhaustion,
            summary: format!(
                "memory_exhaustion: cgroup {} in a fill-and-kill loop: the kernel OOM-killed {program} {killed} times ({} kills in all) within {window_s} s; restarted by {respawner}",
                lp.cgroup,
                lp.kills.len(),
            ),
            culprit,
            target: None,
            evidence: DiagnosisEvidence::OomLoop(LoopEvidence {
                scope: MemoryScope::CgroupOomLoop,
                cgroup: lp.cgroup.clone(),
                oom_kills: lp.kills.len(),
                window_s,
                program: program.clone(),
                program_kills: killed,
                victims,
                current: current.map(|c| Instance {
                    pid: c.pid,
                    comm: c.stat.comm.clone(),
                    rss_bytes: c.stat.rss_pages * page,
                }),
                respawner: parent.map(|p| Respawner {
                    pid: p.pid,
                    comm: p.stat.comm.clone(),
                    inside_cgroup: inside(p.pid),
                }),
                limit_bytes: usage.map(|m| m.limit_bytes),
                usage_bytes: usage.map(|m| m.usage_bytes),
                limit_hits: usage.and_then(|m| m.limit_hits),
                limit_diagnoses: None,
            }),
            symptom: Symptom::Unverifiable,
            blocker: None,
            no_target: Some(format!(
                "record only: the kernel already kills {program} inside {} each time it fills it, so killing it again changes nothing; ending the loop means stopping {respawner}, which holds no memory: set the cgroup's limit or the parent's restart policy",
                lp.cgroup
            )),
            restart_veto: Some(format!(
                "the loop is inside cgroup {}: restarting the machine is not warranted",
                lp.cgroup
            )),
        });
    }
    out
}

/// A cgroup-limit diagnosis of a cgroup that is (or is inside) a looping
/// one describes the same loop: it becomes evidence of the loop diagnosis
/// instead of a separate one that would kill the current instance.
/// The evidence of a cgroup-limit diagnosis (`memory_exhaustion` of a
/// cgroup at its limit), if `d` is one.
fn cgroup_limit(d: &Diagnosis) -> Option<&CgroupEvidence> {
    match &d.evidence {
        DiagnosisEvidence::CgroupMemory(e) if d.class == Class::MemoryExhaustion => Some(e),
        _ => None,
    }
}

pub(super) fn absorb_limit_diagnoses(out: &mut Vec<Diagnosis>) {
    let loops: Vec<String> = out
        .iter()
        .filter_map(|d| match &d.evidence {
            DiagnosisEvidence::OomLoop(e) => Some(e.cgroup.clone()),
            _ => None,
        })
        .collect();
    for cg in loops {
        let within = |p: &str| {
            p == cg
                || p.strip_prefix(cg.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        };
        let limit_within = |d: &Diagnosis| cgroup_limit(d).filter(|e| within(&e.cgroup)).is_some();
        let absorbed: Vec<AbsorbedLimit> = out
            .iter()
            .filter_map(|d| {
                let e = cgroup_limit(d).filter(|e| within(&e.cgroup))?;
                Some(AbsorbedLimit {
                    summary: d.summary.clone(),
                    percent: e.percent,
                })
            })
            .collect();
        if absorbed.is_empty() {
            continue;
        }
        out.retain(|d| !limit_within(d));
        let looping = out.iter_mut().find_map(|d| match &mut d.evidence {
            DiagnosisEvidence::OomLoop(e) if e.cgroup == cg => Some(e),
            _ => None,
        });
        if let Some(e) = looping {
            e.limit_diagnoses = Some(absorbed);
        }
    }
}

/// `evidence` of a cgroup's fill-and-kill loop (`memory_exhaustion`,
/// record only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopEvidence {
    /// Always `cgroup_oom_loop`.
    pub scope: MemoryScope,
    pub cgroup: String,
    /// OOM kills in the cgroup within the window.
    pub oom_kills: usize,
    pub window_s: u64,
    /// The program killed again and again.
    pub program: String,
    /// How many of the kills were of it.
    pub program_kills: usize,
    /// The latest kills, newest first (at most 10).
    pub victims: Vec<Victim>,
    /// The program's running instance, if one runs.
    pub current: Option<Instance>,
    /// Whoever restarts it, if seen.
    pub respawner: Option<Respawner>,
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    pub limit_hits: Option<u64>,
    /// Cgroup-limit diagnoses of the same loop, folded into this one;
    /// absent when there were none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_diagnoses: Option<Vec<AbsorbedLimit>>,
}

/// One OOM kill of a loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Victim {
    pub pid: Option<i32>,
    pub comm: Option<String>,
    pub task_cgroup: Option<String>,
    /// How long ago, ms.
    pub ago_ms: u64,
}

/// The looping program's running instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub pid: i32,
    pub comm: String,
    pub rss_bytes: u64,
}

/// The process restarting the looping program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Respawner {
    pub pid: i32,
    pub comm: String,
    /// True when it runs inside the looping cgroup.
    pub inside_cgroup: bool,
}

/// A cgroup-limit diagnosis a loop absorbed (`limit_diagnoses[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbsorbedLimit {
    pub summary: String,
    /// Its evidence's `percent`, as it was.
    pub percent: f64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use selfheal_event::details_value;

    /// The loop evidence is exactly the JSON the old `json!` literals
    /// built, unknown values `null`.
    #[test]
    fn oom_loop_evidence_matches_the_documented_json() {
        let e = LoopEvidence {
            scope: MemoryScope::CgroupOomLoop,
            cgroup: "/a".into(),
            oom_kills: 4,
            window_s: 60,
            program: "hog".into(),
            program_kills: 3,
            victims: vec![Victim {
                pid: Some(9),
                comm: Some("hog".into()),
                task_cgroup: None,
                ago_ms: 1500,
            }],
            current: Some(Instance {
                pid: 10,
                comm: "hog".into(),
                rss_bytes: 4096,
            }),
            respawner: None,
            limit_bytes: Some(1 << 20),
            usage_bytes: None,
            limit_hits: Some(4),
            limit_diagnoses: None,
        };
        assert_eq!(
            details_value(&e),
            json!({
                "scope": "cgroup_oom_loop", "cgroup": "/a", "oom_kills": 4, "window_s": 60,
                "program": "hog", "program_kills": 3,
                "victims": [{"pid": 9, "comm": "hog", "task_cgroup": null, "ago_ms": 1500}],
                "current": {"pid": 10, "comm": "hog", "rss_bytes": 4096},
                "respawner": null,
                "limit_bytes": 1 << 20, "usage_bytes": null, "limit_hits": 4,
            })
        );
        let r = Respawner {
            pid: 1,
            comm: "sh".into(),
            inside_cgroup: true,
        };
        assert_eq!(
            details_value(&r),
            json!({"pid": 1, "comm": "sh", "inside_cgroup": true})
        );
        let a = AbsorbedLimit {
            summary: "memory_exhaustion: cgroup /a".into(),
            percent: 97.5,
        };
        assert_eq!(
            details_value(&a),
            json!({"summary": "memory_exhaustion: cgroup /a", "percent": 97.5})
        );
    }
}
