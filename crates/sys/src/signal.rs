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

/// The handler [`install_wake_handler`] installs: it does nothing. What
/// matters is that it runs, so a blocking system call on the thread the
/// signal was sent to returns EINTR. (Touches no memory, not even errno:
/// async-signal-safe.)
extern "C" fn wake_handler(_sig: libc::c_int) {}

fn wake_handler_address() -> libc::sighandler_t {
    wake_handler as extern "C" fn(libc::c_int) as libc::sighandler_t
}

/// The current disposition of `sig` (handler address, `SIG_DFL`, `SIG_IGN`).
fn disposition(sig: i32) -> Result<libc::sighandler_t> {
    // SAFETY: a zeroed sigaction is a valid out-value; a null new action
    // only reads the current one.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `old` is a live out-pointer; a null `act` changes nothing.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    if rc != 0 {
        return Err(SysError::last(format!("sigaction(sig {sig}, query)")));
    }
    Ok(old.sa_sigaction)
}

/// Installs, process-wide, a handler for `sig` that does nothing and is
/// installed *without* `SA_RESTART`, so sending `sig` to a thread with
/// [`tgkill`] interrupts its blocking system call (EINTR). Only if `sig` has
/// its default disposition (or this handler already): a handler or `SIG_IGN`
/// the program set itself is left alone and `Ok(false)` returned.
pub fn install_wake_handler(sig: i32) -> Result<bool> {
    let ours = wake_handler_address();
    match disposition(sig)? {
        h if h == ours => return Ok(true),
        libc::SIG_DFL => {}
        _ => return Ok(false),
    }
    // SAFETY: zeroed is a valid sigaction; the fields are set below.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = ours;
    // No SA_RESTART: the interrupted call must return EINTR. The signal
    // itself is blocked while the handler runs (no SA_NODEFER).
    act.sa_flags = 0;
    // SAFETY: `act.sa_mask` is a live sigset.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // SAFETY: zeroed is a valid out-value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are live; the handler is a plain `extern "C"` fn
    // that lives as long as the program.
    let rc = unsafe { libc::sigaction(sig, &act, &mut old) };
    if rc != 0 {
        return Err(SysError::last(format!("sigaction(sig {sig}, install)")));
    }
    if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != ours {
        // The program installed its own between our look and ours: put
        // it back.
        // SAFETY: `old` is what the kernel just gave us.
        unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
        return Ok(false);
    }
    Ok(true)
}

/// True if `sig` is currently handled by the handler of
/// [`install_wake_handler`] (the program may have replaced it since).
pub fn wake_handler_installed(sig: i32) -> bool {
    disposition(sig).is_ok_and(|h| h == wake_handler_address())
}

/// Unblocks `sig` for the calling thread (threads inherit the signal mask
/// of the thread that started them).
pub fn unblock_on_this_thread(sig: i32) -> Result<()> {
    // SAFETY: zeroed is a valid sigset; filled by sigemptyset/sigaddset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset; `sig` is checked by sigaddset.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig)
    };
    if rc != 0 {
        return Err(SysError::last(format!("sigaddset(sig {sig})")));
    }
    // SAFETY: `set` is a live sigset; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(SysError {
            call: format!("pthread_sigmask(SIG_UNBLOCK, sig {sig})"),
            errno: crate::Errno(rc),
        });
    }
    Ok(())
}

/// The highest real-time signal number (`SIGRTMAX`, 64 with glibc).
pub fn sigrtmax() -> i32 {
    libc::SIGRTMAX()
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
    fn a_wake_signal_interrupts_a_blocking_wait_and_a_foreign_handler_is_kept() {
        // Process-wide state: use two signals nothing else in this test
        // binary touches.
        let sig = sigrtmax() - 5;
        assert!(install_wake_handler(sig).unwrap());
        assert!(install_wake_handler(sig).unwrap(), "idempotent");
        assert!(wake_handler_installed(sig));
        let foreign = sigrtmax() - 6;
        extern "C" fn theirs(_: libc::c_int) {}
        // SAFETY: test-only: installs a no-op handler for an unused signal.
        unsafe {
            libc::signal(
                foreign,
                theirs as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
        assert!(!install_wake_handler(foreign).unwrap());
        assert!(!wake_handler_installed(foreign));

        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            unblock_on_this_thread(sig).unwrap();
            tx.send(crate::sched::gettid()).unwrap();
            // A child of this thread, so the wait has something to wait for.
            let mut own = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            let r = crate::ptrace::wait_own_interruptible();
            own.kill().unwrap();
            own.wait().unwrap();
            done_tx.send(r.map(|_| ()).map_err(|e| e.errno.0)).unwrap();
        });
        let tid = rx.recv().unwrap();
        // Again and again: one sent before the wait began is spent on
        // nothing, as it would be for the engine's watchdog.
        let got = loop {
            tgkill(std::process::id() as i32, tid, sig).unwrap();
            match done.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(r) => break r,
                Err(_) => continue,
            }
        };
        assert_eq!(got, Err(libc::EINTR));
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
