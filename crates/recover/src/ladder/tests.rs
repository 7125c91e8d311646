//! The ladder and the protection policy against the recording fake.

use std::sync::Arc;

use selfheal_config::{HoldForks, HumanDuration};
use selfheal_event::MemorySink;

use super::*;
use crate::fake::{Call, FakeSystem};
use crate::ops::{ForkHold, ProcInfo};
use selfheal_event::ProgramScope;

const OWN: i32 = 500;

fn proc(pid: i32, ppid: i32, comm: &str, cgroup: &str) -> ProcInfo {
    ProcInfo {
        pid,
        ppid,
        comm: comm.into(),
        starttime: 1000 + pid as u64,
        uid: Some(1000),
        kernel_thread: false,
        cgroups: if cgroup == "/" {
            vec![]
        } else {
            vec![cgroup.into()]
        },
        unit: None,
        pgid: pid,
        sid: 1,
        state: 'S',
    }
}

/// init, a kernel thread, sshd, selfheal (500) under its supervisor (400).
fn system() -> Arc<FakeSystem> {
    let f = Arc::new(FakeSystem::new(OWN));
    f.add(proc(1, 0, "systemd", "/"));
    let mut k = proc(2, 0, "kthreadd", "/");
    k.kernel_thread = true;
    f.add(k);
    f.add(proc(30, 1, "sshd", "/system.slice/ssh.service"));
    f.add(proc(400, 1, "supervisor", "/system.slice/selfheal.service"));
    f.add(proc(OWN, 400, "selfheal", "/system.slice/selfheal.service"));
    f
}

/// The culprit as a diagnosis would record `p`, and the target to act on.
fn target(p: &ProcInfo) -> (Culprit, Target) {
    let culprit = Culprit {
        pid: Some(p.pid),
        tid: Some(p.pid),
        comm: Some(p.comm.clone()),
        cgroup: p.cgroups.first().cloned(),
        unit: p.unit.clone(),
        ..Culprit::default()
    };
    (culprit, Target::tree(p.pid, p.starttime))
}

fn incident(class: Class, t: Option<(Culprit, Target)>) -> Incident {
    let (culprit, target) = match t {
        Some((c, t)) => (c, Some(t)),
        None => (Culprit::default(), None),
    };
    Incident {
        class,
        culprit,
        target,
        evidence: Evidence::now("test", "as the test says"),
        blocker: None,
    }
}

/// `target(p)` blaming `blame`.
fn blaming(p: &ProcInfo, blame: Blame) -> (Culprit, Target) {
    let (c, mut t) = target(p);
    t.blame = blame;
    (c, t)
}

fn options(f: impl FnOnce(&mut RecoveryConfig)) -> LadderOptions {
    let mut c = RecoveryConfig {
        verify_timeout: HumanDuration::from_millis(60),
        ..RecoveryConfig::default()
    };
    f(&mut c);
    LadderOptions {
        config: c,
        dry_run: false,
        poll: Duration::from_millis(5),
    }
}

fn outcomes(r: &LadderReport) -> Vec<(&'static str, &'static str)> {
    r.steps
        .iter()
        .map(|s| (s.action.as_str(), s.outcome.as_str()))
        .collect()
}

#[test]
fn rt_hog_is_demoted_and_nothing_more() {
    let f = system();
    let hog = proc(100, 1, "spin", "/selfheal-sandbox/a");
    f.add(hog.clone());
    f.set_threads(100, vec![(100, true), (101, false)]);
    let mut l = Ladder::new(Box::new(f.clone()), options(|_| {}));
    let sink = MemorySink::new();
    let fk = f.clone();
    let r = l.run(
        &incident(Class::RtHog, Some(target(&hog))),
        &mut || !fk.is_realtime(100),
        &sink,
    );
    assert_eq!(
        outcomes(&r),
        vec![("record", "recorded"), ("demote", "recovered")]
    );
    assert!(r.recovered && r.time_to_recover.is_some());
    assert_eq!(f.calls(), vec![Call::SetNormal(100)]);
    let events = sink.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].details["action"], "demote");
    assert_eq!(events[1].details["outcome"], "recovered");
    assert_eq!(events[1].details["class"], "rt_hog");
    assert_eq!(events[1].kind, EventKind::Recovery);
}

#[test]
fn escalates_until_the_symptom_clears() {
    let f = system();
    let hog = proc(100, 1, "spin", "/selfheal-sandbox/a");
    f.add(hog.clone());
    f.set_threads(100, vec![(100, true)]);
    let mut l = Ladder::new(Box::new(f.clone()), options(|_| {}));
    let sink = MemorySink::new();
    let fk = f.clone();
    // Only death clears it (as if the demoted task kept hogging).
    let r = l.run(
        &incident(Class::RtHog, Some(target(&hog))),
        &mut || !fk.alive(100),
        &sink,
    );
    assert_eq!(
        outcomes(&r),
        vec![
            ("record", "recorded"),
            ("demote", "not_cleared"),
            ("stop", "not_cleared"),
            ("kill", "recovered")
        ]
    );
    assert_eq!(
        f.calls(),
        vec![
            Call::SetNormal(100),
            Call::Signal(100, libc::SIGSTOP),
            Call::Signal(100, libc::SIGKILL)
        ]
    );
    assert!(r.steps[1].verify_time >= Duration::from_millis(60));
}

#[test]
fn protected_processes_are_never_touched() {
    let f = system();
    let mut db = proc(40, 1, "postgres", "/system.slice/db.service");
    db.unit = Some("db.service".into());
    f.add(db.clone());
    let outside = proc(41, 1, "spin", "/user.slice");
    f.add(outside.clone());
    let mut kt = proc(42, 2, "kworker/1:0", "/");
    kt.kernel_thread = true;
    f.add(kt.clone());
    let all = [
        proc(1, 0, "systemd", "/"),
        kt,
        proc(30, 1, "sshd", "/system.slice/ssh.service"),
        proc(400, 1, "supervisor", "/system.slice/selfheal.service"),
        proc(OWN, 400, "selfheal", "/system.slice/selfheal.service"),
        db,
        outside,
    ];
    let mut l = Ladder::new(
        Box::new(f.clone()),
        options(|c| {
            c.protected_units = vec!["db.service".into()];
            c.allowed_cgroups = vec!["/selfheal-sandbox".into(), "/system.slice".into()];
            c.ladder.fork_bomb = vec![
                Action::Record,
                Action::Demote,
                Action::Stop,
                Action::Kill,
                Action::KillTree,
                Action::KillCgroup,
                Action::FreezeCgroup,
            ];
        }),
    );
    let sink = MemorySink::new();
    for p in &all {
        let r = l.run(
            &incident(Class::ForkBomb, Some(target(p))),
            &mut || false,
            &sink,
        );
        assert!(!r.recovered);
        assert!(
            r.steps[1..].iter().all(|s| s.outcome == Outcome::Refused),
            "{} (pid {}): {:?}",
            p.comm,
            p.pid,
            outcomes(&r)
        );
    }
    assert_eq!(f.calls(), vec![], "a protected process was touched");
    let reasons: Vec<String> = sink
        .events()
        .iter()
        .filter(|e| e.details["outcome"] == "refused")
        .map(|e| e.details["reason"].as_str().unwrap().to_string())
        .collect();
    for needle in [
        "pid 1",
        "kernel thread",
        "ancestors",
        "sshd*",
        "db.service",
        "allowed_cgroups",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no refusal mentions {needle}"
        );
    }
    for p in all {
        assert!(f.alive(p.pid) && !f.is_stopped(p.pid));
    }
}

#[test]
fn kill_tree_stops_new_forks_and_spares_the_neighbours() {
    // Forks not held (hold_forks = "off"): every member is stopped first.
    let f = system();
    let cg = "/selfheal-sandbox/bomb";
    let root = proc(100, 1, "bomb", cg);
    f.add(root.clone());
    f.add(proc(101, 100, "bomb", cg));
    f.add(proc(102, 101, "bomb", cg));
    // Forked just before it was stopped.
    f.fork_on_stop(102, proc(103, 102, "bomb", cg));
    let neighbour = proc(200, 1, "editor", cg);
    f.add(neighbour.clone());
    let mut l = Ladder::new(
        Box::new(f.clone()),
        options(|c| c.hold_forks = HoldForks::Off),
    );
    let sink = MemorySink::new();
    let fk = f.clone();
    let r = l.run(
        &incident(Class::ForkBomb, Some(target(&root))),
        &mut || (100..=103).all(|p| !fk.alive(p)),
        &sink,
    );
    assert_eq!(
        outcomes(&r),
        vec![("record", "recorded"), ("kill_tree", "recovered")]
    );
    assert_eq!(r.steps[1].touched_pids(), vec![100, 101, 102, 103]);
    assert!(f.alive(200) && !f.is_stopped(200));
    assert!(f.calls().iter().all(|c| c.pid() != Some(200)));
    // Every member was stopped before any was killed.
    let calls = f.calls();
    let first_kill = calls
        .iter()
        .position(|c| matches!(c, Call::Signal(_, libc::SIGKILL)))
        .unwrap();
    assert!(calls[..first_kill]
        .iter()
        .all(|c| matches!(c, Call::Signal(_, libc::SIGSTOP))));
    assert!(calls.iter().all(|c| !matches!(c, Call::HoldForks(..))));
}

/// With the bomb's forks held (its cgroup's `pids.max` at 0, the default
/// `hold_forks`) no member can fork: each is killed once, none stopped
/// but the target, which anchors the listing after and is killed last; the neighbour in the same cgroup (not in the tree) is
/// untouched, and the hold spans every kill.
#[test]
fn kill_tree_under_a_hold_kills_each_member_once_and_spares_the_neighbours() {
    let f = system();
    let cg = "/selfheal-sandbox/bomb";
    let root = proc(100, 1, "bomb", cg);
    f.add(root.clone());
    f.add(proc(101, 100, "bomb", cg));
    f.add(proc(102, 101, "bomb", cg));
    f.add(proc(200, 1, "editor", cg));
    // A stopped namesake elsewhere stays as it is.
    f.add(proc(300, 1, "bomb", "/user.slice/other.scope"));
    f.set_state(300, 'T');
    let mut l = Ladder::new(Box::new(f.clone()), options(|_| {}));
    let fk = f.clone();
    let r = l.run(
        &incident(Class::ForkBomb, Some(target(&root))),
        &mut || (100..=102).all(|p| !fk.alive(p)),
        &MemorySink::new(),
    );
    assert_eq!(
        outcomes(&r),
        vec![("record", "recorded"), ("kill_tree", "recovered")]
    );
    assert_eq!(r.steps[1].touched_pids(), vec![100, 101, 102]);
    assert!(f.alive(200) && f.alive(300));
    let calls = f.calls();
    assert!(
        calls.iter().all(|c| !matches!(c.pid(), Some(200 | 300))),
        "{calls:?}"
    );
    let signals: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::Signal(..)))
        .collect();
    assert_eq!(
        signals,
        vec![
            &Call::Signal(100, libc::SIGSTOP),
            &Call::Signal(101, libc::SIGKILL),
            &Call::Signal(102, libc::SIGKILL),
            &Call::Signal(100, libc::SIGKILL)
        ]
    );
    assert_eq!(calls[0], Call::HoldForks(100, cg.into(), true));
    let ForkHold::Cgroup { held_at, .. } = (match calls.last() {
        Some(Call::ReleaseForks(h)) => h.clone(),
        other => panic!("{other:?}"),
    }) else {
        panic!("{calls:?}")
    };
    assert_eq!(held_at, 0);
}

#[test]
fn kill_tree_kills_members_that_escaped_the_stop_passes() {
    let f = system();
    let root = proc(100, 1, "bomb", "/");
    f.add(root.clone());
    let mut child = proc(101, 100, "bomb", "/");
    child.pgid = 100;
    f.add(child);
    // An orphan that escaped (re-parented to init) as the kill went out:
    // same process group as the bomb.
    let mut orphan = proc(150, 1, "bomb", "/");
    orphan.pgid = 100;
    f.fork_on_kill(101, orphan);
    let neighbour = proc(200, 1, "editor", "/");
    f.add(neighbour);
    let mut l = Ladder::new(Box::new(f.clone()), options(|_| {}));
    let sink = MemorySink::new();
    let fk = f.clone();
    let t = blaming(
        &root,
        Blame::Program(ProgramScope {
            comm: "bomb".into(),
            uid: 1000,
            pgids: [100].into(),
            members: [(100, 1100), (101, 1101)].into(),
        }),
    );
    let r = l.run(
        &incident(Class::ForkBomb, Some(t)),
        &mut || [100, 101, 150].iter().all(|&p| !fk.alive(p)),
        &sink,
    );
    assert_eq!(
        outcomes(&r),
        vec![("record", "recorded"), ("kill_tree", "recovered")]
    );
    assert_eq!(r.steps[1].touched_pids(), vec![100, 101, 150]);
    assert!(f.alive(200));
    assert!(f.calls().iter().all(|c| c.pid() != Some(200)));
}

/// The same escape under a whole-cgroup blame, where the target is the
/// anchor that ties the cgroup to the evidence: the kill takes the target
/// too, and the passes after it must still find the members that forked
/// as the kill went out (it once rebuilt a 3000-task bomb after a
/// step reported "recovered"). A process in another cgroup is untouched.
#[test]
fn kill_tree_of_a_cgroup_kills_members_that_escaped_after_its_target_died() {
    const CG: &str = "/selfheal-sandbox/bomb";
    let f = system();
    let root = proc(100, 1, "bomb", CG);
    f.add(root.clone());
    for pid in 101..=104 {
        f.add(proc(pid, 1, "bomb", CG));
    }
    // Forked as the kill reached 101 and 103.
    f.fork_on_kill(101, proc(150, 1, "bomb", CG));
    f.fork_on_kill(103, proc(151, 1, "bomb", CG));
    f.add(proc(200, 1, "bomb", "/selfheal-sandbox/other"));
    let mut l = Ladder::new(Box::new(f.clone()), options(|_| {}));
    let (mut c, t) = blaming(&root, Blame::Cgroup);
    c.cgroup = Some(CG.into());
    let fk = f.clone();
    let r = l.run(
        &incident(Class::ForkBomb, Some((c, t))),
        &mut || (100..=151).all(|p| !fk.alive(p)),
        &MemorySink::new(),
    );
    assert_eq!(
        outcomes(&r),
        vec![("record", "recorded"), ("kill_tree", "recovered")],
        "{r:?}"
    );
    assert_eq!(
        r.steps[1].touched_pids(),
        vec![100, 101, 102, 103, 104, 150, 151]
    );
    assert!(f.alive(200) && !f.is_stopped(200));
    assert!(f.calls().iter().all(|c| c.pid() != Some(200)));
}

/// A bomb whose last members take longer to die than kill_tree's
/// verification: the next step finds its target gone and waits for the
/// symptom to clear rather than glancing once, and says the earlier step
/// did it, not the process "by itself".
#[test]
fn a_slow_death_after_kill_tree_is_credited_to_it() {
    let f = system();
    let root = proc(100, 1, "bomb", "/selfheal-sandbox/bomb");
    f.add(root.clone());
    let mut child = proc(101, 100, "bomb", "/selfheal-sandbox/bomb");
    child.pgid = 100;
    f.add(child);
    let mut l = Ladder::new(
        Box::new(f.clone()),
        options(|c| c.verify_timeout = HumanDuration::from_millis(300)),
    );
    let sink = MemorySink::new();
    let fk = f.clone();
    let t = blaming(
        &root,
        Blame::Program(ProgramScope {
            comm: "bomb".into(),
            uid: 1000,
            pgids: [100].into(),
            members: [(100, 1100), (101, 1101)].into(),
        }),
    );
    // The count reaches zero 400 ms after the kill: past kill_tree's
    // 300 ms verification, inside the next step's wait.
    let mut dead_at: Option<Instant> = None;
    let r = l.run(
        &incident(Class::ForkBomb, Some(t)),
        &mut || {
            if fk.alive(100) || fk.alive(101) {
                return false;
            }
            dead_at.get_or_insert_with(Instant::now).elapsed() >= Duration::from_millis(400)
        },
        &sink,
    );
    assert_eq!(
        outcomes(&r),
        vec![
            ("record", "recorded"),
            ("kill_tree", "not_cleared"),
            ("kill_cgroup", "recovered")
        ]
    );
    assert!(
        r.steps[2].reason.contains("an earlier step acted on it"),
        "{}",
        r.steps[2].reason
    );
    assert!(r.recovered);
    // Nothing was done after kill_tree: the cgroup step found no one.
    assert!(f.calls().iter().all(|c| !matches!(c, Call::KillCgroup(..))));
}

#[test]
fn cgroup_actions_need_a_cgroup_of_only_blamed_processes() {
    let f = system();
    let cg = "/selfheal-sandbox/mixed";
    let hog = proc(100, 1, "memhog", cg);
    f.add(hog.clone());
    f.add(proc(200, 1, "editor", cg));
    let mut l = Ladder::new(
        Box::new(f.clone()),
        options(|c| {
            c.ladder.memory_exhaustion =
                vec![Action::Record, Action::KillCgroup, Action::FreezeCgroup]
        }),
    );
    let sink = MemorySink::new();
    let r = l.run(
        &incident(Class::MemoryExhaustion, Some(target(&hog))),
        &mut || false,
        &sink,
    );
    assert_eq!(
        outcomes(&r),
        vec![
            ("record", "recorded"),
            ("kill_cgroup", "refused"),
            ("freeze_cgroup", "refused")
        ]
    );
    assert!(
        r.steps[1].reason.contains("editor (200)"),
        "{}",
        r.steps[1].reason
    );
    assert!(f.calls().is_empty());

    // A fork bomb blamed on its whole cgroup may take the cgroup down.
    let bomb_cg = "/selfheal-sandbox/bomb";
    let bomb = proc(300, 1, "bash", bomb_cg);
    f.add(bomb.clone());
    f.add(proc(301, 1, "bash", bomb_cg));
    let t = blaming(&bomb, Blame::Cgroup);
    let mut l = Ladder::new(
        Box::new(f.clone()),
        options(|c| c.ladder.fork_bomb = vec![Action::Record, Action::KillCgroup]),
    );
    let fk = f.clone();
    let r = l.run(
        &incident(Class::ForkBomb, Some(t)),
        &mut || !fk.alive(300) && !fk.alive(301),
        &sink,
    );
    assert_eq!(
        outcomes(&r),
        vec![("record", "recorded"), ("kill_cgroup", "recovered")]
    );
    assert_eq!(f.calls(), vec![Call::KillCgroup(300, bomb_cg.into())]);
    assert!(f.alive(100) && f.alive(200));
}

#[test]
fn dry_run_touches_nothing_but_reports_the_plan() {
    let f = system();
    let hog = proc(100, 1, "spin", "/selfheal-sandbox/a");
    f.add(hog.clone());
    f.set_threads(100, vec![(100, true)]);
    let mut opts = options(|_| {});
    opts.dry_run = true;
    let mut l = Ladder::new(Box::new(f.clone()), opts);
    let sink = MemorySink::new();
    let r = l.run(
        &incident(Class::RtHog, Some(target(&hog))),
        &mut || false,
        &sink,
    );
    assert_eq!(
        outcomes(&r),
        vec![
            ("record", "recorded"),
            ("demote", "dry_run"),
            ("stop", "dry_run"),
            ("kill", "dry_run")
        ]
    );
    assert!(r.steps[3].reason.contains("SIGKILL spin (pid 100)"));
    assert!(f.calls().is_empty());
    assert!(sink.events().iter().all(|e| e.details["dry_run"] == true));
}

#[test]
fn rate_limits_and_cooldown() {
    let f = system();
    let a = proc(100, 1, "spin", "/selfheal-sandbox/a");
    let b = proc(101, 1, "spin", "/selfheal-sandbox/b");
    f.add(a.clone());
    f.add(b.clone());
    let mut l = Ladder::new(
        Box::new(f.clone()),
        options(|c| {
            c.max_actions_per_minute = 1;
            c.ladder.rt_hog = vec![Action::Record, Action::Stop, Action::Kill];
        }),
    );
    let sink = MemorySink::new();
    let r = l.run(
        &incident(Class::RtHog, Some(target(&a))),
        &mut || false,
        &sink,
    );
    assert_eq!(
        outcomes(&r),
        vec![
            ("record", "recorded"),
            ("stop", "not_cleared"),
            ("kill", "rate_limited")
        ]
    );
    // The same target right after: cool-down.
    let r = l.run(
        &incident(Class::RtHog, Some(target(&a))),
        &mut || false,
        &sink,
    );
    assert_eq!(outcomes(&r), vec![("record", "rate_limited")]);
    assert!(r.steps[0].reason.contains("cool-down"));
    // Another target: the minute's budget is spent.
    let r = l.run(
        &incident(Class::RtHog, Some(target(&b))),
        &mut || false,
        &sink,
    );
    assert_eq!(
        outcomes(&r),
        vec![("record", "recorded"), ("stop", "rate_limited")]
    );
    assert_eq!(f.calls(), vec![Call::Signal(100, libc::SIGSTOP)]);
}

/// The cool-down holds back a second action on a process, not a ladder
/// that acts on none: a kernel_stall (record, then the controlled restart
/// with its own grace and re-check) right after the task on the CPU was
/// stopped still runs; another process-acting ladder on it does not.
#[test]
fn the_cool_down_does_not_hold_back_a_ladder_that_acts_on_no_process() {
    let f = system();
    let a = proc(100, 1, "spin", "/selfheal-sandbox/a");
    f.add(a.clone());
    let mut l = Ladder::new(
        Box::new(f.clone()),
        options(|c| {
            c.ladder.rt_hog = vec![Action::Record, Action::Stop];
            c.ladder.kernel_stall = vec![Action::Record];
        }),
    );
    let sink = MemorySink::new();
    let r = l.run(
        &incident(Class::RtHog, Some(target(&a))),
        &mut || false,
        &sink,
    );
    assert_eq!(
        outcomes(&r),
        vec![("record", "recorded"), ("stop", "not_cleared")]
    );
    let r = l.run(
        &incident(Class::KernelStall, Some(target(&a))),
        &mut || false,
        &sink,
    );
    assert_eq!(outcomes(&r), vec![("record", "recorded")]);
    let r = l.run(
        &incident(Class::RtHog, Some(target(&a))),
        &mut || false,
        &sink,
    );
    assert_eq!(outcomes(&r), vec![("record", "rate_limited")]);
    assert_eq!(f.calls(), vec![Call::Signal(100, libc::SIGSTOP)]);
}

#[test]
fn a_reused_pid_is_never_signalled() {
    let f = system();
    let original = proc(100, 1, "spin", "/selfheal-sandbox/a");
    let t = target(&original);
    // pid 100 now belongs to another process that started later.
    let mut stranger = original.clone();
    stranger.starttime += 77;
    stranger.comm = "stranger".into();
    f.add(stranger);
    let mut l = Ladder::new(Box::new(f.clone()), options(|_| {}));
    let sink = MemorySink::new();
    let r = l.run(&incident(Class::RtHog, Some(t)), &mut || false, &sink);
    assert!(
        r.steps[1..].iter().all(|s| s.outcome == Outcome::Skipped),
        "{:?}",
        outcomes(&r)
    );
    assert!(r.steps[1].reason.contains("gone"));
    assert!(f.calls().is_empty());
    assert!(f.alive(100));
}

#[test]
fn restart_unit_failure_is_recorded() {
    let mut fake = FakeSystem::new(OWN);
    fake.restart_error = Some("Unit web.service not loaded".into());
    let f = Arc::new(fake);
    let mut p = proc(100, 1, "web", "/system.slice/web.service");
    p.unit = Some("web.service".into());
    f.add(p.clone());
    let mut l = Ladder::new(
        Box::new(f.clone()),
        options(|c| c.ladder.d_state = vec![Action::Record, Action::RestartUnit]),
    );
    let sink = MemorySink::new();
    let r = l.run(
        &incident(Class::DState, Some(target(&p))),
        &mut || false,
        &sink,
    );
    assert_eq!(
        outcomes(&r),
        vec![("record", "recorded"), ("restart_unit", "failed")]
    );
    assert!(r.steps[1].reason.contains("not loaded"));
    assert_eq!(f.calls(), vec![Call::RestartUnit("web.service".into())]);
}

#[test]
fn a_runaway_kernel_thread_is_deprioritized_and_never_anything_else() {
    let f = system();
    let mut k = proc(120, 2, "lab_kthread_loo", "/");
    k.kernel_thread = true;
    f.add(k.clone());
    let mut w = proc(121, 2, "kworker/1:2", "/");
    w.kernel_thread = true;
    f.add(w.clone());
    let user = proc(122, 1, "spin", "/sandbox/a");
    f.add(user.clone());
    let mut l = Ladder::new(
        Box::new(f.clone()),
        options(|c| {
            c.ladder.runaway_kthread = vec![Action::Record, Action::Stop, Action::Deprioritize]
        }),
    );
    let sink = MemorySink::new();
    let mut inc = incident(Class::RunawayKthread, Some(target(&k)));
    inc.culprit.cpu = Some(1);
    let r = l.run(&inc, &mut || false, &sink);
    assert_eq!(
        outcomes(&r),
        vec![
            ("record", "recorded"),
            ("stop", "refused"),
            ("deprioritize", "mitigated")
        ]
    );
    assert!(
        r.steps[1].reason.contains("kernel thread"),
        "{}",
        r.steps[1].reason
    );
    assert!(
        r.steps[2].reason.contains("still spins"),
        "{}",
        r.steps[2].reason
    );
    assert_eq!(f.calls(), vec![Call::Deprioritize(120, Some(1))]);
    // A pooled worker and a user process are never deprioritized.
    for p in [&w, &user] {
        let r = l.run(
            &incident(Class::RunawayKthread, Some(target(p))),
            &mut || false,
            &sink,
        );
        assert_eq!(r.steps[2].outcome, Outcome::Refused, "{}", p.comm);
    }
    assert_eq!(
        f.calls()
            .iter()
            .filter(|c| matches!(c, Call::Deprioritize(..)))
            .count(),
        1
    );
    assert!(!f.calls().iter().any(|c| c.pid() == Some(121)));
}
