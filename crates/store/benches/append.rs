//! Append throughput through the daemon's writer thread: events emitted as
//! fast as the channel accepts them, then flushed (fsynced) to disk.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use selfheal_event::{Culprit, Event, EventKind, EventSink, Severity, Source};
use selfheal_store::{Store, StoreWriter, WriterOptions};

const EVENTS: u64 = 2000;

fn event(i: u64) -> Event {
    Event::now(
        EventKind::Alert,
        Severity::Warning,
        Source::Light,
        format!("sys high #{i}"),
    )
    .with_rule("kernel_spin")
    .with_culprit(Culprit {
        pid: Some(1000 + (i % 50) as i32),
        comm: Some("spin".into()),
        cpu: Some((i % 2) as u32),
        ..Culprit::default()
    })
    .with_details(serde_json::json!({
        "usr": 0.5, "sys": 97.5, "iowait": 0.0, "run": 3, "blk": 0, "cs": 120
    }))
}

fn append_via_writer(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_writer");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("emit_and_flush_2000", |b| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("bench.db")).expect("open store");
        // Capacity above EVENTS: the benchmark measures writing, not dropping.
        let options = WriterOptions {
            capacity: EVENTS as usize * 2,
            ..WriterOptions::default()
        };
        let writer = StoreWriter::start(store, options).expect("start writer");
        let events: Vec<Event> = (0..EVENTS).map(event).collect();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = events.clone();
                let start = Instant::now();
                for e in batch {
                    assert!(writer.emit(e), "the writer dropped an event");
                }
                writer.flush().expect("flush");
                total += start.elapsed();
            }
            total
        });
        writer.shutdown().expect("shutdown");
    });
    // One event per transaction: the cost of one durable commit (fsync),
    // which bounds throughput when events trickle in one at a time.
    group.throughput(Throughput::Elements(1));
    group.bench_function("emit_and_flush_1", |b| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("bench.db")).expect("open store");
        let writer = StoreWriter::start(store, WriterOptions::default()).expect("start writer");
        let mut i = 0;
        b.iter(|| {
            i += 1;
            assert!(writer.emit(event(i)), "the writer dropped an event");
            writer.flush().expect("flush");
        });
        writer.shutdown().expect("shutdown");
    });
    group.finish();
}

criterion_group!(benches, append_via_writer);
criterion_main!(benches);
