//! The signal a stopped task is stopped for, and the signals queued for it:
//! read, rewritten, or listed with their whole `siginfo_t`.

use super::{
    ptrace, PTRACE_GETSIGINFO, PTRACE_PEEKSIGINFO, PTRACE_PEEKSIGINFO_SHARED, PTRACE_SETSIGINFO,
};
use crate::error::Result;

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
