//! Hang detection with real programs: the notify watchdog and readiness,
//! an HTTP server that stops answering, and what follows (evidence, stop,
//! restart).

mod common;

use std::time::Duration;

use common::*;
use selfheal_config::KillMode;
use selfheal_config::{HumanDuration, ProbeCheck, ProbeConfig, StatusRange};
use selfheal_event::{EventKind, Severity};
use selfheal_supervise::app_action::StoredAppAction;
use selfheal_supervise::app_hang::{AppHangEvidence, StoredAppHang};
use selfheal_supervise::app_lifecycle::{LastRun, StoredAppLifecycle};
use selfheal_supervise::evidence::ThreadStacks;
use selfheal_supervise::respawn::EndCause;
use selfheal_supervise::{HangDetector, Phase};

fn notify_app(name: &str, args: &[&str], watchdog_ms: u64) -> selfheal_config::AppConfig {
    let prog = tp("tp-notify");
    let mut argv = vec![prog.as_str()];
    argv.extend_from_slice(args);
    let mut a = app(name, &argv);
    a.notify.enabled = true;
    a.notify.ready_timeout = HumanDuration::from_secs(10);
    a.notify.watchdog = HumanDuration::from_millis(watchdog_ms);
    a
}

#[test]
fn missed_watchdog_is_a_hang_then_stop_and_restart() {
    let (_d, stamps) = temp_path("stamps");
    let stamp_arg = stamps.display().to_string();
    let a = notify_app(
        "wd",
        &[
            "--pings",
            "5",
            "--interval",
            "100",
            "--status",
            "warm",
            "--stamp",
            &stamp_arg,
        ],
        600,
    );
    let (sup, sink) = start(vec![a], None);
    let events = wait_kind(&sink, EventKind::AppReady, 1);
    let ready = &of(&events, EventKind::AppReady)[0];
    assert_eq!(ready.severity, Severity::Info);
    let st = &sup.snapshot()[0];
    assert_eq!(st.status.as_deref(), Some("warm"), "{st:?}");
    assert!(st.ready);

    let events = wait_kind(&sink, EventKind::AppRestart, 1);
    let hang = of(&events, EventKind::AppHang)
        .into_iter()
        .find(|e| e.severity == Severity::Critical)
        .expect("a hang event");
    assert_eq!(hang.rule.as_deref(), None);
    let d = &hang.details;
    assert_eq!(d["detector"], "watchdog");
    assert_eq!(d["suspected"], false);
    assert_eq!(d["evidence"]["watchdog_ms"], 600);
    // The event reads back typed, as the runner wrote it.
    let typed = StoredAppHang::from_event(&hang).unwrap();
    assert_eq!(typed.detector, HangDetector::Watchdog);
    assert!(!typed.suspected && typed.confirmed_by.is_none());
    assert!(
        matches!(&typed.evidence, AppHangEvidence::Watchdog(w) if w.watchdog_ms == 600),
        "{typed:?}"
    );
    assert_eq!(typed.detected_unix_us, d["detected_unix_us"].as_i64());
    assert!(matches!(
        typed.thread_stacks,
        Some(ThreadStacks::Read { .. })
    ));
    assert!(
        d["thread_stacks"]["threads"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{d}"
    );
    // Detected no earlier than the deadline after the last heartbeat.
    let detected = d["detected_unix_us"].as_i64().unwrap();
    // The restarted program pings into the same file: take the first run's.
    let last_ping = selfheal_testprogs::read_stamps(&stamps, "ping")
        .into_iter()
        .filter(|t| *t < detected)
        .max()
        .unwrap();
    let lag_ms = (detected - last_ping) as f64 / 1000.0;
    assert!(
        lag_ms >= 590.0,
        "hang declared {lag_ms} ms after the last WATCHDOG=1"
    );
    assert!(
        lag_ms < 600.0 + 5000.0,
        "hang declared {lag_ms} ms after the last WATCHDOG=1"
    );
    assert_eq!(
        d["evidence"]["last_ping_unix_us"]
            .as_i64()
            .map(|p| (p - last_ping).abs() < 20_000),
        Some(true)
    );

    // Then: SIGTERM to the group, the program dies of it, a restart follows.
    let action = of(&events, EventKind::AppAction)
        .into_iter()
        .find(|e| e.details["action"] == "signal")
        .expect("a stop action");
    assert_eq!(action.details["signal"], "SIGTERM");
    assert_eq!(action.details["reason"], "hang (watchdog)");
    let StoredAppAction::Signal(sent) = StoredAppAction::from_event(&action).unwrap() else {
        panic!("not a stop signal: {}", action.details);
    };
    assert_eq!(
        (sent.signal.as_str(), sent.scope),
        ("SIGTERM", KillMode::Group)
    );
    assert_eq!(sent.error, None);
    let restart = &of(&events, EventKind::AppRestart)[0];
    assert_eq!(restart.details["cause"], "hang");
    assert_eq!(restart.details["previous"]["signal"], libc::SIGTERM);
    let StoredAppLifecycle::Restarted(r) = StoredAppLifecycle::from_event(restart).unwrap() else {
        panic!("not a restart after a run: {}", restart.details);
    };
    assert_eq!(r.cause, EndCause::Hang);
    assert!(matches!(r.previous, LastRun::Ended(e) if e.signal == Some(libc::SIGTERM)));
    assert_eq!(
        count(&events, EventKind::AppCrash),
        0,
        "a hang kill is not a crash"
    );
    let st = &sup.snapshot()[0];
    assert_eq!(st.hangs.get("watchdog"), Some(&1), "{st:?}");
    sup.shutdown();
}

#[test]
fn no_ready_in_time_is_a_startup_hang() {
    let mut a = notify_app("slowstart", &["--no-ready", "1", "--pings", "1"], 0);
    a.notify.ready_timeout = HumanDuration::from_millis(400);
    a.restart = selfheal_config::RestartPolicy::Never;
    let (sup, sink) = start(vec![a], None);
    assert_eq!(sup.snapshot()[0].state, Phase::Starting);
    let results = sup.wait();
    let events = sink.events();
    let hang = of(&events, EventKind::AppHang)
        .into_iter()
        .find(|e| e.details["detector"] == "ready_timeout")
        .unwrap_or_else(|| panic!("no ready_timeout hang:\n{}", dump(&events)));
    assert!(hang.message.contains("READY=1"), "{}", hang.message);
    assert_eq!(results[0].1.last_exit.unwrap().signal, Some(libc::SIGTERM));
    assert_eq!(count(&events, EventKind::AppReady), 0);
}

#[test]
fn extend_timeout_usec_gives_a_slow_start_more_time() {
    // 300 ms to become ready, but the program asks for 3 s more and is
    // ready after 800 ms: no hang.
    let mut a = notify_app(
        "slow",
        &[
            "--extend-usec",
            "3000000",
            "--ready-after",
            "800",
            "--pings",
            "0",
        ],
        0,
    );
    a.notify.ready_timeout = HumanDuration::from_millis(300);
    let (sup, sink) = start(vec![a], None);
    let events = wait_kind(&sink, EventKind::AppReady, 1);
    assert_eq!(count(&events, EventKind::AppHang), 0, "{}", dump(&events));
    assert!(
        of(&events, EventKind::AppReady)[0].details["startup_ms"]
            .as_u64()
            .unwrap()
            >= 790
    );
    sup.shutdown();
}

#[test]
fn watchdog_usec_from_the_program_overrides_the_config() {
    // Config says 60 s; the program asks for 300 ms and then goes silent.
    let a = notify_app(
        "override",
        &["--watchdog-usec", "300000", "--pings", "1"],
        60_000,
    );
    let (sup, sink) = start(vec![a], None);
    let events = wait_for(&sink, SOON, "a watchdog hang", |e| {
        e.iter()
            .any(|e| e.kind == EventKind::AppHang && e.details["detector"] == "watchdog")
    });
    let hang = of(&events, EventKind::AppHang).pop().unwrap();
    assert_eq!(hang.details["evidence"]["watchdog_ms"], 300);
    sup.shutdown();
}

#[test]
fn stopping_then_clean_exit_is_not_a_failure() {
    let a = notify_app(
        "polite",
        &[
            "--pings",
            "3",
            "--interval",
            "50",
            "--stop-after-pings",
            "1",
        ],
        5000,
    );
    let (sup, sink) = start(vec![a], None);
    let results = sup.wait();
    assert_eq!(results[0].1.shell_status(), 0);
    let events = sink.events();
    assert_eq!(count(&events, EventKind::AppCrash), 0, "{}", dump(&events));
    assert_eq!(count(&events, EventKind::AppHang), 0, "{}", dump(&events));
    assert_eq!(count(&events, EventKind::AppReady), 1, "{}", dump(&events));
}

#[test]
fn http_server_that_stops_answering_is_restarted() {
    let (_d, stamps) = temp_path("stamps");
    let port = free_port();
    let prog = tp("tp-http");
    let port_s = port.to_string();
    let stamp_arg = stamps.display().to_string();
    let mut a = app(
        "web",
        &[
            &prog, "--port", &port_s, "--answer", "3", "--stamp", &stamp_arg,
        ],
    );
    let mut p = ProbeConfig::new(ProbeCheck::Http {
        url: format!("http://127.0.0.1:{port}/healthz"),
        expect_status: StatusRange::default(),
    });
    p.initial_delay = HumanDuration::from_millis(200);
    p.period = HumanDuration::from_millis(200);
    p.timeout = HumanDuration::from_millis(300);
    p.failure_threshold = 2;
    a.probes.push(p);
    let (sup, sink) = start(vec![a], None);
    let events = wait_kind(&sink, EventKind::AppRestart, 1);
    let hang = of(&events, EventKind::AppHang).pop().unwrap();
    let d = &hang.details;
    assert_eq!(d["detector"], "probe");
    assert_eq!(d["evidence"]["probe"], "http");
    assert_eq!(d["evidence"]["consecutive_failures"], 2);
    let typed = StoredAppHang::from_event(&hang).unwrap();
    let AppHangEvidence::Probe(p) = &typed.evidence else {
        panic!("read as {typed:?}");
    };
    assert_eq!((p.probe.as_str(), p.consecutive_failures), ("http", 2));
    let failures = d["evidence"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2);
    for f in failures {
        assert!(f["detail"].as_str().unwrap().contains("timed out"), "{f}");
    }
    // The server answered 3 probes before it went silent: not before.
    let answered = selfheal_testprogs::read_stamps(&stamps, "answer");
    assert_eq!(answered.len(), 3);
    let silent = selfheal_testprogs::read_stamps(&stamps, "silent")[0];
    assert!(d["detected_unix_us"].as_i64().unwrap() > silent);
    assert_eq!(
        of(&events, EventKind::AppRestart)[0].details["cause"],
        "hang"
    );
    // The new server answers again (3 more answers), so probes pass.
    wait_for(&sink, SOON, "answers from the restarted server", |_| {
        selfheal_testprogs::read_stamps(&stamps, "answer").len() >= 4
    });
    let st = &sup.snapshot()[0];
    assert_eq!(st.hangs.get("probe"), Some(&1), "{st:?}");
    sup.shutdown();
}

#[test]
fn program_ignoring_the_stop_signal_is_killed_after_the_grace_period() {
    let mut a = app(
        "stubborn",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo up; while :; do sleep 1; done",
        ],
    );
    a.stop_grace = HumanDuration::from_millis(300);
    let (sup, sink) = start(vec![a], None);
    wait_kind(&sink, EventKind::AppStart, 1);
    std::thread::sleep(Duration::from_millis(200));
    let t0 = std::time::Instant::now();
    let results = sup.shutdown();
    let took = t0.elapsed();
    assert_eq!(results[0].1.last_exit.unwrap().signal, Some(libc::SIGKILL));
    assert!(took >= Duration::from_millis(290), "{took:?}");
    let events = sink.events();
    let actions: Vec<String> = of(&events, EventKind::AppAction)
        .iter()
        .map(|e| e.details["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, vec!["signal", "kill"], "{}", dump(&events));
    let typed: Vec<StoredAppAction> = of(&events, EventKind::AppAction)
        .iter()
        .map(|e| StoredAppAction::from_event(e).unwrap())
        .collect();
    assert!(matches!(
        typed.as_slice(),
        [StoredAppAction::Signal(_), StoredAppAction::Kill(k)] if k.signal == "SIGKILL"
    ));
    let exit = of(&events, EventKind::AppExit).pop().unwrap();
    assert!(
        exit.message.contains("stopped on request"),
        "{}",
        exit.message
    );
}

#[test]
fn a_stopped_program_is_continued_to_act_on_the_stop_signal() {
    // Its SIGTERM handler can only run once it is continued: without the
    // SIGCONT that follows the stop signal it would sit stopped through
    // the whole 10 s grace and be killed.
    let a = app(
        "paused",
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; echo up; while :; do sleep 0.1; done",
        ],
    );
    let (sup, sink) = start(vec![a], None);
    wait_kind(&sink, EventKind::AppStart, 1);
    std::thread::sleep(Duration::from_millis(200));
    let pid = sup.snapshot()[0].pid.expect("running");
    selfheal_sys::signal::kill_process(pid, libc::SIGSTOP).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('T')))
    {
        assert!(std::time::Instant::now() < deadline, "never stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t0 = std::time::Instant::now();
    let results = sup.shutdown();
    let took = t0.elapsed();
    assert_eq!(results[0].1.last_exit.unwrap().code, Some(7));
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn hook_runs_before_acting_and_its_output_is_recorded() {
    let mut a = notify_app("hooked", &["--pings", "1"], 300);
    a.hook.command = vec![
        "sh".into(),
        "-c".into(),
        "echo dumping $SELFHEAL_APP $SELFHEAL_PID for $SELFHEAL_REASON".into(),
    ];
    let (sup, sink) = start(vec![a], None);
    let events = wait_kind(&sink, EventKind::AppRestart, 1);
    let hang = of(&events, EventKind::AppHang).pop().unwrap();
    let pid = pid_of(&hang);
    let hook = of(&events, EventKind::AppAction)
        .into_iter()
        .find(|e| e.details["action"] == "hook")
        .expect("hook action");
    assert_eq!(
        hook.details["result"]["output"].as_str().unwrap().trim(),
        format!("dumping hooked {pid} for watchdog")
    );
    // Order: hang, hook, stop signal, restart.
    let order: Vec<String> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::AppHang | EventKind::AppAction | EventKind::AppRestart
            )
        })
        .map(|e| format!("{}:{}", e.kind, e.details["action"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        order[..4],
        [
            "app_hang:",
            "app_action:hook",
            "app_action:signal",
            "app_restart:"
        ],
        "{order:?}"
    );
    sup.shutdown();
}

#[test]
fn dry_run_reports_the_hang_and_leaves_the_program_running() {
    let a = notify_app("dry", &["--pings", "1"], 300);
    let sink = std::sync::Arc::new(selfheal_event::MemorySink::new());
    let options = selfheal_supervise::Options {
        dry_run: true,
        ..selfheal_supervise::Options::default()
    };
    let sup =
        selfheal_supervise::Supervisor::start_with(vec![a], sink.clone() as _, options).unwrap();
    // The watchdog fires, is reported, re-arms and fires again.
    let events = wait_for(&sink, SOON, "two hangs", |e| {
        of(e, EventKind::AppHang).len() >= 2
    });
    let actions = of(&events, EventKind::AppAction);
    assert!(
        actions.iter().all(|a| a.details["dry_run"] == true),
        "{}",
        dump(&events)
    );
    assert_eq!(count(&events, EventKind::AppRestart), 0);
    let pid = pid_of(&of(&events, EventKind::AppStart)[0]);
    assert_eq!(sup.snapshot()[0].pid, Some(pid));
    sup.shutdown();
}

#[test]
fn notify_access_main_ignores_helpers_and_all_accepts_the_group() {
    // The main process is a shell; READY=1 comes from its child.
    let prog = tp("tp-notify");
    let script = format!("{prog} --pings 0 --interval 100; true");
    let mk = |name: &str, access| {
        let mut a = app(name, &["sh", "-c", &script]);
        a.notify.enabled = true;
        a.notify.ready_timeout = HumanDuration::from_millis(1500);
        a.notify.access = access;
        a.restart = selfheal_config::RestartPolicy::Never;
        a
    };
    let (sup, sink) = start(
        vec![
            mk("main-only", selfheal_config::NotifyAccess::Main),
            mk("whole-group", selfheal_config::NotifyAccess::All),
        ],
        None,
    );
    let events = wait_for(&sink, SOON, "the main-only app to time out", |e| {
        e.iter().any(|e| e.details["detector"] == "ready_timeout")
    });
    let app_of = |e: &selfheal_event::Event| e.culprit.as_ref().unwrap().app.clone().unwrap();
    let ready: Vec<String> = of(&events, EventKind::AppReady)
        .iter()
        .map(app_of)
        .collect();
    assert_eq!(ready, vec!["whole-group"], "{}", dump(&events));
    let hang = of(&events, EventKind::AppHang)
        .into_iter()
        .find(|e| e.details["detector"] == "ready_timeout")
        .unwrap();
    assert_eq!(app_of(&hang), "main-only");
    sup.shutdown();
}
