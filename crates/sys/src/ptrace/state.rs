//! Per-thread state a checkpoint saves and restores on a stopped task:
//! registers, the extended FPU/vector state, the blocked-signal mask, the
//! rseq registration and the robust-futex list.

use super::{ptrace, PTRACE_GETSIGMASK, PTRACE_GET_RSEQ_CONFIGURATION, PTRACE_SETSIGMASK};
#[cfg(target_arch = "x86_64")]
use super::{PTRACE_GETREGS, PTRACE_GETREGSET, PTRACE_SETREGS, PTRACE_SETREGSET};
use crate::error::{Result, SysError};

/// `NT_X86_XSTATE`: the regset holding the whole XSAVE area (FPU, SSE, AVX…).
#[cfg(target_arch = "x86_64")]
const NT_X86_XSTATE: i64 = 0x202;

/// The general-purpose registers as the kernel's `struct user_regs_struct`.
#[cfg(target_arch = "x86_64")]
pub type Regs = libc::user_regs_struct;

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
