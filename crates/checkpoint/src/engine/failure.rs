//! The tracer's crash and rollback handling: a crash signal stops the
//! process, and the failure is rolled back to a checkpoint or refused.

use std::sync::atomic::Ordering;
use std::time::Instant;

use selfheal_sys::ptrace as pt;

use super::{crash_filter, Done, Signature, Tracer};
use crate::error::TraceError;
use crate::events::{Event, Failure, Unrecoverable};
use crate::procfs;
use crate::rollback::RollbackError;
use crate::tracee::Notice;

impl Tracer {
    pub(super) fn crash_in(&self, notices: &[Notice]) -> Option<(i32, i32)> {
        notices.iter().find_map(|n| match n {
            Notice::Signal { tid, sig } => Some((*tid, *sig)),
            _ => None,
        })
    }

    pub(super) fn handle_notices(&mut self, notices: Vec<Notice>) -> Result<(), Done> {
        for n in notices {
            match n {
                Notice::Exited(_) => return self.finish(),
                Notice::Exec => self.exec()?,
                Notice::ThreadsChanged => {}
                Notice::Signal { tid, sig } => self.signal(tid, sig)?,
            }
        }
        Ok(())
    }

    /// A stop that failed (the process ended, or a thread would not
    /// stop) may still have met an exec on the way: the program is another
    /// one, so its checkpoints go and the exec is reported before the end.
    /// (A thread that execs while others are being stopped, and the new
    /// program that ends before its stop, once lost the Exec event.)
    pub(super) fn stop_failed(&mut self, notices: &[Notice], e: TraceError) -> Result<(), Done> {
        self.exec_seen(notices);
        self.fatal(e)
    }

    /// Reports an exec among `notices` (checkpoints of the old image
    /// dropped); true if there was one.
    pub(super) fn exec_seen(&mut self, notices: &[Notice]) -> bool {
        if !notices.iter().any(|n| matches!(n, Notice::Exec)) {
            return false;
        }
        self.s.reset();
        self.send(Event::Exec);
        true
    }

    /// A crash signal stopped thread `tid`.
    fn signal(&mut self, tid: i32, sig: i32) -> Result<(), Done> {
        let ours = self.config.crash_signals.contains(&sig);
        let handled_by_program =
            procfs::read_signal_dispositions(self.s.t.pid).is_ok_and(|d| d.catches(sig));
        let info = pt::get_siginfo(tid).ok();
        let failure = Failure::Crash {
            signal: sig,
            tid,
            code: info.map_or(0, |i| i.code),
            addr_or_pid: info.map_or(0, |i| i.addr_or_pid),
        };
        if !ours || handled_by_program {
            if ours {
                // A crash signal left to the program's own handler: said,
                // since what follows is the program's. (Its handler may
                // also be reset by another of its threads before the
                // kernel delivers this one, which then kills the program
                // with no stop of ours: the kernel reads the disposition
                // only at delivery.)
                self.send(Event::RollbackImpossible {
                    failure,
                    why: Unrecoverable::HandledByProgram { signal: sig },
                });
            }
            self.s.t.set_pending(tid, sig);
            return self.resume_one(tid);
        }
        let mut notices = Vec::new();
        if let Err(e) = self.s.t.stop_all(&mut notices) {
            return self.stop_failed(&notices, e);
        }
        self.failure(failure, Some(tid), None)
    }

    fn resume_one(&mut self, tid: i32) -> Result<(), Done> {
        if let Some(crate::tracee::ThreadState::Stopped { pending }) =
            self.s.t.threads.get(&tid).copied()
        {
            match pt::cont(tid, pending) {
                Ok(()) => {
                    self.s
                        .t
                        .threads
                        .insert(tid, crate::tracee::ThreadState::Running);
                }
                Err(e) if e.is_gone() => {}
                Err(e) => return self.fatal(TraceError::sys(self.s.t.pid, e)),
            }
        }
        Ok(())
    }

    /// All threads are stopped; `tid` (if any) holds the crash signal.
    pub(super) fn failure(
        &mut self,
        failure: Failure,
        tid: Option<i32>,
        before: Option<Instant>,
    ) -> Result<(), Done> {
        let started = Instant::now();
        let pid = self.s.t.pid;
        let signature = match (&failure, tid) {
            // Sent by another process (kill): an event from outside, never
            // "the same failure again", whatever the thread was doing.
            (
                Failure::Crash {
                    code, addr_or_pid, ..
                },
                Some(_),
            ) if *code <= 0 && (*addr_or_pid as u32 as i32) != pid => Signature::External,
            (Failure::Crash { signal, .. }, Some(t)) => Signature::Crash {
                signal: *signal,
                rip: pt::get_regs(t).map_or(0, |r| r.rip),
            },
            _ => Signature::Hang,
        };
        let recurring = self.last_rollback.filter(|(at, _, sig)| {
            at.elapsed() < self.config.recurrence_window
                && *sig == signature
                && signature != Signature::External
        });
        let hist = &self.s.history;
        let last_id = recurring.map_or(u64::MAX, |(_, id, _)| id);
        let eligible = |c: &crate::session::Checkpoint| {
            c.id < last_id && before.is_none_or(|b| c.taken_at <= b)
        };
        // A checkpoint taken while a socket was open that is closed now
        // (sd_notify opens one per message) can never be restored: the
        // newest one without such a socket is taken instead, if any (else
        // the newest, whose refusal then names the socket).
        let sockets_now: Vec<u64> = crate::fds::capture(pid, &[])
            .map(|f| {
                f.iter()
                    .filter(|f| f.kind == crate::fds::FdKind::Socket)
                    .map(|f| f.ino)
                    .collect()
            })
            .unwrap_or_default();
        let transient_socket = |c: &crate::session::Checkpoint| {
            c.fds.iter().any(|f| {
                f.kind == crate::fds::FdKind::Socket && f.fd > 2 && !sockets_now.contains(&f.ino)
            })
        };
        let idx = hist
            .iter()
            .rposition(|c| eligible(c) && !transient_socket(c))
            .or_else(|| hist.iter().rposition(eligible));
        let result = match idx {
            None if hist.is_empty() => Err(RollbackError::Refused(Unrecoverable::NoCheckpoint)),
            None => Err(RollbackError::Refused(Unrecoverable::HistoryExhausted {
                kept: hist.len(),
            })),
            Some(i) => self.s.rollback(i, &failure, started),
        };
        match result {
            Ok(report) => {
                // The crash is undone: its signal must not be delivered.
                let crashed: Vec<i32> = self
                    .s
                    .t
                    .threads
                    .iter()
                    .filter(|(_, st)| matches!(st, crate::tracee::ThreadState::Stopped { pending } if crash_filter(*pending)))
                    .map(|(t, _)| *t)
                    .collect();
                for t in crashed {
                    self.s.t.set_pending(t, 0);
                }
                self.last_rollback = Some((Instant::now(), report.checkpoint_id, signature));
                // Keep the older history while the same failure may come
                // back; a signal from outside never counts as coming back,
                // so checkpoints go on (under a storm of them the program
                // would otherwise never get past its last checkpoint).
                self.next_checkpoint = Instant::now()
                    + if signature == Signature::External {
                        self.config.interval
                    } else {
                        self.config.recurrence_window
                    };
                self.metrics.record_rollback(&report);
                self.send(Event::RolledBack(report));
                self.resume()
            }
            Err(RollbackError::Refused(why)) => {
                self.metrics
                    .rollbacks_impossible
                    .fetch_add(1, Ordering::Relaxed);
                self.send(Event::RollbackImpossible { failure, why });
                // A crash signal stays pending: the process dies as it would
                // have without us, and the supervisor restarts it.
                self.resume()
            }
            Err(RollbackError::Broken(e)) => {
                self.metrics
                    .rollbacks_impossible
                    .fetch_add(1, Ordering::Relaxed);
                self.send(Event::RollbackImpossible {
                    failure,
                    why: Unrecoverable::Failed {
                        error: e.to_string(),
                    },
                });
                // Half-restored state must never run.
                self.kill()
            }
        }
    }
}
