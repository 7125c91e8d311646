//! What goes in comes back: field round trips, filters, counts, retention.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::{event, tempdir};
use rusqlite::Connection;
use selfheal_event::{Culprit, Event, EventKind, Severity, Source};
use selfheal_store::{Order, Query, Retention, Store};

fn at(ms: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn times(events: &[Event]) -> Vec<i64> {
    events.iter().map(|e| e.time_unix_ms).collect()
}

/// A store holding events at t = 1000, 2000, …, 10000 ms: kinds cycle
/// alert/app_crash/recovery, apps cycle db/web/none, pid = t / 1000.
fn sample_store(dir: &std::path::Path) -> Store {
    let mut store = Store::open(dir.join("s.db")).unwrap();
    let kinds = [EventKind::Alert, EventKind::AppCrash, EventKind::Recovery];
    let apps = [Some("db"), Some("web"), None];
    let events: Vec<Event> = (1..=10)
        .map(|i| {
            event(
                i * 1000,
                kinds[i as usize % 3],
                apps[i as usize % 3],
                Some(i as i32),
            )
        })
        .collect();
    let mut events = events;
    // One event from a VM's guest (vm set, no app).
    if let Some(c) = events[8].culprit.as_mut() {
        c.app = None;
        c.vm = Some("web-vm".into());
    }
    store.append_batch(&events).unwrap();
    store
}

#[test]
fn every_field_round_trips() {
    let tmp = tempdir();
    let mut store = Store::open(tmp.path().join("s.db")).unwrap();
    let full = Event {
        id: None,
        time_unix_ms: 1_767_225_600_123,
        kind: EventKind::Diagnosis,
        severity: Severity::Critical,
        source: Source::Heavy,
        rule: Some("cpu_stall".into()),
        culprit: Some(Culprit {
            pid: Some(4242),
            tid: Some(4243),
            comm: Some("spïn ✓".into()),
            cgroup: Some("/system.slice/app.service".into()),
            unit: Some("app.service".into()),
            cpu: Some(u32::MAX),
            app: Some("db".into()),
            vm: Some("web-1".into()),
        }),
        message: "cpu 1 stalled for 812 ms".into(),
        details: serde_json::json!({
            "usr": 0.25, "sys": 99.75, "run": 7, "neg": -3, "big": u64::MAX,
            "tiny": 1.0e-300, "per_cpu": [[1, 2], [3.5, null]], "text": "quote \" and \\",
            "nested": { "empty": {}, "none": [] }
        }),
    };
    // No culprit and no evidence, and a culprit with nothing known: distinct.
    let bare = Event::now(EventKind::Start, Severity::Info, Source::Daemon, "started");
    let unknown_culprit = bare.clone().with_culprit(Culprit::default());
    let ids: Vec<i64> = [&full, &bare, &unknown_culprit]
        .iter()
        .map(|e| store.append(e).unwrap())
        .collect();
    let back = store
        .query(&Query::new().order(Order::OldestFirst))
        .unwrap();
    assert_eq!(back.len(), 3);
    for (original, id) in [&full, &bare, &unknown_culprit].into_iter().zip(&ids) {
        let mut expected = original.clone();
        expected.id = Some(*id);
        let found = back
            .iter()
            .find(|e| e.id == Some(*id))
            .expect("stored event");
        assert_eq!(found, &expected);
    }
}

#[test]
fn filters_select_what_they_say() {
    let tmp = tempdir();
    let store = sample_store(tmp.path());
    let all = store.query(&Query::new()).unwrap();
    assert_eq!(
        times(&all),
        (1..=10).rev().map(|i| i * 1000).collect::<Vec<_>>()
    );
    assert!(all.iter().all(|e| e.id.is_some()));

    let q = Query::new().since(at(3000)).until(at(6000));
    assert_eq!(times(&store.query(&q).unwrap()), vec![5000, 4000, 3000]);

    let q = Query::new().kind(EventKind::AppCrash);
    assert_eq!(
        times(&store.query(&q).unwrap()),
        vec![10000, 7000, 4000, 1000]
    );
    let q = Query::new()
        .kind(EventKind::AppCrash)
        .kind(EventKind::Recovery);
    assert_eq!(store.query(&q).unwrap().len(), 7);
    assert!(store
        .query(&Query::new().kind(EventKind::Rollback))
        .unwrap()
        .is_empty());

    let q = Query::new().app("web");
    assert_eq!(
        times(&store.query(&q).unwrap()),
        vec![10000, 7000, 4000, 1000]
    );
    let q = Query::new().vm("web-vm");
    assert_eq!(times(&store.query(&q).unwrap()), vec![9000]);
    let q = Query::new().pid(7);
    assert_eq!(times(&store.query(&q).unwrap()), vec![7000]);
    // Filters combine with AND.
    let q = Query::new()
        .app("web")
        .kind(EventKind::AppCrash)
        .since(at(5000))
        .until(at(10000));
    assert_eq!(times(&store.query(&q).unwrap()), vec![7000]);
    assert!(store
        .query(&Query::new().app("web").kind(EventKind::Alert))
        .unwrap()
        .is_empty());
}

#[test]
fn order_and_limit() {
    let tmp = tempdir();
    let store = sample_store(tmp.path());
    let newest = Query::new().limit(3);
    assert_eq!(
        times(&store.query(&newest).unwrap()),
        vec![10000, 9000, 8000]
    );
    let oldest = Query::new().limit(3).order(Order::OldestFirst);
    assert_eq!(
        times(&store.query(&oldest).unwrap()),
        vec![1000, 2000, 3000]
    );
    let tail = Query::new().limit(3).order(Order::Tail);
    assert_eq!(times(&store.query(&tail).unwrap()), vec![8000, 9000, 10000]);
    assert!(store.query(&Query::new().limit(0)).unwrap().is_empty());

    // Following: everything after the last id seen, oldest first.
    let seen = store.query(&Query::new().limit(1)).unwrap()[0].id.unwrap();
    let mut writer = Store::open(store.path()).unwrap();
    writer
        .append(&event(11_000, EventKind::Stop, None, None))
        .unwrap();
    let new = store
        .query(&Query::new().after_id(seen).order(Order::OldestFirst))
        .unwrap();
    assert_eq!(times(&new), vec![11_000]);
}

#[test]
fn counts_by_kind() {
    let tmp = tempdir();
    let store = sample_store(tmp.path());
    assert_eq!(
        store.count_by_kind().unwrap(),
        vec![
            (EventKind::Alert, 3),
            (EventKind::Recovery, 3),
            (EventKind::AppCrash, 4)
        ]
    );
    let empty = Store::open(tmp.path().join("empty.db")).unwrap();
    assert!(empty.count_by_kind().unwrap().is_empty());
}

#[test]
fn retention_by_age() {
    let tmp = tempdir();
    let mut store = sample_store(tmp.path());
    let keep_5s = Retention {
        max_age: Some(Duration::from_secs(5)),
        max_count: None,
    };
    // At t = 10.5 s, a 5 s window keeps 5.5 s .. 10.5 s: 6000 ..= 10000.
    assert_eq!(store.apply_retention_at(&keep_5s, at(10_500)).unwrap(), 5);
    let left = store
        .query(&Query::new().order(Order::OldestFirst))
        .unwrap();
    assert_eq!(times(&left), vec![6000, 7000, 8000, 9000, 10000]);
    assert_eq!(store.apply_retention_at(&keep_5s, at(10_500)).unwrap(), 0);
    assert_eq!(store.apply_retention(&Retention::default()).unwrap(), 0);
}

#[test]
fn retention_by_count_keeps_the_newest_and_ids_never_repeat() {
    let tmp = tempdir();
    let mut store = sample_store(tmp.path());
    let last_id = store.query(&Query::new().limit(1)).unwrap()[0].id.unwrap();
    let keep = |n| Retention {
        max_age: None,
        max_count: Some(n),
    };
    assert_eq!(store.apply_retention(&keep(4)).unwrap(), 6);
    assert_eq!(
        times(&store.query(&Query::new()).unwrap()),
        vec![10000, 9000, 8000, 7000]
    );
    assert_eq!(store.apply_retention(&keep(0)).unwrap(), 4);
    assert!(store.query(&Query::new()).unwrap().is_empty());
    // A follower polling "id > last seen" must not miss the next event.
    let id = store
        .append(&event(1, EventKind::Start, None, None))
        .unwrap();
    assert!(id > last_id, "id {id} reused (last was {last_id})");
}

#[test]
fn both_limits_apply_and_freed_pages_are_returned() {
    let tmp = tempdir();
    let mut store = Store::open(tmp.path().join("s.db")).unwrap();
    let big = serde_json::json!({ "blob": "x".repeat(2000) });
    let events: Vec<Event> = (0..3000)
        .map(|i| event(i, EventKind::Alert, None, None).with_details(big.clone()))
        .collect();
    store.append_batch(&events).unwrap();
    let both = Retention {
        max_age: Some(Duration::from_millis(1000)),
        max_count: Some(100),
    };
    // Age removes t < 1999 (1999 events), count then keeps the newest 100.
    assert_eq!(store.apply_retention_at(&both, at(2999)).unwrap(), 2900);
    assert_eq!(
        times(
            &store
                .query(&Query::new().limit(1).order(Order::OldestFirst))
                .unwrap()
        ),
        vec![2900]
    );
    let raw = Connection::open(store.path()).unwrap();
    let free: i64 = raw
        .pragma_query_value(None, "freelist_count", |r| r.get(0))
        .unwrap();
    assert_eq!(
        free, 0,
        "retention should give freed pages back (auto_vacuum=incremental)"
    );
}
