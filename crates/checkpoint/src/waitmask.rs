//! Threads waiting under a temporary signal mask (`sigsuspend`, `ppoll`,
//! `pselect6` with a mask).
//!
//! Such a call installs its mask for the wait only and keeps the thread's
//! normal one to put back when the wait ends. Any ptrace stop of the
//! thread interrupts the wait, and on resume the kernel (x86
//! `arch_do_signal_or_restart`) sets the call up to restart and puts the
//! normal mask back *before* the thread re-enters the call: a signal
//! pending then that the temporary mask blocks and the normal one lets in
//! is delivered in that gap, inside the program's wait. A bare
//! `PTRACE_INTERRUPT` and `PTRACE_CONT` does it, with no mask touched by
//! us (sigwait.c: "AB" instead of "BA"); no ptrace request sets the mask
//! the call restores. So the engine never resumes a thread into that
//! state: a checkpoint waits while a thread sleeps in such a wait with a
//! signal pending that its mask blocks ([`before_stop`]), and a rollback
//! that would resume one so is refused ([`after_rollback`]). (A pending
//! signal both masks block is harmless, but the normal mask cannot be
//! read without a stop, so before one every blocked pending signal
//! counts.) A stop that finds the thread leaving its wait, or such a
//! signal arrived between that look and the stop, ends with the thread
//! resumed untouched ([`after_stop`]): no system call of ours may run in
//! it then. Left: a signal arriving in the microseconds between the look
//! and the stop, with none to end the wait, is let in by the stop itself.

use std::os::unix::fs::FileExt;

use selfheal_sys::ptrace as pt;

use crate::tracee::{ThreadState, Tracee};

/// `-ERESTARTNOHAND`: what an interrupted wait leaves in `rax`.
const ERESTARTNOHAND: i64 = -514;

/// A thread that resuming would hand a signal its wait's mask blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hazard {
    /// The thread.
    pub tid: i32,
    /// The lowest such signal.
    pub signal: i32,
}

/// Where the temporary mask of system call `nr` with `args` is: the
/// address of the sigset, or of pselect6's `{sigset *, size}` pair.
enum MaskArg {
    Direct(u64),
    Indirect(u64),
}

fn mask_arg(nr: i64, args: &[u64; 6]) -> Option<MaskArg> {
    let at = match nr {
        libc::SYS_rt_sigsuspend => MaskArg::Direct(args[0]),
        libc::SYS_ppoll => MaskArg::Direct(args[3]),
        libc::SYS_pselect6 => MaskArg::Indirect(args[5]),
        _ => return None,
    };
    match at {
        MaskArg::Direct(0) | MaskArg::Indirect(0) => None,
        at => Some(at),
    }
}

fn lowest(bits: u64) -> Option<i32> {
    (bits != 0).then(|| bits.trailing_zeros() as i32 + 1)
}

/// Before stopping the running process (reads /proc only): a thread
/// asleep in a wait with a temporary mask and a signal pending that the
/// mask in force blocks.
pub(crate) fn before_stop(t: &Tracee) -> Option<Hazard> {
    let pid = t.pid;
    t.threads.iter().find_map(|(&tid, st)| {
        if !matches!(st, ThreadState::Running) {
            return None;
        }
        let (nr, args) = crate::procfs::read_syscall(pid, tid).ok()??;
        mask_arg(nr, &args)?;
        let (blocked, queued, shared) = crate::procfs::read_blocked_and_queued(pid, tid).ok()?;
        let signal = lowest((queued | shared) & blocked)?;
        Some(Hazard { tid, signal })
    })
}

/// After stopping, before any system call runs inside (each sets the
/// thread's mask and so drops the one its wait restores): a stopped
/// thread whose wait put a temporary mask in force (the mask in force
/// differs from the one `PTRACE_GETSIGMASK` reports, the one to restore)
/// with a signal pending that one of the two masks blocks and the other
/// lets in. Resumed untouched, the kernel takes such a signal under the
/// mask in force, as it would have without the stop, when one that mask
/// lets in is pending too (the wait's end): any call of ours would undo
/// that. (With none, the stop has already changed what happens: see the
/// module comment.)
pub(crate) fn after_stop(t: &Tracee) -> Option<Hazard> {
    let pid = t.pid;
    t.threads.iter().find_map(|(&tid, st)| {
        if !matches!(st, ThreadState::Stopped { .. }) {
            return None;
        }
        let (blocked, queued, shared) = crate::procfs::read_blocked_and_queued(pid, tid).ok()?;
        let normal = pt::get_sigmask(tid).ok()?;
        let signal = lowest((queued | shared) & (blocked ^ normal))?;
        Some(Hazard { tid, signal })
    })
}

/// The temporary mask of the wait a stopped thread with registers `regs`
/// was interrupted in and restarts on resume (read from the program's
/// memory); None if it is in no such wait.
pub(crate) fn interrupted_wait_mask(t: &Tracee, regs: &pt::Regs) -> Option<u64> {
    if regs.rax as i64 != ERESTARTNOHAND {
        return None;
    }
    let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
    let read = |at: u64| {
        let mut b = [0u8; 8];
        t.mem.read_exact_at(&mut b, at).ok()?;
        Some(u64::from_ne_bytes(b))
    };
    match mask_arg(regs.orig_rax as i64, &args)? {
        MaskArg::Direct(at) => read(at),
        MaskArg::Indirect(at) => match read(at)? {
            0 => None,
            set => read(set),
        },
    }
}

/// A thread of a checkpoint (`tid`, its normal mask, the temporary mask
/// of the wait it restarts, if any) that a rollback would resume with a
/// signal pending (`pending(tid)`: the thread's and the process's queue
/// after the rollback) that the wait's mask blocks and the normal one
/// lets in.
pub(crate) fn after_rollback(
    threads: impl IntoIterator<Item = (i32, u64, Option<u64>)>,
    pending: impl Fn(i32) -> u64,
) -> Option<Hazard> {
    threads.into_iter().find_map(|(tid, normal, wait)| {
        let signal = lowest(pending(tid) & wait? & !normal)?;
        Some(Hazard { tid, signal })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bit(sig: i32) -> u64 {
        1 << (sig - 1)
    }

    #[test]
    fn only_a_signal_the_wait_blocks_and_the_normal_mask_lets_in_counts() {
        let (a, b) = (libc::SIGUSR1, libc::SIGUSR2);
        // sigwait.c: normal mask {B}, wait mask {A}.
        let threads = [(7, bit(b), Some(bit(a)))];
        assert_eq!(
            after_rollback(threads, |_| bit(a)),
            Some(Hazard { tid: 7, signal: a })
        );
        // B ends the wait as it should; A blocked by both is harmless.
        assert_eq!(after_rollback(threads, |_| bit(b)), None);
        assert_eq!(
            after_rollback([(7, bit(a), Some(bit(a)))], |_| bit(a)),
            None
        );
        // Not in a wait.
        assert_eq!(after_rollback([(7, bit(b), None)], |_| bit(a)), None);
    }

    #[test]
    fn the_mask_argument_of_each_wait() {
        let args = [1, 2, 3, 4, 5, 6];
        assert!(matches!(
            mask_arg(libc::SYS_rt_sigsuspend, &args),
            Some(MaskArg::Direct(1))
        ));
        assert!(matches!(
            mask_arg(libc::SYS_ppoll, &args),
            Some(MaskArg::Direct(4))
        ));
        assert!(matches!(
            mask_arg(libc::SYS_pselect6, &args),
            Some(MaskArg::Indirect(6))
        ));
        // ppoll without a mask, and a call that takes none.
        assert!(mask_arg(libc::SYS_ppoll, &[1, 2, 3, 0, 5, 6]).is_none());
        assert!(mask_arg(libc::SYS_poll, &args).is_none());
    }
}
