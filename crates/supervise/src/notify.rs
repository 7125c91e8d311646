//! The systemd notify protocol (`sd_notify(3)`), so programs written for
//! `Type=notify` and `WatchdogSec=` work unchanged.
//!
//! The supervisor binds a datagram socket in a private directory and sets
//! `NOTIFY_SOCKET` for the program. Each datagram holds newline-separated
//! `KEY=VALUE` assignments. The kernel attaches the sender's credentials
//! (`SO_PASSCRED`), so messages from processes other than the program are
//! ignored.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use selfheal_sys::unixcred::{self, UnixCredentials};

/// Largest datagram read; systemd accepts the same.
const MAX_DATAGRAM: usize = 4096;

/// Longest path a `sockaddr_un` holds (108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// One assignment the supervisor understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyMessage {
    /// `READY=1`: start-up finished.
    Ready,
    /// `RELOADING=1`: reloading its configuration; `READY=1` follows.
    Reloading,
    /// `STOPPING=1`: shutting down on its own.
    Stopping,
    /// `WATCHDOG=1`: still alive.
    Watchdog,
    /// `WATCHDOG=trigger`: asks to be treated as hung now.
    WatchdogTrigger,
    /// `WATCHDOG_USEC=N`: the watchdog timeout to use from now on.
    WatchdogUsec(u64),
    /// `EXTEND_TIMEOUT_USEC=N`: allow N more µs for start-up or shutdown.
    ExtendTimeoutUsec(u64),
    /// `STATUS=…`: a free-form status line.
    Status(String),
    /// `ERRNO=N`: the failure it reports.
    Errno(i32),
    /// `MAINPID=N`: another process is the main one (not followed: the
    /// supervisor watches the process it started).
    MainPid(i32),
    /// Anything else (`FDSTORE=1`, `BUSERROR=`, custom keys): ignored.
    Other(String),
}

/// Parses one datagram. Malformed assignments become [`NotifyMessage::Other`].
pub fn parse_datagram(bytes: &[u8]) -> Vec<NotifyMessage> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    for line in text.split('\n') {
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            out.push(NotifyMessage::Other(line.to_string()));
            continue;
        };
        let num = || value.trim().parse::<u64>().ok();
        let msg = match (key, value) {
            ("READY", "1") => NotifyMessage::Ready,
            ("RELOADING", "1") => NotifyMessage::Reloading,
            ("STOPPING", "1") => NotifyMessage::Stopping,
            ("WATCHDOG", "1") => NotifyMessage::Watchdog,
            ("WATCHDOG", "trigger") => NotifyMessage::WatchdogTrigger,
            ("WATCHDOG_USEC", _) if num().is_some() => {
                NotifyMessage::WatchdogUsec(num().unwrap_or(0))
            }
            ("EXTEND_TIMEOUT_USEC", _) if num().is_some() => {
                NotifyMessage::ExtendTimeoutUsec(num().unwrap_or(0))
            }
            ("STATUS", v) => NotifyMessage::Status(v.to_string()),
            ("ERRNO", v) if v.trim().parse::<i32>().is_ok() => {
                NotifyMessage::Errno(v.trim().parse().unwrap_or(0))
            }
            ("MAINPID", v) if v.trim().parse::<i32>().is_ok() => {
                NotifyMessage::MainPid(v.trim().parse().unwrap_or(0))
            }
            _ => NotifyMessage::Other(line.to_string()),
        };
        out.push(msg);
    }
    out
}

/// `N` microseconds as a duration (saturating, so a huge value means "no
/// deadline in practice" instead of an overflow).
pub fn usec(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// The socket of one app.
#[derive(Debug)]
pub struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

/// The notify socket could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the notify socket {path}: {source}")]
pub struct NotifySocketError {
    /// The socket path.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl NotifySocket {
    /// Binds `dir/<name>.sock` (replacing a stale file) and turns on
    /// credential passing.
    pub fn bind(dir: &Path, name: &str) -> Result<NotifySocket, NotifySocketError> {
        let path = dir.join(format!("{name}.sock"));
        let err = |source| NotifySocketError {
            path: path.clone(),
            source,
        };
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the path is longer than {MAX_SOCKET_PATH} bytes; use a shorter runtime directory"),
            )));
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let sock = UnixDatagram::bind(&path).map_err(err)?;
        sock.set_nonblocking(true).map_err(err)?;
        unixcred::enable_passcred(sock.as_fd()).map_err(|e| err(e.into()))?;
        Ok(NotifySocket { sock, path })
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Polled for readability by the supervisor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// The next queued datagram and its sender, or `None` when none is
    /// queued. Read errors are logged and treated as "none".
    pub fn recv(&self) -> Option<(Vec<NotifyMessage>, Option<UnixCredentials>)> {
        let mut buf = [0u8; MAX_DATAGRAM];
        match unixcred::recv_with_credentials(self.sock.as_fd(), &mut buf) {
            Ok(Some(d)) => {
                if d.truncated {
                    tracing::debug!(path = %self.path.display(), "notify datagram longer than {MAX_DATAGRAM} bytes was cut");
                }
                Some((parse_datagram(&buf[..d.len]), d.credentials))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "reading the notify socket");
                None
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A private directory (mode 0700) for the notify sockets of one
/// supervisor, removed on drop: `/run/selfheal` as root,
/// `$XDG_RUNTIME_DIR/selfheal` otherwise, else the temp directory.
pub fn runtime_dir(base: Option<&Path>) -> std::io::Result<tempfile::TempDir> {
    let base = match base {
        Some(b) => b.to_path_buf(),
        None if selfheal_sys::process::is_root() => PathBuf::from("/run/selfheal"),
        None => match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d).join("selfheal"),
            _ => std::env::temp_dir(),
        },
    };
    let make = |b: &Path| -> std::io::Result<tempfile::TempDir> {
        std::fs::create_dir_all(b)?;
        // tempfile creates the directory with mode 0700.
        tempfile::Builder::new().prefix("sup-").tempdir_in(b)
    };
    match make(&base) {
        Ok(d) => Ok(d),
        // A read-only /run or a missing XDG dir must not stop supervision.
        Err(_) => make(&std::env::temp_dir()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_systemd_messages() {
        let m = parse_datagram(
            b"READY=1\nSTATUS=Serving 3 clients\nWATCHDOG=1\nWATCHDOG_USEC=2000000\n\
              EXTEND_TIMEOUT_USEC=5000000\nSTOPPING=1\nWATCHDOG=trigger\nMAINPID=42\nERRNO=5\nFDSTORE=1\njunk\n",
        );
        assert_eq!(
            m,
            vec![
                NotifyMessage::Ready,
                NotifyMessage::Status("Serving 3 clients".into()),
                NotifyMessage::Watchdog,
                NotifyMessage::WatchdogUsec(2_000_000),
                NotifyMessage::ExtendTimeoutUsec(5_000_000),
                NotifyMessage::Stopping,
                NotifyMessage::WatchdogTrigger,
                NotifyMessage::MainPid(42),
                NotifyMessage::Errno(5),
                NotifyMessage::Other("FDSTORE=1".into()),
                NotifyMessage::Other("junk".into()),
            ]
        );
        // READY=0 or a bad number is not READY.
        assert_eq!(
            parse_datagram(b"READY=0\nWATCHDOG_USEC=x"),
            vec![
                NotifyMessage::Other("READY=0".into()),
                NotifyMessage::Other("WATCHDOG_USEC=x".into())
            ]
        );
    }

    #[test]
    fn socket_receives_with_sender() {
        let dir = runtime_dir(Some(&std::env::temp_dir())).unwrap();
        let s = NotifySocket::bind(dir.path(), "app").unwrap();
        assert!(s.recv().is_none());
        let tx = UnixDatagram::unbound().unwrap();
        tx.send_to(b"READY=1\nSTATUS=up", s.path()).unwrap();
        let (msgs, cred) = s.recv().unwrap();
        assert_eq!(
            msgs,
            vec![NotifyMessage::Ready, NotifyMessage::Status("up".into())]
        );
        assert_eq!(cred.unwrap().pid, std::process::id() as i32);
        let path = s.path().to_path_buf();
        drop(s);
        assert!(!path.exists());
    }

    #[test]
    fn long_paths_are_refused_with_advice() {
        let long = PathBuf::from(format!("/tmp/{}", "d".repeat(120)));
        let err = NotifySocket::bind(&long, "x").unwrap_err();
        assert!(err.to_string().contains("shorter"), "{err}");
    }
}
