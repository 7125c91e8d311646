//! `waitpid` for traced tasks: one task by tid, or any task of the calling
//! tracer thread.

use crate::error::{Errno, Result, SysError};

/// What `waitpid` reported for one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// The task exited with this code.
    Exited(i32),
    /// The task was killed by a signal.
    Signaled {
        /// The signal.
        sig: i32,
        /// A core dump was written.
        core_dumped: bool,
    },
    /// The task is in a ptrace stop. `event` is 0 for a signal-delivery-stop,
    /// else a `PTRACE_EVENT_*` number; `sig` is the stop signal.
    Stopped {
        /// Stop signal (for event stops SIGTRAP, or the group-stop signal).
        sig: i32,
        /// `status >> 16`: the ptrace event, 0 for a signal-delivery-stop.
        event: i32,
    },
}

impl WaitStatus {
    fn decode(status: i32) -> WaitStatus {
        if libc::WIFEXITED(status) {
            WaitStatus::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            WaitStatus::Signaled {
                sig: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            }
        } else {
            WaitStatus::Stopped {
                sig: libc::WSTOPSIG(status),
                event: (status >> 16) & 0xff,
            }
        }
    }
}

/// Waits for a state change of one traced task (`waitpid(tid, __WALL)`),
/// retrying on EINTR. With `nohang`, `Ok(None)` means nothing happened yet.
/// Waiting by tid (never -1) leaves the caller's other children alone.
pub fn wait_task(tid: i32, nohang: bool) -> Result<Option<(i32, WaitStatus)>> {
    if tid <= 0 {
        return Err(SysError {
            call: format!("waitpid(tid {tid})"),
            errno: Errno(libc::EINVAL),
        });
    }
    let flags = libc::__WALL | if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status = 0;
        // SAFETY: `status` is a live out-pointer; tid > 0 names one task.
        let rc = unsafe { libc::waitpid(tid, &mut status, flags) };
        if rc > 0 {
            return Ok(Some((rc, WaitStatus::decode(status))));
        }
        if rc == 0 {
            return Ok(None);
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(SysError {
                call: format!("waitpid(tid {tid})"),
                errno: e,
            });
        }
    }
}

/// Waits for any task traced or forked by the *calling thread*
/// (`waitpid(-1, __WALL | __WNOTHREAD)`), never for children of the
/// process's other threads. With `nohang`, `Ok(None)` means nothing yet;
/// ECHILD means the thread has no such task left.
pub fn wait_own(nohang: bool) -> Result<Option<(i32, WaitStatus)>> {
    loop {
        match wait_own_once(nohang) {
            Err(e) if e.errno.0 == libc::EINTR => continue,
            r => return r,
        }
    }
}

/// [`wait_own`] blocking, but giving up when a signal handler ran on the
/// calling thread: EINTR is returned (for a handler installed without
/// `SA_RESTART`, see [`crate::signal::install_wake_handler`]), so another
/// thread can end this wait.
pub fn wait_own_interruptible() -> Result<Option<(i32, WaitStatus)>> {
    wait_own_once(false)
}

fn wait_own_once(nohang: bool) -> Result<Option<(i32, WaitStatus)>> {
    const WNOTHREAD: i32 = 0x2000_0000;
    let flags = libc::__WALL | WNOTHREAD | if nohang { libc::WNOHANG } else { 0 };
    let mut status = 0;
    // SAFETY: `status` is a live out-pointer; pid -1 with __WNOTHREAD is
    // limited to this thread's own tracees and children.
    let rc = unsafe { libc::waitpid(-1, &mut status, flags) };
    if rc > 0 {
        return Ok(Some((rc, WaitStatus::decode(status))));
    }
    if rc == 0 {
        return Ok(None);
    }
    Err(SysError {
        call: "waitpid(-1, __WALL|__WNOTHREAD)".to_string(),
        errno: Errno::last(),
    })
}
