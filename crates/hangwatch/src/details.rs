//! The `details` documents of the events the pipeline thread writes about
//! its inputs (a stalled CPU, a watchdog heartbeat, a task held too long),
//! as types: what the store, `/api/events` and the lab read.

use serde::Serialize;

/// A CPU's stall canary stopped running (`alert`, rule `cpu_stall`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct StallDetails {
    /// The CPU.
    pub cpu: u32,
    /// How long its canary had not run, ms.
    pub stalled_ms: u64,
    /// `stall.bound`, ms.
    pub bound_ms: u64,
    /// In a guest: how much of it the host's checkpoint stops explain, ms
    /// (absent when the host tells none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_stopped_ms: Option<u64>,
    /// In a guest: how much of it its vCPU waited for a host CPU, ms
    /// (absent when none, or the host tells none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_waited_ms: Option<u64>,
}

/// A watchdog event (kind `watchdog`), tagged by `state`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum WatchdogDetails<'a> {
    /// A detector's heartbeat went stale.
    Missed {
        /// Whose heartbeat.
        component: &'static str,
        /// Its age, ms; `null` when it never beat.
        age_ms: Option<u64>,
        /// The limit it exceeded, ms.
        max_age_ms: u64,
    },
    /// It beats again.
    Recovered {
        /// Whose heartbeat.
        component: &'static str,
        /// How long it had been stale, ms.
        stale_ms: u64,
    },
    /// The hardware watchdog device failed.
    DeviceError {
        /// What failed.
        error: &'a str,
    },
}

/// A task held in D state past `heavy.held_alert_after` (`alert`, rule
/// `held_too_long`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct HeldDetails {
    /// How long it has been stuck, ms.
    pub stuck_ms: u64,
    /// `heavy.held_alert_after`, ms.
    pub held_alert_after_ms: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use selfheal_event::details_value;

    /// Each document is exactly the one the old `json!` literal built.
    #[test]
    fn input_event_details_match_the_documented_json() {
        let stall = StallDetails {
            cpu: 2,
            stalled_ms: 1200,
            bound_ms: 1000,
            host_stopped_ms: None,
            host_waited_ms: None,
        };
        assert_eq!(
            details_value(&stall),
            json!({"cpu": 2, "stalled_ms": 1200, "bound_ms": 1000})
        );
        let in_guest = StallDetails {
            host_stopped_ms: Some(180),
            ..stall.clone()
        };
        assert_eq!(
            details_value(&in_guest),
            json!({"cpu": 2, "stalled_ms": 1200, "bound_ms": 1000, "host_stopped_ms": 180})
        );
        let starved = StallDetails {
            host_stopped_ms: Some(0),
            host_waited_ms: Some(450),
            ..stall
        };
        assert_eq!(
            details_value(&starved),
            json!({"cpu": 2, "stalled_ms": 1200, "bound_ms": 1000, "host_stopped_ms": 0,
                   "host_waited_ms": 450})
        );
        let missed = WatchdogDetails::Missed {
            component: "light",
            age_ms: None,
            max_age_ms: 3000,
        };
        assert_eq!(
            details_value(&missed),
            json!({"component": "light", "age_ms": null, "max_age_ms": 3000, "state": "missed"})
        );
        let back = WatchdogDetails::Recovered {
            component: "stall",
            stale_ms: 4500,
        };
        assert_eq!(
            details_value(&back),
            json!({"component": "stall", "stale_ms": 4500, "state": "recovered"})
        );
        let dev = WatchdogDetails::DeviceError {
            error: "/dev/watchdog: busy",
        };
        assert_eq!(
            details_value(&dev),
            json!({"state": "device_error", "error": "/dev/watchdog: busy"})
        );
        let held = HeldDetails {
            stuck_ms: 60_000,
            held_alert_after_ms: 30_000,
        };
        assert_eq!(
            details_value(&held),
            json!({"stuck_ms": 60_000, "held_alert_after_ms": 30_000})
        );
    }
}
