//! μCheckpoint for processes: incremental in-memory checkpoints of a running
//! Linux process and in-place rollback when it crashes or hangs.
//!
//! A tracer thread owns the process through ptrace. Written pages are found
//! with userfaultfd write-protect in async mode plus the `PAGEMAP_SCAN`
//! ioctl (Linux 6.7+); older kernels fall back to comparing full copies.
//! A checkpoint holds every thread's registers (FPU/vector state included),
//! the mapping layout, brk, file offsets and, for memory, one shadow copy
//! plus per-checkpoint undo pages, so K checkpoints cost one copy plus their
//! deltas. See [`Engine`] for the driving API.
//!
//! Files are part of the checkpoint (`files`): a seccomp filter makes the
//! program ask before every call that changes a file or writes output; the
//! old contents of what it overwrites, file sizes and removed names are
//! kept per checkpoint and put back by a rollback, offsets included (stdin
//! and stdout too when they are files). Output to a pipe, socket or
//! terminal since the checkpoint, changed files another process holds,
//! sockets, shared writable memory, new or ended threads, new child
//! processes and changed signal handlers make a rollback impossible, as
//! does a thread that would resume into a sigsuspend/ppoll/pselect wait
//! with a signal pending that the wait's temporary mask blocks (`waitmask`:
//! the kernel lets it in on any resume); the engine says so and the
//! supervisor restarts.
#![forbid(unsafe_code)]

mod engine;
pub mod error;
mod events;
mod fds;
mod files;
mod history;
pub mod launch;
mod layout;
mod memio;
mod pages;
pub mod procfs;
mod ranges;
mod remote;
mod rollback;
mod session;
mod signals;
mod threads;
mod tracee;
mod tracker;
mod wait;
mod waitmask;

/// Appends a line to the file named by `SELFHEAL_CKPT_DEBUG` (never to our
/// stdio, which the tracee may share). Costs one env lookup when off.
pub(crate) fn debug(msg: impl FnOnce() -> String) {
    if let Some(path) = std::env::var_os("SELFHEAL_CKPT_DEBUG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{}", msg());
        }
    }
}

pub use engine::{Config, Control, Engine, Older, Target, CRASH_SIGNALS};
pub use error::{StartError, TraceError};
pub use events::{
    CheckpointStats, Event, ExitInfo, Failure, FileRefusal, FileTracking, Metrics, RollbackReport,
    SignalRefusal, Unrecoverable,
};
pub use fds::FdKind;
pub use files::FilesConfig;
pub use launch::LaunchSpec;
pub use selfheal_sys::program::{Program, StdioSpec};
pub use tracker::TrackingMode;
