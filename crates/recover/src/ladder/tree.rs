//! Stopping a fork bomb without racing it: breadth-first along the kernel's
//! own parent → child lists (`/proc/PID/task/TID/children`).
//!
//! Listing every process again and again loses against a bomb: each pass
//! reads all of them (thousands, stopped ones included) while the members
//! not yet stopped fork more, so a pass finds as many new ones as it
//! stopped. Here each process is stopped the moment it is met and its
//! children read. A stop does not cancel a fork already under way (since
//! Linux 4.20 only a signal sent to a whole group restarts it), so once a
//! stopped process has taken its stop its children are read once more:
//! after that it has all it will ever have. Processes re-parented away
//! from the tree (their parent killed by the OOM killer) are not reached
//! this way: the listing passes of `kill_tree` find them afterwards.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::guard::{blamed, check_all};
use super::{Acted, Incident, Ladder};
use crate::evidence::Refusal;
use crate::ops::{OpsError, Pinned, SystemOps};
use selfheal_event::Target;

/// Stops the blamed processes and all their descendants breadth-first,
/// adding each to `stopped`. Does nothing where the kernel does not list
/// children (the caller's passes then do it all). `Err` when a process it
/// would stop is protected or a stop fails; either way what it stopped is
/// continued first.
///
/// A walk is a race, so each step costs as little as it can: each child
/// is pinned and read once (its `stat`, and its cgroups only when the
/// policy looks at them), stopped through that pin, and the pin kept for
/// the kill.
pub(super) fn stop_descendants(
    l: &Ladder,
    inc: &Incident,
    (t, p): (&Target, &Pinned),
    lineage: &HashSet<i32>,
    deadline: Instant,
    stopped: &mut Stopped,
) -> Result<(), Acted> {
    let ops = l.ops.as_ref();
    match ops.children(t.pid) {
        Ok(Some(_)) => {}
        Ok(None) | Err(_) => return Ok(()),
    }
    // Seeded with every blamed process, oldest first, not the target
    // alone: the members of a bomb whose processes exit as they fork (a
    // shell function bomb) are orphans, in no tree of the target's.
    let members = match blamed(l, inc, t, Some(p)) {
        Ok(m) => m,
        Err(Acted::Gone) => return Ok(()),
        Err(a) => return Err(a),
    };
    check_all(l, &members, lineage)?;
    let seeds: Vec<(i32, u64)> = {
        let mut v: Vec<(u64, i32)> = members.iter().map(|m| (m.starttime, m.pid)).collect();
        v.sort_unstable();
        v.into_iter().map(|(st, pid)| (pid, st)).collect()
    };
    let mut seen: HashSet<(i32, u64)> = seeds.iter().copied().collect();
    let unstop = |stopped: &Stopped| stopped.continue_all(ops);
    let give_up = |stopped: &Stopped, pid: i32, e: OpsError| {
        // Nothing is left stopped by a step that gives up.
        unstop(stopped);
        Err(Acted::Fail(format!("SIGSTOP {pid}: {e}")))
    };
    // Processes stopped whose children are still to be read, and whether
    // they were seen stopped already: each is stopped the moment it is
    // met, so no fd is held while it waits.
    let mut queue: VecDeque<Visit> = VecDeque::new();
    for (pid, st) in seeds {
        match ops.signal(pid, st, libc::SIGSTOP) {
            Ok(()) => {
                stopped.insert(pid, st, None);
                queue.push_back(Visit::new(pid, st, false));
            }
            // Gone: its children are re-parented; the passes find them.
            Err(OpsError::Gone) => {}
            Err(e) => return give_up(stopped, pid, e),
        }
    }
    let cgroups = l.policy.needs_cgroups();
    // Stopped, but not yet seen in the stopped state: a fork it was in the
    // middle of when the stop was sent still completes (since Linux 4.20 a
    // signal to one process no longer restarts a fork), so its children
    // are read once more after it has stopped.
    let mut unsettled: Vec<Visit> = Vec::new();
    let mut progress = Instant::now();
    loop {
        while let Some(v) = queue.pop_front() {
            if Instant::now() >= deadline {
                stopped.unsettled_at_deadline = unsettled.len() + queue.len() + 1;
                return Ok(());
            }
            if !v.settled {
                unsettled.push(v);
            }
            let kids = match ops.children_hint(v.pid, v.one_thread) {
                Ok(Some(k)) => k,
                Ok(None) | Err(_) => continue,
            };
            for kid in kids {
                // A descendant of a blamed process is blamed; a protected
                // one (however it got there) stops the whole step.
                // Exited or re-parented already, or not to be pinned now
                // (out of descriptors): the listing passes find it.
                let Ok(Some((pin, info, one_thread))) = ops.pin_child(v.pid, kid, cgroups) else {
                    continue;
                };
                if !seen.insert((kid, info.starttime)) {
                    continue;
                }
                if let Some(why) = l.policy.refusal(&info, lineage) {
                    unstop(stopped);
                    return Err(Acted::Refuse(
                        Refusal::Protected,
                        format!("the blamed tree includes {why}"),
                    ));
                }
                match ops.signal_pinned(&pin, libc::SIGSTOP) {
                    Ok(()) => {
                        stopped.insert(kid, info.starttime, Some(pin));
                        queue.push_back(Visit::new(kid, info.starttime, one_thread));
                    }
                    Err(OpsError::Gone) => {}
                    Err(e) => return give_up(stopped, kid, e),
                }
            }
        }
        if unsettled.is_empty() || Instant::now() >= deadline {
            stopped.unsettled_at_deadline = unsettled.len();
            return Ok(());
        }
        stopped.settle_sweeps += 1;
        // Those stopped by now have all the children they will ever have:
        // their children are read again (new ones go through the walk).
        let before = unsettled.len();
        unsettled.retain(|v| match ops.state_of(v.pid, v.starttime) {
            Some('T' | 't') => {
                queue.push_back(Visit {
                    settled: true,
                    ..*v
                });
                false
            }
            Some(_) => true,
            // Gone: its children are re-parented; the passes find them.
            None => false,
        });
        if unsettled.len() < before {
            progress = Instant::now();
        } else if progress.elapsed() >= SETTLE_PATIENCE {
            // Those left may never take it while we wait (one in D state
            // until memory is freed): the listing passes find their forks.
            stopped.unsettled_at_deadline = unsettled.len();
            return Ok(());
        } else {
            // None has stopped yet: they wait for a CPU; let them have one.
            std::thread::sleep(SETTLE_POLL);
        }
    }
}

/// The processes a step stopped (pid → start time), with the pins of
/// those the walk met as children, kept for the kill (one system call
/// each, no read) up to a share of the open-file limit.
#[derive(Debug, Default)]
pub(super) struct Stopped {
    map: HashMap<i32, u64>,
    pins: HashMap<i32, Pinned>,
    max_pins: usize,
    /// How many times the walk read again the children of those that had
    /// taken the stop.
    pub settle_sweeps: usize,
    /// Stopped processes whose children were not read for good when the
    /// walk ended (the deadline came, or none took its stop for a second):
    /// the listing passes find what they forked.
    pub unsettled_at_deadline: usize,
}

impl Stopped {
    /// Keeps at most `max_pins` pins.
    pub fn new(max_pins: usize) -> Stopped {
        Stopped {
            max_pins,
            ..Stopped::default()
        }
    }

    pub fn insert(&mut self, pid: i32, starttime: u64, pin: Option<Pinned>) {
        self.map.insert(pid, starttime);
        match pin {
            Some(p) if self.pins.len() < self.max_pins => {
                self.pins.insert(pid, p);
            }
            _ => {
                self.pins.remove(&pid);
            }
        }
    }

    pub fn contains(&self, pid: i32) -> bool {
        self.map.contains_key(&pid)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn map(&self) -> &HashMap<i32, u64> {
        &self.map
    }

    /// Sends `sig` to stopped process `pid`: through its pin when it has
    /// one, else pinned again by its start time.
    pub fn signal(&self, ops: &dyn SystemOps, pid: i32, sig: i32) -> Result<(), OpsError> {
        match (self.pins.get(&pid), self.map.get(&pid)) {
            (Some(pin), _) => ops.signal_pinned(pin, sig),
            (None, Some(&st)) => ops.signal(pid, st, sig),
            (None, None) => Err(OpsError::Gone),
        }
    }

    /// Lets every stopped process run again (a step that gives up leaves
    /// none stopped).
    pub fn continue_all(&self, ops: &dyn SystemOps) {
        for &pid in self.map.keys() {
            let _ = self.signal(ops, pid, libc::SIGCONT);
        }
    }
}

/// How long the walk waits for one more stopped process to take its stop
/// before it leaves the rest to the listing passes.
const SETTLE_PATIENCE: Duration = Duration::from_secs(1);

/// How long the walk waits when none of the processes it stopped has
/// taken the stop yet.
const SETTLE_POLL: Duration = Duration::from_millis(5);

/// A stopped process whose children the walk reads.
#[derive(Debug, Clone, Copy)]
struct Visit {
    pid: i32,
    starttime: u64,
    /// It has one thread: its main thread lists all its children.
    one_thread: bool,
    /// Seen in the stopped state: its children read now are final.
    settled: bool,
}

impl Visit {
    fn new(pid: i32, starttime: u64, one_thread: bool) -> Visit {
        Visit {
            pid,
            starttime,
            one_thread,
            settled: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use selfheal_config::{Action, HoldForks, HumanDuration, RecoveryConfig};
    use selfheal_event::{Class, Culprit, MemorySink};

    use std::collections::HashSet;
    use std::time::Instant;

    use super::{stop_descendants, Stopped};
    use crate::evidence::Evidence;
    use crate::fake::{Call, FakeSystem};
    use crate::ladder::{Incident, Ladder, LadderOptions, Outcome};
    use crate::ops::ProcInfo;
    use crate::ops::SystemOps;
    use selfheal_event::Target;

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

    fn ladder(f: &Arc<FakeSystem>) -> Ladder {
        let mut c = RecoveryConfig {
            verify_timeout: HumanDuration::from_millis(40),
            ..RecoveryConfig::default()
        };
        c.ladder.fork_bomb = vec![Action::Record, Action::KillTree];
        // The walk is what kill_tree does when forks are not held.
        c.hold_forks = HoldForks::Off;
        Ladder::new(
            Box::new(f.clone()),
            LadderOptions {
                config: c,
                dry_run: false,
                poll: Duration::from_millis(5),
            },
        )
    }

    fn incident() -> Incident {
        Incident {
            class: Class::ForkBomb,
            culprit: Culprit {
                pid: Some(100),
                comm: Some("bomb".into()),
                ..Culprit::default()
            },
            target: Some(Target::tree(100, 1100)),
            evidence: Evidence::now("process_count", "test bomb"),
            blocker: None,
        }
    }

    fn run(f: &Arc<FakeSystem>) -> crate::ladder::LadderReport {
        let fk = f.clone();
        ladder(f).run(
            &incident(),
            &mut || !(100..=301).any(|p| fk.alive(p)),
            &MemorySink::new(),
        )
    }

    #[test]
    fn a_fork_that_completes_after_the_stop_is_walked_into_too() {
        // Forks in flight when the stop was sent complete after the first
        // read of the children (Linux no longer restarts them): the walk
        // itself reads them again once each process has stopped, without
        // waiting for a listing of every process.
        let f = bomb(true);
        f.fork_on_settle(103, proc(400, 103, "bomb"));
        f.fork_on_settle(400, proc(401, 400, "bomb"));
        f.fork_on_settle(100, proc(402, 100, "bomb"));
        let l = ladder(&f);
        let inc = incident();
        let t = inc.target.clone().unwrap();
        let p = f.pin(100, 1100).unwrap();
        let mut stopped = Stopped::new(4);
        let deadline = Instant::now() + Duration::from_secs(5);
        let walked = stop_descendants(&l, &inc, (&t, &p), &HashSet::new(), deadline, &mut stopped);
        assert!(walked.is_ok(), "the walk gave up");
        for pid in (100..=110)
            .chain(201..=210)
            .chain([300, 301, 400, 401, 402])
        {
            assert!(stopped.contains(pid), "{pid} not stopped: {stopped:?}");
        }
        // Outside the tree: a namesake, init and selfheal.
        for pid in [1, 50, 500] {
            assert!(!stopped.contains(pid), "{pid} stopped");
        }
        assert!(f
            .calls()
            .iter()
            .all(|c| !matches!(c, Call::Signal(_, libc::SIGKILL))));
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
