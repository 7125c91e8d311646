//! Every refusal for weak or stale evidence, against the recording fake:
//! each is an event with its reason code and touches nothing.

use std::sync::Arc;

use selfheal_config::HumanDuration;
use selfheal_event::MemorySink;

use super::*;
use crate::fake::{Call, FakeSystem};
use crate::ops::ProcInfo;
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

fn system() -> Arc<FakeSystem> {
    let f = Arc::new(FakeSystem::new(OWN));
    f.add(proc(1, 0, "systemd", "/"));
    f.add(proc(OWN, 1, "selfheal", "/system.slice/selfheal.service"));
    f
}

fn incident(class: Class, p: &ProcInfo, blame: Blame) -> Incident {
    Incident {
        class,
        culprit: Culprit {
            pid: Some(p.pid),
            tid: Some(p.pid),
            comm: Some(p.comm.clone()),
            cgroup: p.cgroups.first().cloned(),
            ..Culprit::default()
        },
        target: Some(Target {
            pid: p.pid,
            starttime: p.starttime,
            blame,
        }),
        evidence: Evidence::now("test_symptom", "measured by the test"),
        blocker: None,
    }
}

fn ladder(f: &Arc<FakeSystem>, edit: impl FnOnce(&mut RecoveryConfig)) -> Ladder {
    let mut c = RecoveryConfig {
        verify_timeout: HumanDuration::from_millis(40),
        ..RecoveryConfig::default()
    };
    edit(&mut c);
    Ladder::new(
        Box::new(f.clone()),
        LadderOptions {
            config: c,
            dry_run: false,
            poll: Duration::from_millis(5),
        },
    )
}

/// A probe whose re-check answers `recheck` and which never clears.
struct Probe(Recheck);

impl SymptomProbe for Probe {
    fn cleared(&mut self) -> bool {
        false
    }
    fn recheck(&mut self) -> Recheck {
        self.0.clone()
    }
}

fn present() -> Probe {
    Probe(Recheck::Present("still there".into()))
}

/// The refusal codes of the report's steps, in order.
fn refusals(r: &LadderReport) -> Vec<Option<&'static str>> {
    r.steps
        .iter()
        .map(|s| s.refusal.map(Refusal::as_str))
        .collect()
}

#[test]
fn a_process_that_now_runs_another_program_is_refused() {
    let f = system();
    let hog = proc(100, 1, "spin", "/sandbox/a");
    f.add(hog.clone());
    f.exec(100, "postgres");
    let mut l = ladder(&f, |c| c.ladder.rt_hog = vec![Action::Record, Action::Kill]);
    let sink = MemorySink::new();
    let r = l.run(
        &incident(Class::RtHog, &hog, Blame::Tree),
        &mut present(),
        &sink,
    );
    assert_eq!(refusals(&r), vec![None, Some("identity_changed")]);
    assert!(r.steps[1].reason.contains("now runs postgres"), "{r:?}");
    assert!(f.calls().is_empty());
    let e = &sink.events()[1];
    assert_eq!(e.details["outcome"], "refused");
    assert_eq!(e.details["refusal"], "identity_changed");
}

#[test]
fn a_symptom_gone_before_acting_is_stale_evidence() {
    let f = system();
    let hog = proc(100, 1, "spin", "/sandbox/a");
    f.add(hog.clone());
    let mut l = ladder(&f, |c| c.ladder.rt_hog = vec![Action::Record, Action::Kill]);
    let sink = MemorySink::new();
    let mut gone = Probe(Recheck::Cleared("spin ran 3% of cpu 1".into()));
    let r = l.run(&incident(Class::RtHog, &hog, Blame::Tree), &mut gone, &sink);
    assert_eq!(refusals(&r), vec![None, Some("symptom_gone")]);
    assert!(
        r.recovered,
        "a symptom that cleared by itself ends the ladder"
    );
    assert!(r.steps[1].reason.contains("3% of cpu 1"));
    assert!(f.calls().is_empty() && f.alive(100));
}

#[test]
fn a_symptom_that_cannot_be_measured_again_is_weak_evidence() {
    let f = system();
    let hog = proc(100, 1, "spin", "/sandbox/a");
    f.add(hog.clone());
    let mut l = ladder(&f, |c| {
        c.ladder.rt_hog = vec![Action::Record, Action::Stop, Action::Kill]
    });
    let sink = MemorySink::new();
    let r = l.run(
        &incident(Class::RtHog, &hog, Blame::Tree),
        &mut Probe(Recheck::Unverifiable),
        &sink,
    );
    assert_eq!(
        refusals(&r),
        vec![None, Some("unverifiable"), Some("unverifiable")]
    );
    assert!(r.steps[1].reason.contains("test_symptom"));
    assert!(f.calls().is_empty());
}

#[test]
fn a_target_that_left_its_blamed_cgroup_is_refused() {
    let f = system();
    let bomb = proc(100, 1, "bomb", "/sandbox/bomb");
    f.add(bomb.clone());
    f.add(proc(101, 100, "bomb", "/sandbox/bomb"));
    let inc = incident(Class::ForkBomb, &bomb, Blame::Cgroup);
    // Moved elsewhere after the diagnosis.
    f.set_cgroup(100, "/sandbox/other");
    let mut l = ladder(&f, |c| {
        c.ladder.fork_bomb = vec![Action::Record, Action::KillTree, Action::KillCgroup]
    });
    let sink = MemorySink::new();
    let r = l.run(&inc, &mut present(), &sink);
    assert_eq!(
        refusals(&r),
        vec![None, Some("not_blamed"), Some("not_blamed")]
    );
    assert!(r.steps[1].reason.contains("/sandbox/bomb"), "{r:?}");
    assert!(f.calls().is_empty());
}

#[test]
fn slices_session_scopes_and_roots_are_never_killed_whole() {
    for path in [
        "/user.slice/user-1000.slice/session-3.scope",
        "/user.slice/user-1000.slice",
        "/system.slice",
    ] {
        let f = system();
        // Every member is blamed (a whole-cgroup blame), yet the cgroup is
        // not a program's own.
        let bomb = proc(100, 1, "bomb", path);
        f.add(bomb.clone());
        f.add(proc(101, 100, "bomb", path));
        let mut l = ladder(&f, |c| {
            c.ladder.fork_bomb = vec![Action::Record, Action::KillCgroup, Action::FreezeCgroup]
        });
        let sink = MemorySink::new();
        let r = l.run(
            &incident(Class::ForkBomb, &bomb, Blame::Tree),
            &mut present(),
            &sink,
        );
        assert_eq!(
            refusals(&r),
            vec![None, Some("cgroup_scope"), Some("cgroup_scope")],
            "{path}"
        );
        assert!(f.calls().is_empty(), "{path}");
        // A whole-cgroup blame of such a cgroup is refused for kill_tree too.
        let mut l = ladder(&f, |c| {
            c.ladder.fork_bomb = vec![Action::Record, Action::KillTree]
        });
        let r = l.run(
            &incident(Class::ForkBomb, &bomb, Blame::Cgroup),
            &mut present(),
            &sink,
        );
        assert_eq!(refusals(&r), vec![None, Some("cgroup_scope")], "{path}");
        assert!(f.calls().is_empty(), "{path}");
    }
}

#[test]
fn a_cgroup_with_unblamed_members_is_refused_with_a_reason_code() {
    let f = system();
    let cg = "/sandbox/mixed";
    let hog = proc(100, 1, "memhog", cg);
    f.add(hog.clone());
    f.add(proc(200, 1, "editor", cg));
    let mut l = ladder(&f, |c| {
        c.ladder.memory_exhaustion = vec![Action::Record, Action::KillCgroup]
    });
    let sink = MemorySink::new();
    let r = l.run(
        &incident(Class::MemoryExhaustion, &hog, Blame::Tree),
        &mut present(),
        &sink,
    );
    assert_eq!(refusals(&r), vec![None, Some("innocent_members")]);
    assert!(r.steps[1].reason.contains("editor (200)"));
    assert!(f.calls().is_empty());
}

/// The fork-bomb follow-up bug: after the bomb was killed, a diagnosis
/// counted its zombies plus same-named processes elsewhere and blamed the
/// oldest of those. A program blame now covers only the bomb's members and
/// process group, so the bystanders and their cgroup are never touched.
#[test]
fn a_program_blame_never_reaches_same_named_processes_elsewhere() {
    let f = system();
    // Bystanders: same command and uid, their own groups, another cgroup.
    let old = proc(50, 1, "bomb", "/sandbox/bystanders");
    f.add(old.clone());
    f.add(proc(51, 50, "bomb", "/sandbox/bystanders"));
    // The bomb: one process group, zombies among its members.
    let cg = "/sandbox/bomb";
    let mut members = Vec::new();
    for pid in 100..110 {
        let mut p = proc(pid, if pid == 100 { 1 } else { 100 }, "bomb", cg);
        p.pgid = 100;
        members.push((pid, p.starttime));
        f.add(p);
    }
    f.set_state(105, 'Z');
    let scope = ProgramScope {
        comm: "bomb".into(),
        uid: 1000,
        pgids: [100].into(),
        members: members.into_iter().collect(),
    };
    let root = proc(100, 1, "bomb", cg);
    let mut l = ladder(&f, |c| {
        c.ladder.fork_bomb = vec![Action::Record, Action::KillTree]
    });
    let sink = MemorySink::new();
    let fk = f.clone();
    let r = l.run(
        &incident(Class::ForkBomb, &root, Blame::Program(scope.clone())),
        &mut || (100..110).filter(|&p| p != 105).all(|p| !fk.alive(p)),
        &sink,
    );
    assert!(r.recovered, "{r:?}");
    let mut touched = r.steps[1].touched_pids();
    touched.sort_unstable();
    assert_eq!(touched, vec![100, 101, 102, 103, 104, 106, 107, 108, 109]);
    assert!(f.alive(50) && f.alive(51) && !f.is_stopped(50));
    assert!(f.calls().iter().all(|c| !matches!(c.pid(), Some(50 | 51))));
    // And a blame of the bystanders' oldest process with that evidence
    // covers nothing of theirs: neither it nor its cgroup is acted on.
    let mut l = ladder(&f, |c| {
        c.ladder.fork_bomb = vec![Action::Record, Action::KillCgroup]
    });
    let mut bystander_cg = incident(Class::ForkBomb, &old, Blame::Program(scope));
    bystander_cg.culprit.cgroup = Some("/sandbox/bystanders".into());
    let r = l.run(&bystander_cg, &mut present(), &sink);
    assert_eq!(refusals(&r), vec![None, Some("not_blamed")], "{r:?}");
    assert!(f.alive(50) && f.alive(51));
}

#[test]
fn settle_window_lists_what_was_acted_upon() {
    let f = system();
    let hog = proc(100, 1, "spin", "/sandbox/a");
    f.add(hog.clone());
    let mut l = ladder(&f, |c| {
        c.ladder.rt_hog = vec![Action::Record, Action::Kill];
        c.settle = HumanDuration::from_millis(150);
    });
    let sink = MemorySink::new();
    let fk = f.clone();
    let r = l.run(
        &incident(Class::RtHog, &hog, Blame::Tree),
        &mut || !fk.alive(100),
        &sink,
    );
    assert!(r.recovered);
    assert_eq!(l.settling(), [(100, 1100)].into());
    std::thread::sleep(Duration::from_millis(200));
    assert!(l.settling().is_empty());
}

#[test]
fn every_step_event_carries_the_evidence_and_the_recheck() {
    let f = system();
    let hog = proc(100, 1, "spin", "/sandbox/a");
    f.add(hog.clone());
    let mut l = ladder(&f, |c| c.ladder.rt_hog = vec![Action::Record, Action::Stop]);
    let sink = MemorySink::new();
    l.run(
        &incident(Class::RtHog, &hog, Blame::Tree),
        &mut present(),
        &sink,
    );
    let events = sink.events();
    for e in &events {
        assert_eq!(e.details["evidence"]["symptom"], "test_symptom");
        assert_eq!(e.details["evidence"]["measurement"], "measured by the test");
        assert!(e.details["evidence"]["measured_unix_ms"].as_i64().unwrap() > 0);
        assert!(e.details["evidence"]["age_ms"].is_u64());
    }
    assert_eq!(events[1].details["recheck"], "still there");
    assert_eq!(events[1].details["target"]["starttime"], 1100);
    assert_eq!(f.calls(), vec![Call::Signal(100, libc::SIGSTOP)]);
}

#[test]
fn a_zombie_target_is_not_acted_on() {
    let f = system();
    let hog = proc(100, 1, "spin", "/sandbox/a");
    f.add(hog.clone());
    f.set_state(100, 'Z');
    let mut l = ladder(&f, |c| c.ladder.rt_hog = vec![Action::Record, Action::Kill]);
    let sink = MemorySink::new();
    let r = l.run(
        &incident(Class::RtHog, &hog, Blame::Tree),
        &mut present(),
        &sink,
    );
    assert_eq!(r.steps[1].outcome, Outcome::Skipped, "{r:?}");
    assert!(f.calls().is_empty());
}
