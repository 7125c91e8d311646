//! Which processes a diagnosis blames with its target (the `Target`,
//! `Blame` and `ProgramScope` types are `selfheal-event`'s).
//!
//! [`blamed_set`] is the one definition of "blamed": the ladder lists it
//! before every step (what `kill_tree` may signal, what a cgroup may hold
//! for `kill_cgroup`), and the symptom check of a fork bomb counts it. Dead
//! and zombie processes are never in it: they cannot fork or hold memory,
//! and counting them once let a follow-up diagnosis blame bystanders.

use std::collections::{HashMap, HashSet};

use selfheal_event::{Blame, ProgramScope, Target};

use crate::ops::ProcInfo;

/// The cool-down key of `target`.
pub(crate) fn cooldown_key(target: &Target) -> String {
    format!("pid:{}:{}", target.pid, target.starttime)
}

/// True when `p` is one of a fork bomb's processes by the evidence in
/// `scope`: same command and uid, not a kernel thread, and one of the
/// counted members or in one of their process groups.
pub fn program_covers(scope: &ProgramScope, p: &ProcInfo) -> bool {
    p.comm == scope.comm
        && p.uid == Some(scope.uid)
        && !p.kernel_thread
        && (scope.members.contains(&(p.pid, p.starttime))
            || (p.pgid > 0 && scope.pgids.contains(&p.pgid)))
}

/// Why a cgroup must never be killed or frozen as a whole whatever its
/// members: the root, slices (they group whole units: `user.slice`, a
/// user's `user-1000.slice`, `system.slice`), login session scopes, a
/// user's service manager and init's scope. `None` for a leaf cgroup.
pub fn broad_cgroup(path: &str) -> Option<String> {
    let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if name.is_empty() {
        return Some(format!("{path} is the root of its hierarchy"));
    }
    if name.ends_with(".slice") {
        return Some(format!(
            "{path} is a slice: it groups whole units, not one program"
        ));
    }
    if name.starts_with("session-") && name.ends_with(".scope") {
        return Some(format!(
            "{path} is a login session scope: it holds everything started from that login"
        ));
    }
    if name.starts_with("user@") && name.ends_with(".service") {
        return Some(format!("{path} is a user's service manager"));
    }
    if name == "init.scope" {
        return Some(format!("{path} holds init"));
    }
    None
}

/// True when `p` is exited or a zombie: never counted, never blamed.
pub fn is_dead(p: &ProcInfo) -> bool {
    matches!(p.state, 'Z' | 'X' | 'x')
}

/// The processes `target` blames, from the process list `all`, sorted by
/// pid. `cgroup_members` lists the target's cgroup, for [`Blame::Cgroup`].
/// The target itself is included while it is the same process (pid and
/// start time) and, for a program blame, one the scope covers; dead and
/// zombie processes never are.
pub fn blamed_set(all: &[ProcInfo], target: &Target, cgroup_members: &[i32]) -> Vec<ProcInfo> {
    let by_pid: HashMap<i32, &ProcInfo> = all.iter().map(|p| (p.pid, p)).collect();
    let mut set: HashSet<i32> = HashSet::new();
    let target_alive = by_pid
        .get(&target.pid)
        .is_some_and(|p| p.starttime == target.starttime);
    // A program blame names its members: a target outside them is not
    // blamed by it (a diagnosis that says otherwise contradicts itself).
    let target_blamed = match (&target.blame, by_pid.get(&target.pid)) {
        (Blame::Program(scope), Some(p)) => target_alive && program_covers(scope, p),
        _ => target_alive,
    };
    if target_blamed {
        set.insert(target.pid);
    }
    match &target.blame {
        Blame::Tree => {}
        Blame::Program(scope) => {
            set.extend(
                all.iter()
                    .filter(|p| program_covers(scope, p))
                    .map(|p| p.pid),
            );
        }
        Blame::Cgroup if target_alive => set.extend(cgroup_members.iter().copied()),
        Blame::Cgroup => {}
    }
    // Descendants of everything blamed so far.
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in all {
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
    let mut out: Vec<ProcInfo> = set
        .into_iter()
        .filter_map(|p| by_pid.get(&p).copied())
        .filter(|p| !is_dead(p))
        .cloned()
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, comm: &str, pgid: i32) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            comm: comm.into(),
            starttime: 1000 + pid as u64,
            uid: Some(1000),
            kernel_thread: false,
            cgroups: vec![],
            unit: None,
            pgid,
            sid: 1,
            state: 'S',
        }
    }

    #[test]
    fn a_program_blame_never_covers_same_named_processes_elsewhere() {
        // The bomb (job 100) started from an interactive shell (10, its own
        // group); another `bash` (50) runs elsewhere under the same uid.
        let all = vec![
            p(10, 1, "bash", 10),
            p(11, 10, "vim", 11),
            p(50, 1, "bash", 50),
            p(100, 10, "bash", 100),
            p(101, 100, "bash", 100),
            p(102, 1, "bash", 100), // re-parented orphan, same group
            p(103, 102, "bash", 100),
        ];
        let scope = ProgramScope {
            comm: "bash".into(),
            uid: 1000,
            pgids: [100].into(),
            members: [(101, 1101)].into(),
        };
        let t = Target {
            pid: 100,
            starttime: 1100,
            blame: Blame::Program(scope),
        };
        let pids: Vec<i32> = blamed_set(&all, &t, &[]).iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![100, 101, 102, 103]);
    }

    #[test]
    fn slices_scopes_and_roots_are_broad() {
        for p in [
            "/",
            "",
            "/user.slice",
            "/user.slice/user-1000.slice",
            "/system.slice",
            "/user.slice/user-1000.slice/session-3.scope",
            "/user.slice/user-1000.slice/user@1000.service",
            "/init.scope",
        ] {
            assert!(broad_cgroup(p).is_some(), "{p}");
        }
        for p in [
            "/selfheal-sandbox/bomb-1",
            "/system.slice/nginx.service",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope",
            "/process_api/c0410e5d",
        ] {
            assert!(broad_cgroup(p).is_none(), "{p}");
        }
    }

    #[test]
    fn dead_and_zombie_processes_are_never_blamed() {
        let mut z = p(101, 100, "bomb", 100);
        z.state = 'Z';
        let all = vec![p(100, 1, "bomb", 100), z, p(102, 100, "bomb", 100)];
        let t = Target::tree(100, 1100);
        let pids: Vec<i32> = blamed_set(&all, &t, &[]).iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![100, 102]);
        // A reused pid blames nothing of its own.
        let stranger = Target::tree(100, 9);
        assert!(blamed_set(&all, &stranger, &[]).is_empty());
    }
}
