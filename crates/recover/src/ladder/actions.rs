//! Carrying out one step: which processes it touches, the policy check of
//! each, and the system calls.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use selfheal_config::Action;

use super::{Acted, Blame, Incident, Ladder, Target};
use crate::ops::{OpsError, ProcInfo};

/// How long `kill_tree` keeps stopping newly forked members (it stops as
/// soon as a pass finds none: listing thousands of processes on a slow
/// machine takes a second or more per pass).
const TREE_DEADLINE: Duration = Duration::from_secs(10);

/// Passes after the kill that look for members that escaped (forked after
/// the last stop pass, or after the deadline) and kill them too.
const MOP_UP_PASSES: usize = 3;

/// What the step would do, for dry-run; `Err` when it would be refused or skipped.
pub(super) fn plan(
    l: &Ladder,
    inc: &Incident,
    t: &Target,
    action: Action,
    lineage: &HashSet<i32>,
) -> Result<String, Acted> {
    let comm = inc.comm();
    Ok(match action {
        Action::Record => "record evidence".to_string(),
        Action::Demote => format!(
            "move the real-time threads of {comm} (pid {}) to SCHED_OTHER",
            t.pid
        ),
        Action::Stop => format!("SIGSTOP {comm} (pid {})", t.pid),
        Action::Kill => format!("SIGKILL {comm} (pid {})", t.pid),
        Action::KillTree => {
            let members = blamed(l, t)?;
            check_all(l, &members, lineage)?;
            format!(
                "SIGSTOP then SIGKILL {} processes of {comm} (pid {})",
                members.len(),
                t.pid
            )
        }
        Action::KillCgroup | Action::FreezeCgroup => {
            let n = cgroup_guard(l, inc, t, lineage)?;
            format!(
                "{} the cgroup {} ({n} processes)",
                if action == Action::KillCgroup {
                    "kill every process in"
                } else {
                    "freeze"
                },
                inc.culprit.cgroup.as_deref().unwrap_or("?")
            )
        }
        Action::RestartUnit => match &inc.culprit.unit {
            Some(u) => format!("systemctl restart {u}"),
            None => return Err(Acted::Skip("no systemd unit".into())),
        },
        Action::Reboot => "reboot the machine".to_string(),
    })
}

/// Does it.
pub(super) fn act(
    l: &Ladder,
    inc: &Incident,
    t: &Target,
    action: Action,
    lineage: &HashSet<i32>,
) -> Acted {
    let ops = l.ops.as_ref();
    // Every pid-addressed action first re-checks the process's identity.
    if !matches!(action, Action::Reboot | Action::Record) {
        match ops.process(t.pid) {
            Ok(Some(p)) if p.starttime == t.starttime => {}
            Ok(_) | Err(OpsError::Gone) => return Acted::Gone,
            Err(e) => return Acted::Fail(e.to_string()),
        }
    }
    let signal = |sig: i32| match ops.signal(t.pid, t.starttime, sig) {
        Ok(()) => Acted::Done(vec![t.pid]),
        Err(OpsError::Gone) => Acted::Gone,
        Err(e) => Acted::Fail(e.to_string()),
    };
    match action {
        Action::Record => Acted::Done(Vec::new()),
        Action::Demote => {
            let threads = match ops.threads(t.pid) {
                Ok(v) => v,
                Err(OpsError::Gone) => return Acted::Gone,
                Err(e) => return Acted::Fail(e.to_string()),
            };
            let rt: Vec<i32> = threads
                .iter()
                .filter(|(_, rt)| *rt)
                .map(|(tid, _)| *tid)
                .collect();
            if rt.is_empty() {
                return Acted::Skip(format!(
                    "{} (pid {}) has no real-time thread",
                    inc.comm(),
                    t.pid
                ));
            }
            for tid in &rt {
                match ops.set_normal_policy(*tid) {
                    Ok(()) | Err(OpsError::Gone) => {}
                    Err(e) => return Acted::Fail(format!("thread {tid}: {e}")),
                }
            }
            Acted::Done(vec![t.pid])
        }
        Action::Stop => signal(libc::SIGSTOP),
        Action::Kill => signal(libc::SIGKILL),
        Action::KillTree => kill_tree(l, t, lineage),
        Action::KillCgroup | Action::FreezeCgroup => {
            let members = match cgroup_guard(l, inc, t, lineage) {
                Ok(_) => ops.cgroup_members(t.pid).unwrap_or_default(),
                Err(a) => return a,
            };
            let done = if action == Action::KillCgroup {
                ops.kill_cgroup(t.pid)
            } else {
                ops.freeze_cgroup(t.pid)
            };
            match done {
                Ok(()) => Acted::Done(members),
                Err(OpsError::Gone) => Acted::Gone,
                Err(OpsError::Refused(why)) => Acted::Refuse(why),
                Err(e) => Acted::Fail(e.to_string()),
            }
        }
        Action::RestartUnit => match &inc.culprit.unit {
            None => Acted::Skip("no systemd unit".into()),
            Some(u) => match ops.restart_unit(u) {
                Ok(()) => Acted::Done(vec![t.pid]),
                Err(e) => Acted::Fail(e.to_string()),
            },
        },
        Action::Reboot => match ops.reboot() {
            Ok(()) => Acted::Done(Vec::new()),
            Err(e) => Acted::Fail(e.to_string()),
        },
    }
}

/// The processes the diagnosis blames, listed now.
fn blamed(l: &Ladder, t: &Target) -> Result<Vec<ProcInfo>, Acted> {
    let ops = l.ops.as_ref();
    let all = ops.processes().map_err(|e| Acted::Fail(e.to_string()))?;
    let by_pid: HashMap<i32, &ProcInfo> = all.iter().map(|p| (p.pid, p)).collect();
    let mut set: HashSet<i32> = HashSet::new();
    match by_pid.get(&t.pid) {
        Some(p) if p.starttime == t.starttime => {
            set.insert(t.pid);
        }
        _ => {}
    }
    match &t.blame {
        Blame::Tree => {}
        Blame::CommUid(comm, uid) => {
            set.extend(
                all.iter()
                    .filter(|p| &p.comm == comm && p.uid == Some(*uid) && !p.kernel_thread)
                    .map(|p| p.pid),
            );
        }
        Blame::Cgroup => {
            if set.contains(&t.pid) {
                set.extend(
                    ops.cgroup_members(t.pid)
                        .map_err(|e| Acted::Fail(e.to_string()))?,
                );
            }
        }
    }
    // Descendants of everything blamed so far.
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in &all {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut stack: Vec<i32> = set.iter().copied().collect();
    while let Some(pid) = stack.pop() {
        for &c in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            if set.insert(c) {
                stack.push(c);
            }
        }
    }
    if set.is_empty() {
        return Err(Acted::Gone);
    }
    let mut out: Vec<ProcInfo> = set
        .into_iter()
        .filter_map(|p| by_pid.get(&p).map(|x| (*x).clone()))
        .collect();
    out.sort_by_key(|p| p.pid);
    Ok(out)
}

fn check_all(l: &Ladder, members: &[ProcInfo], lineage: &HashSet<i32>) -> Result<(), Acted> {
    for m in members {
        if let Some(why) = l.policy.refusal(m, lineage) {
            return Err(Acted::Refuse(format!("the blamed set includes {why}")));
        }
    }
    Ok(())
}

/// A cgroup may be killed or frozen only when every process in it is
/// blamed and none is protected. Returns the member count.
fn cgroup_guard(
    l: &Ladder,
    inc: &Incident,
    t: &Target,
    lineage: &HashSet<i32>,
) -> Result<usize, Acted> {
    let ops = l.ops.as_ref();
    if inc.culprit.cgroup.is_none() {
        return Err(Acted::Skip("the culprit has no cgroup of its own".into()));
    }
    let members = match ops.cgroup_members(t.pid) {
        Ok(m) => m,
        Err(OpsError::Gone) => return Err(Acted::Gone),
        Err(e) => return Err(Acted::Fail(e.to_string())),
    };
    let blamed: HashSet<i32> = blamed(l, t)?.into_iter().map(|p| p.pid).collect();
    let mut innocent = Vec::new();
    for pid in &members {
        match ops.process(*pid) {
            Ok(Some(p)) => {
                if let Some(why) = l.policy.refusal(&p, lineage) {
                    return Err(Acted::Refuse(format!("the cgroup holds {why}")));
                }
                if !blamed.contains(pid) {
                    innocent.push(format!("{} ({})", p.comm, p.pid));
                }
            }
            Ok(None) | Err(OpsError::Gone) => {}
            Err(e) => return Err(Acted::Fail(e.to_string())),
        }
    }
    if !innocent.is_empty() {
        innocent.truncate(5);
        return Err(Acted::Refuse(format!(
            "the cgroup also holds processes the diagnosis does not blame: {}",
            innocent.join(", ")
        )));
    }
    Ok(members.len())
}

/// Stops every blamed process (again and again while new ones appear), then
/// kills them all: a stopped process cannot fork, so none escapes.
fn kill_tree(l: &Ladder, t: &Target, lineage: &HashSet<i32>) -> Acted {
    let ops = l.ops.as_ref();
    let deadline = Instant::now() + TREE_DEADLINE;
    let mut stopped: HashMap<i32, u64> = HashMap::new();
    loop {
        let members = match blamed(l, t) {
            Ok(m) => m,
            Err(Acted::Gone) if !stopped.is_empty() => break,
            Err(a) => return a,
        };
        if let Err(a) = check_all(l, &members, lineage) {
            // Let what we stopped run again before refusing.
            for (&pid, &st) in &stopped {
                let _ = ops.signal(pid, st, libc::SIGCONT);
            }
            return a;
        }
        let fresh: Vec<&ProcInfo> = members
            .iter()
            .filter(|m| !stopped.contains_key(&m.pid))
            .collect();
        if fresh.is_empty() || Instant::now() >= deadline {
            break;
        }
        for m in fresh {
            match ops.signal(m.pid, m.starttime, libc::SIGSTOP) {
                Ok(()) | Err(OpsError::Gone) => {
                    stopped.insert(m.pid, m.starttime);
                }
                Err(e) => return Acted::Fail(format!("SIGSTOP {}: {e}", m.pid)),
            }
        }
    }
    let mut touched: Vec<i32> = Vec::new();
    for (&pid, &st) in &stopped {
        match ops.signal(pid, st, libc::SIGKILL) {
            Ok(()) => touched.push(pid),
            Err(OpsError::Gone) => {}
            Err(e) => return Acted::Fail(format!("SIGKILL {pid}: {e}")),
        }
    }
    // Members that escaped the stop passes (a bomb forks into the slots
    // the kill frees): kill them directly, a few passes.
    let mut killed: HashSet<(i32, u64)> = stopped.into_iter().collect();
    for _ in 0..MOP_UP_PASSES {
        let Ok(members) = blamed(l, t) else { break };
        if check_all(l, &members, lineage).is_err() {
            break;
        }
        let left: Vec<&ProcInfo> = members
            .iter()
            .filter(|m| !killed.contains(&(m.pid, m.starttime)))
            .collect();
        if left.is_empty() {
            break;
        }
        for m in left {
            match ops.signal(m.pid, m.starttime, libc::SIGKILL) {
                Ok(()) => touched.push(m.pid),
                Err(OpsError::Gone) => {}
                Err(e) => return Acted::Fail(format!("SIGKILL {}: {e}", m.pid)),
            }
            killed.insert((m.pid, m.starttime));
        }
    }
    touched.sort_unstable();
    touched.dedup();
    if touched.is_empty() {
        Acted::Gone
    } else {
        Acted::Done(touched)
    }
}
