//! The `checkpoint` and `rollback` events, built from the engine's.
//!
//! Every `rollback` event has an `outcome`: `done` (rolled back, the
//! program runs on), `impossible` (it is restarted instead; `reason` and
//! `why` say what could not be restored) or `gave_up` (too many rollbacks:
//! it is restarted). Every `checkpoint` event has an `outcome` too:
//! `started`, `unavailable` (the program runs without checkpoints),
//! `failed` or `reset`.

use serde_json::Value;

use selfheal_event::{details_value, EventKind, Severity};
use selfheal_sys::signal::signal_name;

use super::details::{
    CheckpointDetails, Done, Files, Impossible, ResetReason, RollbackDetails, Started, Then,
    Tracking, Trigger, Why,
};
use super::engine::{
    Failure, FdKind, FileRefusal, FileTracking, RollbackReport, SignalRefusal, TrackingMode,
    Unrecoverable,
};
use super::AppCheckpoint;
use crate::events::app_event;

/// One sentence on why a rollback is impossible.
pub fn describe_unrecoverable(why: &Unrecoverable) -> String {
    match why {
        Unrecoverable::NoCheckpoint => "no checkpoint has been taken yet".into(),
        Unrecoverable::HistoryExhausted { kept } => {
            format!("progressive rollback went past the oldest of the {kept} checkpoints kept")
        }
        Unrecoverable::ThreadsChanged { then, now } => format!(
            "threads were created or ended since the checkpoint ({} then, {} now)",
            then.len(),
            now.len()
        ),
        Unrecoverable::SharedMemory { start, path } => {
            format!("writable shared memory at {start:#x} ({path}) may be seen by other processes")
        }
        Unrecoverable::UntrackableMemory { start, why } => {
            format!("memory at {start:#x} cannot be tracked: {why}")
        }
        Unrecoverable::Socket { fd } => {
            format!("a socket is open (fd {fd}): data exchanged cannot be taken back")
        }
        Unrecoverable::ConsumedInput { bytes } => {
            format!("{bytes} bytes were read from a pipe, socket or terminal since the checkpoint")
        }
        Unrecoverable::FdLost { fd, target } => {
            format!("descriptor {fd} ({target}) was closed and cannot be reopened")
        }
        Unrecoverable::SignalHandlersChanged => {
            "signal handlers were installed or removed since the checkpoint".into()
        }
        Unrecoverable::HandledByProgram { signal } => format!(
            "the program handles {} itself",
            selfheal_sys::signal::signal_name(*signal)
        ),
        Unrecoverable::ThreadStateUnknown { tid } => format!(
            "the kernel state of thread {tid} (rseq, robust futexes, signal stack) could not be read: it was in a job-control stop"
        ),
        Unrecoverable::ChildrenForked { pids } => {
            format!("child processes were started since the checkpoint (pids {pids:?})")
        }
        Unrecoverable::Exec => "the program executed a new image".into(),
        Unrecoverable::Failed { error } => format!("the rollback failed: {error}"),
        Unrecoverable::PendingSignal { signal, why } => format!(
            "{} on its way cannot be put back exactly: {}",
            signal_name(*signal),
            match why {
                SignalRefusal::InfoLost => "it was queued without its siginfo".to_string(),
                SignalRefusal::Ambiguous => {
                    "identical instances, the checkpoint's cannot be told from later ones".into()
                }
                SignalRefusal::InFlight { tid } => {
                    format!("thread {tid} was being handed a signal at the rollback")
                }
                SignalRefusal::WaitMask { tid } => format!(
                    "thread {tid} would resume a wait whose temporary signal mask blocks it, and the \
                     kernel would let it in before the wait restarts"
                ),
                SignalRefusal::NoThread { tid } => {
                    format!("thread {tid}, which must queue it, is in a job-control stop")
                }
                SignalRefusal::Timer => "a POSIX timer's overrun count cannot be restored".into(),
                SignalRefusal::JobControl => {
                    "queueing it would stop or continue the program".into()
                }
            }
        ),
        Unrecoverable::FileChanged { path, why } => {
            format!("{path} changed since the checkpoint and {}", describe_file(why))
        }
        Unrecoverable::OutputSent { fd, kind, pid } => format!(
            "output was written to {} (fd {fd}, by thread {pid}) since the checkpoint and cannot be taken back",
            match kind {
                FdKind::Pipe => "a pipe",
                FdKind::Socket => "a socket",
                FdKind::CharDevice => "a terminal or device",
                _ => "a device",
            }
        ),
        Unrecoverable::UntrackedWrites { bytes, why } => format!(
            "{bytes} bytes were written since the checkpoint and file tracking is off ({why})"
        ),
    }
}

/// Why a file change cannot be undone, as the end of a sentence.
fn describe_file(why: &FileRefusal) -> String {
    match why {
        FileRefusal::SharedWithProcess { pid, comm } => {
            format!("is also open in another process ({comm}, pid {pid}), which may have written it or would see it change")
        }
        FileRefusal::ChangedByOtherProcess { pid, comm } => format!(
            "was changed by another process ({comm}, pid {pid}), a child whose work is not rolled back with the program"
        ),
        FileRefusal::Filesystem { fs } => {
            format!("is on a {fs} filesystem, where a write may act beyond the file")
        }
        FileRefusal::PreimageBudget { budget } => format!(
            "keeping its old contents would take more than the {} MiB budget",
            budget >> 20
        ),
        FileRefusal::SharedMapping => {
            "is mapped shared and writable: writes through memory cannot be seen".into()
        }
        FileRefusal::AsyncIo => {
            "was written by asynchronous I/O (io_uring or AIO), which cannot be seen".into()
        }
        FileRefusal::ForeignMemory => "another process's memory was written".into(),
        FileRefusal::ForeignAbi { nr } => {
            format!("a system call ({nr}) came through another ABI (int 0x80 or x32)")
        }
        FileRefusal::NoHandle { error } => format!("could not be opened for restoring: {error}"),
        FileRefusal::StashFailed { error } => {
            format!("its old version could not be kept aside: {error}")
        }
        FileRefusal::PathUnknown => "its name could not be resolved (deleted directory)".into(),
        FileRefusal::Unsupported { what } => format!("{what} cannot be undone"),
    }
}

/// [`describe_unrecoverable`], worded for what triggered the rollback.
pub(crate) fn explain(failure: &Failure, why: &Unrecoverable) -> String {
    match (failure, why) {
        // A hang rolls back to before its last sign of progress, not
        // step by step.
        (Failure::Hang, Unrecoverable::HistoryExhausted { .. }) => {
            "no checkpoint kept is older than the program's last sign of progress (raise keep or interval)".into()
        }
        _ => describe_unrecoverable(why),
    }
}

/// The short machine-readable reason (`socket`, `threads_changed`, …).
pub(crate) fn reason_tag(why: &Unrecoverable) -> String {
    serde_json::to_value(why)
        .ok()
        .and_then(|v| v.get("reason").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| "unknown".into())
}

fn what(f: &Failure) -> String {
    match f {
        Failure::Crash { signal, .. } => signal_name(*signal),
        Failure::Hang => "hang".into(),
    }
}

impl AppCheckpoint {
    pub(crate) fn emit(
        &self,
        kind: EventKind,
        severity: Severity,
        pid: i32,
        message: String,
        details: Value,
    ) {
        match severity {
            Severity::Critical | Severity::Warning => {
                tracing::warn!(app = %self.app, event = %kind, "{message}")
            }
            _ => tracing::info!(app = %self.app, event = %kind, "{message}"),
        }
        let e = app_event(kind, severity, &self.app, Some(pid), message, details);
        if !self.sink.emit(e) {
            tracing::warn!(app = %self.app, event = %kind, "event dropped: the event sink is full or stopped");
        }
    }

    /// The engine runs: how it tracks memory, and warnings.
    pub(crate) fn report_started(&self, pid: i32, tracking: &TrackingMode, files: &FileTracking) {
        let c = &self.config;
        let history = c.interval * c.keep as u32;
        let (mode, note) = match tracking {
            TrackingMode::UffdWp => (Tracking::UffdWp, None),
            TrackingMode::FullCopy { reason } => (Tracking::FullCopy, Some(reason.clone())),
        };
        let mut message = format!(
            "checkpointing {} (pid {pid}) every {:?}, keeping {}",
            self.app, c.interval, c.keep
        );
        match &note {
            None => message.push_str(": written pages tracked with userfaultfd + PAGEMAP_SCAN"),
            Some(n) => message.push_str(&format!(
                ": full copies of memory at every checkpoint (slower), because {n}"
            )),
        }
        let files_note = match files {
            FileTracking::Seccomp => None,
            FileTracking::Off { reason } => Some(reason.clone()),
        };
        match &files_note {
            None => message.push_str("; file changes tracked with a seccomp filter"),
            Some(r) => message.push_str(&format!(
                "; file changes NOT tracked ({r}): a rollback is refused once the program wrote anything"
            )),
        }
        if let Some(w) = &self.history_warning {
            message.push_str(&format!("; {w}"));
        }
        let severity = if note.is_some() || files_note.is_some() || self.history_warning.is_some() {
            Severity::Warning
        } else {
            Severity::Info
        };
        self.emit(
            EventKind::Checkpoint,
            severity,
            pid,
            message,
            details_value(&CheckpointDetails::Started(Started {
                pid,
                interval_ms: c.interval.as_millis() as u64,
                keep: c.keep,
                history_ms: history.as_millis() as u64,
                recurrence_window_ms: c.recurrence_window.as_millis() as u64,
                tracking: mode,
                tracking_note: note,
                files: if files_note.is_none() {
                    Files::Seccomp
                } else {
                    Files::Off
                },
                files_note,
                warning: self.history_warning.clone(),
            })),
        );
    }

    /// The engine could not start: the program runs without checkpoints.
    pub(crate) fn report_unavailable(&self, pid: i32, error: &str, fix: Option<&str>) {
        let message = format!(
            "{} (pid {pid}) runs WITHOUT checkpoints: {error}{}",
            self.app,
            fix.map(|f| format!("; {f}")).unwrap_or_default()
        );
        self.emit(
            EventKind::Checkpoint,
            Severity::Critical,
            pid,
            message,
            details_value(&CheckpointDetails::Unavailable {
                pid,
                error: error.into(),
                fix: fix.map(String::from),
            }),
        );
    }

    /// `depth`: checkpoints back from the newest one at the first of a
    /// run of recurring failures (the engine counts from what is left).
    pub(crate) fn report_rolled_back(
        &self,
        pid: i32,
        r: &RollbackReport,
        depth: usize,
        count: usize,
    ) {
        let message = format!(
            "rolled {} (pid {pid}) back after {} to checkpoint {} from {} ms before{}: {} pages{} in {:.1} ms",
            self.app,
            what(&r.failure),
            r.checkpoint_id,
            r.checkpoint_age_ms,
            match (&r.failure, depth) {
                (_, 0) => String::new(),
                (Failure::Hang, d) => format!(" ({d} checkpoints back, before its last sign of progress)"),
                (Failure::Crash { .. }, d) => format!(" ({d} checkpoints back: the same crash recurred)"),
            },
            r.pages_restored,
            if r.files_restored + r.names_restored > 0 {
                format!(
                    ", {} files ({} bytes put back, {} names)",
                    r.files_restored, r.file_bytes_restored, r.names_restored
                )
            } else {
                String::new()
            },
            r.duration_us as f64 / 1000.0,
        );
        let details = details_value(&RollbackDetails::Done(Done::new(pid, r, depth, count)));
        self.emit(
            EventKind::Rollback,
            Severity::Warning,
            pid,
            message,
            details,
        );
    }

    pub(crate) fn report_impossible(&self, pid: i32, failure: &Failure, why: &Unrecoverable) {
        let text = explain(failure, why);
        let handler = matches!(why, Unrecoverable::HandledByProgram { .. });
        let then = match failure {
            Failure::Crash { .. } if handler => {
                "the signal is delivered to its handler; a restart follows only if the program dies"
            }
            Failure::Crash { .. } => "the signal is delivered and the program restarted",
            Failure::Hang => "the program is stopped and restarted",
        };
        let details = details_value(&RollbackDetails::Impossible(Impossible {
            pid,
            reason: reason_tag(why),
            why: Why::Known(why.clone()),
            message: text.clone(),
            then: if handler {
                Then::Deliver
            } else {
                Then::Restart
            },
            trigger: Trigger::of(failure),
        }));
        self.emit(
            EventKind::Rollback,
            Severity::Critical,
            pid,
            format!(
                "cannot roll {} (pid {pid}) back after {}: {text}; {then}",
                self.app,
                what(failure)
            ),
            details,
        );
    }

    pub(crate) fn report_gave_up(&self, pid: i32, count: usize) {
        let window = selfheal_config::HumanDuration(self.rollback_window);
        self.emit(
            EventKind::Rollback,
            Severity::Critical,
            pid,
            format!(
                "{} (pid {pid}) was rolled back {count} times within {window} (max_rollbacks {}): rolling back does not help; killing it for a restart",
                self.app, self.max_rollbacks
            ),
            details_value(&RollbackDetails::GaveUp {
                pid,
                rollbacks: count,
                window_ms: self.rollback_window.as_millis() as u64,
                max_rollbacks: self.max_rollbacks,
                then: Then::Restart,
            }),
        );
    }

    pub(crate) fn report_failed(&self, pid: i32, error: &str, suppressed: u64) {
        self.emit(
            EventKind::Checkpoint,
            Severity::Warning,
            pid,
            format!(
                "a checkpoint of {} (pid {pid}) failed: {error}{}",
                self.app,
                if suppressed > 0 {
                    format!(" ({suppressed} more failures not reported separately)")
                } else {
                    String::new()
                }
            ),
            details_value(&CheckpointDetails::Failed {
                pid,
                error: error.into(),
                suppressed,
            }),
        );
    }

    pub(crate) fn report_exec(&self, pid: i32) {
        self.emit(
            EventKind::Checkpoint,
            Severity::Info,
            pid,
            format!(
                "{} (pid {pid}) executed a new program: checkpoint history starts over",
                self.app
            ),
            details_value(&CheckpointDetails::Reset {
                pid,
                reason: ResetReason::Exec,
            }),
        );
    }
}
