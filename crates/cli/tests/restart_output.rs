//! Restarts do not mix runs: `selfheal run … > out < in` restarted after a
//! failure cuts `out` back to its size when the failed run started and
//! rewinds `in`; `--restart-output keep` appends as before, `rotate` moves
//! the failed run's output aside. The restart event says which happened.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;

use common::*;

/// A program that fails once (after writing "partial" and reading five
/// bytes of stdin), then copies its whole stdin to stdout.
const FAIL_ONCE: &str = "if [ -e marker ]; then cat; else touch marker; \
     dd bs=1 count=5 of=/dev/null 2>/dev/null; echo partial; exit 3; fi";

/// Runs FAIL_ONCE under `selfheal run` with `extra` flags, stdin from
/// `in.txt` and stdout appended to `out.txt` (which holds `before`).
fn run_fail_once(dir: &Path, extra: &[&str], before: &str) -> Vec<serde_json::Value> {
    std::fs::write(dir.join("in.txt"), "0123456789abcdef\n").unwrap();
    std::fs::write(dir.join("out.txt"), before).unwrap();
    let store = dir.join("s.db");
    let out = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("out.txt"))
        .unwrap();
    let status = Command::new(bin())
        .args([
            "run",
            "--store",
            store.to_str().unwrap(),
            "--backoff",
            "10ms",
        ])
        .args(extra)
        .args(["--", "sh", "-c", FAIL_ONCE])
        .current_dir(dir)
        .stdin(File::open(dir.join("in.txt")).unwrap())
        .stdout(out)
        .status()
        .unwrap();
    assert!(status.success(), "{status:?}");
    events_json(&store, &[])
}

fn restart_output(events: &[serde_json::Value]) -> &serde_json::Value {
    let r = events
        .iter()
        .find(|e| e["kind"] == "app_restart")
        .expect("one restart");
    &r["details"]
}

#[test]
fn a_restart_cuts_redirected_output_back_and_rewinds_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let events = run_fail_once(dir.path(), &[], "earlier run\n");
    let got = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    // Not "earlier run\npartial\n456789abcdef\n".
    assert_eq!(got, "earlier run\n0123456789abcdef\n");
    let d = restart_output(&events);
    assert_eq!(d["restart_output"], "truncate");
    let actions: Vec<&str> = d["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["rewound", "truncated"], "{d}");
    assert_eq!(d["output"][1]["from"], 20);
    assert_eq!(d["output"][1]["to"], 12);
}

#[test]
fn keep_appends_to_the_failed_runs_output() {
    let dir = tempfile::tempdir().unwrap();
    let events = run_fail_once(dir.path(), &["--restart-output", "keep"], "");
    let got = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(got, "partial\n56789abcdef\n");
    let d = restart_output(&events);
    assert_eq!(d["restart_output"], "keep");
    assert_eq!(d["output"][0]["action"], "kept", "{d}");
}

#[test]
fn rotate_moves_the_failed_runs_output_aside() {
    let dir = tempfile::tempdir().unwrap();
    let events = run_fail_once(dir.path(), &["--restart-output", "rotate"], "");
    let got = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(got, "0123456789abcdef\n");
    let side = dir.path().join("out.txt.failed-1");
    assert_eq!(std::fs::read_to_string(&side).unwrap(), "partial\n");
    let d = restart_output(&events);
    assert_eq!(d["output"][1]["action"], "rotated", "{d}");
    assert_eq!(d["output"][1]["to"], side.display().to_string());
}

#[test]
fn a_bad_mode_is_a_clear_error() {
    let (code, _, err) = run(&["run", "--restart-output", "erase", "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("truncate, keep or rotate"), "{err}");
}
