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

/// Records the first two signals its handler gets (SIGUSR1, SIGSEGV) as
/// "signo code pid value" lines in the file named by its argument.
/// With a second argument it first makes `rt_tgsigqueueinfo` fail.
const TWO_SIGNALS: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static volatile int n;
static volatile long rec[2][4];
static void h(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    if (n < 2) {
        rec[n][0] = sig;
        rec[n][1] = si->si_code;
        rec[n][2] = si->si_pid;
        rec[n][3] = (long)si->si_value.sival_ptr;
    }
    n++;
}
int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) return 2;
    struct sigaction sa = {.sa_sigaction = h, .sa_flags = SA_SIGINFO};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, 0) || sigaction(SIGSEGV, &sa, 0)) return 2;
    if (argc == 3) {
        /* "deny": rt_tgsigqueueinfo fails with EPERM, for us too. */
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_rt_tgsigqueueinfo, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {.len = 4, .filter = f};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
            prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
            return 4;
    }
    while (n < 2) usleep(1000);
    FILE *f = fopen(argv[1], "w");
    if (!f) return 3;
    for (int i = 0; i < 2; i++)
        fprintf(f, "%ld %ld %ld %ld\n", rec[i][0], rec[i][1], rec[i][2], rec[i][3]);
    return fclose(f) ? 3 : 0;
}
"#;

/// `sigqueue PID SIG VALUE`.
const SIGQUEUE: &str = r#"
#include <signal.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    union sigval v = {.sival_ptr = (void *)atol(argv[3])};
    return sigqueue(atoi(argv[1]), atoi(argv[2]), v) ? 1 : 0;
}
"#;

/// Queues `sig` with `value` to `pid` from a new process; its pid.
fn sigqueue_from_helper(helper: &str, pid: i32, sig: i32, value: u64) -> u32 {
    let child = std::process::Command::new(helper)
        .args([pid.to_string(), sig.to_string(), value.to_string()])
        .spawn()
        .unwrap();
    let sender = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sigqueue helper: {:?}", out.status);
    sender
}

/// A thread held at one signal meets a second, sent from outside, while
/// we run a system call inside it: both reach the program with their own
/// siginfo. The second was sent again from the tracer (SI_TKILL, no
/// value) before it was queued back from inside the thread.
#[test]
fn a_second_signal_met_by_a_held_thread_keeps_its_siginfo() {
    two_signals_keep_their_siginfo(Case::Held);
}

/// The same, the second met by the first calls of a start (mapping the
/// scratch page, where a siginfo is put to queue it back): it was sent
/// again from the tracer, siginfo lost, until it waited for the page.
#[test]
fn a_signal_met_before_the_scratch_page_exists_keeps_its_siginfo() {
    two_signals_keep_their_siginfo(Case::BeforeScratch);
}

/// The program forbids `rt_tgsigqueueinfo` (seccomp): the second signal
/// cannot be queued back. It still reaches the program, from the tracer
/// (SI_TKILL, no value), and the loss is recorded for the engine (which
/// then refuses a rollback, or reports it) instead of passing silently.
#[test]
fn a_signal_that_cannot_be_queued_back_is_recorded_as_losing_its_siginfo() {
    two_signals_keep_their_siginfo(Case::Denied);
}

#[derive(PartialEq)]
enum Case {
    Held,
    BeforeScratch,
    Denied,
}

fn two_signals_keep_their_siginfo(case: Case) {
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP: needs root (PTRACE_SETSIGINFO on a traced test program)");
        return;
    }
    let (Some((dir, prog)), Some((_d2, helper))) = (
        build_c("twosignals", TWO_SIGNALS),
        build_c("sigqueue", SIGQUEUE),
    ) else {
        return;
    };
    let record = dir.path().join("record");
    let spec = LaunchSpec {
        program: selfheal_sys::program::Program {
            argv: [prog, record.display().to_string(), "deny".to_string()]
                [..if case == Case::Denied { 3 } else { 2 }]
                .to_vec(),
            ..Default::default()
        },
        ..LaunchSpec::default()
    };
    let (pid, pending) = launch(&spec).unwrap();
    // Hold SIGUSR1 when it comes.
    let mut t = Tracee::new(pid, &[], |s| s == libc::SIGUSR1).unwrap();
    t.set_pending(pid, pending);
    t.resume_all().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut notices = Vec::new();
    let handled = |pid| {
        crate::procfs::read_signal_dispositions(pid)
            .is_ok_and(|d| d.catches(libc::SIGUSR1) && d.catches(libc::SIGSEGV))
    };
    while !handled(pid) {
        assert!(std::time::Instant::now() < deadline, "no handlers");
        t.poll(&mut notices).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let usr1_from = sigqueue_from_helper(&helper, pid, libc::SIGUSR1, 7);
    while t.threads.get(&pid)
        != Some(&ThreadState::Stopped {
            pending: libc::SIGUSR1,
        })
    {
        assert!(std::time::Instant::now() < deadline, "SIGUSR1 never held");
        t.poll(&mut notices).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let mut remote = Remote::locate(&t).unwrap();
    // Queued while the thread is held: our next step takes it first.
    let segv_from = if case == Case::BeforeScratch {
        let from = sigqueue_from_helper(&helper, pid, libc::SIGSEGV, 9);
        remote.scratch(&mut t).unwrap();
        from
    } else {
        remote.scratch(&mut t).unwrap();
        let from = sigqueue_from_helper(&helper, pid, libc::SIGSEGV, 9);
        let got = remote.syscall(&mut t, libc::SYS_getpid, [0; 6]).unwrap();
        assert_eq!(got, pid as u64);
        from
    };
    let queued = selfheal_sys::ptrace::peek_siginfo(pid, false).unwrap();
    let (segv_code, segv_from, segv_value) = if case == Case::Denied {
        let lost: Vec<String> = t.siginfo_lost.iter().map(|e| e.to_string()).collect();
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(
            matches!(t.siginfo_lost[0], TraceError::SiginfoLost { tid, signal, .. }
                if tid == pid && signal == libc::SIGSEGV),
            "{lost:?}"
        );
        assert!(lost[0].contains("rt_tgsigqueueinfo"), "{lost:?}");
        // SI_TKILL from this process, the tracer.
        (-6, std::process::id(), 0)
    } else {
        assert!(t.siginfo_lost.is_empty(), "{:?}", t.siginfo_lost);
        // Queued back: pending in the thread's own queue, siginfo and all.
        assert!(
            queued
                .iter()
                .any(|i| i.signo() == libc::SIGSEGV && i.pid() == segv_from as i32),
            "{queued:?}"
        );
        (-1, segv_from, 9)
    };
    t.resume_all().unwrap();
    while !t.is_gone() {
        assert!(std::time::Instant::now() < deadline, "program never ended");
        t.poll(&mut notices).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(t.exit_status, Some(WaitStatus::Exited(0)));
    let mut lines: Vec<String> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    // si_code -1: SI_QUEUE.
    assert_eq!(
        lines,
        [
            format!("{} -1 {usr1_from} 7", libc::SIGUSR1),
            format!("{} {segv_code} {segv_from} {segv_value}", libc::SIGSEGV),
        ]
    );
}
