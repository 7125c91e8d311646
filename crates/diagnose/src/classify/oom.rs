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

use serde_json::json;

use selfheal_event::Culprit;

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
        let victims: Vec<serde_json::Value> = lp
            .kills
            .iter()
            .rev()
            .take(10)
            .map(|k| {
                json!({
                    "pid": k.pid, "comm": k.comm, "task_cgroup": k.task_cgroup,
                    "ago_ms": k.at.elapsed().as_millis() as u64,
                })
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
            evidence: json!({
                "scope": "cgroup_oom_loop",
                "cgroup": lp.cgroup,
                "oom_kills": lp.kills.len(),
                "window_s": window_s,
                "program": program,
                "program_kills": killed,
                "victims": victims,
                "current": current.map(|c| json!({
                    "pid": c.pid, "comm": c.stat.comm,
                    "rss_bytes": c.stat.rss_pages * page,
                })),
                "respawner": parent.map(|p| json!({
                    "pid": p.pid, "comm": p.stat.comm, "inside_cgroup": inside(p.pid),
                })),
                "limit_bytes": usage.map(|m| m.limit_bytes),
                "usage_bytes": usage.map(|m| m.usage_bytes),
                "limit_hits": usage.and_then(|m| m.limit_hits),
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
            .map(|d| json!({"summary": d.summary, "percent": d.evidence["percent"]}))
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
            d.evidence["limit_diagnoses"] = json!(absorbed);
        }
    }
}
