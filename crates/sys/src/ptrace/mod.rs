//! ptrace(2) for a tracer that seizes, stops, inspects and resumes tasks,
//! `waitpid` for one traced task, `pidfd_getfd`, and a fork/exec that hands
//! the child to the tracer before it runs any code of its own.
//!
//! Every request goes through the raw system call (not glibc's variadic
//! wrapper) and names the kernel's constants, defined here because older libc
//! headers lack some of them. All requests must come from the tracer thread:
//! the kernel ties a tracee to the thread that seized it.
//!
//! This file holds the requests that move a task between running and
//! stopped; `siginfo` reads and rewrites the signal a task stopped for,
//! `state` the per-thread state a checkpoint saves (registers, signal
//! mask, rseq, robust list), `wait` the `waitpid` side and `gated` the
//! fork that hands its child to the tracer.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Result, SysError};

mod gated;
mod siginfo;
mod state;
mod wait;

pub use gated::{spawn_gated, GatedChild, Released, SpawnSpec};
pub use siginfo::{
    get_siginfo, get_siginfo_raw, peek_siginfo, set_siginfo_raw, RawSigInfo, SigInfo,
};
#[cfg(target_arch = "x86_64")]
pub use state::{get_regs, get_xstate, set_regs, set_xstate, Regs};
pub use state::{get_robust_list, get_rseq_config, get_sigmask, set_sigmask, RseqConfig};
pub use wait::{wait_own, wait_own_interruptible, wait_task, WaitStatus};

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
