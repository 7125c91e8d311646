//! Lifecycle details: exactly the documents the old `json!` literals
//! built, written typed and read back typed through the JSON
//! `/api/events` and `selfheal events --json` print; older documents
//! read back.

use serde_json::json;

use selfheal_event::{details_value, Severity, Source};

use super::*;
use crate::streams::{Stream, StreamAction};

fn ended() -> Ended {
    Ended {
        pid: 6,
        exit_code: None,
        signal: Some(11),
        signal_name: Some("SIGSEGV".into()),
        core_dumped: true,
        uptime_ms: 50,
        stderr_tail: vec!["boom".into()],
    }
}

fn launch_failed(shell_status: Option<Option<i32>>) -> LaunchFailed {
    LaunchFailed {
        launch_error: "no such file".into(),
        shell_status,
    }
}

/// One event of every kind and shape, typed, with the document the old
/// `json!` literals built for it.
fn every_event() -> Vec<(EventKind, StoredAppLifecycle, Value)> {
    let ended_json = json!({"pid": 6, "exit_code": null, "signal": 11,
        "signal_name": "SIGSEGV", "core_dumped": true, "uptime_ms": 50,
        "stderr_tail": ["boom"]});
    vec![
        (
            EventKind::AppStart,
            StoredAppLifecycle::Started(Started {
                pid: 3,
                command: vec!["sh".into(), "-c".into()],
            }),
            json!({"pid": 3, "command": ["sh", "-c"]}),
        ),
        (
            EventKind::AppReady,
            StoredAppLifecycle::Ready(Ready {
                pid: 3,
                startup_ms: 250,
            }),
            json!({"pid": 3, "startup_ms": 250}),
        ),
        (
            EventKind::AppRestart,
            StoredAppLifecycle::Restarted(Restarted {
                pid: 4,
                attempt: 1,
                backoff_ms: 10,
                cause: EndCause::Crash,
                previous: LastRun::LaunchFailed(launch_failed(None)),
                restart_output: RestartOutput::Keep,
                output: vec![StreamReset {
                    stream: Stream::Stdout,
                    path: "/o".into(),
                    action: StreamAction::Kept { bytes: 8 },
                    error: None,
                }],
            }),
            json!({"pid": 4, "attempt": 1, "backoff_ms": 10, "cause": "crash",
                   "previous": {"launch_error": "no such file"}, "restart_output": "keep",
                   "output": [{"stream": "stdout", "path": "/o", "action": "kept", "bytes": 8}]}),
        ),
        (
            EventKind::AppRestart,
            StoredAppLifecycle::Restarted(Restarted {
                pid: 7,
                attempt: 2,
                backoff_ms: 200,
                cause: EndCause::CleanExit,
                previous: LastRun::Ended(ended()),
                restart_output: RestartOutput::Truncate,
                output: vec![],
            }),
            json!({"pid": 7, "attempt": 2, "backoff_ms": 200, "cause": "clean_exit",
                   "previous": ended_json, "restart_output": "truncate", "output": []}),
        ),
        (
            EventKind::AppRestart,
            StoredAppLifecycle::Retried(Retried {
                pid: 5,
                cause: RetryCause::RetryAfterGaveUp,
                restart_output: RestartOutput::Keep,
                output: vec![],
            }),
            json!({"pid": 5, "cause": "retry_after_gave_up", "restart_output": "keep",
                   "output": []}),
        ),
        (
            EventKind::AppCrash,
            StoredAppLifecycle::LaunchFailed(launch_failed(Some(None))),
            json!({"launch_error": "no such file", "shell_status": null}),
        ),
        (
            EventKind::AppCrash,
            StoredAppLifecycle::LaunchFailed(launch_failed(Some(Some(127)))),
            json!({"launch_error": "no such file", "shell_status": 127}),
        ),
        (
            EventKind::AppCrash,
            StoredAppLifecycle::Crashed(ended()),
            ended_json.clone(),
        ),
        (
            EventKind::AppGaveUp,
            StoredAppLifecycle::GaveUp(GaveUp {
                restarts: 5,
                window_ms: 60_000,
                retry_after_ms: 0,
                last: LastRun::LaunchFailed(launch_failed(None)),
            }),
            json!({"restarts": 5, "window_ms": 60_000, "retry_after_ms": 0,
                   "last": {"launch_error": "no such file"}}),
        ),
        (
            EventKind::AppExit,
            StoredAppLifecycle::Finished(Finished {
                reason: "stopped on request".into(),
                last_exit: None,
                restarts: 2,
            }),
            json!({"reason": "stopped on request", "last_exit": null, "restarts": 2}),
        ),
        (
            EventKind::AppExit,
            StoredAppLifecycle::Finished(Finished {
                reason: "restart policy never does not restart it".into(),
                last_exit: Some(ExitStatus::killed(9, false)),
                restarts: 0,
            }),
            json!({"reason": "restart policy never does not restart it",
                   "last_exit": {"code": null, "signal": 9, "core_dumped": false},
                   "restarts": 0}),
        ),
    ]
}

fn value(s: &StoredAppLifecycle) -> Value {
    match s {
        StoredAppLifecycle::Started(d) => details_value(d),
        StoredAppLifecycle::Ready(d) => details_value(d),
        StoredAppLifecycle::Restarted(d) => details_value(d),
        StoredAppLifecycle::Retried(d) => details_value(d),
        StoredAppLifecycle::LaunchFailed(d) => details_value(d),
        StoredAppLifecycle::Crashed(d) => details_value(d),
        StoredAppLifecycle::GaveUp(d) => details_value(d),
        StoredAppLifecycle::Finished(d) => details_value(d),
    }
}

/// Each document is exactly the JSON the old `json!` literals built
/// (`shell_status` only on the `app_crash` of a launch failure, `null`
/// when the shell gave none; unknown values `null`), and that document,
/// as an older selfheal stored it, reads back typed.
#[test]
fn lifecycle_details_match_the_documented_json_and_read_back() {
    for (kind, typed, old) in every_event() {
        assert_eq!(value(&typed), old, "{kind}");
        let e = Event::now(kind, Severity::Info, Source::App, "m").with_details(old);
        assert_eq!(StoredAppLifecycle::from_event(&e).unwrap(), typed, "{kind}");
    }
}

/// Every event, written typed and printed as the API and `selfheal
/// events --json` print it, reads back typed and equal.
#[test]
fn every_lifecycle_event_reads_back_through_the_json() {
    for (kind, typed, _) in every_event() {
        let e = Event::now(kind, Severity::Info, Source::App, "m").with_details(value(&typed));
        let line = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(
            StoredAppLifecycle::from_event(&back).unwrap(),
            typed,
            "{line}"
        );
    }
}

/// Other kinds, and shapes a kind does not have, are errors that say so.
#[test]
fn other_shapes_are_refused() {
    let hang = Event::now(EventKind::AppHang, Severity::Info, Source::App, "m");
    assert!(matches!(
        StoredAppLifecycle::from_event(&hang),
        Err(ReadError::NotLifecycle {
            kind: EventKind::AppHang,
            ..
        })
    ));
    let e = Event::now(EventKind::AppRestart, Severity::Info, Source::App, "m").with_details(
        json!({"pid": 4, "attempt": 1, "backoff_ms": 10, "cause": "boredom",
               "previous": {"launch_error": "x"}, "restart_output": "keep", "output": []}),
    );
    let err = StoredAppLifecycle::from_event(&e).unwrap_err();
    assert!(err.to_string().contains("boredom"), "{err}");
}
