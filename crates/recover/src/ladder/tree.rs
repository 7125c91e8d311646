//! Stopping a fork bomb without racing it: breadth-first along the kernel's
//! own parent → child lists (`/proc/PID/task/TID/children`).
//!
//! Listing every process again and again loses against a bomb: each pass
//! reads all of them (thousands, stopped ones included) while the members
//! not yet stopped fork more, so a pass finds as many new ones as it
//! stopped. Here each process is visited once: stop it, then read its
//! children. Once SIGSTOP is queued, no fork of it can complete (the kernel
//! checks for a pending signal under the lock that attaches a child, and
//! restarts the fork), so the children read after the stop are all it will
//! ever have, and each is visited in turn. Processes re-parented away from
//! the tree (their parent killed by the OOM killer) are not reached this
//! way: the listing passes of `kill_tree` find them afterwards.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use super::guard::{blamed, check_all};
use super::{Acted, Incident, Ladder};
use crate::evidence::Refusal;
use crate::ops::{OpsError, Pinned};
use crate::target::Target;

/// Stops the blamed processes and all their descendants breadth-first,
/// adding each to `stopped`. Does nothing where the kernel does not list
/// children (the caller's passes then do it all). `Err` when a process it
/// would stop is protected or a stop fails; either way what it stopped is
/// continued first.
pub(super) fn stop_descendants(
    l: &Ladder,
    inc: &Incident,
    t: &Target,
    p: &Pinned,
    lineage: &HashSet<i32>,
    deadline: Instant,
    stopped: &mut HashMap<i32, u64>,
) -> Result<(), Acted> {
    let ops = l.ops.as_ref();
    match ops.children(t.pid) {
        Ok(Some(_)) => {}
        Ok(None) | Err(_) => return Ok(()),
    }
    let members = match blamed(l, inc, t, Some(p)) {
        Ok(m) => m,
        Err(Acted::Gone) => return Ok(()),
        Err(a) => return Err(a),
    };
    check_all(l, &members, lineage)?;
    let mut seen: HashSet<(i32, u64)> = members.iter().map(|m| (m.pid, m.starttime)).collect();
    let mut queue: VecDeque<(i32, u64)> = {
        let mut v: Vec<(u64, i32)> = members.iter().map(|m| (m.starttime, m.pid)).collect();
        v.sort_unstable();
        v.into_iter().map(|(st, pid)| (pid, st)).collect()
    };
    let unstop = |stopped: &HashMap<i32, u64>| {
        for (&pid, &st) in stopped {
            let _ = ops.signal(pid, st, libc::SIGCONT);
        }
    };
    while let Some((pid, st)) = queue.pop_front() {
        if Instant::now() >= deadline {
            break;
        }
        match ops.signal(pid, st, libc::SIGSTOP) {
            Ok(()) => {
                stopped.insert(pid, st);
            }
            // Gone: its children are re-parented; the passes find them.
            Err(OpsError::Gone) => continue,
            Err(e) => {
                // Nothing is left stopped by a step that gives up.
                unstop(stopped);
                return Err(Acted::Fail(format!("SIGSTOP {pid}: {e}")));
            }
        }
        let kids = match ops.children(pid) {
            Ok(Some(k)) => k,
            Ok(None) | Err(_) => continue,
        };
        for kid in kids {
            // A descendant of a blamed process is blamed; a protected one
            // (however it got there) stops the whole step.
            let Ok(Some(info)) = ops.process(kid) else {
                continue;
            };
            if info.ppid != pid
                || crate::target::is_dead(&info)
                || !seen.insert((kid, info.starttime))
            {
                continue;
            }
            if let Some(why) = l.policy.refusal(&info, lineage) {
                unstop(stopped);
                return Err(Acted::Refuse(
                    Refusal::Protected,
                    format!("the blamed tree includes {why}"),
                ));
            }
            queue.push_back((kid, info.starttime));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use selfheal_config::{Action, HumanDuration, RecoveryConfig};
    use selfheal_event::{Class, Culprit, MemorySink};

    use crate::evidence::Evidence;
    use crate::fake::{Call, FakeSystem};
    use crate::ladder::{Incident, Ladder, LadderOptions, Outcome};
    use crate::ops::ProcInfo;
    use crate::target::Target;

    fn proc(pid: i32, ppid: i32, comm: &str) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            comm: comm.into(),
            starttime: 1000 + pid as u64,
            uid: Some(1000),
            kernel_thread: false,
            cgroups: vec!["/sandbox/bomb".into()],
            unit: None,
            pgid: 0,
            sid: 0,
            state: 'R',
        }
    }

    /// A bomb of 3 generations under init, sharing init's process group
    /// (as in the hang lab's guest), and a bystander.
    fn bomb(lists_children: bool) -> Arc<FakeSystem> {
        let mut fake = FakeSystem::new(500);
        fake.lists_children = lists_children;
        let f = Arc::new(fake);
        f.add(proc(1, 0, "init"));
        f.add(proc(500, 1, "selfheal"));
        f.add(proc(50, 1, "bomb"));
        f.add(proc(100, 1, "bomb"));
        for c in 101..=110 {
            f.add(proc(c, 100, "bomb"));
            f.add(proc(c + 100, c, "bomb"));
        }
        // Forks in flight as they are stopped: the children appear.
        f.fork_on_stop(105, proc(300, 105, "bomb"));
        f.fork_on_stop(300, proc(301, 300, "bomb"));
        f
    }

    fn run(f: &Arc<FakeSystem>) -> crate::ladder::LadderReport {
        let mut c = RecoveryConfig {
            verify_timeout: HumanDuration::from_millis(40),
            ..RecoveryConfig::default()
        };
        c.ladder.fork_bomb = vec![Action::Record, Action::KillTree];
        let mut l = Ladder::new(
            Box::new(f.clone()),
            LadderOptions {
                config: c,
                dry_run: false,
                poll: Duration::from_millis(5),
            },
        );
        let inc = Incident {
            class: Class::ForkBomb,
            culprit: Culprit {
                pid: Some(100),
                comm: Some("bomb".into()),
                ..Culprit::default()
            },
            target: Some(Target::tree(100, 1100)),
            evidence: Evidence::now("process_count", "test bomb"),
            blocker: None,
        };
        let fk = f.clone();
        l.run(
            &inc,
            &mut || !(100..=301).any(|p| fk.alive(p)),
            &MemorySink::new(),
        )
    }

    #[test]
    fn the_tree_is_stopped_along_the_child_lists_forks_in_flight_included() {
        for lists in [true, false] {
            let f = bomb(lists);
            let r = run(&f);
            assert_eq!(r.steps[1].outcome, Outcome::Recovered, "{lists}: {r:?}");
            for p in (100..=110).chain(201..=210).chain([300, 301]) {
                assert!(!f.alive(p), "{lists}: {p} survived");
            }
            assert!(f.alive(50) && f.alive(1) && f.alive(500), "{lists}");
            assert!(f
                .calls()
                .iter()
                .all(|c| !matches!(c.pid(), Some(1 | 50 | 500))));
            // Every member was stopped before any was killed.
            let calls = f.calls();
            let first_kill = calls
                .iter()
                .position(|c| matches!(c, Call::Signal(_, libc::SIGKILL)))
                .unwrap();
            assert!(calls[first_kill..]
                .iter()
                .all(|c| !matches!(c, Call::Signal(_, libc::SIGSTOP))));
        }
    }

    #[test]
    fn a_protected_descendant_refuses_and_continues_what_was_stopped() {
        let f = bomb(true);
        f.add(proc(400, 110, "sshd"));
        let r = run(&f);
        assert_eq!(r.steps[1].outcome, Outcome::Refused, "{r:?}");
        assert!(r.steps[1].reason.contains("sshd"), "{}", r.steps[1].reason);
        assert!(f.alive(400) && !f.is_stopped(400));
        assert!((100..=110).all(|p| f.alive(p) && !f.is_stopped(p)));
    }

    /// The bomb of [`bomb`], with the kernel refusing `sig` to pid 105.
    fn bomb_refusing(lists_children: bool, sig: i32) -> Arc<FakeSystem> {
        let mut f = Arc::try_unwrap(bomb(lists_children)).expect("one owner");
        f.refused_signals.push((105, sig));
        Arc::new(f)
    }

    #[test]
    fn a_stop_that_fails_leaves_nothing_stopped() {
        for lists in [true, false] {
            let f = bomb_refusing(lists, libc::SIGSTOP);
            let r = run(&f);
            assert_eq!(r.steps[1].outcome, Outcome::Failed, "{lists}: {r:?}");
            assert!(
                r.steps[1].reason.contains("SIGSTOP 105"),
                "{}",
                r.steps[1].reason
            );
            let stopped: Vec<i32> = (1..=500).filter(|&p| f.is_stopped(p)).collect();
            assert!(stopped.is_empty(), "{lists}: left stopped: {stopped:?}");
            assert!((100..=110).all(|p| f.alive(p)), "{lists}: nothing killed");
        }
    }

    #[test]
    fn a_kill_that_fails_still_kills_the_rest_and_leaves_none_stopped() {
        for lists in [true, false] {
            let f = bomb_refusing(lists, libc::SIGKILL);
            let r = run(&f);
            assert_eq!(r.steps[1].outcome, Outcome::Failed, "{lists}: {r:?}");
            assert!(
                r.steps[1].reason.contains("SIGKILL 105"),
                "{}",
                r.steps[1].reason
            );
            assert!(f.alive(105) && !f.is_stopped(105), "{lists}");
            for p in (100..=110).chain(201..=210).filter(|&p| p != 105) {
                assert!(!f.alive(p), "{lists}: {p} survived");
            }
            assert!(f.alive(50) && f.alive(1) && f.alive(500), "{lists}");
        }
    }
}
