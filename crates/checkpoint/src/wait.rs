//! Waiting for reports of traced tasks, never for ever.
//!
//! A blocking `waitpid` can wait forever: on a thread-group leader that
//! exited while another thread is a zombie only we may reap (the leader is
//! not reported until every other thread is reaped), or on a task stuck in
//! uninterruptible sleep. So every wait here handles whatever report comes
//! (from any of our tasks) and has a deadline: polls with `WNOHANG` give up
//! at it; the one blocking wait (for a single-step, where a report is sure
//! to come) has a [`Watchdog`] that kills the process at it, which ends the
//! wait.

use std::time::{Duration, Instant};

use selfheal_sys::ptrace::{self as pt, WaitStatus};
use selfheal_sys::SysError;

/// What one look for a report found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// A task changed state.
    Task(i32, WaitStatus),
    /// Nothing yet.
    Nothing,
    /// This thread has no tracee or child left (ECHILD).
    NoTasks,
}

/// `waitpid(-1, __WALL | __WNOTHREAD | WNOHANG)`: one report of this
/// thread's tracees and children, never the embedding program's others.
pub(crate) fn look() -> Result<Report, SysError> {
    match pt::wait_own(true) {
        Ok(Some((tid, st))) => Ok(Report::Task(tid, st)),
        Ok(None) => Ok(Report::Nothing),
        Err(e) if e.errno.0 == libc::ECHILD => Ok(Report::NoTasks),
        Err(e) => Err(e),
    }
}

/// `waitpid(-1, __WALL | __WNOTHREAD)`, blocking: only where a report is
/// sure to come (a task was just resumed for one step, and the watchdog
/// kills the process if that step never ends).
pub(crate) fn block() -> Result<Report, SysError> {
    match pt::wait_own(false) {
        Ok(Some((tid, st))) => Ok(Report::Task(tid, st)),
        Ok(None) => Ok(Report::Nothing),
        Err(e) if e.errno.0 == libc::ECHILD => Ok(Report::NoTasks),
        Err(e) => Err(e),
    }
}

/// Paces a loop that polls for reports until a deadline: a ptrace stop
/// normally lands within tens of microseconds, so it yields first and
/// sleeps (briefly, to stay responsive) only when that takes longer.
#[derive(Debug)]
pub(crate) struct Pacer {
    started: Instant,
    limit: Duration,
    spins: u32,
}

impl Pacer {
    /// A pacer that expires `limit` from now.
    pub fn new(limit: Duration) -> Pacer {
        Pacer {
            started: Instant::now(),
            limit,
            spins: 0,
        }
    }

    /// Time since the pacer started.
    pub fn waited(&self) -> Duration {
        self.started.elapsed()
    }

    /// Something happened: poll eagerly again.
    pub fn progress(&mut self) {
        self.spins = 0;
    }

    /// Waits a little before the next look. False once the deadline passed.
    pub fn pause(&mut self) -> bool {
        if self.started.elapsed() > self.limit {
            return false;
        }
        self.spins += 1;
        if self.spins < 2000 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }
}

/// Waits up to `limit` for the report of task `pid` alone (a child that
/// has no threads yet: before its exec, or after setup failed early),
/// reaping nothing else. `Ok(None)` when the deadline passed.
pub(crate) fn wait_task_until(
    pid: i32,
    limit: Duration,
) -> Result<Option<(i32, WaitStatus)>, SysError> {
    let mut pace = Pacer::new(limit);
    loop {
        if let Some(r) = pt::wait_task(pid, true)? {
            return Ok(Some(r));
        }
        if !pace.pause() {
            return Ok(None);
        }
    }
}

/// Kills the process when an injected system call outlives its deadline,
/// so that a *blocking* wait for the call's report always ends (a killed
/// process reports its end). Blocking there matters: a tracer polling for
/// the report competes for the CPU with the very thread it waits for, which
/// made every injected call cost ~0.2 ms of CPU on a loaded machine.
#[derive(Debug)]
pub(crate) struct Watchdog {
    shared: std::sync::Arc<(std::sync::Mutex<Armed>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Armed {
    deadline: Option<Instant>,
    /// When the watchdog thread wakes up next on its own.
    wakes_at: Option<Instant>,
    fired: bool,
    stop: bool,
}

impl Watchdog {
    /// A watchdog for the process behind `pidfd` (a duplicate is kept).
    pub fn new(pidfd: &std::os::fd::OwnedFd) -> std::io::Result<Watchdog> {
        let pidfd = pidfd.try_clone()?;
        let shared = std::sync::Arc::new((
            std::sync::Mutex::new(Armed::default()),
            std::sync::Condvar::new(),
        ));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("selfheal-ckpt-wd".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !g.stop {
                    let now = Instant::now();
                    // Timed waits only: arming for a deadline after the
                    // next wake-up (the usual case: the same delay each
                    // time) needs no wake-up call.
                    let wait = match g.deadline {
                        Some(d) if d <= now => {
                            let _ = selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGKILL);
                            g.deadline = None;
                            g.fired = true;
                            continue;
                        }
                        Some(d) => d - now,
                        None => Duration::from_secs(10),
                    };
                    g.wakes_at = Some(now + wait);
                    g = cv
                        .wait_timeout(g, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            })?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
        })
    }

    /// Kill the process at `deadline` unless disarmed before.
    pub fn arm(&self, deadline: Instant) {
        let mut g = self.shared.0.lock().unwrap_or_else(|p| p.into_inner());
        g.deadline = Some(deadline);
        g.fired = false;
        if g.wakes_at.is_none_or(|w| deadline < w) {
            self.shared.1.notify_all();
        }
    }

    /// Called off in time; true if it had fired (the process was killed).
    pub fn disarm(&self) -> bool {
        let mut g = self.shared.0.lock().unwrap_or_else(|p| p.into_inner());
        g.deadline = None;
        std::mem::take(&mut g.fired)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pacer_expires_at_its_deadline_and_not_before() {
        let mut p = Pacer::new(Duration::from_millis(30));
        let t = Instant::now();
        while p.pause() {}
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(30), "{took:?}");
        // Generous: the point is that it ends, on a busy machine too.
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn an_armed_watchdog_kills_at_its_deadline_and_a_disarmed_one_never() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pidfd = selfheal_sys::signal::pidfd_open(child.id() as i32).unwrap();
        let wd = Watchdog::new(&pidfd).unwrap();
        wd.arm(Instant::now() + Duration::from_millis(20));
        assert!(!wd.disarm(), "disarmed in time");
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "killed though disarmed"
        );
        let t = Instant::now();
        wd.arm(Instant::now() + Duration::from_millis(50));
        let st = child.wait().unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(45),
            "{:?}",
            t.elapsed()
        );
        // Not at its next idle wake-up 10 s later: armed is armed.
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL));
        assert!(wd.disarm(), "it fired");
    }

    #[test]
    fn nothing_to_wait_for_is_reported_as_such() {
        // A fresh thread has no children or tracees of its own.
        let r = std::thread::spawn(look).join().unwrap().unwrap();
        assert_eq!(r, Report::NoTasks);
    }
}
