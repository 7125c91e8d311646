//! The light detector's cycle (sample, publish, evaluate, hand off alerts)
//! allocates nothing after start-up — including when alerts fire and when the
//! queue is full.

use std::sync::mpsc::sync_channel;
use std::time::Duration;

use selfheal_config::{Config, Rule};
use selfheal_detect::LightDetector;
use selfheal_sampler::{SampleBoard, Sampler};
use selfheal_sys::alloc::CountingAllocator;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn cycle_with_alerts_allocates_nothing() {
    // A rule that holds on every sample (at least one CPU online), so
    // alerts are raised every sample and the 4-slot queue overflows.
    let cfg = Config::parse(
        "[light]\ndefault_rules = false\n[[rule]]\nname = \"always\"\nwhen = [{ metric = \"online_cpus\", at_least = 1 }]\n",
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    let rules: Vec<Rule> = cfg.effective_rules();
    let mut sampler = Sampler::new("/proc").unwrap();
    let mut sample = sampler.new_sample();
    let board = SampleBoard::new(sampler.cpus());
    // repeat = 1 ns: the alert is re-raised on every sample.
    let mut det = LightDetector::new(rules, sampler.cpus(), 50.0, Duration::from_nanos(1)).unwrap();
    let (tx, rx) = sync_channel(4);
    // The counters and cycle histogram the light thread records into.
    let stats = selfheal_detect::LightStats::new(1);
    for _ in 0..3 {
        sampler.sample(&mut sample).unwrap();
    }
    let mut sent = 0;
    let mut dropped = 0;
    // This thread's allocations only: libtest's main thread records the
    // test as running at a moment of its own, sometimes inside this window
    // on a loaded machine (4 allocations in a HashMap of running tests,
    // 90 of 200 runs beside a CI run), which is not the light cycle's.
    CountingAllocator::start_this_thread();
    for i in 0..100u64 {
        let t0 = std::time::Instant::now();
        sampler.sample(&mut sample).unwrap();
        board.publish(&sample);
        det.evaluate(&sample, &mut |a| match tx.try_send(a) {
            Ok(()) => sent += 1,
            Err(_) => dropped += 1,
        });
        // Spread over every bucket, +Inf included.
        stats.record_cycle(t0.elapsed().as_nanos() as u64 + i * 200_000);
    }
    let n = CountingAllocator::stop();
    assert_eq!(n, 0, "{n} allocations");
    // Four fit in the queue, the other 96 are dropped without blocking.
    assert_eq!((sent, dropped), (4, 96));
    assert_eq!(rx.try_iter().count(), 4);
    assert_eq!(stats.cycle_seconds.snapshot().count, 100);
}
