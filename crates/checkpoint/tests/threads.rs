//! Threads under checkpointing: per-thread kernel state rolled back with
//! memory, the thread set compared at rollback, and job-control stops.

mod common;

use std::time::{Duration, Instant};

use common::*;
use selfheal_checkpoint::{Event, Unrecoverable};

const LIMIT: Duration = Duration::from_secs(120);

/// Rounds of `name` that run about `secs` seconds unsupervised here.
fn rounds_for(name: &str, probe: u64, secs: f64, max: u64) -> String {
    let t = Instant::now();
    plain_output(name, &[&probe.to_string()]);
    let per_round = t.elapsed().as_secs_f64() / probe as f64;
    ((secs / per_round.max(1e-6)) as u64)
        .clamp(probe, max)
        .to_string()
}

#[test]
fn per_thread_kernel_state_is_rolled_back_with_memory() {
    if skip() {
        return;
    }
    let _one = serial();
    // Each round both threads change their alternate signal stack, robust
    // futex list, clear-tid address and rseq registration, and check the
    // kernel still holds what they set the round before. A rollback over a
    // round that restored memory but not that state fails a check (the
    // program prints MISMATCH and exits 3).
    let rounds = rounds_for("tstate", 300, 3.0, 200_000);
    let expected = plain_output("tstate", &[&rounds]);
    let mut run = start("tstate", &[&rounds], config());
    let sent = signal_at_random(&run, libc::SIGSEGV, 4, 200, 500);
    let out = run.wait(LIMIT);
    assert_eq!(out, expected, "events: {:?}", run.impossible());
    assert!(sent >= 2, "the program ended before two signals were sent");
    let rollbacks = run.rollbacks();
    assert_eq!(
        rollbacks.len() + run.impossible().len(),
        sent,
        "{:?}",
        run.events
    );
    assert!(!rollbacks.is_empty(), "{:?}", run.impossible());
    // Rounds take well under a checkpoint interval: a rollback crosses some.
    assert!(
        rollbacks.iter().any(|r| r.thread_ops > 0),
        "thread state was put back: {rollbacks:?}"
    );
}

#[test]
fn a_thread_created_after_the_checkpoint_makes_the_rollback_impossible() {
    if skip() {
        return;
    }
    let _one = serial();
    // threads.c starts its four workers right away: with checkpoints far
    // apart, the only checkpoint is the first one, taken before they exist.
    let config = selfheal_checkpoint::Config {
        interval: Duration::from_secs(3600),
        ..config()
    };
    let mut run = start("threads", &["2000"], config);
    let deadline = Instant::now() + Duration::from_secs(30);
    while selfheal_checkpoint::procfs::read_tids(run.engine.pid()).map_or(0, |t| t.len()) < 5 {
        assert!(Instant::now() < deadline, "the workers never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pidfd = selfheal_sys::signal::pidfd_open(run.engine.pid()).unwrap();
    selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGSEGV).unwrap();
    run.wait(LIMIT);
    assert!(run.rollbacks().is_empty(), "{:?}", run.events);
    let refused = run.events.iter().find_map(|e| match e {
        Event::RollbackImpossible {
            why: Unrecoverable::ThreadsChanged { then, now },
            ..
        } => Some((then.len(), now.len())),
        _ => None,
    });
    assert_eq!(refused, Some((1, 5)), "{:?}", run.events);
    // Refused, so the crash went through: killed by SIGSEGV.
    assert!(
        run.events
            .iter()
            .any(|e| matches!(e, Event::Exited(x) if x.signal == Some(libc::SIGSEGV))),
        "{:?}",
        run.events
    );
}
