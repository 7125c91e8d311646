//! The `details` of the events a supervised program's lifecycle writes
//! (started, restarted, could not start, ended, given up on, supervision
//! over), as types: stored in the events and read by `/api/events`,
//! `selfheal status` and the tests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::child::ExitStatus;
use crate::streams::StreamReset;

/// `details` of `app_start`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Started<'a> {
    pub pid: i32,
    pub command: &'a [String],
}

/// `details` of `app_ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Ready {
    pub pid: i32,
    /// From the start to READY=1.
    pub startup_ms: u64,
}

/// `details` of `app_restart`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Restarted<'a> {
    pub pid: i32,
    /// Restarts since the program was last healthy.
    pub attempt: u32,
    pub backoff_ms: u64,
    /// Why the last run ended (`crash`, `hang`, …).
    pub cause: &'static str,
    /// The last run's end (`Ended` or `LaunchFailed`).
    pub previous: &'a Value,
    /// `restart_output`.
    pub restart_output: &'static str,
    /// What was done with the failed run's output.
    pub output: &'a [StreamReset],
}

/// `details` of `app_restart` after giving up and waiting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Retried<'a> {
    pub pid: i32,
    /// Always `retry_after_gave_up`.
    pub cause: &'static str,
    pub restart_output: &'static str,
    pub output: &'a [StreamReset],
}

/// `details` of a program that could not be started (`app_crash`, with
/// `shell_status`) and the `previous` of the restart after it (without).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct LaunchFailed<'a> {
    pub launch_error: &'a str,
    /// The shell's exit status for the error (126, 127, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell_status: Option<Option<i32>>,
}

/// `details` of a run that ended (`app_crash`, and `previous` of the
/// restart).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Ended<'a> {
    pub pid: i32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub signal_name: Option<String>,
    pub core_dumped: bool,
    pub uptime_ms: u64,
    /// The last lines of its stderr.
    pub stderr_tail: &'a [String],
}

/// `details` of `app_gave_up`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct GaveUp<'a> {
    pub restarts: u32,
    pub window_ms: u64,
    /// When supervision tries again; 0: never.
    pub retry_after_ms: u64,
    /// The last run's end.
    pub last: &'a Value,
}

/// `details` of `app_exit` (supervision over).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Finished<'a> {
    pub reason: &'a str,
    /// The last run's exit status, if one ran.
    pub last_exit: Option<ExitStatus>,
    /// Restarts over the whole supervision.
    pub restarts: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use selfheal_event::details_value;

    /// Each document is exactly the JSON the old `json!` literals built:
    /// `shell_status` only on the `app_crash` of a launch failure (`null`
    /// when the shell gave none), unknown values `null`.
    #[test]
    fn lifecycle_details_match_the_documented_json() {
        let cmd = vec!["sh".to_string(), "-c".to_string()];
        assert_eq!(
            details_value(&Started {
                pid: 3,
                command: &cmd
            }),
            json!({"pid": 3, "command": ["sh", "-c"]})
        );
        let prev = json!({"launch_error": "no such file"});
        let out = vec![StreamReset {
            stream: crate::streams::Stream::Stdout,
            path: "/o".into(),
            action: crate::streams::StreamAction::Kept { bytes: 8 },
            error: None,
        }];
        assert_eq!(
            details_value(&Restarted {
                pid: 4,
                attempt: 1,
                backoff_ms: 10,
                cause: "crash",
                previous: &prev,
                restart_output: "keep",
                output: &out,
            }),
            json!({"pid": 4, "attempt": 1, "backoff_ms": 10, "cause": "crash",
                   "previous": {"launch_error": "no such file"}, "restart_output": "keep",
                   "output": [{"stream": "stdout", "path": "/o", "action": "kept", "bytes": 8}]})
        );
        assert_eq!(
            details_value(&Retried {
                pid: 5,
                cause: "retry_after_gave_up",
                restart_output: "keep",
                output: &[],
            }),
            json!({"pid": 5, "cause": "retry_after_gave_up", "restart_output": "keep",
                   "output": []})
        );
        assert_eq!(
            details_value(&LaunchFailed {
                launch_error: "no such file",
                shell_status: Some(None),
            }),
            json!({"launch_error": "no such file", "shell_status": null})
        );
        assert_eq!(
            details_value(&LaunchFailed {
                launch_error: "no such file",
                shell_status: None,
            }),
            json!({"launch_error": "no such file"})
        );
        let tail = vec!["boom".to_string()];
        assert_eq!(
            details_value(&Ended {
                pid: 6,
                exit_code: None,
                signal: Some(11),
                signal_name: Some("SIGSEGV".into()),
                core_dumped: true,
                uptime_ms: 50,
                stderr_tail: &tail,
            }),
            json!({"pid": 6, "exit_code": null, "signal": 11, "signal_name": "SIGSEGV",
                   "core_dumped": true, "uptime_ms": 50, "stderr_tail": ["boom"]})
        );
        assert_eq!(
            details_value(&GaveUp {
                restarts: 5,
                window_ms: 60_000,
                retry_after_ms: 0,
                last: &prev,
            }),
            json!({"restarts": 5, "window_ms": 60_000, "retry_after_ms": 0,
                   "last": {"launch_error": "no such file"}})
        );
        assert_eq!(
            details_value(&Finished {
                reason: "stopped on request",
                last_exit: None,
                restarts: 2,
            }),
            json!({"reason": "stopped on request", "last_exit": null, "restarts": 2})
        );
    }

    /// `app_ready` carries the old document, and the old document reads
    /// back.
    #[test]
    fn ready_details_round_trip() {
        let old = json!({"pid": 3, "startup_ms": 250});
        let typed = Ready {
            pid: 3,
            startup_ms: 250,
        };
        assert_eq!(details_value(&typed), old);
        assert_eq!(serde_json::from_value::<Ready>(old).unwrap(), typed);
    }
}
