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
#![forbid(unsafe_code)]

pub mod error;
pub mod launch;
pub mod procfs;
mod remote;
mod tracee;

pub use error::{StartError, TraceError};
pub use launch::LaunchSpec;
