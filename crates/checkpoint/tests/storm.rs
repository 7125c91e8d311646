//! Storms of crash signals from outside (every 30-300 ms for the whole
//! run): the program still gets to the end with the fault-free answer.
//! bench/checkpoint/soak-storm.sh runs the same with many more runs and
//! real programs under `selfheal run`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use selfheal_checkpoint::{Event, Unrecoverable};

const LIMIT: Duration = Duration::from_secs(120);

/// Rounds of `name` that run about `secs` seconds unsupervised here.
fn rounds_for(name: &str, probe: u64, secs: f64) -> String {
    let t = Instant::now();
    plain_output(name, &[&probe.to_string()]);
    let per_round = t.elapsed().as_secs_f64() / probe as f64;
    ((secs / per_round.max(1e-6)) as u64).max(probe).to_string()
}

/// SIGSEGV to `run`'s process every 30-300 ms until it ends (at most for
/// 60 s: a program that makes no progress must fail the test, not hang
/// it); returns how many were sent.
fn storm(run: &Run) -> usize {
    let pidfd = selfheal_sys::signal::pidfd_open(run.engine.pid()).expect("pidfd");
    let mut rng = Rng::from_time();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    while Instant::now() < deadline {
        std::thread::sleep(rng.millis(30, 300));
        if selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGSEGV).is_err() {
            return sent;
        }
        sent += 1;
    }
    panic!("still running after 60 s of signals ({sent} sent): no progress between them");
}

#[test]
fn a_storm_of_signals_from_outside_does_not_stop_progress() {
    if skip() {
        return;
    }
    let _one = serial();
    // A rollback for a signal sent by another process is never a
    // recurrence: checkpoints go on at the interval after it, so the
    // program gets past its last checkpoint between two signals (it used
    // to pause checkpoints for the 1 s recurrence window after every
    // rollback, and never finished).
    let rounds = rounds_for("compute", 200, 2.0);
    let expected = plain_output("compute", &[&rounds]);
    let mut run = start("compute", &[&rounds], config());
    let sent = storm(&run);
    let out = run.wait(LIMIT);
    assert_eq!(out, expected, "{:?}", run.impossible());
    assert!(sent >= 3, "only {sent} signals before the end");
    assert!(run.impossible().is_empty(), "{:?}", run.impossible());
    // Not one per signal: signals sent while the process is stopped (for
    // a checkpoint or a rollback) merge into one, as the kernel does for
    // any standard signal. None got through: the answer is right.
    assert!(run.rollbacks().len() >= 2, "{sent} sent: {:?}", run.events);
}

#[test]
fn a_storm_on_a_multithreaded_program_keeps_every_thread_consistent() {
    if skip() {
        return;
    }
    let _one = serial();
    let rounds = rounds_for("threads", 100, 2.0);
    let expected = plain_output("threads", &[&rounds]);
    let mut run = start("threads", &[&rounds], config());
    // Its workers start at once: storm only once a checkpoint holds them
    // (before that, a rollback is rightly refused: threads_changed).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no checkpoint of the workers");
        let ev = run
            .engine
            .events()
            .recv_timeout(Duration::from_secs(30))
            .expect("events");
        let all = matches!(&ev, Event::Checkpoint(s) if s.threads == 5);
        run.events.push(ev);
        if all {
            break;
        }
    }
    let sent = storm(&run);
    let out = run.wait(LIMIT);
    assert!(sent >= 3, "only {sent} signals before the end");
    assert!(run.rollbacks().len() >= 2, "{:?}", run.events);
    // The one refusal allowed: a signal that lands while the workers end
    // (the thread set differs from the checkpoint's); the crash then goes
    // through, as it should.
    let ended_threads = |e: &&Event| {
        matches!(e, Event::RollbackImpossible {
            why: Unrecoverable::ThreadsChanged { then, now }, ..
        } if now.len() < then.len())
    };
    if run.impossible().iter().any(ended_threads) {
        assert_eq!(run.impossible().len(), 1, "{:?}", run.impossible());
        eprintln!("a signal landed while the workers ended: refused, as it must be");
        return;
    }
    assert_eq!(out, expected, "{:?}", run.impossible());
    assert!(run.impossible().is_empty(), "{:?}", run.impossible());
}
