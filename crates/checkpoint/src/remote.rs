//! Running system calls inside the stopped tracee.
//!
//! A stopped thread's registers are saved, set up as for a system call with
//! the instruction pointer on a `syscall` instruction found in the vDSO, and
//! the thread is single-stepped over it. `orig_rax = -1` keeps the kernel's
//! restart logic off our registers; restoring the saved ones afterwards puts
//! back any interrupted system call to be restarted as if nothing happened.

use std::os::unix::fs::FileExt;

use selfheal_sys::ptrace::{self as pt, WaitStatus};

use crate::error::TraceError;
use crate::procfs;
use crate::tracee::{Notice, Tracee};

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
        let pid = tracee.pid;
        let tid = tracee
            .injection_thread()
            .ok_or(TraceError::NoStoppedThread { pid })?;
        let saved = pt::get_regs(tid).map_err(|e| TraceError::sys(pid, e))?;
        let mut regs = saved;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX;
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs.r10 = args[3];
        regs.r8 = args[4];
        regs.r9 = args[5];
        regs.rip = self.syscall_insn;
        pt::set_regs(tid, &regs).map_err(|e| TraceError::sys(pid, e))?;
        let result = self.step_over(tracee, tid);
        // Put the thread back whatever happened (unless it died).
        if !tracee.is_gone() {
            pt::set_regs(tid, &saved).map_err(|e| TraceError::sys(pid, e))?;
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

    #[cfg(target_arch = "x86_64")]
    fn step_over(&self, tracee: &mut Tracee, tid: i32) -> Result<u64, TraceError> {
        let pid = tracee.pid;
        loop {
            pt::singlestep(tid, 0).map_err(|e| TraceError::sys(pid, e))?;
            let (_, st) = pt::wait_task(tid, false)
                .map_err(|e| TraceError::sys(pid, e))?
                .ok_or(TraceError::NoStoppedThread { pid })?;
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
                // Another signal arrived first; the syscall has not run yet.
                // Keep the signal for after we are done and step again.
                WaitStatus::Stopped { sig, event: 0 } => tracee.deferred_signals.push((tid, sig)),
                // A leftover interrupt stop: step again.
                WaitStatus::Stopped { .. } => {}
                WaitStatus::Exited(_) | WaitStatus::Signaled { .. } => {
                    let mut notices: Vec<Notice> = Vec::new();
                    tracee.handle(tid, st, &mut notices)?;
                    return Err(TraceError::Exited { pid, status: st });
                }
            }
        }
    }

    /// Maps the scratch page if not done yet and returns its address.
    ///
    /// It is read-only (we write it through /proc/PID/mem) and marked
    /// MADV_DONTFORK, so its flags differ from any mapping the program makes:
    /// the kernel never merges it with a neighbour, and it stays exactly one
    /// page we can leave out of checkpoints.
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
                libc::PROT_READ as u64,
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
        Ok(addr)
    }

    /// Copies a NUL-terminated string into the scratch page; returns its
    /// address in the tracee.
    pub fn put_cstr(&mut self, tracee: &mut Tracee, s: &str) -> Result<u64, TraceError> {
        let addr = self.scratch(tracee)?;
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        if bytes.len() as u64 > SCRATCH_LEN {
            return Err(TraceError::Remote {
                pid: tracee.pid,
                nr: libc::SYS_openat,
                errno: libc::ENAMETOOLONG,
            });
        }
        tracee
            .mem
            .write_all_at(&bytes, addr)
            .map_err(|e| TraceError::Io {
                pid: tracee.pid,
                what: "write the scratch page",
                source: e,
            })?;
        Ok(addr)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::launch::{launch, LaunchSpec};

    pub(crate) fn no_filter(_: i32) -> bool {
        false
    }

    /// Starts `argv` traced and stopped; returns the tracee.
    pub(crate) fn start_stopped(argv: &[&str]) -> Tracee {
        let spec = LaunchSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..LaunchSpec::default()
        };
        let pid = launch(&spec).unwrap();
        let mut t = Tracee::new(pid, &[], no_filter).unwrap();
        let mut notices = Vec::new();
        t.stop_all(&mut notices).unwrap();
        t
    }

    #[test]
    fn runs_system_calls_inside_a_sleeping_process() {
        let mut t = start_stopped(&["sleep", "30"]);
        let r = Remote::locate(&t).unwrap();
        // sleep is blocked in clock_nanosleep: the injected calls must not
        // disturb its restart.
        let got = r.syscall(&mut t, libc::SYS_getpid, [0; 6]).unwrap();
        assert_eq!(got as i32, t.pid);
        let err = r
            .syscall(&mut t, libc::SYS_close, [9999, 0, 0, 0, 0, 0])
            .unwrap_err();
        assert!(
            matches!(
                err,
                TraceError::Remote {
                    errno: libc::EBADF,
                    ..
                }
            ),
            "{err}"
        );
        let mut r = r;
        let addr = r.put_cstr(&mut t, "/etc/hostname").unwrap();
        assert!(crate::procfs::read_maps(t.pid)
            .unwrap()
            .iter()
            .any(|v| v.start == addr && v.read && !v.write));
        t.resume_all().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Still alive and sleeping after the injections.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", t.pid)).unwrap();
        assert!(stat.contains(") S "), "{stat}");
        t.kill_and_reap();
        assert!(t.is_gone());
    }
}
