//! `kill_tree` while a fork hold lets no blamed process fork: every one is
//! killed once, no stop pass first.
//!
//! A stop pass exists because a bomb outforks whoever kills it one process
//! at a time. Under a hold at the floor (`pids.max` 0, `threads-max` at the
//! floor, 20) no member can fork at all, into a slot a kill freed
//! or not, and a fork under way when its parent is killed fails (the
//! kernel checks for a fatal signal before the child is attached). So one
//! listing of the blamed set, each process pinned and killed, and a
//! listing after it that finds nothing new, end the bomb: in the hang
//! lab's guest that is one /proc read per process instead of the walk's
//! four and its waits for each stop to be taken.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::guard::{blamed_in, check_all, listing};
use super::hold::HeldForks;
use super::hold::HeldScope;
use super::{Acted, Incident, Ladder};
use crate::ops::{OpsError, Pinned, ProcInfo};
use selfheal_event::Target;

/// Listings after the kill: a process still there that was not killed
/// (forked in the instant before the hold) is killed then.
const PASSES_AFTER: usize = 3;

/// Kills every blamed process under `hold`. `Err` (nothing done, the
/// reason why) when the hold does not cover them all, for the caller's
/// walk to stop them first. The target is killed last: the listings after
/// the kill blame through it (a tree, a cgroup).
pub(super) fn kill_held(
    l: &Ladder,
    inc: &Incident,
    (t, p): (&Target, &Pinned),
    lineage: &HashSet<i32>,
    hold: &HeldForks<'_>,
) -> Result<Acted, String> {
    let ops = l.ops.as_ref();
    let Some(scope) = hold.scope() else {
        return Err("forks are not held".into());
    };
    let started = Instant::now();
    // Where only a cgroup is held, whether each member sits in it.
    let cgroups = l.policy.needs_cgroups() || matches!(scope, HeldScope::Cgroup(_));
    let all = match listing(l, t, cgroups) {
        Ok(a) => a,
        Err(a) => return Ok(a),
    };
    let members = match blamed_in(l, inc, t, Some(p), &all) {
        Ok(m) => m,
        Err(a) => return Ok(a),
    };
    // Policy first: a protected process among the blamed refuses the
    // step before anything is done.
    if let Err(a) = check_all(l, &members, lineage) {
        return Ok(a);
    }
    let outside: Vec<&ProcInfo> = members.iter().filter(|m| !scope.covers(m)).collect();
    if let Some(m) = outside.first() {
        return Err(format!(
            "{} of {} blamed processes sit outside {scope}, where forks are held \
             ({} (pid {}) in {}): they could fork as they are killed",
            outside.len(),
            members.len(),
            m.comm,
            m.pid,
            if m.cgroups.is_empty() {
                "the root cgroup".to_string()
            } else {
                m.cgroups.join(", ")
            }
        ));
    }
    let listed = started.elapsed();
    let is_target = |m: &ProcInfo| m.pid == t.pid && m.starttime == t.starttime;
    let target_blamed = members.iter().any(is_target);
    // The target is what the listings after blame through: stopped, it
    // stays until killed last (a shell whose fork the hold refuses exits
    // by itself once a signal cuts its retry short, and a cgroup blame
    // with its anchor gone blames nothing).
    let anchored = target_blamed && ops.signal_pinned(p, libc::SIGSTOP).is_ok();
    let mut kills = Kills::default();
    kills.kill_all(l, members.iter().filter(|m| !is_target(m)));
    let first = members.len();
    let first_kill = started.elapsed() - listed;
    // With the machine held, no task can start anywhere, so no pid can
    // name another process than it did: a listing after needs to read only
    // pids it has not seen. That holds while the machine runs more tasks
    // than the floor, which those left alive (not blamed) ensure.
    let quick = scope == HeldScope::Machine
        && all.len().saturating_sub(first) > crate::ops::MIN_THREADS_MAX as usize;
    let mut known: HashMap<i32, ProcInfo> = all.into_iter().map(|m| (m.pid, m)).collect();
    let mut passes = 0;
    for _ in 0..PASSES_AFTER {
        if !kills.failed.is_empty() {
            break;
        }
        // Only while the hold is still in place (its cap may lift it).
        let listed_now = if quick && hold.scope() == Some(HeldScope::Machine) {
            relist(l, &known)
        } else {
            listing(l, t, cgroups)
        };
        let Ok(all_now) = listed_now else {
            break;
        };
        let Ok(now) = blamed_in(l, inc, t, Some(p), &all_now) else {
            break;
        };
        known = all_now.into_iter().map(|m| (m.pid, m)).collect();
        passes += 1;
        if let Err(Acted::Refuse(_, why)) = check_all(l, &now, lineage) {
            tracing::warn!("kill_tree: stopped after the kill: {why}");
            break;
        }
        let left: Vec<&ProcInfo> = now
            .iter()
            .filter(|m| !is_target(m) && !kills.done.contains(&(m.pid, m.starttime)))
            .collect();
        if left.is_empty() {
            break;
        }
        if hold.scope().is_none() {
            tracing::warn!(
                "kill_tree: the fork hold was lifted (its cap) with {} blamed processes left",
                left.len()
            );
        }
        kills.kill_all(l, left);
    }
    if target_blamed {
        match ops.signal_pinned(p, libc::SIGKILL) {
            Ok(()) => {
                kills.done.insert((t.pid, t.starttime));
                kills.touched.push((t.pid, t.starttime));
            }
            Err(OpsError::Gone) => {}
            Err(e) => {
                // Nothing is left stopped by a kill that failed.
                if anchored {
                    let _ = ops.signal_pinned(p, libc::SIGCONT);
                }
                kills.failed.push(format!("SIGKILL {}: {e}", t.pid));
            }
        }
    }
    let took = started.elapsed();
    tracing::info!(
        "kill_tree: killed {} processes with every fork held ({}) in {} ms, none stopped but the target \
         (listed {first} in {} ms, killed them in {} ms; {passes} listings after{})",
        kills.touched.len(),
        hold.describe().unwrap_or_else(|| scope.to_string()),
        took.as_millis(),
        listed.as_millis(),
        first_kill.as_millis(),
        if quick { ", new pids only" } else { "" },
    );
    Ok(kills.acted())
}

/// Every process now, with what `known` says of the pids it has seen
/// (valid only while no pid can be reused) and the rest read.
fn relist(l: &Ladder, known: &HashMap<i32, ProcInfo>) -> Result<Vec<ProcInfo>, Acted> {
    let pids = l.ops.pids().map_err(|e| Acted::Fail(e.to_string()))?;
    Ok(pids
        .into_iter()
        .filter_map(|pid| match known.get(&pid) {
            Some(m) => Some(m.clone()),
            None => l.ops.process(pid).ok().flatten(),
        })
        .collect())
}

/// What the kills did so far.
#[derive(Default)]
struct Kills {
    /// Tried (killed, gone, or refused), never tried again.
    done: HashSet<(i32, u64)>,
    touched: Vec<(i32, u64)>,
    failed: Vec<String>,
}

impl Kills {
    /// SIGKILL to each, pinned by its start time: a pid reused since the
    /// listing is never hit. A failure does not keep the rest alive.
    fn kill_all<'a>(&mut self, l: &Ladder, members: impl IntoIterator<Item = &'a ProcInfo>) {
        for m in members {
            if !self.done.insert((m.pid, m.starttime)) {
                continue;
            }
            match l.ops.signal(m.pid, m.starttime, libc::SIGKILL) {
                Ok(()) => self.touched.push((m.pid, m.starttime)),
                Err(OpsError::Gone) => {}
                Err(e) => self.failed.push(format!("SIGKILL {}: {e}", m.pid)),
            }
        }
    }

    fn acted(mut self) -> Acted {
        if !self.failed.is_empty() {
            self.failed.sort();
            return Acted::Fail(format!(
                "{} ({} killed, {} could not be)",
                self.failed[0],
                self.touched.len(),
                self.failed.len()
            ));
        }
        self.touched.sort_unstable();
        self.touched.dedup();
        if self.touched.is_empty() {
            Acted::Gone
        } else {
            Acted::Done(self.touched)
        }
    }
}
