//! `app_action` details: the documents the old `json!` literals built,
//! written typed and read back typed through the JSON `/api/events` and
//! `selfheal events --json` print, and older documents read back.

use serde_json::json;

use selfheal_event::{details_value, Severity, Source};

use super::*;

/// One action of every shape, as the runner writes them.
fn every_action() -> Vec<StoredAppAction> {
    vec![
        StoredAppAction::Hook(HookDetails {
            action: "hook".into(),
            result: HookRun::NotStarted {
                command: vec!["dump".into()],
                error: "ENOENT".into(),
            },
        }),
        StoredAppAction::Hook(HookDetails {
            action: "hook".into(),
            result: HookRun::Ran {
                command: vec!["dump".into(), "--all".into()],
                status: Some("exit 0".into()),
                timed_out: false,
                elapsed_ms: 12,
                output: "ok\n".into(),
            },
        }),
        StoredAppAction::StepDeclined(StepDeclined {
            action: "rollback".into(),
            outcome: StepResult::Declined,
            reason: "no checkpoint".into(),
        }),
        StoredAppAction::StepRecovered(StepRecovered {
            action: "rollback".into(),
            outcome: StepResult::Recovered,
            detail: json!({"checkpoint_age_ms": 300}),
        }),
        StoredAppAction::DryRunSignal(DryRunSignal {
            action: "signal".into(),
            signal: "SIGTERM".into(),
            dry_run: true,
        }),
        StoredAppAction::Signal(SignalDetails {
            action: "signal".into(),
            signal: "SIGTERM".into(),
            scope: KillMode::Group,
            reason: "hang (probe)".into(),
            grace_ms: 5000,
            error: None,
        }),
        StoredAppAction::Kill(KillDetails {
            action: "kill".into(),
            signal: "SIGKILL".into(),
            scope: KillMode::Process,
            error: Some("ESRCH".into()),
        }),
    ]
}

fn value(a: &StoredAppAction) -> Value {
    match a {
        StoredAppAction::Hook(d) => details_value(d),
        StoredAppAction::StepDeclined(d) => details_value(d),
        StoredAppAction::StepRecovered(d) => details_value(d),
        StoredAppAction::DryRunSignal(d) => details_value(d),
        StoredAppAction::Signal(d) => details_value(d),
        StoredAppAction::Kill(d) => details_value(d),
    }
}

/// Every action, written typed and printed as the API and `selfheal
/// events --json` print it, reads back typed and equal.
#[test]
fn every_app_action_reads_back_through_the_json() {
    for a in every_action() {
        let e = Event::now(EventKind::AppAction, Severity::Info, Source::App, "m")
            .with_details(value(&a));
        let line = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(StoredAppAction::from_event(&back).unwrap(), a, "{line}");
    }
}

/// The action events carry exactly the documents the old `json!`
/// literals built, unknown values `null`; those documents, as an older
/// selfheal stored them, read back.
#[test]
fn action_details_match_the_documented_json_and_read_back() {
    let old = [
        json!({"action": "hook", "result": {"command": ["dump"], "error": "ENOENT"}}),
        json!({"action": "hook", "result": {"command": ["dump", "--all"], "status": "exit 0",
                                            "timed_out": false, "elapsed_ms": 12,
                                            "output": "ok\n"}}),
        json!({"action": "rollback", "outcome": "declined", "reason": "no checkpoint"}),
        json!({"action": "rollback", "outcome": "recovered",
               "detail": {"checkpoint_age_ms": 300}}),
        json!({"action": "signal", "signal": "SIGTERM", "dry_run": true}),
        json!({"action": "signal", "signal": "SIGTERM", "scope": "group",
               "reason": "hang (probe)", "grace_ms": 5000, "error": null}),
        json!({"action": "kill", "signal": "SIGKILL", "scope": "process", "error": "ESRCH"}),
    ];
    for (a, doc) in every_action().iter().zip(&old) {
        assert_eq!(&value(a), doc);
        assert_eq!(&StoredAppAction::from_details(doc).unwrap(), a);
    }
}

/// What is not an app action, or not a shape the runner writes, is an
/// error that says so.
#[test]
fn other_shapes_are_refused() {
    let hang = Event::now(EventKind::AppHang, Severity::Info, Source::App, "m");
    assert!(matches!(
        StoredAppAction::from_event(&hang),
        Err(ReadError::NotAnAction {
            kind: EventKind::AppHang,
            ..
        })
    ));
    let err = StoredAppAction::from_details(&json!({"action": "pray"})).unwrap_err();
    assert!(err.to_string().contains("pray"), "{err}");
    let err = StoredAppAction::from_details(&json!({"action": "kill", "signal": "SIGKILL",
                                                    "scope": "galaxy", "error": null}))
    .unwrap_err();
    assert!(err.to_string().contains("galaxy"), "{err}");
}
