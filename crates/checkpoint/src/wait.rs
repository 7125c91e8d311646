//! Waiting for reports of traced tasks, never for ever.
//!
//! A blocking `waitpid` can wait forever: on a thread-group leader that
//! exited while another thread is a zombie only we may reap (the leader is
//! not reported until every other thread is reaped), or on a task stuck in
//! uninterruptible sleep. So every wait here handles whatever report comes
//! (from any of our tasks) and has a deadline: polls with `WNOHANG` give up
//! at it.
//!
//! The one blocking wait ([`block`], for a single-step, where a report is
//! normally sure to come) is bounded by a [`Watchdog`] in two stages:
//!
//! 1. At the step's deadline it kills the process (SIGKILL through its
//!    pidfd). A process that can act on the kill ends, and its end ends the
//!    wait.
//! 2. A process that cannot act on it does not end: a task frozen by the
//!    cgroup v1 freezer stays frozen (SIGKILL pending) until thawed, and a
//!    task in uninterruptible sleep until the kernel lets it go. So
//!    [`GRACE`] after the kill, if the wait has still not ended, the
//!    watchdog interrupts it: it sends the tracer thread (never anything
//!    else) [`wake_signal`], whose handler does nothing and is installed
//!    without `SA_RESTART`, so `waitpid` returns EINTR and [`block`] returns
//!    `Ok(None)`. It sends again every [`RESEND`] until the step is
//!    disarmed, in case one landed just before the wait began.
//!
//! The handler is installed once per process, only if the signal still has
//! its default disposition: an embedding program that handles or ignores
//! it keeps its own, and the wait then polls (`WNOHANG`, paced) instead of
//! blocking — bounded the same way, at some CPU cost per step. Before each
//! send the watchdog checks the handler is still ours, so a handler the
//! program installed later is never run by us (but then stage 2 cannot end
//! a blocking wait: the program took the signal back). Other signals and
//! their handlers are not touched.
//!
//! The step then fails with `TraceError::StepKilled` (`ended: false`).
//! What happens to the program: it was killed and never runs on. The
//! engine takes its kill path: it polls up to 10 s for the end, then says
//! the process "was killed but did not end" and keeps polling without
//! blocking (answering requests; a rollback is refused) until the kernel
//! lets the task act on the kill (the freezer thawed, the sleep over);
//! then it is reaped and its end (SIGKILL) reported. Nothing else is
//! signalled: the watchdog sends SIGKILL only through the traced process's
//! pidfd, and the wake signal only to our own tracer thread. A v1-frozen
//! program is thus killed at the thaw; before this, the tracer thread hung
//! in `waitpid` until then, and for ever if it never thawed.
//!
//! The normal case costs nothing measurable: arming stores the thread's id
//! (cached per thread), and no signal is sent. An injected `getppid` took
//! 17.9-19.7 µs before and 17.9-19.0 µs after (3 alternating runs each,
//! 2-core VM under load, 2026-12-06; `per_injected_call` in `remote.rs`).

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
/// normally sure to come (a task was just resumed for one step) and `wd`
/// is armed for it. `Ok(None)` when the watchdog gave up on the wait (the
/// process was killed at the deadline and did not end within [`GRACE`]).
pub(crate) fn block(wd: &Watchdog) -> Result<Option<Report>, SysError> {
    if wd.signal.is_none() {
        return poll_until_given_up(wd);
    }
    loop {
        match pt::wait_own_interruptible() {
            Ok(Some((tid, st))) => return Ok(Some(Report::Task(tid, st))),
            Ok(None) => return Ok(Some(Report::Nothing)),
            Err(e) if e.errno.0 == libc::ECHILD => return Ok(Some(Report::NoTasks)),
            // Ours, or a handler of the embedding program's without
            // SA_RESTART: wait on unless the watchdog gave up.
            Err(e) if e.errno.0 == libc::EINTR => {
                if wd.given_up() {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// [`block`] without the wake signal: polls until a report or until the
/// watchdog gives up.
fn poll_until_given_up(wd: &Watchdog) -> Result<Option<Report>, SysError> {
    let mut pace = Pacer::new(Duration::from_secs(u32::MAX as u64));
    loop {
        match look()? {
            Report::Nothing => {}
            r => return Ok(Some(r)),
        }
        if wd.given_up() {
            return Ok(None);
        }
        pace.pause();
    }
}

/// How long after its kill the watchdog lets a process take to end before
/// it interrupts the wait for it. A process that can act on SIGKILL ends
/// within milliseconds (a huge one within a second or so); if it did not,
/// giving up early costs nothing: the engine then waits for the end without
/// blocking.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// How often the wake signal is sent again while the wait goes on.
pub(crate) const RESEND: Duration = Duration::from_millis(100);

/// The signal that interrupts the tracer thread's blocking wait:
/// `SIGRTMAX - 3` (61 with glibc). A real-time signal means nothing by
/// default; programs that use them mostly count up from `SIGRTMIN`, and
/// tools claim the very top (valgrind takes `SIGRTMAX`).
pub(crate) fn wake_signal() -> i32 {
    selfheal_sys::signal::sigrtmax() - 3
}

/// The wake signal if its handler is installed (once per process); None if
/// the embedding program has its own use for it.
fn wake() -> Option<i32> {
    static WAKE: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();
    *WAKE.get_or_init(|| {
        let sig = wake_signal();
        match selfheal_sys::signal::install_wake_handler(sig) {
            Ok(true) => Some(sig),
            r => {
                crate::debug(|| format!("wake signal {sig} not ours ({r:?}): single-steps poll"));
                None
            }
        }
    })
}

thread_local! {
    /// This thread's id once the wake signal is unblocked for it.
    static WAITER: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The calling thread's id, with the wake signal unblocked for it (done
/// once per thread: it may have inherited a mask that blocks it).
fn this_waiter(sig: i32) -> i32 {
    WAITER.with(|w| {
        if w.get() == 0 {
            if let Err(e) = selfheal_sys::signal::unblock_on_this_thread(sig) {
                crate::debug(|| format!("unblock wake signal {sig}: {e}"));
            }
            w.set(selfheal_sys::sched::gettid());
        }
        w.get()
    })
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
/// so that a *blocking* wait for the call's report ends (a killed process
/// reports its end), and interrupts that wait if the process does not end
/// (see the module doc). Blocking there matters: a tracer polling for the
/// report competes for the CPU with the very thread it waits for, which
/// made every injected call cost ~0.2 ms of CPU on a loaded machine.
#[derive(Debug)]
pub(crate) struct Watchdog {
    shared: std::sync::Arc<(std::sync::Mutex<Armed>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The wake signal, if its handler is ours.
    signal: Option<i32>,
}

#[derive(Debug, Default)]
struct Armed {
    deadline: Option<Instant>,
    /// When to interrupt the waiting thread (after a kill).
    interrupt_at: Option<Instant>,
    /// The thread that waits while armed.
    waiter: Option<i32>,
    /// When the watchdog thread wakes up next on its own.
    wakes_at: Option<Instant>,
    fired: bool,
    given_up: bool,
    stop: bool,
}

impl Watchdog {
    /// A watchdog for the process behind `pidfd` (a duplicate is kept).
    pub fn new(pidfd: &std::os::fd::OwnedFd) -> std::io::Result<Watchdog> {
        let pidfd = pidfd.try_clone()?;
        let signal = wake();
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
                    if g.deadline.is_some_and(|d| d <= now) {
                        let _ = selfheal_sys::signal::pidfd_send_signal(&pidfd, libc::SIGKILL);
                        g.deadline = None;
                        g.fired = true;
                        g.interrupt_at = Some(now + GRACE);
                        continue;
                    }
                    if g.interrupt_at.is_some_and(|i| i <= now) {
                        g.given_up = true;
                        g.interrupt_at = Some(now + RESEND);
                        // Under the lock: once disarmed, nothing more is
                        // sent. Only to our own thread, only to our handler.
                        if let (Some(sig), Some(tid)) = (signal, g.waiter) {
                            if selfheal_sys::signal::wake_handler_installed(sig) {
                                let _ = selfheal_sys::signal::tgkill(
                                    std::process::id() as i32,
                                    tid,
                                    sig,
                                );
                            }
                        }
                        continue;
                    }
                    // Timed waits only: arming for a deadline after the
                    // next wake-up (the usual case: the same delay each
                    // time) needs no wake-up call.
                    let wait = [g.deadline, g.interrupt_at]
                        .into_iter()
                        .flatten()
                        .min()
                        .map_or(Duration::from_secs(10), |t| t - now);
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
            signal,
        })
    }

    /// Kill the process at `deadline` unless disarmed before; the calling
    /// thread is the one that waits meanwhile.
    pub fn arm(&self, deadline: Instant) {
        let waiter = self.signal.map(this_waiter);
        let mut g = self.shared.0.lock().unwrap_or_else(|p| p.into_inner());
        g.deadline = Some(deadline);
        g.waiter = waiter;
        g.fired = false;
        g.given_up = false;
        g.interrupt_at = None;
        if g.wakes_at.is_none_or(|w| deadline < w) {
            self.shared.1.notify_all();
        }
    }

    /// True once the process was killed and did not end within [`GRACE`]:
    /// the wait for it is to end.
    pub fn given_up(&self) -> bool {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .given_up
    }

    /// Called off in time; true if it had fired (the process was killed).
    pub fn disarm(&self) -> bool {
        let mut g = self.shared.0.lock().unwrap_or_else(|p| p.into_inner());
        g.deadline = None;
        g.interrupt_at = None;
        g.given_up = false;
        g.waiter = None;
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
