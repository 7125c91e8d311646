//! The controlled restart against the recording fake: the decision, the
//! evidence written before anything else, the sync, the methods in order;
//! and every refusal. The final system call is the fake's: nothing here
//! restarts the machine the tests run on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use selfheal_config::{HumanDuration, RestartMethod};
use selfheal_event::{Event, MemorySink};

use super::*;
use crate::fake::{Call, FakeSystem};
use crate::ops::ProcInfo;
use crate::restart::{RestartStore, HISTORY, PENDING};

const OWN: i32 = 500;

fn system(fake: FakeSystem) -> Arc<FakeSystem> {
    let f = Arc::new(fake);
    f.add(ProcInfo {
        pid: 1,
        ppid: 0,
        comm: "init".into(),
        starttime: 1,
        uid: Some(0),
        kernel_thread: false,
        cgroups: vec![],
        unit: None,
        pgid: 1,
        sid: 1,
        state: 'S',
    });
    f
}

/// A ladder for `class` ending in `reboot`, with its state in `dir`.
fn ladder(
    f: &Arc<FakeSystem>,
    dir: &Path,
    class: Class,
    edit: impl FnOnce(&mut RecoveryConfig),
) -> Ladder {
    let mut c = RecoveryConfig {
        allow_reboot: true,
        verify_timeout: HumanDuration::from_millis(20),
        ..RecoveryConfig::default()
    };
    c.restart.state_dir = dir.join("state");
    c.restart.grace.kernel_stall = HumanDuration::from_millis(60);
    c.restart.grace.d_state = HumanDuration::from_millis(60);
    c.restart.pstore = true;
    match class {
        Class::KernelStall => c.ladder.kernel_stall = vec![Action::Record, Action::Reboot],
        Class::DState => c.ladder.d_state = vec![Action::Record, Action::Reboot],
        Class::MemoryExhaustion => {
            c.ladder.memory_exhaustion = vec![Action::Record, Action::Reboot]
        }
        _ => {}
    }
    edit(&mut c);
    std::fs::create_dir_all(dir.join("dev")).unwrap();
    std::fs::write(dir.join("dev/pmsg0"), "").unwrap();
    let store = RestartStore::with_roots(
        &c.restart.state_dir,
        &dir.join("dev/pmsg0"),
        &dir.join("efivars"),
        &dir.join("pstore"),
    );
    Ladder::new(
        Box::new(f.clone()),
        LadderOptions {
            config: c,
            dry_run: false,
            poll: Duration::from_millis(5),
        },
    )
    .with_restart_store(store)
}

fn stall() -> Incident {
    Incident {
        class: Class::KernelStall,
        culprit: Culprit {
            cpu: Some(1),
            ..Culprit::default()
        },
        target: None,
        evidence: Evidence::now("cpu_stalled", "kernel_stall: cpu 1 makes no progress"),
        blocker: None,
    }
}

/// A probe whose symptom stays (or answers `recheck`).
struct Probe {
    recheck: Recheck,
    clears_after: Option<usize>,
    polls: usize,
}

impl Probe {
    fn present() -> Probe {
        Probe {
            recheck: Recheck::Present("cpu 1 stalled for 10200 ms".into()),
            clears_after: None,
            polls: 0,
        }
    }
}

impl SymptomProbe for Probe {
    fn cleared(&mut self) -> bool {
        self.polls += 1;
        self.clears_after.is_some_and(|n| self.polls > n)
    }
    fn recheck(&mut self) -> Recheck {
        self.recheck.clone()
    }
}

/// A sink that notes, for each event, whether the pending record was
/// already on disk, and whether it was flushed.
struct Watching {
    pending: PathBuf,
    seen: Mutex<Vec<(Event, bool)>>,
    flushed: Mutex<usize>,
}

impl EventSink for Watching {
    fn emit(&self, e: Event) -> bool {
        let on_disk = self.pending.is_file();
        self.seen.lock().unwrap().push((e, on_disk));
        true
    }
    fn flush(&self, _: Duration) -> bool {
        *self.flushed.lock().unwrap() += 1;
        true
    }
}

fn outcomes(r: &LadderReport) -> Vec<(&'static str, &'static str)> {
    r.steps
        .iter()
        .map(|s| (s.action.as_str(), s.outcome.as_str()))
        .collect()
}

#[test]
fn the_evidence_is_written_and_announced_before_the_disks_sync_and_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let f = system(FakeSystem::new(OWN));
    let mut l = ladder(&f, dir.path(), Class::KernelStall, |_| {});
    let sink = Watching {
        pending: dir.path().join("state").join(PENDING),
        seen: Mutex::new(Vec::new()),
        flushed: Mutex::new(0),
    };
    let inc = stall();
    let t0 = Instant::now();
    let r = l.run(&inc, &mut Probe::present(), &sink);
    assert!(
        t0.elapsed() >= Duration::from_millis(60),
        "the grace is waited out"
    );
    assert_eq!(
        outcomes(&r),
        [("record", "recorded"), ("reboot", "restarting")]
    );
    // kexec has no kernel loaded: straight to reboot(2), after the sync.
    assert_eq!(
        f.calls(),
        [Call::Sync, Call::Restart(RestartMethod::Reboot)]
    );
    let seen = sink.seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "the restarting event is emitted once");
    let (e, on_disk) = &seen[1];
    assert!(
        on_disk,
        "the record was on disk before the restart was announced"
    );
    assert_eq!(e.details["outcome"], "restarting");
    assert_eq!(e.details["recheck"], "cpu 1 stalled for 10200 ms");
    assert_eq!(
        *sink.flushed.lock().unwrap(),
        1,
        "the event store was flushed"
    );
    let id = e.details["incident"]["id"].as_str().unwrap().to_string();
    assert_eq!(Some(id.clone()), r.steps[1].incident_id);
    // The record names the incident and carries the evidence.
    let rec: crate::RestartRecord =
        serde_json::from_slice(&std::fs::read(dir.path().join("state").join(PENDING)).unwrap())
            .unwrap();
    assert_eq!(rec.incident_id, id);
    assert_eq!(rec.class, Class::KernelStall);
    assert_eq!(rec.measurement, "kernel_stall: cpu 1 makes no progress");
    assert_eq!(rec.methods, ["kexec", "reboot", "watchdog"]);
    let history = std::fs::read_to_string(dir.path().join("state").join(HISTORY)).unwrap();
    assert_eq!(history.lines().count(), 1);
    let pmsg = std::fs::read_to_string(dir.path().join("dev/pmsg0")).unwrap();
    assert!(pmsg.contains(&id), "pstore copy: {pmsg}");
}

#[test]
fn methods_are_tried_in_order_and_a_total_failure_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = FakeSystem::new(OWN);
    fake.kexec_loaded = true;
    fake.failing_restarts = vec![RestartMethod::Kexec, RestartMethod::Reboot];
    let f = system(fake);
    let mut l = ladder(&f, dir.path(), Class::KernelStall, |_| {});
    let sink = MemorySink::new();
    let r = l.run(&stall(), &mut Probe::present(), &sink);
    assert_eq!(r.steps[1].outcome, Outcome::Restarting);
    assert_eq!(
        f.calls(),
        [
            Call::Sync,
            Call::Restart(RestartMethod::Kexec),
            Call::Restart(RestartMethod::Reboot),
            Call::Restart(RestartMethod::Watchdog)
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    let mut fake = FakeSystem::new(OWN);
    fake.failing_restarts = vec![RestartMethod::Reboot, RestartMethod::Watchdog];
    let f = system(fake);
    let mut l = ladder(&f, dir.path(), Class::KernelStall, |_| {});
    let r = l.run(&stall(), &mut Probe::present(), &sink);
    assert_eq!(r.steps[1].outcome, Outcome::Failed, "{:?}", r.steps[1]);
    let why = &r.steps[1].reason;
    assert!(
        why.contains("kexec: no kernel loaded")
            && why.contains("reboot:")
            && why.contains("watchdog:"),
        "{why}"
    );
    // Announced as restarting, then recorded as failed.
    let last: Vec<String> = sink
        .events()
        .iter()
        .rev()
        .take(2)
        .map(|e| e.details["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(last, ["failed", "restarting"]);
}

#[test]
fn without_permission_for_a_process_or_past_the_limit_nothing_is_written_or_called() {
    let dir = tempfile::tempdir().unwrap();
    let f = system(FakeSystem::new(OWN));
    let sink = MemorySink::new();
    let refusal = |r: &LadderReport| r.steps[1].refusal.map(Refusal::as_str);

    let mut l = ladder(&f, dir.path(), Class::KernelStall, |c| {
        c.allow_reboot = false
    });
    let r = l.run(&stall(), &mut Probe::present(), &sink);
    assert_eq!(refusal(&r), Some("reboot_not_allowed"));

    // The diagnosis says a restart would not help (a network filesystem).
    let mut l = ladder(&f, dir.path(), Class::DState, |_| {});
    let mut nfs = stall();
    nfs.class = Class::DState;
    nfs.evidence.restart_veto = Some("the stuck tasks wait for NFS server srv:/export".into());
    let r = l.run(&nfs, &mut Probe::present(), &sink);
    assert_eq!(refusal(&r), Some("restart_not_warranted"));
    assert!(r.steps[1].reason.contains("NFS"));

    // A live process accounts for the memory: never a restart for it.
    let hog = ProcInfo {
        pid: 100,
        ppid: 1,
        comm: "memhog".into(),
        starttime: 1100,
        uid: Some(1000),
        kernel_thread: false,
        cgroups: vec![],
        unit: None,
        pgid: 100,
        sid: 1,
        state: 'R',
    };
    f.add(hog.clone());
    let mut l = ladder(&f, dir.path(), Class::MemoryExhaustion, |_| {});
    let mut mem = stall();
    mem.class = Class::MemoryExhaustion;
    mem.target = Some(Target::tree(100, 1100));
    let r = l.run(&mem, &mut Probe::present(), &sink);
    assert_eq!(refusal(&r), Some("restart_not_warranted"));
    assert!(
        r.steps[1].reason.contains("memhog (pid 100)"),
        "{}",
        r.steps[1].reason
    );

    assert!(f.calls().is_empty());
    assert!(!dir.path().join("state").join(PENDING).exists());

    // A restart loop stops itself: the history counts across boots.
    let mut l = ladder(&f, dir.path(), Class::KernelStall, |c| {
        c.restart.max_restarts = 2
    });
    for _ in 0..2 {
        let r = l.run(&stall(), &mut Probe::present(), &sink);
        assert_eq!(r.steps[1].outcome, Outcome::Restarting);
    }
    // A new daemon (the next boot) reads the same history.
    let mut l = ladder(&f, dir.path(), Class::KernelStall, |c| {
        c.restart.max_restarts = 2
    });
    let r = l.run(&stall(), &mut Probe::present(), &sink);
    assert_eq!(refusal(&r), Some("restart_limit"));
    assert!(
        r.steps[1].reason.contains("needs a person"),
        "{}",
        r.steps[1].reason
    );
    let restarts = f
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Restart(_)))
        .count();
    assert_eq!(restarts, 2);
}

#[test]
fn a_symptom_that_clears_in_the_grace_or_cannot_be_measured_is_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let f = system(FakeSystem::new(OWN));
    let sink = MemorySink::new();
    let mut l = ladder(&f, dir.path(), Class::KernelStall, |c| {
        c.restart.grace.kernel_stall = HumanDuration::from_secs(30)
    });
    let mut clears = Probe {
        clears_after: Some(3),
        ..Probe::present()
    };
    let t0 = Instant::now();
    let r = l.run(&stall(), &mut clears, &sink);
    assert!(t0.elapsed() < Duration::from_secs(10));
    // The record step's own check sees it first only if it cleared there;
    // either way the ladder ends recovered and nothing restarts.
    assert!(r.recovered, "{:?}", outcomes(&r));

    let mut l = ladder(&f, dir.path(), Class::KernelStall, |_| {});
    for (recheck, code) in [
        (Recheck::Unverifiable, "unverifiable"),
        (
            Recheck::Cleared("cpu 1 is no longer stalled".into()),
            "symptom_gone",
        ),
    ] {
        let mut p = Probe {
            recheck,
            ..Probe::present()
        };
        let r = l.run(&stall(), &mut p, &sink);
        assert_eq!(r.steps[1].refusal.map(Refusal::as_str), Some(code));
    }
    assert!(f.calls().is_empty());
    assert!(!dir.path().join("state").join(PENDING).exists());
}

#[test]
fn dry_run_says_what_it_would_do_and_an_unwritable_record_stops_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let f = system(FakeSystem::new(OWN));
    let sink = MemorySink::new();
    let mut l = ladder(&f, dir.path(), Class::KernelStall, |_| {});
    l.options.dry_run = true;
    let r = l.run(&stall(), &mut Probe::present(), &sink);
    assert_eq!(r.steps[1].outcome, Outcome::DryRun);
    assert!(
        r.steps[1].reason.contains("would restart"),
        "{}",
        r.steps[1].reason
    );
    assert!(f.calls().is_empty());

    // The state dir is a file: the restart could not be counted, so none.
    std::fs::write(dir.path().join("state"), "").unwrap();
    let mut l = ladder(&f, dir.path(), Class::KernelStall, |_| {});
    let r = l.run(&stall(), &mut Probe::present(), &sink);
    assert_eq!(r.steps[1].outcome, Outcome::Failed);
    assert!(
        r.steps[1].reason.contains("could loop"),
        "{}",
        r.steps[1].reason
    );
    assert!(f.calls().is_empty());
}

/// A stalled CPU whose interrupt count stood still over the grace has
/// interrupts off: reboot(2) (kexec too) would wait for it forever in its
/// notifiers, so the emergency restart goes first, once. A stalled CPU
/// that still takes interrupts, or another CPU being deaf, changes
/// nothing.
#[test]
fn a_cpu_deaf_to_interrupts_gets_the_emergency_restart() {
    let run = |deaf: Vec<u32>, kexec: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut fake = FakeSystem::new(OWN);
        fake.deaf_cpus = deaf;
        fake.kexec_loaded = kexec;
        let f = system(fake);
        let mut l = ladder(&f, dir.path(), Class::KernelStall, |c| {
            c.restart.grace.kernel_stall = HumanDuration::from_millis(300)
        });
        let r = l.run(&stall(), &mut Probe::present(), &MemorySink::new());
        assert_eq!(
            outcomes(&r),
            [("record", "recorded"), ("reboot", "restarting")]
        );
        f.calls()
    };
    assert_eq!(run(vec![1], true), [Call::Sync, Call::EmergencyRestart]);
    assert_eq!(run(vec![1], false), [Call::Sync, Call::EmergencyRestart]);
    assert_eq!(
        run(vec![], false),
        [Call::Sync, Call::Restart(RestartMethod::Reboot)]
    );
    assert_eq!(
        run(vec![0], true),
        [Call::Sync, Call::Restart(RestartMethod::Kexec)]
    );
}

/// A deaf CPU does not wait out kernel_stall's grace: after
/// `irqs_off_grace` the restart goes ahead, saying why (the other CPUs
/// follow a CPU with interrupts off at their next cross-CPU call). The
/// bystander, a stalled CPU that still takes interrupts, waits the whole
/// grace.
#[test]
fn a_deaf_cpu_is_restarted_after_the_irqs_off_grace_not_the_class_grace() {
    let run = |deaf: Vec<u32>| {
        let dir = tempfile::tempdir().unwrap();
        let mut fake = FakeSystem::new(OWN);
        fake.deaf_cpus = deaf;
        let f = system(fake);
        let mut l = ladder(&f, dir.path(), Class::KernelStall, |c| {
            c.restart.grace.kernel_stall = HumanDuration::from_millis(1500);
            c.restart.irqs_off_grace = HumanDuration::from_millis(300);
        });
        let t0 = Instant::now();
        let r = l.run(&stall(), &mut Probe::present(), &MemorySink::new());
        assert_eq!(
            outcomes(&r),
            [("record", "recorded"), ("reboot", "restarting")]
        );
        (t0.elapsed(), r.steps[1].reason.clone(), f.calls())
    };
    let (took, reason, calls) = run(vec![1]);
    assert!(took < Duration::from_millis(1400), "{took:?}");
    assert!(reason.contains("CPU 1 taking no interrupts"), "{reason}");
    assert!(reason.contains("irqs_off_grace"), "{reason}");
    assert_eq!(calls, [Call::Sync, Call::EmergencyRestart]);
    let (took, reason, calls) = run(vec![]);
    assert!(took >= Duration::from_millis(1450), "{took:?}");
    assert!(!reason.contains("no interrupts"), "{reason}");
    assert_eq!(calls, [Call::Sync, Call::Restart(RestartMethod::Reboot)]);
}
