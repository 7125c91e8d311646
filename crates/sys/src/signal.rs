//! Sending signals, by pid and by pidfd.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Result, SysError};

/// Sends `sig` to process `pid` (never 0 or negative: process groups are
/// addressed explicitly with [`kill_process_group`]).
pub fn kill_process(pid: i32, sig: i32) -> Result<()> {
    if pid <= 0 {
        return Err(SysError {
            call: format!("kill(pid {pid}, sig {sig})"),
            errno: crate::Errno(libc::EINVAL),
        });
    }
    // SAFETY: plain syscall with integer arguments; pid > 0 addresses one process.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(format!("kill(pid {pid}, sig {sig})")))
    }
}

/// Sends `sig` to every process in process group `pgid` (> 1).
pub fn kill_process_group(pgid: i32, sig: i32) -> Result<()> {
    if pgid <= 1 {
        return Err(SysError {
            call: format!("killpg(pgid {pgid}, sig {sig})"),
            errno: crate::Errno(libc::EINVAL),
        });
    }
    // SAFETY: plain syscall; the negative pid addresses the group, which we
    // checked is not 0 or 1.
    let rc = unsafe { libc::kill(-pgid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(format!("killpg(pgid {pgid}, sig {sig})")))
    }
}

/// Sends `sig` to one thread `tid` of thread group `tgid`.
pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> Result<()> {
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(format!(
            "tgkill(tgid {tgid}, tid {tid}, sig {sig})"
        )))
    }
}

/// Opens a pidfd for `pid` (Linux 5.3+). A pidfd keeps naming the same
/// process even if the pid is recycled, so signals sent through it can never
/// hit a stranger.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(SysError::last(format!("pidfd_open(pid {pid})")));
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `sig` through a pidfd (Linux 5.1+).
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: i32) -> Result<()> {
    // SAFETY: the fd is valid for the call; a null siginfo means "as kill(2)".
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(format!(
            "pidfd_send_signal(fd {}, sig {sig})",
            pidfd.as_raw_fd()
        )))
    }
}

/// Signal number for a name like `SIGTERM` or `TERM` (case-insensitive).
pub fn signal_from_name(name: &str) -> Option<i32> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let sig = match bare {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "WINCH" => libc::SIGWINCH,
        "SYS" => libc::SIGSYS,
        _ => return bare.parse::<i32>().ok().filter(|n| (1..=64).contains(n)),
    };
    Some(sig)
}

/// The conventional name of signal `sig` (`SIGSEGV`), or `SIG<n>`.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("SIG{sig}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for sig in [libc::SIGTERM, libc::SIGKILL, libc::SIGSEGV, libc::SIGSTOP] {
            assert_eq!(signal_from_name(&signal_name(sig)), Some(sig));
        }
        assert_eq!(signal_from_name("term"), Some(libc::SIGTERM));
        assert_eq!(signal_from_name("9"), Some(9));
        assert_eq!(signal_from_name("SIGNOPE"), None);
    }

    #[test]
    fn refuses_group_and_broadcast_pids() {
        assert!(kill_process(0, 0).is_err());
        assert!(kill_process(-1, 0).is_err());
        assert!(kill_process_group(1, 0).is_err());
    }

    #[test]
    fn pidfd_signals_own_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = pidfd_open(child.id() as i32).unwrap();
        pidfd_send_signal(&fd, libc::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
