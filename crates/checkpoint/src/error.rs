//! Errors of the checkpoint engine, one enum per operation.

use std::io;

use selfheal_sys::ptrace::WaitStatus;
use selfheal_sys::SysError;

/// A tracing operation (stop, inspect, inject, resume) failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A system call on the tracee failed.
    #[error("{source} (tracee pid {pid}); it may have exited or be traced by another tool")]
    Sys {
        /// Tracee.
        pid: i32,
        /// The failed call.
        source: SysError,
    },
    /// Reading or writing a /proc file of the tracee failed.
    #[error("{what} for pid {pid} failed: {source}")]
    Io {
        /// Tracee.
        pid: i32,
        /// What was attempted.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Threads did not reach a stop in time.
    #[error("threads {tids:?} of pid {pid} did not stop within 5 s (uninterruptible sleep?)")]
    Stuck {
        /// Tracee.
        pid: i32,
        /// Threads still running.
        tids: Vec<i32>,
    },
    /// A system call we ran in the tracee outlived its deadline, so the
    /// process was killed (its thread must never run on with our
    /// registers). If it could not act on the kill (frozen, or in
    /// uninterruptible sleep) the wait for it was given up: it ends once it
    /// can, and is reaped then.
    #[error("a system call run in thread {tid} of pid {pid} outlived {limit:?}: the process was killed (SIGKILL){}", killed_note(*.ended))]
    StepKilled {
        /// Tracee.
        pid: i32,
        /// The thread that ran the call.
        tid: i32,
        /// The deadline the call had.
        limit: std::time::Duration,
        /// False if it had not ended when the wait was given up.
        ended: bool,
    },
    /// The tracee exited while we worked on it.
    #[error("pid {pid} exited during the operation ({status:?})")]
    Exited {
        /// Tracee.
        pid: i32,
        /// How it ended.
        status: WaitStatus,
    },
    /// No `syscall` instruction to borrow in the vDSO.
    #[error("no syscall instruction in the vDSO of pid {pid} (booted with vdso=0?); remote system calls are impossible")]
    NoSyscallInsn {
        /// Tracee.
        pid: i32,
    },
    /// Remote system calls need a thread in a ptrace stop.
    #[error("no thread of pid {pid} is stopped; cannot run a system call inside it")]
    NoStoppedThread {
        /// Tracee.
        pid: i32,
    },
    /// A system call run inside the tracee failed there.
    #[error("system call {nr} run inside pid {pid} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Remote {
        /// Tracee.
        pid: i32,
        /// System call number.
        nr: i64,
        /// errno it returned.
        errno: i32,
    },
    /// A signal an injected system call took could not be queued back
    /// with its siginfo: it was re-sent from the tracer, sender and value
    /// lost, so the state is no longer exactly the program's.
    #[error("signal {signal} of thread {tid} of pid {pid}, taken during a system call run inside it, lost its siginfo: {why}")]
    SiginfoLost {
        /// Tracee.
        pid: i32,
        /// Thread.
        tid: i32,
        /// The signal.
        signal: i32,
        /// Why it could not be queued back.
        why: String,
    },
    /// Single-stepping the injected system call stopped somewhere else.
    #[error(
        "single-step over an injected system call in pid {pid} ended at {rip:#x}, not after it"
    )]
    StepWentAstray {
        /// Tracee.
        pid: i32,
        /// Where it stopped.
        rip: u64,
    },
}

fn killed_note(ended: bool) -> &'static str {
    if ended {
        ""
    } else {
        " but has not ended yet (frozen by a cgroup freezer, or in uninterruptible sleep?): it ends once it can act on the kill"
    }
}

impl TraceError {
    /// Wraps a failed system call on `pid`.
    pub fn sys(pid: i32, source: SysError) -> TraceError {
        TraceError::Sys { pid, source }
    }

    /// The tracee is gone (exited, or ESRCH from a call on it), or was
    /// killed and only waits to act on it: it never runs on.
    pub fn is_gone(&self) -> bool {
        match self {
            TraceError::Exited { .. } | TraceError::StepKilled { .. } => true,
            TraceError::Sys { source, .. } => source.is_gone(),
            _ => false,
        }
    }
}

/// Starting the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The command could not be prepared (empty, NUL byte, not found).
    #[error("cannot run {command:?}: {reason}")]
    BadCommand {
        /// The command as given.
        command: Vec<String>,
        /// What is wrong with it.
        reason: String,
    },
    /// fork, seize or exec failed.
    #[error("starting {command:?} failed: {source}")]
    Spawn {
        /// The command as given.
        command: Vec<String>,
        /// The failed call.
        source: SysError,
    },
    /// Seizing an existing process failed.
    #[error("cannot trace pid {pid}: {source}; it must be our child or we need CAP_SYS_PTRACE, and no other tracer may hold it")]
    Seize {
        /// Target.
        pid: i32,
        /// The failed call.
        source: SysError,
    },
    /// Setting up tracing of the new process failed.
    #[error("setting up checkpoints of pid {pid} failed: {source}")]
    Setup {
        /// Target.
        pid: i32,
        /// What failed.
        source: TraceError,
    },
    /// The engine thread could not be started.
    #[error("cannot start the checkpoint thread: {0}")]
    Thread(io::Error),
    /// This CPU architecture is not supported (registers are x86-64 only).
    #[error("process checkpoints support x86-64 only")]
    UnsupportedArch,
}
