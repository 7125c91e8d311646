//! `kill_tree` under a fork hold (`held_kill.rs`) against the fake: each
//! culprit case beside its bystander — a protected process in the tree, a
//! blamed member the hold does not cover, a member that appears after the
//! kill, a kill the kernel refuses.

use std::sync::Arc;
use std::time::Duration;

use selfheal_config::{Action, HumanDuration, RecoveryConfig};
use selfheal_event::{Blame, Class, Culprit, MemorySink, ProgramScope, Target};

use crate::evidence::{Evidence, Refusal};
use crate::fake::{Call, FakeSystem};
use crate::ladder::{Incident, Ladder, LadderOptions, LadderReport, Outcome};
use crate::ops::ProcInfo;

const CG: &str = "/user.slice/bomb.scope";

fn proc(pid: i32, ppid: i32, comm: &str, cgroup: &str, pgid: i32) -> ProcInfo {
    ProcInfo {
        pid,
        ppid,
        comm: comm.into(),
        starttime: 1000 + pid as u64,
        uid: Some(1000),
        kernel_thread: false,
        cgroups: vec![cgroup.into()],
        unit: None,
        pgid,
        sid: 0,
        state: 'R',
    }
}

/// Init, selfheal, a same-named process in its own group elsewhere, and a
/// bomb of two generations in `CG`, process group 100.
fn system() -> FakeSystem {
    let f = FakeSystem::new(500);
    f.add(proc(1, 0, "init", "/", 1));
    f.add(proc(
        500,
        1,
        "selfheal",
        "/system.slice/selfheal.service",
        500,
    ));
    f.add(proc(50, 1, "bomb", "/user.slice/other.scope", 50));
    f.add(proc(100, 1, "bomb", CG, 100));
    for c in 101..=104 {
        f.add(proc(c, 100, "bomb", CG, 100));
        f.add(proc(c + 100, c, "bomb", CG, 100));
    }
    f
}

fn members() -> Vec<i32> {
    (100..=104).chain(201..=204).collect()
}

fn run(f: &Arc<FakeSystem>, blame: Blame) -> LadderReport {
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
            cgroup: Some(CG.into()),
            ..Culprit::default()
        },
        target: Some(Target {
            pid: 100,
            starttime: 1100,
            blame,
        }),
        evidence: Evidence::now("process_count", "test bomb"),
        blocker: None,
    };
    let fk = f.clone();
    l.run(
        &inc,
        &mut || !members().iter().any(|&p| fk.alive(p)),
        &MemorySink::new(),
    )
}

fn program() -> Blame {
    Blame::Program(ProgramScope {
        comm: "bomb".into(),
        uid: 1000,
        pgids: [100].into(),
        members: [(100, 1100)].into(),
    })
}

fn signals(f: &FakeSystem, sig: i32) -> Vec<i32> {
    f.calls()
        .iter()
        .filter_map(|c| match c {
            Call::Signal(p, s) if *s == sig => Some(*p),
            _ => None,
        })
        .collect()
}

/// A protected process in the tree refuses the step before any kill; the
/// bomb is left as it was (nothing stopped either).
#[test]
fn a_protected_process_among_the_blamed_refuses_before_any_kill() {
    let f = Arc::new(system());
    f.add(proc(300, 103, "sshd", CG, 100));
    let r = run(&f, Blame::Tree);
    assert_eq!(r.steps[1].outcome, Outcome::Refused, "{r:?}");
    assert_eq!(r.steps[1].refusal, Some(Refusal::Protected));
    assert!(r.steps[1].reason.contains("sshd"), "{}", r.steps[1].reason);
    assert!(signals(&f, libc::SIGKILL).is_empty() && signals(&f, libc::SIGSTOP).is_empty());
    assert!(members().iter().all(|&p| f.alive(p)) && f.alive(300));
}

/// A program blame reaches a member of the bomb's process group in
/// another cgroup, where the hold on the bomb's cgroup does not reach: it
/// could fork as the others die, so the step stops them all first (the
/// walk) and says why. The same-named process in its own group elsewhere,
/// and a process of the bomb's group running another program, are not
/// blamed and never signalled.
#[test]
fn a_member_outside_the_held_cgroup_makes_the_step_stop_them_first() {
    let f = Arc::new(system());
    f.add(proc(150, 1, "bomb", "/user.slice/elsewhere.scope", 100));
    f.add(proc(160, 1, "editor", "/user.slice/elsewhere.scope", 100));
    let r = run(&f, program());
    assert_eq!(r.steps[1].outcome, Outcome::Recovered, "{r:?}");
    let notes = r.steps[1].notes.join(" | ");
    assert!(
        notes.contains("stopped before the kill: 1 of") && notes.contains("(pid 150)"),
        "{notes}"
    );
    let stopped = signals(&f, libc::SIGSTOP);
    assert!(
        stopped.contains(&150) && stopped.contains(&100),
        "{stopped:?}"
    );
    assert!(!f.alive(150) && members().iter().all(|&p| !f.alive(p)));
    for p in [50, 160] {
        assert!(f.alive(p), "{p} killed");
        assert!(
            f.calls().iter().all(|c| c.pid() != Some(p)),
            "{p} signalled"
        );
    }
}

/// Every blamed process in the held cgroup: no stop at all, one kill
/// each, the target (stopped first) last. A member that appears after the kill (a fork
/// already past the kernel's check when the limit was lowered) is found
/// by the listing after it and killed too; the namesake is not.
#[test]
fn members_that_appear_after_the_kill_are_killed_by_the_listing_after() {
    let f = Arc::new(system());
    f.fork_on_kill(202, proc(250, 1, "bomb", CG, 100));
    let r = run(&f, program());
    assert_eq!(r.steps[1].outcome, Outcome::Recovered, "{r:?}");
    // Only the target is stopped: it anchors the listings after.
    assert_eq!(signals(&f, libc::SIGSTOP), vec![100], "{:?}", f.calls());
    let kills = signals(&f, libc::SIGKILL);
    assert_eq!(kills.last(), Some(&100), "{kills:?}");
    assert!(kills.contains(&250), "{kills:?}");
    let mut sorted = kills.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        kills.len(),
        "a process killed twice: {kills:?}"
    );
    assert!(!f.alive(250) && f.alive(50) && f.alive(1) && f.alive(500));
    let mut touched = r.steps[1].touched_pids();
    touched.sort_unstable();
    let mut want = members();
    want.push(250);
    want.sort_unstable();
    assert_eq!(touched, want);
}

/// The kernel refuses one kill: the rest still die (nothing was stopped,
/// so nothing is left stopped), and the step fails saying which.
#[test]
fn a_refused_kill_still_kills_the_rest_and_fails_the_step() {
    let mut f = system();
    f.refused_signals.push((203, libc::SIGKILL));
    let f = Arc::new(f);
    let r = run(&f, Blame::Tree);
    assert_eq!(r.steps[1].outcome, Outcome::Failed, "{r:?}");
    assert!(
        r.steps[1].reason.contains("SIGKILL 203"),
        "{}",
        r.steps[1].reason
    );
    assert!(f.alive(203));
    for p in members().into_iter().filter(|&p| p != 203) {
        assert!(!f.alive(p), "{p} survived");
    }
    assert!((1..=600).all(|p| !f.is_stopped(p)));
    assert!(f.alive(50));
}

/// A bomb in the root cgroup holds the machine (`threads-max` at the
/// floor): no pid can be reused, so the listing after the kill reads only
/// pids it has not seen, and still finds the member that appeared after
/// the kill. Twenty-odd idle processes, the namesake and a stopped
/// namesake are untouched.
#[test]
fn with_the_machine_held_the_listing_after_still_finds_new_members() {
    let f = FakeSystem::new(500);
    f.add(proc(1, 0, "init", "/", 1));
    f.add(proc(500, 1, "selfheal", "/", 500));
    for k in 600..630 {
        f.add(proc(k, 1, "idle", "/", k));
    }
    f.add(proc(50, 1, "bomb", "/", 50));
    f.add(proc(51, 1, "bomb", "/", 51));
    f.set_state(51, 'T');
    f.add(proc(100, 1, "bomb", "/", 100));
    for c in 101..=104 {
        f.add(proc(c, 100, "bomb", "/", 100));
        f.add(proc(c + 100, c, "bomb", "/", 100));
    }
    f.fork_on_kill(203, proc(260, 1, "bomb", "/", 100));
    let f = Arc::new(f);
    let mut c = RecoveryConfig {
        verify_timeout: HumanDuration::from_millis(40),
        ..RecoveryConfig::default()
    };
    c.ladder.fork_bomb = vec![Action::KillTree];
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
            blame: program(),
        }),
        evidence: Evidence::now("process_count", "test bomb"),
        blocker: None,
    };
    let fk = f.clone();
    let r = l.run(
        &inc,
        &mut || !members().iter().chain(&[260]).any(|&p| fk.alive(p)),
        &MemorySink::new(),
    );
    assert_eq!(r.steps[0].outcome, Outcome::Recovered, "{r:?}");
    assert!(matches!(
        f.calls().first(),
        Some(Call::HoldForks(100, p, true)) if p == "/"
    ));
    assert_eq!(signals(&f, libc::SIGSTOP), vec![100]);
    assert!(signals(&f, libc::SIGKILL).contains(&260));
    assert!(!f.alive(260) && f.alive(50) && f.alive(51));
    assert!((600..630).all(|k| f.alive(k)));
    assert!(f
        .calls()
        .iter()
        .all(|c| !matches!(c.pid(), Some(50 | 51 | 600..=629))));
}
