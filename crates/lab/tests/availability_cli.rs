//! `selfheal-lab availability` end to end: a small generated results
//! directory gives the table computed by hand below, and bad input gives a
//! message naming the input and the fix, with exit code 2.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use selfheal_lab::analyze::{Outcome, QemuExit, RunRecord, SelfhealResult};
use selfheal_lab::report::{summarize, Meta};
use selfheal_lab::scenario::{FaultClass, KernelProfile, Scenario, Workload};

fn run(class: FaultClass, profile: KernelProfile, outcome: Outcome) -> RunRecord {
    RunRecord {
        scenario: Scenario {
            id: format!("{class}-{}", profile.name()),
            class: Some(class),
            workload: Workload::Idle,
            profile,
            selfheal: true,
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
        downtime_ms: Some(0),
        downtime_clock: None,
        vm: None,
        other_cpu_lockup: None,
    }
}

/// tight: mem_hog recovered by selfheal at 4 s, and back by itself after a
/// 6 s heartbeat gap; d_state degraded twice. restart: mem_hog recovered at
/// 2 s; d_state restarted (40 s) once and hung once.
fn write_fixture(dir: &Path) {
    use FaultClass::{DState, MemHog};
    use KernelProfile::{Restart, Tight};
    let mut a = run(MemHog, Tight, Outcome::Healthy);
    a.selfheal.recover_ms = Some(4_000);
    let mut b = run(MemHog, Tight, Outcome::Healthy);
    b.downtime_ms = Some(6_000);
    let mut c = run(MemHog, Restart, Outcome::Healthy);
    c.selfheal.recover_ms = Some(2_000);
    let mut d = run(DState, Restart, Outcome::Restarted);
    d.downtime_ms = Some(40_000);
    let runs = vec![
        a,
        b,
        run(DState, Tight, Outcome::Degraded),
        run(DState, Tight, Outcome::Degraded),
        c,
        d,
        run(DState, Restart, Outcome::Hung),
    ];
    let report = summarize(Meta::default(), runs);
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string(&report).unwrap(),
    )
    .unwrap();
}

fn lab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfheal-lab"))
        .arg("availability")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_table_matches_the_hand_computation() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let results = dir.path().to_str().unwrap();
    let out = lab(&[
        "--results",
        results,
        "--faults-per-year",
        "4",
        "--mix",
        "mem_hog=3,d_state=1",
        "--manual-repair",
        "30m",
        "--restart-time",
        "60",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // λ = 4/year, m = (¾ mem_hog, ¼ d_state), U = M + R = 1800 + 60 = 1860 s.
    // tight:   E[D_mem_hog] = (4 + 6)/2 = 5 s; E[D_d_state] = U = 1860 s;
    //          E[D] = ¾·5 + ¼·1860 = 468.75 s = 7.8 min;
    //          A = 1/(1 + 4·468.75/31 557 600) = 0.999 940 588 (4.23 nines);
    //          downtime/year = 4·A·468.75 = 1874.9 s = 31.2 min
    //          (mem_hog 4·A·3.75 = 0.2 min, d_state 4·A·465 = 31.0 min).
    // restart: E[D_mem_hog] = 2 s; E[D_d_state] = ½·40 + ½·1860 = 950 s;
    //          E[D] = ¾·2 + ¼·950 = 239 s = 4.0 min;
    //          A = 1/(1 + 4·239/31 557 600) = 0.999 969 707 (4.52 nines);
    //          downtime/year = 4·A·239 = 956.0 s = 15.9 min
    //          (mem_hog 0.1 min, d_state 15.8 min); restarts/year 4·A·¼·½ = 0.50.
    for line in [
        "| tight | 75.0 % | 0.0 % | 25.0 % | 7.8 min | 99.99406 % | 4.23 | 31.2 min | 0.00 |",
        "| restart | 75.0 % | 12.5 % | 12.5 % | 4.0 min | 99.99697 % | 4.52 | 15.9 min | 0.50 |",
        "| mem_hog | 75% | tight | 2 | 2 (100 %) | 0 (0 %) | 0 (0 %) | 5.0 s | — | 5.0 s | 0.2 min |",
        "| mem_hog | 75% | restart | 1 | 1 (100 %) | 0 (0 %) | 0 (0 %) | 2.0 s | — | 2.0 s | 0.1 min |",
        "| d_state | 25% | tight | 2 | 0 (0 %) | 0 (0 %) | 2 (100 %) | — | — | 31.0 min | 31.0 min |",
        "| d_state | 25% | restart | 2 | 0 (0 %) | 1 (50 %) | 1 (50 %) | — | 40.0 s | 15.8 min | 15.8 min |",
    ] {
        assert!(stdout.lines().any(|l| l == line), "missing {line}\n{stdout}");
    }
    // The plot: well-formed SVG with one bar segment per class and profile.
    let svg = std::fs::read_to_string(dir.path().join("availability.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let titles: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(
        titles,
        [
            "tight mem_hog: 0.2 min",
            "tight d_state: 31.0 min",
            "restart mem_hog: 0.1 min",
            "restart d_state: 15.8 min"
        ]
    );
}

#[test]
fn a_mix_class_without_runs_gives_no_result_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let out = lab(&[
        "--results",
        dir.path().to_str().unwrap(),
        "--mix",
        "mem_hog=1,rt_hog=1",
        "--svg",
        dir.path().join("a.svg").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("| tight | — | — | — | — | — | — | — | — |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("No result for tight: no runs of rt_hog under it"),
        "{stdout}"
    );
}

#[test]
fn bad_input_is_named_with_its_fix_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let good = dir.path().to_str().unwrap().to_string();
    let corrupt = tempfile::tempdir().unwrap();
    std::fs::write(corrupt.path().join("results.json"), "{\"meta\": [").unwrap();
    let empty = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--results", missing.to_str().unwrap()],
            "not a directory; pass the directory a `selfheal-lab run` wrote",
        ),
        (
            vec!["--results", empty.path().to_str().unwrap()],
            "results.json: No such file",
        ),
        (
            vec!["--results", corrupt.path().to_str().unwrap()],
            "is not a lab report",
        ),
        (
            vec!["--results", &good, "--mix", "mem_hog=1,bogus=2"],
            "--mix: unknown fault class `bogus`; known classes: ",
        ),
        (
            vec!["--results", &good, "--faults-per-year", "-2"],
            "--faults-per-year `-2`: must be a number > 0",
        ),
        (
            vec!["--results", &good, "--restart-time", "-1"],
            "--restart-time `-1`: must be a duration ≥ 0",
        ),
        (
            vec!["--results", &good, "--manual-repair", "soon"],
            "--manual-repair `soon`",
        ),
    ];
    for (args, says) in cases {
        let out = lab(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
