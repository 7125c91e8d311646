//! `Engine::control`: requests from another thread while one thread owns
//! the engine and reads its events (how the supervisor drives it).

mod common;

use std::time::{Duration, Instant};

use common::*;
use selfheal_checkpoint::{Event, Failure};

#[test]
fn rollback_requested_from_another_thread_while_events_are_read() {
    if skip() {
        return;
    }
    let _one = serial();
    let expected = plain_output("spin", &["1500"]);
    let config = selfheal_checkpoint::Config {
        keep: 40,
        ..config()
    };
    let run = start("spin", &["1500"], config);
    let control = run.engine.control();
    assert_eq!(control.pid(), run.engine.pid());
    // The event reader owns the run (and the engine) on its own thread.
    let reader = std::thread::spawn(move || {
        let mut run = run;
        let out = run.wait(Duration::from_secs(120));
        (out, run.events)
    });
    std::thread::sleep(Duration::from_millis(500));
    let last_progress = Instant::now();
    let pidfd = selfheal_sys::signal::pidfd_open(control.pid()).unwrap();
    selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGUSR1).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    control.request_rollback(Some(last_progress));
    let (out, events) = reader.join().unwrap();
    assert_eq!(out, expected, "events: {events:?}");
    let hang_rollbacks = events
        .iter()
        .filter(|e| matches!(e, Event::RolledBack(r) if r.failure == Failure::Hang))
        .count();
    assert_eq!(hang_rollbacks, 1, "{events:?}");
    // After the engine ended, requests are ignored rather than failing.
    control.request_rollback(None);
    control.kill();
}
