//! The `details` document of a recovery step's event (kind `recovery`), as
//! a type: what the store, `/api/events`, the JSON event log, the lab's
//! parsers and the hang metrics (`act_ms`, `verify_ms`) read. Every key is
//! always present; an absent value is `null`.

use serde::Serialize;

use crate::evidence::EvidenceDetails;

/// One step's event details, filled by `Ladder::emit`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct StepDetails<'a> {
    /// The diagnosis class (`rt_hog`, `fork_bomb`, …).
    pub class: &'static str,
    /// The step's action (`demote`, `kill_tree`, …).
    pub action: &'static str,
    /// How it ended (`recovered`, `refused`, …).
    pub outcome: &'static str,
    /// Why, in words.
    pub reason: &'a str,
    /// This step's number, from 1.
    pub step: usize,
    /// How many steps the ladder has.
    pub steps: usize,
    /// True when the daemon only records.
    pub dry_run: bool,
    /// Time spent acting, ms.
    pub act_ms: f64,
    /// Time until the symptom cleared (or the verify timeout), ms.
    pub verify_ms: f64,
    /// pids signalled or changed by the step.
    pub touched: Vec<i32>,
    /// Why the step was refused (`Refusal::as_str`), when it was.
    pub refusal: Option<&'static str>,
    /// What ties the target to the symptom.
    pub evidence: EvidenceDetails,
    /// The symptom as measured just before acting, when it was.
    pub recheck: Option<&'a str>,
    /// What the step did besides acting on processes.
    pub notes: &'a [String],
    /// The incident a restart record names, when the step wrote one.
    pub incident: Option<IncidentRef<'a>>,
    /// Whom the step was about, when there is a process to act on.
    pub target: Option<TargetDetails<'a>>,
}

/// `details.incident`: the incident id a restart record names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct IncidentRef<'a> {
    /// The incident id.
    pub id: &'a str,
}

/// `details.target`: the target's identity with the culprit's names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TargetDetails<'a> {
    /// The process.
    pub pid: i32,
    /// Its start time (ticks after boot).
    pub starttime: u64,
    /// The culprit thread, when the diagnosis named one.
    pub tid: Option<i32>,
    /// The culprit's command name.
    pub comm: Option<&'a str>,
    /// The culprit's cgroup.
    pub cgroup: Option<&'a str>,
    /// The culprit's systemd unit.
    pub unit: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use serde_json::json;

    use selfheal_config::{Action, RecoveryConfig};
    use selfheal_event::{Class, Culprit, MemorySink, Target};

    use crate::evidence::{Evidence, Refusal};
    use crate::fake::FakeSystem;
    use crate::ladder::{Incident, Ladder, LadderOptions, Outcome, StepRecord};

    /// The event `emit` writes carries exactly the document the old
    /// `json!` literal built: same keys, nesting, types and nulls.
    #[test]
    fn step_event_details_match_the_documented_json() {
        let l = Ladder::new(
            Box::new(Arc::new(FakeSystem::new(500))),
            LadderOptions::new(RecoveryConfig::default(), true),
        );
        let incident = Incident {
            class: Class::ForkBomb,
            culprit: Culprit {
                pid: Some(100),
                tid: Some(101),
                comm: Some("bomb".into()),
                cgroup: Some("/selfheal-sandbox/a".into()),
                unit: None,
                ..Culprit::default()
            },
            target: Some(Target::tree(100, 1100)),
            evidence: Evidence {
                measured_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                measured_instant: Instant::now(),
                ..Evidence::now("process_count", "412 processes in the tree")
            },
            blocker: None,
        };
        let mut rec = StepRecord::refused(
            Action::KillTree,
            Refusal::InnocentMembers,
            "the cgroup holds sshd".into(),
        );
        rec.act_time = Duration::from_micros(1500);
        rec.verify_time = Duration::from_millis(250);
        rec.touched = vec![(100, 1100), (102, 1102)];
        rec.recheck = Some("411 processes".into());
        rec.incident_id = Some("inc-7".into());
        rec.notes = vec!["fork hold placed".into()];
        let sink = MemorySink::new();
        l.emit(&sink, &incident, &rec, 1, 3);
        let mut details = sink.events()[0].details.clone();
        let age = details["evidence"]["age_ms"].take();
        assert!(age.as_u64().is_some_and(|a| a < 60_000), "{age}");
        details["evidence"]["age_ms"] = json!(0);
        assert_eq!(
            details,
            json!({
                "class": "fork_bomb",
                "action": "kill_tree",
                "outcome": "refused",
                "reason": "the cgroup holds sshd",
                "step": 2,
                "steps": 3,
                "dry_run": true,
                "act_ms": 1.5,
                "verify_ms": 250.0,
                "touched": [100, 102],
                "refusal": "innocent_members",
                "evidence": {
                    "symptom": "process_count",
                    "measurement": "412 processes in the tree",
                    "measured_unix_ms": 1_700_000_000_123_i64,
                    "age_ms": 0,
                },
                "recheck": "411 processes",
                "notes": ["fork hold placed"],
                "incident": {"id": "inc-7"},
                "target": {
                    "pid": 100, "starttime": 1100, "tid": 101, "comm": "bomb",
                    "cgroup": "/selfheal-sandbox/a", "unit": null,
                },
            })
        );

        // No target, no refusal, no incident: the keys stay, as nulls.
        let bare = Incident {
            target: None,
            culprit: Culprit::default(),
            ..incident
        };
        let rec = StepRecord::new(Action::Record, Outcome::Recorded, "recorded".into());
        l.emit(&sink, &bare, &rec, 0, 1);
        let d = &sink.events()[1].details;
        for key in ["refusal", "recheck", "incident", "target"] {
            assert_eq!(d.get(key), Some(&serde_json::Value::Null), "{key}");
        }
        assert_eq!(d["touched"], json!([]));
        assert_eq!(d["notes"], json!([]));
        assert_eq!(d["act_ms"], json!(0.0));
        assert_eq!(d.as_object().map(|o| o.len()), Some(16));
    }
}
