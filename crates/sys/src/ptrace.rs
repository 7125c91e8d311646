//! ptrace(2) for a tracer that seizes, stops, inspects and resumes tasks,
//! `waitpid` for one traced task, `pidfd_getfd`, and a fork/exec that hands
//! the child to the tracer before it runs any code of its own.
//!
//! Every request goes through the raw system call (not glibc's variadic
//! wrapper) and names the kernel's constants, defined here because older libc
//! headers lack some of them. All requests must come from the tracer thread:
//! the kernel ties a tracee to the thread that seized it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Errno, Result, SysError};

const PTRACE_CONT: i64 = 7;
const PTRACE_SINGLESTEP: i64 = 9;
const PTRACE_GETREGS: i64 = 12;
const PTRACE_SETREGS: i64 = 13;
const PTRACE_DETACH: i64 = 17;
const PTRACE_GETEVENTMSG: i64 = 0x4201;
const PTRACE_GETSIGINFO: i64 = 0x4202;
const PTRACE_SETSIGINFO: i64 = 0x4203;
const PTRACE_PEEKSIGINFO: i64 = 0x4209;
/// `PTRACE_PEEKSIGINFO` flag: the process's queue, not the thread's.
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
const PTRACE_GETREGSET: i64 = 0x4204;
const PTRACE_SETREGSET: i64 = 0x4205;
const PTRACE_SEIZE: i64 = 0x4206;
const PTRACE_INTERRUPT: i64 = 0x4207;
const PTRACE_LISTEN: i64 = 0x4208;
const PTRACE_GETSIGMASK: i64 = 0x420a;
const PTRACE_SETSIGMASK: i64 = 0x420b;
const PTRACE_GET_RSEQ_CONFIGURATION: i64 = 0x420f;

/// `NT_X86_XSTATE`: the regset holding the whole XSAVE area (FPU, SSE, AVX…).
const NT_X86_XSTATE: i64 = 0x202;

/// Report `clone(2)` of threads and processes as `PTRACE_EVENT_CLONE` and
/// trace the new task.
pub const PTRACE_O_TRACECLONE: i64 = 0x8;
/// Report `execve(2)` as `PTRACE_EVENT_EXEC`.
pub const PTRACE_O_TRACEEXEC: i64 = 0x10;
/// Report a task about to exit as `PTRACE_EVENT_EXIT`.
pub const PTRACE_O_TRACEEXIT: i64 = 0x40;
/// Kill the tracee with SIGKILL if the tracer exits.
pub const PTRACE_O_EXITKILL: i64 = 0x10_0000;

/// Event number of a clone stop (`status >> 16`).
pub const PTRACE_EVENT_CLONE: i32 = 3;
/// Event number of an exec stop.
pub const PTRACE_EVENT_EXEC: i32 = 4;
/// Event number of an exit stop.
pub const PTRACE_EVENT_EXIT: i32 = 6;
/// Event number of a group-stop or `PTRACE_INTERRUPT` stop of a seized task.
pub const PTRACE_EVENT_STOP: i32 = 128;

/// The general-purpose registers as the kernel's `struct user_regs_struct`.
#[cfg(target_arch = "x86_64")]
pub type Regs = libc::user_regs_struct;

fn ptrace(req: i64, tid: i32, addr: u64, data: u64, what: &str) -> Result<i64> {
    // SAFETY: raw ptrace with integer arguments; every caller passing a
    // pointer in `addr`/`data` documents that it points to a live buffer of
    // the size the request writes or reads.
    let rc = unsafe { libc::syscall(libc::SYS_ptrace, req, tid, addr, data) };
    if rc < 0 {
        return Err(SysError::last(format!("ptrace({what}, tid {tid})")));
    }
    Ok(rc)
}

/// Attaches to `tid` without stopping it (`PTRACE_SEIZE`) with `options`
/// (`PTRACE_O_*`). New threads are attached automatically with TRACECLONE.
pub fn seize(tid: i32, options: i64) -> Result<()> {
    ptrace(PTRACE_SEIZE, tid, 0, options as u64, "PTRACE_SEIZE").map(drop)
}

/// Asks a seized, running task to stop (`PTRACE_INTERRUPT`); the stop is
/// reported by `waitpid` as `PTRACE_EVENT_STOP`.
pub fn interrupt(tid: i32) -> Result<()> {
    ptrace(PTRACE_INTERRUPT, tid, 0, 0, "PTRACE_INTERRUPT").map(drop)
}

/// Resumes a stopped task, delivering `sig` (0 suppresses the signal of a
/// signal-delivery-stop).
pub fn cont(tid: i32, sig: i32) -> Result<()> {
    ptrace(PTRACE_CONT, tid, 0, sig as u64, "PTRACE_CONT").map(drop)
}

/// Resumes a stopped task for one instruction; the task then stops with a
/// SIGTRAP signal-delivery-stop.
pub fn singlestep(tid: i32, sig: i32) -> Result<()> {
    ptrace(PTRACE_SINGLESTEP, tid, 0, sig as u64, "PTRACE_SINGLESTEP").map(drop)
}

/// Lets a task in group-stop stay stopped while no longer in a ptrace-stop
/// (`PTRACE_LISTEN`), so job control works; SIGCONT then wakes it.
pub fn listen(tid: i32) -> Result<()> {
    ptrace(PTRACE_LISTEN, tid, 0, 0, "PTRACE_LISTEN").map(drop)
}

/// Detaches from a stopped task, resuming it with `sig`.
pub fn detach(tid: i32, sig: i32) -> Result<()> {
    ptrace(PTRACE_DETACH, tid, 0, sig as u64, "PTRACE_DETACH").map(drop)
}

/// The message of the last ptrace event (new tid for CLONE, exit status for
/// EXIT, former tid for EXEC).
pub fn get_event_msg(tid: i32) -> Result<u64> {
    let mut msg: libc::c_ulong = 0;
    let ptr = &mut msg as *mut libc::c_ulong as u64;
    // `ptr` points to a live c_ulong, which is what GETEVENTMSG writes.
    ptrace(PTRACE_GETEVENTMSG, tid, 0, ptr, "PTRACE_GETEVENTMSG")?;
    Ok(msg as u64)
}

/// The parts of a `siginfo_t` a tracer acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigInfo {
    /// Signal number.
    pub signo: i32,
    /// `si_code`: > 0 for a kernel-generated fault, <= 0 for one sent by a
    /// process (SI_USER 0, SI_TKILL -6, SI_QUEUE -1).
    pub code: i32,
    /// Faulting address for SIGSEGV/SIGBUS/SIGILL/SIGFPE faults, else the
    /// sender pid in the low 32 bits.
    pub addr_or_pid: u64,
}

/// The siginfo of the signal a task is stopped for.
pub fn get_siginfo(tid: i32) -> Result<SigInfo> {
    // SAFETY: siginfo_t is plain old data; all-zero is valid.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let ptr = &mut si as *mut libc::siginfo_t as u64;
    // `ptr` points to a live siginfo_t, which is what GETSIGINFO writes.
    ptrace(PTRACE_GETSIGINFO, tid, 0, ptr, "PTRACE_GETSIGINFO")?;
    // The union starts 16 bytes in on 64-bit: a pid or an address comes first.
    // SAFETY: siginfo_t is 128 bytes; reading 8 bytes at offset 16 stays inside.
    let word = unsafe { (ptr as *const u8).add(16).cast::<u64>().read_unaligned() };
    Ok(SigInfo {
        signo: si.si_signo,
        code: si.si_code,
        addr_or_pid: word,
    })
}

/// A whole `siginfo_t`, byte for byte as the kernel reports it: what a
/// handler of the signal sees, and what `PTRACE_SETSIGINFO` or
/// `rt_tgsigqueueinfo` take back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawSigInfo(pub [u8; 128]);

impl RawSigInfo {
    fn i32_at(&self, at: usize) -> i32 {
        i32::from_ne_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }

    /// `si_signo`.
    pub fn signo(&self) -> i32 {
        self.i32_at(0)
    }

    /// `si_code`.
    pub fn code(&self) -> i32 {
        self.i32_at(8)
    }

    /// `si_pid` (meaningful for signals sent by a process).
    pub fn pid(&self) -> i32 {
        self.i32_at(16)
    }

    /// `si_uid` (meaningful for signals sent by a process).
    pub fn uid(&self) -> u32 {
        self.i32_at(20) as u32
    }

    /// `si_value` (meaningful for `sigqueue` and timers).
    pub fn value(&self) -> u64 {
        u64::from_ne_bytes(self.0[24..32].try_into().expect("8 bytes"))
    }
}

impl std::fmt::Debug for RawSigInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "siginfo(signo {} code {} pid {} uid {} value {:#x})",
            self.signo(),
            self.code(),
            self.pid(),
            self.uid(),
            self.value()
        )
    }
}

/// The whole siginfo of the signal a task is stopped for.
pub fn get_siginfo_raw(tid: i32) -> Result<RawSigInfo> {
    let mut si = RawSigInfo([0; 128]);
    let ptr = si.0.as_mut_ptr() as u64;
    // `ptr` points to 128 live bytes, the size of the siginfo GETSIGINFO writes.
    ptrace(PTRACE_GETSIGINFO, tid, 0, ptr, "PTRACE_GETSIGINFO")?;
    Ok(si)
}

/// Replaces the siginfo of the signal a task is stopped for: in a
/// signal-delivery-stop, resuming with `si.signo()` delivers exactly `si`.
pub fn set_siginfo_raw(tid: i32, si: &RawSigInfo) -> Result<()> {
    let ptr = si.0.as_ptr() as u64;
    // `ptr` points to 128 live bytes that SETSIGINFO only reads.
    ptrace(PTRACE_SETSIGINFO, tid, 0, ptr, "PTRACE_SETSIGINFO").map(drop)
}

/// `struct ptrace_peeksiginfo_args`.
#[repr(C)]
struct PeekArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// Every signal queued for stopped task `tid` (`shared`: for its whole
/// process), in queue order, with its siginfo; each instance of a
/// real-time signal queued several times is there. A signal pending
/// without a queue entry (its siginfo was dropped when the sender's
/// queue limit was reached) is not.
pub fn peek_siginfo(tid: i32, shared: bool) -> Result<Vec<RawSigInfo>> {
    const BATCH: usize = 32;
    let mut out = Vec::new();
    let mut buf = [RawSigInfo([0; 128]); BATCH];
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: BATCH as i32,
        };
        let a = &args as *const PeekArgs as u64;
        let b = buf.as_mut_ptr() as u64;
        // `a` points to a live ptrace_peeksiginfo_args (read only); `b` to
        // BATCH live 128-byte siginfos, as many as `nr` lets the kernel write.
        let n = ptrace(PTRACE_PEEKSIGINFO, tid, a, b, "PTRACE_PEEKSIGINFO")? as usize;
        out.extend_from_slice(&buf[..n.min(BATCH)]);
        if n < BATCH {
            return Ok(out);
        }
    }
}

/// The general-purpose registers of a stopped task.
#[cfg(target_arch = "x86_64")]
pub fn get_regs(tid: i32) -> Result<Regs> {
    // SAFETY: user_regs_struct is plain old data; all-zero is valid.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    let ptr = &mut regs as *mut Regs as u64;
    // `ptr` points to a live user_regs_struct, which GETREGS fills.
    ptrace(PTRACE_GETREGS, tid, 0, ptr, "PTRACE_GETREGS")?;
    Ok(regs)
}

/// Sets the general-purpose registers of a stopped task.
#[cfg(target_arch = "x86_64")]
pub fn set_regs(tid: i32, regs: &Regs) -> Result<()> {
    let ptr = regs as *const Regs as u64;
    // `ptr` points to a live user_regs_struct, which SETREGS only reads.
    ptrace(PTRACE_SETREGS, tid, 0, ptr, "PTRACE_SETREGS").map(drop)
}

/// Largest XSAVE area we accept; real CPUs need about 2.7 KiB with AVX-512
/// and up to 11 KiB with AMX tiles.
const XSTATE_MAX: usize = 16 * 1024;

/// Reads the whole extended FPU/vector state (`NT_X86_XSTATE`) into `buf`,
/// resized to the length the kernel reports.
#[cfg(target_arch = "x86_64")]
pub fn get_xstate(tid: i32, buf: &mut Vec<u8>) -> Result<()> {
    buf.resize(XSTATE_MAX, 0);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let ptr = &mut iov as *mut libc::iovec as u64;
    // `iov` describes `buf`, live and XSTATE_MAX long; the kernel writes at
    // most iov_len bytes and stores the length it wrote back in iov_len.
    ptrace(
        PTRACE_GETREGSET,
        tid,
        NT_X86_XSTATE as u64,
        ptr,
        "GETREGSET xstate",
    )?;
    let len = iov.iov_len;
    buf.truncate(len);
    Ok(())
}

/// Writes back an extended FPU/vector state read by [`get_xstate`].
#[cfg(target_arch = "x86_64")]
pub fn set_xstate(tid: i32, buf: &[u8]) -> Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let ptr = &mut iov as *mut libc::iovec as u64;
    // `iov` describes `buf`, live for the call; SETREGSET only reads it.
    ptrace(
        PTRACE_SETREGSET,
        tid,
        NT_X86_XSTATE as u64,
        ptr,
        "SETREGSET xstate",
    )
    .map(drop)
}

/// The blocked-signal mask of a stopped task.
pub fn get_sigmask(tid: i32) -> Result<u64> {
    let mut mask: u64 = 0;
    let ptr = &mut mask as *mut u64 as u64;
    // addr is the mask size (8); `ptr` points to a live u64.
    ptrace(PTRACE_GETSIGMASK, tid, 8, ptr, "PTRACE_GETSIGMASK")?;
    Ok(mask)
}

/// Sets the blocked-signal mask of a stopped task.
pub fn set_sigmask(tid: i32, mask: u64) -> Result<()> {
    let ptr = &mask as *const u64 as u64;
    // addr is the mask size (8); `ptr` points to a live u64 that is only read.
    ptrace(PTRACE_SETSIGMASK, tid, 8, ptr, "PTRACE_SETSIGMASK").map(drop)
}

/// A thread's restartable-sequences registration (`rseq(2)`), as
/// `PTRACE_GET_RSEQ_CONFIGURATION` (Linux 5.13+) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RseqConfig {
    /// Address of the registered `struct rseq` (0: none registered).
    pub abi_pointer: u64,
    /// Size it was registered with.
    pub abi_size: u32,
    /// Signature it was registered with.
    pub signature: u32,
    /// Registration flags.
    pub flags: u32,
}

/// The rseq registration of a stopped task (`abi_pointer` 0: none).
/// EIO before Linux 5.13, which cannot report it.
pub fn get_rseq_config(tid: i32) -> Result<RseqConfig> {
    // The kernel's struct ptrace_rseq_configuration.
    #[repr(C)]
    #[derive(Default)]
    struct Raw {
        rseq_abi_pointer: u64,
        rseq_abi_size: u32,
        signature: u32,
        flags: u32,
        pad: u32,
    }
    let mut raw = Raw::default();
    let ptr = &mut raw as *mut Raw as u64;
    // addr is the buffer size; `ptr` points to a live, writable Raw of
    // exactly that size, which the kernel fills.
    ptrace(
        PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        std::mem::size_of::<Raw>() as u64,
        ptr,
        "PTRACE_GET_RSEQ_CONFIGURATION",
    )?;
    Ok(RseqConfig {
        abi_pointer: raw.rseq_abi_pointer,
        abi_size: raw.rseq_abi_size,
        signature: raw.signature,
        flags: raw.flags,
    })
}

/// The robust-futex list head a task registered with `set_robust_list(2)`
/// and its length (`get_robust_list(2)`; head 0: none).
pub fn get_robust_list(tid: i32) -> Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: both out-pointers point to live, writable locals of the
    // pointer and size_t sizes the system call stores.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    if rc < 0 {
        return Err(SysError::last(format!("get_robust_list(tid {tid})")));
    }
    Ok((head, len as u64))
}

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

/// Duplicates file descriptor `target_fd` of the process behind `pidfd` into
/// the caller (`pidfd_getfd(2)`, Linux 5.6+; needs ptrace rights over it).
pub fn pidfd_getfd(pidfd: &OwnedFd, target_fd: i32) -> Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) };
    if fd < 0 {
        return Err(SysError::last(format!("pidfd_getfd(fd {target_fd})")));
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

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
