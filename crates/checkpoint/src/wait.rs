//! Waiting for reports of traced tasks without ever blocking in the kernel.
//!
//! A blocking `waitpid` can wait forever: on a thread-group leader that
//! exited while another thread is a zombie only we may reap (the leader is
//! not reported until every other thread is reaped), or on a task stuck in
//! uninterruptible sleep. So every wait here polls with `WNOHANG`, handles
//! whatever report comes (from any of our tasks), and gives up at a
//! deadline the caller chose.

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
    fn nothing_to_wait_for_is_reported_as_such() {
        // A fresh thread has no children or tracees of its own.
        let r = std::thread::spawn(look).join().unwrap().unwrap();
        assert_eq!(r, Report::NoTasks);
    }
}
