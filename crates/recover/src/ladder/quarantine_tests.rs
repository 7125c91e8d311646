//! The `quarantine` step against the fake: a fork bomb sharing the root
//! cgroup with everything else (as in the hang lab's guest), where
//! `kill_cgroup` and `freeze_cgroup` refuse.

use std::sync::Arc;
use std::time::Duration;

use selfheal_config::{Action, HumanDuration, RecoveryConfig};
use selfheal_event::{Class, Culprit, MemorySink};

use crate::evidence::Evidence;
use crate::fake::{Call, FakeSystem};
use crate::ladder::{Incident, Ladder, LadderOptions, LadderReport, Outcome};
use crate::ops::{ProcInfo, SystemOps};
use selfheal_event::Target;

const Q: &str = "/selfheal-quarantine-100";

fn proc(pid: i32, ppid: i32, comm: &str) -> ProcInfo {
    ProcInfo {
        pid,
        ppid,
        comm: comm.into(),
        starttime: 1000 + pid as u64,
        uid: Some(1000),
        kernel_thread: false,
        cgroups: vec!["/".into()],
        unit: None,
        pgid: 0,
        sid: 0,
        state: 'R',
    }
}

/// Init, selfheal, a namesake under init (a bystander), and a bomb of three
/// generations; 105 has a fork in flight as it moves (300, whose own fork
/// 301 completes as 300 moves).
fn bomb() -> Arc<FakeSystem> {
    let f = Arc::new(FakeSystem::new(500));
    f.add(proc(1, 0, "init"));
    f.add(proc(500, 1, "selfheal"));
    f.add(proc(50, 1, "bomb"));
    f.add(proc(100, 1, "bomb"));
    for c in 101..=110 {
        f.add(proc(c, 100, "bomb"));
        f.add(proc(c + 100, c, "bomb"));
    }
    f.fork_on_stop(105, proc(300, 105, "bomb"));
    f.fork_on_stop(300, proc(301, 300, "bomb"));
    f
}

fn run(f: &Arc<FakeSystem>, class: Class) -> LadderReport {
    let mut c = RecoveryConfig {
        verify_timeout: HumanDuration::from_millis(40),
        ..RecoveryConfig::default()
    };
    c.ladder.fork_bomb = vec![Action::Record, Action::Quarantine];
    c.ladder.memory_exhaustion = vec![Action::Record, Action::Quarantine];
    let mut l = Ladder::new(
        Box::new(f.clone()),
        LadderOptions {
            config: c,
            dry_run: false,
            poll: Duration::from_millis(5),
        },
    );
    let inc = Incident {
        class,
        culprit: Culprit {
            pid: Some(100),
            comm: Some("bomb".into()),
            cgroup: Some("/".into()),
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
fn a_bomb_in_a_shared_cgroup_is_quarantined_then_killed_and_nothing_else() {
    let f = bomb();
    let r = run(&f, Class::ForkBomb);
    assert_eq!(r.steps[1].outcome, Outcome::Recovered, "{r:?}");
    for p in (100..=110).chain(201..=210).chain([300, 301]) {
        assert!(!f.alive(p), "{p} survived");
    }
    // The bystanders: init, selfheal, and a namesake outside the tree.
    assert!(f.alive(1) && f.alive(50) && f.alive(500));
    let calls = f.calls();
    assert!(
        calls.iter().all(|c| !matches!(c.pid(), Some(1 | 50 | 500))),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| matches!(c, Call::Signal(..))));
    // Nothing could fork while the step ran (the bomb sits in the root
    // cgroup: the machine's limit), and the limit was lifted at the end.
    assert_eq!(calls[0], Call::HoldForks(100, "/".into(), true));
    assert_eq!(calls[1], Call::Quarantine(100, "/".into()));
    // Every member was moved into the quarantine before anything died,
    // the forks in flight too, and the quarantine killed once, at the end.
    let moves: Vec<i32> = calls
        .iter()
        .filter_map(|c| match c {
            Call::MoveTo(p, to) if to == Q => Some(*p),
            _ => None,
        })
        .collect();
    assert_eq!(moves.len(), 23, "{moves:?}");
    assert!(moves.contains(&300) && moves.contains(&301));
    assert_eq!(moves[0], 100, "oldest first");
    assert!(
        matches!(calls.last(), Some(Call::ReleaseForks(_))),
        "{calls:?}"
    );
    let calls = &calls[..calls.len() - 1];
    assert_eq!(calls.last(), Some(&Call::KillQuarantine(Q.into())));
    let first_kill = calls
        .iter()
        .position(|c| matches!(c, Call::KillQuarantine(_)))
        .unwrap();
    assert!(
        calls[first_kill..]
            .iter()
            .all(|c| matches!(c, Call::KillQuarantine(_))),
        "{calls:?}"
    );
}

#[test]
fn a_protected_member_refuses_and_what_was_moved_goes_back() {
    // Protected from the start: refused before anything is created.
    let f = bomb();
    f.add(proc(400, 110, "sshd"));
    let r = run(&f, Class::ForkBomb);
    assert_eq!(r.steps[1].outcome, Outcome::Refused, "{r:?}");
    assert!(r.steps[1].reason.contains("sshd"), "{}", r.steps[1].reason);
    // Only the fork hold, placed first and lifted as the step refused.
    let calls = f.calls();
    assert!(
        matches!(
            calls.as_slice(),
            [Call::HoldForks(100, _, true), Call::ReleaseForks(_)]
        ),
        "{calls:?}"
    );

    // An sshd forked by the bomb as 110 moves (however it got there):
    // found by the next pass, which refuses and moves everything back.
    let f = bomb();
    f.fork_on_stop(110, proc(400, 110, "sshd"));
    let r = run(&f, Class::ForkBomb);
    assert_eq!(r.steps[1].outcome, Outcome::Refused, "{r:?}");
    assert!(r.steps[1].reason.contains("sshd"), "{}", r.steps[1].reason);
    assert!(f.alive(400) && (100..=110).all(|p| f.alive(p)));
    for pid in (100..=110).chain(201..=210) {
        let p = f.process(pid).unwrap().unwrap();
        assert_eq!(p.cgroups, vec!["/".to_string()], "{pid} not moved back");
    }
    let calls = f.calls();
    assert!(calls.iter().any(|c| *c == Call::MoveTo(100, Q.into())));
    assert!(calls.iter().any(|c| *c == Call::MoveTo(100, "/".into())));
    assert!(!calls
        .iter()
        .any(|c| matches!(c, Call::KillQuarantine(_) | Call::Signal(..))));
    assert!(!calls.iter().any(|c| c.pid() == Some(400)), "{calls:?}");
    // The hold placed for the step is lifted when it gives up.
    assert!(
        matches!(calls.last(), Some(Call::ReleaseForks(_))),
        "{calls:?}"
    );
    assert_eq!(
        calls[calls.len() - 2],
        Call::RemoveQuarantine(Q.into()),
        "{calls:?}"
    );
}

#[test]
fn quarantine_is_for_fork_bombs_only() {
    let f = bomb();
    let r = run(&f, Class::MemoryExhaustion);
    assert_eq!(r.steps[1].outcome, Outcome::Skipped, "{r:?}");
    assert!(f.calls().is_empty(), "{:?}", f.calls());
}

#[test]
fn a_quarantine_beneath_a_cgroup_counts_as_that_cgroup_and_nothing_else_does() {
    use crate::ops::in_quarantine_beneath as beneath;
    assert!(beneath("/selfheal-quarantine-100", "/"));
    assert!(beneath("/a/b/selfheal-quarantine-7", "/a/b"));
    assert!(beneath("/a/b/selfheal-quarantine-7", "/a/b/"));
    assert!(!beneath("/a/b/other", "/a/b"));
    assert!(!beneath("/a/bc/selfheal-quarantine-7", "/a/b"));
    assert!(!beneath("/a/b/selfheal-quarantine-7/x", "/a/b"));
    assert!(!beneath("/a/b", "/a/b"));
}

#[test]
fn a_bomb_whose_target_died_is_followed_to_its_oldest_live_member() {
    use selfheal_event::{Blame, ProgramScope};
    // A bomb blamed as one program: members counted by the diagnosis and
    // their process group. `kill` takes the target only; the bomb goes on.
    let f = Arc::new(FakeSystem::new(500));
    f.add(proc(1, 0, "init"));
    f.add(proc(500, 1, "selfheal"));
    let mut namesake = proc(50, 1, "bomb");
    namesake.pgid = 50;
    f.add(namesake);
    for pid in [100, 101, 102, 103] {
        let mut p = proc(pid, 1, "bomb");
        p.pgid = 100;
        f.add(p);
    }
    let mut c = RecoveryConfig {
        verify_timeout: HumanDuration::from_millis(40),
        ..RecoveryConfig::default()
    };
    c.ladder.fork_bomb = vec![Action::Record, Action::Kill, Action::Quarantine];
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
            cgroup: Some("/".into()),
            ..Culprit::default()
        },
        target: Some(Target {
            pid: 100,
            starttime: 1100,
            blame: Blame::Program(ProgramScope {
                comm: "bomb".into(),
                uid: 1000,
                pgids: [100].into(),
                members: [(100, 1100), (101, 1101)].into(),
            }),
        }),
        evidence: Evidence::now("process_count", "test bomb"),
        blocker: None,
    };
    let fk = f.clone();
    let r = l.run(
        &inc,
        &mut || !(100..=103).any(|p| fk.alive(p)),
        &MemorySink::new(),
    );
    let outcomes: Vec<Outcome> = r.steps.iter().map(|s| s.outcome).collect();
    assert_eq!(
        outcomes,
        vec![Outcome::Recorded, Outcome::NotCleared, Outcome::Recovered],
        "{r:?}"
    );
    assert!((100..=103).all(|p| !f.alive(p)));
    // The quarantine went beneath the same cgroup, named for the successor.
    assert!(f.calls().contains(&Call::Quarantine(101, "/".into())));
    // The namesake outside the evidence (another process group, not
    // counted) is neither a successor nor touched.
    assert!(f.alive(50));
    assert!(f.calls().iter().all(|c| c.pid() != Some(50)));
}
