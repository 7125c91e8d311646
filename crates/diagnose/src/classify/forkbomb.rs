//! Fork bombs: process count exploding in one cgroup, one program's tree,
//! or one user.
//!
//! - A cgroup with a pids limit that is (nearly) full while forks are being
//!   refused: the limit contains the bomb, but it keeps the CPU busy and
//!   the cgroup useless.
//! - Without a limit: one program (same command and uid: bomb members are
//!   re-parented to init as their parents exit, so the tree itself falls
//!   apart) with at least `fork_bomb_tasks` processes and still growing,
//!   or a user who gained `fork_bomb_tasks / 2` processes between the two
//!   snapshots.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::json;

use super::{Deltas, Diagnoser, Observation};
use crate::class::{Blame, Class, Diagnosis, Symptom};
use crate::snapshot::{Snapshot, TaskSample};

pub(super) fn diagnose(dx: &Diagnoser, obs: &Observation<'_>, d: &Deltas<'_>) -> Vec<Diagnosis> {
    let th = &dx.thresholds;
    let mut out = Vec::new();
    let after = obs.after.processes();
    let by_pid: HashMap<i32, &TaskSample> = after.iter().map(|t| (t.pid, *t)).collect();
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
        claimed.extend(members.iter().map(|t| t.pid));
        let root = oldest(&members);
        let (mut culprit, target) = match root {
            Some(r) => {
                let (c, t) = dx.culprit_of(r);
                (c, Some(t))
            }
            None => (selfheal_event::Culprit::default(), None),
        };
        culprit.cgroup = Some(cg.path.clone());
        let target = target.map(|mut t| {
            t.blame = Blame::Cgroup;
            t
        });
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
            evidence: json!({
                "scope": "cgroup",
                "cgroup": cg.path,
                "pids_current": p.current,
                "pids_max": p.max,
                "forks_refused_total": p.refused,
                "forks_refused_recently": p.refused_recently,
                "members_seen": members.len(),
                "commands": top_comms(&members),
            }),
            symptom: Symptom::CgroupTasks {
                path: cg.path.clone(),
                below: (p.max / 2).max(1),
            },
        });
    }

    // One program (command + uid) with many processes, still growing.
    let count = |s: &Snapshot| {
        let mut m: BTreeMap<(String, u32), Vec<i32>> = BTreeMap::new();
        for t in s.processes() {
            if t.is_kernel_thread() || dx.is_own(t.pid) {
                continue;
            }
            m.entry((t.stat.comm.clone(), t.uid.unwrap_or(u32::MAX)))
                .or_default()
                .push(t.pid);
        }
        m
    };
    let groups_after = count(obs.after);
    let groups_before = count(obs.before);
    for ((comm, uid), pids) in &groups_after {
        let n = pids.len();
        let before = groups_before.get(&(comm.clone(), *uid)).map_or(0, Vec::len);
        let unclaimed = pids.iter().filter(|p| !claimed.contains(p)).count();
        if n < th.fork_bomb_tasks as usize || n <= before || unclaimed * 2 < n {
            continue;
        }
        let members: Vec<&TaskSample> =
            pids.iter().filter_map(|p| by_pid.get(p).copied()).collect();
        claimed.extend(pids.iter().copied());
        let Some(root) = oldest(&members) else {
            continue;
        };
        let (culprit, mut target) = dx.culprit_of(root);
        target.blame = Blame::CommUid(comm.clone(), *uid);
        out.push(Diagnosis {
            class: Class::ForkBomb,
            summary: format!(
                "fork_bomb: {n} processes of {comm} (uid {uid}), {} more than {} ms earlier; oldest pid {}",
                n - before,
                d.interval.as_millis(),
                root.pid
            ),
            culprit,
            target: Some(target),
            evidence: json!({
                "scope": "program",
                "comm": comm,
                "uid": uid,
                "processes": n,
                "processes_before": before,
            }),
            symptom: Symptom::TreeTasks {
                root: root.pid,
                starttime: root.stat.starttime_ticks,
                comm_uid: Some((comm.clone(), *uid)),
                below: (th.fork_bomb_tasks as usize / 2).max(1),
            },
        });
    }

    // One user gaining processes explosively (different programs).
    let per_uid = |s: &Snapshot| {
        let mut m: HashMap<u32, usize> = HashMap::new();
        for t in s.processes() {
            if let (Some(uid), false) = (t.uid, t.is_kernel_thread()) {
                *m.entry(uid).or_default() += 1;
            }
        }
        m
    };
    let (ua, ub) = (per_uid(obs.after), per_uid(obs.before));
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
        let Some(root) = oldest(&members) else {
            continue;
        };
        claimed.extend(pids.iter().copied());
        let (culprit, mut target) = dx.culprit_of(root);
        target.blame = Blame::CommUid(comm.clone(), uid);
        out.push(Diagnosis {
            class: Class::ForkBomb,
            summary: format!(
                "fork_bomb: uid {uid} gained {gained} processes in {} ms ({g} of them {comm})",
                d.interval.as_millis()
            ),
            culprit,
            target: Some(target),
            evidence: json!({"scope": "user", "uid": uid, "gained": gained, "comm": comm, "processes": n}),
            symptom: Symptom::TreeTasks {
                root: root.pid,
                starttime: root.stat.starttime_ticks,
                comm_uid: Some((comm.clone(), uid)),
                below: (th.fork_bomb_tasks as usize / 2).max(1),
            },
        });
    }
    out
}

/// The member that started first (the likely origin).
fn oldest<'a>(members: &[&'a TaskSample]) -> Option<&'a TaskSample> {
    members
        .iter()
        .min_by_key(|t| (t.stat.starttime_ticks, t.pid))
        .copied()
}

fn top_comms(members: &[&TaskSample]) -> serde_json::Value {
    let mut m: BTreeMap<&str, usize> = BTreeMap::new();
    for t in members {
        *m.entry(t.stat.comm.as_str()).or_default() += 1;
    }
    let mut v: Vec<(&str, usize)> = m.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    json!(v.into_iter().take(5).collect::<Vec<_>>())
}
