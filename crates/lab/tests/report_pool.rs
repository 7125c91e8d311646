//! `selfheal-lab report --pool`: the runs of another output directory are
//! scored by the same judge and listed under its name, their log links
//! pointing into it; a profile filter keeps only the runs asked for; a bad
//! profile is refused with exit code 2. The runs are captured guest logs
//! (tests/data), copied into two output directories.

use std::path::Path;
use std::process::Command;

use selfheal_lab::report::{Meta, Report};

/// An output directory `dir` holding the captured runs `ids`.
fn out_dir(dir: &Path, ids: &[&str]) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut plan = Vec::new();
    for id in ids {
        let run = dir.join("runs").join(id);
        std::fs::create_dir_all(&run).unwrap();
        for f in ["console.log", "lab.log", "events.log", "run.json"] {
            std::fs::copy(data.join(id).join(f), run.join(f)).unwrap();
        }
        let rf: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        plan.push(rf["scenario"].clone());
    }
    std::fs::write(dir.join("plan.json"), serde_json::to_string(&plan).unwrap()).unwrap();
    let meta = Meta {
        started_utc: "2026-12-07T00:00:00Z".into(),
        ..Meta::default()
    };
    std::fs::write(dir.join("meta.json"), serde_json::to_string(&meta).unwrap()).unwrap();
}

fn report(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_selfheal-lab"))
        .arg("report")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn pooled_runs_are_scored_named_and_linked_into_their_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    out_dir(&a, &["rt_hog-001"]);
    out_dir(&b, &["preempt_loop-001", "mem_hog-001"]);
    let o = report(&["--out", a.to_str().unwrap(), "--pool", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Report =
        serde_json::from_str(&std::fs::read_to_string(a.join("results.json")).unwrap()).unwrap();
    let ids: Vec<(&str, &str)> = r
        .runs
        .iter()
        .map(|x| (x.scenario.id.as_str(), x.log_dir.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("rt_hog-001", "runs/rt_hog-001"),
            ("b/preempt_loop-001", "../b/runs/preempt_loop-001"),
            ("b/mem_hog-001", "../b/runs/mem_hog-001"),
        ]
    );
    // Scored, not copied: the pooled preempt_loop's kernel reports are there.
    assert!(r.runs[1].fault_confirmed && r.runs[1].kernel.contains_key("rcu_stall"));
    let md = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(md.contains("pooled: 2 run(s) of"), "{md}");

    // Only the profiles asked for: these captured runs are all `tight`.
    let o = report(&[
        "--out",
        a.to_str().unwrap(),
        "--pool",
        b.to_str().unwrap(),
        "--pool-profiles",
        "kernel-panic",
    ]);
    assert!(o.status.success());
    let r: Report =
        serde_json::from_str(&std::fs::read_to_string(a.join("results.json")).unwrap()).unwrap();
    assert_eq!(r.runs.len(), 1);
    assert!(r
        .meta
        .notes
        .iter()
        .any(|n| n.starts_with("pooled: 0 run(s)")));

    let o = report(&["--out", a.to_str().unwrap(), "--pool-profiles", "panicky"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown profile `panicky`"));
}
