//! The `details` of `app_action` events after a hang (the hook, the
//! recovery steps, the stop signals), as types: stored in the events and
//! read by `/api/events` and the tests. The `app_hang` event's own
//! details are in [`crate::app_hang`].

use serde::Serialize;
use serde_json::Value;

use crate::evidence::HookRun;

/// `details` of the hook run before acting (`app_action`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct HookDetails {
    /// Always `hook`.
    pub action: &'static str,
    pub result: HookRun,
}

/// `details` of a recovery step that declined (`app_action`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct StepDeclined<'a> {
    pub action: &'a str,
    /// Always `declined`.
    pub outcome: &'static str,
    pub reason: &'a str,
}

/// `details` of a recovery step that recovered the app (`app_action`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct StepRecovered<'a> {
    pub action: &'a str,
    /// Always `recovered`.
    pub outcome: &'static str,
    pub detail: &'a Value,
}

/// `details` of the signal a dry run would send (`app_action`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct DryRunSignal<'a> {
    /// Always `signal`.
    pub action: &'static str,
    pub signal: &'a str,
    /// Always true.
    pub dry_run: bool,
}

/// `details` of the stop signal sent (`app_action`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct SignalDetails<'a> {
    /// Always `signal`.
    pub action: &'static str,
    pub signal: &'a str,
    /// `group` or `process`.
    pub scope: &'static str,
    pub reason: &'a str,
    pub grace_ms: u64,
    /// Why sending failed; `null` when it was sent.
    pub error: Option<String>,
}

/// `details` of the SIGKILL after the grace period (`app_action`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct KillDetails {
    /// Always `kill`.
    pub action: &'static str,
    /// Always `SIGKILL`.
    pub signal: &'static str,
    /// `group` or `process`.
    pub scope: &'static str,
    /// Why sending failed; `null` when it was sent.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use selfheal_event::details_value;

    /// The action events carry exactly the documents the old `json!`
    /// literals built, unknown values `null`.
    #[test]
    fn action_details_match_the_documented_json() {
        let ev = json!({"cpu_percent": 99.0});
        assert_eq!(
            details_value(&HookDetails {
                action: "hook",
                result: HookRun::NotStarted {
                    command: vec!["dump".into()],
                    error: "ENOENT".into()
                }
            }),
            json!({"action": "hook", "result": {"command": ["dump"], "error": "ENOENT"}})
        );
        assert_eq!(
            details_value(&StepDeclined {
                action: "rollback",
                outcome: "declined",
                reason: "no checkpoint"
            }),
            json!({"action": "rollback", "outcome": "declined", "reason": "no checkpoint"})
        );
        assert_eq!(
            details_value(&StepRecovered {
                action: "rollback",
                outcome: "recovered",
                detail: &ev
            }),
            json!({"action": "rollback", "outcome": "recovered", "detail": {"cpu_percent": 99.0}})
        );
        assert_eq!(
            details_value(&DryRunSignal {
                action: "signal",
                signal: "SIGTERM",
                dry_run: true
            }),
            json!({"action": "signal", "signal": "SIGTERM", "dry_run": true})
        );
        assert_eq!(
            details_value(&SignalDetails {
                action: "signal",
                signal: "SIGTERM",
                scope: "group",
                reason: "hang (probe)",
                grace_ms: 5000,
                error: None,
            }),
            json!({"action": "signal", "signal": "SIGTERM", "scope": "group",
                   "reason": "hang (probe)", "grace_ms": 5000, "error": null})
        );
        assert_eq!(
            details_value(&KillDetails {
                action: "kill",
                signal: "SIGKILL",
                scope: "process",
                error: Some("ESRCH".into()),
            }),
            json!({"action": "kill", "signal": "SIGKILL", "scope": "process", "error": "ESRCH"})
        );
    }
}
