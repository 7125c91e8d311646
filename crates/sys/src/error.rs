//! The error type shared by every wrapper.

use std::fmt;

/// A raw `errno` value with helpers for the outcomes callers must handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's current `errno`.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// The target task no longer exists (ESRCH, ENOENT).
    pub fn is_gone(self) -> bool {
        self.0 == libc::ESRCH || self.0 == libc::ENOENT
    }

    /// The caller lacks the privilege (EPERM, EACCES).
    pub fn is_permission(self) -> bool {
        self.0 == libc::EPERM || self.0 == libc::EACCES
    }

    /// The kernel does not implement the call or the option (ENOSYS, EINVAL
    /// for an unknown flag, EOPNOTSUPP).
    pub fn is_unsupported(self) -> bool {
        self.0 == libc::ENOSYS || self.0 == libc::EOPNOTSUPP
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

/// A failed system call: what was attempted and the `errno` it returned.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{call} failed: {errno}")]
pub struct SysError {
    /// The call and its main argument, e.g. `sched_setscheduler(tid 42)`.
    pub call: String,
    /// The error the kernel returned.
    pub errno: Errno,
}

impl SysError {
    /// Captures `errno` right after a failed call.
    pub fn last(call: impl Into<String>) -> SysError {
        SysError {
            call: call.into(),
            errno: Errno::last(),
        }
    }

    /// The target task no longer exists.
    pub fn is_gone(&self) -> bool {
        self.errno.is_gone()
    }

    /// The caller lacks the privilege.
    pub fn is_permission(&self) -> bool {
        self.errno.is_permission()
    }
}

impl From<SysError> for std::io::Error {
    fn from(e: SysError) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.errno.0)
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, SysError>;
