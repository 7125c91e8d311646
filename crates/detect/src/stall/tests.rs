use super::*;
use crate::heartbeat::Heartbeat;
use std::sync::Mutex;

fn options(bound_ms: u64, tick_ms: u64, on_demand: bool) -> StallOptions {
    StallOptions {
        bound: Duration::from_millis(bound_ms),
        tick: Duration::from_millis(tick_ms),
        canary_priority: 1,
        perf_counters: true,
        cpus: (0..selfheal_sys::sched::cpus_configured()).collect(),
        on_demand,
        arm_idle_percent: 20.0,
        disarm_after: 3,
    }
}

#[test]
fn transitions_are_reported_once() {
    let mut shared = StallShared::new(&StallOptions {
        cpus: vec![3],
        ..options(200, 100, false)
    });
    shared.base -= Duration::from_secs(10);
    let c = &shared.cpus[0];
    c.alive.store(true, Ordering::Release);
    c.last_tick_ns.store(1, Ordering::Release);
    c.counting.store(true, Ordering::Relaxed);
    c.gap_context_switches.store(7, Ordering::Relaxed);
    let seen: Mutex<Vec<StallEvent>> = Mutex::default();
    let record = |e: StallEvent| seen.lock().unwrap().push(e);
    shared.check(&record);
    shared.check(&record);
    assert_eq!(shared.stalled().len(), 1);
    // A stalled CPU's canary stays armed.
    assert!(!shared.disarm(0));
    // The canary ticks again.
    shared.cpus[0]
        .last_tick_ns
        .store(shared.now_ns(), Ordering::Release);
    shared.check(&record);
    shared.check(&record);
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        matches!(seen[0], StallEvent::Stalled { cpu: 3, stalled_for, .. } if stalled_for >= Duration::from_secs(9))
    );
    assert!(matches!(
        seen[1],
        StallEvent::Cleared {
            cpu: 3,
            context_switches: Some(7),
            ..
        }
    ));
    assert_eq!(shared.stalls_total.load(Ordering::Relaxed), 1);
    assert!(shared.stalled().is_empty());
}

#[test]
fn a_rebaseline_after_a_vm_rollback_is_no_stall_but_a_later_one_is() {
    let mut shared = StallShared::new(&StallOptions {
        cpus: vec![1],
        ..options(200, 100, false)
    });
    // The canary last ran 10 s ago on the guest's clock: the VM was
    // rolled back and its clocks jumped forward.
    shared.base -= Duration::from_secs(10);
    let c = &shared.cpus[0];
    c.alive.store(true, Ordering::Release);
    c.last_tick_ns.store(1, Ordering::Release);
    shared.rebaseline();
    let seen: Mutex<Vec<StallEvent>> = Mutex::default();
    let record = |e: StallEvent| seen.lock().unwrap().push(e);
    shared.check(&record);
    assert!(seen.lock().unwrap().is_empty(), "the jump is not a stall");
    // Still silent past the bound from the re-baseline: a stall.
    std::thread::sleep(Duration::from_millis(260));
    shared.check(&record);
    assert!(
        matches!(
            seen.lock().unwrap()[..],
            [StallEvent::Stalled { cpu: 1, .. }]
        ),
        "{seen:?}"
    );
}

#[test]
fn a_parked_canary_is_never_reported() {
    let mut shared = StallShared::new(&options(200, 100, true));
    shared.base -= Duration::from_secs(10);
    for (i, c) in shared.cpus.iter().enumerate() {
        c.alive.store(true, Ordering::Release);
        c.last_tick_ns.store(1, Ordering::Release);
        assert!(shared.disarm(i));
    }
    let record = |e: StallEvent| panic!("{e:?}");
    assert_eq!(shared.check(&record), None);
    // Armed again: its silence counts from the arming, not from its
    // last tick 10 s ago.
    assert!(shared.arm(0, Instant::now()));
    assert!(!shared.arm(0, Instant::now()), "already armed");
    let due = shared.check(&record).expect("a check at the bound");
    let left = due.saturating_duration_since(Instant::now());
    assert!(
        left > Duration::from_millis(150) && left <= Duration::from_millis(200),
        "{left:?}"
    );
}

fn root_or_skip(test: &str) -> bool {
    let root = selfheal_sys::process::is_root();
    if !root {
        eprintln!("SKIP {test}: canaries need SCHED_FIFO (root or CAP_SYS_NICE)");
    }
    root
}

#[test]
fn canaries_tick_on_every_cpu() {
    if !root_or_skip("canaries_tick_on_every_cpu") {
        return;
    }
    let events: Arc<Mutex<Vec<StallEvent>>> = Arc::default();
    let e2 = events.clone();
    // A generous bound: the shared test machine may run other RT work.
    let d = StallDetector::spawn(
        options(2_000, 5, false),
        Arc::new(move |e| e2.lock().unwrap().push(e)),
    )
    .unwrap();
    assert!(d.driver().is_none(), "always armed: no driver");
    let shared = d.shared();
    std::thread::sleep(Duration::from_millis(300));
    assert!(shared.all_realtime(), "{:?}", d.notes());
    for (cpu, age) in shared.ages() {
        let age = age.unwrap_or_else(|| panic!("cpu {cpu} never ticked"));
        assert!(
            age < Duration::from_secs(1),
            "cpu {cpu} last ticked {age:?} ago"
        );
    }
    assert!(shared
        .cpus
        .iter()
        .all(|c| c.ticks.load(Ordering::Relaxed) > 10));
    assert!(shared.heartbeat.is_fresh(Duration::from_secs(1)));
    let t = Instant::now();
    d.stop();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .all(|e| !matches!(e, StallEvent::Stalled { .. })));
}

#[test]
fn parked_canaries_do_not_run_until_armed() {
    if !root_or_skip("parked_canaries_do_not_run_until_armed") {
        return;
    }
    let events: Arc<Mutex<Vec<StallEvent>>> = Arc::default();
    let e2 = events.clone();
    let d = StallDetector::spawn(
        options(2_000, 10, true),
        Arc::new(move |e| e2.lock().unwrap().push(e)),
    )
    .unwrap();
    let shared = d.shared();
    assert!(shared.all_realtime(), "{:?}", d.notes());
    for i in 0..shared.cpus.len() {
        shared.disarm(i);
    }
    std::thread::sleep(Duration::from_millis(50));
    let ticks = |s: &StallShared| -> Vec<u64> {
        s.cpus
            .iter()
            .map(|c| c.ticks.load(Ordering::Relaxed))
            .collect()
    };
    let parked = ticks(&shared);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ticks(&shared), parked, "a parked canary ticked");
    // Armed: it runs at once (it is real-time), then every tick.
    let t = Instant::now();
    assert!(shared.arm(0, t));
    let first = (0..200).find_map(|_| {
        std::thread::sleep(Duration::from_millis(1));
        (shared.cpus[0].ticks.load(Ordering::Relaxed) > parked[0]).then(|| t.elapsed())
    });
    let first = first.expect("armed canary ran within 200 ms");
    eprintln!("armed canary ran {first:?} after the arming");
    std::thread::sleep(Duration::from_millis(200));
    assert!(shared.cpus[0].ticks.load(Ordering::Relaxed) >= parked[0] + 5);
    // Stopping wakes parked canaries too.
    let t = Instant::now();
    d.stop();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(shared.cpus.iter().all(|c| !c.alive.load(Ordering::Relaxed)));
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .all(|e| !matches!(e, StallEvent::Stalled { .. })));
}

#[test]
fn parked_canaries_arm_themselves_when_the_driver_is_silent() {
    let shared = StallShared::new(&options(200, 100, true));
    for i in 0..shared.cpus.len() {
        shared.disarm(i);
    }
    // No driver known: nothing happens.
    assert!(!shared.arm_if_driver_silent());
    let hb = Arc::new(Heartbeat::new());
    shared.watch_driver(hb.clone(), Duration::from_millis(50));
    // A driver that never beat has not started yet.
    assert!(!shared.arm_if_driver_silent());
    hb.beat();
    assert!(!shared.arm_if_driver_silent(), "fresh beat");
    std::thread::sleep(Duration::from_millis(80));
    let before = Instant::now();
    assert!(shared.arm_if_driver_silent());
    assert!(shared.cpus.iter().all(CpuCanary::is_armed));
    assert_eq!(shared.self_arms.load(Ordering::Relaxed), 1);
    // Silence counts from the driver's last beat, not from now.
    let from = shared.cpus[0].watch_from_ns.load(Ordering::Acquire);
    assert!(shared.instant(from) + Duration::from_millis(70) <= before);
    // Already armed: no second count.
    assert!(!shared.arm_if_driver_silent());
    assert_eq!(shared.self_arms.load(Ordering::Relaxed), 1);
}

#[test]
fn threads_leave_a_stalled_cpu_and_come_back() {
    let home = selfheal_sys::sched::affinity(0).unwrap();
    if home.len() < 2 {
        eprintln!("SKIP: needs two CPUs, this process may use {home:?}");
        return;
    }
    let shared = StallShared::new(&StallOptions {
        cpus: home.clone(),
        ..options(200, 100, true)
    });
    // Nothing stalled: nothing to do.
    assert!(!shared.evacuate_if_due());
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        tx.send(selfheal_sys::sched::gettid()).unwrap();
        let _ = done_rx.recv();
    });
    let tid = rx.recv().unwrap();
    let last = shared.cpus.len() - 1;
    let stalled_cpu = shared.cpus[last].cpu as usize;
    shared.cpus[last]
        .stalled_since_ns
        .store(1, Ordering::Release);
    assert!(shared.evacuate_if_due());
    let mask = selfheal_sys::sched::affinity(tid).unwrap();
    assert!(
        !mask.contains(&stalled_cpu),
        "{mask:?} still has cpu {stalled_cpu}"
    );
    assert!(!shared.evacuate_if_due(), "already moved");
    shared.cpus[last]
        .stalled_since_ns
        .store(0, Ordering::Release);
    assert!(shared.evacuate_if_due());
    assert_eq!(selfheal_sys::sched::affinity(tid).unwrap(), home);
    assert_eq!(shared.evacuations.load(Ordering::Relaxed), 2);
    drop(done_tx);
    helper.join().unwrap();
}

#[test]
fn one_parked_canary_checks_on_the_driver_from_another_cpu() {
    let shared = StallShared::new(&StallOptions {
        cpus: vec![0, 1, 2],
        ..options(200, 100, true)
    });
    for c in &shared.cpus {
        c.alive.store(true, Ordering::Release);
    }
    // No driver: every parked canary checks, as when canaries were armed
    // by nothing else.
    assert!((0..3).all(|i| shared.parked_wait(i) == PARKED_CHECK));
    shared.watch_driver(Arc::new(Heartbeat::new()), Duration::from_millis(50));
    // The driver has not said where it runs yet: all check.
    assert!((0..3).all(|i| shared.parked_wait(i) == PARKED_CHECK));
    // It runs on CPU 0: the canary of CPU 1 checks, the others back stop
    // (CPU 0's would be trapped with the driver).
    shared.note_driver_cpu(Some(0));
    let waits: Vec<_> = (0..3).map(|i| shared.parked_wait(i)).collect();
    assert_eq!(waits, [PARKED_BACKSTOP, PARKED_CHECK, PARKED_BACKSTOP]);
    // It moves onto the checker's CPU: CPU 0's canary takes over.
    shared.note_driver_cpu(Some(1));
    let waits: Vec<_> = (0..3).map(|i| shared.parked_wait(i)).collect();
    assert_eq!(waits, [PARKED_CHECK, PARKED_BACKSTOP, PARKED_BACKSTOP]);
    // A canary that does not run is never the checker.
    shared.cpus[0].alive.store(false, Ordering::Release);
    let waits: Vec<_> = (0..3).map(|i| shared.parked_wait(i)).collect();
    assert_eq!(waits, [PARKED_BACKSTOP, PARKED_BACKSTOP, PARKED_CHECK]);
    // The driver's CPU unknown again (sched_getcpu failed): all check.
    shared.note_driver_cpu(None);
    assert!((0..3).all(|i| shared.parked_wait(i) == PARKED_CHECK));
}

#[test]
fn a_new_checker_is_woken_when_the_driver_moves_onto_its_cpu() {
    let home = selfheal_sys::sched::affinity(0).unwrap();
    if home.len() < 2 {
        eprintln!("SKIP: needs two CPUs, this process may use {home:?}");
        return;
    }
    // Parked canaries on two CPUs, their driver known: the canary of the
    // driver's CPU waits for the backstop, and wakes when the driver moves
    // onto the checker's CPU.
    let opts = StallOptions {
        cpus: home[..2].to_vec(),
        ..options(200, 100, true)
    };
    let d = StallDetector::spawn(opts, Arc::new(|_| {})).unwrap();
    let shared = d.shared();
    if !shared.all_realtime() || shared.cpus.iter().any(|c| !c.alive.load(Ordering::Relaxed)) {
        eprintln!(
            "SKIP: canaries need SCHED_FIFO and both CPUs: {:?}",
            d.notes()
        );
        return;
    }
    let hb = Arc::new(Heartbeat::new());
    hb.beat();
    shared.watch_driver(hb.clone(), Duration::from_secs(60));
    shared.note_driver_cpu(Some(shared.cpus[0].cpu as usize));
    for i in 0..2 {
        shared.disarm(i);
    }
    // Let both settle into their parked waits.
    std::thread::sleep(Duration::from_millis(300));
    let before = shared.cpus[0].ticks.load(Ordering::Relaxed);
    shared.note_driver_cpu(Some(shared.cpus[1].cpu as usize));
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared.cpus[0].ticks.load(Ordering::Relaxed) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        shared.cpus[0].ticks.load(Ordering::Relaxed) > before,
        "the new checker was not woken"
    );
    assert_eq!(shared.parked_wait(0), PARKED_CHECK);
    d.stop();
}
