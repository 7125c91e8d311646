use std::collections::BTreeMap;

use super::*;
use crate::analyze::{KernelHit, QemuExit, RestartKind, SelfhealResult};
use crate::scenario::{Scenario, Workload};

/// One scored injection of `class` under `profile`.
fn run(class: FaultClass, profile: KernelProfile, outcome: Outcome) -> RunRecord {
    RunRecord {
        scenario: Scenario {
            id: format!("{class}-001"),
            class: Some(class),
            workload: Workload::Idle,
            profile,
            selfheal: profile.runs_selfheal(),
            dry_run: false,
            inject_ms: 4000,
            observe_s: 15,
            workload_s: 24,
            fault_cpu: 1,
            calibrate_s: 0,
            second_observe_s: 0,
            vm_checkpoints_off: false,
        },
        log_dir: "runs/x".into(),
        host_ms: 20_000,
        qemu_exit: QemuExit::Exited,
        booted: true,
        guest_cpus: Some(2),
        fault_start_ms: Some(10_000),
        fault_confirmed: true,
        selfheal: SelfhealResult::default(),
        kernel: BTreeMap::new(),
        kernel_false_alarms: BTreeMap::new(),
        outcome,
        outcome_note: String::new(),
        workload_ops: None,
        workload_elapsed_ms: None,
        errors: vec![],
        boots: 1,
        restart: None,
        restart_recorded: false,
        downtime_ms: None,
        downtime_clock: None,
        vm: None,
        other_cpu_lockup: None,
    }
}

/// The hand-computed case of docs/availability.md.
#[test]
fn the_model_matches_a_hand_computed_case() {
    // Class A: always restored in place in 10 s. Class B: half restarted
    // (60 s), half never restored (U = M + R = 3600 + 120 = 3720 s).
    let a = ClassInputs::from_endings(&[Ending::InPlace(10.0), Ending::InPlace(10.0)]).unwrap();
    let b = ClassInputs::from_endings(&[
        Ending::Restarted {
            downtime_s: 50.0,
            estimated: false,
        },
        Ending::Restarted {
            downtime_s: 70.0,
            estimated: false,
        },
        Ending::Unrestored,
        Ending::Unrestored,
    ])
    .unwrap();
    assert_eq!(
        (b.p_restart, b.p_unrestored, b.d_restart_s),
        (0.5, 0.5, 60.0)
    );
    let params = Params {
        faults_per_year: 12.0,
        mix: vec![(FaultClass::MemHog, 1.0), (FaultClass::DState, 1.0)],
        manual_repair_s: 3600.0,
        restart_s: 120.0,
    };
    // E[D_A] = 1·10 = 10 s; E[D_B] = ½·60 + ½·3720 = 1890 s.
    assert_eq!(a.expected_downtime_s(params.unrestored_s()), 10.0);
    assert_eq!(b.expected_downtime_s(params.unrestored_s()), 1890.0);
    let inputs = BTreeMap::from([(FaultClass::MemHog, a), (FaultClass::DState, b)]);
    let r = evaluate(KernelProfile::Restart, &inputs, &params);
    // E[D] = ½·10 + ½·1890 = 950 s. E[U] = 31 557 600 s / 12 = 2 629 800 s.
    // A = 2 629 800 / (2 629 800 + 950) = 0.999 638 886 (99.9639 %, 3.44 nines).
    // Downtime per year = 12 · A · 950 = 11 395.88 s = 189.93 min;
    //   mem_hog's part 12 · A · ½·10 = 59.98 s, d_state's 12 · A · ½·1890 = 11 335.90 s.
    // Restarts per year = 12 · A · ½·½ = 2.9989.
    assert_eq!(r.expected_downtime_s, Some(950.0));
    let avail = r.availability.unwrap();
    assert!((avail - 2_629_800.0 / 2_630_750.0).abs() < 1e-12, "{avail}");
    assert_eq!(percent(avail), "99.9639 %");
    assert!((nines(avail) - 3.442).abs() < 1e-3);
    let dt = r.downtime_per_year_s.unwrap();
    assert!((dt - 11_395.88).abs() < 0.01, "{dt}");
    assert!((dt - (1.0 - avail) * YEAR_S).abs() < 1e-6);
    let part = |c| r.class_per_year_s(c, 12.0).unwrap();
    assert!((part(FaultClass::MemHog) - 59.98).abs() < 0.01);
    assert!((part(FaultClass::DState) - 11_335.90).abs() < 0.01);
    assert!((r.restarts_per_year.unwrap() - 2.9989).abs() < 1e-4);
    // A class of the mix without runs: no result, and it is named.
    let r = evaluate(
        KernelProfile::None,
        &BTreeMap::from([(FaultClass::MemHog, a)]),
        &params,
    );
    assert_eq!(r.missing, [FaultClass::DState]);
    assert_eq!(r.availability, None);
}

#[test]
fn each_run_ends_in_place_restarted_or_unrestored() {
    let r_s = 120.0;
    // In place: until the heartbeats came back or selfheal's step reported,
    // whichever is later (a memory hog leaves every CPU beating).
    let mut r = run(FaultClass::MemHog, KernelProfile::Tight, Outcome::Healthy);
    r.downtime_ms = Some(2_000);
    r.selfheal.recover_ms = Some(4_500);
    assert_eq!(ending(&r, r_s), Ending::InPlace(4.5));
    r.selfheal.recover_ms = None;
    assert_eq!(ending(&r, r_s), Ending::InPlace(2.0));
    // A measured restart.
    let mut r = run(
        FaultClass::PreemptLoop,
        KernelProfile::Restart,
        Outcome::Restarted,
    );
    r.restart = Some(RestartKind::Controlled);
    r.downtime_ms = Some(20_990);
    assert_eq!(
        ending(&r, r_s),
        Ending::Restarted {
            downtime_s: 20.99,
            estimated: false
        }
    );
    // A panic under -no-reboot: the last report of the fault + R.
    let mut r = run(
        FaultClass::KmemLeak,
        KernelProfile::Tight,
        Outcome::Rebooted,
    );
    r.selfheal.detect_ms = Some(7_729);
    r.kernel.insert(
        "oom_killer".into(),
        KernelHit {
            latency_ms: 8_643,
            line: "Out of memory".into(),
        },
    );
    assert_eq!(
        ending(&r, r_s),
        Ending::Restarted {
            downtime_s: 128.643,
            estimated: true
        }
    );
    // Where the lab followed the reboot and the next boot never served:
    // not restored; likewise hung and degraded.
    for (profile, outcome) in [
        (KernelProfile::KernelPanic, Outcome::Rebooted),
        (KernelProfile::Tight, Outcome::Hung),
        (KernelProfile::Tight, Outcome::Degraded),
    ] {
        let r = run(FaultClass::SpinSelf, profile, outcome);
        assert_eq!(
            ending(&r, r_s),
            Ending::Unrestored,
            "{profile:?} {outcome:?}"
        );
    }
}

#[test]
fn the_table_groups_runs_by_profile_and_skips_dry_runs() {
    let mut runs = vec![
        run(FaultClass::RtHog, KernelProfile::Tight, Outcome::Healthy),
        run(FaultClass::RtHog, KernelProfile::Tight, Outcome::Degraded),
        run(FaultClass::RtHog, KernelProfile::None, Outcome::Hung),
    ];
    let mut dry = run(FaultClass::RtHog, KernelProfile::None, Outcome::Healthy);
    dry.scenario.dry_run = true;
    runs.push(dry);
    let report = crate::report::summarize(crate::report::Meta::default(), runs);
    let params = Params {
        faults_per_year: 1.0,
        mix: vec![(FaultClass::RtHog, 1.0)],
        manual_repair_s: 3600.0,
        restart_s: 0.0,
    };
    let t = from_report(&report, &params);
    let names: Vec<&str> = t.profiles.iter().map(|r| r.profile.name()).collect();
    assert_eq!(names, ["tight", "none"]);
    assert_eq!(t.profiles[0].per_class_s[&FaultClass::RtHog], 1800.0);
    assert_eq!(t.profiles[1].inputs[&FaultClass::RtHog].runs, 1);
    assert_eq!(t.profiles[1].per_class_s[&FaultClass::RtHog], 3600.0);
}

#[test]
fn mixes_and_durations_parse_and_bad_ones_are_explained() {
    let m = parse_mix(&["mem_hog=2,d_state=1".into()]).unwrap();
    assert_eq!(m, [(FaultClass::MemHog, 2.0), (FaultClass::DState, 1.0)]);
    for (bad, says) in [
        ("mem_hog", "class=weight"),
        ("nope=1", "unknown fault class `nope`; known classes: "),
        ("mem_hog=-1", "≥ 0"),
        ("mem_hog=x", "≥ 0"),
        ("mem_hog=0", "zero"),
        ("mem_hog=1,mem_hog=2", "twice"),
    ] {
        let e = parse_mix(&[bad.into()]).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
    let total: f64 = default_mix().iter().map(|(_, w)| w).sum();
    assert!((total - 1.0).abs() < 1e-9);
    assert_eq!(default_mix().len(), FaultClass::ALL.len());

    assert_eq!(positive_rate("2.5").unwrap(), 2.5);
    for bad in ["-1", "0", "inf", "NaN", "x"] {
        let e = positive_rate(bad).unwrap_err().to_string();
        assert!(e.contains("--faults-per-year") && e.contains("> 0"), "{e}");
    }
    assert_eq!(parse_seconds("--restart-time", "90").unwrap(), 90.0);
    assert_eq!(parse_seconds("--restart-time", "2m").unwrap(), 120.0);
    assert_eq!(parse_seconds("--manual-repair", "1h").unwrap(), 3600.0);
    let e = parse_seconds("--restart-time", "-5")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--restart-time `-5`") && e.contains("≥ 0"),
        "{e}"
    );
}

#[test]
fn percentages_show_the_digits_past_the_nines() {
    assert_eq!(percent(0.99), "99.000 %");
    assert_eq!(percent(0.999_118), "99.9118 %");
    assert_eq!(percent(0.999_999_12), "99.9999120 %");
    assert_eq!(percent(1.0), "100.00 %");
    assert_eq!(percent(0.5), "50.00 %");
}
