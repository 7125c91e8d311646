//! Errors from reading /proc.

use std::path::PathBuf;

/// Reading or parsing a /proc file failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file's text did not have the expected shape.
    #[error("unexpected content in {path}: {what}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: &'static str,
    },
    /// The task (process or thread) exited while we were reading it.
    #[error("task {pid} is gone")]
    Gone {
        /// The pid or tid.
        pid: i32,
    },
}

impl ProcError {
    /// Wraps an I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ProcError {
        ProcError::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the task exited (ENOENT/ESRCH while reading its files).
    pub fn is_gone(&self) -> bool {
        match self {
            ProcError::Gone { .. } => true,
            ProcError::Io { source, .. } => is_gone_io(source),
            ProcError::Parse { .. } => false,
        }
    }

    /// True when we lack permission to read it.
    pub fn is_permission(&self) -> bool {
        matches!(self, ProcError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
    }
}

/// ENOENT or ESRCH: what reading a vanished task's file returns.
pub fn is_gone_io(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(3)
}
