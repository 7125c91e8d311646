//! Tests for the run scorer on serial logs captured from real guest runs
//! (crates/lab/tests/data/<run>/: console.log, lab.log, events.log, run.json,
//! copied verbatim from a `selfheal-lab run --placeholder --quick`). Those
//! runs had the placeholder, so selfheal events used to test selfheal
//! scoring are written here, timed against the real markers.

use std::path::PathBuf;

use super::*;
use crate::report;
use crate::scenario::Workload;

struct Captured {
    scenario: Scenario,
    exit: QemuExit,
    host_ms: u64,
    console: String,
    lab: String,
    events: String,
}

fn load(run: &str) -> Captured {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(run);
    let read = |f: &str| String::from_utf8_lossy(&std::fs::read(dir.join(f)).unwrap()).into_owned();
    let rf: serde_json::Value = serde_json::from_str(&read("run.json")).unwrap();
    Captured {
        scenario: serde_json::from_value(rf["scenario"].clone()).unwrap(),
        exit: serde_json::from_value(rf["exit"].clone()).unwrap(),
        host_ms: rf["host_ms"].as_u64().unwrap(),
        console: read("console.log"),
        lab: read("lab.log"),
        events: read("events.log"),
    }
}

fn score(c: &Captured, events: Option<&str>) -> RunRecord {
    analyze(
        &c.scenario,
        "runs/x",
        RawRun {
            console: &c.console,
            lab: &c.lab,
            events: events.unwrap_or(&c.events),
            host_marks: "",
            qemu_exit: c.exit,
            host_ms: c.host_ms,
        },
    )
}

fn event(t: i64, kind: &str, extra: &str) -> String {
    format!(
        r#"{{"time_unix_ms":{t},"kind":"{kind}","severity":"critical","source":"heavy","message":"m"{extra}}}"#
    )
}

#[test]
fn preempt_loop_kernel_detectors_are_timed_from_the_module_start_line() {
    let c = load("preempt_loop-001");
    let r = score(&c, None);
    assert!(r.booted && r.fault_confirmed, "{:?}", r.errors);
    assert_eq!(r.guest_cpus, Some(2));
    // Console: module start line at 7.722684 s, RCU stall at 10.7…, soft lockup later.
    let rcu = &r.kernel["rcu_stall"];
    assert!((2900..=3300).contains(&rcu.latency_ms), "{rcu:?}");
    assert!(rcu.line.contains("rcu_preempt"));
    assert!(r.kernel["soft_lockup"].latency_ms > rcu.latency_ms);
    assert!(
        !r.kernel.contains_key("hard_lockup"),
        "no perf NMI under TCG"
    );
    // Placeholder: nothing detected, marked as such.
    assert!(r.selfheal.placeholder);
    assert_eq!(r.selfheal.detect_ms, None);
    // The loop never ends: the CPU's heartbeat stops and the kthread stays.
    assert_eq!(r.outcome, Outcome::Degraded);
    assert!(
        r.outcome_note.contains("cpu1 heartbeat"),
        "{}",
        r.outcome_note
    );
    assert!(r.outcome_note.contains("fault task"), "{}", r.outcome_note);
}

#[test]
fn selfheal_events_are_scored_against_the_fault_start() {
    let c = load("preempt_loop-001");
    // Fault start: INJECT real 1795315615176 at printk 7.618141, module line at
    // 7.722684 → 1795315615280 on the unix clock.
    let start = 1_795_315_615_280;
    let events = [
        event(start - 2000, "alert", r#","rule":"early""#),
        // Names CPU 0 while the loop is pinned to CPU 1: not about the fault.
        event(
            start + 10,
            "alert",
            r#","rule":"kernel_spin","culprit":{"cpu":0}"#,
        ),
        event(start + 40, "alert", r#","rule":"kernel_spin""#),
        event(
            start + 90,
            "diagnosis",
            r#","culprit":{"cpu":1},"details":{"class":"kernel_stall"}"#,
        ),
        event(
            start + 100,
            "recovery",
            r#","details":{"action":"record","outcome":"recorded"}"#,
        ),
        event(
            start + 120,
            "recovery",
            r#","details":{"action":"stop","outcome":"recovered"}"#,
        ),
    ]
    .join("\n");
    let r = score(&c, Some(&events));
    assert_eq!(r.fault_start_ms, Some(start));
    let s = &r.selfheal;
    assert_eq!(s.detect_ms, Some(40));
    assert_eq!(s.detect_by.as_deref(), Some("alert:kernel_spin"));
    assert_eq!(s.diagnose_ms, Some(90));
    assert_eq!(s.diagnosed_correctly, Some(true));
    assert_eq!(s.culprit_correct, Some(true), "names the stalled CPU");
    assert_eq!(
        s.recover_ms,
        Some(120),
        "the step that cleared it, not the evidence record"
    );
    assert_eq!(
        s.recovery.as_deref(),
        Some("record→recorded, stop→recovered")
    );
    assert_eq!(s.false_alarms, 1, "the alert before the injection");
    assert!(!s.placeholder);
}

#[test]
fn misdiagnosis_and_kernel_relays_are_not_credited() {
    let c = load("d_state-001");
    let r0 = score(&c, None);
    let start = r0.fault_start_ms.unwrap();
    let events = [
        // selfheal relaying the kernel's hung-task report is not its detection.
        event(start + 1700, "kernel", r#","source":"kmsg""#),
        event(
            start + 2500,
            "diagnosis",
            r#","culprit":{"pid":9,"comm":"lab_mix"},"details":{"class":"legitimate_load"}"#,
        ),
        event(
            start + 3000,
            "diagnosis",
            r#","culprit":{"pid":9,"comm":"lab_dwaiter"},"details":{"class":"io_stall"}"#,
        ),
    ]
    .join("\n");
    let r = score(&c, Some(&events));
    assert_eq!(r.selfheal.detect_ms, Some(3000));
    assert_eq!(r.selfheal.diagnosis.as_deref(), Some("io_stall"));
    assert_eq!(r.selfheal.diagnosed_correctly, Some(false));
    assert_eq!(
        r.selfheal.culprit_correct,
        Some(false),
        "a waiter is not the holder"
    );
}

#[test]
fn d_state_cascade_is_seen_by_hung_task_and_left_degraded() {
    let r = score(&load("d_state-001"), None);
    assert!(r.fault_confirmed);
    let hit = &r.kernel["hung_task"];
    assert!(
        hit.line.contains("lab_dholder") || hit.line.contains("lab_dwaiter"),
        "{}",
        hit.line
    );
    assert!((900..=2500).contains(&hit.latency_ms), "{hit:?}");
    assert_eq!(r.outcome, Outcome::Degraded);
    assert!(r.outcome_note.contains("D state"), "{}", r.outcome_note);
}

#[test]
fn oom_killed_memory_hog_is_healthy_without_selfheal() {
    let r = score(&load("mem_hog-001"), None);
    assert!(r.kernel["oom_killer"].line.contains("lab_memhog"));
    assert_eq!(r.outcome, Outcome::Healthy, "{}", r.outcome_note);
    assert_eq!(r.selfheal.recover_ms, None);
}

#[test]
fn kernel_leak_ends_in_a_panic_reboot() {
    let r = score(&load("kmem_leak-001"), None);
    assert_eq!(r.outcome, Outcome::Rebooted);
    assert!(
        r.outcome_note.contains("Kernel panic"),
        "{}",
        r.outcome_note
    );
    assert!(r.kernel.contains_key("oom_killer"));
}

#[test]
fn guest_killed_after_its_end_marker_still_counts_as_alive() {
    // irq_loop: poweroff needs the stalled CPU, so the lab killed QEMU after END.
    let c = load("irq_loop-001");
    assert_eq!(c.exit, QemuExit::Killed);
    let r = score(&c, None);
    assert_eq!(r.outcome, Outcome::Degraded, "{}", r.outcome_note);
    assert!(r.kernel.contains_key("rcu_stall"));
}

#[test]
fn fault_free_runs_give_throughput_and_selfheal_cpu() {
    let with = score(&load("none-mix-selfheal-001"), None);
    let without = score(&load("none-mix-baseline-001"), None);
    assert_eq!(with.workload_ops, Some(4006));
    assert_eq!(with.workload_elapsed_ms, Some(12062));
    let ops = with.ops_per_s().unwrap();
    assert!((ops - 4006.0 / 12.062).abs() < 0.01, "{ops}");
    // 5 ticks at 100 Hz over the 12.674 s from SELFHEAL_START to END.
    let cpu = with.selfheal.cpu_pct.unwrap();
    assert!((cpu - 5.0 / 100.0 / 12.674 * 100.0).abs() < 0.001, "{cpu}");
    assert_eq!(without.selfheal.cpu_pct, None);
    assert!(with.kernel_false_alarms.is_empty());

    let rep = report::summarize(report::Meta::default(), vec![with, without]);
    let mix = rep
        .fault_free
        .iter()
        .find(|f| f.workload == Workload::Mix)
        .unwrap();
    assert_eq!(
        (mix.runs_with, mix.runs_without, mix.false_positive_runs),
        (1, 1, 0)
    );
    let expected = (1.0 - (4006.0 / 12.062) / (4021.0 / 12.042)) * 100.0;
    assert!((mix.overhead_pct.unwrap() - expected).abs() < 1e-6);
}

#[test]
fn class_summary_counts_outcomes_and_plain_findings() {
    let c = load("preempt_loop-001");
    let start = score(&c, None).fault_start_ms.unwrap();
    let good = [event(
        start + 80,
        "diagnosis",
        r#","culprit":{"cpu":1},"details":{"class":"kernel_stall"}"#,
    )]
    .join("\n");
    let wrong = [event(
        start + 200,
        "diagnosis",
        r#","culprit":{"cpu":1},"details":{"class":"rt_hog"}"#,
    )]
    .join("\n");
    let runs = vec![
        score(&c, Some(&good)),
        score(&c, Some(&wrong)),
        score(&c, Some("")),
    ];
    let rep = report::summarize(report::Meta::default(), runs);
    let s = &rep.classes[0];
    assert_eq!(s.class, FaultClass::PreemptLoop);
    assert_eq!((s.injections, s.selfheal.detected, s.missed), (3, 2, 1));
    assert_eq!(s.selfheal.median_ms, Some(140.0));
    assert_eq!(s.selfheal.p95_ms, Some(200.0));
    assert_eq!((s.diagnosed_correctly, s.degraded), (1, 3));
    assert_eq!(s.kernel["tight"]["rcu_stall"].detected, 3);
    let findings = report::plain_findings(&rep).join("\n");
    assert!(findings.contains("missed 1 of 3"), "{findings}");
    assert!(findings.contains("misdiagnosed as rt_hog ×1"), "{findings}");
    let md = report::markdown(&rep);
    assert!(md.contains("| preempt_loop |"));
    let svg = crate::plot::svg(&rep);
    assert!(svg.starts_with("<svg") && svg.contains("preempt_loop"));
}

#[test]
fn spin_abba_with_two_cpus_is_undetectable_by_design() {
    let c = load("spin_abba-001");
    assert_eq!(c.exit, QemuExit::Killed);
    let r = score(&c, None);
    assert!(!r.detectable());
    // Both CPUs spin: the scenario script never reaches END.
    assert_eq!(r.outcome, Outcome::Hung);
    let soft = &r.kernel["soft_lockup"];
    assert!(soft.line.contains("lab_abba"), "{}", soft.line);
    let rep = report::summarize(report::Meta::default(), vec![r]);
    assert!(rep.classes[0].undetectable_by_design);
    assert_eq!(rep.classes[0].hung, 1);
    assert!(report::plain_findings(&rep)[0].contains("no user-space detector"));
}

#[test]
fn rt_hog_left_running_is_degraded() {
    let r = score(&load("rt_hog-001"), None);
    assert_eq!(r.outcome, Outcome::Degraded);
    assert!(r.outcome_note.contains("fault task"), "{}", r.outcome_note);
    assert!(
        r.kernel.is_empty(),
        "a user-space RT hog trips no kernel detector: {:?}",
        r.kernel
    );
}

#[test]
fn real_selfheal_events_score_a_spinlock_stall() {
    // Captured with the real selfheal (light detector): kernel_spin on CPU 1.
    let r = score(&load("selfheal-spin_self-001"), None);
    assert!(!r.selfheal.placeholder);
    // Module start line 7.195591 s, INJECT 7.171652 s = 1795316880774 ms.
    assert_eq!(r.fault_start_ms, Some(1_795_316_880_774 + 23));
    assert_eq!(r.selfheal.detect_ms, Some(288));
    assert_eq!(r.selfheal.detect_by.as_deref(), Some("alert:kernel_spin"));
    assert_eq!(r.selfheal.false_alarms, 0);
    assert_eq!(
        r.selfheal.diagnosis, None,
        "no heavy detector in that build"
    );
}

#[test]
fn real_selfheal_alarm_on_the_other_cpu_before_injection_is_a_false_alarm() {
    let r = score(&load("selfheal-rt_hog-001"), None);
    // kernel_spin on CPU 0 came 223 ms before the injection (mix workload).
    assert_eq!(r.selfheal.false_alarms, 1);
    // The first credited event is the system-wide run-queue alert.
    assert_eq!(
        r.selfheal.detect_by.as_deref(),
        Some("alert:run_queue_long")
    );
    assert_eq!(
        r.selfheal.detect_ms,
        Some(1_795_316_976_866 - 1_795_316_974_889)
    );
}

#[test]
fn real_selfheal_alerts_under_legitimate_load_are_false_positives() {
    let r = score(&load("selfheal-none-mix-selfheal-001"), None);
    assert_eq!(r.scenario.class, None);
    assert_eq!(r.selfheal.false_alarms, 2);
    let rep = report::summarize(report::Meta::default(), vec![r]);
    assert_eq!(rep.fault_free[0].false_positive_runs, 1);
    assert_eq!(rep.fault_free[0].false_positive_events, 2);
}

/// heal2-2026-12-07's irq_loop-003, verbatim: interrupts off on CPU 1, and
/// CPU 0 stuck in a TLB shootdown waiting for it from the start (the
/// kernel: "soft lockup - CPU#0 stuck for 3s" at 15.28 s, the fault from
/// 12.2 s). The guest's watchdog device reset it; no user space was left
/// to act, and the report says so instead of counting it against selfheal.
#[test]
fn an_irq_loop_that_takes_the_other_cpu_with_it_left_no_cpu() {
    let c = load("irq_loop-cascade-003");
    let r = score(&c, None);
    assert!(r.fault_confirmed, "{:?}", r.errors);
    let l = r.other_cpu_lockup.as_ref().expect("CPU 0's lockup");
    assert_eq!(l.cpu, 0);
    assert!(l.onset_ms <= NO_CPU_LEFT_MS, "{l:?}");
    assert!(l.line.contains("CPU#0 stuck for 3s"), "{l:?}");
    assert!(r.left_no_cpu());
    assert!(
        r.outcome_note.contains("lockup of CPU 0"),
        "{}",
        r.outcome_note
    );
    let h = report::healing(&[&r]);
    assert_eq!((h.handled(), h.no_cpu_left), (0, 1));
}

/// The bystanders: a preempt_loop whose only lockup report is its own CPU,
/// and the unpinned classes, never count as leaving no CPU; nor does an
/// irq_loop whose other CPU locked up only 7 s in (at the guest's
/// poweroff, `[poweroff:126]`: user space had those 7 s).
#[test]
fn a_lockup_of_the_fault_cpu_alone_leaves_a_cpu_alive() {
    let r = score(&load("irq_loop-001"), None);
    let l = r.other_cpu_lockup.as_ref().expect("CPU 0 at poweroff");
    assert_eq!(l.cpu, 0);
    assert!((6_000..9_000).contains(&l.onset_ms), "{l:?}");
    assert!(!r.left_no_cpu());
    for run in ["preempt_loop-001", "mem_hog-001", "d_state-001"] {
        let r = score(&load(run), None);
        assert_eq!(r.other_cpu_lockup, None, "{run}: {}", r.outcome_note);
        assert!(!r.left_no_cpu(), "{run}");
    }
    let r = score(&load("preempt_loop-001"), None);
    assert!(
        r.kernel.contains_key("soft_lockup"),
        "the fault CPU's own report is there"
    );
}
