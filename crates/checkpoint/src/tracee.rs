//! The traced process: its threads, their ptrace stop states, stopping and
//! resuming them all, and turning `waitpid` reports into notices.
//!
//! Every call here must come from the tracer thread. Waits use
//! `__WALL | __WNOTHREAD`, so they only ever see tasks this thread traces or
//! forked, never the embedding program's other children, and never block
//! in the kernel (see `wait.rs`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::time::Duration;

use selfheal_sys::ptrace::{self as pt, RawSigInfo, WaitStatus};

use crate::error::TraceError;
use crate::wait::{self, Pacer, Report};

/// Where a thread is, from the tracer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThreadState {
    /// Running (or blocked in the kernel); not in a ptrace stop.
    Running,
    /// Running but an interrupt was requested and its stop not seen yet.
    Stopping,
    /// In a ptrace stop inside signal handling, where registers may be read
    /// and written. `pending` is the signal to deliver on resume (0: none).
    Stopped {
        /// Signal to deliver when resumed.
        pending: i32,
    },
    /// In a job-control group-stop we hold with PTRACE_LISTEN.
    Listening,
    /// Stopped in a group-stop (resume with PTRACE_LISTEN to keep it stopped).
    GroupStopped,
    /// The main thread ended (`pthread_exit`) while others run: a zombie
    /// the kernel reports only when the last thread ends. It never stops
    /// again, and the process's /proc files that go through it (maps, fds)
    /// read empty: no checkpoint can be taken any more.
    Zombie,
}

/// Something the engine must act on, found while handling wait reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A thread stopped with a signal the engine wants to decide about; it
    /// stays stopped with the signal pending.
    Signal {
        /// Thread.
        tid: i32,
        /// Signal.
        sig: i32,
    },
    /// The process executed a new program: every checkpoint is void.
    Exec,
    /// A thread appeared or went away.
    ThreadsChanged,
    /// The whole process is gone.
    Exited(WaitStatus),
}

/// Signals the engine handles itself instead of delivering right away.
pub(crate) type SignalFilter = fn(i32) -> bool;

const STOP_SIGNALS: [i32; 4] = [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

/// A process seized by this thread.
pub(crate) struct Tracee {
    /// Thread-group id.
    pub pid: i32,
    /// pidfd of the process, for pidfd_getfd and signals that can't miss.
    pub pidfd: OwnedFd,
    /// Kills the process if an injected system call never returns.
    pub watchdog: crate::wait::Watchdog,
    /// Longest an injected system call may take.
    pub step_limit: Duration,
    /// `/proc/PID/mem`, read-write (writes go through even to read-only
    /// private pages, like a debugger's).
    pub mem: File,
    /// Every known thread and its state.
    pub threads: BTreeMap<i32, ThreadState>,
    /// Counts threads added and removed: equal thread sets with different
    /// generations hold a thread that ended and another that got its id.
    pub generation: u64,
    /// Set once the process is gone.
    pub exit_status: Option<WaitStatus>,
    /// System calls run inside the process so far.
    pub injected: u64,
    /// Signals stopped threads may hold for the engine.
    filter: SignalFilter,
    /// Inside [`Tracee::stop_all`]: new threads are kept stopped.
    stopping_all: bool,
    /// Signals that arrived while we ran remote system calls and could
    /// not be queued back with their siginfo, re-sent on resume so the
    /// program still gets them (each also in `siginfo_lost`).
    pub deferred_signals: Vec<(i32, i32)>,
    /// Signals a step took before the scratch page existed (the first
    /// calls of a start or an exec): queued back once it does.
    pub unqueued: Vec<(i32, RawSigInfo)>,
    /// Signals re-sent without their siginfo since the engine last
    /// looked: each one changes what the program sees.
    pub siginfo_lost: Vec<TraceError>,
    /// Signals queued back to a thread (thread, mask) since the last
    /// resume: blocked during our later steps too, or each would take
    /// them again.
    pub queued_back: Vec<(i32, u64)>,
    /// Notices from reports handled while waiting for something else (a
    /// remote system call); [`Tracee::poll`] hands them on.
    pub deferred_notices: Vec<Notice>,
}

/// How long a thread may take to reach a stop before we call it stuck
/// (a task in uninterruptible sleep does not stop until the I/O ends).
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// A main thread slower than this to stop is checked for having ended.
const LEADER_LOOK_AFTER: Duration = Duration::from_millis(20);

impl Tracee {
    /// Wraps a process whose threads `tids` this thread has seized.
    pub fn new(pid: i32, tids: &[i32], filter: SignalFilter) -> Result<Tracee, TraceError> {
        let pidfd = selfheal_sys::signal::pidfd_open(pid).map_err(|e| TraceError::sys(pid, e))?;
        let watchdog = crate::wait::Watchdog::new(&pidfd).map_err(|e| TraceError::Io {
            pid,
            what: "start the watchdog thread",
            source: e,
        })?;
        let mem = OpenOptions::new()
            .read(true)
            .write(true)
            .open(crate::procfs::process(pid).path().join("mem"))
            .map_err(|e| TraceError::Io {
                pid,
                what: "open /proc/PID/mem",
                source: e,
            })?;
        let mut threads = BTreeMap::new();
        threads.insert(pid, ThreadState::Running);
        for &t in tids {
            threads.insert(t, ThreadState::Running);
        }
        Ok(Tracee {
            pid,
            pidfd,
            watchdog,
            step_limit: crate::remote::STEP_DEADLINE,
            mem,
            threads,
            generation: 0,
            exit_status: None,
            injected: 0,
            filter,
            stopping_all: false,
            deferred_signals: Vec::new(),
            unqueued: Vec::new(),
            siginfo_lost: Vec::new(),
            queued_back: Vec::new(),
            deferred_notices: Vec::new(),
        })
    }

    /// Reopens `/proc/PID/mem` (needed after exec: the old file keeps
    /// pointing at the old address space).
    pub fn reopen_mem(&mut self) -> Result<(), TraceError> {
        self.mem = OpenOptions::new()
            .read(true)
            .write(true)
            .open(crate::procfs::process(self.pid).path().join("mem"))
            .map_err(|e| TraceError::Io {
                pid: self.pid,
                what: "reopen /proc/PID/mem",
                source: e,
            })?;
        Ok(())
    }

    /// True once the process has exited.
    pub fn is_gone(&self) -> bool {
        self.exit_status.is_some()
    }

    /// Live thread ids, sorted.
    pub fn tids(&self) -> Vec<i32> {
        self.threads
            .iter()
            .filter(|(_, s)| **s != ThreadState::Zombie)
            .map(|(t, _)| *t)
            .collect()
    }

    /// True once the main thread ended while others still run.
    pub fn leader_ended(&self) -> bool {
        self.threads.get(&self.pid) == Some(&ThreadState::Zombie)
    }

    /// A main thread that does not stop may have ended (`pthread_exit`):
    /// its end is reported only with the last thread's, so look.
    fn check_leader_ended(&mut self, notices: &mut Vec<Notice>) {
        if self.threads.get(&self.pid) != Some(&ThreadState::Stopping) {
            return;
        }
        let state = crate::procfs::process(self.pid).stat().map(|s| s.state);
        if matches!(state, Ok('Z' | 'X')) {
            self.threads.insert(self.pid, ThreadState::Zombie);
            self.generation += 1;
            notices.push(Notice::ThreadsChanged);
        }
    }

    /// A thread in a clean stop to run remote system calls on, preferring
    /// the main thread.
    pub fn injection_thread(&self) -> Option<i32> {
        let ok = |s: &ThreadState| matches!(s, ThreadState::Stopped { .. });
        if self.threads.get(&self.pid).is_some_and(ok) {
            return Some(self.pid);
        }
        self.threads.iter().find(|(_, s)| ok(s)).map(|(t, _)| *t)
    }

    /// Handles every report already waiting, without blocking.
    pub fn poll(&mut self, notices: &mut Vec<Notice>) -> Result<(), TraceError> {
        notices.append(&mut self.deferred_notices);
        while !self.is_gone() {
            match wait::look().map_err(|e| TraceError::sys(self.pid, e))? {
                Report::Task(tid, st) => self.handle(tid, st, notices)?,
                Report::Nothing | Report::NoTasks => break,
            }
        }
        Ok(())
    }

    /// Brings every thread into a clean ptrace stop. Reports met on the way
    /// (crash signals, new threads, exec, exit) are added to `notices`.
    pub fn stop_all(&mut self, notices: &mut Vec<Notice>) -> Result<(), TraceError> {
        for (&tid, st) in self.threads.iter_mut() {
            if matches!(st, ThreadState::Running | ThreadState::Listening) {
                match pt::interrupt(tid) {
                    Ok(()) => *st = ThreadState::Stopping,
                    // Already dead: its exit report is on its way.
                    Err(e) if e.is_gone() => *st = ThreadState::Stopping,
                    Err(e) => return Err(TraceError::sys(self.pid, e)),
                }
            }
        }
        self.stopping_all = true;
        let r = self.wait_stopped(notices);
        self.stopping_all = false;
        r
    }

    fn wait_stopped(&mut self, notices: &mut Vec<Notice>) -> Result<(), TraceError> {
        let mut pace = Pacer::new(STOP_DEADLINE);
        let mut looked = false;
        while !self.is_gone() && self.threads.values().any(|s| *s == ThreadState::Stopping) {
            match wait::look().map_err(|e| TraceError::sys(self.pid, e))? {
                Report::Task(tid, st) => {
                    self.handle(tid, st, notices)?;
                    pace.progress();
                }
                Report::NoTasks => self.vanished(notices),
                Report::Nothing => {
                    if !looked && pace.waited() > LEADER_LOOK_AFTER {
                        looked = true;
                        self.check_leader_ended(notices);
                        continue;
                    }
                    if !pace.pause() {
                        let stuck: Vec<i32> = self
                            .threads
                            .iter()
                            .filter(|(_, s)| **s == ThreadState::Stopping)
                            .map(|(t, _)| *t)
                            .collect();
                        return Err(TraceError::Stuck {
                            pid: self.pid,
                            tids: stuck,
                        });
                    }
                }
            }
        }
        if let Some(st) = self.exit_status {
            return Err(TraceError::Exited {
                pid: self.pid,
                status: st,
            });
        }
        Ok(())
    }

    /// Resumes every stopped thread, delivering pending signals.
    pub fn resume_all(&mut self) -> Result<(), TraceError> {
        let pid = self.pid;
        for (&tid, st) in self.threads.iter_mut() {
            let r = match *st {
                ThreadState::Stopped { pending } => {
                    pt::cont(tid, pending).map(|_| ThreadState::Running)
                }
                // If SIGCONT ended the group-stop meanwhile, LISTEN is
                // refused (EINVAL): just run.
                ThreadState::GroupStopped => match pt::listen(tid) {
                    Err(e) if e.errno.0 == libc::EINVAL => {
                        pt::cont(tid, 0).map(|_| ThreadState::Running)
                    }
                    r => r.map(|_| ThreadState::Listening),
                },
                other => Ok(other),
            };
            match r {
                Ok(new) => *st = new,
                // Killed while stopped (SIGKILL): the exit report follows.
                Err(e) if e.is_gone() => *st = ThreadState::Running,
                Err(e) => return Err(TraceError::sys(pid, e)),
            }
        }
        self.queued_back.clear();
        // No scratch page came (its set-up failed): sent from us.
        for (tid, info) in std::mem::take(&mut self.unqueued) {
            crate::remote::send_again(self, tid, info.signo(), "no scratch page to queue it back");
        }
        for (tid, sig) in std::mem::take(&mut self.deferred_signals) {
            let _ = selfheal_sys::signal::tgkill(pid, tid, sig);
        }
        Ok(())
    }

    /// Sets the signal a stopped thread will get on resume.
    pub fn set_pending(&mut self, tid: i32, sig: i32) {
        if let Some(st) = self.threads.get_mut(&tid) {
            *st = ThreadState::Stopped { pending: sig };
        }
    }

    /// Applies one wait report to the thread table.
    pub fn handle(
        &mut self,
        tid: i32,
        st: WaitStatus,
        notices: &mut Vec<Notice>,
    ) -> Result<(), TraceError> {
        let known = self.threads.get(&tid).copied();
        crate::debug(|| format!("report {tid}: {st:?} (was {known:?})"));
        match st {
            WaitStatus::Exited(_) | WaitStatus::Signaled { .. } => {
                if self.threads.remove(&tid).is_some() {
                    self.generation += 1;
                }
                if tid == self.pid {
                    self.exit_status = Some(st);
                    self.threads.clear();
                    notices.push(Notice::Exited(st));
                } else {
                    notices.push(Notice::ThreadsChanged);
                }
            }
            WaitStatus::Stopped { sig, event } => {
                let Some(state) = known else {
                    // A new thread's first stop can arrive before its
                    // creator's clone report: adopt it.
                    notices.push(Notice::ThreadsChanged);
                    self.generation += 1;
                    if self.stopping_all {
                        self.threads
                            .insert(tid, ThreadState::Stopped { pending: 0 });
                    } else {
                        self.try_gone(pt::cont(tid, 0))?;
                        self.threads.insert(tid, ThreadState::Running);
                    }
                    return Ok(());
                };
                let stopping = state == ThreadState::Stopping;
                match event {
                    pt::PTRACE_EVENT_CLONE => {
                        let new = pt::get_event_msg(tid)
                            .map_err(|e| TraceError::sys(self.pid, e))?
                            as i32;
                        let first = if self.stopping_all {
                            ThreadState::Stopping
                        } else {
                            ThreadState::Running
                        };
                        if let std::collections::btree_map::Entry::Vacant(e) =
                            self.threads.entry(new)
                        {
                            e.insert(first);
                            self.generation += 1;
                        }
                        notices.push(Notice::ThreadsChanged);
                        // Stopped inside clone(): not a place to touch registers.
                        self.cont_keep(tid, state)?;
                    }
                    pt::PTRACE_EVENT_EXEC => {
                        // Every other thread is gone and the exec'ing one now
                        // carries the process id; the program is new.
                        let former = pt::get_event_msg(tid).map(|m| m as i32).unwrap_or(tid);
                        let st = self.threads.get(&former).copied().unwrap_or(state);
                        self.threads.clear();
                        self.threads.insert(self.pid, st);
                        self.generation += 1;
                        notices.push(Notice::Exec);
                        // Not a place to touch registers either (the end of
                        // execve sets rax on the way out). An interrupt sent
                        // before the exec may be gone with the old thread:
                        // ask again, or the new program runs (or ends) while
                        // the stop waits for it and the exec goes unseen.
                        self.cont_keep(self.pid, st)?;
                        if st == ThreadState::Stopping {
                            self.try_gone(pt::interrupt(self.pid))?;
                        }
                    }
                    pt::PTRACE_EVENT_STOP => {
                        // The kernel reports the stop signal while the
                        // group-stop lasts and SIGTRAP once SIGCONT ended
                        // it, also for a thread interrupted out of LISTEN:
                        // the signal alone says where the thread goes back
                        // to (a thread put back into LISTEN after SIGCONT
                        // would sleep until SIGKILL).
                        let group = STOP_SIGNALS.contains(&sig);
                        if stopping {
                            let new = if group {
                                ThreadState::GroupStopped
                            } else {
                                ThreadState::Stopped { pending: 0 }
                            };
                            self.threads.insert(tid, new);
                        } else if group {
                            self.try_gone(pt::listen(tid))?;
                            self.threads.insert(tid, ThreadState::Listening);
                        } else {
                            // Leftover interrupt, or the end of a group-stop.
                            self.try_gone(pt::cont(tid, 0))?;
                            self.threads.insert(tid, ThreadState::Running);
                        }
                    }
                    0 => {
                        if (self.filter)(sig) {
                            self.threads
                                .insert(tid, ThreadState::Stopped { pending: sig });
                            notices.push(Notice::Signal { tid, sig });
                        } else if stopping {
                            self.threads
                                .insert(tid, ThreadState::Stopped { pending: sig });
                        } else {
                            self.try_gone(pt::cont(tid, sig))?;
                        }
                    }
                    _ => self.cont_keep(tid, state)?,
                }
            }
        }
        Ok(())
    }

    /// Resumes a thread stopped at an event (clone, exec, exit) where it may
    /// not be inspected; a requested interrupt stays pending and lands next.
    fn cont_keep(&mut self, tid: i32, state: ThreadState) -> Result<(), TraceError> {
        self.try_gone(pt::cont(tid, 0))?;
        let next = if state == ThreadState::Stopping {
            ThreadState::Stopping
        } else {
            ThreadState::Running
        };
        self.threads.insert(tid, next);
        Ok(())
    }

    fn try_gone(&self, r: selfheal_sys::error::Result<()>) -> Result<(), TraceError> {
        match r {
            Err(e) if !e.is_gone() => Err(TraceError::sys(self.pid, e)),
            _ => Ok(()),
        }
    }

    /// No task of ours is left although the process was not seen to end
    /// (reaped by someone else): it is gone, how is unknown.
    fn vanished(&mut self, notices: &mut Vec<Notice>) {
        let st = WaitStatus::Signaled {
            sig: libc::SIGKILL,
            core_dumped: false,
        };
        self.exit_status = Some(st);
        self.threads.clear();
        notices.push(Notice::Exited(st));
    }

    /// Kills the process (SIGKILL through the pidfd) and reaps every
    /// thread, for at most `limit`. False if it is still there then (a
    /// thread in uninterruptible sleep dies only when its I/O ends): poll
    /// on, it is dying.
    pub fn kill_and_reap(&mut self, limit: Duration) -> bool {
        let _ = selfheal_sys::signal::pidfd_send_signal(&self.pidfd, libc::SIGKILL);
        let mut pace = Pacer::new(limit);
        let mut notices = Vec::new();
        while !self.is_gone() {
            match wait::look() {
                // A thread killed in an event stop (exit, clone) may need
                // resuming to die; errors on a dying task do not matter.
                Ok(Report::Task(tid, st)) => {
                    let _ = self.handle(tid, st, &mut notices);
                    pace.progress();
                }
                Ok(Report::NoTasks) => self.vanished(&mut notices),
                Ok(Report::Nothing) => {
                    if !pace.pause() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }
}
