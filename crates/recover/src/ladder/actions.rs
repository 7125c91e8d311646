//! Carrying out one step: which processes it touches, the policy check of
//! each, and the system calls (through the pinned target).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use selfheal_config::Action;

use super::guard::{blamed, cgroup_guard, check_all};
use super::hold::HeldForks;
use super::tree::Stopped;
use super::{Acted, Incident, Ladder};
use crate::evidence::Refusal;
use crate::ops::{OpsError, Pinned, ProcInfo};
use selfheal_event::{Blame, Target};

/// How long `kill_tree` keeps stopping newly forked members (it stops as
/// soon as a pass finds none: listing thousands of processes on a slow
/// machine takes a second or more per pass).
const TREE_DEADLINE: Duration = Duration::from_secs(10);

/// Passes after the kill that look for members that escaped (forked after
/// the last stop pass, or after the deadline) and kill them too.
const MOP_UP_PASSES: usize = 3;

/// The target and its pinned handle, which every process action needs.
fn both<'a>(
    t: Option<&'a Target>,
    p: Option<&'a Pinned>,
) -> Result<(&'a Target, &'a Pinned), Acted> {
    match (t, p) {
        (Some(t), Some(p)) => Ok((t, p)),
        _ => Err(Acted::Skip("no user-space culprit to act on".into())),
    }
}

/// What the step would do, for dry-run; `Err` when it would be refused or skipped.
pub(super) fn plan(
    l: &Ladder,
    inc: &Incident,
    t: Option<&Target>,
    p: Option<&Pinned>,
    action: Action,
    lineage: &HashSet<i32>,
) -> Result<String, Acted> {
    let comm = inc.comm();
    let (t, p) = both(t, p)?;
    Ok(match action {
        Action::Record => "record evidence".to_string(),
        Action::Demote => format!(
            "move the real-time threads of {comm} (pid {}) to SCHED_OTHER",
            t.pid
        ),
        Action::Stop => format!("SIGSTOP {comm} (pid {})", t.pid),
        // Acts on a connection, not a process: see `blocker.rs`.
        Action::AbortFuse => return Err(Acted::Skip("abort_fuse has its own step".into())),
        Action::Kill => format!("SIGKILL {comm} (pid {})", t.pid),
        Action::KillTree => {
            let members = blamed(l, inc, t, Some(p))?;
            check_all(l, &members, lineage)?;
            format!(
                "SIGKILL {} processes of {comm} (pid {}); SIGSTOP first unless a fork hold keeps them all from forking",
                members.len(),
                t.pid
            )
        }
        Action::KillCgroup | Action::FreezeCgroup => {
            let (path, live) = cgroup_guard(l, inc, t, p, lineage)?;
            format!(
                "{} the cgroup {path} ({} processes)",
                if action == Action::KillCgroup {
                    "kill every process in"
                } else {
                    "freeze"
                },
                live.len()
            )
        }
        Action::RestartUnit => match &inc.culprit.unit {
            Some(u) => format!("systemctl restart {u}"),
            None => return Err(Acted::Skip("no systemd unit".into())),
        },
        Action::Quarantine => {
            let from = quarantine_scope(inc)?;
            let members = blamed(l, inc, t, Some(p))?;
            check_all(l, &members, lineage)?;
            format!(
                "move {} processes of {comm} (pid {}) into {} (pids.max = 0), then kill them there",
                members.len(),
                t.pid,
                crate::ops::quarantine_path(&from, t.pid)
            )
        }
        Action::Deprioritize => format!(
            "move kernel thread {comm} (pid {}) to SCHED_IDLE and keep it on its CPU",
            t.pid
        ),
        Action::Reboot => return Err(Acted::Skip("reboot has its own step".into())),
    })
}

/// Does it.
pub(super) fn act(
    l: &Ladder,
    inc: &Incident,
    t: Option<&Target>,
    p: Option<&Pinned>,
    action: Action,
    lineage: &HashSet<i32>,
) -> Acted {
    let ops = l.ops.as_ref();
    let (t, p) = match both(t, p) {
        Ok(x) => x,
        Err(a) => return a,
    };
    let me = vec![(t.pid, t.starttime)];
    let signal = |sig: i32| match ops.signal_pinned(p, sig) {
        Ok(()) => Acted::Done(me.clone()),
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
            // The threads' tids belong to the pinned process only while it
            // lives: check it still does after changing them.
            for tid in &rt {
                match ops.set_normal_policy(*tid) {
                    Ok(()) | Err(OpsError::Gone) => {}
                    Err(e) => return Acted::Fail(format!("thread {tid}: {e}")),
                }
            }
            match ops.signal_pinned(p, 0) {
                Ok(()) => Acted::Done(me),
                Err(_) => Acted::Gone,
            }
        }
        Action::Stop => signal(libc::SIGSTOP),
        Action::AbortFuse => Acted::Skip("abort_fuse has its own step".into()),
        Action::Kill => signal(libc::SIGKILL),
        Action::KillTree => kill_tree(l, inc, t, p, lineage),
        Action::KillCgroup | Action::FreezeCgroup => {
            let (path, live) = match cgroup_guard(l, inc, t, p, lineage) {
                Ok(x) => x,
                Err(a) => return a,
            };
            let done = if action == Action::KillCgroup {
                ops.kill_cgroup(p, &path)
            } else {
                ops.freeze_cgroup(p, &path)
            };
            match done {
                Ok(()) => Acted::Done(live.iter().map(|m| (m.pid, m.starttime)).collect()),
                Err(OpsError::Gone) => Acted::Gone,
                Err(OpsError::Refused(why)) => Acted::Refuse(Refusal::Protected, why),
                Err(OpsError::NotInCgroup(path)) => Acted::Refuse(
                    Refusal::NotBlamed,
                    format!("pid {} is no longer in {path}", t.pid),
                ),
                Err(e) => Acted::Fail(e.to_string()),
            }
        }
        Action::RestartUnit => match &inc.culprit.unit {
            None => Acted::Skip("no systemd unit".into()),
            Some(u) => match ops.restart_unit(u) {
                Ok(()) => Acted::Done(me),
                Err(e) => Acted::Fail(e.to_string()),
            },
        },
        Action::Quarantine => quarantine(l, inc, t, p, lineage),
        Action::Deprioritize => match ops.deprioritize_thread(t.pid, inc.culprit.cpu) {
            Ok(_) => Acted::Done(me),
            Err(OpsError::Gone) => Acted::Gone,
            Err(e) => Acted::Fail(e.to_string()),
        },
        Action::Reboot => Acted::Skip("reboot has its own step".into()),
    }
}

/// Kills every blamed process. Where a fork hold lets none of them fork
/// (`held_kill.rs`) that is one kill each. Otherwise it stops them first
/// (breadth-first along the child lists where the kernel has them, see
/// `tree.rs`; then again and again while new ones appear in a listing),
/// then kills them all: a stopped process cannot fork, so none escapes.
///
/// A whole-cgroup blame is anchored to its target: the cgroup is the one
/// the evidence is about while the target sits in it. A bomb's members die
/// and are replaced all the time, the target among them, and the kill
/// takes it too; so the step moves the anchor to a member it stopped (one
/// that sits in the cgroup, checked when pinned), and keeps one stopped
/// member alive until the passes after the kill are done: without it they
/// would find the cgroup blamed by nothing and leave the members that
/// escaped the stop passes to rebuild the bomb.
fn kill_tree(l: &Ladder, inc: &Incident, t: &Target, p: &Pinned, lineage: &HashSet<i32>) -> Acted {
    let ops = l.ops.as_ref();
    // Dropped last, after the kill and its mop-up passes.
    let hold = HeldForks::place(l, inc, p);
    // No member can fork: kill them all, no stop first (`held_kill.rs`).
    match super::held_kill::kill_held(l, inc, (t, p), lineage, &hold) {
        Ok(acted) => return acted,
        Err(why) if hold.scope().is_some() => {
            l.note_step(format!("stopped before the kill: {why}"));
            tracing::info!("kill_tree: stopping the bomb before the kill: {why}");
        }
        Err(_) => {}
    }
    let deadline = Instant::now() + TREE_DEADLINE;
    let mut stopped = Stopped::new(pin_budget());
    let cgroup_blame = matches!(t.blame, Blame::Cgroup);
    // The target and pin the passes blame through (see above).
    let mut anchor: Option<(Target, Pinned)> = None;
    // A step that gives up before the kill leaves nothing stopped: what it
    // stopped runs again (stopped is not recovered, and not what the
    // evidence asked for).
    let unstop = |stopped: &Stopped| stopped.continue_all(ops);
    // Along the kernel's child lists first: no pass races the bomb; the
    // passes below then find only what left the tree.
    let walk_started = Instant::now();
    if let Err(a) = super::tree::stop_descendants(l, inc, (t, p), lineage, deadline, &mut stopped) {
        return a;
    }
    if !stopped.is_empty() {
        tracing::info!(
            "kill_tree: stopped {} processes along the child lists in {} ms \
             ({} re-reads after they took the stop; {} had not taken it when the walk ended)",
            stopped.len(),
            walk_started.elapsed().as_millis(),
            stopped.settle_sweeps,
            stopped.unsettled_at_deadline
        );
    }
    loop {
        let (ct, cp) = anchor.as_ref().map_or((t, p), |(t, p)| (t, p));
        let members = match blamed(l, inc, ct, Some(cp)) {
            Ok(m) => m,
            Err(Acted::Gone) if cgroup_blame && !stopped.is_empty() => {
                match reanchor(l, inc, t, stopped.map()) {
                    Some(a) => {
                        anchor = Some(a);
                        continue;
                    }
                    None => break,
                }
            }
            Err(Acted::Gone) if !stopped.is_empty() => break,
            Err(a) => {
                unstop(&stopped);
                return a;
            }
        };
        if let Err(a) = check_all(l, &members, lineage) {
            unstop(&stopped);
            return a;
        }
        let fresh: Vec<&ProcInfo> = members
            .iter()
            .filter(|m| !stopped.contains(m.pid))
            .collect();
        if fresh.is_empty() || Instant::now() >= deadline {
            break;
        }
        for m in fresh {
            match ops.signal(m.pid, m.starttime, libc::SIGSTOP) {
                Ok(()) | Err(OpsError::Gone) => {
                    stopped.insert(m.pid, m.starttime, None);
                }
                Err(e) => {
                    unstop(&stopped);
                    return Acted::Fail(format!("SIGSTOP {}: {e}", m.pid));
                }
            }
        }
    }
    // Every stopped member is killed, also past one that cannot be: a
    // failure does not leave the rest stopped. One that refused SIGKILL is
    // continued.
    let keep = if cgroup_blame {
        reanchor(l, inc, t, stopped.map())
    } else {
        None
    };
    let kept = keep.as_ref().map(|(k, _)| k.pid);
    let mut touched: Vec<(i32, u64)> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for (&pid, &st) in stopped.map().iter().filter(|(pid, _)| Some(**pid) != kept) {
        match stopped.signal(ops, pid, libc::SIGKILL) {
            Ok(()) => touched.push((pid, st)),
            Err(OpsError::Gone) => {}
            Err(e) => {
                let _ = stopped.signal(ops, pid, libc::SIGCONT);
                failed.push(format!("SIGKILL {pid}: {e}"));
            }
        }
    }
    let kill_kept = |touched: &mut Vec<(i32, u64)>| {
        if let Some((k, kp)) = &keep {
            match ops.signal_pinned(kp, libc::SIGKILL) {
                Ok(()) => touched.push((k.pid, k.starttime)),
                Err(OpsError::Gone) => {}
                Err(e) => {
                    let _ = ops.signal_pinned(kp, libc::SIGCONT);
                    tracing::warn!("kill_tree: SIGKILL {}: {e}; continued", k.pid);
                }
            }
        }
    };
    if !failed.is_empty() {
        kill_kept(&mut touched);
        failed.sort();
        return Acted::Fail(format!(
            "{} (of {} stopped: {} killed, {} could not be and run again)",
            failed[0],
            stopped.len(),
            touched.len(),
            failed.len()
        ));
    }
    // Members that escaped the stop passes (a bomb forks into the slots
    // the kill frees): kill them directly, a few passes.
    let mut killed: HashSet<(i32, u64)> = stopped.map().iter().map(|(&p, &s)| (p, s)).collect();
    drop(stopped);
    let (mt, mp) = keep.as_ref().map_or((t, p), |(t, p)| (t, p));
    for _ in 0..MOP_UP_PASSES {
        let Ok(members) = blamed(l, inc, mt, Some(mp)) else {
            break;
        };
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
                Ok(()) => touched.push((m.pid, m.starttime)),
                Err(OpsError::Gone) => {}
                Err(e) => {
                    kill_kept(&mut touched);
                    return Acted::Fail(format!("SIGKILL {}: {e}", m.pid));
                }
            }
            killed.insert((m.pid, m.starttime));
        }
    }
    kill_kept(&mut touched);
    touched.sort_unstable();
    touched.dedup();
    if touched.is_empty() {
        Acted::Gone
    } else {
        Acted::Done(touched)
    }
}

/// For a whole-cgroup blame: the oldest process among `stopped` that is
/// alive and still sits in the culprit's cgroup, as a target blaming that
/// cgroup, pinned; `None` when none is left.
fn reanchor(
    l: &Ladder,
    inc: &Incident,
    t: &Target,
    stopped: &HashMap<i32, u64>,
) -> Option<(Target, Pinned)> {
    let path = inc.culprit.cgroup.as_deref()?;
    let mut order: Vec<(u64, i32)> = stopped.iter().map(|(&pid, &st)| (st, pid)).collect();
    order.sort_unstable();
    order.into_iter().find_map(|(st, pid)| {
        let pinned = l.ops.pin(pid, st).ok()?;
        l.ops.cgroup_members(&pinned, path).ok()?;
        let mut a = t.clone();
        a.pid = pid;
        a.starttime = st;
        Some((a, pinned))
    })
}

/// How many pidfds a walk may keep for the kill: a quarter of the
/// open-file limit, so the HTTP server and the stores keep theirs.
fn pin_budget() -> usize {
    selfheal_sys::rlimit::raise_nofile_limit(0).map_or(256, |soft| (soft / 4) as usize)
}

/// The cgroup a fork bomb's quarantine goes beneath: the culprit's. Only
/// fork bombs are quarantined.
fn quarantine_scope(inc: &Incident) -> Result<String, Acted> {
    if inc.class != selfheal_event::Class::ForkBomb {
        return Err(Acted::Skip("quarantine is for fork bombs only".into()));
    }
    inc.culprit
        .cgroup
        .clone()
        .ok_or_else(|| Acted::Skip("the culprit's cgroup is unknown".into()))
}

/// Moves every blamed process (re-listed and re-checked each pass, oldest
/// first, each pinned and its start time checked) into a new cgroup with
/// `pids.max = 0` beneath the bomb's: a process in it can never fork
/// again, whoever its parent is or becomes. Passes repeat while new
/// members appear outside (forks completed before their parent moved).
/// Then everything in the quarantine, which holds only what was moved, is
/// killed and the cgroup removed. A protected process among the blamed
/// refuses the step, and what was moved goes back.
fn quarantine(l: &Ladder, inc: &Incident, t: &Target, p: &Pinned, lineage: &HashSet<i32>) -> Acted {
    let ops = l.ops.as_ref();
    let from = match quarantine_scope(inc) {
        Ok(f) => f,
        Err(a) => return a,
    };
    // Dropped last, after the kill.
    let _hold = HeldForks::place(l, inc, p);
    let first = match blamed(l, inc, t, Some(p)) {
        Ok(m) => m,
        Err(a) => return a,
    };
    if let Err(a) = check_all(l, &first, lineage) {
        return a;
    }
    let q = match ops.quarantine_cgroup(p, &from) {
        Ok(q) => q,
        Err(OpsError::Gone) => return Acted::Gone,
        Err(OpsError::NotInCgroup(path)) => {
            return Acted::Refuse(
                Refusal::NotBlamed,
                format!("pid {} is no longer in {path}", t.pid),
            )
        }
        Err(e) => return Acted::Fail(format!("quarantine cgroup beneath {from}: {e}")),
    };
    let deadline = Instant::now() + TREE_DEADLINE;
    let mut moved: HashSet<(i32, u64)> = HashSet::new();
    let release = |moved: &HashSet<(i32, u64)>| {
        // Back where they were, and the quarantine removed once empty.
        for &(pid, st) in moved {
            let _ = ops.move_to_cgroup(pid, st, &from, &from);
        }
        ops.remove_quarantine(&q);
    };
    loop {
        let mut members = match blamed(l, inc, t, Some(p)) {
            Ok(m) => m,
            Err(Acted::Gone) => break,
            Err(a) => {
                release(&moved);
                return a;
            }
        };
        if let Err(a) = check_all(l, &members, lineage) {
            release(&moved);
            return a;
        }
        members.retain(|m| !moved.contains(&(m.pid, m.starttime)));
        if members.is_empty() || Instant::now() >= deadline {
            break;
        }
        // Parents before children: a parent moved first takes its next
        // fork into the quarantine, where it fails.
        members.sort_unstable_by_key(|m| (m.starttime, m.pid));
        for m in members {
            match ops.move_to_cgroup(m.pid, m.starttime, &q, &from) {
                Ok(()) => {
                    moved.insert((m.pid, m.starttime));
                }
                Err(OpsError::Gone) => {}
                Err(e) => {
                    release(&moved);
                    return Acted::Fail(format!("moving {} into {q}: {e}", m.pid));
                }
            }
        }
    }
    if moved.is_empty() {
        let _ = ops.kill_quarantine(&q, true);
        return Acted::Gone;
    }
    // Kill what is in the quarantine; members that escaped the passes
    // (forked as their parent moved, or after the deadline) are moved in
    // and killed in a few more passes; then the cgroup goes.
    let failed = |e: OpsError, n: usize| {
        Acted::Fail(format!(
            "{n} processes quarantined in {q} (none can fork), but killing them failed: {e}"
        ))
    };
    if let Err(e) = ops.kill_quarantine(&q, false) {
        return failed(e, moved.len());
    }
    for _ in 0..MOP_UP_PASSES {
        let Ok(mut members) = blamed(l, inc, t, Some(p)) else {
            break;
        };
        if check_all(l, &members, lineage).is_err() {
            break;
        }
        members.retain(|m| !moved.contains(&(m.pid, m.starttime)));
        if members.is_empty() {
            break;
        }
        members.sort_unstable_by_key(|m| (m.starttime, m.pid));
        for m in members {
            if ops.move_to_cgroup(m.pid, m.starttime, &q, &from).is_ok() {
                moved.insert((m.pid, m.starttime));
            }
        }
        if let Err(e) = ops.kill_quarantine(&q, false) {
            return failed(e, moved.len());
        }
    }
    if let Err(e) = ops.kill_quarantine(&q, true) {
        return failed(e, moved.len());
    }
    let mut touched: Vec<(i32, u64)> = moved.into_iter().collect();
    touched.sort_unstable();
    Acted::Done(touched)
}
