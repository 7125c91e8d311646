//! Saving and restoring every thread's CPU state.

use selfheal_sys::ptrace as pt;

use crate::error::TraceError;

/// One thread's registers as of a checkpoint.
#[derive(Clone)]
pub(crate) struct ThreadSnap {
    /// Thread id.
    pub tid: i32,
    /// General-purpose registers (fs/gs base included).
    pub regs: pt::Regs,
    /// XSAVE area: x87, SSE, AVX, AVX-512… state.
    pub xstate: Vec<u8>,
    /// Blocked-signal mask.
    pub sigmask: u64,
}

/// Captures the state of stopped threads `tids`.
pub(crate) fn capture(
    pid: i32,
    tids: &[i32],
    reuse: Vec<ThreadSnap>,
) -> Result<Vec<ThreadSnap>, TraceError> {
    let mut spare = reuse;
    let mut out = Vec::with_capacity(tids.len());
    for &tid in tids {
        let mut xstate = spare.pop().map(|s| s.xstate).unwrap_or_default();
        pt::get_xstate(tid, &mut xstate).map_err(|e| TraceError::sys(pid, e))?;
        out.push(ThreadSnap {
            tid,
            regs: pt::get_regs(tid).map_err(|e| TraceError::sys(pid, e))?,
            xstate,
            sigmask: pt::get_sigmask(tid).map_err(|e| TraceError::sys(pid, e))?,
        });
    }
    Ok(out)
}

/// Puts saved state back into the (stopped) threads.
pub(crate) fn restore(pid: i32, snaps: &[ThreadSnap]) -> Result<(), TraceError> {
    for s in snaps {
        pt::set_regs(s.tid, &s.regs).map_err(|e| TraceError::sys(pid, e))?;
        pt::set_xstate(s.tid, &s.xstate).map_err(|e| TraceError::sys(pid, e))?;
        pt::set_sigmask(s.tid, s.sigmask).map_err(|e| TraceError::sys(pid, e))?;
    }
    Ok(())
}
