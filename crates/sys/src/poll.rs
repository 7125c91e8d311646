//! Waiting for a file descriptor to become readable, with a timeout, so a
//! reader thread (the /dev/kmsg follower) can block cheaply yet still
//! notice a stop request.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use crate::error::{Result, SysError};

/// Waits until `fd` is readable or `timeout` passes (`None` waits forever).
/// Returns `Ok(true)` when readable (or in an error/hang-up state, which a
/// read will report), `Ok(false)` on timeout or when a signal interrupted
/// the wait.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = match timeout {
        None => -1,
        Some(t) => t.as_millis().min(i32::MAX as u128) as i32,
    };
    // SAFETY: `pfd` is one valid, initialised pollfd that lives for the
    // duration of the call; nfds is 1 to match.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let err = SysError::last(format!("poll(fd {}, POLLIN)", fd.as_raw_fd()));
        if err.errno.0 == libc::EINTR {
            return Ok(false);
        }
        return Err(err);
    }
    Ok(rc > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn times_out_then_sees_data() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let start = std::time::Instant::now();
        assert!(!poll_readable(a.as_fd(), Some(Duration::from_millis(20))).unwrap());
        assert!(start.elapsed() >= Duration::from_millis(15));
        b.write_all(b"x").unwrap();
        assert!(poll_readable(a.as_fd(), Some(Duration::from_secs(5))).unwrap());
    }
}
