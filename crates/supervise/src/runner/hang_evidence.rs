//! The `evidence` of an app hang found by a deadline or a probe (a missed
//! READY=1, a missed WATCHDOG=1, a failing probe), as types: stored in the
//! hang event's details and read by `/api/events` and the tests.

use serde::Serialize;

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
    /// Suspicions held at the time (`cpu_spin`, …).
    pub suspected: Vec<&'static str>,
}

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

    /// Each document is exactly the JSON the old `json!` literals built,
    /// unknown values `null`.
    #[test]
    fn hang_evidence_matches_the_documented_json() {
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
                suspected: vec!["cpu_spin"],
            }),
            json!({"watchdog_ms": 1000, "last_ping_unix_us": null, "deadline_unix_us": 9,
                   "suspected": ["cpu_spin"]})
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
}
