//! The `details` documents of the daemon's own events (its start, a host
//! rollback of this VM), as types: what the store, `/api/events` and the
//! lab read.

use serde::Serialize;

/// `details` of the `start` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct StartDetails<'a> {
    /// selfheal's version.
    pub version: &'static str,
    /// The daemon's pid.
    pub pid: u32,
    /// CPUs watched.
    pub cpus: usize,
    /// `sampler.period`, ms.
    pub period_ms: u64,
    /// Light-detector rules enabled.
    pub rules: usize,
    /// `daemon.listen`; `null` without an HTTP endpoint.
    pub listen: Option<String>,
    /// True when recovery only records.
    pub dry_run: bool,
    /// True when PSI is readable.
    pub psi: bool,
    /// What the daemon could not set up, in words.
    pub notes: &'a [String],
}

/// `details` of the `vm_rollback` event: the host rolled this VM back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RollbackDetails<'a> {
    /// The host's message sequence number.
    pub seq: u64,
    /// How far back the VM was rolled, ms.
    pub rolled_back_ms: u64,
    /// How long the VM was paused, ms.
    pub pause_ms: u64,
    /// Why the host rolled back (`panic`, `hang`, `guest_diagnosis`).
    pub trigger: &'a str,
    /// What the guest measured again from now.
    pub rebaselined: Rebaselined,
}

/// `details.rebaselined` of a `vm_rollback` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Rebaselined {
    /// True when the stall canaries' windows started again (the stall
    /// detector runs).
    pub stall_canaries: bool,
    /// The light detector's heartbeat (always).
    pub light_heartbeat: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use selfheal_event::details_value;

    /// Each document is exactly the one the old `json!` literal built.
    #[test]
    fn daemon_event_details_match_the_documented_json() {
        let notes = vec!["no PSI".to_string()];
        let start = StartDetails {
            version: "1.2.3",
            pid: 42,
            cpus: 2,
            period_ms: 100,
            rules: 9,
            listen: None,
            dry_run: true,
            psi: false,
            notes: &notes,
        };
        assert_eq!(
            details_value(&start),
            json!({
                "version": "1.2.3", "pid": 42, "cpus": 2, "period_ms": 100, "rules": 9,
                "listen": null, "dry_run": true, "psi": false, "notes": ["no PSI"],
            })
        );
        let rb = RollbackDetails {
            seq: 2,
            rolled_back_ms: 5017,
            pause_ms: 27,
            trigger: "hang",
            rebaselined: Rebaselined {
                stall_canaries: false,
                light_heartbeat: true,
            },
        };
        assert_eq!(
            details_value(&rb),
            json!({
                "seq": 2, "rolled_back_ms": 5017, "pause_ms": 27, "trigger": "hang",
                "rebaselined": {"stall_canaries": false, "light_heartbeat": true},
            })
        );
    }
}
