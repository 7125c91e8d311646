//! Running system calls inside the stopped tracee.
//!
//! A stopped thread's registers are saved, set up as for a system call with
//! the instruction pointer on a `syscall` instruction found in the vDSO, and
//! the thread is single-stepped over it. `orig_rax = -1` keeps the kernel's
//! restart logic off our registers; restoring the saved ones afterwards puts
//! back any interrupted system call to be restarted as if nothing happened.

use std::os::unix::fs::FileExt;

use selfheal_sys::ptrace::{self as pt, RawSigInfo, WaitStatus};

use crate::error::TraceError;
use crate::procfs;
use crate::tracee::{ThreadState, Tracee};
use crate::wait::{self, Report};

/// Longest an injected system call may take. Ours (mmap, munmap, brk,
/// lseek, close, …) take microseconds to milliseconds; one still running
/// after this is stuck in the kernel, and the process is killed.
pub(crate) const STEP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Signals a single-step may raise itself (the trap; a fault of the call;
/// a seccomp trap): never blocked during one, because the kernel resets
/// the program's handler of a blocked signal it raises.
pub(crate) const STEP_SYNC: [i32; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// The signal mask a system call we run inside a thread runs under: every
/// signal blocked but [`STEP_SYNC`]. A signal taken during our step is
/// out of the kernel's queue; it could only be sent again, its siginfo
/// lost and the instances of a real-time signal merged into one (a
/// checkpoint taken while a thread was held at one of several queued
/// signals took the others that way, and the program never saw them as
/// sent). Blocked, they stay queued, untouched, for the program.
pub(crate) fn step_mask() -> u64 {
    !STEP_SYNC.iter().fold(0u64, |m, &s| m | 1 << (s - 1))
}

/// Where in the scratch page `Remote::queue_back` puts a siginfo: clear
/// of the paths at its start and the results at [`RESULTS_AT`], and of
/// the arguments `signals::apply` keeps there across calls.
const REQUEUE_AT: u64 = RESULTS_AT - 128;

/// Sends `sig` to thread `tid` again when it resumes, from us (once: a
/// standard signal does not queue up twice). Its siginfo is lost: that
/// is recorded (`Tracee::siginfo_lost`) for the engine, which refuses a
/// rollback it happened in and reports it otherwise.
pub(crate) fn send_again(tracee: &mut Tracee, tid: i32, sig: i32, why: &str) {
    crate::debug(|| format!("step {tid}: signal {sig} sent again, siginfo lost: {why}"));
    tracee.siginfo_lost.push(TraceError::SiginfoLost {
        pid: tracee.pid,
        tid,
        signal: sig,
        why: why.to_string(),
    });
    if !tracee.deferred_signals.contains(&(tid, sig)) {
        tracee.deferred_signals.push((tid, sig));
    }
}

/// Finds a `syscall` instruction in the tracee and runs system calls there.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    /// Address of the bytes `0f 05` in the tracee.
    pub syscall_insn: u64,
    /// A private scratch page we mapped in the tracee for syscall arguments
    /// (paths), excluded from checkpoints.
    pub scratch: Option<u64>,
}

/// Size of the scratch area.
pub(crate) const SCRATCH_LEN: u64 = 4096;
/// Where in the scratch area system calls we run store results; strings
/// (paths) go below.
pub(crate) const RESULTS_AT: u64 = SCRATCH_LEN - 64;

/// True if `v` is exactly our scratch page.
pub(crate) fn is_scratch(v: &crate::procfs::Vma, scratch: Option<u64>) -> bool {
    scratch.is_some_and(|s| v.start == s && v.end == s + SCRATCH_LEN)
}

impl Remote {
    /// Locates a `syscall` instruction in the tracee's vDSO.
    pub fn locate(tracee: &Tracee) -> Result<Remote, TraceError> {
        let pid = tracee.pid;
        let maps = procfs::read_maps(pid).map_err(|e| TraceError::Io {
            pid,
            what: "read /proc/PID/maps",
            source: e,
        })?;
        let vdso = maps
            .iter()
            .find(|v| v.path == "[vdso]")
            .ok_or(TraceError::NoSyscallInsn { pid })?;
        let mut buf = vec![0u8; vdso.len() as usize];
        tracee
            .mem
            .read_exact_at(&mut buf, vdso.start)
            .map_err(|e| TraceError::Io {
                pid,
                what: "read the vDSO",
                source: e,
            })?;
        let at = buf
            .windows(2)
            .position(|w| w == [0x0f, 0x05])
            .ok_or(TraceError::NoSyscallInsn { pid })?;
        Ok(Remote {
            syscall_insn: vdso.start + at as u64,
            scratch: None,
        })
    }

    /// Runs system call `nr` with `args` on a stopped thread of the tracee.
    /// Returns the raw result, or the errno the tracee got.
    #[cfg(target_arch = "x86_64")]
    pub fn syscall(&self, tracee: &mut Tracee, nr: i64, args: [u64; 6]) -> Result<u64, TraceError> {
        let tid = tracee
            .injection_thread()
            .ok_or(TraceError::NoStoppedThread { pid: tracee.pid })?;
        self.syscall_on(tracee, tid, nr, args, None)
    }

    /// Runs system call `nr` on thread `tid` (in a clean ptrace stop: not
    /// a group-stop), for per-thread state. `sp`, if given, is the stack
    /// pointer during the call (`sigaltstack` refuses to change the
    /// alternate stack of a thread whose stack pointer lies on it).
    #[cfg(target_arch = "x86_64")]
    pub fn syscall_on(
        &self,
        tracee: &mut Tracee,
        tid: i32,
        nr: i64,
        args: [u64; 6],
        sp: Option<u64>,
    ) -> Result<u64, TraceError> {
        let mut again = Vec::new();
        let block = tracee
            .queued_back
            .iter()
            .filter(|(t, _)| *t == tid)
            .fold(0, |m, (_, b)| m | b);
        let r = self.run_on(tracee, tid, nr, args, sp, block, &mut again);
        if !again.is_empty() && !tracee.is_gone() {
            if self.scratch.is_some() {
                self.queue_back(tracee, tid, again);
            } else {
                // The calls that map the scratch page: queued back once
                // it is there (see `Remote::scratch`).
                tracee.unqueued.extend(again.into_iter().map(|i| (tid, i)));
            }
        }
        r
    }

    /// Queues signals a step took (sent from outside while it ran, a
    /// second one for a thread already held at one) back to thread `tid`,
    /// each with its own siginfo: `rt_tgsigqueueinfo` run inside the
    /// thread (a thread may queue any siginfo to itself), the signal
    /// blocked meanwhile, and those queued back before it too (each
    /// step would take them again). Signals a queue-back step takes are
    /// queued back in turn: only the few a step does not block can be
    /// taken, and each stays blocked once back, so this ends. Only where
    /// that cannot be done (the call failed) is one sent again from us
    /// on resume, its siginfo lost, which is recorded (see
    /// [`send_again`]). Until the thread resumes, our steps keep them
    /// blocked (`Tracee::queued_back`).
    #[cfg(target_arch = "x86_64")]
    fn queue_back(&self, tracee: &mut Tracee, tid: i32, infos: Vec<RawSigInfo>) {
        let pid = tracee.pid;
        let Some(scratch) = self.scratch else {
            for info in infos {
                send_again(
                    tracee,
                    tid,
                    info.signo(),
                    "no scratch page to queue it back",
                );
            }
            return;
        };
        let mut work = std::collections::VecDeque::from(infos);
        while let Some(info) = work.pop_front() {
            let sig = info.signo();
            let at = scratch + REQUEUE_AT;
            if let Err(e) = tracee.mem.write_all_at(&info.0, at) {
                send_again(tracee, tid, sig, &format!("write the scratch page: {e}"));
                continue;
            }
            let args = [pid as u64, tid as u64, sig as u64, at, 0, 0];
            let mut more = Vec::new();
            let bit = 1u64 << (sig - 1);
            let block = tracee
                .queued_back
                .iter()
                .filter(|(t, _)| *t == tid)
                .fold(bit, |m, (_, b)| m | b);
            let nr = libc::SYS_rt_tgsigqueueinfo;
            match self.run_on(tracee, tid, nr, args, None, block, &mut more) {
                Ok(_) => tracee.queued_back.push((tid, bit)),
                Err(e) => send_again(tracee, tid, sig, &format!("rt_tgsigqueueinfo: {e}")),
            }
            if tracee.is_gone() {
                return;
            }
            work.extend(more);
        }
    }

    /// [`Remote::syscall_on`] with signals in `block` blocked too, adding
    /// the signals the step took and did not hold to `again`.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn run_on(
        &self,
        tracee: &mut Tracee,
        tid: i32,
        nr: i64,
        args: [u64; 6],
        sp: Option<u64>,
        block: u64,
        again: &mut Vec<RawSigInfo>,
    ) -> Result<u64, TraceError> {
        let pid = tracee.pid;
        let saved = pt::get_regs(tid).map_err(|e| TraceError::sys(pid, e))?;
        // A thread held at a signal delivers it on resume with the siginfo
        // of its last stop, which our step replaces with the trap's: keep
        // the signal's, to put back.
        let held = match tracee.threads.get(&tid) {
            Some(ThreadState::Stopped { pending }) if *pending != 0 => {
                Some(pt::get_siginfo_raw(tid).map_err(|e| TraceError::sys(pid, e))?)
            }
            _ => None,
        };
        let mut regs = saved;
        if let Some(sp) = sp {
            regs.rsp = sp;
        }
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX;
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs.r10 = args[3];
        regs.r8 = args[4];
        regs.r9 = args[5];
        regs.rip = self.syscall_insn;
        // The program's own mask (GETSIGMASK gives the one a sigsuspend
        // or ppoll interrupted by our stop puts back), put back below.
        // SETSIGMASK drops such a call's temporary mask: the call, which
        // our stop interrupted, sets it again as it restarts, but a
        // signal the two masks treat differently, pending meanwhile, is
        // taken under the wrong one; the engine runs no call in such a
        // thread (see `waitmask`).
        let mask = pt::get_sigmask(tid).map_err(|e| TraceError::sys(pid, e))?;
        pt::set_sigmask(tid, step_mask() | block).map_err(|e| TraceError::sys(pid, e))?;
        if let Err(e) = pt::set_regs(tid, &regs) {
            let _ = pt::set_sigmask(tid, mask);
            return Err(TraceError::sys(pid, e));
        }
        tracee.injected += 1;
        let mut met = None;
        let result = self.step_over(tracee, tid, held.is_none().then_some(&mut met), again);
        // Put the thread back whatever happened (unless it died); the
        // step's own error, if any, says more than this one.
        if !tracee.is_gone() {
            let back = pt::set_regs(tid, &saved).and_then(|()| pt::set_sigmask(tid, mask));
            if let Err(e) = back {
                crate::debug(|| format!("remote {nr} on {tid}: {result:?}, then put back: {e}"));
                result?;
                return Err(TraceError::sys(pid, e));
            }
            // Held at the signal (held before, or met during the step),
            // with its own siginfo: the step ended in the trap's
            // signal-delivery-stop, where it can be injected on resume.
            if let Some(info) = held.or(met) {
                if result.is_ok() {
                    pt::set_siginfo_raw(tid, &info).map_err(|e| TraceError::sys(pid, e))?;
                    tracee.set_pending(tid, info.signo());
                }
            }
        }
        let rax = result?;
        let ret = rax as i64;
        if (-4095..0).contains(&ret) {
            return Err(TraceError::Remote {
                pid,
                nr,
                errno: -ret as i32,
            });
        }
        Ok(rax)
    }

    /// Single-steps `tid` over the `syscall` instruction. Reports of other
    /// tasks met meanwhile (only deaths: every other thread is stopped) are
    /// handled and their notices kept for the engine. Never waits on `tid`
    /// alone: a killed leader is reported only after every other thread was
    /// reaped, by us. The wait blocks (polling would take the CPU from the
    /// thread we wait for); the watchdog kills the process if the call is
    /// still running at the deadline (its thread would come back into the
    /// vDSO with our registers: it must never run on), which ends the wait,
    /// and interrupts the wait if the process cannot act on the kill (see
    /// [`crate::wait`]): [`TraceError::StepKilled`] either way.
    #[cfg(target_arch = "x86_64")]
    fn step_over(
        &self,
        tracee: &mut Tracee,
        tid: i32,
        met: Option<&mut Option<RawSigInfo>>,
        again: &mut Vec<RawSigInfo>,
    ) -> Result<u64, TraceError> {
        let started = std::time::Instant::now();
        tracee.watchdog.arm(started + tracee.step_limit);
        let r = self.step_over_armed(tracee, tid, started, met, again);
        if tracee.watchdog.disarm() {
            crate::debug(|| {
                format!(
                    "step of {tid} outlived {:?}: killed, ended: {}",
                    tracee.step_limit,
                    tracee.is_gone()
                )
            });
            return Err(TraceError::StepKilled {
                pid: tracee.pid,
                tid,
                limit: tracee.step_limit,
                ended: tracee.is_gone(),
            });
        }
        r
    }

    #[cfg(target_arch = "x86_64")]
    fn step_over_armed(
        &self,
        tracee: &mut Tracee,
        tid: i32,
        started: std::time::Instant,
        mut met: Option<&mut Option<RawSigInfo>>,
        again: &mut Vec<RawSigInfo>,
    ) -> Result<u64, TraceError> {
        let pid = tracee.pid;
        pt::singlestep(tid, 0).map_err(|e| TraceError::sys(pid, e))?;
        loop {
            let rep = match wait::block(&tracee.watchdog) {
                Ok(Some(r)) => r,
                // Given up: killed, not ended. The caller says so.
                Ok(None) => return Err(TraceError::NoStoppedThread { pid }),
                Err(e) => return Err(TraceError::sys(pid, e)),
            };
            let done = WaitStatus::Stopped {
                sig: libc::SIGTRAP,
                event: 0,
            };
            if rep != Report::Task(tid, done) {
                crate::debug(|| format!("step {tid}: {rep:?} after {:?}", started.elapsed()));
            }
            let st = match rep {
                Report::Task(t, st) if t == tid => st,
                Report::Task(t, st) => {
                    let mut notices = std::mem::take(&mut tracee.deferred_notices);
                    let r = tracee.handle(t, st, &mut notices);
                    tracee.deferred_notices = notices;
                    r?;
                    if let Some(status) = tracee.exit_status {
                        return Err(TraceError::Exited { pid, status });
                    }
                    continue;
                }
                Report::NoTasks | Report::Nothing => {
                    return Err(TraceError::NoStoppedThread { pid })
                }
            };
            match st {
                WaitStatus::Stopped {
                    sig: libc::SIGTRAP,
                    event: 0,
                } => {
                    let regs = pt::get_regs(tid).map_err(|e| TraceError::sys(pid, e))?;
                    if regs.rip == self.syscall_insn + 2 {
                        return Ok(regs.rax);
                    }
                    return Err(TraceError::StepWentAstray { pid, rip: regs.rip });
                }
                // A fault raised by the kernel during our step (say an
                // rseq area that is gone): stepping again would fault
                // again, for ever.
                WaitStatus::Stopped { sig, event: 0 }
                    if [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE].contains(&sig)
                        && pt::get_siginfo(tid).is_ok_and(|i| i.code > 0) =>
                {
                    let rip = pt::get_regs(tid).map_or(0, |r| r.rip);
                    return Err(TraceError::StepWentAstray { pid, rip });
                }
                // Another signal arrived first; the syscall has not run yet.
                // Every signal but those a step raises is blocked (see
                // `step_mask`), so this is one of those, sent from
                // outside. The thread holds none: hold this one, siginfo
                // and all (delivered on resume, as it was about to be).
                // Else, or a crash signal (the engine drops a held one at
                // a rollback), queue it back once we are done (see
                // `queue_back`), and step again.
                WaitStatus::Stopped { sig, event: 0 } => {
                    let slot = met
                        .as_deref_mut()
                        .filter(|m| m.is_none() && !crate::engine::CRASH_SIGNALS.contains(&sig));
                    match (slot, pt::get_siginfo_raw(tid)) {
                        (Some(m), Ok(info)) => *m = Some(info),
                        (None, Ok(info)) => again.push(info),
                        (_, Err(e)) => {
                            send_again(tracee, tid, sig, &format!("PTRACE_GETSIGINFO: {e}"))
                        }
                    }
                }
                // A leftover interrupt stop: step again.
                WaitStatus::Stopped { .. } => {}
                WaitStatus::Exited(_) | WaitStatus::Signaled { .. } => {
                    let mut notices = std::mem::take(&mut tracee.deferred_notices);
                    let r = tracee.handle(tid, st, &mut notices);
                    tracee.deferred_notices = notices;
                    r?;
                    return Err(TraceError::Exited { pid, status: st });
                }
            }
            pt::singlestep(tid, 0).map_err(|e| TraceError::sys(pid, e))?;
        }
    }

    /// Maps the scratch page if not done yet and returns its address.
    ///
    /// It is writable (system calls we run store results there) and marked
    /// MADV_DONTFORK, so its flags differ from the mappings programs make:
    /// the kernel does not merge it with a neighbour, and it stays exactly
    /// one page we can leave out of checkpoints.
    pub fn scratch(&mut self, tracee: &mut Tracee) -> Result<u64, TraceError> {
        if let Some(a) = self.scratch {
            return Ok(a);
        }
        let addr = self.syscall(
            tracee,
            libc::SYS_mmap,
            [
                0,
                SCRATCH_LEN,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        self.syscall(
            tracee,
            libc::SYS_madvise,
            [addr, SCRATCH_LEN, libc::MADV_DONTFORK as u64, 0, 0, 0],
        )?;
        self.scratch = Some(addr);
        // Signals the two calls above took wait for it (see `syscall_on`).
        let taken = std::mem::take(&mut tracee.unqueued);
        for (tid, info) in taken {
            self.queue_back(tracee, tid, vec![info]);
        }
        Ok(addr)
    }

    /// Copies a NUL-terminated string into the scratch page; returns its
    /// address in the tracee.
    pub fn put_cstr(&mut self, tracee: &mut Tracee, s: &str) -> Result<u64, TraceError> {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        self.put_bytes(tracee, &bytes).map_err(|e| match e {
            TraceError::Remote { pid, errno, .. } => TraceError::Remote {
                pid,
                nr: libc::SYS_openat,
                errno,
            },
            e => e,
        })
    }

    /// Copies `bytes` to the start of the scratch page; returns its address
    /// in the tracee.
    pub fn put_bytes(&mut self, tracee: &mut Tracee, bytes: &[u8]) -> Result<u64, TraceError> {
        let addr = self.scratch(tracee)?;
        if bytes.len() as u64 > RESULTS_AT {
            return Err(TraceError::Remote {
                pid: tracee.pid,
                nr: 0,
                errno: libc::ENAMETOOLONG,
            });
        }
        tracee
            .mem
            .write_all_at(bytes, addr)
            .map_err(|e| TraceError::Io {
                pid: tracee.pid,
                what: "write the scratch page",
                source: e,
            })?;
        Ok(addr)
    }
}

#[cfg(test)]
mod frozen_tests;
#[cfg(test)]
pub(crate) mod tests;
