//! The stall driver's part of the light detector's cycle (arm and park
//! canaries, check the armed ones, report stalls) allocates nothing after
//! start-up. A test binary of its own: the allocation count is process-wide,
//! and the test harness allocates when a neighbouring test finishes.

use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal_detect::stall::{StallDetector, StallDriver, StallEvent, StallOptions, StallShared};
use selfheal_sampler::{CpuMetric, Sample};
use selfheal_sys::alloc::CountingAllocator;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn set_idle(s: &mut Sample, cpu: usize, idle: f64) {
    s.cpus[cpu][CpuMetric::IdlePercent.index()] = idle;
    s.cpus[cpu][CpuMetric::IowaitPercent.index()] = 0.0;
    s.cpus[cpu][CpuMetric::AccountedPercent.index()] = 100.0;
}

#[test]
fn stall_driver_allocates_nothing() {
    let cpus = selfheal_sys::sched::cpus_configured();
    let options = StallOptions {
        bound: Duration::from_millis(20),
        tick: Duration::from_millis(10),
        canary_priority: 1,
        perf_counters: true,
        cpus: (0..cpus).collect(),
        on_demand: true,
        arm_idle_percent: 20.0,
        disarm_after: 1,
    };
    let (tx, rx) = sync_channel::<StallEvent>(4);
    let on_event: Arc<dyn Fn(StallEvent) + Send + Sync> = Arc::new(move |e| {
        let _ = tx.try_send(e);
    });
    // Real canaries when we may run them (root): arming unparks real
    // threads, and their own loop runs while we count.
    let detector = selfheal_sys::process::is_root()
        .then(|| StallDetector::spawn(options.clone(), on_event.clone()).unwrap());
    let mut real = detector.as_ref().and_then(StallDetector::driver);
    if real.is_none() {
        eprintln!("stall_driver_allocates_nothing: not root, no real canaries (driver only)");
    }
    // Canaries that never run: their CPUs stall, the driver reports it.
    let silent = Arc::new(StallShared::new(&options));
    for c in &silent.cpus {
        c.alive.store(true, Ordering::Release);
        c.last_tick_ns.store(1, Ordering::Release);
    }
    let mut driver = StallDriver::new(silent.clone(), on_event, 20.0, 1);
    let mut sample = Sample::with_cpus(cpus);
    sample.interval = Duration::from_millis(100);
    let mut arms = 0;
    CountingAllocator::start();
    let start = Instant::now();
    for k in 0..100 {
        sample.taken_at = Instant::now();
        // Every CPU alternates busy and idle: armed, parked, armed…
        for cpu in 0..cpus {
            set_idle(&mut sample, cpu, if k % 2 == 0 { 0.0 } else { 100.0 });
        }
        if let Some(d) = real.as_mut() {
            d.feed(&sample);
        }
        // Silent CPU 0 stays busy (it stalls); its canary runs at k = 60.
        set_idle(&mut sample, 0, 0.0);
        if k == 60 {
            silent.record_tick(0);
        }
        driver.feed(&sample);
        std::thread::sleep(Duration::from_millis(1));
        if let Some(due) = driver.check() {
            arms += usize::from(due > start);
        }
    }
    let n = CountingAllocator::stop();
    assert_eq!(n, 0, "{n} allocations");
    let events: Vec<StallEvent> = rx.try_iter().collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StallEvent::Stalled { cpu: 0, .. })),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StallEvent::Cleared { cpu: 0, .. })),
        "{events:?}"
    );
    assert!(arms > 0, "the driver asked for checks between samples");
    if let Some(d) = detector {
        let armings: u64 = d
            .shared()
            .cpus
            .iter()
            .map(|c| c.arms.load(Ordering::Relaxed))
            .sum();
        assert!(armings >= 40, "{armings} armings");
        d.stop();
    }
}
