//! Errors of cgroup operations. Each carries the path (or pid) it concerns.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use selfheal_sys::SysError;

use crate::controller::freezer::FreezerState;

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file or directory could not be read, written, created or removed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted: `read`, `write "FROZEN" to`, `mkdir`, `rmdir`, …
        op: String,
        /// The file or directory.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A cgroup file held text this crate does not understand.
    #[error(
        "{path}: cannot parse {content:?} as {expected} (kernel format changed? please report)"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held (trimmed).
        content: String,
        /// What was expected there.
        expected: &'static str,
    },
    /// `/proc/PID/cgroup` or `/proc/self/mountinfo` text was malformed.
    #[error("malformed {what} line {line:?}")]
    Malformed {
        /// Which file format.
        what: &'static str,
        /// The offending line.
        line: String,
    },
    /// The operation would hit the whole machine or the caller; refused on purpose.
    #[error("refusing to {action} {path}: {reason}")]
    Refused {
        /// The operation, e.g. `freeze`.
        action: &'static str,
        /// The cgroup (its path in the hierarchy).
        path: String,
        /// Why it is unsafe.
        reason: String,
    },
    /// The cgroup (or the hierarchy) lacks what the operation needs.
    #[error("cannot {action} {path}: {missing}")]
    Unsupported {
        /// The operation.
        action: &'static str,
        /// The cgroup.
        path: String,
        /// What is missing and where to get it.
        missing: String,
    },
    /// A freezer did not reach the requested state in time.
    #[error(
        "{path}: freezer still {state:?} after {waited:?} (a task in uninterruptible sleep \
         cannot freeze until its I/O completes; thaw it or retry)"
    )]
    FreezeTimeout {
        /// The cgroup.
        path: String,
        /// The state it was left in.
        state: FreezerState,
        /// How long we waited.
        waited: Duration,
    },
    /// Processes survived `kill_all`.
    #[error(
        "{path}: pids {survivors:?} still alive after SIGKILL for {waited:?} (tasks in \
         uninterruptible sleep die only when their I/O completes; check /proc/PID/stack)"
    )]
    KillIncomplete {
        /// The cgroup.
        path: String,
        /// The pids still listed.
        survivors: Vec<i32>,
        /// How long we tried.
        waited: Duration,
    },
    /// A signal could not be sent to a member (other than "already gone").
    #[error("cannot signal pid {pid} in {path}: {source}")]
    Signal {
        /// The cgroup.
        path: String,
        /// The member.
        pid: i32,
        /// The failed call.
        #[source]
        source: SysError,
    },
    /// No cgroup hierarchy was found where one was needed.
    #[error("no cgroup hierarchy mounted for {what} (see /proc/self/mountinfo); mount cgroup2 or the v1 controller")]
    NotMounted {
        /// The controller or hierarchy sought.
        what: String,
    },
}

impl CgroupError {
    /// Builds an [`CgroupError::Io`].
    pub(crate) fn io(op: impl Into<String>, path: impl Into<PathBuf>, source: io::Error) -> Self {
        CgroupError::Io {
            op: op.into(),
            path: path.into(),
            source,
        }
    }

    /// The cgroup or the process it was about no longer exists (ENOENT, ESRCH, ENODEV).
    pub fn is_gone(&self) -> bool {
        match self {
            CgroupError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENODEV)
            ),
            CgroupError::Signal { source, .. } => source.is_gone(),
            _ => false,
        }
    }

    /// The cgroup still has members or children (EBUSY on rmdir).
    pub fn is_busy(&self) -> bool {
        matches!(self, CgroupError::Io { source, .. } if source.raw_os_error() == Some(libc::EBUSY))
    }

    /// The caller lacks the privilege (EPERM, EACCES, or a read-only mount).
    pub fn is_permission(&self) -> bool {
        match self {
            CgroupError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::EROFS)
            ),
            CgroupError::Signal { source, .. } => source.is_permission(),
            _ => false,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, CgroupError>;
