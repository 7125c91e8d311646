//! Safe wrappers over the Linux system calls selfheal needs.
//!
//! This is the only crate in the workspace allowed to contain `unsafe`; every
//! block carries a `// SAFETY:` comment (enforced by the workspace lint
//! `clippy::undocumented_unsafe_blocks`). Names follow the kernel and the man
//! pages. Errors carry the `errno` and what was attempted, so callers can tell
//! "task is gone" (ESRCH/ENOENT) and "not permitted" (EPERM/EACCES) apart from
//! real failures.

pub mod alloc;
pub mod bpf;
pub mod child;
pub mod cputime;
pub mod error;
pub mod fileops;
pub mod fuse;
pub mod memory;
pub mod mount;
pub mod pagemap;
pub mod perf;
pub mod poll;
pub mod power;
pub mod process;
pub mod program;
pub mod ptrace;
pub mod rlimit;
pub mod sched;
pub mod seccomp;
pub mod signal;
pub mod spawn;
pub mod uffd;
pub mod unixcred;
pub mod watchdog_dev;

pub use error::{Errno, SysError};
