//! The kernel's own verdicts, from `/dev/kmsg`.
//!
//! The kernel already detects some hangs and crashes itself (soft lockup
//! after 2×`watchdog_thresh` s, hard lockup, hung task after
//! `hung_task_timeout_secs`, RCU stalls, the OOM killer, BUG/oops,
//! WARNING, RT throttling) but only prints them. This crate turns those
//! printk records into [`KernelReport`]s that selfheal stores as `kernel`
//! events and attaches to its own diagnoses.
//!
//! Layers, each testable on captured text:
//! - [`record`]: one `/dev/kmsg` record (`pri,seq,usec,flag;text` plus
//!   `KEY=value` dictionary lines), unescaped.
//! - [`verdict`]: recognises the first line of a kernel report and the
//!   context lines that name its CPU, pid and command.
//! - [`assemble`]: groups a report's lines (header, `CPU: … PID: … Comm:`,
//!   the OOM killer's `oom-kill:` line, call trace) into one report.
//! - [`follower`]: a thread that reads `/dev/kmsg` as records arrive.
//! - [`tunables`]: optionally tightens `kernel.watchdog_thresh` and
//!   `kernel.hung_task_timeout_secs`, restoring them afterwards.
#![forbid(unsafe_code)]

pub mod assemble;
pub mod follower;
pub mod record;
pub mod tunables;
pub mod verdict;

pub use assemble::{Assembler, KernelDetails, KernelReport};
pub use follower::{FollowOptions, KmsgError, KmsgFollower, KmsgStats, RecordHook};
pub use record::{parse_record, Record};
pub use tunables::{KernelTunables, TunableChange, TunableError};
pub use verdict::{classify, context_of, Context, Verdict, VerdictKind};
