//! Supervising child processes: waiting for one child without disturbing
//! the caller's others, waiting on several descriptors at once, and the
//! parent-death signal a supervised program gets before `exec`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use crate::error::{Errno, Result, SysError};

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// It called `exit` with this status (0 to 255).
    Exited(i32),
    /// A signal killed it.
    Killed {
        /// The signal.
        signal: i32,
        /// The kernel wrote a core dump (`WCOREDUMP`).
        core_dumped: bool,
    },
}

impl ChildExit {
    /// The status a shell reports: the exit code, or 128 + the signal.
    pub fn shell_status(self) -> i32 {
        match self {
            ChildExit::Exited(code) => code,
            ChildExit::Killed { signal, .. } => 128 + signal,
        }
    }
}

/// Waits for child `pid` (of the calling process) to end, with
/// `waitid(P_PID, pid, WEXITED)`. Only that child is looked at, so the
/// caller's other children are left alone.
///
/// - `reap`: false leaves the child a zombie (`WNOWAIT`), so its pid stays
///   reserved and can still be signalled safely; true collects it.
/// - `block`: false returns `Ok(None)` at once if it is still running.
///
/// EINTR is retried. ECHILD means `pid` is not our unreaped child.
pub fn wait_child(pid: i32, reap: bool, block: bool) -> Result<Option<ChildExit>> {
    let call = || {
        format!(
            "waitid(P_PID {pid}, WEXITED{})",
            if reap { "" } else { "|WNOWAIT" }
        )
    };
    if pid <= 0 {
        return Err(SysError {
            call: call(),
            errno: Errno(libc::EINVAL),
        });
    }
    let mut flags = libc::WEXITED;
    if !reap {
        flags |= libc::WNOWAIT;
    }
    if !block {
        flags |= libc::WNOHANG;
    }
    loop {
        // SAFETY: siginfo_t is plain old data; all-zero is valid and is how
        // WNOHANG's "nothing yet" is told apart (si_pid stays 0).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live out-pointer for the call; P_PID with a
        // positive pid addresses exactly one child.
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if rc != 0 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            return Err(SysError {
                call: call(),
                errno: e,
            });
        }
        // SAFETY: waitid filled `info` for a SIGCHLD-style record (or left
        // it zeroed); si_pid and si_status are valid to read for both.
        let (got, status) = unsafe { (info.si_pid(), info.si_status()) };
        if got == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => ChildExit::Exited(status),
            libc::CLD_DUMPED => ChildExit::Killed {
                signal: status,
                core_dumped: true,
            },
            _ => ChildExit::Killed {
                signal: status,
                core_dumped: false,
            },
        }));
    }
}

/// Waits until at least one of `fds` is readable (or hung up, or in error)
/// or `timeout` passes (`None` waits forever). Returns a bit mask: bit `i`
/// set when `fds[i]` is ready; 0 on timeout or when a signal interrupted
/// the wait. At most 64 descriptors.
pub fn poll_readable_any(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> Result<u64> {
    if fds.len() > 64 {
        return Err(SysError {
            call: format!("poll({} fds)", fds.len()),
            errno: Errno(libc::EINVAL),
        });
    }
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        // Round up: waking a little early would spin until the deadline.
        Some(t) => {
            let ms = t.as_micros().div_ceil(1000);
            ms.min(i32::MAX as u128) as i32
        }
    };
    // SAFETY: `pfds` is a valid array of initialised pollfds whose length
    // is passed as nfds; it outlives the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let err = SysError::last(format!("poll({} fds)", fds.len()));
        if err.errno.0 == libc::EINTR {
            return Ok(0);
        }
        return Err(err);
    }
    let mut mask = 0u64;
    for (i, p) in pfds.iter().enumerate() {
        if p.revents != 0 {
            mask |= 1 << i;
        }
    }
    Ok(mask)
}

/// A new pipe, both ends close-on-exec: `(read end, write end)`.
pub fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: `fds` is a live array of two ints, as pipe2(2) requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SysError::last("pipe2(O_CLOEXEC)"));
    }
    // SAFETY: the kernel just created both descriptors for us; nothing
    // else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Turns `O_NONBLOCK` on or off for `fd`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl(F_GETFL) on a descriptor that `fd` keeps open.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(SysError::last(format!("fcntl(fd {raw}, F_GETFL)")));
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: fcntl(F_SETFL) with flags derived from the current ones.
    if new != flags && unsafe { libc::fcntl(raw, libc::F_SETFL, new) } < 0 {
        return Err(SysError::last(format!("fcntl(fd {raw}, F_SETFL)")));
    }
    Ok(())
}

/// Makes the child of `cmd` receive `sig` when the thread that spawned it
/// exits (`PR_SET_PDEATHSIG`), so a supervised program does not outlive
/// its supervisor. Spawn from a thread that lives as long as the child:
/// the kernel ties the signal to the *thread*, not the process.
///
/// If the supervisor already died between `fork` and the `prctl`, the
/// child exits at once instead of running unsupervised.
pub fn parent_death_signal_before_exec(cmd: &mut Command, sig: i32) {
    let parent = crate::process::getpid();
    let hook = move || -> io::Result<()> {
        // SAFETY: prctl(2) is a plain system call, safe after fork; the
        // arguments are integers.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: getppid(2) cannot fail and is async-signal-safe.
        if unsafe { libc::getppid() } != parent {
            // Reparented already: the parent is gone. ECHILD is what the
            // spawner would see if it were still there to look.
            return Err(io::Error::from_raw_os_error(libc::ECHILD));
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child and makes only
    // async-signal-safe system calls on integers it owns; it allocates
    // nothing and takes no lock.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Starts the child of `cmd` at `oom_score_adj` 0 even when its parent
/// (the daemon) protects itself at -1000: a supervised program must stay a
/// fair target for the kernel's OOM killer.
pub fn reset_oom_score_adj_before_exec(cmd: &mut Command) {
    let hook = || -> io::Result<()> {
        // SAFETY: we are in the forked child before exec.
        unsafe { crate::process::reset_oom_score_adj_in_child() };
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe system calls on static
    // data; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(hook);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    // The children are reaped through `wait_child`, not `Child::wait`.
    #[test]
    #[allow(clippy::zombie_processes)]
    fn wait_without_reaping_then_reap() {
        let child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let pid = child.id() as i32;
        let peek = wait_child(pid, false, true).unwrap();
        assert_eq!(peek, Some(ChildExit::Exited(7)));
        // Still a zombie: a second peek sees the same, then reaping works.
        assert_eq!(wait_child(pid, false, false).unwrap(), peek);
        assert_eq!(wait_child(pid, true, false).unwrap(), peek);
        let gone = wait_child(pid, true, false).unwrap_err();
        assert_eq!(gone.errno.0, libc::ECHILD);
    }

    #[test]
    #[allow(clippy::zombie_processes)]
    fn killed_child_reports_signal() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        assert_eq!(wait_child(pid, true, false).unwrap(), None);
        crate::signal::kill_process(pid, libc::SIGKILL).unwrap();
        let exit = wait_child(pid, true, true).unwrap().unwrap();
        assert_eq!(
            exit,
            ChildExit::Killed {
                signal: libc::SIGKILL,
                core_dumped: false
            }
        );
        assert_eq!(exit.shell_status(), 137);
    }

    #[test]
    fn poll_reports_which_fd_is_ready() {
        let (a, _a2) = UnixStream::pair().unwrap();
        let (b, mut b2) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let mask =
            poll_readable_any(&[a.as_fd(), b.as_fd()], Some(Duration::from_millis(20))).unwrap();
        assert_eq!(mask, 0);
        assert!(start.elapsed() >= Duration::from_millis(15));
        b2.write_all(b"x").unwrap();
        let mask = poll_readable_any(&[a.as_fd(), b.as_fd()], None).unwrap();
        assert_eq!(mask, 0b10);
    }

    #[test]
    fn death_signal_hook_lets_the_program_run() {
        let mut cmd = Command::new("true");
        parent_death_signal_before_exec(&mut cmd, libc::SIGKILL);
        assert!(cmd.status().unwrap().success());
    }

    #[test]
    fn pipe_carries_bytes() {
        let (r, w) = pipe_cloexec().unwrap();
        let mut w = std::fs::File::from(w);
        w.write_all(b"hi").unwrap();
        drop(w);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut s).unwrap();
        assert_eq!(s, "hi");
    }

    #[test]
    fn nonblocking_toggles() {
        let (a, _b) = UnixStream::pair().unwrap();
        set_nonblocking(a.as_fd(), true).unwrap();
        let mut buf = [0u8; 4];
        let err = std::io::Read::read(&mut &a, &mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        set_nonblocking(a.as_fd(), false).unwrap();
    }
}
