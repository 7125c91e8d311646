//! Fork bombs: process count exploding in one cgroup, one program, or one
//! user.
//!
//! - A cgroup with a pids limit that is (nearly) full while forks are being
//!   refused: the limit contains the bomb, but it keeps the CPU busy and
//!   the cgroup useless. A leaf cgroup is blamed whole; a slice or session
//!   scope at its limit (systemd's `TasksMax`) holds unrelated units, so
//!   only the program inside it that forms the bomb is blamed.
//! - Without a limit: one program (same command and uid) with at least
//!   `fork_bomb_tasks` related processes and still growing (or no longer
//!   growing only because a pids limit where it lives refuses its forks:
//!   the cgroup test above needs the count at `cgroup_pids_percent` at the
//!   moment of the sweep, which a bomb whose members give up and are
//!   replaced can miss sweep after sweep), or a user who gained
//!   `fork_bomb_tasks / 2` processes between the two snapshots.
//!
//! Members are re-parented to init as their parents exit, so the tree
//! itself falls apart; what holds a bomb together is its process group (a
//! fork keeps it) and, while they live, its parents. Same-named processes
//! of the same uid elsewhere (another job, another login) are *not* the
//! bomb: a program is split into clusters of related processes and only
//! the cluster that grew is blamed ([`selfheal_event::ProgramScope`]).
//! Dead and zombie processes, and those recovery acted on within the settle
//! window, are never counted: after a kill, the bomb's zombies and the
//! kernel's last fork refusals are its aftermath, not a new bomb.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use selfheal_recover::broad_cgroup;

use super::evidence::{BombScope, DiagnosisEvidence, ForkBombEvidence};
use super::{Deltas, Diagnoser, Observation};
use crate::class::{Diagnosis, Symptom};
use crate::snapshot::{Snapshot, TaskSample};
use selfheal_event::{Blame, Class, ProgramScope};

pub(super) fn diagnose(dx: &Diagnoser, obs: &Observation<'_>, d: &Deltas<'_>) -> Vec<Diagnosis> {
    let th = &dx.thresholds;
    let mut out = Vec::new();
    let after: Vec<&TaskSample> = counted(dx, obs, obs.after);
    let by_pid: HashMap<i32, &TaskSample> = after.iter().map(|t| (t.pid, *t)).collect();
    let before_ids: HashSet<(i32, u64)> = counted(dx, obs, obs.before)
        .iter()
        .map(|t| (t.pid, t.stat.starttime_ticks))
        .collect();
    let mut claimed: HashSet<i32> = HashSet::new();

    // Limited cgroups at their limit with refused forks.
    for cg in obs.cgroups {
        let Some(p) = cg.pids else { continue };
        if p.percent() < th.cgroup_pids_percent || p.refused_recently == 0 {
            continue;
        }
        let members: Vec<&TaskSample> = obs
            .cgroup_members
            .get(&cg.path)
            .map(|m| {
                m.iter()
                    .filter_map(|pid| by_pid.get(pid).copied())
                    .collect()
            })
            .unwrap_or_default();
        if members.is_empty() {
            // Only zombies or processes already acted upon: the bomb is
            // dead and the kernel has not reaped it yet.
            continue;
        }
        claimed.extend(members.iter().map(|t| t.pid));
        let broad = broad_cgroup(&cg.path);
        let (root, blame) = match &broad {
            None => (oldest(&members), Some(Blame::Cgroup)),
            Some(_) => match biggest_program_cluster(&members, &before_ids) {
                Some((root, scope)) => (Some(root), Some(Blame::Program(scope))),
                None => (None, None),
            },
        };
        let (mut culprit, target) = match (root, blame) {
            (Some(r), Some(blame)) => {
                let (c, mut t) = dx.culprit_of(r);
                t.blame = blame;
                (c, Some(t))
            }
            _ => (selfheal_event::Culprit::default(), None),
        };
        if broad.is_none() {
            culprit.cgroup = Some(cg.path.clone());
        }
        out.push(Diagnosis {
            class: Class::ForkBomb,
            summary: format!(
                "fork_bomb: cgroup {} holds {} of its {} tasks and refused {} forks since the last sweep{}",
                cg.path,
                p.current,
                p.max,
                p.refused_recently,
                root.map_or(String::new(), |r| format!("; oldest member {} pid {}", r.stat.comm, r.pid)),
            ),
            culprit,
            target,
            evidence: DiagnosisEvidence::ForkBomb(
                BombScope::Cgroup(CgroupBombEvidence {
                    cgroup: cg.path.clone(),
                    cgroup_blamed_whole: broad.is_none(),
                    cgroup_not_blamed_whole_because: broad.clone(),
                pids_current: p.current,
                pids_max: p.max,
                forks_refused_total: p.refused,
                forks_refused_recently: p.refused_recently,
                    members_counted: members.len(),
                    commands: top_comms(&members),
                })
                .into(),
            ),
            blocker: None,
            symptom: Symptom::CgroupTasks {
                path: cg.path.clone(),
                below: (p.max / 2).max(1),
            },
            no_target: None,
            restart_veto: None,
        });
    }

    // One program (command + uid) with many related processes, growing.
    let groups_after = programs(dx, &after);
    let groups_before = programs(dx, &counted(dx, obs, obs.before));
    for ((comm, uid), pids) in &groups_after {
        let n = pids.len();
        let before = groups_before.get(&(comm.clone(), *uid)).map_or(0, Vec::len);
        let unclaimed = pids.iter().filter(|p| !claimed.contains(p)).count();
        if n < th.fork_bomb_tasks as usize || unclaimed * 2 < n {
            continue;
        }
        let members: Vec<&TaskSample> =
            pids.iter().filter_map(|p| by_pid.get(p).copied()).collect();
        let Some((root, scope)) = biggest_program_cluster(&members, &before_ids) else {
            continue;
        };
        let related = scope.members.len();
        if related < th.fork_bomb_tasks as usize {
            continue; // many, but not one bomb: unrelated jobs of one program
        }
        // Not growing: a bomb only if a pids limit holds it back, which
        // shows as forks refused where it lives since the last sweep (a
        // bomb that filled its limit before the first sweep never grows
        // between two). A large, steady pool of workers refuses nothing.
        let held = if n > before {
            None
        } else {
            match refusing_cgroup(dx, obs, root) {
                Some(held) => Some(held),
                None => continue,
            }
        };
        claimed.extend(scope.members.iter().map(|m| m.0));
        let growth = match &held {
            None => format!(
                "{} more than {} ms earlier",
                n - before,
                d.interval.as_millis()
            ),
            Some((cg, refused)) => format!(
                "not growing: held at the pids limit of {cg}, which refused {refused} forks since the last sweep"
            ),
        };
        out.push(program_diagnosis(
            dx,
            root,
            scope,
            format!(
                "fork_bomb: {related} related processes of {comm} (uid {uid}; {n} in all, {growth}); oldest pid {}",
                root.pid
            ),
            BombScope::Program(ProgramBombEvidence {
                comm: comm.clone(),
                uid: *uid,
                processes: n,
                processes_before: before,
                related_processes: related,
                held_by_pids_limit: held.as_ref().map(|(cg, _)| cg.clone()),
                forks_refused_recently: held.as_ref().map(|(_, r)| *r),
            })
            .into(),
        ));
    }

    // One user gaining processes explosively (different programs).
    let per_uid = |s: &[&TaskSample]| {
        let mut m: HashMap<u32, usize> = HashMap::new();
        for t in s {
            if let (Some(uid), false) = (t.uid, t.is_kernel_thread()) {
                *m.entry(uid).or_default() += 1;
            }
        }
        m
    };
    let ua = per_uid(&after);
    let ub = per_uid(&counted(dx, obs, obs.before));
    for (uid, n) in ua {
        let gained = n.saturating_sub(ub.get(&uid).copied().unwrap_or(0));
        if gained * 2 < th.fork_bomb_tasks as usize {
            continue;
        }
        // Blame the program that gained most, unless already claimed.
        let mut gains: Vec<(&(String, u32), usize)> = groups_after
            .iter()
            .filter(|((_, u), _)| *u == uid)
            .map(|(k, v)| {
                (
                    k,
                    v.len()
                        .saturating_sub(groups_before.get(k).map_or(0, Vec::len)),
                )
            })
            .collect();
        gains.sort_by_key(|g| std::cmp::Reverse(g.1));
        let Some(((comm, _), g)) = gains.first().copied() else {
            continue;
        };
        let pids = &groups_after[&(comm.clone(), uid)];
        if pids.iter().any(|p| claimed.contains(p)) {
            continue;
        }
        let members: Vec<&TaskSample> =
            pids.iter().filter_map(|p| by_pid.get(p).copied()).collect();
        let Some((root, scope)) = biggest_program_cluster(&members, &before_ids) else {
            continue;
        };
        claimed.extend(pids.iter().copied());
        let new_in_cluster = scope
            .members
            .iter()
            .filter(|m| !before_ids.contains(m))
            .count();
        let summary = format!(
            "fork_bomb: uid {uid} gained {gained} processes in {} ms ({g} of them {comm}, {new_in_cluster} in one related group)",
            d.interval.as_millis()
        );
        let evidence: ForkBombEvidence = BombScope::User(UserBombEvidence {
            uid,
            gained,
            comm: comm.clone(),
            processes: n,
            gained_in_related_group: new_in_cluster,
        })
        .into();
        if new_in_cluster * 2 < g {
            // The growth is spread over unrelated jobs: no one group to blame.
            let (culprit, _) = dx.culprit_of(root);
            out.push(Diagnosis {
                class: Class::ForkBomb,
                summary,
                culprit,
                target: None,
                evidence: DiagnosisEvidence::ForkBomb(evidence),
                blocker: None,
                symptom: Symptom::Unverifiable,
                no_target: Some(format!(
                    "weak evidence: the new {comm} processes are not related by process group or parent; acting on one group would not stop the growth and could hit innocent ones"
                )),
                restart_veto: None,
            });
            continue;
        }
        out.push(program_diagnosis(dx, root, scope, summary, evidence));
    }
    out
}

/// The cgroup holding `t`, or one above it, whose pids limit refused
/// forks since the last sweep, with how many.
fn refusing_cgroup(dx: &Diagnoser, obs: &Observation<'_>, t: &TaskSample) -> Option<(String, u64)> {
    let (path, _) = dx.cgroup_of(t.pid);
    let path = path?;
    obs.cgroups
        .iter()
        .filter(|cg| {
            path == cg.path
                || cg.path == "/"
                || path
                    .strip_prefix(cg.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .filter_map(|cg| Some((cg.path.clone(), cg.pids?.refused_recently)))
        .filter(|(_, refused)| *refused > 0)
        .max_by_key(|(p, _)| p.len())
}

/// The processes of a snapshot that count: alive (not zombie or dead) and
/// not acted upon within the settle window.
fn counted<'a>(dx: &Diagnoser, obs: &Observation<'_>, s: &'a Snapshot) -> Vec<&'a TaskSample> {
    s.processes()
        .into_iter()
        .filter(|t| dx.counts(obs, t))
        .collect()
}

/// Processes by (command, uid), kernel threads and selfheal left out.
fn programs(dx: &Diagnoser, list: &[&TaskSample]) -> BTreeMap<(String, u32), Vec<i32>> {
    let mut m: BTreeMap<(String, u32), Vec<i32>> = BTreeMap::new();
    for t in list {
        if t.is_kernel_thread() || dx.is_own(t.pid) {
            continue;
        }
        m.entry((t.stat.comm.clone(), t.uid.unwrap_or(u32::MAX)))
            .or_default()
            .push(t.pid);
    }
    m
}

fn program_diagnosis(
    dx: &Diagnoser,
    root: &TaskSample,
    scope: ProgramScope,
    summary: String,
    mut evidence: ForkBombEvidence,
) -> Diagnosis {
    let (culprit, mut target) = dx.culprit_of(root);
    evidence.process_groups = Some(scope.pgids.iter().take(20).copied().collect());
    target.blame = Blame::Program(scope);
    Diagnosis {
        class: Class::ForkBomb,
        summary,
        culprit,
        blocker: None,
        // Cleared only when no blamed process is left: without a limit,
        // one survivor refills the machine (half the threshold once let a
        // kill that missed 90 members count as a recovery).
        symptom: Symptom::TreeTasks {
            target: target.clone(),
            below: 1,
        },
        target: Some(target),
        evidence: DiagnosisEvidence::ForkBomb(evidence),
        no_target: None,
        restart_veto: None,
    }
}

/// The cluster of related processes (one process group, or a parent and
/// its child when the parent does not lead a group: a shell leads its own
/// group and gives each job another, so it never joins a job's cluster)
/// with the most processes that are new since `before`, then the most
/// processes. Computed per program (command + uid); returns its oldest
/// member and the scope a recovery may blame.
fn biggest_program_cluster<'a>(
    members: &[&'a TaskSample],
    before: &HashSet<(i32, u64)>,
) -> Option<(&'a TaskSample, ProgramScope)> {
    let mut by_program: BTreeMap<(&str, u32), Vec<&'a TaskSample>> = BTreeMap::new();
    for t in members {
        by_program
            .entry((t.stat.comm.as_str(), t.uid.unwrap_or(u32::MAX)))
            .or_default()
            .push(t);
    }
    let mut best: Option<(usize, usize, Vec<&'a TaskSample>)> = None;
    for list in by_program.values() {
        for c in clusters(list) {
            let new = c
                .iter()
                .filter(|t| !before.contains(&(t.pid, t.stat.starttime_ticks)))
                .count();
            if best.as_ref().is_none_or(|b| (new, c.len()) > (b.0, b.1)) {
                best = Some((new, c.len(), c));
            }
        }
    }
    let (_, _, cluster) = best?;
    let root = oldest(&cluster)?;
    let scope = ProgramScope {
        comm: root.stat.comm.clone(),
        uid: root.uid.unwrap_or(u32::MAX),
        pgids: cluster
            .iter()
            .map(|t| t.stat.pgrp)
            .filter(|g| *g > 0)
            .collect::<BTreeSet<i32>>(),
        members: cluster
            .iter()
            .map(|t| (t.pid, t.stat.starttime_ticks))
            .collect(),
    };
    Some((root, scope))
}

/// Splits one program's processes into related clusters (union-find).
fn clusters<'a>(list: &[&'a TaskSample]) -> Vec<Vec<&'a TaskSample>> {
    let index: HashMap<i32, usize> = list.iter().enumerate().map(|(i, t)| (t.pid, i)).collect();
    let mut parent: Vec<usize> = (0..list.len()).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    fn union(p: &mut [usize], a: usize, b: usize) {
        let (ra, rb) = (find(p, a), find(p, b));
        if ra != rb {
            p[ra] = rb;
        }
    }
    let mut group_first: HashMap<i32, usize> = HashMap::new();
    for (i, t) in list.iter().enumerate() {
        if t.stat.pgrp > 0 {
            match group_first.get(&t.stat.pgrp) {
                Some(&j) => union(&mut parent, i, j),
                None => {
                    group_first.insert(t.stat.pgrp, i);
                }
            }
        }
        if let Some(&j) = index.get(&t.stat.ppid) {
            let pp = list[j];
            if pp.stat.pgrp != pp.pid {
                union(&mut parent, i, j);
            }
        }
    }
    let mut out: HashMap<usize, Vec<&'a TaskSample>> = HashMap::new();
    for (i, t) in list.iter().enumerate() {
        let r = find(&mut parent, i);
        out.entry(r).or_default().push(t);
    }
    out.into_values().collect()
}

/// The member that started first (the likely origin).
fn oldest<'a>(members: &[&'a TaskSample]) -> Option<&'a TaskSample> {
    members
        .iter()
        .min_by_key(|t| (t.stat.starttime_ticks, t.pid))
        .copied()
}

/// The commonest commands among `members`, as `[command, count]` pairs
/// (at most 5).
fn top_comms(members: &[&TaskSample]) -> Vec<(String, usize)> {
    let mut m: BTreeMap<&str, usize> = BTreeMap::new();
    for t in members {
        *m.entry(t.stat.comm.as_str()).or_default() += 1;
    }
    let mut v: Vec<(&str, usize)> = m.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.into_iter()
        .take(5)
        .map(|(c, n)| (c.to_string(), n))
        .collect()
}

/// `evidence` of a cgroup's `fork_bomb` (its pids limit refusing forks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgroupBombEvidence {
    pub cgroup: String,
    /// True when recovery may act on the whole cgroup.
    pub cgroup_blamed_whole: bool,
    /// Why not, when not (a slice, a session scope, the root).
    pub cgroup_not_blamed_whole_because: Option<String>,
    pub pids_current: u64,
    pub pids_max: u64,
    /// `pids.events` `max`; `null` when unreadable.
    pub forks_refused_total: Option<u64>,
    pub forks_refused_recently: u64,
    pub members_counted: usize,
    /// The commonest commands, as `[command, count]` pairs.
    pub commands: Vec<(String, usize)>,
}

/// `evidence` of one program's `fork_bomb` (`process_groups` is added by
/// `program_diagnosis`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramBombEvidence {
    pub comm: String,
    pub uid: u32,
    pub processes: usize,
    pub processes_before: usize,
    pub related_processes: usize,
    /// The cgroup whose pids limit holds it, when it is not growing.
    pub held_by_pids_limit: Option<String>,
    /// Forks that cgroup refused since the last sweep.
    pub forks_refused_recently: Option<u64>,
}

/// `evidence` of one user's `fork_bomb` (different programs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserBombEvidence {
    pub uid: u32,
    pub gained: usize,
    /// The command most of the new processes run.
    pub comm: String,
    pub processes: usize,
    pub gained_in_related_group: usize,
}

#[cfg(test)]
mod evidence_tests {
    use serde_json::json;

    use super::*;
    use selfheal_event::details_value;

    /// Each evidence document is exactly the JSON the old `json!`
    /// literals built (the `scope` now the tag of [`BombScope`]):
    /// commands as `[command, count]` pairs, unknown values `null`.
    #[test]
    fn fork_bomb_evidence_matches_the_documented_json() {
        let cg = CgroupBombEvidence {
            cgroup: "/user.slice".into(),
            cgroup_blamed_whole: false,
            cgroup_not_blamed_whole_because: Some("a slice".into()),
            pids_current: 512,
            pids_max: 512,
            forks_refused_total: None,
            forks_refused_recently: 40,
            members_counted: 500,
            commands: vec![("bomb".into(), 498), ("sh".into(), 2)],
        };
        assert_eq!(
            details_value(&BombScope::Cgroup(cg)),
            json!({
                "scope": "cgroup", "cgroup": "/user.slice", "cgroup_blamed_whole": false,
                "cgroup_not_blamed_whole_because": "a slice", "pids_current": 512,
                "pids_max": 512, "forks_refused_total": null, "forks_refused_recently": 40,
                "members_counted": 500, "commands": [["bomb", 498], ["sh", 2]],
            })
        );
        let p = ProgramBombEvidence {
            comm: "bomb".into(),
            uid: 1000,
            processes: 300,
            processes_before: 100,
            related_processes: 290,
            held_by_pids_limit: None,
            forks_refused_recently: None,
        };
        assert_eq!(
            details_value(&BombScope::Program(p)),
            json!({
                "scope": "program", "comm": "bomb", "uid": 1000, "processes": 300,
                "processes_before": 100, "related_processes": 290,
                "held_by_pids_limit": null, "forks_refused_recently": null,
            })
        );
        let u = UserBombEvidence {
            uid: 1000,
            gained: 200,
            comm: "bomb".into(),
            processes: 210,
            gained_in_related_group: 20,
        };
        assert_eq!(
            details_value(&BombScope::User(u.clone())),
            json!({"scope": "user", "uid": 1000, "gained": 200, "comm": "bomb",
                   "processes": 210, "gained_in_related_group": 20})
        );
        // What program_diagnosis and the stall absorption used to insert
        // into the document, now fields of their own.
        let mut bomb: ForkBombEvidence = BombScope::User(u).into();
        bomb.process_groups = Some(vec![7, 9]);
        bomb.cpu_stalls = Some(vec![crate::classify::evidence::AbsorbedStall {
            summary: "kernel_stall: cpu 1".into(),
            cpu: Some(1),
            on_cpu: Some("bomb".into()),
        }]);
        assert_eq!(
            DiagnosisEvidence::ForkBomb(bomb).to_value(),
            json!({"scope": "user", "uid": 1000, "gained": 200, "comm": "bomb",
                   "processes": 210, "gained_in_related_group": 20,
                   "process_groups": [7, 9],
                   "cpu_stalls": [{"summary": "kernel_stall: cpu 1", "cpu": 1, "on_cpu": "bomb"}]})
        );
    }
}
