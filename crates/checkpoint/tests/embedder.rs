//! What an embedder declares about its program: sockets whose replay it
//! tolerates (a VM's QMP and heartbeat channels), and older history kept
//! beyond the newest checkpoints (faults found late).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use selfheal_checkpoint::{Event, Failure, Older, Unrecoverable};

const LIMIT: Duration = Duration::from_secs(120);

/// linesock's rounds: about 2 ms each unsupervised, so a run lasts seconds
/// and is still running when the test crashes it 600 ms after connecting
/// (300 rounds took 0.7 s on an idle machine: the program was sometimes
/// gone before the crash, and pidfd_open failed).
const ROUNDS: usize = 2000;
const ROUNDS_ARG: &str = "2000";

/// Connects to the program's listening socket once it exists, and reads its
/// lines on a thread (resynchronising on line boundaries, as a tolerant
/// reader must); returns the writer end and the reader thread.
fn connect(path: &Path) -> (UnixStream, std::thread::JoinHandle<Vec<String>>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "no listener at {path:?}: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let reader = BufReader::new(stream.try_clone().unwrap());
    let lines = std::thread::spawn(move || reader.lines().map_while(Result::ok).collect());
    (stream, lines)
}

#[test]
fn a_declared_replay_tolerant_socket_does_not_prevent_rollback() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.sock");
    let p = path.to_str().unwrap();
    let expected = {
        // The fault-free answer (a peer is needed for it to run).
        let child = std::process::Command::new(prog("linesock"))
            .args([p, ROUNDS_ARG])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (_w, lines) = connect(&path);
        let out = child.wait_with_output().unwrap();
        assert!(lines.join().unwrap().len() >= ROUNDS);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // Declared: a crash is rolled back and the answer is right.
    let tolerant = selfheal_checkpoint::Config {
        replay_tolerant_sockets: vec![path.clone()],
        ..config()
    };
    let mut run = start("linesock", &[p, ROUNDS_ARG], tolerant);
    let (mut w, lines) = connect(&path);
    std::thread::sleep(Duration::from_millis(600));
    // Input the program reads after the checkpoint is lost to it by design.
    w.write_all(b"noise\n").unwrap();
    let pidfd = selfheal_sys::signal::pidfd_open(run.engine.pid()).unwrap();
    selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGSEGV).unwrap();
    let out = run.wait(LIMIT);
    assert_eq!(out, expected, "events: {:?}", run.events);
    assert_eq!(run.rollbacks().len(), 1, "{:?}", run.events);
    let lines = lines.join().unwrap();
    // Re-run rounds send their tick again: the reader sees each at least once.
    for r in 0..ROUNDS {
        assert!(lines.contains(&format!("tick {r}")), "tick {r} missing");
    }

    // Not declared: the same socket makes the rollback impossible.
    let mut run = start("linesock", &[p, ROUNDS_ARG], config());
    let (_w, _lines) = connect(&path);
    std::thread::sleep(Duration::from_millis(600));
    let pidfd = selfheal_sys::signal::pidfd_open(run.engine.pid()).unwrap();
    selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGSEGV).unwrap();
    run.wait(LIMIT);
    assert!(run.rollbacks().is_empty());
    assert!(
        matches!(
            run.impossible().as_slice(),
            [Event::RollbackImpossible {
                why: Unrecoverable::Socket { .. },
                ..
            }]
        ),
        "{:?}",
        run.events
    );
}

#[test]
fn older_history_reaches_back_past_the_newest_checkpoints() {
    if skip() {
        return;
    }
    let _one = serial();
    let expected = plain_output("spin", &["1500"]);
    // 4 × 50 ms of recent history only; older checkpoints one per 300 ms
    // back to 5 s. The hang is reported 1.5 s after it began.
    let config = selfheal_checkpoint::Config {
        keep: 4,
        older: Some(Older {
            every: Duration::from_millis(300),
            span: Duration::from_secs(5),
        }),
        ..config()
    };
    let mut run = start("spin", &["1500"], config);
    std::thread::sleep(Duration::from_millis(800));
    let last_progress = Instant::now();
    let pidfd = selfheal_sys::signal::pidfd_open(run.engine.pid()).unwrap();
    selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGUSR1).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    run.drain();
    let held = run
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Checkpoint(s) => Some(s.held),
            _ => None,
        })
        .unwrap();
    assert!(
        (5..=12).contains(&held),
        "4 recent + a few older checkpoints held, not {held}"
    );
    run.engine.request_rollback(Some(last_progress));
    let out = run.wait(LIMIT);
    assert_eq!(out, expected, "events: {:?}", run.events);
    let r = run.rollbacks();
    assert_eq!(r.len(), 1, "{:?}", run.events);
    assert_eq!(r[0].failure, Failure::Hang);
    assert!(
        r[0].checkpoint_age_ms >= 1500,
        "rolled back to before the hang: {:?}",
        r[0]
    );
}
