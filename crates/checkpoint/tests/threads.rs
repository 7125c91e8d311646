//! Threads under checkpointing: per-thread kernel state rolled back with
//! memory, the thread set compared at rollback, and job-control stops.

mod common;

use std::time::{Duration, Instant};

use common::*;
use selfheal_checkpoint::{Event, Unrecoverable};

const LIMIT: Duration = Duration::from_secs(120);

/// Rounds of `name` that run about `secs` seconds unsupervised here.
/// The fastest of three probes counts (one slowed by a burst of load
/// would size the run too short).
fn rounds_for(name: &str, probe: u64, secs: f64, max: u64) -> String {
    let per_round = (0..3)
        .map(|_| {
            let t = Instant::now();
            plain_output(name, &[&probe.to_string()]);
            t.elapsed().as_secs_f64() / probe as f64
        })
        .fold(f64::INFINITY, f64::min);
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
    let rounds = rounds_for("tstate", 300, 6.0, 2_000_000);
    let expected = plain_output("tstate", &[&rounds]);
    // Checkpoints on request only: each signal comes after a checkpoint
    // and 50 ms of the program's CPU time since (rounds run, whatever the
    // load), so every rollback crosses rounds.
    let config = selfheal_checkpoint::Config {
        interval: Duration::from_secs(3600),
        ..config()
    };
    let mut run = start("tstate", &[&rounds], config);
    let pid = run.engine.pid();
    // The first checkpoint is the program's start, before its threads:
    // rollbacks must cross rounds, not the threads' creation.
    let deadline = Instant::now() + LIMIT;
    while selfheal_checkpoint::procfs::read_tids(pid).map_or(0, |t| t.len()) < 3 {
        assert!(Instant::now() < deadline, "the threads never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pidfd = selfheal_sys::signal::pidfd_open(pid).unwrap();
    for _ in 0..4 {
        run.engine.request_checkpoint();
        loop {
            let ev = run.engine.events().recv_timeout(LIMIT).expect("events");
            assert!(
                !matches!(ev, Event::Exited(_)),
                "ended before 4 signals ({ev:?}): {:?}",
                run.events
            );
            let checkpoint = matches!(ev, Event::Checkpoint(_));
            run.events.push(ev);
            if checkpoint {
                break;
            }
        }
        run.wait_cpu(5, LIMIT);
        selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGSEGV).unwrap();
    }
    let out = run.wait(LIMIT);
    assert_eq!(out, expected, "events: {:?}", run.impossible());
    let rollbacks = run.rollbacks();
    assert_eq!(rollbacks.len(), 4, "{:?}", run.events);
    // The state cycles through 397 values: unchanged after a rollback
    // only if a multiple of 397 rounds passed, for both threads.
    assert!(
        rollbacks.iter().all(|r| r.thread_ops > 0),
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

/// Runs `f` on its own thread; fails the test if it has not returned
/// within `limit` (a wait of the tracer that blocks).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not end within {limit:?}: the tracer is stuck"))
}

fn exit_of(events: &[Event]) -> Option<selfheal_checkpoint::ExitInfo> {
    events.iter().find_map(|e| match e {
        Event::Exited(x) => Some(*x),
        _ => None,
    })
}

#[test]
fn a_multithreaded_program_exiting_at_any_moment_never_holds_the_tracer() {
    if skip() {
        return;
    }
    let _one = serial();
    // Three threads start and one calls exit_group at once: the process
    // ends during set-up, a checkpoint (every 5 ms), a pre-copy or a remote
    // system call, as it happens. Every run must end promptly.
    let config = selfheal_checkpoint::Config {
        interval: Duration::from_millis(5),
        ..config()
    };
    let (mut started, mut setup_failed) = (0, 0);
    for _ in 0..20 {
        let config = config.clone();
        let argv = vec![prog("exits").display().to_string(), "group".into()];
        let r = within(Duration::from_secs(60), move || {
            match try_start_stdio(argv, None, [None, None, None], config) {
                Ok(mut run) => {
                    run.wait(Duration::from_secs(30));
                    Ok(run.events)
                }
                Err(e) => Err(e.to_string()),
            }
        });
        match r {
            Ok(events) => {
                started += 1;
                let exit = exit_of(&events);
                assert_eq!(exit.and_then(|x| x.code), Some(5), "{events:?}");
            }
            // Ended before its first checkpoint: said so, nothing left.
            Err(e) => {
                setup_failed += 1;
                assert!(e.contains("exited"), "{e}");
            }
        }
    }
    eprintln!("{started} traced to the end, {setup_failed} ended during set-up");
}

#[test]
fn a_thread_that_execs_replaces_the_process_and_tracing_goes_on() {
    if skip() {
        return;
    }
    let _one = serial();
    // The kernel ends every other thread, the main one included, and the
    // exec'ing thread takes the process id.
    let mut run = start("exits", &["exec"], config());
    let out = within(Duration::from_secs(60), move || {
        let out = run.wait(LIMIT);
        (out, run.events)
    });
    let (out, events) = out;
    assert_eq!(out, "exec'd\n");
    assert!(
        events.iter().any(|e| matches!(e, Event::Exec)),
        "{events:?}"
    );
    assert_eq!(exit_of(&events).and_then(|x| x.code), Some(0), "{events:?}");
}

#[test]
fn a_main_thread_that_ends_first_stops_checkpoints_not_the_tracer() {
    if skip() {
        return;
    }
    let _one = serial();
    // main() ends with pthread_exit; its worker prints 300 ms later. The
    // main thread is a zombie meanwhile, reported only at the very end:
    // the engine must not wait for it to stop (5 s per checkpoint) nor
    // take checkpoints through its empty /proc files.
    let mut run = start("exits", &["leader"], config());
    let t = Instant::now();
    let (out, events) = within(Duration::from_secs(60), move || {
        let out = run.wait(LIMIT);
        (out, run.events)
    });
    assert_eq!(out, "worker outlived main\n");
    assert_eq!(exit_of(&events).and_then(|x| x.code), Some(0), "{events:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let told = events
        .iter()
        .any(|e| matches!(e, Event::CheckpointFailed { error } if error.contains("main thread")));
    assert!(told, "{events:?}");
}

#[test]
fn a_rollback_past_rseq_registration_removes_its_memory_safely() {
    if skip() {
        return;
    }
    let _one = serial();
    // The only checkpoint is the one taken at exec, before the dynamic
    // loader mapped libc and glibc registered rseq in memory mapped since.
    // The rollback unmaps that memory: the rseq registration must end
    // first, or the kernel raises SIGSEGV on every return to user space,
    // each single-step of the rollback's own system calls included.
    let config = selfheal_checkpoint::Config {
        interval: Duration::from_secs(3600),
        ..config()
    };
    let expected = plain_output("compute", &["300"]);
    let mut run = start("compute", &["300"], config);
    let pid = run.engine.pid();
    run.wait_cpu(5, LIMIT);
    let pidfd = selfheal_sys::signal::pidfd_open(pid).unwrap();
    selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGSEGV).unwrap();
    let out = run.wait(LIMIT);
    assert_eq!(out, expected, "{:?}", run.impossible());
    let rollbacks = run.rollbacks();
    assert_eq!(rollbacks.len(), 1, "{:?}", run.events);
    assert_eq!(rollbacks[0].checkpoint_id, 1);
    assert!(rollbacks[0].layout_ops > 0, "{rollbacks:?}");
}
