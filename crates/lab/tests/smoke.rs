//! CI-sized smoke test: one class, one run, in a real QEMU guest.
//!
//! Runs when `qemu-system-x86_64` is on PATH, we are root (the lab uses apt
//! and dpkg) and `CI_LAB` is not `0`; otherwise it prints why it skips.
//! Uses the selfheal binary in `$SELFHEAL_LAB_SELFHEAL` when set, else the
//! lab's placeholder (then only the kernel detectors and plumbing are checked).

use std::path::PathBuf;
use std::process::Command;

fn skip_reason() -> Option<String> {
    if std::env::var("CI_LAB").as_deref() == Ok("0") {
        return Some("CI_LAB=0".into());
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").is_file()));
    if !on_path {
        return Some(
            "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into(),
        );
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Some(
            "not root: the lab installs packages with apt and unpacks the kernel with dpkg".into(),
        );
    }
    None
}

#[test]
fn one_injection_end_to_end() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED lab smoke test: {why}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let real = std::env::var_os("SELFHEAL_LAB_SELFHEAL").map(PathBuf::from);
    // The placeholder run checks the kernel side with a kernel stall; a real
    // selfheal is checked on an RT hog, which it must catch and name.
    let class = if real.is_some() {
        "rt_hog"
    } else {
        "preempt_loop"
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_selfheal-lab"));
    cmd.args([
        "run",
        "--quick",
        "--classes",
        class,
        "--fault-free-runs",
        "0",
        "--seed",
        "7",
        "--accel",
        "tcg",
    ])
    .arg("--out")
    .arg(out.path());
    match &real {
        Some(bin) => {
            eprintln!("lab smoke test with selfheal {}", bin.display());
            cmd.arg("--selfheal").arg(bin);
        }
        None => {
            eprintln!("lab smoke test with the placeholder (set SELFHEAL_LAB_SELFHEAL to test a real selfheal)");
            cmd.arg("--placeholder");
        }
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "selfheal-lab run failed: {status}");

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    let runs = results["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["booted"], true, "guest did not boot: {run}");
    // Every number traces back to a raw log kept beside the report.
    let logs = out.path().join(run["log_dir"].as_str().unwrap());
    // Scored runs keep their logs compressed (lab.log.xz).
    assert!(selfheal_lab::logs::read_log(&logs, "lab.log").contains("LAB INJECT "));
    assert!(out.path().join("report.md").is_file() && out.path().join("latency.svg").is_file());
    if real.is_some() {
        assert!(
            run["selfheal"]["detect_ms"].as_i64().is_some(),
            "selfheal missed an RT hog: {run}"
        );
    } else {
        // The guest's own words, should it fail (a rare flake under load:
        // the module's line missing from the console with the fault in
        // effect; its cause is still unknown).
        let console = selfheal_lab::logs::read_log(&logs, "console.log");
        let tail = |text: &str| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        let lab_log = selfheal_lab::logs::read_log(&logs, "lab.log");
        assert_eq!(
            run["fault_confirmed"],
            true,
            "module did not inject: {run}\n--- console tail:\n{}\n--- lab tail:\n{}",
            tail(&console),
            tail(&lab_log)
        );
        // At tight thresholds the RCU stall detector reports within seconds.
        assert!(
            run["kernel"]["rcu_stall"]["latency_ms"].as_i64().is_some(),
            "no kernel detector fired: {run}\n--- console tail:\n{}",
            tail(&console)
        );
        assert!(console.contains("lab_fault: preempt_loop started"));
    }
}
