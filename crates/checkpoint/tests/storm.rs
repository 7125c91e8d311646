//! Storms of crash signals from outside (every 30-300 ms for the whole
//! run, or 40 s on a machine too loaded to finish by then): the program
//! still gets to the end with the fault-free answer.
//! bench/checkpoint/soak-storm.sh runs the same with many more runs and
//! real programs under `selfheal run`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use selfheal_checkpoint::{Event, Unrecoverable};

const LIMIT: Duration = Duration::from_secs(120);

/// Rounds of `name` that run about `secs` seconds unsupervised here.
/// The fastest of three probes counts (one slowed by a burst of load
/// would size the run too short).
fn rounds_for(name: &str, probe: u64, secs: f64) -> String {
    let per_round = (0..3)
        .map(|_| {
            let t = Instant::now();
            plain_output(name, &[&probe.to_string()]);
            t.elapsed().as_secs_f64() / probe as f64
        })
        .fold(f64::INFINITY, f64::min);
    ((secs / per_round.max(1e-6)) as u64).max(probe).to_string()
}

/// Longest storm: on a machine loaded far beyond its CPUs the program may
/// need longer than this to finish under signals; the storm then stops
/// and the test checks progress on the events (checkpoints taken after
/// rollbacks, and used by later ones) instead of by the end.
const STORM: Duration = Duration::from_secs(40);

/// SIGSEGV to `run`'s process every 30-300 ms until it ends or for
/// [`STORM`], collecting its events meanwhile; returns how many were sent.
fn storm(run: &mut Run) -> usize {
    let pidfd = selfheal_sys::signal::pidfd_open(run.engine.pid()).expect("pidfd");
    let mut rng = Rng::from_time();
    let deadline = Instant::now() + STORM;
    let mut sent = 0;
    while Instant::now() < deadline {
        let next = Instant::now() + rng.millis(30, 300);
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            match run.engine.events().recv_timeout(left) {
                Ok(ev) => {
                    let end = matches!(ev, Event::Exited(_) | Event::Detached);
                    run.events.push(ev);
                    if end {
                        return sent;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                // The engine is done: so is the storm.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return sent,
            }
        }
        if selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGSEGV).is_err() {
            return sent;
        }
        sent += 1;
    }
    eprintln!("storm stopped after {STORM:?} ({sent} signals): a slow machine");
    sent
}

/// The program got on between signals: a checkpoint taken after one
/// rollback was the target of a later one. (Checkpoints used to pause for
/// the 1 s recurrence window after every rollback: every rollback then went
/// to the same checkpoint, and a storm stopped all progress.)
fn assert_progress(run: &Run) {
    let targets: Vec<u64> = run.rollbacks().iter().map(|r| r.checkpoint_id).collect();
    assert!(
        targets.windows(2).any(|w| w[1] > w[0]),
        "no rollback went to a checkpoint newer than the one before: {targets:?}"
    );
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
    let sent = storm(&mut run);
    let out = run.wait(LIMIT);
    assert_eq!(out, expected, "{:?}", run.impossible());
    assert!(sent >= 3, "only {sent} signals before the end");
    // The one refusal allowed: a signal that lands after the answer was
    // written to the pipe (output cannot be taken back); the crash then
    // goes through, as it should, after the whole answer.
    let after_output = |e: &&Event| {
        matches!(
            e,
            Event::RollbackImpossible {
                why: Unrecoverable::OutputSent { .. },
                ..
            }
        )
    };
    let impossible = run.impossible();
    if impossible.len() == 1 && impossible.iter().all(after_output) {
        eprintln!("a signal landed after the answer was written: refused, as it must be");
    } else {
        assert!(impossible.is_empty(), "{impossible:?}");
    }
    // Not one per signal: signals sent while the process is stopped (for
    // a checkpoint or a rollback) merge into one, as the kernel does for
    // any standard signal. None got through: the answer is right.
    assert!(run.rollbacks().len() >= 2, "{sent} sent: {:?}", run.events);
    assert_progress(&run);
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
    let sent = storm(&mut run);
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
