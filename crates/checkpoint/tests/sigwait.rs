//! A thread waiting under a temporary signal mask (sigsuspend, ppoll,
//! pselect) keeps it through checkpoints and rollbacks.
//!
//! The kernel installs such a call's mask for the wait only and puts the
//! thread's normal mask back when it ends; a stop of ours interrupts the
//! wait, and the call restarts when the thread resumes. sigwait.c waits
//! with SIGUSR1 blocked and SIGUSR2 let in, its normal mask the other way
//! round. Any stop while SIGUSR1 is pending lets the kernel deliver it
//! inside the wait (see the engine's `waitmask`): so checkpoints and a
//! rollback while it waits with nothing pending are exact (SIGUSR2, sent
//! last, ends the wait, SIGUSR1 is taken after, the normal mask is back,
//! exactly as in a run with no engine), a checkpoint asked for while
//! SIGUSR1 is pending waits, and a rollback that would resume the wait
//! with it pending is refused.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use selfheal_checkpoint::{Config, Event, SignalRefusal, Unrecoverable};

const LIMIT: Duration = Duration::from_secs(60);

/// The answer of a run with no engine, and what it must be.
const EXPECTED: &str = "BA -1 EINTR blocked:B";

fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// The blocked mask /proc shows for `pid`'s main thread (the temporary
/// one while it waits); None once it is gone.
fn blocked(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("SigBlk:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// Waits until `pid` waits under its temporary mask (true), or is ending
/// or gone (false: it left the wait, which the output then shows).
fn waiting(pid: i32) -> bool {
    let deadline = Instant::now() + LIMIT;
    loop {
        match task_state(pid) {
            None | Some('Z' | 'X') => return false,
            _ => {}
        }
        if blocked(pid) == Some(bit(libc::SIGUSR1)) {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "not in its wait after {LIMIT:?}: {}",
            stuck_report(pid)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until SIGUSR1 shows as pending for `pid` (false if it ended).
fn pending_usr1(pid: i32) -> bool {
    let deadline = Instant::now() + LIMIT;
    while !signal_queued(pid, libc::SIGUSR1) {
        if matches!(task_state(pid), None | Some('Z' | 'X')) {
            return false;
        }
        assert!(Instant::now() < deadline, "SIGUSR1 never pending");
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

fn send(pid: i32, sig: i32) {
    let pidfd = selfheal_sys::signal::pidfd_open(pid).expect("pidfd");
    selfheal_sys::signal::pidfd_send_signal(&pidfd, sig).expect("send");
}

/// `sigwait MODE` with no engine, same handshake.
fn reference(mode: &str) -> String {
    let child = Command::new(prog("sigwait"))
        .arg(mode)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sigwait");
    let pid = child.id() as i32;
    assert!(waiting(pid), "the reference run left its wait");
    send(pid, libc::SIGUSR1);
    assert!(pending_usr1(pid));
    send(pid, libc::SIGUSR2);
    let out = child.wait_with_output().expect("wait sigwait");
    assert!(out.status.success(), "sigwait {mode}: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits for the next event matching `want` after those seen so far,
/// collecting everything; false if the program ended first.
fn next_event(run: &mut Run, want: impl Fn(&Event) -> bool, what: &str) -> Option<Event> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(ev) = run.engine.events().recv_timeout(left) else {
            panic!(
                "no {what} within {LIMIT:?}: {:?}\n{}",
                run.events,
                stuck_report(run.engine.pid())
            );
        };
        let ended = matches!(ev, Event::Exited(_) | Event::Detached);
        let hit = want(&ev);
        run.push(ev.clone());
        if hit {
            return Some(ev);
        }
        if ended {
            return None;
        }
    }
}

/// Asks for a checkpoint and waits for it (false if the program ended
/// first). The engine takes others of its own (at its start): only one
/// that stopped the program after the request counts.
fn checkpoint(run: &mut Run) -> bool {
    let asked_us = selfheal_sys::bpf::monotonic_ns() / 1000;
    run.engine.request_checkpoint();
    let ours = |e: &Event| matches!(e, Event::Checkpoint(c) if c.stopped_mono_us[0] >= asked_us);
    next_event(run, ours, "checkpoint").is_some()
}

/// Asks for a rollback and returns the engine's answer (None if the
/// program ended first).
fn rollback(run: &mut Run) -> Option<Event> {
    run.engine.request_rollback(None);
    let answered = |e: &Event| matches!(e, Event::RolledBack(_) | Event::RollbackImpossible { .. });
    next_event(run, answered, "rollback")
}

fn engine() -> Config {
    Config {
        // Only the checkpoints asked for here.
        interval: Duration::from_secs(3600),
        ..config()
    }
}

/// Runs `sigwait MODE` under the engine: checkpoints and a rollback
/// while it waits, then SIGUSR1 and a checkpoint asked for while it is
/// pending, which must wait: a stop now would let SIGUSR1 into the wait.
/// Returns its answer and the engine's events. Stops driving it as soon
/// as it left its wait (the answer then says what it took).
fn supervised(mode: &str) -> (String, Vec<Event>) {
    let mut run = start("sigwait", &[mode], engine());
    let pid = run.engine.pid();
    'drive: {
        if !waiting(pid) {
            break 'drive;
        }
        // Stops interrupting the wait, nothing pending yet.
        for _ in 0..3 {
            if !checkpoint(&mut run) || !waiting(pid) {
                break 'drive;
            }
        }
        match rollback(&mut run) {
            Some(Event::RolledBack(_)) => {}
            Some(e) => panic!("rollback refused with nothing pending: {e:?}"),
            None => break 'drive,
        }
        if !waiting(pid) {
            break 'drive;
        }
        send(pid, libc::SIGUSR1);
        if !pending_usr1(pid) {
            break 'drive;
        }
        let asked_us = selfheal_sys::bpf::monotonic_ns() / 1000;
        run.engine.request_checkpoint();
        let said = |e: &Event| {
            matches!(e, Event::CheckpointFailed { error } if error.contains("temporary signal mask"))
                || matches!(e, Event::Checkpoint(c) if c.stopped_mono_us[0] >= asked_us)
        };
        let Some(ev) = next_event(&mut run, said, "word on the checkpoint") else {
            break 'drive;
        };
        assert!(
            matches!(ev, Event::CheckpointFailed { .. }),
            "checkpoint taken with SIGUSR1 pending in the wait: {ev:?}"
        );
        if !waiting(pid) || !pending_usr1(pid) {
            break 'drive;
        }
        send(pid, libc::SIGUSR2);
    }
    let out = run.wait(LIMIT);
    (out.trim().to_string(), run.events)
}

fn exact(mode: &str) {
    let reference = reference(mode);
    assert_eq!(reference, EXPECTED, "the kernel's own answer");
    let (out, events) = supervised(mode);
    assert_eq!(
        out, reference,
        "{mode}: the answer differs from a run with no engine (a signal the temporary mask blocks \
         taken during the wait, or the normal mask not back after it); events {events:?}"
    );
    let rollbacks = events
        .iter()
        .filter(|e| matches!(e, Event::RolledBack(_)))
        .count();
    assert_eq!(rollbacks, 1, "{events:?}");
}

/// A rollback to a checkpoint taken in the wait, with SIGUSR1 sent from
/// outside since (it stays pending through a rollback): resumed there,
/// the thread would take it inside the wait. Refused, with the reason.
fn refused(mode: &str) {
    let mut run = start("sigwait", &[mode], engine());
    let pid = run.engine.pid();
    assert!(waiting(pid), "left its wait: {:?}", run.events);
    assert!(checkpoint(&mut run), "ended: {:?}", run.events);
    assert!(waiting(pid));
    send(pid, libc::SIGUSR1);
    assert!(pending_usr1(pid));
    let answer = rollback(&mut run);
    run.engine.kill();
    let _ = run.wait(LIMIT);
    match answer {
        Some(Event::RollbackImpossible {
            why:
                Unrecoverable::PendingSignal {
                    signal,
                    why: SignalRefusal::WaitMask { tid },
                },
            ..
        }) => {
            assert_eq!(signal, libc::SIGUSR1);
            assert_eq!(tid, pid);
        }
        other => panic!("{mode}: not refused for SIGUSR1: {other:?}"),
    }
}

#[test]
fn sigsuspend_keeps_its_temporary_mask_through_checkpoints_and_rollbacks() {
    if skip() {
        return;
    }
    let _one = serial();
    exact("sigsuspend");
}

#[test]
fn ppoll_keeps_its_temporary_mask_through_checkpoints_and_rollbacks() {
    if skip() {
        return;
    }
    let _one = serial();
    exact("ppoll");
}

#[test]
fn pselect_keeps_its_temporary_mask_through_checkpoints_and_rollbacks() {
    if skip() {
        return;
    }
    let _one = serial();
    exact("pselect");
}

#[test]
fn a_rollback_into_sigsuspend_that_would_let_in_a_blocked_signal_is_refused() {
    if skip() {
        return;
    }
    let _one = serial();
    refused("sigsuspend");
}

#[test]
fn a_rollback_into_ppoll_that_would_let_in_a_blocked_signal_is_refused() {
    if skip() {
        return;
    }
    let _one = serial();
    refused("ppoll");
}

#[test]
fn a_rollback_into_pselect_that_would_let_in_a_blocked_signal_is_refused() {
    if skip() {
        return;
    }
    let _one = serial();
    refused("pselect");
}
