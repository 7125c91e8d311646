//! The tracer's checkpoint taking: stopping every thread safely, then
//! the checkpoint itself (with the optional pre-copy while it runs).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Done, Tracer, CRASH_SIGNALS};
use crate::error::TraceError;
use crate::events::Event;
use crate::tracee::Notice;

impl Tracer {
    /// Stops every thread for a checkpoint step. False when the step must
    /// not go on (a thread is stuck, or a crash was caught while stopping:
    /// never checkpoint a crashed state); that case is handled here.
    fn stop_for_checkpoint(&mut self) -> Result<bool, Done> {
        let mut notices = Vec::new();
        if let Err(e) = self.s.t.stop_all(&mut notices) {
            if matches!(e, TraceError::Stuck { .. }) && notices.contains(&Notice::Exec) {
                // A new program, not stopped yet: set up for it (or end).
                self.checkpoint_requested = false;
                self.exec()?;
                return Ok(false);
            }
            if matches!(e, TraceError::Stuck { .. }) {
                self.checkpoint_requested = false;
                self.metrics
                    .checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.send(Event::CheckpointFailed {
                    error: e.to_string(),
                });
                self.resume()?;
                return Ok(false);
            }
            self.stop_failed(&notices, e)?;
            return Ok(false);
        }
        if notices.iter().any(|n| !matches!(n, Notice::ThreadsChanged)) {
            self.handle_notices(notices)?;
            if self
                .s
                .t
                .threads
                .values()
                .any(|s| matches!(s, crate::tracee::ThreadState::Stopped { .. }))
            {
                self.resume()?;
            }
            return Ok(false);
        }
        if self.leader_ended() {
            self.resume()?;
            return Ok(false);
        }
        if self.job_stopped() {
            // Stopped by job control while we stopped it.
            self.resume()?;
            return Ok(false);
        }
        if let Some(h) = crate::waitmask::after_stop(&self.s.t) {
            // Resumed untouched, the kernel takes the signals as it would
            // have without the stop; a call of ours would drop the mask
            // the wait restores.
            self.tell_wait_mask(h);
            self.resume()?;
            return Ok(false);
        }
        if self.crash_pending() {
            // Sent or raised before the stop but not taken yet (a stop
            // request can overtake a signal): the state now is the crash's,
            // and the signal would land inside the checkpoint's own system
            // calls. Let it land first; its rollback goes to an older
            // checkpoint.
            self.resume()?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Every live thread is in a job-control stop (SIGSTOP, Ctrl-Z):
    /// none can run the system calls a checkpoint injects (the break,
    /// per-thread state) without ending the stop. (Since the break is read
    /// at every checkpoint, such a checkpoint failed and discarded the
    /// history every 50 ms while a program was stopped.)
    fn job_stopped(&self) -> bool {
        use crate::tracee::ThreadState;
        let threads = &self.s.t.threads;
        threads
            .values()
            .any(|s| matches!(s, ThreadState::Listening | ThreadState::GroupStopped))
            && threads.values().all(|s| {
                matches!(
                    s,
                    ThreadState::Listening | ThreadState::GroupStopped | ThreadState::Zombie
                )
            })
    }

    /// A crash signal is queued, not blocked, for a thread that will take
    /// it when resumed. (A thread in a job-control stop keeps it queued
    /// until SIGCONT: waiting for it would skip every checkpoint till then.)
    fn crash_pending(&self) -> bool {
        use crate::tracee::ThreadState;
        let pid = self.s.t.pid;
        let crash_bits = CRASH_SIGNALS
            .iter()
            .fold(0u64, |m, &sig| m | (1u64 << (sig - 1)));
        self.s.t.threads.iter().any(|(&tid, st)| {
            !matches!(st, ThreadState::GroupStopped | ThreadState::Listening)
                && crate::procfs::read_pending_signals(pid, tid).is_ok_and(|p| p & crash_bits != 0)
        })
    }

    /// The main thread ended while others run (`pthread_exit`): no
    /// checkpoint can be taken until the process ends (said once).
    fn leader_ended(&mut self) -> bool {
        if !self.s.t.leader_ended() {
            return false;
        }
        if !self.told_leader_ended {
            self.told_leader_ended = true;
            self.send(Event::CheckpointFailed {
                error: format!(
                    "the main thread of pid {} has exited while other threads run: no more checkpoints, and rollbacks are impossible until the process ends",
                    self.s.t.pid
                ),
            });
        }
        true
    }

    /// A thread sleeps in a wait under a temporary signal mask with a
    /// signal pending that the mask blocks: stopping it would let the
    /// kernel deliver that signal inside the wait (see `waitmask`), so
    /// the checkpoint waits (said once until a checkpoint is taken).
    fn wait_masked(&mut self) -> bool {
        let Some(h) = crate::waitmask::before_stop(&self.s.t) else {
            return false;
        };
        self.tell_wait_mask(h);
        true
    }

    fn tell_wait_mask(&mut self, h: crate::waitmask::Hazard) {
        if !self.told_wait_mask {
            self.told_wait_mask = true;
            self.send(Event::CheckpointFailed {
                error: format!(
                    "checkpoint of pid {} postponed: thread {} waits under a temporary signal mask (sigsuspend, ppoll, pselect) with signal {} pending, which the wait's mask and the program's normal mask treat differently; a checkpoint now would change which of them the program takes in the wait",
                    self.s.t.pid, h.tid, h.signal
                ),
            });
        }
    }

    pub(super) fn checkpoint(&mut self) -> Result<(), Done> {
        if self.leader_ended() {
            self.checkpoint_requested = false;
            return Ok(());
        }
        if self.job_stopped() {
            // Nothing changes until SIGCONT, and no system call can run
            // inside without ending the stop: the checkpoint waits (a
            // requested one stays requested).
            return Ok(());
        }
        if self.wait_masked() {
            // A requested one stays requested, as above.
            return Ok(());
        }
        let mut precopy = Duration::ZERO;
        let mut registration = Duration::ZERO;
        let mut registration_span = None;
        if self.config.precopy {
            // Large new mappings: register them in a short stop first, so
            // the pre-copy below reads them while the program runs.
            if matches!(self.s.wants_registration_stop(), Ok(true)) {
                let t0 = Instant::now();
                if !self.stop_for_checkpoint()? {
                    return Ok(());
                }
                let from = mono_us();
                match self.s.register_new_mappings() {
                    Ok(()) => {}
                    Err(e) if e.is_gone() => return self.fatal(e),
                    // Nothing lost: the checkpoint's look registers them.
                    Err(e) => crate::debug(|| format!("registration stop failed: {e}")),
                }
                registration_span = Some([from, mono_us()]);
                self.resume()?;
                registration = t0.elapsed();
            }
            let t0 = Instant::now();
            match self.s.precopy() {
                Ok(_) => precopy = t0.elapsed(),
                // Nothing lost: what was found stays "written" and the
                // checkpoint reads it; a vanished process is noticed below.
                Err(e) => crate::debug(|| format!("pre-copy failed: {e}")),
            }
        }
        let started = Instant::now();
        if !self.stop_for_checkpoint()? {
            return Ok(());
        }
        let stopped_from = mono_us();
        match self.s.checkpoint(started) {
            Ok(mut stats) => {
                let pause = started.elapsed();
                stats.precopy_us = precopy.as_micros() as u64;
                stats.registration_pause_us = registration.as_micros() as u64;
                stats.stopped_mono_us = [stopped_from, mono_us()];
                stats.registration_stopped_mono_us = registration_span;
                self.metrics.record_checkpoint(&stats, pause);
                self.checkpoint_requested = false;
                self.told_wait_mask = false;
                if self.config.report_checkpoints {
                    self.send(Event::Checkpoint(stats));
                }
            }
            Err(e) if e.is_gone() => return self.fatal(e),
            Err(e) => {
                self.metrics
                    .checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.checkpoint_requested = false;
                self.send(Event::CheckpointFailed {
                    error: e.to_string(),
                });
            }
        }
        self.resume()
    }
}

/// CLOCK_MONOTONIC in µs (what the stop spans in a report are on).
fn mono_us() -> u64 {
    selfheal_sys::bpf::monotonic_ns() / 1000
}
