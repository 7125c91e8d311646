//! Every VM event's details written typed, stored, and read back typed
//! through the SQLite store and the JSON `/api/events` and `selfheal
//! events --json` print; older documents read back.

use serde_json::json;

use selfheal_event::{details_value, Severity};
use selfheal_store::{Order, Query, Store};

use super::*;
use crate::events::vm_event;
use crate::incident::{IncidentTrigger, LeftDetails};

fn pauses(n: usize) -> PauseStats {
    PauseStats {
        n,
        p50_ms: 2.0,
        p99_ms: 3.5,
        max_ms: 4.0,
    }
}

/// One event of every shape, as the run and the supervisor write them.
fn every_event() -> Vec<(EventKind, StoredVmEvent, Value)> {
    fn one<T: Serialize>(
        kind: EventKind,
        d: T,
        typed: impl FnOnce(T) -> StoredVmEvent,
    ) -> (EventKind, StoredVmEvent, Value) {
        let v = details_value(&d);
        (kind, typed(d), v)
    }
    let exit = QemuExit {
        code: Some(1),
        signal: None,
        core_dumped: false,
    };
    vec![
        one(
            EventKind::VmStart,
            StartDetails {
                pid: 9,
                command: vec!["qemu-system-x86_64".into(), "-m".into(), "512".into()],
                checkpoints: Some(CheckpointPlan {
                    interval_ms: 50,
                    keep: 8,
                    older_every_ms: 1000,
                    older_span_ms: 10_000,
                }),
            },
            StoredVmEvent::Started,
        ),
        one(
            EventKind::VmStart,
            NoLinkDetails {
                port: "org.selfheal.0".into(),
            },
            StoredVmEvent::NoLink,
        ),
        one(
            EventKind::VmRollback,
            RolledBackDetails {
                trigger: "hang".into(),
                attempt: Some(1),
                rollback_ms: 1.5,
                guest_told: Some(true),
                report: json!({"pages_restored": 3, "checkpoint_age_ms": 120}),
            },
            StoredVmEvent::RolledBack,
        ),
        one(
            EventKind::VmRollback,
            RecoveredDetails {
                outcome: Recovered::Recovered,
                trigger: "panic".into(),
                rollbacks: 2,
                detect_to_serving_ms: Some(900),
            },
            StoredVmEvent::Recovered,
        ),
        one(
            EventKind::VmRestart,
            ResetDetails {
                reason: "guest-reset".into(),
                by: RestartedBy::Guest,
            },
            StoredVmEvent::GuestReset,
        ),
        one(
            EventKind::VmRestart,
            RebootDetails {
                boot_id: "b2".into(),
                by: RestartedBy::Guest,
            },
            StoredVmEvent::GuestRebooted,
        ),
        one(
            EventKind::VmRestart,
            RestartingDetails {
                why: "crash".into(),
                by: RestartedBy::Selfheal,
            },
            StoredVmEvent::Restarting,
        ),
        one(
            EventKind::VmExit,
            StartFailedDetails {
                exit: Some(exit),
                error: "bad -m".into(),
            },
            StoredVmEvent::StartFailed,
        ),
        one(
            EventKind::VmExit,
            StartFailedDetails {
                exit: None,
                error: "no kvm".into(),
            },
            StoredVmEvent::StartFailed,
        ),
        one(
            EventKind::VmExit,
            StoppedDetails { stopped: true },
            StoredVmEvent::Stopped,
        ),
        one(
            EventKind::VmExit,
            ExitedDetails {
                exit,
                shutdown_reason: Some("host-qmp-quit".into()),
                restart: false,
            },
            StoredVmEvent::Exited,
        ),
        one(
            EventKind::VmGaveUp,
            GaveUpDetails {
                restarts: 3,
                why: "crash".into(),
            },
            StoredVmEvent::GaveUp,
        ),
        one(
            EventKind::Dismissed,
            NotHungDetails {
                silent_ms: 7000,
                why: "QEMU stopped".into(),
            },
            StoredVmEvent::NotHung,
        ),
        one(
            EventKind::Dismissed,
            NotActedDetails {
                class: Class::KernelStall,
                why: "settling".into(),
                after_rollback_ms: 10,
                covers_ms: 20,
                settle_ms: 30,
                guest_message: "m".into(),
            },
            StoredVmEvent::NotActed,
        ),
        one(
            EventKind::Dismissed,
            CheckpointStallDetails {
                class: Class::RtHog,
                stall_ms: 316,
                stopped_ms: 290,
                guest_message: "m".into(),
            },
            StoredVmEvent::CheckpointStall,
        ),
        one(
            EventKind::Checkpoint,
            PauseSummaryDetails {
                pauses: pauses(3),
                run_pauses: pauses(100),
            },
            StoredVmEvent::Pauses,
        ),
        one(
            EventKind::Checkpoint,
            CheckpointFailedDetails {
                error: "EAGAIN".into(),
            },
            StoredVmEvent::CheckpointFailed,
        ),
        one(
            EventKind::VmHang,
            LeftDetails {
                trigger: Some(IncidentTrigger::Hang),
                why: "restart = never".into(),
            },
            |l| StoredVmEvent::Incident(StoredVmIncident::Left(l)),
        ),
    ]
}

/// Every shape, written typed, stored in SQLite, queried back and
/// printed as the API prints it, reads back typed and equal.
#[test]
fn every_vm_event_reads_back_through_the_store_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("events.db")).unwrap();
    let written = every_event();
    for (kind, _, details) in &written {
        store
            .append(&vm_event(
                "web",
                *kind,
                Severity::Info,
                "m".into(),
                details.clone(),
            ))
            .unwrap();
    }
    let read = store
        .query(&Query::new().order(Order::OldestFirst))
        .unwrap();
    assert_eq!(read.len(), written.len());
    for ((_, typed, _), e) in written.iter().zip(&read) {
        let api: Event = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
        for e in [e, &api] {
            assert_eq!(&StoredVmEvent::from_event(e).unwrap(), typed);
        }
    }
}

/// Documents as the `json!` literals wrote them, stored by an older
/// selfheal, read back, and write back to the same documents.
#[test]
fn records_of_the_json_era_read_back() {
    let info_json = json!({"code": 1, "signal": null, "core_dumped": false});
    let old = [
        (
            EventKind::VmStart,
            json!({"pid": 9, "command": ["qemu-system-x86_64"], "checkpoints": null}),
        ),
        (EventKind::VmStart, json!({"port": "4444"})),
        (
            EventKind::VmRollback,
            json!({"trigger": "qemu Crash", "attempt": null, "rollback_ms": 1.5,
                   "guest_told": null, "report": {"pages_restored": 3}}),
        ),
        (
            EventKind::VmRollback,
            json!({"outcome": "recovered", "trigger": "hang", "rollbacks": 2,
                   "detect_to_serving_ms": null}),
        ),
        (
            EventKind::VmRestart,
            json!({"reason": "guest-reset", "by": "guest"}),
        ),
        (
            EventKind::VmRestart,
            json!({"boot_id": "b2", "by": "guest"}),
        ),
        (
            EventKind::VmRestart,
            json!({"why": "crash", "by": "selfheal"}),
        ),
        (EventKind::VmExit, json!({"error": "no kvm"})),
        (
            EventKind::VmExit,
            json!({"exit": info_json, "error": "bad -m"}),
        ),
        (EventKind::VmExit, json!({"stopped": true})),
        (
            EventKind::VmExit,
            json!({"exit": info_json, "shutdown_reason": null, "restart": true}),
        ),
        (EventKind::VmGaveUp, json!({"restarts": 3, "why": "crash"})),
        (EventKind::Dismissed, json!({"silent_ms": 7, "why": "y"})),
        (
            EventKind::Dismissed,
            json!({"class": "kernel_stall", "why": "settling", "after_rollback_ms": 10,
                   "covers_ms": 20, "settle_ms": 30, "guest_message": "m"}),
        ),
        (
            EventKind::Dismissed,
            json!({"class": "kernel_stall", "stall_ms": 316, "stopped_ms": 290,
                   "guest_message": "m"}),
        ),
        (
            EventKind::Checkpoint,
            json!({"pauses": {"n": 3, "p50_ms": 2.0, "p99_ms": 3.0, "max_ms": 3.0},
                   "run_pauses": {"n": 100, "p50_ms": 51.0, "p99_ms": 99.0, "max_ms": 100.0}}),
        ),
        (EventKind::Checkpoint, json!({"error": "e"})),
    ];
    for (kind, details) in &old {
        let e = vm_event("web", *kind, Severity::Info, "m".into(), details.clone());
        let typed =
            StoredVmEvent::from_event(&e).unwrap_or_else(|err| panic!("{kind}: {err}\n{details}"));
        let back = match &typed {
            StoredVmEvent::Started(d) => details_value(d),
            StoredVmEvent::NoLink(d) => details_value(d),
            StoredVmEvent::RolledBack(d) => details_value(d),
            StoredVmEvent::Recovered(d) => details_value(d),
            StoredVmEvent::GuestReset(d) => details_value(d),
            StoredVmEvent::GuestRebooted(d) => details_value(d),
            StoredVmEvent::Restarting(d) => details_value(d),
            StoredVmEvent::StartFailed(d) => details_value(d),
            StoredVmEvent::Stopped(d) => details_value(d),
            StoredVmEvent::Exited(d) => details_value(d),
            StoredVmEvent::GaveUp(d) => details_value(d),
            StoredVmEvent::NotHung(d) => details_value(d),
            StoredVmEvent::NotActed(d) => details_value(d),
            StoredVmEvent::CheckpointStall(d) => details_value(d),
            StoredVmEvent::Pauses(d) => details_value(d),
            StoredVmEvent::CheckpointFailed(d) => details_value(d),
            StoredVmEvent::Incident(_) => panic!("{kind}: read as an incident"),
        };
        assert_eq!(&back, details, "{kind}");
    }
}

/// Events of other sources, kinds `selfheal vm` does not record, and
/// shapes a kind does not have are errors that say so.
#[test]
fn other_events_are_refused() {
    let guest = crate::events::forwarded(
        "web",
        Event::now(EventKind::Dismissed, Severity::Info, Source::Heavy, "x"),
    );
    let err = StoredVmEvent::from_event(&guest).unwrap_err();
    assert!(err.to_string().contains("guest:heavy"), "{err}");
    let alert = vm_event(
        "web",
        EventKind::Alert,
        Severity::Info,
        "x".into(),
        json!({}),
    );
    assert!(matches!(
        StoredVmEvent::from_event(&alert),
        Err(ReadError::Kind {
            kind: EventKind::Alert,
            ..
        })
    ));
    let bad = vm_event(
        "web",
        EventKind::VmRestart,
        Severity::Info,
        "x".into(),
        json!({"why": "crash", "by": "a comet"}),
    );
    let err = StoredVmEvent::from_event(&bad).unwrap_err();
    assert!(err.to_string().contains("comet"), "{err}");
}
