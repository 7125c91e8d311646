//! The daemon's writer thread: durability on flush, never blocking the
//! caller, coexisting with readers, surviving write errors.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use common::{event, tempdir};
use rusqlite::Connection;
use selfheal_event::{EventKind, EventSink};
use selfheal_store::{Query, Retention, Store, StoreWriter, WriterError, WriterOptions};

/// Far above anything the writer needs; only reached when something hangs.
const HANG: Duration = Duration::from_secs(60);

#[test]
fn flush_makes_events_visible_to_a_separate_reader() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    let writer = StoreWriter::start(Store::open(&path).unwrap(), WriterOptions::default()).unwrap();
    for i in 0..300 {
        assert!(writer.emit(event(i, EventKind::Alert, Some("db"), Some(1))));
    }
    writer.flush().unwrap();
    let reader = Store::open_read_only(&path).unwrap();
    let events = reader.query(&Query::new()).unwrap();
    assert_eq!(events.len(), 300);
    assert_eq!(events[0].time_unix_ms, 299);
    let c = writer.counters();
    assert_eq!(c.written.load(Ordering::SeqCst), 300);
    assert_eq!(c.dropped.load(Ordering::SeqCst), 0);
    assert_eq!(c.write_errors.load(Ordering::SeqCst), 0);
    writer.shutdown().unwrap();
}

#[test]
fn shutdown_writes_what_is_queued_and_refuses_later_events() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    let writer = StoreWriter::start(Store::open(&path).unwrap(), WriterOptions::default()).unwrap();
    for i in 0..500 {
        assert!(writer.emit(event(i, EventKind::Alert, None, None)));
    }
    writer.shutdown().unwrap();
    assert!(!writer.emit(event(9999, EventKind::Stop, None, None)));
    assert_eq!(writer.counters().dropped.load(Ordering::SeqCst), 1);
    writer.shutdown().unwrap(); // a second call is harmless
    assert!(matches!(writer.flush(), Err(WriterError::Stopped { .. })));
    let store = Store::open_read_only(&path).unwrap();
    assert_eq!(store.query(&Query::new()).unwrap().len(), 500);
}

#[test]
fn a_full_channel_drops_and_counts_instead_of_blocking() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    let options = WriterOptions {
        capacity: 8,
        max_batch: 4,
    };
    let writer = Arc::new(StoreWriter::start(Store::open(&path).unwrap(), options).unwrap());
    // Another process-like connection holds the write lock, so the writer
    // thread is stuck in its busy wait and the channel fills up.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let w = Arc::clone(&writer);
    thread::spawn(move || {
        let accepted = (0..1000)
            .filter(|&i| w.emit(event(i, EventKind::Alert, None, None)))
            .count() as u64;
        let _ = done_tx.send(accepted);
    });
    // If emit blocked, it would wait for the lock we still hold: a hang,
    // reported here as a failure instead.
    let accepted = done_rx
        .recv_timeout(HANG)
        .expect("emit blocked while the writer was stuck");
    blocker.execute_batch("COMMIT").unwrap();
    assert!((8..1000).contains(&accepted), "accepted {accepted}");
    let dropped = writer.counters().dropped.load(Ordering::SeqCst);
    assert_eq!(accepted + dropped, 1000);
    writer.flush().unwrap();
    assert_eq!(writer.counters().written.load(Ordering::SeqCst), accepted);
    let reader = Store::open_read_only(&path).unwrap();
    assert_eq!(reader.query(&Query::new()).unwrap().len() as u64, accepted);
}

#[test]
fn flush_timeout_gives_up_while_the_writer_is_stuck() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    let writer = StoreWriter::start(Store::open(&path).unwrap(), WriterOptions::default()).unwrap();
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert!(writer.emit(event(1, EventKind::Alert, None, None)));
    // The writer waits up to BUSY_TIMEOUT (5 s) for the lock we hold.
    let err = writer
        .flush_timeout(Some(Duration::from_millis(300)))
        .unwrap_err();
    assert!(matches!(err, WriterError::Timeout { .. }), "{err}");
    blocker.execute_batch("COMMIT").unwrap();
    writer.flush_timeout(Some(HANG)).unwrap();
    assert_eq!(writer.counters().written.load(Ordering::SeqCst), 1);
}

#[test]
fn a_reader_works_while_the_writer_writes() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    let writer = Arc::new(
        StoreWriter::start(Store::open(&path).unwrap(), WriterOptions::default()).unwrap(),
    );
    let total = 3000;
    let w = Arc::clone(&writer);
    let producer = thread::spawn(move || {
        for i in 0..total {
            // Backs off instead of dropping: this test is about readers.
            while !w.emit(event(i, EventKind::Alert, None, Some(i as i32))) {
                thread::sleep(Duration::from_millis(1));
            }
            if i % 100 == 0 {
                w.flush().unwrap();
            }
        }
        w.flush().unwrap();
    });
    let reader = Store::open_read_only(&path).unwrap();
    let (mut reads, mut last) = (0, 0);
    while !producer.is_finished() {
        let n = reader.query(&Query::new()).unwrap().len();
        assert!(n >= last, "the reader saw {n} events after {last}");
        last = n;
        reads += 1;
    }
    producer.join().unwrap();
    let dropped = writer.counters().dropped.load(Ordering::SeqCst);
    assert_eq!(reader.query(&Query::new()).unwrap().len() as i64, total);
    assert!(reads > 1, "the reader only ran {reads} time(s)");
    println!("{reads} reads during the writes; {dropped} emit retries");
}

#[test]
fn failed_writes_are_counted_and_reported_not_fatal() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    let writer = StoreWriter::start(Store::open(&path).unwrap(), WriterOptions::default()).unwrap();
    // Inject a write failure from outside, the way a full disk would surface.
    let sabotage = Connection::open(&path).unwrap();
    sabotage
        .execute_batch(
            "CREATE TRIGGER fail BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .unwrap();
    for i in 0..10 {
        assert!(writer.emit(event(i, EventKind::Alert, None, None)));
    }
    match writer.flush() {
        Err(WriterError::WriteFailed { lost, .. }) => assert_eq!(lost, 10),
        other => panic!("expected WriteFailed, got {other:?}"),
    }
    let c = writer.counters();
    assert!(c.write_errors.load(Ordering::SeqCst) >= 1);
    assert_eq!(c.lost.load(Ordering::SeqCst), 10);
    // The thread survived: once the fault is gone, writing resumes.
    sabotage.execute_batch("DROP TRIGGER fail").unwrap();
    assert!(writer.emit(event(100, EventKind::Alert, None, None)));
    writer.flush().unwrap();
    assert_eq!(c.written.load(Ordering::SeqCst), 1);
    writer.shutdown().unwrap();
}

#[test]
fn retention_runs_on_the_writer_thread() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    let writer = StoreWriter::start(Store::open(&path).unwrap(), WriterOptions::default()).unwrap();
    for i in 0..50 {
        writer.emit(event(i, EventKind::Alert, None, None));
    }
    let keep = Retention {
        max_age: None,
        max_count: Some(20),
    };
    // Retention is queued behind the events, so it sees all 50.
    assert_eq!(writer.apply_retention(keep).unwrap(), 30);
    let reader = Store::open_read_only(&path).unwrap();
    assert_eq!(reader.query(&Query::new()).unwrap().len(), 20);
}

#[test]
fn a_read_only_store_cannot_feed_a_writer() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    Store::open(&path).unwrap().close().unwrap();
    let err = StoreWriter::start(
        Store::open_read_only(&path).unwrap(),
        WriterOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, WriterError::ReadOnly { .. }), "{err}");
}
