//! `app_hang` details written typed and read back typed: one of every
//! evidence shape and every confirmation, through the JSON
//! `/api/events` and `selfheal events --json` print. (The store keeps
//! `details` as that JSON text; the crates below supervise test the
//! SQLite round trip itself, and this manifest stays free of
//! `selfheal-store`, hence of rusqlite.)

use serde_json::json;

use selfheal_event::{details_value, Event, EventKind, Severity, Source};

use super::*;
use crate::evidence::ThreadStack;
use crate::progress::ThreadEvidence;

fn probe_evidence() -> ProbeEvidence {
    ProbeEvidence {
        probe: "http".into(),
        kind: "http".into(),
        target: "http://127.0.0.1:8080/".into(),
        consecutive_failures: 3,
        failure_threshold: 3,
        period_ms: 1000,
        timeout_ms: 500,
        failures: vec![ProbeFailure {
            detail: "timed out".into(),
            started_unix_us: 1,
            elapsed_ms: 500.0,
        }],
        failed_at_unix_us: 500_001,
    }
}

fn suspicion(heuristic: &str, tid: Option<i32>) -> SuspicionEvidence {
    SuspicionEvidence {
        heuristic: heuristic.into(),
        held_ms: 1500,
        tid,
        threads: vec![ThreadEvidence {
            tid: 2,
            comm: "t2".into(),
            state: "R".into(),
            cpu_percent: Some(99.5),
            system_percent: Some(0.0),
            voluntary_switches: None,
            syscall: Some("running".into()),
            wchan: None,
        }],
    }
}

/// Every detector's evidence, with what confirmed it, as the runner
/// writes them.
fn every_hang() -> Vec<(HangDetector, AppHangEvidence, Option<Confirmation>)> {
    vec![
        (
            HangDetector::ReadyTimeout,
            AppHangEvidence::ReadyTimeout(ReadyTimeoutEvidence {
                ready_timeout_ms: 5000,
                deadline_unix_us: 7,
                status: Some("loading".into()),
            }),
            None,
        ),
        (
            HangDetector::Watchdog,
            AppHangEvidence::Watchdog(WatchdogEvidence {
                watchdog_ms: 1000,
                last_ping_unix_us: None,
                deadline_unix_us: 9,
                suspected: vec![HangDetector::Spin],
            }),
            None,
        ),
        (
            HangDetector::Watchdog,
            AppHangEvidence::WatchdogTrigger(WatchdogTriggerEvidence {
                trigger: WATCHDOG_TRIGGER.into(),
            }),
            None,
        ),
        (
            HangDetector::Probe,
            AppHangEvidence::Probe(probe_evidence()),
            None,
        ),
        (
            HangDetector::Spin,
            AppHangEvidence::Suspicion(suspicion("spin", Some(2))),
            Some(Confirmation::Alone(ActAlone::ActAlone)),
        ),
        (
            HangDetector::Deadlock,
            AppHangEvidence::Suspicion(suspicion("deadlock", None)),
            Some(Confirmation::ProbeFailing {
                probe: "http".into(),
                detail: "timed out".into(),
            }),
        ),
        (
            HangDetector::Spin,
            AppHangEvidence::Suspicion(suspicion("spin", Some(2))),
            Some(Confirmation::ProbeFailed {
                probe: probe_evidence(),
            }),
        ),
    ]
}

fn stacks() -> ThreadStacks {
    ThreadStacks::Read {
        threads: vec![ThreadStack {
            tid: 2,
            comm: "t2".into(),
            state: "R".into(),
            wchan: None,
            syscall: Some("running".into()),
            kernel_stack: Some(vec!["do_idle".into()]),
        }],
        total_threads: 1,
    }
}

fn hang_event(
    detector: HangDetector,
    evidence: &AppHangEvidence,
    confirmed_by: Option<&Confirmation>,
    thread_stacks: Option<&ThreadStacks>,
) -> Event {
    Event::now(EventKind::AppHang, Severity::Critical, Source::App, "hung").with_details_of(
        &HangDetails {
            detector,
            suspected: false,
            confirmed_by,
            evidence,
            detected_unix_us: 42,
            thread_stacks,
        },
    )
}

/// The events as `selfheal events --json` prints them, one per line, and
/// read back as an older or newer selfheal reads them.
fn through_the_json(events: &[Event]) -> Vec<Event> {
    let lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every hang and every suspicion, written typed and printed as the API
/// and `selfheal events --json` print it, reads back typed and equal.
#[test]
fn every_app_hang_reads_back_through_the_json() {
    let mut events = Vec::new();
    let mut written = Vec::new();
    for (i, (detector, evidence, confirmed_by)) in every_hang().into_iter().enumerate() {
        let stacks = (i % 2 == 0).then(stacks);
        events.push(hang_event(
            detector,
            &evidence,
            confirmed_by.as_ref(),
            stacks.as_ref(),
        ));
        written.push(StoredAppHang {
            detector,
            suspected: false,
            confirmed_by,
            evidence,
            detected_unix_us: Some(42),
            thread_stacks: stacks,
        });
    }
    let ev = suspicion("deadlock", None);
    events.push(
        Event::now(EventKind::AppHang, Severity::Warning, Source::App, "?").with_details_of(
            &SuspectedDetails {
                detector: HangDetector::Deadlock,
                suspected: true,
                evidence: &ev,
            },
        ),
    );
    written.push(StoredAppHang {
        detector: HangDetector::Deadlock,
        suspected: true,
        confirmed_by: None,
        evidence: AppHangEvidence::Suspicion(ev),
        detected_unix_us: None,
        thread_stacks: None,
    });

    let read = through_the_json(&events);
    assert_eq!(read.len(), written.len());
    for (w, e) in written.iter().zip(&read) {
        assert_eq!(&StoredAppHang::from_event(e).unwrap(), w);
    }
}

/// The hang and suspicion events carry exactly the documents the old
/// `json!` literals built, unknown values `null`.
#[test]
fn hang_details_match_the_documented_json() {
    let ev = suspicion("spin", Some(2));
    let ev_json = details_value(&ev);
    assert_eq!(
        details_value(&SuspectedDetails {
            detector: HangDetector::Spin,
            suspected: true,
            evidence: &ev,
        }),
        json!({"detector": "spin", "suspected": true, "evidence": ev_json})
    );
    let confirmed = Confirmation::ProbeFailing {
        probe: "http".into(),
        detail: "timed out".into(),
    };
    assert_eq!(
        details_value(&HangDetails {
            detector: HangDetector::Spin,
            suspected: false,
            confirmed_by: Some(&confirmed),
            evidence: &AppHangEvidence::Suspicion(ev.clone()),
            detected_unix_us: 5,
            thread_stacks: None,
        }),
        json!({"detector": "spin", "suspected": false,
               "confirmed_by": {"probe": "http", "detail": "timed out"},
               "evidence": ev_json, "detected_unix_us": 5,
               "thread_stacks": null})
    );
    assert_eq!(
        details_value(&Confirmation::Alone(ActAlone::ActAlone)),
        json!("act_alone")
    );
    let probe = details_value(&probe_evidence());
    assert_eq!(
        probe,
        json!({
            "probe": "http", "kind": "http", "target": "http://127.0.0.1:8080/",
            "consecutive_failures": 3, "failure_threshold": 3, "period_ms": 1000,
            "timeout_ms": 500,
            "failures": [{"detail": "timed out", "started_unix_us": 1, "elapsed_ms": 500.0}],
            "failed_at_unix_us": 500_001,
        })
    );
    assert_eq!(
        details_value(&Confirmation::ProbeFailed {
            probe: probe_evidence()
        }),
        json!({ "probe": probe })
    );
    assert_eq!(
        details_value(&AppHangEvidence::ReadyTimeout(ReadyTimeoutEvidence {
            ready_timeout_ms: 5000,
            deadline_unix_us: 7,
            status: None,
        })),
        json!({"ready_timeout_ms": 5000, "deadline_unix_us": 7, "status": null})
    );
    assert_eq!(
        details_value(&AppHangEvidence::Watchdog(WatchdogEvidence {
            watchdog_ms: 1000,
            last_ping_unix_us: None,
            deadline_unix_us: 9,
            suspected: vec![HangDetector::Spin],
        })),
        json!({"watchdog_ms": 1000, "last_ping_unix_us": null, "deadline_unix_us": 9,
               "suspected": ["spin"]})
    );
    assert_eq!(
        details_value(&AppHangEvidence::WatchdogTrigger(WatchdogTriggerEvidence {
            trigger: WATCHDOG_TRIGGER.into(),
        })),
        json!({"trigger": "WATCHDOG=trigger"})
    );
}

/// Documents as the `json!` literals wrote them, stored by an older
/// selfheal, read back.
#[test]
fn records_of_the_json_era_read_back() {
    let old = [
        // A suspicion: no confirmed_by, detected_unix_us or thread_stacks.
        json!({"detector": "deadlock", "suspected": true, "evidence": {
            "heuristic": "deadlock", "held_ms": 2000, "tid": null, "threads": [
                {"tid": 5, "comm": "w", "state": "S", "cpu_percent": 0.0,
                 "system_percent": 0.0, "voluntary_switches": 0, "syscall": "202",
                 "wchan": "futex_wait_queue"}]}}),
        // Acted on alone, stacks unreadable.
        json!({"detector": "spin", "suspected": false, "confirmed_by": "act_alone",
               "evidence": {"heuristic": "spin", "held_ms": 1000, "tid": 3, "threads": []},
               "detected_unix_us": 11,
               "thread_stacks": {"error": "ESRCH"}}),
        json!({"detector": "watchdog", "suspected": false, "confirmed_by": null,
               "evidence": {"trigger": "WATCHDOG=trigger"}, "detected_unix_us": 12,
               "thread_stacks": null}),
    ];
    let events: Vec<Event> = old
        .iter()
        .map(|d| {
            Event::now(EventKind::AppHang, Severity::Critical, Source::App, "m")
                .with_details(d.clone())
        })
        .collect();
    let read = through_the_json(&events);
    let hangs: Vec<StoredAppHang> = read
        .iter()
        .map(|e| StoredAppHang::from_event(e).unwrap())
        .collect();
    assert!(hangs[0].suspected && hangs[0].detected_unix_us.is_none());
    let AppHangEvidence::Suspicion(s) = &hangs[0].evidence else {
        panic!("read as {:?}", hangs[0].evidence);
    };
    assert_eq!(s.threads[0].wchan.as_deref(), Some("futex_wait_queue"));
    assert_eq!(
        hangs[1].confirmed_by,
        Some(Confirmation::Alone(ActAlone::ActAlone))
    );
    assert_eq!(
        hangs[1].thread_stacks,
        Some(ThreadStacks::Unreadable {
            error: "ESRCH".into()
        })
    );
    assert_eq!(
        hangs[2].evidence,
        AppHangEvidence::WatchdogTrigger(WatchdogTriggerEvidence {
            trigger: WATCHDOG_TRIGGER.into()
        })
    );
    // Each reads back to the very document it was.
    for (h, details) in hangs.iter().zip(&old) {
        assert_eq!(&details_value(&h.evidence), &details["evidence"]);
    }
}

/// What is not an app hang, or not its detector's shape, is an error
/// that says so.
#[test]
fn other_shapes_are_refused() {
    let start = Event::now(EventKind::AppStart, Severity::Info, Source::App, "up");
    assert!(matches!(
        StoredAppHang::from_event(&start),
        Err(ReadError::NotAnAppHang {
            kind: EventKind::AppStart,
            ..
        })
    ));
    let as_probe = json!({"detector": "probe", "suspected": false,
                          "evidence": {"trigger": "WATCHDOG=trigger"}});
    let err = StoredAppHang::from_details(&as_probe).unwrap_err();
    assert!(matches!(err, ReadError::Evidence { .. }), "{err}");
    assert!(err.to_string().contains("probe"), "{err}");
    let no_detector = json!({"suspected": false, "evidence": {}});
    assert!(matches!(
        StoredAppHang::from_details(&no_detector),
        Err(ReadError::Details(_))
    ));
}
