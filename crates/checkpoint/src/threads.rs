//! Saving and restoring every thread's CPU state, and the per-thread kernel
//! state user memory depends on.
//!
//! Registers, the FPU/vector state and the signal mask come through ptrace.
//! Besides them the kernel keeps, per thread, pointers into user memory
//! that a rollback must put back with that memory: the rseq registration
//! (a thread caught before glibc registered it, rolled back after, runs the
//! registration again and gets EBUSY: glibc aborts with "rseq registration
//! failed"), the robust-futex list, the address cleared at thread exit
//! (`set_tid_address`) and the alternate signal stack. The first two are
//! read through ptrace and `get_robust_list`; the others only by the thread
//! itself, so with two system calls run inside it.

use std::os::unix::fs::FileExt;

use selfheal_sys::ptrace::{self as pt, RseqConfig};

use crate::error::TraceError;
use crate::remote::Remote;
use crate::tracee::{ThreadState, Tracee};

/// One thread's registers as of a checkpoint.
#[derive(Clone)]
pub(crate) struct ThreadSnap {
    /// Thread id.
    pub tid: i32,
    /// General-purpose registers (fs/gs base included).
    pub regs: pt::Regs,
    /// XSAVE area: x87, SSE, AVX, AVX-512… state.
    pub xstate: Vec<u8>,
    /// Blocked-signal mask (the normal one, also in a wait that put a
    /// temporary one in force).
    pub sigmask: u64,
    /// The temporary mask of the wait (sigsuspend, ppoll, pselect6) the
    /// thread was stopped in and restarts on resume; None if in none.
    pub wait_mask: Option<u64>,
    /// Kernel state pointing into user memory; None if it could not be
    /// read (the thread was in a job-control stop).
    pub kernel: Option<KernelState>,
}

/// An alternate signal stack (`stack_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AltStack {
    /// Base.
    pub sp: u64,
    /// `SS_DISABLE`, `SS_AUTODISARM` (`SS_ONSTACK`, which only says where
    /// the thread runs now, is left out).
    pub flags: i32,
    /// Size.
    pub size: u64,
}

/// Per-thread kernel state that points into user memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelState {
    /// rseq registration; None if the kernel cannot report it (< 5.13).
    pub rseq: Option<RseqConfig>,
    /// Robust-futex list head and length.
    pub robust_list: (u64, u64),
    /// Address the kernel clears (and futex-wakes) when the thread exits;
    /// None if the kernel cannot report it (no CONFIG_CHECKPOINT_RESTORE,
    /// or a seccomp filter of the program forbids asking).
    pub tid_address: Option<u64>,
    /// Alternate signal stack.
    pub altstack: AltStack,
}

/// `RSEQ_FLAG_UNREGISTER`.
const RSEQ_FLAG_UNREGISTER: u64 = 1;
/// `SS_ONSTACK`: reported, never set.
const SS_ONSTACK: i32 = 1;
/// `PR_GET_TID_ADDRESS`.
const PR_GET_TID_ADDRESS: u64 = 40;
/// Where in the scratch page system calls store results: after the room
/// paths use (they are written from offset 0).
const OUT_OFFSET: u64 = crate::remote::RESULTS_AT;

/// Captures the state of stopped threads `tids`. `known`: threads whose
/// break-free kernel state (clear-tid address, alternate stack) cannot have
/// changed since it was read, with what was read; theirs is taken from
/// there instead of running two calls inside each thread.
pub(crate) fn capture(
    t: &mut Tracee,
    remote: &Remote,
    tids: &[i32],
    reuse: Vec<ThreadSnap>,
    known: &[(i32, KernelState)],
) -> Result<Vec<ThreadSnap>, TraceError> {
    let pid = t.pid;
    let mut spare = reuse;
    let mut out = Vec::with_capacity(tids.len());
    for &tid in tids {
        let mut xstate = spare.pop().map(|s| s.xstate).unwrap_or_default();
        pt::get_xstate(tid, &mut xstate).map_err(|e| TraceError::sys(pid, e))?;
        let regs = pt::get_regs(tid).map_err(|e| TraceError::sys(pid, e))?;
        out.push(ThreadSnap {
            tid,
            regs,
            wait_mask: crate::waitmask::interrupted_wait_mask(t, &regs),
            xstate,
            sigmask: pt::get_sigmask(tid).map_err(|e| TraceError::sys(pid, e))?,
            kernel: match known.iter().find(|(k, _)| *k == tid) {
                Some((_, then)) => kernel_state_known(t, tid, then)?,
                None => kernel_state(t, remote, tid)?,
            },
        });
    }
    Ok(out)
}

/// Reads `tid`'s kernel state; None if the thread is in a job-control
/// stop (running system calls in it would end that stop).
pub(crate) fn kernel_state(
    t: &mut Tracee,
    remote: &Remote,
    tid: i32,
) -> Result<Option<KernelState>, TraceError> {
    let pid = t.pid;
    if !matches!(t.threads.get(&tid), Some(ThreadState::Stopped { .. })) {
        return Ok(None);
    }
    let (rseq, robust_list) = ptrace_state(pid, tid)?;
    let Some(scratch) = remote.scratch else {
        return Ok(None);
    };
    let out = scratch + OUT_OFFSET;
    let args = [PR_GET_TID_ADDRESS, out, 0, 0, 0, 0];
    let tid_address_known = match remote.syscall_on(t, tid, libc::SYS_prctl, args, None) {
        Ok(_) => true,
        Err(TraceError::Remote { .. }) => false,
        Err(e) => return Err(e),
    };
    remote.syscall_on(
        t,
        tid,
        libc::SYS_sigaltstack,
        [0, out + 8, 0, 0, 0, 0],
        None,
    )?;
    let mut buf = [0u8; 32];
    t.mem
        .read_exact_at(&mut buf, out)
        .map_err(|e| TraceError::Io {
            pid,
            what: "read the scratch page",
            source: e,
        })?;
    let word = |i: usize| u64::from_ne_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    // stack_t: ss_sp (8), ss_flags (4, then 4 of padding), ss_size (8).
    Ok(Some(KernelState {
        rseq,
        robust_list,
        tid_address: tid_address_known.then(|| word(0)),
        altstack: AltStack {
            sp: word(8),
            flags: (word(16) as u32 as i32) & !SS_ONSTACK,
            size: word(24),
        },
    }))
}

/// [`kernel_state`] for a thread whose clear-tid address and alternate
/// stack are known not to have changed since `then`: only the parts
/// ptrace reports without a call inside the thread are read again.
fn kernel_state_known(
    t: &mut Tracee,
    tid: i32,
    then: &KernelState,
) -> Result<Option<KernelState>, TraceError> {
    if !matches!(t.threads.get(&tid), Some(ThreadState::Stopped { .. })) {
        return Ok(None);
    }
    let (rseq, robust_list) = ptrace_state(t.pid, tid)?;
    Ok(Some(KernelState {
        rseq,
        robust_list,
        ..*then
    }))
}

/// The rseq registration and robust-futex list, which ptrace reports.
fn ptrace_state(pid: i32, tid: i32) -> Result<(Option<RseqConfig>, (u64, u64)), TraceError> {
    let sys = |e| TraceError::sys(pid, e);
    let rseq = match pt::get_rseq_config(tid) {
        Ok(c) => Some(c),
        // Before 5.13 the kernel cannot say.
        Err(e) if e.errno.0 == libc::EIO => None,
        Err(e) => return Err(sys(e)),
    };
    let robust_list = pt::get_robust_list(tid).map_err(sys)?;
    Ok((rseq, robust_list))
}

/// First step of a rollback, before any mapping changes: ends `tid`'s
/// rseq registration, if it has one. The kernel reads and writes the rseq
/// area on every return to user space, each single-step of an injected
/// call included: with the area unmapped (a layout restore removes memory
/// mapped since the checkpoint, TLS included) every step would end in
/// SIGSEGV. [`restore_kernel_state`] registers the checkpoint's again.
pub(crate) fn release_rseq(
    t: &mut Tracee,
    remote: &Remote,
    tid: i32,
    now: &KernelState,
) -> Result<(), TraceError> {
    if let Some(b) = now.rseq.filter(|b| b.abi_pointer != 0) {
        let args = [
            b.abi_pointer,
            b.abi_size as u64,
            RSEQ_FLAG_UNREGISTER,
            b.signature as u64,
            0,
            0,
        ];
        remote.syscall_on(t, tid, libc::SYS_rseq, args, None)?;
    }
    Ok(())
}

/// Puts `then` back into thread `tid`, which had `now` before
/// [`release_rseq`]; returns how many kinds of state changed. The thread
/// must be in a clean stop, memory already restored.
pub(crate) fn restore_kernel_state(
    t: &mut Tracee,
    remote: &Remote,
    tid: i32,
    then: &KernelState,
    now: &KernelState,
) -> Result<usize, TraceError> {
    let mut ops = 0;
    if let Some(a) = then.rseq.filter(|a| a.abi_pointer != 0) {
        let args = [
            a.abi_pointer,
            a.abi_size as u64,
            a.flags as u64,
            a.signature as u64,
            0,
            0,
        ];
        remote.syscall_on(t, tid, libc::SYS_rseq, args, None)?;
    }
    if then.rseq != now.rseq {
        ops += 1;
    }
    if then.robust_list != now.robust_list {
        let (head, len) = then.robust_list;
        remote.syscall_on(
            t,
            tid,
            libc::SYS_set_robust_list,
            [head, len, 0, 0, 0, 0],
            None,
        )?;
        ops += 1;
    }
    if let (Some(a), Some(b)) = (then.tid_address, now.tid_address) {
        if a != b {
            let args = [a, 0, 0, 0, 0, 0];
            remote.syscall_on(t, tid, libc::SYS_set_tid_address, args, None)?;
            ops += 1;
        }
    }
    if then.altstack != now.altstack {
        let pid = t.pid;
        let scratch = remote.scratch.ok_or(TraceError::NoStoppedThread { pid })?;
        let out = scratch + OUT_OFFSET;
        let a = then.altstack;
        let mut buf = [0u8; 24];
        buf[0..8].copy_from_slice(&a.sp.to_ne_bytes());
        buf[8..12].copy_from_slice(&a.flags.to_ne_bytes());
        buf[16..24].copy_from_slice(&a.size.to_ne_bytes());
        t.mem.write_all_at(&buf, out).map_err(|e| TraceError::Io {
            pid,
            what: "write the scratch page",
            source: e,
        })?;
        // The kernel refuses to change the alternate stack of a thread
        // running on it: during the call the thread's stack pointer is the
        // scratch page's end, on no alternate stack.
        let sp = Some(scratch + crate::remote::SCRATCH_LEN);
        remote.syscall_on(t, tid, libc::SYS_sigaltstack, [out, 0, 0, 0, 0, 0], sp)?;
        ops += 1;
    }
    Ok(ops)
}

/// Puts saved registers back into the (stopped) threads.
pub(crate) fn restore(pid: i32, snaps: &[ThreadSnap]) -> Result<(), TraceError> {
    for s in snaps {
        pt::set_regs(s.tid, &s.regs).map_err(|e| TraceError::sys(pid, e))?;
        pt::set_xstate(s.tid, &s.xstate).map_err(|e| TraceError::sys(pid, e))?;
        pt::set_sigmask(s.tid, s.sigmask).map_err(|e| TraceError::sys(pid, e))?;
    }
    Ok(())
}
