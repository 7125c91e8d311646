//! VM incident details written typed, stored, and read back typed: every
//! trigger, through the SQLite store and the JSON `/api/events` and
//! `selfheal events --json` print.

use std::time::Duration;

use serde_json::json;

use selfheal_event::{details_value, Severity};
use selfheal_store::{Order, Query, Store};

use super::*;
use crate::events::vm_event;

fn silent(qemu_cpu_ms: f64, last_chance: bool) -> Trigger {
    Trigger::Hang {
        silent: Duration::from_millis(4000),
        evidence: HostEvidence {
            qemu_cpu_ms,
            qemu_scheduled: Some(12),
            window_ms: 1000.0,
            vcpus: vec![(0, 0.5), (1, 0.0)],
            vcpu_run_ms: Some(2.0),
            vcpu_wait_ms: None,
            runnable_ms: Some(0.5),
            status: Some("running".into()),
            qmp_unresponsive: false,
        },
        last_chance,
    }
}

/// Every trigger acted on, and a hang left as is, written typed, stored
/// in SQLite, queried back and printed as the API prints it, read back
/// typed and equal.
#[test]
fn every_incident_reads_back_through_the_store_and_the_api() {
    let triggers = [
        (silent(3.5, false), EventKind::VmHang),
        // Not measured: stored as null, read back as unknown.
        (silent(f64::NAN, true), EventKind::VmHang),
        (
            Trigger::Guest {
                class: Class::KernelStall,
                message: "cpu 1 stalled".into(),
            },
            EventKind::VmHang,
        ),
        (Trigger::Panic, EventKind::VmCrash),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("events.db")).unwrap();
    let mut written = Vec::new();
    for (i, (t, kind)) in triggers.iter().enumerate() {
        let d = IncidentDetails::new(t, i as u32, 5000);
        store
            .append(&vm_event(
                "web",
                *kind,
                Severity::Critical,
                "m".into(),
                details_value(&d),
            ))
            .unwrap();
        written.push(StoredVmIncident::Acted(d));
    }
    let left = LeftDetails {
        trigger: Some(IncidentTrigger::Hang),
        why: "restart = never".into(),
    };
    store
        .append(&vm_event(
            "web",
            EventKind::VmHang,
            Severity::Critical,
            "m".into(),
            details_value(&left),
        ))
        .unwrap();
    written.push(StoredVmIncident::Left(left));
    let exited = ExitedDetails {
        exit: QemuExit {
            code: None,
            signal: Some(11),
            core_dumped: true,
        },
        shutdown_reason: Some("guest-panic".into()),
        restart: true,
    };
    store
        .append(&vm_event(
            "web",
            EventKind::VmCrash,
            Severity::Critical,
            "m".into(),
            details_value(&exited),
        ))
        .unwrap();
    written.push(StoredVmIncident::Exited(exited));

    let read = store
        .query(&Query::new().order(Order::OldestFirst))
        .unwrap();
    assert_eq!(read.len(), written.len());
    for (w, e) in written.iter().zip(&read) {
        let api: Event = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
        for e in [e, &api] {
            assert_eq!(&StoredVmIncident::from_event(e).unwrap(), w);
        }
    }
    let StoredVmIncident::Acted(nan) = &written[1] else {
        unreachable!()
    };
    let evidence = nan.evidence.as_ref().unwrap();
    assert_eq!(evidence.qemu_cpu_ms, None);
    assert!(nan.last_chance);
}

/// An unmeasured CPU time is stored as `null`, as it was when the
/// document held the raw NaN.
#[test]
fn an_unmeasured_value_is_stored_as_null() {
    let d = details_value(&IncidentDetails::new(&silent(f64::NAN, false), 0, 0));
    assert_eq!(d["evidence"]["qemu_cpu_ms"], Value::Null);
    assert_eq!(d["evidence"]["runnable_ms"], 0.5);
    assert!(d.get("last_chance").is_none());
}

/// Documents as the `json!` literals wrote them, stored by an older
/// selfheal, read back.
#[test]
fn records_of_the_json_era_read_back() {
    let old = [
        json!({
            "trigger": "hang", "attempt": 1, "rollback_before_ms": 5000, "silent_ms": 4000,
            "evidence": {
                "qemu_cpu_ms": null, "qemu_scheduled": null, "window_ms": 1000.0,
                "vcpu_run_ms": 2.0, "vcpu_wait_ms": null, "runnable_ms": null,
                "vcpu_busy": [{"cpu": 0, "share": 0.5}], "qmp_status": "running",
                "qmp_unresponsive": false,
            },
        }),
        json!({"trigger": "guest_diagnosis", "attempt": 0, "rollback_before_ms": 0,
               "class": "kernel_stall", "guest_message": "cpu 1 stalled"}),
        json!({"trigger": "panic", "attempt": 0, "rollback_before_ms": 10}),
        json!({"trigger": null, "why": "x"}),
        json!({"exit": {"code": 1, "signal": null, "core_dumped": false},
               "shutdown_reason": null, "restart": false}),
    ];
    let read: Vec<StoredVmIncident> = old
        .iter()
        .map(|d| StoredVmIncident::from_details(d).unwrap())
        .collect();
    let StoredVmIncident::Acted(hang) = &read[0] else {
        panic!("read as {:?}", read[0]);
    };
    assert_eq!(hang.trigger, IncidentTrigger::Hang);
    assert_eq!(hang.silent_ms, Some(4000));
    let e = hang.evidence.as_ref().unwrap();
    assert_eq!((e.qemu_cpu_ms, e.vcpu_run_ms), (None, Some(2.0)));
    assert_eq!(e.vcpu_busy, vec![VcpuBusy { cpu: 0, share: 0.5 }]);
    assert!(matches!(&read[1], StoredVmIncident::Acted(g)
        if g.class == Some(Class::KernelStall) && g.guest_message.as_deref() == Some("cpu 1 stalled")));
    assert!(matches!(&read[2], StoredVmIncident::Acted(p)
        if p.trigger == IncidentTrigger::Panic && p.rollback_before_ms == 10));
    assert_eq!(
        read[3],
        StoredVmIncident::Left(LeftDetails {
            trigger: None,
            why: "x".into()
        })
    );
    assert!(matches!(&read[4], StoredVmIncident::Exited(x)
        if x.exit.code == Some(1) && !x.restart));
    // Each writes back the very document it was.
    for (r, d) in read.iter().zip(&old) {
        let back = match r {
            StoredVmIncident::Acted(a) => details_value(a),
            StoredVmIncident::Left(l) => details_value(l),
            StoredVmIncident::Exited(x) => details_value(x),
        };
        assert_eq!(&back, d);
    }
}

/// What is not a VM incident is an error that says so.
#[test]
fn other_shapes_are_refused() {
    let start = vm_event(
        "web",
        EventKind::VmStart,
        Severity::Info,
        "up".into(),
        json!({"pid": 1, "command": [], "checkpoints": null}),
    );
    assert!(matches!(
        StoredVmIncident::from_event(&start),
        Err(ReadError::NotAnIncident {
            kind: EventKind::VmStart,
            ..
        })
    ));
    let err = StoredVmIncident::from_details(&json!({"trigger": "meteor", "attempt": 0,
                                                     "rollback_before_ms": 0}))
    .unwrap_err();
    assert!(err.to_string().contains("meteor"), "{err}");
}
