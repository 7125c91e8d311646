//! Injected system calls in real traced programs, and helpers that start
//! traced programs for tests.

use super::*;
use crate::launch::{launch, LaunchSpec};

pub(crate) fn no_filter(_: i32) -> bool {
    false
}

/// Starts `argv` traced and stopped; returns the tracee.
pub(crate) fn start_stopped(argv: &[&str]) -> Tracee {
    let spec = LaunchSpec {
        program: selfheal_sys::program::Program {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        ..LaunchSpec::default()
    };
    let mut t = launch_running(&spec);
    let mut notices = Vec::new();
    t.stop_all(&mut notices).unwrap();
    t
}

/// Launches `spec` traced and lets it run (out of its exec stop).
pub(crate) fn launch_running(spec: &LaunchSpec) -> Tracee {
    let (pid, pending) = launch(spec).unwrap();
    let mut t = Tracee::new(pid, &[], no_filter).unwrap();
    t.set_pending(pid, pending);
    t.resume_all().unwrap();
    t
}

/// Compiles C `source` into a program in a temporary directory; None
/// (the caller skips) without a C compiler.
pub(crate) fn build_c(name: &str, source: &str) -> Option<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let bin = dir.path().join(name);
    let ok = std::process::Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: no working C compiler (cc)");
        return None;
    }
    Some((dir, bin.display().to_string()))
}

/// A cgroup sandbox for a traced test program (callers checked for root).
pub(crate) fn test_sandbox(config: selfheal_cgroup::SandboxConfig) -> selfheal_cgroup::Sandbox {
    selfheal_cgroup::Sandbox::new(config).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts `argv` traced in `sandbox`, lets it run until it has
/// `threads` threads, and stops them all.
pub(crate) fn start_threads(
    argv: &[&str],
    sandbox: &selfheal_cgroup::Sandbox,
    threads: usize,
) -> Tracee {
    start_threads_in(argv, sandbox.cgroup().procs_files(), threads)
}

/// [`start_threads`] in the cgroups of these `cgroup.procs` files.
pub(crate) fn start_threads_in(
    argv: &[&str],
    cgroup_procs: Vec<std::path::PathBuf>,
    threads: usize,
) -> Tracee {
    let spec = LaunchSpec {
        program: selfheal_sys::program::Program {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cgroup_procs,
            ..Default::default()
        },
        ..LaunchSpec::default()
    };
    let mut t = launch_running(&spec);
    let mut notices = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while t.threads.len() < threads {
        assert!(
            std::time::Instant::now() < deadline,
            "threads never started"
        );
        t.poll(&mut notices).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    t.stop_all(&mut notices).unwrap();
    t
}

/// Runs `f` on its own thread; panics if it does not return within
/// `limit` (the thread is left behind: it hangs).
pub(crate) fn within<T: Send + 'static>(
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not return within {limit:?}: a wait blocks"))
}

#[test]
fn a_process_killed_during_a_remote_call_on_its_leader_is_reaped() {
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP: needs root (cgroup sandbox)");
        return;
    }
    let Some((_dir, prog)) = build_c(
        "twothreads",
        "#include <pthread.h>\n#include <unistd.h>\n\
         static void *idle(void *a) { for (;;) pause(); return a; }\n\
         int main(void) { pthread_t t; pthread_create(&t, 0, idle, 0); for (;;) pause(); }\n",
    ) else {
        return;
    };
    let sandbox = test_sandbox(selfheal_cgroup::SandboxConfig::new("selfheal-ckpt"));
    let (t, r) = within(std::time::Duration::from_secs(60), move || {
        let mut t = start_threads(&[&prog], &sandbox, 2);
        let r = Remote::locate(&t).unwrap();
        let pid = t.pid;
        // The injected pause() blocks in the leader; the process is then
        // killed. The leader is reported only after the other thread
        // (a zombie only its tracer may reap) is reaped: a wait on the
        // leader alone would block forever.
        let killer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            selfheal_sys::signal::kill_process(pid, libc::SIGKILL).unwrap();
        });
        let r = r.syscall(&mut t, libc::SYS_pause, [0; 6]);
        killer.join().unwrap();
        (t.is_gone(), r.map_err(|e| e.is_gone()))
    });
    assert!(t, "the process end was not seen");
    assert_eq!(r, Err(true));
}

#[test]
fn an_injected_call_that_never_returns_ends_in_a_kill_at_the_deadline() {
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP: needs root (cgroup sandbox)");
        return;
    }
    let sandbox = test_sandbox(selfheal_cgroup::SandboxConfig::new("selfheal-ckpt"));
    let (gone, r, took) = within(std::time::Duration::from_secs(60), move || {
        let mut t = start_threads(&["sleep", "30"], &sandbox, 1);
        t.step_limit = std::time::Duration::from_millis(300);
        let r = Remote::locate(&t).unwrap();
        let started = std::time::Instant::now();
        // pause() returns only for a signal: the watchdog's SIGKILL.
        let r = r.syscall(&mut t, libc::SYS_pause, [0; 6]);
        let took = started.elapsed();
        t.kill_and_reap(std::time::Duration::from_secs(30));
        (t.is_gone(), r.map(drop), took)
    });
    assert!(gone);
    assert!(
        matches!(r, Err(TraceError::StepKilled { ended: true, .. })),
        "{r:?}"
    );
    assert!(took >= std::time::Duration::from_millis(300), "{took:?}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
}
#[test]
fn runs_system_calls_inside_a_sleeping_process() {
    let mut t = start_stopped(&["sleep", "30"]);
    let r = Remote::locate(&t).unwrap();
    // sleep is blocked in clock_nanosleep: the injected calls must not
    // disturb its restart.
    let got = r.syscall(&mut t, libc::SYS_getpid, [0; 6]).unwrap();
    assert_eq!(got as i32, t.pid);
    let err = r
        .syscall(&mut t, libc::SYS_close, [9999, 0, 0, 0, 0, 0])
        .unwrap_err();
    assert!(
        matches!(
            err,
            TraceError::Remote {
                errno: libc::EBADF,
                ..
            }
        ),
        "{err}"
    );
    let mut r = r;
    let addr = r.put_cstr(&mut t, "/etc/hostname").unwrap();
    assert!(crate::procfs::read_maps(t.pid)
        .unwrap()
        .iter()
        .any(|v| v.start == addr && v.read && v.write));
    t.resume_all().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    // Still alive and sleeping after the injections.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", t.pid)).unwrap();
    assert!(stat.contains(") S "), "{stat}");
    assert!(t.kill_and_reap(std::time::Duration::from_secs(30)));
    assert!(t.is_gone());
}

/// Cost of one injected system call (one single-step and its wait):
/// `cargo test -p selfheal-checkpoint --lib --release -- --ignored
/// --nocapture per_injected_call` prints the median of 7 rounds.
#[test]
#[ignore = "a measurement, not a check"]
fn per_injected_call() {
    let mut t = start_stopped(&["sleep", "30"]);
    let r = Remote::locate(&t).unwrap();
    for _ in 0..500 {
        r.syscall(&mut t, libc::SYS_getppid, [0; 6]).unwrap();
    }
    let n = 5000;
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let t0 = std::time::Instant::now();
            for _ in 0..n {
                r.syscall(&mut t, libc::SYS_getppid, [0; 6]).unwrap();
            }
            t0.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    println!(
        "injected getppid: median {:.2} us/call (rounds {:.2}..{:.2})",
        rounds[3], rounds[0], rounds[6]
    );
    assert!(t.kill_and_reap(std::time::Duration::from_secs(30)));
}
