//! What the engine reports: events through a channel, metrics as atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use selfheal_metrics::{AtomicHistogram, PAUSE_BUCKETS};
use serde::{Deserialize, Serialize};

use crate::fds::FdKind;
use crate::tracker::TrackingMode;

/// Why the process needs rolling back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Failure {
    /// A crash signal was intercepted before it killed the process.
    Crash {
        /// The signal.
        signal: i32,
        /// Thread it was for.
        tid: i32,
        /// `si_code` (> 0: raised by the kernel for a fault; <= 0: sent).
        code: i32,
        /// Fault address for kernel-raised faults, else the sender's pid.
        addr_or_pid: u64,
    },
    /// The supervisor detected a hang and asked for a rollback.
    Hang,
}

/// Why a rollback cannot be done; the process must be restarted.
/// Deserialize: supervise reads it back from stored `rollback` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Unrecoverable {
    /// No checkpoint has been taken yet.
    NoCheckpoint,
    /// Progressive rollback went past the oldest checkpoint kept.
    HistoryExhausted {
        /// Checkpoints kept.
        kept: usize,
    },
    /// Threads were created or ended since the checkpoint.
    ThreadsChanged {
        /// Threads at the checkpoint.
        then: Vec<i32>,
        /// Threads now.
        now: Vec<i32>,
    },
    /// The process has writable shared memory, which other processes may
    /// see: rolling it back (or not) would be inconsistent.
    SharedMemory {
        /// Where.
        start: u64,
        /// What (path or pseudo-name).
        path: String,
    },
    /// Memory we could not track.
    UntrackableMemory {
        /// Where.
        start: u64,
        /// Why.
        why: String,
    },
    /// A socket is open (fd > 2): data exchanged cannot be taken back.
    Socket {
        /// Descriptor.
        fd: i32,
    },
    /// Bytes were read from a pipe, socket or terminal since the checkpoint
    /// (judged from /proc/PID/io rchar minus file-offset progress).
    ConsumedInput {
        /// Bytes not accounted for by regular-file offsets.
        bytes: u64,
    },
    /// A descriptor open at the checkpoint was closed or replaced and cannot
    /// be reopened (only regular files can).
    FdLost {
        /// Descriptor.
        fd: i32,
        /// What it was.
        target: String,
    },
    /// Signal handlers were installed or removed since the checkpoint.
    SignalHandlersChanged,
    /// The program handles this crash signal itself: it was delivered to
    /// the program's own handler instead of being rolled back.
    HandledByProgram {
        /// The signal.
        signal: i32,
    },
    /// A thread's kernel state that user memory depends on (rseq, robust
    /// futex list, alternate signal stack, clear-tid address) could not be
    /// read, at the checkpoint or now: the thread was in a job-control stop.
    ThreadStateUnknown {
        /// Thread.
        tid: i32,
    },
    /// Child processes were started since the checkpoint.
    ChildrenForked {
        /// Their pids.
        pids: Vec<i32>,
    },
    /// The program executed a new image; old checkpoints describe another program.
    Exec,
    /// A file changed since the checkpoint in a way that cannot be undone.
    FileChanged {
        /// The file (as first seen).
        path: String,
        /// Why.
        why: FileRefusal,
    },
    /// Output that cannot be taken back (to a pipe, socket, terminal or
    /// device) was written since the checkpoint.
    OutputSent {
        /// Descriptor written.
        fd: i32,
        /// What it is.
        kind: FdKind,
        /// Thread that wrote (the program's, or a child's).
        pid: i32,
    },
    /// File tracking is off, and the program wrote since the checkpoint:
    /// what it wrote cannot be checked or undone.
    UntrackedWrites {
        /// Bytes written since the checkpoint (`wchar`).
        bytes: u64,
        /// Why file tracking is off.
        why: String,
    },
    /// A signal on its way at the checkpoint, or now, cannot be put back
    /// exactly (with its siginfo, its count and its order).
    PendingSignal {
        /// The signal.
        signal: i32,
        /// Why.
        why: SignalRefusal,
    },
    /// The rollback itself failed.
    Failed {
        /// The error.
        error: String,
    },
}

/// Why a signal on its way cannot be put back exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SignalRefusal {
    /// It was queued without its siginfo (the sender's queue limit was
    /// reached): it cannot be queued again as it was.
    InfoLost,
    /// Identical instances of a real-time signal: which are the
    /// checkpoint's and which came since cannot be told.
    Ambiguous,
    /// A thread was being handed a signal at the rollback.
    InFlight {
        /// The thread.
        tid: i32,
    },
    /// The thread would be resumed into a wait (sigsuspend, ppoll,
    /// pselect6) whose temporary mask blocks the signal while its normal
    /// mask does not: the kernel puts the normal mask back before the wait
    /// restarts, so the signal would be taken inside the wait, which the
    /// run that was checkpointed never did. No ptrace request sets the
    /// mask such a wait restores.
    WaitMask {
        /// The thread.
        tid: i32,
    },
    /// The thread that must queue it is not stopped where it can (a
    /// job-control stop).
    NoThread {
        /// The thread.
        tid: i32,
    },
    /// A POSIX timer's signal: its overrun count is set at delivery.
    Timer,
    /// SIGCONT or a stop signal: queueing one continues or stops the
    /// process and drops queued ones of the other kind.
    JobControl,
}

/// Why a change to a file cannot be undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FileRefusal {
    /// Another process has the file open: it may have written it, and it
    /// would see it change under it.
    SharedWithProcess {
        /// That process.
        pid: i32,
        /// Its name.
        comm: String,
    },
    /// Another process (a child of the program) changed the file or a
    /// name: its changes are not rolled back with the program, so undoing
    /// them would break it.
    ChangedByOtherProcess {
        /// That process (thread id).
        pid: i32,
        /// Its name.
        comm: String,
    },
    /// The file is on a filesystem where a write may act beyond the file
    /// (procfs, sysfs, a network or FUSE filesystem) or cannot be undone.
    Filesystem {
        /// Filesystem type.
        fs: String,
    },
    /// Keeping the old contents would take more than the budget.
    PreimageBudget {
        /// Bytes allowed.
        budget: u64,
    },
    /// Mapped shared from a descriptor open for writing: writes through
    /// memory are invisible to us.
    SharedMapping,
    /// Asynchronous I/O (io_uring, Linux AIO): its writes are invisible to us.
    AsyncIo,
    /// The program wrote another process's memory (process_vm_writev).
    ForeignMemory,
    /// A system call through another ABI (int 0x80, x32).
    ForeignAbi {
        /// Its number.
        nr: i32,
    },
    /// We could not open our own handle on the file to restore it.
    NoHandle {
        /// The error.
        error: String,
    },
    /// A removed or replaced file could not be kept aside (hard link).
    StashFailed {
        /// The error.
        error: String,
    },
    /// The name could not be resolved (its directory was deleted).
    PathUnknown,
    /// An operation we do not undo.
    Unsupported {
        /// What it was.
        what: String,
    },
}

/// How changes to files are followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum FileTracking {
    /// A seccomp filter asks the engine before every call that changes a
    /// file's contents or names, or writes output.
    Seccomp,
    /// Not followed: a rollback is refused if the program wrote anything
    /// since the checkpoint.
    Off {
        /// Why.
        reason: String,
    },
}

/// One checkpoint taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointStats {
    /// Sequence number (1, 2, …; rollback discards newer numbers).
    pub id: u64,
    /// Time the process was stopped, in microseconds.
    pub pause_us: u64,
    /// CPU time the tracer thread spent on it, in microseconds: the pause
    /// an idle machine would see (the wall pause also counts preemption of
    /// the tracer on a busy machine).
    pub cpu_us: u64,
    /// Pages found written since the previous checkpoint.
    pub pages_dirty: u64,
    /// Pages whose content was copied.
    pub pages_copied: u64,
    /// Written pages taken from the pre-copy (read while the process still
    /// ran, not during the pause).
    pub precopy_pages: u64,
    /// Time the pre-copy took while the process ran, in microseconds.
    pub precopy_us: u64,
    /// A short stop before the pre-copy to register large new mappings (0
    /// if none), in microseconds: the process was stopped this long too.
    pub registration_pause_us: u64,
    /// Host CLOCK_MONOTONIC µs `[from, until)` in which the process
    /// certainly stood stopped for this checkpoint: from every thread
    /// stopped to just before the report (it resumes after).
    pub stopped_mono_us: [u64; 2],
    /// The same for the registration stop, when there was one.
    pub registration_stopped_mono_us: Option<[u64; 2]>,
    /// Checkpoints held after this one.
    pub held: usize,
    /// Bytes of page copies held (shadow + undo).
    pub memory_bytes: u64,
    /// Threads.
    pub threads: usize,
    /// System calls run inside the program to read its state (each a
    /// single-step round trip through the scheduler); 0 when the file
    /// filter saw no call that changes what they read.
    pub injected_calls: u64,
}

/// One rollback done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackReport {
    /// What triggered it.
    pub failure: Failure,
    /// Checkpoint restored.
    pub checkpoint_id: u64,
    /// How long before the failure that checkpoint was taken, in ms.
    pub checkpoint_age_ms: u64,
    /// 0: the newest checkpoint; n: n steps older (progressive rollback).
    pub depth: usize,
    /// Pages written back.
    pub pages_restored: u64,
    /// Mapping operations (munmap/mmap/mprotect) run.
    pub layout_ops: usize,
    /// File offsets restored, descriptors closed or reopened.
    pub fd_ops: usize,
    /// Per-thread kernel state put back (rseq registrations, robust futex
    /// lists, alternate signal stacks, clear-tid addresses).
    pub thread_ops: usize,
    /// Signals on their way at the checkpoint and taken since, queued or
    /// held again with their own siginfo.
    pub signals_requeued: usize,
    /// Files whose contents or size were put back.
    pub files_restored: usize,
    /// Bytes of old file contents written back.
    pub file_bytes_restored: u64,
    /// Name operations undone (created files removed, removed or renamed
    /// ones put back).
    pub names_restored: usize,
    /// Time the process was stopped for the rollback, in microseconds.
    pub duration_us: u64,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// Exit code if it exited.
    pub code: Option<i32>,
    /// Signal if it was killed.
    pub signal: Option<i32>,
    /// A core dump was written.
    pub core_dumped: bool,
}

/// Everything the engine reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// Tracing started.
    Started {
        /// Process.
        pid: i32,
        /// How written pages are found.
        tracking: TrackingMode,
        /// How changes to files are followed.
        files: FileTracking,
    },
    /// A checkpoint was taken (only with `Config::report_checkpoints`).
    Checkpoint(CheckpointStats),
    /// Taking a checkpoint failed; the process keeps running.
    CheckpointFailed {
        /// The error.
        error: String,
    },
    /// The process was rolled back and resumed.
    RolledBack(RollbackReport),
    /// A rollback was needed but is impossible: restart the process.
    /// For a crash the signal is then delivered, so the process dies as it
    /// would have without us; for a hang it is left running.
    RollbackImpossible {
        /// What triggered it.
        failure: Failure,
        /// Why it cannot be done.
        why: Unrecoverable,
    },
    /// The program exec'd another image; history was reset.
    Exec,
    /// The process ended (this is the last event).
    Exited(ExitInfo),
    /// The engine stopped tracing without the process ending (detach).
    Detached,
}

/// Counters, gauges and histograms, updated lock-free by the tracer thread.
#[derive(Debug)]
pub struct Metrics {
    /// Checkpoints taken.
    pub checkpoints: AtomicU64,
    /// Checkpoints that failed.
    pub checkpoint_failures: AtomicU64,
    /// Pause of the last checkpoint, ns.
    pub last_pause_ns: AtomicU64,
    /// Longest pause seen, ns.
    pub max_pause_ns: AtomicU64,
    /// Sum of pauses, ns.
    pub total_pause_ns: AtomicU64,
    /// Pages copied by the last checkpoint.
    pub last_pages: AtomicU64,
    /// Pages copied by all checkpoints.
    pub total_pages: AtomicU64,
    /// Bytes of page copies held now.
    pub memory_held_bytes: AtomicU64,
    /// Checkpoints held now.
    pub checkpoints_held: AtomicU64,
    /// Rollbacks done.
    pub rollbacks: AtomicU64,
    /// Rollbacks found impossible.
    pub rollbacks_impossible: AtomicU64,
    /// Duration of the last rollback, ns.
    pub last_rollback_ns: AtomicU64,
    /// Pages restored by the last rollback.
    pub last_rollback_pages: AtomicU64,
    /// Every stop of the program for a checkpoint (a registration stop
    /// before a pre-copy is a stop of its own).
    pub pause_seconds: AtomicHistogram,
    /// Every rollback's duration.
    pub rollback_seconds: AtomicHistogram,
    /// System calls the file filter asked about (each one a round trip to
    /// the engine's file thread: the cost of file tracking).
    pub file_calls: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let z = || AtomicU64::new(0);
        Metrics {
            checkpoints: z(),
            checkpoint_failures: z(),
            last_pause_ns: z(),
            max_pause_ns: z(),
            total_pause_ns: z(),
            last_pages: z(),
            total_pages: z(),
            memory_held_bytes: z(),
            checkpoints_held: z(),
            rollbacks: z(),
            rollbacks_impossible: z(),
            last_rollback_ns: z(),
            last_rollback_pages: z(),
            pause_seconds: AtomicHistogram::new(PAUSE_BUCKETS),
            rollback_seconds: AtomicHistogram::new(PAUSE_BUCKETS),
            file_calls: z(),
        }
    }
}

impl Metrics {
    /// `pause` is the checkpoint's stop; a registration stop before its
    /// pre-copy (`s.registration_pause_us`) counts as time stopped too.
    pub(crate) fn record_checkpoint(&self, s: &CheckpointStats, pause: Duration) {
        let ns = pause.as_nanos() as u64;
        let reg_ns = s.registration_pause_us * 1000;
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.last_pause_ns.store(ns, Ordering::Relaxed);
        self.pause_seconds.observe(pause);
        if reg_ns > 0 {
            self.pause_seconds.observe(Duration::from_nanos(reg_ns));
        }
        self.max_pause_ns
            .fetch_max(ns.max(reg_ns), Ordering::Relaxed);
        self.total_pause_ns
            .fetch_add(ns + reg_ns, Ordering::Relaxed);
        self.last_pages.store(s.pages_copied, Ordering::Relaxed);
        self.total_pages
            .fetch_add(s.pages_copied, Ordering::Relaxed);
        self.memory_held_bytes
            .store(s.memory_bytes, Ordering::Relaxed);
        self.checkpoints_held
            .store(s.held as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_rollback(&self, r: &RollbackReport) {
        self.rollbacks.fetch_add(1, Ordering::Relaxed);
        self.last_rollback_ns
            .store(r.duration_us * 1000, Ordering::Relaxed);
        self.rollback_seconds
            .observe(Duration::from_micros(r.duration_us));
        self.last_rollback_pages
            .store(r.pages_restored, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(registration_pause_us: u64) -> CheckpointStats {
        CheckpointStats {
            id: 1,
            pause_us: 300,
            cpu_us: 250,
            pages_dirty: 10,
            pages_copied: 10,
            precopy_pages: 8,
            precopy_us: 900,
            registration_pause_us,
            stopped_mono_us: [0, 0],
            registration_stopped_mono_us: None,
            held: 1,
            memory_bytes: 40960,
            threads: 1,
            injected_calls: 0,
        }
    }

    #[test]
    fn a_registration_stop_counts_as_time_stopped() {
        let m = Metrics::default();
        m.record_checkpoint(&stats(0), Duration::from_micros(300));
        m.record_checkpoint(&stats(6000), Duration::from_micros(400));
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(get(&m.total_pause_ns), (300 + 400 + 6000) * 1000);
        assert_eq!(get(&m.max_pause_ns), 6_000_000, "the longest single stop");
        assert_eq!(get(&m.last_pause_ns), 400_000);
        assert_eq!(get(&m.checkpoints), 2);
        // Three stops: two checkpoints and the registration stop.
        let h = m.pause_seconds.snapshot();
        assert_eq!(h.count, 3);
        assert!((h.sum - 0.0067).abs() < 1e-9, "{}", h.sum);
    }
}
