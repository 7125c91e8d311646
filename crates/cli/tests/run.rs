//! `selfheal run` end to end, as its own process: exit status, signal
//! forwarding, and events in the store.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use selfheal_event::{Event, EventKind};
use selfheal_store::{Order, Query, Store};

/// `selfheal run ARGS` with stderr captured.
fn run(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_selfheal"));
    c.arg("run")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// The path of a `tp-*` program.
fn tp(name: &str) -> String {
    selfheal_testprogs::bin(name).display().to_string()
}

/// `name` in a fresh temporary directory (kept while the guard lives).
fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(name);
    (d, p)
}

/// Events one per line, for assertion messages.
fn dump(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("  {} {} {} {}", e.kind, e.severity, e.message, e.details))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn exit_status_is_the_programs() {
    let crash = tp("tp-crash");
    let out = run(&[
        "--no-store",
        "--restart",
        "never",
        "--",
        &crash,
        "exit",
        "3",
    ])
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "--no-store",
        "--restart",
        "never",
        "--",
        &crash,
        "signal",
        "SEGV",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(128 + libc::SIGSEGV));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The program's own stderr passes through, and the crash is logged.
    assert!(
        stderr.contains("tp-crash: about to signal SEGV"),
        "{stderr}"
    );
    assert!(stderr.contains("killed by SIGSEGV"), "{stderr}");
    let out = run(&["--no-store", "--", "/nonexistent/selfheal-x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn sigterm_is_forwarded_and_ends_supervision() {
    let mut child = run(&["--no-store", "--stop-grace", "5s", "--", "sleep", "60"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    selfheal_sys::signal::kill_process(child.id() as i32, libc::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}

#[test]
fn sighup_is_forwarded_without_ending_supervision() {
    let script = "trap 'echo got HUP >&2; exit 7' HUP; echo up >&2; while :; do sleep 0.05; done";
    let child = run(&["--no-store", "--restart", "never", "--", "sh", "-c", script])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    selfheal_sys::signal::kill_process(child.id() as i32, libc::SIGHUP).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("got HUP"), "{stderr}");
}

#[test]
fn events_go_to_the_store() {
    let (_d, db) = temp_path("events.db");
    let crash = tp("tp-crash");
    let out = run(&[
        "--store",
        db.to_str().unwrap(),
        "--name",
        "stored",
        "--max-restarts",
        "1",
        "--backoff",
        "10ms",
        "--",
        &crash,
        "exit",
        "4",
        "--lines",
        "1",
    ])
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open_read_only(&db).unwrap();
    let events = store
        .query(&Query::new().app("stored").order(Order::OldestFirst))
        .unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::AppStart,
            EventKind::AppCrash,
            EventKind::AppRestart,
            EventKind::AppCrash,
            EventKind::AppGaveUp
        ],
        "{}",
        dump(&events)
    );
    assert_eq!(
        events[1].details["stderr_tail"][1],
        "tp-crash: about to exit 4"
    );
}
