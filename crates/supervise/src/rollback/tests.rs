//! Tests that need no root: the fallback when the engine cannot start,
//! metrics across runs, the history warning, the step's refusals.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal_config::{AppConfig, HumanDuration};
use selfheal_event::{EventKind, MemorySink, Severity};
use selfheal_metrics::{Collector, Encoder};
use selfheal_sys::poll::poll_readable;

use super::engine::{self, Failure, StartError, Unrecoverable};
use super::report::{explain, reason_tag};
use super::*;
use crate::child::{ChildHandle, ExitStatus, LaunchSpec, ProcessLauncher, Program};
use crate::steps::{RecoveryStep, StepContext, StepOutcome, Trouble};

fn app() -> AppConfig {
    let mut a = AppConfig::new("ck", vec!["sh".into(), "-c".into(), "exit 3".into()]);
    a.checkpoint.interval = HumanDuration::from_millis(50);
    a
}

fn denied(_: engine::Target, _: engine::Config) -> Result<engine::Engine, StartError> {
    Err(StartError::Seize {
        pid: 1,
        source: selfheal_sys::SysError {
            call: "ptrace(PTRACE_SEIZE)".into(),
            errno: selfheal_sys::Errno(libc::EPERM),
        },
    })
}

fn spec(argv: &[&str]) -> LaunchSpec {
    LaunchSpec {
        program: Program {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            new_process_group: true,
            ..Program::default()
        },
        kill_group_on_exit: true,
        parent_death_signal: Some(libc::SIGKILL),
    }
}

fn wait(c: &mut dyn ChildHandle) -> ExitStatus {
    assert!(poll_readable(c.exit_fd(), Some(Duration::from_secs(20))).unwrap());
    c.try_wait().unwrap().expect("exit_fd readable means ended")
}

#[test]
fn without_ptrace_the_program_runs_unprotected_after_a_loud_event() {
    let sink = Arc::new(MemorySink::new());
    let ck = AppCheckpoint::with_start(
        &app(),
        Arc::clone(&sink) as _,
        Arc::new(ProcessLauncher),
        false,
        denied,
    );
    let mut child = ck
        .launcher()
        .launch(spec(&["sh", "-c", "exit 3"]))
        .expect("falls back to a plain start");
    assert_eq!(wait(child.as_mut()), ExitStatus::exited(3));
    let events = sink.events();
    let e = events
        .iter()
        .find(|e| e.kind == EventKind::Checkpoint)
        .expect("a checkpoint event");
    assert_eq!(e.severity, Severity::Critical);
    assert_eq!(e.details["outcome"], "unavailable");
    assert!(e.message.contains("WITHOUT checkpoints"), "{}", e.message);
    assert!(
        e.details["fix"]
            .as_str()
            .unwrap()
            .contains("CAP_SYS_PTRACE"),
        "{}",
        e.details
    );
    let snap = ck.totals().snapshot();
    assert_eq!((snap.unavailable, snap.active), (1, false));
    // No run to roll back: a hang goes on to the restart.
    let mut step = ck.step();
    let trouble = Trouble::Hang {
        detector: crate::HangDetector::Watchdog,
        evidence: crate::app_hang::AppHangEvidence::WatchdogTrigger(
            crate::app_hang::WatchdogTriggerEvidence {
                trigger: crate::app_hang::WATCHDOG_TRIGGER.into(),
            },
        ),
    };
    let out = step.attempt(&mut StepContext {
        app: &app(),
        child: child.as_mut(),
        trouble: &trouble,
        last_progress: Some(Instant::now()),
    });
    assert!(
        matches!(&out, StepOutcome::Declined { reason } if reason.contains("no checkpoints")),
        "{out:?}"
    );
}

#[test]
fn command_mistakes_are_reported_like_a_shell_not_as_engine_failures() {
    let sink = Arc::new(MemorySink::new());
    let ck = AppCheckpoint::with_start(
        &app(),
        Arc::clone(&sink) as _,
        Arc::new(ProcessLauncher),
        false,
        denied,
    );
    let err = ck
        .launcher()
        .launch(spec(&["/nonexistent/selfheal-ckwire"]))
        .err()
        .unwrap();
    assert_eq!(err.shell_status(), 127, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-exec");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let err = ck
        .launcher()
        .launch(spec(&[script.to_str().unwrap()]))
        .err()
        .unwrap();
    assert_eq!(err.shell_status(), 126, "{err}");
    assert!(sink.events().is_empty(), "no engine was involved");
}

#[test]
fn counters_survive_restarts_and_reach_metrics() {
    let totals = Arc::new(CheckpointTotals::default());
    let first = Arc::new(engine::Metrics::default());
    totals.run_started(Arc::clone(&first));
    first.checkpoints.store(10, Ordering::Relaxed);
    first.rollbacks.store(2, Ordering::Relaxed);
    first.max_pause_ns.store(3_000_000, Ordering::Relaxed);
    first.last_pause_ns.store(1_000_000, Ordering::Relaxed);
    first.memory_held_bytes.store(1 << 20, Ordering::Relaxed);
    first
        .pause_seconds
        .observe(std::time::Duration::from_micros(700));
    first
        .rollback_seconds
        .observe(std::time::Duration::from_millis(2));
    let live = totals.snapshot();
    assert!(live.active);
    assert_eq!((live.checkpoints, live.rollbacks), (10, 2));
    assert_eq!(live.memory_bytes, 1 << 20);
    totals.run_ended(&first);
    let second = Arc::new(engine::Metrics::default());
    totals.run_started(Arc::clone(&second));
    second.checkpoints.store(5, Ordering::Relaxed);
    second.rollbacks_impossible.store(1, Ordering::Relaxed);
    second.max_pause_ns.store(1_000_000, Ordering::Relaxed);
    second
        .pause_seconds
        .observe(std::time::Duration::from_millis(30));
    let s = totals.snapshot();
    // Distributions add up across runs.
    assert_eq!((s.pauses.count, s.rollback_times.count), (2, 1));
    assert_eq!((s.checkpoints, s.rollbacks, s.impossible), (15, 2, 1));
    assert!((s.max_pause_seconds - 0.003).abs() < 1e-9, "{s:?}");
    assert_eq!(s.memory_bytes, 0, "memory held is the current run's");

    let mut out = String::new();
    CheckpointMetrics::new(vec![("web".into(), totals)]).collect(&mut Encoder::new(&mut out));
    for line in [
        "selfheal_app_checkpoints_total{app=\"web\"} 15\n",
        "selfheal_app_rollbacks_total{app=\"web\"} 2\n",
        "selfheal_app_rollbacks_impossible_total{app=\"web\"} 1\n",
        "selfheal_app_checkpoint_active{app=\"web\"} 1\n",
        "selfheal_app_checkpoint_pause_seconds_bucket{app=\"web\",le=\"0.001\"} 1\n",
        "selfheal_app_checkpoint_pause_seconds_bucket{app=\"web\",le=\"0.05\"} 2\n",
        "selfheal_app_checkpoint_pause_seconds_count{app=\"web\"} 2\n",
        "selfheal_app_rollback_duration_seconds_count{app=\"web\"} 1\n",
    ] {
        assert!(out.contains(line), "{line} missing from\n{out}");
    }
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(selfheal_metrics::valid_name(name), "{name}");
    }
}

#[test]
fn history_too_short_for_hang_detection_is_warned_about() {
    let mut a = app();
    a.notify.enabled = true;
    a.notify.watchdog = HumanDuration::from_secs(2);
    let w = history_warning(&a).expect("400ms of history vs a 2s watchdog");
    assert!(w.contains("raise keep or interval"), "{w}");
    a.checkpoint.keep = 60;
    assert_eq!(history_warning(&a), None, "3s of history is enough");
    // Without hang detectors there is nothing to warn about.
    assert_eq!(history_warning(&app()), None);
}

#[test]
fn impossible_rollbacks_are_explained() {
    let hang = explain(&Failure::Hang, &Unrecoverable::HistoryExhausted { kept: 8 });
    assert!(hang.contains("last sign of progress"), "{hang}");
    let crash = Failure::Crash {
        signal: libc::SIGSEGV,
        tid: 1,
        code: 0,
        addr_or_pid: 1,
    };
    let s = explain(&crash, &Unrecoverable::Socket { fd: 3 });
    assert!(s.contains("socket") && s.contains("fd 3"), "{s}");
    assert_eq!(
        reason_tag(&Unrecoverable::ConsumedInput { bytes: 4 }),
        "consumed_input"
    );
}

#[test]
fn each_hang_request_gets_the_answer_to_it_in_order() {
    use std::sync::mpsc;
    let (requests, pending) = mpsc::channel();
    let pending = PendingRequests(pending);
    let ask = || {
        let (reply, answer) = mpsc::sync_channel(1);
        requests.send(HangRequest { reply }).unwrap();
        answer
    };
    // The first requester gave up waiting: the answer to its request must
    // not reach the second one.
    drop(ask());
    let second = ask();
    pending.answer_oldest(HangReply::Refused("first".into()));
    assert!(
        second.try_recv().is_err(),
        "the first answer went to the second request"
    );
    pending.answer_oldest(HangReply::Refused("second".into()));
    assert!(matches!(second.try_recv(), Ok(HangReply::Refused(w)) if w == "second"));
    // Requests left when the program ends are refused, each on its own channel.
    let (third, fourth) = (ask(), ask());
    pending.refuse_all("the program ended");
    for a in [third, fourth] {
        assert!(matches!(a.try_recv(), Ok(HangReply::Refused(w)) if w == "the program ended"));
    }
    // After the pump is gone, a request's channel closes at once.
    drop(pending);
    let (reply, answer) = mpsc::sync_channel::<HangReply>(1);
    assert!(requests.send(HangRequest { reply }).is_err());
    assert!(matches!(
        answer.recv_timeout(Duration::from_secs(1)),
        Err(mpsc::RecvTimeoutError::Disconnected)
    ));
}
