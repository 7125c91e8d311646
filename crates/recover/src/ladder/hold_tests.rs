//! `recovery.hold_forks` against the fake: a fork bomb's `kill_tree` (or
//! `quarantine`) holds new forks while it acts, lifts the hold whatever
//! way the step ends (a refused step at once), records both in its event,
//! and holds nothing for any other class.

use std::sync::Arc;
use std::time::Duration;

use selfheal_config::{Action, HoldForks, HumanDuration, RecoveryConfig};
use selfheal_event::{Class, Culprit, MemorySink, Target};

use crate::evidence::Evidence;
use crate::fake::{Call, FakeSystem};
use crate::ladder::{Incident, Ladder, LadderOptions, LadderReport, Outcome};
use crate::ops::{ForkHold, ProcInfo};

fn proc(pid: i32, ppid: i32, comm: &str, cgroup: &str) -> ProcInfo {
    ProcInfo {
        pid,
        ppid,
        comm: comm.into(),
        starttime: 1000 + pid as u64,
        uid: Some(1000),
        kernel_thread: false,
        cgroups: vec![cgroup.into()],
        unit: None,
        pgid: 0,
        sid: 0,
        state: 'R',
    }
}

/// Init, selfheal, a namesake in another cgroup, and a bomb of two
/// generations in `cgroup`.
fn bomb(cgroup: &str) -> Arc<FakeSystem> {
    let f = Arc::new(FakeSystem::new(500));
    f.add(proc(1, 0, "init", "/"));
    f.add(proc(500, 1, "selfheal", "/system.slice/selfheal.service"));
    f.add(proc(50, 1, "bomb", "/elsewhere"));
    f.add(proc(100, 1, "bomb", cgroup));
    for c in 101..=105 {
        f.add(proc(c, 100, "bomb", cgroup));
        f.add(proc(c + 100, c, "bomb", cgroup));
    }
    f
}

fn run(
    f: &Arc<FakeSystem>,
    class: Class,
    cgroup: &str,
    set: impl FnOnce(&mut RecoveryConfig),
) -> (LadderReport, MemorySink) {
    let fk = f.clone();
    run_with(f, class, cgroup, set, &mut || {
        !(100..=205).any(|p| fk.alive(p))
    })
}

fn run_with(
    f: &Arc<FakeSystem>,
    class: Class,
    cgroup: &str,
    set: impl FnOnce(&mut RecoveryConfig),
    probe: &mut dyn crate::evidence::SymptomProbe,
) -> (LadderReport, MemorySink) {
    let mut c = RecoveryConfig {
        verify_timeout: HumanDuration::from_millis(40),
        ..RecoveryConfig::default()
    };
    c.ladder.fork_bomb = vec![Action::Record, Action::KillTree];
    c.ladder.memory_exhaustion = vec![Action::Record, Action::KillTree];
    set(&mut c);
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
            cgroup: Some(cgroup.into()),
            ..Culprit::default()
        },
        target: Some(Target::tree(100, 1100)),
        evidence: Evidence::now("process_count", "test bomb"),
        blocker: None,
    };
    let sink = MemorySink::new();
    let r = l.run(&inc, probe, &sink);
    (r, sink)
}

fn holds(f: &FakeSystem) -> Vec<Call> {
    f.calls()
        .into_iter()
        .filter(|c| matches!(c, Call::HoldForks(..) | Call::ReleaseForks(_)))
        .collect()
}

/// The bomb in the root cgroup (the hang lab's guest): the machine's limit
/// is lowered to the floor (20) before the first kill (no stop but the
/// target's: no member can fork) and put back after the last; the step's event says
/// so. The namesake elsewhere is untouched.
#[test]
fn a_bomb_in_the_root_cgroup_holds_the_machine_while_kill_tree_runs() {
    let f = bomb("/");
    let (r, sink) = run(&f, Class::ForkBomb, "/", |_| {});
    assert_eq!(r.steps[1].outcome, Outcome::Recovered, "{r:?}");
    let calls = f.calls();
    let hold = ForkHold::Machine {
        previous: 100_000,
        held_at: crate::ops::MIN_THREADS_MAX,
    };
    assert_eq!(
        holds(&f),
        vec![
            Call::HoldForks(100, "/".into(), true),
            Call::ReleaseForks(hold.clone())
        ]
    );
    let held = calls
        .iter()
        .position(|c| matches!(c, Call::HoldForks(..)))
        .unwrap();
    let first_kill = calls
        .iter()
        .position(|c| matches!(c, Call::Signal(_, libc::SIGKILL)))
        .unwrap();
    // None stopped but the target, which anchors the listings after.
    assert!(
        calls
            .iter()
            .all(|c| !matches!(c, Call::Signal(p, libc::SIGSTOP) if *p != 100)),
        "{calls:?}"
    );
    let last_kill = calls
        .iter()
        .rposition(|c| matches!(c, Call::Signal(_, libc::SIGKILL)))
        .unwrap();
    assert!(held < first_kill, "{calls:?}");
    assert!(matches!(calls.last(), Some(Call::ReleaseForks(_))) && last_kill < calls.len() - 1);
    assert!(f.alive(50) && calls.iter().all(|c| c.pid() != Some(50)));
    let notes = &r.steps[1].notes;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("forks held ")
            && notes[0].ends_with(&format!("({hold}), then restored")),
        "{notes:?}"
    );
    let events = sink.events();
    let step = events
        .iter()
        .find(|e| e.details["action"] == "kill_tree")
        .unwrap();
    assert_eq!(step.details["notes"][0], notes[0].as_str());
}

/// A bomb in a cgroup of its own: that cgroup's `pids.max` is lowered,
/// never the machine's, whatever the mode allows.
#[test]
fn a_bomb_in_its_own_cgroup_holds_only_that_cgroup() {
    const CG: &str = "/user.slice/session-3.scope";
    let f = bomb(CG);
    let (r, _) = run(&f, Class::ForkBomb, CG, |_| {});
    assert_eq!(r.steps[1].outcome, Outcome::Recovered, "{r:?}");
    assert_eq!(
        holds(&f),
        vec![
            Call::HoldForks(100, CG.into(), true),
            Call::ReleaseForks(ForkHold::Cgroup {
                dir: format!("/fake/cgroup{CG}").into(),
                previous: "max".into(),
                held_at: 0,
            })
        ]
    );
}

/// `hold_forks = "cgroup"` never lowers the machine's limit: a bomb in the
/// root cgroup is raced, as before. `"off"` holds nothing anywhere.
#[test]
fn the_machine_is_held_only_in_auto_mode_and_nothing_when_off() {
    let f = bomb("/");
    let (r, _) = run(&f, Class::ForkBomb, "/", |c| {
        c.hold_forks = HoldForks::Cgroup
    });
    assert_eq!(r.steps[1].outcome, Outcome::Recovered, "{r:?}");
    assert_eq!(holds(&f), vec![Call::HoldForks(100, "/".into(), false)]);
    assert!(r.steps[1].notes.is_empty(), "{:?}", r.steps[1].notes);

    let f = bomb("/");
    let (r, _) = run(&f, Class::ForkBomb, "/", |c| c.hold_forks = HoldForks::Off);
    assert_eq!(r.steps[1].outcome, Outcome::Recovered, "{r:?}");
    assert!(holds(&f).is_empty());
}

/// Only fork bombs: the same step for another class holds nothing.
#[test]
fn no_other_class_holds_forks() {
    let f = bomb("/");
    let (r, _) = run(&f, Class::MemoryExhaustion, "/", |_| {});
    assert_eq!(r.steps[1].action, Action::KillTree, "{r:?}");
    assert!(holds(&f).is_empty(), "{:?}", f.calls());
}

/// A hold that cannot be placed (no permission, a container) does not stop
/// the step: it acts, racing the bomb as before, and its event says why
/// nothing was held.
#[test]
fn a_hold_that_fails_leaves_the_step_to_race_and_says_so() {
    let mut fake = FakeSystem::new(500);
    fake.hold_error = Some("permission denied".into());
    let f = Arc::new(fake);
    for p in [
        proc(1, 0, "init", "/"),
        proc(500, 1, "selfheal", "/s"),
        proc(100, 1, "bomb", "/"),
        proc(101, 100, "bomb", "/"),
    ] {
        f.add(p);
    }
    let (r, _) = run(&f, Class::ForkBomb, "/", |_| {});
    assert_eq!(r.steps[1].outcome, Outcome::Recovered, "{r:?}");
    assert_eq!(holds(&f), vec![Call::HoldForks(100, "/".into(), true)]);
    assert_eq!(
        r.steps[1].notes,
        vec!["forks not held (permission denied): the step races the bomb".to_string()]
    );
}

/// A step refused for a protected member lifts its hold at once: the
/// machine's forks come back, nothing was stopped, and the event says how
/// long they were held.
#[test]
fn a_refused_step_lifts_its_hold_at_once() {
    let f = bomb("/");
    f.add(proc(400, 103, "sshd", "/"));
    let (r, _) = run(&f, Class::ForkBomb, "/", |_| {});
    assert_eq!(r.steps[1].outcome, Outcome::Refused, "{r:?}");
    let calls = f.calls();
    assert!(
        matches!(
            calls.as_slice(),
            [Call::HoldForks(100, _, true), Call::ReleaseForks(_)]
        ),
        "{calls:?}"
    );
    assert!((100..=105).all(|p| f.alive(p) && !f.is_stopped(p)));
    assert!(
        r.steps[1].notes[0].starts_with("forks held "),
        "{:?}",
        r.steps[1].notes
    );
}

/// The hold is placed as the ladder starts, before `kill_tree` measures
/// the symptom again (a read of every process: seconds in a slow guest,
/// in which the bomb doubles), and that step adopts it: one hold, one
/// lift, after the last kill.
#[test]
fn the_hold_is_placed_as_the_ladder_starts_and_kill_tree_adopts_it() {
    let f = bomb("/");
    let fk = f.clone();
    let mut held_at_first_look = None;
    let mut probe = || {
        held_at_first_look
            .get_or_insert_with(|| fk.calls().iter().any(|c| matches!(c, Call::HoldForks(..))));
        !(100..=205).any(|p| fk.alive(p))
    };
    let (r, _) = run_with(&f, Class::ForkBomb, "/", |_| {}, &mut probe);
    assert_eq!(r.steps[1].outcome, Outcome::Recovered, "{r:?}");
    assert_eq!(held_at_first_look, Some(true));
    assert_eq!(holds(&f).len(), 2, "{:?}", holds(&f));
    assert!(
        r.steps[0].notes.is_empty() && r.steps[1].notes.len() == 1,
        "{r:?}"
    );
}

/// A ladder with nothing that stops a bomb (record only) holds nothing.
#[test]
fn a_ladder_without_kill_tree_or_quarantine_holds_nothing() {
    let f = bomb("/");
    let (r, _) = run(&f, Class::ForkBomb, "/", |c| {
        c.ladder.fork_bomb = vec![Action::Record];
    });
    assert_eq!(r.steps.len(), 1, "{r:?}");
    assert!(holds(&f).is_empty(), "{:?}", f.calls());
}

/// The hold placed at the start is lifted when the ladder ends without a
/// step adopting it: here the bomb is gone by the time `kill_tree` looks
/// again (stale evidence, refused, nothing signalled).
#[test]
fn a_hold_no_step_adopts_is_lifted_when_the_ladder_ends() {
    let f = bomb("/");
    let mut looks = 0;
    let mut probe = || {
        looks += 1;
        looks > 0
    };
    let (r, _) = run_with(&f, Class::ForkBomb, "/", |_| {}, &mut probe);
    assert_eq!(r.steps[1].outcome, Outcome::Refused, "{r:?}");
    let h = holds(&f);
    assert!(
        matches!(h.as_slice(), [Call::HoldForks(..), Call::ReleaseForks(_)]),
        "{h:?}"
    );
    assert!(!f.calls().iter().any(|c| matches!(c, Call::Signal(..))));
    let last = r.steps.last().unwrap();
    assert!(
        last.notes.iter().any(|n| n.starts_with("forks held ")),
        "{r:?}"
    );
}

/// A step that runs past `hold_forks_max` (stuck on a /proc read behind a
/// hung task, say) does not keep the machine from forking: the cap lifts
/// the hold while the step still runs, once, and the step's event says so.
#[test]
fn the_cap_lifts_a_hold_whose_step_runs_too_long() {
    let f = bomb("/");
    let fk = f.clone();
    let mut first = true;
    let mut released_during_step = None;
    let mut probe = || {
        if first {
            // kill_tree's second look: the hold is in place; stall past the cap.
            first = false;
            std::thread::sleep(Duration::from_millis(400));
            released_during_step = Some(
                fk.calls()
                    .iter()
                    .any(|c| matches!(c, Call::ReleaseForks(_))),
            );
        }
        !(100..=205).any(|p| fk.alive(p))
    };
    let (r, _) = run_with(
        &f,
        Class::ForkBomb,
        "/",
        |c| c.hold_forks_max = HumanDuration::from_millis(100),
        &mut probe,
    );
    assert_eq!(released_during_step, Some(true), "{:?}", f.calls());
    let h = holds(&f);
    assert!(
        matches!(h.as_slice(), [Call::HoldForks(..), Call::ReleaseForks(_)]),
        "lifted once: {h:?}"
    );
    let notes: Vec<&String> = r.steps.iter().flat_map(|s| &s.notes).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("restored by the cap of 100ms")),
        "{r:?}"
    );
}

/// A step shorter than the cap lifts the hold itself; the cap's thread
/// then finds nothing and lifts nothing again.
#[test]
fn a_step_within_the_cap_lifts_once_and_the_cap_does_nothing() {
    let f = bomb("/");
    let (r, _) = run(&f, Class::ForkBomb, "/", |c| {
        c.hold_forks_max = HumanDuration::from_millis(300)
    });
    assert_eq!(r.steps[1].outcome, Outcome::Recovered, "{r:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(holds(&f).len(), 2, "{:?}", holds(&f));
    assert!(
        r.steps[1].notes[0].ends_with("then restored"),
        "{:?}",
        r.steps[1].notes
    );
}
