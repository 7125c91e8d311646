//! Shared helpers: test programs, a cgroup sandbox for them, fast app
//! settings, and waiting for events.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal_cgroup::{Sandbox, SandboxConfig};
use selfheal_config::{AppConfig, HumanDuration, Output};
use selfheal_event::{Event, EventKind, MemorySink};
use selfheal_supervise::{Options, Supervisor};

/// Generous bound for anything the supervisor should do "soon" on a noisy
/// shared machine.
pub const SOON: Duration = Duration::from_secs(20);

/// The path of a `tp-*` program.
pub fn tp(name: &str) -> String {
    selfheal_testprogs::bin(name).display().to_string()
}

/// An app running `argv` with settings that make tests quick: short
/// backoff and grace, no parent-death surprises.
pub fn app(name: &str, argv: &[&str]) -> AppConfig {
    let mut a = AppConfig::new(name, argv.iter().map(|s| s.to_string()).collect());
    // The programs' chatter would bypass the test harness's capture.
    a.stdout = Output::Null;
    // Still piped through the supervisor for the stderr tail.
    a.stderr = Output::Null;
    a.backoff.initial = HumanDuration::from_millis(20);
    a.backoff.max = HumanDuration::from_millis(200);
    a.stop_grace = HumanDuration::from_secs(2);
    a.crash_loop.max_restarts = 5;
    a.crash_loop.window = HumanDuration::from_secs(60);
    a
}

/// A cgroup sandbox (pids, memory, half a CPU) for misbehaving programs,
/// or `None` with the reason printed when this machine cannot host one.
pub fn sandbox(name: &str) -> Option<Sandbox> {
    match Sandbox::new(
        SandboxConfig::new(name)
            .pids_max(64)
            .memory_max_bytes(256 << 20)
            .cpus(Some(0.5)),
    ) {
        Ok(s) => Some(s),
        Err(e) if e.is_unavailable() => {
            eprintln!("SKIP: no cgroup sandbox for the test program ({e}); faults are only injected inside one");
            None
        }
        Err(e) => panic!("sandbox: {e}"),
    }
}

/// Options that put every program in `sandbox` (when there is one).
pub fn options(sandbox: Option<&Sandbox>) -> Options {
    Options {
        cgroup_procs: sandbox
            .map(|s| s.cgroup().procs_files())
            .unwrap_or_default(),
        ..Options::default()
    }
}

/// Starts supervising `apps` into a fresh memory sink.
pub fn start(apps: Vec<AppConfig>, sandbox: Option<&Sandbox>) -> (Supervisor, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::new());
    let sup = Supervisor::start_with(apps, Arc::clone(&sink) as _, options(sandbox)).unwrap();
    (sup, sink)
}

/// Waits until `pred` holds for the events so far; panics with every event
/// after `timeout`.
pub fn wait_for(
    sink: &MemorySink,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + timeout;
    loop {
        let events = sink.events();
        if pred(&events) {
            return events;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out waiting for {what}; events so far:\n{}",
                dump(&events)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `n` events of `kind`.
pub fn wait_kind(sink: &MemorySink, kind: EventKind, n: usize) -> Vec<Event> {
    wait_for(sink, SOON, &format!("{n} {kind} event(s)"), |e| {
        count(e, kind) >= n
    })
}

/// Events of `kind`.
pub fn of(events: &[Event], kind: EventKind) -> Vec<Event> {
    events.iter().filter(|e| e.kind == kind).cloned().collect()
}

/// Number of events of `kind`.
pub fn count(events: &[Event], kind: EventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

/// One line per event, for failure messages.
pub fn dump(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("  {} {} {} {}", e.kind, e.severity, e.message, e.details))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The pid in an event's culprit.
pub fn pid_of(e: &Event) -> i32 {
    e.culprit
        .as_ref()
        .and_then(|c| c.pid)
        .expect("event names a pid")
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temp file path that is removed with the returned guard.
pub fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(name);
    (d, p)
}
