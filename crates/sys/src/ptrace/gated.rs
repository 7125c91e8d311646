//! A fork/exec that holds the child before `execve` until the tracer has
//! seized it, so not one instruction of the program runs untraced.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Errno, Result, SysError};

/// What to run in [`spawn_gated`]: the lowered form of a
/// [`crate::program::Program`] (program resolved, strings as C strings,
/// raw descriptors). Everything is prepared before `fork` so the child
/// only makes async-signal-safe calls.
#[derive(Debug, Default)]
pub struct SpawnSpec {
    /// Path of the program (already resolved; no PATH search in the child).
    pub program: CString,
    /// Argument vector, `argv[0]` included.
    pub argv: Vec<CString>,
    /// Complete environment as `KEY=VALUE`.
    pub envp: Vec<CString>,
    /// Working directory, if not the caller's.
    pub cwd: Option<CString>,
    /// Descriptors to install as 0, 1 and 2 (None keeps the caller's).
    pub stdio: [Option<RawFd>; 3],
    /// Put the child in a new process group (so signals to the group reach
    /// it and its children only).
    pub new_process_group: bool,
    /// Signal the child receives when the thread that forked it exits.
    pub parent_death_signal: Option<i32>,
    /// Disable transparent huge pages for the child (inherited across exec);
    /// huge pages make write tracking coarse (2 MiB per written byte).
    pub disable_thp: bool,
}

/// A forked child blocked before `execve` until [`GatedChild::release`], so
/// the tracer can seize it (and put it in a cgroup) before it runs.
#[derive(Debug)]
pub struct GatedChild {
    pid: i32,
    gate: Option<OwnedFd>,
    exec_errors: OwnedFd,
}

fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live 2-int array for the kernel to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(SysError::last("pipe2"));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks a child that waits on a pipe, then sets itself up per `spec` and
/// execs. Dropping the [`GatedChild`] unreleased makes the child exit 127.
pub fn spawn_gated(spec: &SpawnSpec) -> Result<GatedChild> {
    let (gate_r, gate_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let (gr, gw, ew) = (gate_r.as_raw_fd(), gate_w.as_raw_fd(), err_w.as_raw_fd());
    // SAFETY: fork has no memory-safety preconditions; the child branch below
    // only calls async-signal-safe functions on data prepared before fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SysError::last("fork"));
    }
    if pid == 0 {
        // SAFETY: child of fork: only async-signal-safe calls on pre-built,
        // NUL-terminated arrays; it ends in execve or _exit and never returns.
        unsafe { child_after_fork(spec, gr, gw, ew, argv.as_ptr(), envp.as_ptr()) }
    }
    drop(gate_r);
    drop(err_w);
    Ok(GatedChild {
        pid,
        gate: Some(gate_w),
        exec_errors: err_r,
    })
}

/// The child's side of [`spawn_gated`].
///
/// # Safety
/// Must only run in the child right after `fork`, with pointers to arrays
/// that stay valid (the child's copy of the parent's memory).
unsafe fn child_after_fork(
    spec: &SpawnSpec,
    gate_r: RawFd,
    gate_w: RawFd,
    err_w: RawFd,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    let fail = |errno: i32| -> ! {
        let bytes = errno.to_ne_bytes();
        libc::write(err_w, bytes.as_ptr().cast(), 4);
        libc::_exit(127)
    };
    libc::close(gate_w);
    // Start the program the way std::process::Command does: the Rust runtime
    // ignores SIGPIPE in the parent and a thread may block signals, and
    // neither must leak into an unrelated program (it would otherwise start
    // with SIGPIPE ignored only when checkpointed).
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    crate::process::reset_oom_score_adj_in_child();
    if let Some(sig) = spec.parent_death_signal {
        libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0);
    }
    let mut byte = 0u8;
    loop {
        let n = libc::read(gate_r, (&mut byte as *mut u8).cast(), 1);
        if n == 1 {
            break;
        }
        if n == 0 || *libc::__errno_location() != libc::EINTR {
            libc::_exit(127);
        }
    }
    libc::close(gate_r);
    if spec.new_process_group && libc::setpgid(0, 0) != 0 {
        fail(*libc::__errno_location());
    }
    if spec.disable_thp {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    for (target, fd) in spec.stdio.iter().enumerate() {
        if let Some(fd) = *fd {
            if libc::dup2(fd, target as i32) < 0 {
                fail(*libc::__errno_location());
            }
        }
    }
    if let Some(cwd) = &spec.cwd {
        if libc::chdir(cwd.as_ptr()) != 0 {
            fail(*libc::__errno_location());
        }
    }
    libc::execve(spec.program.as_ptr(), argv, envp);
    fail(*libc::__errno_location())
}

impl GatedChild {
    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Lets the child continue to `execve`. Returns once the exec happened
    /// (Ok) or failed (the errno the child reported). A tracer uses
    /// [`open_gate`] instead: a traced child stopped by a signal before its
    /// exec waits for its tracer, and this wait would then never end.
    ///
    /// [`open_gate`]: GatedChild::open_gate
    pub fn release(self) -> Result<()> {
        self.open_gate()?.exec_result()
    }

    /// Lets the child continue to `execve` without waiting for the exec. A
    /// tracer then answers the child's stops (a signal sent to it before
    /// its exec) until its exec event or its exit, and only then asks
    /// [`Released::exec_result`].
    pub fn open_gate(mut self) -> Result<Released> {
        let gate = self.gate.take().expect("gate present until release");
        let byte = [1u8];
        // SAFETY: writes one byte from a live buffer to a pipe we own.
        let n = unsafe { libc::write(gate.as_raw_fd(), byte.as_ptr().cast(), 1) };
        if n != 1 {
            return Err(SysError::last(format!("release gate of pid {}", self.pid)));
        }
        Ok(Released {
            pid: self.pid,
            exec_errors: self.exec_errors,
        })
    }
}

/// A gated child on its way to `execve` ([`GatedChild::open_gate`]).
#[derive(Debug)]
pub struct Released {
    pid: i32,
    exec_errors: OwnedFd,
}

impl Released {
    /// The errno the child reported if its exec failed; Ok otherwise (it
    /// exec'd, or died of a signal before). Blocks until the exec or the
    /// child's end: a tracer calls it once it saw either.
    pub fn exec_result(self) -> Result<()> {
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            // SAFETY: reads into the live remainder of `buf`.
            let n = unsafe {
                libc::read(
                    self.exec_errors.as_raw_fd(),
                    buf[got..].as_mut_ptr().cast(),
                    4 - got,
                )
            };
            if n == 0 {
                break;
            }
            if n < 0 {
                if Errno::last().0 == libc::EINTR {
                    continue;
                }
                return Err(SysError::last(format!(
                    "read exec status of pid {}",
                    self.pid
                )));
            }
            got += n as usize;
        }
        if got == 4 {
            return Err(SysError {
                call: format!("execve in child {}", self.pid),
                errno: Errno(i32::from_ne_bytes(buf)),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptrace::*;

    fn spec(program: &str, args: &[&str]) -> SpawnSpec {
        let mut argv = vec![CString::new(program).unwrap()];
        argv.extend(args.iter().map(|a| CString::new(*a).unwrap()));
        SpawnSpec {
            program: CString::new(program).unwrap(),
            argv,
            envp: vec![CString::new("PATH=/usr/bin:/bin").unwrap()],
            parent_death_signal: Some(libc::SIGKILL),
            ..SpawnSpec::default()
        }
    }

    #[test]
    fn seized_child_stops_at_exec_and_can_be_interrupted() {
        if !crate::process::is_root() {
            eprintln!("skip: ptrace tests assume root (no Yama scope assumptions)");
            return;
        }
        let child = spawn_gated(&spec("/bin/sleep", &["5"])).unwrap();
        let pid = child.pid();
        seize(pid, PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL).unwrap();
        child.release().unwrap();
        let (_, st) = wait_task(pid, false).unwrap().unwrap();
        assert_eq!(
            st,
            WaitStatus::Stopped {
                sig: libc::SIGTRAP,
                event: PTRACE_EVENT_EXEC
            }
        );
        let regs = get_regs(pid).unwrap();
        assert!(regs.rip != 0);
        let mut xs = Vec::new();
        get_xstate(pid, &mut xs).unwrap();
        assert!(
            xs.len() >= 512,
            "xsave area is at least the legacy 512 bytes"
        );
        set_xstate(pid, &xs).unwrap();
        cont(pid, 0).unwrap();
        interrupt(pid).unwrap();
        let (_, st) = wait_task(pid, false).unwrap().unwrap();
        assert!(matches!(
            st,
            WaitStatus::Stopped {
                event: PTRACE_EVENT_STOP,
                ..
            }
        ));
        crate::signal::kill_process(pid, libc::SIGKILL).unwrap();
        cont(pid, 0).ok();
        let (_, st) = wait_task(pid, false).unwrap().unwrap();
        assert!(matches!(
            st,
            WaitStatus::Signaled {
                sig: libc::SIGKILL,
                ..
            }
        ));
    }

    #[test]
    fn child_starts_with_default_sigpipe_and_no_blocked_signals() {
        // The test harness (like every Rust program) ignores SIGPIPE; the
        // child must not inherit that.
        let out = std::env::temp_dir().join(format!("selfheal-gated-{}", std::process::id()));
        let script = format!(
            "grep -E '^Sig(Ign|Blk)' /proc/self/status > {}",
            out.display()
        );
        let child = spawn_gated(&spec("/bin/sh", &["-c", &script])).unwrap();
        let pid = child.pid();
        child.release().unwrap();
        let (_, st) = wait_task(pid, false).unwrap().unwrap();
        assert_eq!(st, WaitStatus::Exited(0));
        let text = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        let mask = |key: &str| {
            let line = text.lines().find(|l| l.starts_with(key)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(
            mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE ignored: {text}"
        );
        assert_eq!(mask("SigBlk:"), 0, "signals blocked: {text}");
    }

    #[test]
    fn a_signal_before_exec_does_not_block_the_tracer() {
        if !crate::process::is_root() {
            eprintln!("skip: ptrace tests assume root (no Yama scope assumptions)");
            return;
        }
        // A signal sent to the child between fork and exec stops a traced
        // child until its tracer answers: waiting for the exec in
        // `release` would then wait forever.
        let child = spawn_gated(&spec("/bin/true", &[])).unwrap();
        let pid = child.pid();
        seize(pid, PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL).unwrap();
        crate::signal::kill_process(pid, libc::SIGUSR1).unwrap();
        let released = child.open_gate().unwrap();
        let (_, st) = wait_task(pid, false).unwrap().unwrap();
        assert_eq!(
            st,
            WaitStatus::Stopped {
                sig: libc::SIGUSR1,
                event: 0
            }
        );
        // Delivered: SIGUSR1 ends it before it runs.
        cont(pid, libc::SIGUSR1).unwrap();
        let (_, st) = wait_task(pid, false).unwrap().unwrap();
        assert!(
            matches!(
                st,
                WaitStatus::Signaled {
                    sig: libc::SIGUSR1,
                    ..
                }
            ),
            "{st:?}"
        );
        released.exec_result().unwrap();
    }

    #[test]
    fn exec_failure_is_reported_with_errno() {
        let child = spawn_gated(&spec("/nonexistent/prog", &[])).unwrap();
        let pid = child.pid();
        let err = child.release().unwrap_err();
        assert_eq!(err.errno.0, libc::ENOENT);
        let (_, st) = wait_task(pid, false).unwrap().unwrap();
        assert_eq!(st, WaitStatus::Exited(127));
    }
}
