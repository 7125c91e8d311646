//! Signals on their way at a checkpoint come back exactly after a
//! rollback: each instance once, with the siginfo it was sent with
//! (si_code, si_pid, si_uid, si_value), in the order the kernel delivers
//! them; or the rollback is refused.
//!
//! sigq.c blocks SIGUSR1, SIGUSR2 and SIGRTMIN+2, queues SIGUSR1 and five
//! SIGRTMIN+2 with distinct values to its process and one more to its
//! thread, and gets SIGUSR2 from this test; a checkpoint is taken; it
//! unblocks them and records what its handler gets; a SIGSEGV from this
//! test rolls it back to before the unblock. Every step is driven by its
//! stderr lines, so checkpoints and the crash land where they must.

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::*;
use selfheal_checkpoint::{Config, Event, FilesConfig, SignalRefusal, Unrecoverable};

const LIMIT: Duration = Duration::from_secs(60);

/// One signal a handler got: signo, si_code, sender, si_uid, si_value;
/// the sender is "self" (the program), "test" (us) or a pid.
type Taken = (i32, i32, String, u32, i64);

fn parse(lines: &[String], prog_pid: i32) -> Vec<Taken> {
    let me = std::process::id() as i32;
    lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "record line {l:?}");
            let pid: i32 = f[2].parse().expect("pid");
            let from = match pid {
                p if p == prog_pid => "self".to_string(),
                p if p == me => "test".to_string(),
                p => p.to_string(),
            };
            (
                f[0].parse().expect("signo"),
                f[1].parse().expect("code"),
                from,
                f[3].parse().expect("uid"),
                f[4].parse().expect("value"),
            )
        })
        .collect()
}

/// SIGRTMIN+2 as the program's libc counts it.
fn rt() -> i32 {
    libc::SIGRTMIN() + 2
}

/// What "after" and "inside" must record, in some order: each once.
fn expected() -> Vec<Taken> {
    // Tests run as root (see `skip`).
    let uid = 0;
    let mut v = vec![
        (libc::SIGUSR1, 0, "self".to_string(), uid, 0),
        (libc::SIGUSR2, 0, "test".to_string(), uid, 0),
        (rt(), -1, "self".to_string(), uid, 200),
    ];
    v.extend((100..105).map(|x| (rt(), -1, "self".to_string(), uid, x)));
    v.sort();
    v
}

fn sorted(mut v: Vec<Taken>) -> Vec<Taken> {
    v.sort();
    v
}

/// Lines of a stderr pipe, as they come.
fn lines_of(reader: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &Receiver<String>, what: &str) -> String {
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("no stderr line from the program while waiting for {what}"))
}

/// A scratch directory for the program's go/crashed files.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("selfheal-sigq-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn touch(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), b"").expect("touch");
}

/// The signal the test sends from outside in `mode` (0: none).
fn outside(mode: &str) -> i32 {
    match mode {
        "after" | "inside" => libc::SIGUSR2,
        "twice" => rt(),
        _ => 0,
    }
}

/// The record of `sigq MODE` run with no engine (same handshake, no
/// crash): the order the kernel delivers in, sender names normalised.
fn reference(mode: &str) -> Vec<Taken> {
    let dir = scratch(&format!("ref-{mode}"));
    let mut child = Command::new(prog("sigq"))
        .args([mode, dir.to_str().expect("utf-8")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sigq");
    let pid = child.id() as i32;
    let pidfd = selfheal_sys::signal::pidfd_open(pid).expect("pidfd");
    let rx = lines_of(child.stderr.take().expect("stderr"));
    loop {
        match next_line(&rx, "the reference run").as_str() {
            "Q" | "B" if outside(mode) != 0 => {
                selfheal_sys::signal::pidfd_send_signal(&pidfd, outside(mode)).expect("send")
            }
            "R" => touch(&dir, "go"),
            "M" | "E" => touch(&dir, "crashed"),
            _ => {}
        }
        if dir.join("crashed").exists() {
            break;
        }
    }
    let out = child.wait_with_output().expect("wait sigq");
    assert!(out.status.success(), "sigq {mode}: {:?}", out.status);
    let _ = std::fs::remove_dir_all(&dir);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    parse(&lines, pid)
}

/// What a run under the engine showed.
struct Supervised {
    /// Records printed on stderr before each crash and after ("H"..."E").
    told: Vec<Vec<Taken>>,
    /// The record at the end (stdout).
    end: Vec<Taken>,
    run: Run,
}

/// Runs `sigq MODE` under the engine: a checkpoint once the signals are
/// queued ("R"), a SIGSEGV from us at "M" (inside mode) or at the first
/// "E" (else), the go-on file once the engine has answered it.
fn supervised(mode: &str) -> Supervised {
    let dir = scratch(mode);
    let config = Config {
        // No periodic checkpoint: the one asked for at "R" is the newest.
        interval: Duration::from_secs(3600),
        files: FilesConfig {
            stderr_may_repeat: true,
            ..FilesConfig::default()
        },
        ..config()
    };
    let (reader, writer) = std::io::pipe().expect("pipe");
    let argv = vec![
        prog("sigq").display().to_string(),
        mode.to_string(),
        dir.display().to_string(),
    ];
    let mut run = start_stdio(
        argv,
        None,
        [None, None, Some(OwnedFd::from(writer))],
        config,
    );
    let pid = run.engine.pid();
    let pidfd = selfheal_sys::signal::pidfd_open(pid).expect("pidfd");
    let rx = lines_of(reader);
    let crash_at = if mode == "inside" { "M" } else { "E" };
    let mut told = Vec::new();
    let mut record: Option<Vec<String>> = None;
    let mut crashed = false;
    let answered = |e: &Event| matches!(e, Event::RolledBack(_) | Event::RollbackImpossible { .. });
    // Until the program ends (the pipe's only write end is its own).
    loop {
        let line = match rx.recv_timeout(LIMIT) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!(
                "no stderr line from the program: {e}; events {:?}\n{}",
                run.events,
                stuck_report(pid)
            ),
        };
        if let Some(r) = record.as_mut() {
            if line != "E" {
                r.push(line.clone());
            } else {
                told.push(parse(r, pid));
                record = None;
            }
        }
        match line.as_str() {
            "Q" | "B" if outside(mode) != 0 => {
                selfheal_sys::signal::pidfd_send_signal(&pidfd, outside(mode)).expect("send")
            }
            "R" => {
                // Every event so far first: the start's checkpoint must
                // not pass for the one asked for here (it once did, and
                // the program ran on into the checkpoint it should wait
                // for).
                run.drain();
                let before = run.events.len();
                run.engine.request_checkpoint();
                let deadline = Instant::now() + LIMIT;
                while !run.events[before..]
                    .iter()
                    .any(|e| matches!(e, Event::Checkpoint(_)))
                {
                    assert!(
                        Instant::now() < deadline,
                        "no checkpoint: {:?}\n{}",
                        run.events,
                        stuck_report(pid)
                    );
                    run.drain();
                    std::thread::sleep(Duration::from_millis(2));
                }
                touch(&dir, "go");
            }
            "H" => record = Some(Vec::new()),
            _ => {}
        }
        if line == crash_at && !crashed {
            crashed = true;
            selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGSEGV).expect("crash");
            let deadline = Instant::now() + LIMIT;
            while !run.events.iter().any(answered) {
                assert!(
                    Instant::now() < deadline,
                    "no rollback: {:?}\n{}",
                    run.events,
                    stuck_report(pid)
                );
                run.drain();
                std::thread::sleep(Duration::from_millis(2));
            }
            touch(&dir, "crashed");
        }
    }
    let out = run.wait(LIMIT);
    let _ = std::fs::remove_dir_all(&dir);
    let lines: Vec<String> = out.lines().map(String::from).collect();
    Supervised {
        told,
        end: parse(&lines, pid),
        run,
    }
}

/// Common checks: one rollback, done, and the record after it equals the
/// reference run's, order included, with every instance once.
fn assert_exact(mode: &str, s: &Supervised, requeued: usize) {
    let rollbacks = s.run.rollbacks();
    assert_eq!(rollbacks.len(), 1, "events: {:?}", s.run.events);
    assert!(s.run.impossible().is_empty(), "{:?}", s.run.impossible());
    assert_eq!(
        rollbacks[0].signals_requeued, requeued,
        "signals queued again: {:?}",
        rollbacks[0]
    );
    let reference = reference(mode);
    assert_eq!(
        s.end, reference,
        "the record differs from a run with no crash"
    );
    let after = s.told.last().expect("a record after the rollback");
    assert_eq!(*after, s.end);
}

#[test]
fn signals_taken_since_the_checkpoint_come_back_with_their_siginfo_once_each() {
    if skip() {
        return;
    }
    let _one = serial();
    let s = supervised("after");
    // Before the crash the program took all of them; after the rollback
    // the same, in the same order: the kernel had them all again.
    assert_eq!(s.told.len(), 2, "records told: {:?}", s.told);
    assert_eq!(s.told[0], s.told[1], "before and after the rollback");
    assert_eq!(sorted(s.end.clone()), expected());
    // One private SIGRTMIN+2, SIGUSR1 and SIGUSR2 and five SIGRTMIN+2
    // of the process.
    assert_exact("after", &s, 8);
}

#[test]
fn a_crash_between_deliveries_puts_the_queue_back_in_order() {
    if skip() {
        return;
    }
    let _one = serial();
    let s = supervised("inside");
    assert_eq!(sorted(s.end.clone()), expected());
    // 100..102 were taken, 103 and 104 still queued: taken out and queued
    // again behind the other three, with the rest.
    assert_exact("inside", &s, 8);
}

/// The bystander: nothing on its way at the checkpoint, nothing delivered
/// after the rollback.
#[test]
fn a_rollback_with_no_signal_on_its_way_delivers_none() {
    if skip() {
        return;
    }
    let _one = serial();
    let s = supervised("none");
    assert!(s.end.is_empty(), "signals taken: {:?}", s.end);
    assert_exact("none", &s, 0);
}

/// Two identical instances of a real-time signal from outside, one taken
/// since the checkpoint and one queued since: which is which cannot be
/// told, so the rollback is refused (and the crash kills the program).
#[test]
fn identical_instances_that_cannot_be_told_apart_refuse_the_rollback() {
    if skip() {
        return;
    }
    let _one = serial();
    let s = supervised("twice");
    assert!(s.run.rollbacks().is_empty(), "{:?}", s.run.events);
    let refused: Vec<&Unrecoverable> = s
        .run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::RollbackImpossible { why, .. } => Some(why),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        [&Unrecoverable::PendingSignal {
            signal: rt(),
            why: SignalRefusal::Ambiguous
        }]
    );
}

/// Checkpoints every millisecond while sigburst takes bursts of queued
/// real-time signals: a checkpoint's stop often lands between two
/// deliveries, with the thread held at one signal and the rest queued.
/// The system calls the checkpoint runs inside the thread must leave the
/// rest alone: they once took them and sent them again from the tracer,
/// values lost and the burst merged into one signal (the program never
/// got its value 102 in the test above, and waited for it for good).
#[test]
fn checkpoints_between_deliveries_leave_the_queued_signals_alone() {
    if skip() {
        return;
    }
    let _one = serial();
    let config = Config {
        interval: Duration::from_millis(1),
        ..config()
    };
    let mut run = start("sigburst", &["500"], config);
    let out = run.wait(LIMIT);
    assert_eq!(out.trim(), "ok 500", "events: {:?}", run.impossible());
    let checkpoints = run
        .events
        .iter()
        .filter(|e| matches!(e, Event::Checkpoint(_)))
        .count();
    assert!(checkpoints >= 10, "only {checkpoints} checkpoints");
    assert!(
        matches!(run.events.last(), Some(Event::Exited(e)) if e.code == Some(0)),
        "{:?}",
        run.events.last()
    );
}
