//! No-progress heuristics on real programs (inside a cgroup sandbox):
//! an infinite loop and a two-thread deadlock, suspected alone, confirmed
//! by a failing probe, or acted on alone when configured; and a pluggable
//! recovery step that saves the program from a restart.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use selfheal_config::{AppConfig, HumanDuration, ProbeCheck, ProbeConfig};
use selfheal_event::{EventKind, Severity};
use selfheal_supervise::app_hang::{AppHangEvidence, StoredAppHang};
use selfheal_supervise::{Options, RecoveryStep, StepContext, StepOutcome, Supervisor, Trouble};

fn spin_app(name: &str, bound_ms: u64) -> AppConfig {
    let prog = tp("tp-spin");
    let mut a = app(name, &[&prog, "--after", "100"]);
    a.progress.spin = HumanDuration::from_millis(bound_ms);
    a.progress.period = HumanDuration::from_millis(200);
    a
}

/// The hang was acted on: SIGTERM to the group, the program died of it,
/// and a new run started.
fn assert_stopped_and_restarted(events: &[selfheal_event::Event]) {
    let action = of(events, EventKind::AppAction)
        .into_iter()
        .find(|e| e.details["action"] == "signal")
        .unwrap_or_else(|| panic!("no stop action:\n{}", dump(events)));
    assert_eq!(action.details["signal"], "SIGTERM");
    assert_eq!(action.details["scope"], "group");
    let restart = &of(events, EventKind::AppRestart)[0];
    assert_eq!(restart.details["cause"], "hang");
    assert_eq!(restart.details["previous"]["signal"], libc::SIGTERM);
    assert_ne!(pid_of(restart), pid_of(&action));
}

fn suspected(events: &[selfheal_event::Event], detector: &str) -> Vec<selfheal_event::Event> {
    of(events, EventKind::AppHang)
        .into_iter()
        .filter(|e| e.details["suspected"] == true && e.details["detector"] == detector)
        .collect()
}

#[test]
fn infinite_loop_acted_on_alone_when_configured() {
    let Some(sb) = sandbox("sup-spin") else {
        return;
    };
    let mut a = spin_app("spinner", 1000);
    a.progress.act_alone = true;
    let (sup, sink) = start(vec![a], Some(&sb));
    let events = wait_kind(&sink, EventKind::AppRestart, 1);
    let s = &suspected(&events, "spin")[0];
    assert_eq!(s.severity, Severity::Warning);
    let ev = &s.details["evidence"];
    assert!(ev["held_ms"].as_u64().unwrap() >= 1000, "{ev}");
    // The suspicion reads back typed, as the sampler wrote it.
    let typed = StoredAppHang::from_event(s).unwrap();
    assert!(typed.suspected && typed.detected_unix_us.is_none());
    let AppHangEvidence::Suspicion(e) = &typed.evidence else {
        panic!("read as {typed:?}");
    };
    assert_eq!(e.tid, ev["tid"].as_i64().map(|t| t as i32));
    let spinner_tid = ev["tid"].as_i64().unwrap();
    let threads = ev["threads"].as_array().unwrap();
    let spinner = threads.iter().find(|t| t["tid"] == spinner_tid).unwrap();
    assert_eq!(spinner["comm"], "spinner");
    assert_eq!(spinner["state"], "R");
    assert_eq!(spinner["voluntary_switches"], 0);
    let hang = of(&events, EventKind::AppHang)
        .into_iter()
        .find(|e| e.severity == Severity::Critical)
        .unwrap();
    assert_eq!(hang.details["detector"], "spin");
    assert_eq!(hang.details["confirmed_by"], "act_alone");
    assert_eq!(
        of(&events, EventKind::AppRestart)[0].details["cause"],
        "hang"
    );
    sup.shutdown();
}

#[test]
fn infinite_loop_alone_is_only_suspected() {
    let Some(sb) = sandbox("sup-spin-sus") else {
        return;
    };
    let a = spin_app("suspect", 600);
    let (sup, sink) = start(vec![a], Some(&sb));
    wait_for(&sink, SOON, "a spin suspicion", |e| {
        !suspected(e, "spin").is_empty()
    });
    // The status shows the suspicion while it holds (looked at now: on a
    // busy machine the spinner's share of a CPU can drop below the bound
    // later and the suspicion clear, which is right).
    let shown = Instant::now();
    while sup.snapshot()[0].suspected != vec!["spin"] {
        assert!(
            shown.elapsed() < Duration::from_secs(2),
            "the status never showed the suspicion: {:?}",
            sup.snapshot()[0]
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Well past the bound: still running, nothing done to it.
    std::thread::sleep(Duration::from_millis(1500));
    let events = sink.events();
    assert_eq!(count(&events, EventKind::AppAction), 0, "{}", dump(&events));
    assert_eq!(
        count(&events, EventKind::AppRestart),
        0,
        "{}",
        dump(&events)
    );
    assert!(suspected(&events, "spin")[0].message.contains("not acting"));
    let st = &sup.snapshot()[0];
    assert!(st.pid.is_some(), "{st:?}");
    sup.shutdown();
}

#[test]
fn infinite_loop_confirmed_by_a_failing_probe() {
    let Some(sb) = sandbox("sup-spin-probe") else {
        return;
    };
    let mut a = spin_app("confirmed", 600);
    // A probe that fails every time but would need 1000 failures alone.
    let mut p = ProbeConfig::new(ProbeCheck::Exec {
        command: vec!["false".into()],
    });
    p.name = "check".into();
    p.period = HumanDuration::from_millis(300);
    p.failure_threshold = 1000;
    a.probes.push(p);
    let (sup, sink) = start(vec![a], Some(&sb));
    let events = wait_for(&sink, SOON, "a confirmed spin hang", |e| {
        e.iter()
            .any(|e| e.kind == EventKind::AppHang && e.severity == Severity::Critical)
    });
    let hang = of(&events, EventKind::AppHang)
        .into_iter()
        .find(|e| e.severity == Severity::Critical)
        .unwrap();
    assert_eq!(hang.details["detector"], "spin");
    assert_eq!(
        hang.details["confirmed_by"]["probe"], "check",
        "{}",
        hang.details
    );
    sup.shutdown();
}

#[test]
fn two_thread_deadlock_is_detected_with_futex_evidence() {
    let Some(sb) = sandbox("sup-deadlock") else {
        return;
    };
    let prog = tp("tp-deadlock");
    let mut a = app("locked", &[&prog, "--after", "100"]);
    a.progress.deadlock = HumanDuration::from_millis(1000);
    a.progress.period = HumanDuration::from_millis(200);
    a.progress.act_alone = true;
    let (sup, sink) = start(vec![a], Some(&sb));
    let events = wait_kind(&sink, EventKind::AppRestart, 1);
    let s = &suspected(&events, "deadlock")[0];
    let threads = s.details["evidence"]["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 3, "main + two lockers: {threads:?}");
    let names: Vec<&str> = threads
        .iter()
        .map(|t| t["comm"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"lock-ab") && names.contains(&"lock-ba"),
        "{names:?}"
    );
    for t in threads {
        assert_eq!(t["state"], "S", "{t}");
        assert_eq!(t["cpu_percent"], 0.0, "{t}");
        let futex = t["syscall"]
            .as_str()
            .map(|s| s == libc::SYS_futex.to_string())
            .unwrap_or(false)
            || t["wchan"].as_str().is_some_and(|w| w.contains("futex"));
        assert!(futex, "not in a futex wait: {t}");
    }
    let hang = of(&events, EventKind::AppHang)
        .into_iter()
        .find(|e| e.severity == Severity::Critical)
        .unwrap();
    assert_eq!(hang.details["detector"], "deadlock");
    assert_stopped_and_restarted(&events);
    let stacks = hang.details["thread_stacks"]["threads"].as_array().unwrap();
    assert_eq!(stacks.len(), 3);
    sup.shutdown();
}

/// A step that declines once, then "recovers" by doing nothing (as a
/// rollback that found the program healthy would), counting its calls.
struct Flaky {
    calls: Arc<AtomicU32>,
}

impl RecoveryStep for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn attempt(&mut self, ctx: &mut StepContext<'_>) -> StepOutcome {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        assert!(
            matches!(ctx.trouble, Trouble::Hang { detector, .. } if *detector == selfheal_supervise::HangDetector::Watchdog)
        );
        assert!(ctx.child.pid() > 0);
        if n == 0 {
            StepOutcome::Declined {
                reason: "first time".into(),
            }
        } else {
            StepOutcome::Recovered {
                detail: serde_json::json!({ "call": n }),
            }
        }
    }
}

#[test]
fn a_recovery_step_can_spare_the_restart() {
    let prog = tp("tp-notify");
    let mut a = app("stepped", &[&prog, "--pings", "2", "--interval", "50"]);
    a.notify.enabled = true;
    a.notify.watchdog = HumanDuration::from_millis(300);
    a.crash_loop.max_restarts = 0;
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let options = Options {
        recovery: Arc::new(move |_: &AppConfig| -> Vec<Box<dyn RecoveryStep>> {
            vec![Box::new(Flaky {
                calls: Arc::clone(&c),
            })]
        }),
        ..Options::default()
    };
    let sink = Arc::new(selfheal_event::MemorySink::new());
    let sup = Supervisor::start_with(vec![a], Arc::clone(&sink) as _, options).unwrap();
    // First hang: declined, so stop and restart. Second (the restarted
    // program also goes silent): recovered, no restart.
    let events = wait_for(&sink, SOON, "a recovered hang", |e| {
        e.iter().any(|e| e.details["outcome"] == "recovered")
    });
    let actions: Vec<String> = of(&events, EventKind::AppAction)
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e.details["action"].as_str().unwrap(),
                e.details["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec!["flaky:declined", "signal:", "flaky:recovered"],
        "{}",
        dump(&events)
    );
    assert_eq!(count(&events, EventKind::AppRestart), 1);
    let pid_before = sup.snapshot()[0].pid;
    // Recovered means the watchdog counts afresh: it fires again later,
    // and the same process keeps running in between.
    wait_for(&sink, SOON, "the watchdog firing again", |e| {
        e.iter()
            .filter(|e| e.details["outcome"] == "recovered")
            .count()
            >= 2
    });
    assert_eq!(sup.snapshot()[0].pid, pid_before);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    sup.shutdown();
}
