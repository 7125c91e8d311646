//! A panic in a daemon thread is recorded as a `panic` event, and the
//! component restarts (HTTP) or the daemon reports unhealthy (the rest).
//! Panics are injected through the test-only SELFHEAL_TEST_INJECT_PANIC.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_panic_in_the_http_server_is_recorded_and_the_server_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    let mut d = DaemonProc::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--store",
            store.to_str().unwrap(),
        ],
        &[("SELFHEAL_TEST_INJECT_PANIC", "http")],
        None,
    );
    let addr = d.wait_http(Duration::from_secs(20));
    // The first connection meets the injected panic.
    let first = selfheal_daemon::http::client::get(addr, "/healthz", Duration::from_secs(3));
    assert!(first.is_err(), "{first:?}");
    let t0 = Instant::now();
    loop {
        match selfheal_daemon::http::client::get(addr, "/healthz", Duration::from_secs(2)) {
            Ok(r) if r.status == 200 => break,
            _ => {}
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "HTTP not restarted:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, metrics) = get(addr, "/metrics");
    assert!(
        metrics.contains("selfheal_http_restarts_total 1"),
        "{metrics}"
    );
    // Give the main loop a tick to record the event.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(d.terminate().success());
    let panics = events_json(&store, &["--kind", "panic"]);
    assert_eq!(panics.len(), 1, "{panics:?}");
    assert_eq!(panics[0]["details"]["thread"], "selfheal-http");
    assert_eq!(panics[0]["details"]["fatal"], false);
    assert!(panics[0]["message"]
        .as_str()
        .unwrap()
        .contains("recovered in place"));
}

#[test]
fn a_panic_in_an_app_thread_makes_the_daemon_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    let cfg = write_config(
        dir.path(),
        "[daemon]\nlisten = \"127.0.0.1:0\"\n[[app]]\nname = \"sleeper\"\ncommand = [\"sleep\", \"30\"]\n",
    );
    let (c, s) = (cfg.to_str().unwrap(), store.to_str().unwrap());
    let mut d = DaemonProc::start(
        &["--config", c, "--store", s],
        &[("SELFHEAL_TEST_INJECT_PANIC", "sink:app_start")],
        None,
    );
    let addr = d.wait_http(Duration::from_secs(20));
    let t0 = Instant::now();
    let body = loop {
        let (code, body) = get(addr, "/healthz");
        if code == 503 && body.contains("panicked") {
            break body;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "still {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        body.contains("selfheal-app-sleeper") && body.contains("restart selfheal"),
        "{body}"
    );
    // It stays unhealthy: nothing silently comes back.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(addr, "/healthz").0, 503);
    assert!(d.terminate().success());
    let panics = events_json(&store, &["--kind", "panic"]);
    assert_eq!(panics.len(), 1, "{panics:?}");
    assert_eq!(panics[0]["severity"], "critical");
    assert_eq!(panics[0]["details"]["thread"], "selfheal-app-sleeper");
    assert_eq!(panics[0]["details"]["fatal"], true);
}
