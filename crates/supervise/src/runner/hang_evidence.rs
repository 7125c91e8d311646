//! The `details` of app hang and action events and the `evidence` of a
//! hang found by a deadline or a probe (a missed READY=1, a missed
//! WATCHDOG=1, a failing probe), as types: stored in the events and read
//! by `/api/events` and the tests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::evidence::{HookRun, ThreadStacks};
use crate::HangDetector;

/// `details` of an `app_hang` event for a suspicion (not acted on alone).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct SuspectedDetails<'a> {
    /// The heuristic (`spin`, `deadlock`).
    pub detector: HangDetector,
    /// Always true.
    pub suspected: bool,
    pub evidence: &'a Value,
}

/// `details` of an `app_hang` event for a hang acted on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct HangDetails<'a> {
    /// `ready_timeout`, `watchdog`, `probe` or a heuristic.
    pub detector: HangDetector,
    /// Always false.
    pub suspected: bool,
    /// What confirmed a suspicion (`act_alone`, a probe); `null` for a
    /// detector that needs no confirmation.
    pub confirmed_by: Option<Value>,
    pub evidence: &'a Value,
    pub detected_unix_us: i64,
    /// The threads' kernel stacks, when `hook.thread_stacks`; else `null`.
    pub thread_stacks: Option<ThreadStacks>,
}

/// `confirmed_by` of a suspicion a failing probe confirmed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct ProbeConfirmation<'a> {
    pub probe: &'a str,
    pub detail: &'a str,
}

/// `confirmed_by` of a suspicion held when a probe failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct ProbeConfirmed<'a> {
    /// The probe's evidence.
    pub probe: &'a Value,
}

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

/// A run that never sent READY=1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct ReadyTimeoutEvidence {
    /// `notify.ready_timeout`, ms.
    pub ready_timeout_ms: u64,
    pub deadline_unix_us: i64,
    /// The last STATUS= the app sent, if any.
    pub status: Option<String>,
}

/// A run that stopped sending WATCHDOG=1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct WatchdogEvidence {
    pub watchdog_ms: u64,
    /// The last ping; `null` when none came since it became ready.
    pub last_ping_unix_us: Option<i64>,
    pub deadline_unix_us: i64,
    /// Suspicions held at the time (`spin`, `deadlock`).
    pub suspected: Vec<HangDetector>,
}

/// A run that asked to be treated as hung (`WATCHDOG=trigger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct WatchdogTriggerEvidence {
    /// Always [`WATCHDOG_TRIGGER`]: the message received.
    pub trigger: String,
}

/// The notify message a program sends to be treated as hung.
pub(super) const WATCHDOG_TRIGGER: &str = "WATCHDOG=trigger";

/// A probe that failed `failure_threshold` times in a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct ProbeEvidence<'a> {
    pub probe: &'a str,
    /// `exec`, `tcp` or `http`.
    pub kind: &'static str,
    /// The command, address or URL checked.
    pub target: String,
    pub consecutive_failures: u32,
    pub failure_threshold: u32,
    pub period_ms: u64,
    pub timeout_ms: u64,
    /// The most recent failures.
    pub failures: Vec<ProbeFailure<'a>>,
    /// When the failing check gave up: its start plus what it took.
    pub failed_at_unix_us: i64,
}

/// One failed probe check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct ProbeFailure<'a> {
    pub detail: &'a str,
    pub started_unix_us: i64,
    pub elapsed_ms: f64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use selfheal_event::details_value;

    /// The hang and action events carry exactly the documents the old
    /// `json!` literals built, unknown values `null`.
    #[test]
    fn hang_and_action_details_match_the_documented_json() {
        let ev = json!({"cpu_percent": 99.0});
        assert_eq!(
            details_value(&SuspectedDetails {
                detector: HangDetector::Spin,
                suspected: true,
                evidence: &ev
            }),
            json!({"detector": "spin", "suspected": true, "evidence": {"cpu_percent": 99.0}})
        );
        let probe = details_value(&ProbeConfirmation {
            probe: "http",
            detail: "timed out",
        });
        assert_eq!(probe, json!({"probe": "http", "detail": "timed out"}));
        assert_eq!(
            details_value(&ProbeConfirmed { probe: &ev }),
            json!({"probe": {"cpu_percent": 99.0}})
        );
        assert_eq!(
            details_value(&HangDetails {
                detector: HangDetector::Spin,
                suspected: false,
                confirmed_by: Some(probe),
                evidence: &ev,
                detected_unix_us: 5,
                thread_stacks: None,
            }),
            json!({"detector": "spin", "suspected": false,
                   "confirmed_by": {"probe": "http", "detail": "timed out"},
                   "evidence": {"cpu_percent": 99.0}, "detected_unix_us": 5,
                   "thread_stacks": null})
        );
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
        assert_eq!(
            details_value(&ReadyTimeoutEvidence {
                ready_timeout_ms: 5000,
                deadline_unix_us: 7,
                status: None,
            }),
            json!({"ready_timeout_ms": 5000, "deadline_unix_us": 7, "status": null})
        );
        assert_eq!(
            details_value(&WatchdogEvidence {
                watchdog_ms: 1000,
                last_ping_unix_us: None,
                deadline_unix_us: 9,
                suspected: vec![HangDetector::Spin],
            }),
            json!({"watchdog_ms": 1000, "last_ping_unix_us": null, "deadline_unix_us": 9,
                   "suspected": ["spin"]})
        );
        assert_eq!(
            details_value(&ProbeEvidence {
                probe: "http",
                kind: "http",
                target: "http://127.0.0.1:8080/".into(),
                consecutive_failures: 3,
                failure_threshold: 3,
                period_ms: 1000,
                timeout_ms: 500,
                failures: vec![ProbeFailure {
                    detail: "timed out",
                    started_unix_us: 1,
                    elapsed_ms: 500.0,
                }],
                failed_at_unix_us: 500_001,
            }),
            json!({
                "probe": "http", "kind": "http", "target": "http://127.0.0.1:8080/",
                "consecutive_failures": 3, "failure_threshold": 3, "period_ms": 1000,
                "timeout_ms": 500,
                "failures": [{"detail": "timed out", "started_unix_us": 1, "elapsed_ms": 500.0}],
                "failed_at_unix_us": 500_001,
            })
        );
    }

    /// A WATCHDOG=trigger hang's evidence is the old document, and the
    /// old document reads back.
    #[test]
    fn watchdog_trigger_evidence_round_trips() {
        let old = json!({"trigger": "WATCHDOG=trigger"});
        let typed = WatchdogTriggerEvidence {
            trigger: WATCHDOG_TRIGGER.into(),
        };
        assert_eq!(details_value(&typed), old);
        assert_eq!(
            serde_json::from_value::<WatchdogTriggerEvidence>(old).unwrap(),
            typed
        );
    }
}
