//! The hang pipeline in-process, without injected faults: alerts become
//! events and wake the heavy detector, the watchdog chain notices a starved
//! light detector, metrics are exposed. Recovery is confined to a cgroup
//! that does not exist, so nothing on this shared machine can be touched.

mod common;

use std::time::{Duration, Instant};

use common::*;
use selfheal_diagnose::Trigger;
use selfheal_event::EventKind;

const NOWHERE: &str = "/selfheal-test-nowhere";

#[test]
fn a_manual_trigger_gets_a_conclusion_and_touches_nothing() {
    let mut o = Options::new(NOWHERE);
    o.stall = false;
    let h = Harness::start(o);
    assert!(h.pipeline().request(Trigger::Manual));
    let e = h
        .wait_event(Duration::from_secs(10), |e| {
            matches!(e.kind, EventKind::Diagnosis | EventKind::Dismissed)
                && e.details["trigger"]["kind"] == "manual"
        })
        .expect("the heavy detector concluded something within 10 s");
    assert!(e.details["class"].is_string());
    assert!(
        h.calls().is_empty(),
        "recovery acted outside its scope: {:?}",
        h.calls()
    );
    let stats = h.pipeline().stats();
    assert!(
        stats
            .heavy_runs
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            .sum::<u64>()
            >= 1
    );
    h.stop();
}

#[test]
fn light_alerts_are_recorded_as_events() {
    let mut o = Options::new(NOWHERE);
    o.stall = false;
    o.light = false;
    let rules = o.config.effective_rules();
    let idx = rules
        .iter()
        .position(|r| r.name == "run_queue_long")
        .unwrap();
    let h = Harness::start(o);
    let alert = selfheal_detect::Alert {
        rule_index: idx as u16,
        level: selfheal_config::Level::Light,
        instance: selfheal_detect::AlertInstance::System,
        raised_at: Instant::now(),
        wall_unix_ms: selfheal_event::unix_ms(std::time::SystemTime::now()),
        held_for: Duration::from_millis(300),
        sample_seq: 7,
        values: [9.0, f64::NAN, f64::NAN, f64::NAN],
        repeat: false,
    };
    h.alerts.try_send(alert).unwrap();
    let e = h
        .wait_event(Duration::from_secs(5), |e| e.kind == EventKind::Alert)
        .expect("alert event");
    assert_eq!(e.rule.as_deref(), Some("run_queue_long"));
    assert_eq!(e.details["sample_seq"], 7);
    // It woke the heavy detector, which concluded about it.
    assert!(h
        .wait_event(Duration::from_secs(10), |e| e.details["trigger"]["rule"]
            == "run_queue_long")
        .is_some());
    h.stop();
}

#[test]
fn a_starved_light_detector_trips_the_watchdog_chain() {
    let mut o = Options::new(NOWHERE);
    o.stall = false;
    o.light = false;
    o.config.watchdog.period = selfheal_config::HumanDuration::from_millis(20);
    o.config.watchdog.missed_periods = 5; // 5 × 100 ms light periods
    let h = Harness::start(o);
    // Beat like a light detector for a second.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        h.heartbeat.beat();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(h.pipeline().is_healthy());
    // Starve it.
    let missed = h
        .wait_event(Duration::from_secs(5), |e| {
            e.kind == EventKind::Watchdog && e.details["state"] == "missed"
        })
        .expect("watchdog event for the starved light detector");
    assert_eq!(missed.details["component"], "light");
    assert!(!h.pipeline().is_healthy());
    h.heartbeat.beat();
    assert!(h
        .wait_event(Duration::from_secs(5), |e| e.details["state"]
            == "recovered")
        .is_some());
    assert!(wait_until(Duration::from_secs(2), || {
        h.heartbeat.beat();
        h.pipeline().is_healthy()
    }));
    h.stop();
}

#[test]
fn metrics_expose_the_pipeline() {
    let h = Harness::start(Options::new(NOWHERE));
    std::thread::sleep(Duration::from_millis(500));
    let reg = selfheal_metrics::Registry::new();
    reg.register(h.pipeline().collector());
    let text = reg.render();
    for family in [
        "selfheal_diagnoses_total{class=\"rt_hog\"}",
        "selfheal_heavy_runs_total{trigger=\"stall\"}",
        "selfheal_watchdog_chain_healthy",
        "selfheal_heartbeat_age_seconds{component=\"light\"}",
        "selfheal_sweep_threads",
    ] {
        assert!(text.contains(family), "missing {family} in:\n{text}");
    }
    if selfheal_sys::process::is_root() {
        assert!(
            text.contains("selfheal_cpu_canary_age_seconds{cpu=\"0\"}"),
            "{text}"
        );
    }
    let t = Instant::now();
    h.stop();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t.elapsed()
    );
}

#[test]
fn canaries_tick_on_their_own_while_the_light_detector_is_starved() {
    const TEST: &str = "canaries_tick_on_their_own_while_the_light_detector_is_starved";
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP {TEST}: canaries need SCHED_FIFO (root or CAP_SYS_NICE)");
        return;
    }
    let mut h = Harness::start(Options::new(NOWHERE));
    let stall = h.pipeline().stall_state().expect("stall detector runs");
    // The light thread arms and parks the canaries; whether they are armed
    // now depends on what else keeps this machine's CPUs busy. Stop it.
    std::thread::sleep(Duration::from_millis(500));
    h.light.take().unwrap().stop();
    let alive: Vec<usize> = (0..stall.cpus.len())
        .filter(|&i| {
            stall.cpus[i]
                .alive
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect();
    assert!(!alive.is_empty());
    // The watchdog chain sees it starve (1 s) and arms every canary.
    assert!(
        wait_until(Duration::from_secs(5), || alive
            .iter()
            .all(|&i| stall.cpus[i].is_armed())),
        "canaries not armed after the light detector stopped"
    );
    let ticks = |i: usize| {
        stall.cpus[i]
            .ticks
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before: Vec<u64> = alive.iter().map(|&i| ticks(i)).collect();
    std::thread::sleep(Duration::from_millis(500));
    for (k, &i) in alive.iter().enumerate() {
        assert!(ticks(i) >= before[k] + 2, "cpu {i}'s canary does not tick");
    }
    assert!(h.pipeline().stalled_cpus().is_empty());
    h.stop();
}
