//! Injected system calls in programs the cgroup v1 freezer freezes.

use super::tests::*;
use super::*;

/// A cgroup v1 freezer cgroup of our own. On drop (a failed test too)
/// it is thawed, the processes we started in it are killed and reaped,
/// and it is removed.
struct Freezer {
    dir: std::path::PathBuf,
    kids: Vec<std::process::Child>,
}

impl Freezer {
    /// None (the caller skips, said why) without a v1 freezer.
    fn create() -> Option<Freezer> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = std::path::Path::new("/sys/fs/cgroup/freezer");
        let dir = base.join(format!(
            "selfheal-ckpt-frz-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        if !base.join("cgroup.procs").exists() || std::fs::create_dir(&dir).is_err() {
            eprintln!("SKIP: no cgroup v1 freezer at {}", base.display());
            return None;
        }
        let f = Freezer {
            dir,
            kids: Vec::new(),
        };
        if !f.dir.join("freezer.state").exists() {
            eprintln!("SKIP: {} has no freezer.state", f.dir.display());
            return None;
        }
        Some(f)
    }

    fn procs(&self) -> std::path::PathBuf {
        self.dir.join("cgroup.procs")
    }
}

/// Writes `state` (FROZEN, THAWED) and waits until the kernel is done.
fn set_freezer(dir: &std::path::Path, state: &str) {
    std::fs::write(dir.join("freezer.state"), state).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = std::fs::read_to_string(dir.join("freezer.state")).unwrap();
        if now.trim() == state {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} stays {now}",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
        for k in &mut self.kids {
            let _ = k.kill();
            for _ in 0..250 {
                if !matches!(k.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        for _ in 0..250 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Every pending signal (thread and shared) of `pid`, blocked ones too
/// (unlike `procfs::read_pending_signals`): a signal sent is a signal
/// sent.
fn pending(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .filter_map(|l| {
            let v = l
                .strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))?;
            u64::from_str_radix(v.trim(), 16).ok()
        })
        .fold(0, |a, b| a | b)
}

/// The state letter in /proc/PID/stat.
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// What [`frozen_step`] saw.
#[derive(Debug)]
struct FrozenStep {
    result: Result<(), TraceError>,
    took: std::time::Duration,
    /// Pending signals of the tracee, and of the bystander, while
    /// still frozen after the step returned.
    tracee_pending: u64,
    bystander_pending: u64,
    /// The tracee ended and was reaped after the thaw.
    reaped: bool,
}

/// Traces `sleep` in `frz` (and a sandbox), runs an injected pause()
/// with a 1 s deadline and freezes the cgroup while it is in flight
/// (or, with `freeze_first`, before the step); `bystander` (untraced,
/// started by the test) is frozen with it.
fn frozen_step(frz: &Freezer, bystander: i32, freeze_first: bool) -> FrozenStep {
    // Not in the v1 freezer hierarchy: the tracee's freezer cgroup is
    // `frz`, which the test freezes.
    let sandbox =
        test_sandbox(selfheal_cgroup::SandboxConfig::new("selfheal-ckpt").use_v1_freezer(false));
    // Frozen with the tracee; not in the sandbox (nothing is done to
    // it, and it outlives the sandbox).
    std::fs::write(frz.procs(), bystander.to_string()).unwrap();
    let mut procs = sandbox.cgroup().procs_files();
    procs.push(frz.procs());
    let dir = frz.dir.clone();
    within(std::time::Duration::from_secs(60), move || {
        let mut t = start_threads_in(&["sleep", "30"], procs, 1);
        t.step_limit = std::time::Duration::from_secs(1);
        let r = Remote::locate(&t).unwrap();
        let d = dir.clone();
        if freeze_first {
            // Its threads are in a ptrace stop: frozen there, they still
            // take our registers and the step request, and run it only
            // once thawed.
            set_freezer(&d, "FROZEN");
        }
        let freezer = std::thread::spawn(move || {
            if !freeze_first {
                std::thread::sleep(std::time::Duration::from_millis(300));
                set_freezer(&d, "FROZEN");
            }
        });
        let started = std::time::Instant::now();
        // pause() returns only for a signal; the watchdog's SIGKILL
        // cannot end a frozen task: without the interrupt this blocks
        // until the thaw.
        let result = r.syscall(&mut t, libc::SYS_pause, [0; 6]).map(drop);
        let took = started.elapsed();
        freezer.join().unwrap();
        let tracee_pending = pending(t.pid);
        let bystander_pending = pending(bystander);
        set_freezer(&dir, "THAWED");
        let reaped = t.kill_and_reap(std::time::Duration::from_secs(30)) && t.is_gone();
        drop(sandbox);
        FrozenStep {
            result,
            took,
            tracee_pending,
            bystander_pending,
            reaped,
        }
    })
}

fn sleeper_in(frz: &mut Freezer) -> i32 {
    let kid = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = kid.id() as i32;
    frz.kids.push(kid);
    pid
}

const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);

/// A step of a process frozen by the v1 freezer (mid-call, or before
/// the step) ends in an error in bounded time: killed at the deadline,
/// not ended (frozen), given up on after the grace.
fn frozen_step_ends_in_an_error(freeze_first: bool) {
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP: needs root (cgroups)");
        return;
    }
    let Some(mut frz) = Freezer::create() else {
        return;
    };
    let bystander = sleeper_in(&mut frz);
    let seen = frozen_step(&frz, bystander, freeze_first);
    assert!(
        matches!(
            seen.result,
            Err(TraceError::StepKilled { ended: false, .. })
        ),
        "{seen:?}"
    );
    assert_ne!(seen.tracee_pending & SIGKILL_BIT, 0, "{seen:?}");
    assert!(seen.took >= std::time::Duration::from_secs(1), "{seen:?}");
    let bound =
        std::time::Duration::from_secs(1) + crate::wait::GRACE + std::time::Duration::from_secs(5);
    assert!(seen.took < bound, "{seen:?}");
    assert!(seen.reaped, "the kill took effect at the thaw: {seen:?}");
}

#[test]
fn a_step_of_a_process_frozen_mid_call_by_the_v1_freezer_ends_in_an_error() {
    frozen_step_ends_in_an_error(false);
}

#[test]
fn a_step_of_a_process_frozen_before_it_by_the_v1_freezer_ends_in_an_error() {
    frozen_step_ends_in_an_error(true);
}

#[test]
fn a_frozen_process_the_tracer_does_not_trace_is_never_signalled() {
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP: needs root (cgroups)");
        return;
    }
    let Some(mut frz) = Freezer::create() else {
        return;
    };
    let bystander = sleeper_in(&mut frz);
    let before = std::fs::read_to_string(format!("/proc/{bystander}/stat")).unwrap();
    let seen = frozen_step(&frz, bystander, false);
    assert!(seen.result.is_err(), "{seen:?}");
    // A frozen task cannot take a signal: any sent would still be
    // pending, as the tracee's SIGKILL is.
    assert_ne!(seen.tracee_pending & SIGKILL_BIT, 0, "{seen:?}");
    assert_eq!(seen.bystander_pending, 0, "{seen:?}");
    // Thawed, it sleeps on as before, same process.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(state(bystander), Some('S'));
    let after = std::fs::read_to_string(format!("/proc/{bystander}/stat")).unwrap();
    // Field 22: start time; same pid and start time = same process.
    let start = |s: &str| {
        s[s.rfind(')').unwrap() + 2..]
            .split(' ')
            .nth(19)
            .map(str::to_owned)
    };
    assert_eq!(start(&before), start(&after));
    assert!(
        matches!(frz.kids[0].try_wait(), Ok(None)),
        "bystander ended"
    );
}
