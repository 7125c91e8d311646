//! Checkpoints through the real binary, crash paths: `selfheal run
//! --checkpoint-interval` on real programs in a cgroup sandbox (memory,
//! pids and CPU limits), with faults sent from outside or of their own.
//! Hangs, signals and `selfheal watch` are in checkpoint_control.rs.
//!
//! Output is not rolled back, so the programs print only their final
//! answer; a test passes when that answer equals the one the program
//! prints unsupervised and fault-free. Needs root (ptrace, userfaultfd, the
//! sandbox) and `cc`; skips with the reason otherwise.

mod checkpoint_harness;
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use checkpoint_harness::*;
use common::*;

#[test]
fn sigsegv_at_random_moments_is_rolled_back_and_the_answer_is_right() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    // About 3 s unsupervised, so every signal (4 × at most 500 ms) lands
    // well before it ends.
    let rounds = rounds_for("compute", 200, 3.0);
    let expected = plain("compute", &rounds);
    let compute = prog("compute");
    let mut sh = Selfheal::start(&[
        "run",
        "--store",
        store.to_str().unwrap(),
        "--checkpoint-interval",
        "50ms",
        "--keep",
        "8",
        "--",
        &compute,
        &rounds,
    ]);
    let pid = program_pid(&sh.sandbox, &compute, sh.pid());
    let mut rng = Rng::new();
    let mut sent = 0;
    for _ in 0..4 {
        std::thread::sleep(rng.millis(200, 500));
        if !send(pid, sig("SIGSEGV")) {
            break;
        }
        sent += 1;
    }
    let (code, out, err) = sh.wait(LIMIT);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, expected, "{err}");
    assert!(sent >= 2, "the program ended before two signals were sent");

    let events = events_json(&store, &[]);
    let rollbacks = kinds(&events, "rollback");
    assert_eq!(
        rollbacks.len(),
        sent,
        "one rollback per SIGSEGV:\n{}",
        dump(&events)
    );
    for r in &rollbacks {
        let d = &r["details"];
        assert_eq!(d["outcome"], "done", "{r}");
        assert_eq!(d["trigger"], "crash", "{r}");
        assert_eq!(d["signal_name"], "SIGSEGV", "{r}");
        assert_eq!(r["culprit"]["pid"], pid, "{r}");
        assert!(d["checkpoint_id"].as_u64().unwrap() >= 1, "{r}");
        assert!(d["checkpoint_age_ms"].is_u64(), "{r}");
        assert!(d["depth"].is_u64(), "{r}");
        assert!(d["pages_restored"].as_u64().unwrap() > 0, "{r}");
        assert!(d["duration_us"].as_u64().unwrap() > 0, "{r}");
    }
    assert!(kinds(&events, "app_crash").is_empty(), "{}", dump(&events));
    assert!(
        kinds(&events, "app_restart").is_empty(),
        "{}",
        dump(&events)
    );
    let started = kinds(&events, "checkpoint");
    assert_eq!(started.len(), 1, "{}", dump(&events));
    assert_eq!(started[0]["details"]["outcome"], "started");
    assert_eq!(started[0]["details"]["tracking"], "uffd_wp");
}

#[test]
fn unrecoverable_state_is_restarted_with_the_reason_recorded() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    let rounds = rounds_for("socket", 50, 2.0);
    let expected = plain("socket", &rounds);
    let socket = prog("socket");
    // Full copies too: the fallback of kernels without uffd-wp announces itself.
    let mut sh = Selfheal::start(&[
        "run",
        "--store",
        store.to_str().unwrap(),
        "--backoff",
        "50ms",
        "--checkpoint-interval",
        "50ms",
        "--checkpoint-full-copy",
        "--",
        &socket,
        &rounds,
    ]);
    let pid = program_pid(&sh.sandbox, &socket, sh.pid());
    std::thread::sleep(Duration::from_millis(500));
    assert!(send(pid, sig("SIGSEGV")));
    let (code, out, err) = sh.wait(LIMIT);
    // The first run died; the restarted one printed the answer.
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, expected, "{err}");

    let events = events_json(&store, &[]);
    let rb = kinds(&events, "rollback");
    assert_eq!(rb.len(), 1, "{}", dump(&events));
    let d = &rb[0]["details"];
    assert_eq!(d["outcome"], "impossible", "{d}");
    assert_eq!(d["reason"], "socket", "{d}");
    assert_eq!(d["then"], "restart", "{d}");
    assert!(d["message"].as_str().unwrap().contains("socket"), "{d}");
    let crash = kinds(&events, "app_crash");
    assert_eq!(crash.len(), 1, "{}", dump(&events));
    assert_eq!(crash[0]["details"]["signal_name"], "SIGSEGV");
    let restart = kinds(&events, "app_restart");
    assert_eq!(restart.len(), 1, "{}", dump(&events));
    assert_eq!(restart[0]["details"]["cause"], "crash");
    // Each run announced its checkpoints, in full-copy mode with the reason.
    let ck = kinds(&events, "checkpoint");
    assert_eq!(ck.len(), 2, "{}", dump(&events));
    for c in ck {
        assert_eq!(c["details"]["tracking"], "full_copy", "{c}");
        assert!(c["details"]["tracking_note"].is_string(), "{c}");
        assert_eq!(c["severity"], "warning", "{c}");
    }
}

#[test]
fn a_recurring_crash_goes_back_step_by_step_then_restarts() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    // The crash comes after about 0.6 s of work, past 4 checkpoints.
    let t = Instant::now();
    let st = Command::new(prog("crasher")).arg("200").status().unwrap();
    assert!(!st.success(), "the crasher crashes unsupervised");
    let per = t.elapsed().as_secs_f64() / 200.0;
    let rounds = ((0.6 / per.max(1e-7)) as u64)
        .clamp(200, 200_000)
        .to_string();
    let crasher = prog("crasher");
    let mut sh = Selfheal::start(&[
        "run",
        "--store",
        store.to_str().unwrap(),
        "--restart",
        "never",
        "--checkpoint-interval",
        "50ms",
        "--keep",
        "4",
        "--",
        &crasher,
        &rounds,
    ]);
    let (code, _, err) = sh.wait(LIMIT);
    assert_eq!(code, Some(128 + sig("SIGSEGV")), "{err}");

    let events = events_json(&store, &[]);
    let rb = kinds(&events, "rollback");
    let done: Vec<_> = rb
        .iter()
        .filter(|e| e["details"]["outcome"] == "done")
        .collect();
    // Progressive: the newest checkpoint, then one older each time.
    assert_eq!(done.len(), 4, "{}", dump(&events));
    for (i, e) in done.iter().enumerate() {
        assert_eq!(e["details"]["depth"], i, "{}", dump(&events));
        assert_eq!(e["details"]["signal_name"], "SIGSEGV");
        assert!(e["details"]["fault_addr"].is_string(), "a real fault: {e}");
    }
    let last = rb.last().unwrap();
    assert_eq!(
        last["details"]["outcome"],
        "impossible",
        "{}",
        dump(&events)
    );
    assert_eq!(last["details"]["reason"], "history_exhausted");
    let crash = kinds(&events, "app_crash");
    assert_eq!(crash.len(), 1, "{}", dump(&events));
    assert_eq!(crash[0]["details"]["signal_name"], "SIGSEGV");
}

#[test]
fn too_many_rollbacks_end_in_a_restart() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    let rounds = rounds_for("compute", 200, 3.0);
    let expected = plain("compute", &rounds);
    let compute = prog("compute");
    let mut sh = Selfheal::start(&[
        "run",
        "--store",
        store.to_str().unwrap(),
        "--backoff",
        "50ms",
        "--checkpoint-interval",
        "50ms",
        "--max-rollbacks",
        "2",
        "--",
        &compute,
        &rounds,
    ]);
    let pid = program_pid(&sh.sandbox, &compute, sh.pid());
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        assert!(send(pid, sig("SIGSEGV")));
    }
    let (code, out, err) = sh.wait(LIMIT);
    // The restarted run printed the answer.
    assert_eq!((code, out), (Some(0), expected), "{err}");
    let events = events_json(&store, &[]);
    let outcomes: Vec<_> = kinds(&events, "rollback")
        .iter()
        .map(|e| e["details"]["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        outcomes,
        ["done", "done", "done", "gave_up"],
        "{}",
        dump(&events)
    );
    let crash = kinds(&events, "app_crash");
    assert_eq!(crash.len(), 1, "{}", dump(&events));
    assert_eq!(crash[0]["details"]["signal_name"], "SIGKILL");
    assert_eq!(kinds(&events, "app_restart").len(), 1, "{}", dump(&events));
}

#[test]
fn a_program_that_cannot_be_executed_is_127_not_an_engine_failure() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    // Executable, but its interpreter does not exist: exec fails with ENOENT.
    let script = dir.path().join("bad-interpreter");
    std::fs::write(&script, "#!/nonexistent/selfheal-interpreter\n").unwrap();
    let chmod = Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap();
    assert!(chmod.success());
    let mut sh = Selfheal::start(&[
        "run",
        "--store",
        store.to_str().unwrap(),
        "--checkpoint-interval",
        "50ms",
        "--",
        script.to_str().unwrap(),
    ]);
    let (code, _, err) = sh.wait(LIMIT);
    assert_eq!(code, Some(127), "{err}");
    let events = events_json(&store, &[]);
    let crash = kinds(&events, "app_crash");
    assert_eq!(crash.len(), 1, "{}", dump(&events));
    assert!(
        crash[0]["details"]["launch_error"].is_string(),
        "{}",
        crash[0]
    );
    assert!(
        kinds(&events, "checkpoint").is_empty(),
        "not reported as checkpoints being unavailable:\n{}",
        dump(&events)
    );
}
