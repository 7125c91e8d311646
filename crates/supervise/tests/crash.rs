//! Crash detection and restart with real programs: death by SIGSEGV, exit
//! status 1, and a crash loop that trips the breaker.

mod common;

use common::*;
use selfheal_config::{HumanDuration, RestartPolicy};
use selfheal_event::{EventKind, Severity};
use selfheal_supervise::Phase;

#[test]
fn sigsegv_is_reported_with_stderr_tail_and_restarted() {
    let sb = sandbox("sup-segv");
    let crash = tp("tp-crash");
    let a = app(
        "segv",
        &[&crash, "signal", "SEGV", "--after", "100", "--lines", "4"],
    );
    let (sup, sink) = start(vec![a], sb.as_ref());
    let events = wait_kind(&sink, EventKind::AppRestart, 1);

    let start = &of(&events, EventKind::AppStart)[0];
    let crash = &of(&events, EventKind::AppCrash)[0];
    assert_eq!(crash.severity, Severity::Critical);
    assert_eq!(pid_of(crash), pid_of(start));
    assert_eq!(crash.culprit.as_ref().unwrap().app.as_deref(), Some("segv"));
    let d = &crash.details;
    assert_eq!(d["signal"], libc::SIGSEGV);
    assert_eq!(d["signal_name"], "SIGSEGV");
    assert!(d["exit_code"].is_null());
    assert!(d["core_dumped"].is_boolean());
    assert!(
        crash.message.contains("killed by SIGSEGV"),
        "{}",
        crash.message
    );
    // The last lines the program wrote to stderr, in order.
    let tail: Vec<&str> = d["stderr_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        tail.last(),
        Some(&"tp-crash: about to signal SEGV"),
        "{tail:?}"
    );
    assert!(
        tail.contains(&"tp-crash: line 4 before the crash"),
        "{tail:?}"
    );

    let restart = &of(&events, EventKind::AppRestart)[0];
    assert_ne!(pid_of(restart), pid_of(start));
    assert_eq!(restart.details["cause"], "crash");
    assert_eq!(restart.details["attempt"], 1);
    assert_eq!(restart.details["previous"]["signal"], libc::SIGSEGV);

    let status = &sup.snapshot()[0];
    assert!(status.restarts >= 1 && status.crashes >= 1, "{status:?}");
    let mut metrics = String::new();
    sup.collector()
        .collect(&mut selfheal_metrics::Encoder::new(&mut metrics));
    assert!(
        metrics.contains("selfheal_app_last_exit_signal{app=\"segv\"} 11"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("selfheal_app_restarts_total{app=\"segv\"} 0"),
        "{metrics}"
    );
    // Every restart's crash-to-restart time is in the histogram (read
    // after the counter, so at most one restart ahead of it).
    let value = |prefix: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
    };
    let restarts = value("selfheal_app_restarts_total{app=\"segv\"} ");
    let timed = value("selfheal_app_crash_to_restart_seconds_count{app=\"segv\"} ");
    assert!(
        restarts >= 1 && (restarts..=restarts + 1).contains(&timed),
        "{metrics}"
    );
    sup.shutdown();
}

#[test]
fn exit_status_1_ends_supervision_under_restart_never() {
    let crash = tp("tp-crash");
    let mut a = app("exit1", &[&crash, "exit", "1"]);
    a.restart = RestartPolicy::Never;
    let (sup, sink) = start(vec![a], None);
    let results = sup.wait();
    let (name, finish) = &results[0];
    assert_eq!(name, "exit1");
    assert_eq!(finish.last_exit.unwrap().code, Some(1));
    assert_eq!(finish.shell_status(), 1);
    let events = sink.events();
    let crash = &of(&events, EventKind::AppCrash)[0];
    assert_eq!(crash.details["exit_code"], 1);
    assert!(crash.details["signal"].is_null());
    assert!(
        crash.message.contains("exited with status 1"),
        "{}",
        crash.message
    );
    assert_eq!(
        count(&events, EventKind::AppRestart),
        0,
        "{}",
        dump(&events)
    );
    let exit = &of(&events, EventKind::AppExit)[0];
    assert!(
        exit.message.contains("restart policy never"),
        "{}",
        exit.message
    );
}

#[test]
fn clean_exit_is_not_a_crash_and_on_failure_does_not_restart() {
    let crash = tp("tp-crash");
    let a = app("clean", &[&crash, "exit", "0"]);
    let (sup, sink) = start(vec![a], None);
    let results = sup.wait();
    assert_eq!(results[0].1.shell_status(), 0);
    let events = sink.events();
    assert_eq!(count(&events, EventKind::AppCrash), 0, "{}", dump(&events));
    assert_eq!(count(&events, EventKind::AppExit), 1, "{}", dump(&events));
}

#[test]
fn crash_loop_backs_off_then_gives_up() {
    let sb = sandbox("sup-loop");
    let crash = tp("tp-crash");
    let mut a = app("loop", &[&crash, "exit", "1", "--lines", "0"]);
    a.crash_loop.max_restarts = 3;
    a.backoff.initial = HumanDuration::from_millis(50);
    a.backoff.max = HumanDuration::from_millis(150);
    let (sup, sink) = start(vec![a], sb.as_ref());
    let events = wait_kind(&sink, EventKind::AppGaveUp, 1);
    assert_eq!(count(&events, EventKind::AppCrash), 4, "{}", dump(&events));
    let restarts = of(&events, EventKind::AppRestart);
    let backoffs: Vec<u64> = restarts
        .iter()
        .map(|e| e.details["backoff_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(backoffs, vec![50, 100, 150], "{}", dump(&events));
    let gave_up = &of(&events, EventKind::AppGaveUp)[0];
    assert_eq!(gave_up.severity, Severity::Critical);
    assert_eq!(gave_up.details["restarts"], 3);
    assert_eq!(gave_up.details["last"]["exit_code"], 1);
    // The backoff was honoured between a crash and the next start.
    let crashes = of(&events, EventKind::AppCrash);
    for (c, r) in crashes.iter().zip(&restarts) {
        let gap = r.time_unix_ms - c.time_unix_ms;
        let want = r.details["backoff_ms"].as_i64().unwrap();
        assert!(
            gap >= want - 2,
            "restart {gap} ms after the crash, backoff {want} ms"
        );
    }
    let results = sup.wait();
    assert!(results[0].1.gave_up);
    assert_eq!(results[0].1.shell_status(), 1);
}

#[test]
fn gave_up_state_shows_in_status_until_shutdown() {
    let crash = tp("tp-crash");
    let mut a = app("quitter", &[&crash, "exit", "3", "--lines", "0"]);
    a.crash_loop.max_restarts = 1;
    a.crash_loop.retry_after = HumanDuration::from_secs(3600);
    let (sup, sink) = start(vec![a], None);
    wait_kind(&sink, EventKind::AppGaveUp, 1);
    let st = &sup.snapshot()[0];
    assert_eq!(st.state, Phase::GaveUp);
    assert_eq!(st.last_exit.unwrap().code, Some(3));
    assert_eq!(st.pid, None);
    let mut metrics = String::new();
    sup.collector()
        .collect(&mut selfheal_metrics::Encoder::new(&mut metrics));
    assert!(
        metrics.contains("selfheal_app_gave_up{app=\"quitter\"} 1"),
        "{metrics}"
    );
    let results = sup.shutdown();
    assert_eq!(results[0].1.last_exit.unwrap().code, Some(3));
}

#[test]
fn missing_program_fails_fast_with_127() {
    let a = app("ghost", &["/nonexistent/selfheal-ghost"]);
    let (sup, sink) = start(vec![a], None);
    let results = sup.wait();
    assert_eq!(results[0].1.shell_status(), 127);
    let events = sink.events();
    let crash = &of(&events, EventKind::AppCrash)[0];
    assert!(crash.details["launch_error"]
        .as_str()
        .unwrap()
        .contains("not found"));
    assert_eq!(count(&events, EventKind::AppRestart), 0);
}

#[test]
fn a_healthy_run_clears_the_breaker_and_the_backoff() {
    // Each run lasts 400 ms, longer than healthy_after: the single restart
    // the breaker allows is forgiven every time.
    let crash = tp("tp-crash");
    let mut a = app(
        "healthy",
        &[&crash, "exit", "1", "--after", "400", "--lines", "0"],
    );
    a.crash_loop.max_restarts = 1;
    a.crash_loop.healthy_after = HumanDuration::from_millis(200);
    a.backoff.initial = HumanDuration::from_millis(30);
    let (sup, sink) = start(vec![a], None);
    let events = wait_kind(&sink, EventKind::AppRestart, 3);
    assert_eq!(count(&events, EventKind::AppGaveUp), 0, "{}", dump(&events));
    for r in of(&events, EventKind::AppRestart) {
        assert_eq!(r.details["attempt"], 1, "{}", dump(&events));
        assert_eq!(r.details["backoff_ms"], 30, "{}", dump(&events));
    }
    sup.shutdown();
}

#[test]
fn restart_always_restarts_a_clean_exit() {
    let crash = tp("tp-crash");
    let mut a = app(
        "always",
        &[&crash, "exit", "0", "--after", "50", "--lines", "0"],
    );
    a.restart = RestartPolicy::Always;
    let (sup, sink) = start(vec![a], None);
    let events = wait_kind(&sink, EventKind::AppRestart, 2);
    assert_eq!(count(&events, EventKind::AppCrash), 0, "{}", dump(&events));
    let r = &of(&events, EventKind::AppRestart)[0];
    assert_eq!(r.details["cause"], "clean_exit");
    assert_eq!(r.details["previous"]["exit_code"], 0);
    sup.shutdown();
}

#[test]
fn missing_working_directory_is_named_and_fails_fast() {
    let mut a = app("nodir", &["true"]);
    a.cwd = Some("/nonexistent/selfheal-dir".into());
    let (sup, sink) = start(vec![a], None);
    let results = sup.wait();
    assert!(results[0].1.launch_failure.is_some());
    let events = sink.events();
    let crash = &of(&events, EventKind::AppCrash)[0];
    let msg = crash.details["launch_error"].as_str().unwrap();
    assert!(
        msg.contains("working directory /nonexistent/selfheal-dir"),
        "{msg}"
    );
}
