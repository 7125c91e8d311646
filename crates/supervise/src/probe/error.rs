//! Why one probe check failed: what a `probe` event and `selfheal status`
//! show as the probe's detail.

use selfheal_config::{ProbeTargetError, StatusRange};
use selfheal_sys::SysError;

use crate::child::{ChildError, LaunchError};

/// A check that failed, and on what.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A TCP address that does not resolve.
    #[error("cannot resolve {address}: {source}")]
    Resolve {
        /// `host:port`.
        address: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// A TCP address that resolves to nothing.
    #[error("{address} resolved to no address")]
    NoAddress {
        /// `host:port`.
        address: String,
    },
    /// No connection within the timeout.
    #[error("timed out connecting to {address}")]
    ConnectTimeout {
        /// The address, as given or as resolved.
        address: String,
    },
    /// The connection was refused or failed.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address (or URL).
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// An answer with a status outside `expect_status`.
    #[error("HTTP {status}, expected {expected}")]
    Status {
        /// What came back.
        status: u16,
        /// What was expected.
        expected: StatusRange,
    },
    /// The probe's URL or address is written wrong.
    #[error(transparent)]
    Target(#[from] ProbeTargetError),
    /// The deadline passed before the request could start.
    #[error("timed out before probing {url}")]
    LateStart {
        /// The URL.
        url: String,
    },
    /// No answer within the timeout.
    #[error("timed out waiting for {url}")]
    AnswerTimeout {
        /// The URL.
        url: String,
    },
    /// The HTTP exchange failed otherwise (a garbled answer, a reset).
    #[error("{url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The client's error.
        source: Box<ureq::Error>,
    },
    /// The exec probe could not be set up or waited for.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The exec probe's command could not be started.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The exec probe's command could not be waited for.
    #[error(transparent)]
    Child(#[from] ChildError),
    /// The exec probe's command ran past the timeout (its group is killed).
    #[error("timed out; killed {program:?}")]
    ExecTimeout {
        /// The program.
        program: String,
    },
    /// The exec probe's command ended but its status is not known.
    #[error("probe command state unknown")]
    ExecUnknown,
    /// The exec probe's command failed; the start of its stderr follows.
    #[error("{status}{}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    ExecFailed {
        /// How it ended (`exited with status 1`).
        status: String,
        /// The start of its stderr, trimmed (may be empty).
        stderr: String,
    },
}

impl ProbeError {
    /// The exec probe's command could not be started for want of a
    /// process slot or memory (fork's EAGAIN or ENOMEM): the machine's
    /// state, not the app's. A fork bomb's hold (`recovery.hold_forks`)
    /// refuses every fork on the machine for seconds; counted as probe
    /// failures, such checks would restart a healthy app.
    pub fn is_transient_launch(&self) -> bool {
        match self {
            ProbeError::Launch(LaunchError::Other { source, .. }) => {
                matches!(source.raw_os_error(), Some(libc::EAGAIN | libc::ENOMEM))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(errno: i32) -> ProbeError {
        ProbeError::Launch(LaunchError::Other {
            argv: vec!["check".into()],
            source: std::io::Error::from_raw_os_error(errno),
        })
    }

    #[test]
    fn only_a_refused_fork_is_transient() {
        assert!(other(libc::EAGAIN).is_transient_launch());
        assert!(other(libc::ENOMEM).is_transient_launch());
        // What the command itself or its setup got wrong still counts.
        assert!(!other(libc::EACCES).is_transient_launch());
        assert!(!ProbeError::Launch(LaunchError::NotFound {
            argv: vec!["check".into()],
            program: "check".into(),
        })
        .is_transient_launch());
        assert!(!ProbeError::ExecUnknown.is_transient_launch());
        assert!(!ProbeError::ExecFailed {
            status: "exited with status 1".into(),
            stderr: String::new(),
        }
        .is_transient_launch());
    }
}
