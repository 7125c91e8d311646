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

use serde::Serialize;

use selfheal_event::{details_value, Culprit};

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
        let victims: Vec<Victim<'_>> = lp
            .kills
            .iter()
            .rev()
            .take(10)
            .map(|k| Victim {
                pid: k.pid,
                comm: k.comm.as_deref(),
                task_cgroup: k.task_cgroup.as_deref(),
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
            evidence: details_value(&LoopEvidence {
                scope: "cgroup_oom_loop",
                cgroup: &lp.cgroup,
                oom_kills: lp.kills.len(),
                window_s,
                program: &program,
                program_kills: killed,
                victims,
                current: current.map(|c| Instance {
                    pid: c.pid,
                    comm: &c.stat.comm,
                    rss_bytes: c.stat.rss_pages * page,
                }),
                respawner: parent.map(|p| Respawner {
                    pid: p.pid,
                    comm: &p.stat.comm,
                    inside_cgroup: inside(p.pid),
                }),
                limit_bytes: usage.map(|m| m.limit_bytes),
                usage_bytes: usage.map(|m| m.usage_bytes),
                limit_hits: usage.and_then(|m| m.limit_hits),
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
pub(super) fn absorb_limit_diagnoses(out: &mut Vec<Diagnosis>) {
    let loops: Vec<String> = out
        .iter()
        .filter(|d| d.evidence["scope"] == "cgroup_oom_loop")
        .filter_map(|d| d.evidence["cgroup"].as_str().map(str::to_string))
        .collect();
    for cg in loops {
        let within = |p: &str| {
            p == cg
                || p.strip_prefix(cg.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        };
        let absorbed: Vec<serde_json::Value> = out
            .iter()
            .filter(|d| {
                d.class == Class::MemoryExhaustion
                    && d.evidence["scope"] == "cgroup"
                    && d.evidence["cgroup"].as_str().is_some_and(within)
            })
            .map(|d| {
                details_value(&AbsorbedLimit {
                    summary: &d.summary,
                    percent: &d.evidence["percent"],
                })
            })
            .collect();
        if absorbed.is_empty() {
            continue;
        }
        out.retain(|d| {
            !(d.class == Class::MemoryExhaustion
                && d.evidence["scope"] == "cgroup"
                && d.evidence["cgroup"].as_str().is_some_and(within))
        });
        if let Some(d) = out
            .iter_mut()
            .find(|d| d.evidence["scope"] == "cgroup_oom_loop" && d.evidence["cgroup"] == cg)
        {
            d.evidence["limit_diagnoses"] = serde_json::Value::Array(absorbed);
        }
    }
}

/// `evidence` of a cgroup's fill-and-kill loop (`memory_exhaustion`,
/// record only).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct LoopEvidence<'a> {
    /// Always `cgroup_oom_loop`.
    scope: &'static str,
    cgroup: &'a str,
    /// OOM kills in the cgroup within the window.
    oom_kills: usize,
    window_s: u64,
    /// The program killed again and again.
    program: &'a str,
    /// How many of the kills were of it.
    program_kills: usize,
    /// The latest kills, newest first (at most 10).
    victims: Vec<Victim<'a>>,
    /// The program's running instance, if one runs.
    current: Option<Instance<'a>>,
    /// Whoever restarts it, if seen.
    respawner: Option<Respawner<'a>>,
    limit_bytes: Option<u64>,
    usage_bytes: Option<u64>,
    limit_hits: Option<u64>,
}

/// One OOM kill of a loop.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Victim<'a> {
    pid: Option<i32>,
    comm: Option<&'a str>,
    task_cgroup: Option<&'a str>,
    /// How long ago, ms.
    ago_ms: u64,
}

/// The looping program's running instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Instance<'a> {
    pid: i32,
    comm: &'a str,
    rss_bytes: u64,
}

/// The process restarting the looping program.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Respawner<'a> {
    pid: i32,
    comm: &'a str,
    /// True when it runs inside the looping cgroup.
    inside_cgroup: bool,
}

/// A cgroup-limit diagnosis a loop absorbed (`limit_diagnoses[]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct AbsorbedLimit<'a> {
    summary: &'a str,
    /// Its evidence's `percent`, as it was.
    percent: &'a serde_json::Value,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The loop evidence is exactly the JSON the old `json!` literals
    /// built, unknown values `null`.
    #[test]
    fn oom_loop_evidence_matches_the_documented_json() {
        let e = LoopEvidence {
            scope: "cgroup_oom_loop",
            cgroup: "/a",
            oom_kills: 4,
            window_s: 60,
            program: "hog",
            program_kills: 3,
            victims: vec![Victim {
                pid: Some(9),
                comm: Some("hog"),
                task_cgroup: None,
                ago_ms: 1500,
            }],
            current: Some(Instance {
                pid: 10,
                comm: "hog",
                rss_bytes: 4096,
            }),
            respawner: None,
            limit_bytes: Some(1 << 20),
            usage_bytes: None,
            limit_hits: Some(4),
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
            comm: "sh",
            inside_cgroup: true,
        };
        assert_eq!(
            details_value(&r),
            json!({"pid": 1, "comm": "sh", "inside_cgroup": true})
        );
        let pct = json!(97.5);
        let a = AbsorbedLimit {
            summary: "memory_exhaustion: cgroup /a",
            percent: &pct,
        };
        assert_eq!(
            details_value(&a),
            json!({"summary": "memory_exhaustion: cgroup /a", "percent": 97.5})
        );
    }
}
