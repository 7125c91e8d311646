//! The checks between a diagnosis and an action: is the pinned target still
//! the process diagnosed and still blamed, which processes are blamed now,
//! and may a cgroup be killed or frozen as a whole.

use std::collections::{HashMap, HashSet};

use super::{Acted, Incident, Ladder};
use crate::evidence::Refusal;
use crate::ops::{OpsError, Pinned, ProcInfo};
use selfheal_event::{Blame, Target};

use crate::target::{blamed_set, broad_cgroup, is_dead, program_covers};

/// Before any action: the pinned target still runs the program diagnosed,
/// is not dead, and is still among the processes the diagnosis blames.
pub(super) fn still_blamed(
    l: &Ladder,
    inc: &Incident,
    t: &Target,
    pinned: &Pinned,
) -> Result<(), Acted> {
    let now = match l.ops.process(t.pid) {
        Ok(Some(p)) if p.starttime == t.starttime => p,
        Ok(_) | Err(OpsError::Gone) => return Err(Acted::Gone),
        Err(e) => return Err(Acted::Fail(e.to_string())),
    };
    if is_dead(&now) {
        return Err(Acted::Gone);
    }
    if let Some(comm) = inc.culprit.comm.as_deref().filter(|c| *c != now.comm) {
        return Err(Acted::Refuse(
            Refusal::IdentityChanged,
            format!(
                "pid {} ran {comm} when diagnosed and now runs {}: not the program the evidence is about",
                t.pid, now.comm
            ),
        ));
    }
    // Whether the target itself is blamed needs no listing for a program
    // or a tree (what `blamed_set` decides for it reads the target alone):
    // a listing of every process costs seconds in a fork bomb's race.
    match &t.blame {
        Blame::Tree => return Ok(()),
        Blame::Program(scope) if program_covers(scope, &now) => return Ok(()),
        Blame::Program(_) | Blame::Cgroup => {}
    }
    // The target is alive (checked above): an empty blamed set means it is
    // not blamed, not that it is gone.
    let blamed = match blamed(l, inc, t, Some(pinned)) {
        Ok(b) => b,
        Err(Acted::Gone) => Vec::new(),
        Err(a) => return Err(a),
    };
    if !blamed.iter().any(|p| p.pid == t.pid) {
        return Err(Acted::Refuse(
            Refusal::NotBlamed,
            format!(
                "{} (pid {}) is no longer among the processes the diagnosis blames",
                now.comm, t.pid
            ),
        ));
    }
    Ok(())
}

/// The processes the diagnosis blames, listed now (never a dead one).
/// Read lightly: the uid only where a program blame needs it, the cgroups
/// only where the policy looks at them.
pub(super) fn blamed(
    l: &Ladder,
    inc: &Incident,
    t: &Target,
    pinned: Option<&Pinned>,
) -> Result<Vec<ProcInfo>, Acted> {
    blamed_with(l, inc, t, pinned, l.policy.needs_cgroups())
}

/// [`blamed`], with every member's cgroups read when `cgroups` is set.
pub(super) fn blamed_with(
    l: &Ladder,
    inc: &Incident,
    t: &Target,
    pinned: Option<&Pinned>,
    cgroups: bool,
) -> Result<Vec<ProcInfo>, Acted> {
    blamed_in(l, inc, t, pinned, &listing(l, t, cgroups)?)
}

/// Every process, read as lightly as blaming through `t` allows (see
/// [`blamed`]), with its cgroups when `cgroups` is set.
pub(super) fn listing(l: &Ladder, t: &Target, cgroups: bool) -> Result<Vec<ProcInfo>, Acted> {
    let uid_of = match &t.blame {
        Blame::Program(scope) => Some(scope.comm.as_str()),
        Blame::Tree | Blame::Cgroup => None,
    };
    l.ops
        .processes_light(uid_of, cgroups)
        .map_err(|e| Acted::Fail(e.to_string()))
}

/// The processes of listing `all` that the diagnosis blames (never a dead
/// one); `Err(Gone)` when none is.
pub(super) fn blamed_in(
    l: &Ladder,
    inc: &Incident,
    t: &Target,
    pinned: Option<&Pinned>,
    all: &[ProcInfo],
) -> Result<Vec<ProcInfo>, Acted> {
    let members = match &t.blame {
        Blame::Cgroup => cgroup_members(l, inc, t, pinned)?,
        Blame::Tree | Blame::Program(_) => Vec::new(),
    };
    let set = blamed_set(all, t, &members);
    if set.is_empty() {
        return Err(Acted::Gone);
    }
    Ok(set)
}

/// The members of the culprit's cgroup, for a whole-cgroup blame or action.
fn cgroup_members(
    l: &Ladder,
    inc: &Incident,
    t: &Target,
    pinned: Option<&Pinned>,
) -> Result<Vec<i32>, Acted> {
    let Some(path) = inc.culprit.cgroup.as_deref() else {
        return Err(Acted::Skip("the culprit has no cgroup of its own".into()));
    };
    if let Some(why) = broad_cgroup(path) {
        return Err(Acted::Refuse(
            Refusal::CgroupScope,
            format!("the diagnosis blames all of a cgroup, but {why}"),
        ));
    }
    let owned;
    let pinned = match pinned {
        Some(p) => p,
        None => {
            owned = match l.ops.pin(t.pid, t.starttime) {
                Ok(p) => p,
                Err(OpsError::Gone) => return Err(Acted::Gone),
                Err(e) => return Err(Acted::Fail(e.to_string())),
            };
            &owned
        }
    };
    match l.ops.cgroup_members(pinned, path) {
        Ok(m) => Ok(m),
        Err(OpsError::Gone) => Err(Acted::Gone),
        Err(OpsError::NotInCgroup(_)) => Err(Acted::Refuse(
            Refusal::NotBlamed,
            format!(
                "{} (pid {}) is no longer in {path}, the cgroup the evidence is about",
                inc.comm(),
                t.pid
            ),
        )),
        Err(e) => Err(Acted::Fail(e.to_string())),
    }
}

/// Every blamed process may be touched (none protected).
pub(super) fn check_all(
    l: &Ladder,
    members: &[ProcInfo],
    lineage: &HashSet<i32>,
) -> Result<(), Acted> {
    for m in members {
        if let Some(why) = l.policy.refusal(m, lineage) {
            return Err(Acted::Refuse(
                Refusal::Protected,
                format!("the blamed set includes {why}"),
            ));
        }
    }
    Ok(())
}

/// A cgroup may be killed or frozen only when it is a leaf cgroup (not a
/// root, slice or session scope), the target still sits in it, and every
/// live process in it is blamed and none is protected. Returns the cgroup
/// path and its live members.
pub(super) fn cgroup_guard(
    l: &Ladder,
    inc: &Incident,
    t: &Target,
    pinned: &Pinned,
    lineage: &HashSet<i32>,
) -> Result<(String, Vec<ProcInfo>), Acted> {
    let Some(path) = inc.culprit.cgroup.clone() else {
        return Err(Acted::Skip("the culprit has no cgroup of its own".into()));
    };
    if let Some(why) = broad_cgroup(&path) {
        return Err(Acted::Refuse(Refusal::CgroupScope, why));
    }
    let members = cgroup_members(l, inc, t, Some(pinned))?;
    let blamed: HashSet<i32> = blamed(l, inc, t, Some(pinned))?
        .into_iter()
        .map(|p| p.pid)
        .collect();
    let all: HashMap<i32, ProcInfo> = l
        .ops
        .processes()
        .map_err(|e| Acted::Fail(e.to_string()))?
        .into_iter()
        .map(|p| (p.pid, p))
        .collect();
    let mut innocent = Vec::new();
    let mut live = Vec::new();
    for pid in &members {
        let Some(p) = all.get(pid) else { continue };
        if let Some(why) = l.policy.refusal(p, lineage) {
            return Err(Acted::Refuse(
                Refusal::Protected,
                format!("the cgroup holds {why}"),
            ));
        }
        if is_dead(p) {
            continue;
        }
        if !blamed.contains(pid) {
            innocent.push(format!("{} ({})", p.comm, p.pid));
        }
        live.push(p.clone());
    }
    if !innocent.is_empty() {
        let n = innocent.len();
        innocent.truncate(5);
        return Err(Acted::Refuse(
            Refusal::InnocentMembers,
            format!(
                "{path} also holds {n} processes the diagnosis does not blame: {}",
                innocent.join(", ")
            ),
        ));
    }
    Ok((path, live))
}
