//! Supervisor latency with real programs, measured against the programs'
//! own clocks (they write wall-clock stamps at the moments that matter):
//!
//! - **crash → restart**: from the instant `tp-crash` is about to exit to
//!   the instant the restarted `tp-crash` reaches `main`, minus the
//!   configured backoff. Target: ≤ 50 ms.
//! - **watchdog hang**: from the deadline (last `WATCHDOG=1` sent by
//!   `tp-notify` + the watchdog timeout) to the supervisor's decision
//!   and to the `app_hang` event. Target: ≤ 50 ms.
//! - **probe hang**: from the failing probe's deadline (its start + the
//!   probe timeout) against a `tp-http` that stopped answering, to the
//!   decision and the event. Target: ≤ 50 ms.
//!
//! `cargo bench -p selfheal-supervise --bench latency -- [--runs N] [--backoff-ms B]`
//! (or `bench/supervise/run.sh`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfheal_config::{
    AppConfig, HumanDuration, Output, ProbeCheck, ProbeConfig, RestartPolicy, StatusRange,
};
use selfheal_event::{Event, EventKind, EventSink};
use selfheal_supervise::Supervisor;
use selfheal_testprogs::{bin, read_stamps, unix_micros, Args};

/// Records each event with the wall-clock microsecond it was emitted.
#[derive(Default)]
struct TimedSink {
    events: Mutex<Vec<(i64, Event)>>,
}

impl EventSink for TimedSink {
    fn emit(&self, e: Event) -> bool {
        let t = unix_micros();
        self.events.lock().unwrap().push((t, e));
        true
    }
}

impl TimedSink {
    fn of(&self, kind: EventKind) -> Vec<(i64, Event)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.kind == kind)
            .cloned()
            .collect()
    }

    fn wait(&self, kind: EventKind, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.of(kind).len() < n {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} {kind} events"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn app(name: &str, argv: Vec<String>, backoff_ms: u64) -> AppConfig {
    let mut a = AppConfig::new(name, argv);
    a.stdout = Output::Null;
    a.stderr = Output::Null;
    a.restart = RestartPolicy::Always;
    a.backoff.initial = HumanDuration::from_millis(backoff_ms);
    a.backoff.max = HumanDuration::from_millis(backoff_ms);
    a.backoff.multiplier = 1.0;
    a.crash_loop.max_restarts = 0;
    a.hook.thread_stacks = true;
    a
}

/// Milliseconds: n, median, p90, max.
fn summary(name: &str, mut v: Vec<f64>, target_ms: f64) -> bool {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let ok = q(0.5) <= target_ms;
    println!(
        "{name:<34} n={:<3} median={:>7.2} ms  p90={:>7.2} ms  max={:>7.2} ms  target median <= {target_ms} ms: {}",
        v.len(),
        q(0.5),
        q(0.9),
        v[v.len() - 1],
        if ok { "PASS" } else { "FAIL" }
    );
    ok
}

fn crash_to_restart(runs: usize, backoff_ms: u64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let stamps = dir.path().join("stamps");
    let argv = vec![
        bin("tp-crash").display().to_string(),
        "exit".into(),
        "1".into(),
        "--after".into(),
        "30".into(),
        "--lines".into(),
        "1".into(),
        "--stamp".into(),
        stamps.display().to_string(),
    ];
    let sink = Arc::new(TimedSink::default());
    let sup = Supervisor::start(vec![app("crasher", argv, backoff_ms)], sink.clone() as _).unwrap();
    sink.wait(EventKind::AppRestart, runs, Duration::from_secs(120));
    sup.shutdown();
    let starts = read_stamps(&stamps, "start");
    let exits = read_stamps(&stamps, "exit");
    let lat: Vec<f64> = exits
        .iter()
        .zip(starts.iter().skip(1))
        .take(runs)
        .map(|(e, s)| (s - e) as f64 / 1000.0 - backoff_ms as f64)
        .collect();
    summary(
        &format!("crash -> restart (backoff {backoff_ms} ms)"),
        lat,
        50.0,
    )
}

fn watchdog_hang(runs: usize) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let stamps = dir.path().join("stamps");
    let argv = vec![
        bin("tp-notify").display().to_string(),
        "--pings".into(),
        "3".into(),
        "--interval".into(),
        "50".into(),
        "--stamp".into(),
        stamps.display().to_string(),
    ];
    let watchdog_ms = 200;
    let mut a = app("notifier", argv, 0);
    a.notify.enabled = true;
    a.notify.watchdog = HumanDuration::from_millis(watchdog_ms);
    a.stop_grace = HumanDuration::from_secs(2);
    let sink = Arc::new(TimedSink::default());
    let sup = Supervisor::start(vec![a], sink.clone() as _).unwrap();
    sink.wait(EventKind::AppRestart, runs, Duration::from_secs(120));
    sup.shutdown();
    let pings = read_stamps(&stamps, "ping");
    let mut decide = Vec::new();
    let mut event = Vec::new();
    for (emitted, e) in sink.of(EventKind::AppHang).into_iter().take(runs) {
        let detected = e.details["detected_unix_us"].as_i64().unwrap();
        let last = pings
            .iter()
            .filter(|p| **p < detected)
            .max()
            .copied()
            .unwrap();
        let deadline = last + watchdog_ms as i64 * 1000;
        decide.push((detected - deadline) as f64 / 1000.0);
        event.push((emitted - deadline) as f64 / 1000.0);
    }
    let a = summary("watchdog deadline -> decision", decide, 50.0);
    let b = summary("watchdog deadline -> app_hang event", event, 50.0);
    a && b
}

fn probe_hang(runs: usize) -> bool {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let argv = vec![
        bin("tp-http").display().to_string(),
        "--port".into(),
        port.to_string(),
        "--answer".into(),
        "2".into(),
    ];
    let mut a = app("web", argv, 0);
    let mut p = ProbeConfig::new(ProbeCheck::Http {
        url: format!("http://127.0.0.1:{port}/"),
        expect_status: StatusRange::default(),
    });
    p.period = HumanDuration::from_millis(100);
    p.timeout = HumanDuration::from_millis(200);
    p.failure_threshold = 1;
    p.initial_delay = HumanDuration::from_millis(50);
    a.probes.push(p);
    let sink = Arc::new(TimedSink::default());
    let sup = Supervisor::start(vec![a], sink.clone() as _).unwrap();
    sink.wait(EventKind::AppRestart, runs, Duration::from_secs(120));
    sup.shutdown();
    let mut decide = Vec::new();
    let mut event = Vec::new();
    for (emitted, e) in sink.of(EventKind::AppHang).into_iter().take(runs) {
        let ev = &e.details["evidence"];
        let last = ev["failures"].as_array().unwrap().last().unwrap().clone();
        let deadline =
            last["started_unix_us"].as_i64().unwrap() + ev["timeout_ms"].as_i64().unwrap() * 1000;
        let detected = e.details["detected_unix_us"].as_i64().unwrap();
        decide.push((detected - deadline) as f64 / 1000.0);
        event.push((emitted - deadline) as f64 / 1000.0);
    }
    let a = summary("probe deadline -> decision", decide, 50.0);
    let b = summary("probe deadline -> app_hang event", event, 50.0);
    a && b
}

fn main() {
    let args = Args::from_env();
    // `cargo bench` passes `--bench`; our options are `--runs N` and
    // `--backoff-ms B`.
    let runs = args.num("runs", 30).max(2) as usize;
    let backoff = args.num("backoff-ms", 100);
    println!("selfheal supervise latency ({runs} runs each, wall clock of the test programs)");
    let mut ok = true;
    ok &= crash_to_restart(runs, 0);
    ok &= crash_to_restart(runs, backoff);
    ok &= watchdog_hang(runs);
    ok &= probe_hang(runs);
    println!(
        "{}",
        if ok {
            "all targets met"
        } else {
            "some targets missed"
        }
    );
}
