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
use crate::tracee::Tracee;
use crate::wait::{self, Report};

/// Longest an injected system call may take. Ours (mmap, munmap, brk,
/// lseek, close, …) take microseconds to milliseconds; one still running
/// after this is stuck in the kernel, and the process is killed.
pub(crate) const STEP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

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
        let pid = tracee.pid;
        let saved = pt::get_regs(tid).map_err(|e| TraceError::sys(pid, e))?;
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
        pt::set_regs(tid, &regs).map_err(|e| TraceError::sys(pid, e))?;
        let result = self.step_over(tracee, tid);
        // Put the thread back whatever happened (unless it died); the
        // step's own error, if any, says more than this one.
        if !tracee.is_gone() {
            if let Err(e) = pt::set_regs(tid, &saved) {
                crate::debug(|| format!("remote {nr} on {tid}: {result:?}, then SETREGS: {e}"));
                result?;
                return Err(TraceError::sys(pid, e));
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
    fn step_over(&self, tracee: &mut Tracee, tid: i32) -> Result<u64, TraceError> {
        let started = std::time::Instant::now();
        tracee.watchdog.arm(started + tracee.step_limit);
        let r = self.step_over_armed(tracee, tid, started);
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
                // Keep the signal for after we are done and step again
                // (once: standard signals do not queue up).
                WaitStatus::Stopped { sig, event: 0 } => {
                    if !tracee.deferred_signals.contains(&(tid, sig)) {
                        tracee.deferred_signals.push((tid, sig));
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
        let mut t = launch_running(&spec);
        let mut notices = Vec::new();
        t.stop_all(&mut notices).unwrap();
        t
    }

    /// Launches `spec` traced and lets it run (out of its exec stop).
    pub(crate) fn launch_running(spec: &LaunchSpec) -> Tracee {
        let (pid, pending) = launch(spec).unwrap();
        let mut t = Tracee::new(pid, &[], no_filter).unwrap();
        t.set_pending(pid, pending);
        t.resume_all().unwrap();
        t
    }

    /// Compiles C `source` into a program in a temporary directory; None
    /// (the caller skips) without a C compiler.
    pub(crate) fn build_c(name: &str, source: &str) -> Option<(tempfile::TempDir, String)> {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join(format!("{name}.c"));
        std::fs::write(&src, source).unwrap();
        let bin = dir.path().join(name);
        let ok = std::process::Command::new("cc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&bin)
            .arg(&src)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP: no working C compiler (cc)");
            return None;
        }
        Some((dir, bin.display().to_string()))
    }

    /// Starts `argv` traced in `sandbox`, lets it run until it has
    /// `threads` threads, and stops them all.
    pub(crate) fn start_threads(
        argv: &[&str],
        sandbox: &crate::sandbox::Sandbox,
        threads: usize,
    ) -> Tracee {
        start_threads_in(argv, sandbox.procs_files(), threads)
    }

    /// [`start_threads`] in the cgroups of these `cgroup.procs` files.
    pub(crate) fn start_threads_in(
        argv: &[&str],
        cgroup_procs: Vec<std::path::PathBuf>,
        threads: usize,
    ) -> Tracee {
        let spec = LaunchSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cgroup_procs,
            ..LaunchSpec::default()
        };
        let mut t = launch_running(&spec);
        let mut notices = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while t.threads.len() < threads {
            assert!(
                std::time::Instant::now() < deadline,
                "threads never started"
            );
            t.poll(&mut notices).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        t.stop_all(&mut notices).unwrap();
        t
    }

    /// Runs `f` on its own thread; panics if it does not return within
    /// `limit` (the thread is left behind: it hangs).
    pub(crate) fn within<T: Send + 'static>(
        limit: std::time::Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(limit)
            .unwrap_or_else(|_| panic!("did not return within {limit:?}: a wait blocks"))
    }

    #[test]
    fn a_process_killed_during_a_remote_call_on_its_leader_is_reaped() {
        if !selfheal_sys::process::is_root() {
            eprintln!("SKIP: needs root (cgroup sandbox)");
            return;
        }
        let Some((_dir, prog)) = build_c(
            "twothreads",
            "#include <pthread.h>\n#include <unistd.h>\n\
             static void *idle(void *a) { for (;;) pause(); return a; }\n\
             int main(void) { pthread_t t; pthread_create(&t, 0, idle, 0); for (;;) pause(); }\n",
        ) else {
            return;
        };
        let sandbox = crate::sandbox::Sandbox::create(
            std::path::Path::new("/sys/fs/cgroup"),
            Default::default(),
        )
        .unwrap();
        let (t, r) = within(std::time::Duration::from_secs(60), move || {
            let mut t = start_threads(&[&prog], &sandbox, 2);
            let r = Remote::locate(&t).unwrap();
            let pid = t.pid;
            // The injected pause() blocks in the leader; the process is then
            // killed. The leader is reported only after the other thread
            // (a zombie only its tracer may reap) is reaped: a wait on the
            // leader alone would block forever.
            let killer = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                selfheal_sys::signal::kill_process(pid, libc::SIGKILL).unwrap();
            });
            let r = r.syscall(&mut t, libc::SYS_pause, [0; 6]);
            killer.join().unwrap();
            (t.is_gone(), r.map_err(|e| e.is_gone()))
        });
        assert!(t, "the process end was not seen");
        assert_eq!(r, Err(true));
    }

    #[test]
    fn an_injected_call_that_never_returns_ends_in_a_kill_at_the_deadline() {
        if !selfheal_sys::process::is_root() {
            eprintln!("SKIP: needs root (cgroup sandbox)");
            return;
        }
        let sandbox = crate::sandbox::Sandbox::create(
            std::path::Path::new("/sys/fs/cgroup"),
            Default::default(),
        )
        .unwrap();
        let (gone, r, took) = within(std::time::Duration::from_secs(60), move || {
            let mut t = start_threads(&["sleep", "30"], &sandbox, 1);
            t.step_limit = std::time::Duration::from_millis(300);
            let r = Remote::locate(&t).unwrap();
            let started = std::time::Instant::now();
            // pause() returns only for a signal: the watchdog's SIGKILL.
            let r = r.syscall(&mut t, libc::SYS_pause, [0; 6]);
            let took = started.elapsed();
            t.kill_and_reap(std::time::Duration::from_secs(30));
            (t.is_gone(), r.map(drop), took)
        });
        assert!(gone);
        assert!(
            matches!(r, Err(TraceError::StepKilled { ended: true, .. })),
            "{r:?}"
        );
        assert!(took >= std::time::Duration::from_millis(300), "{took:?}");
        assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    }

    /// A cgroup v1 freezer cgroup of our own. On drop (a failed test too)
    /// it is thawed, the processes we started in it are killed and reaped,
    /// and it is removed.
    struct Freezer {
        dir: std::path::PathBuf,
        kids: Vec<std::process::Child>,
    }

    impl Freezer {
        /// None (the caller skips, said why) without a v1 freezer.
        fn create() -> Option<Freezer> {
            static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let base = std::path::Path::new("/sys/fs/cgroup/freezer");
            let dir = base.join(format!(
                "selfheal-ckpt-frz-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            if !base.join("cgroup.procs").exists() || std::fs::create_dir(&dir).is_err() {
                eprintln!("SKIP: no cgroup v1 freezer at {}", base.display());
                return None;
            }
            let f = Freezer {
                dir,
                kids: Vec::new(),
            };
            if !f.dir.join("freezer.state").exists() {
                eprintln!("SKIP: {} has no freezer.state", f.dir.display());
                return None;
            }
            Some(f)
        }

        fn procs(&self) -> std::path::PathBuf {
            self.dir.join("cgroup.procs")
        }
    }

    /// Writes `state` (FROZEN, THAWED) and waits until the kernel is done.
    fn set_freezer(dir: &std::path::Path, state: &str) {
        std::fs::write(dir.join("freezer.state"), state).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = std::fs::read_to_string(dir.join("freezer.state")).unwrap();
            if now.trim() == state {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} stays {now}",
                dir.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    impl Drop for Freezer {
        fn drop(&mut self) {
            let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
            for k in &mut self.kids {
                let _ = k.kill();
                for _ in 0..250 {
                    if !matches!(k.try_wait(), Ok(None)) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            for _ in 0..250 {
                if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// Every pending signal (thread and shared) of `pid`, blocked ones too
    /// (unlike `procfs::read_pending_signals`): a signal sent is a signal
    /// sent.
    fn pending(pid: i32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .filter_map(|l| {
                let v = l
                    .strip_prefix("SigPnd:")
                    .or_else(|| l.strip_prefix("ShdPnd:"))?;
                u64::from_str_radix(v.trim(), 16).ok()
            })
            .fold(0, |a, b| a | b)
    }

    /// The state letter in /proc/PID/stat.
    fn state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].chars().next()
    }

    /// What [`frozen_step`] saw.
    #[derive(Debug)]
    struct FrozenStep {
        result: Result<(), TraceError>,
        took: std::time::Duration,
        /// Pending signals of the tracee, and of the bystander, while
        /// still frozen after the step returned.
        tracee_pending: u64,
        bystander_pending: u64,
        /// The tracee ended and was reaped after the thaw.
        reaped: bool,
    }

    /// Traces `sleep` in `frz` (and a sandbox), runs an injected pause()
    /// with a 1 s deadline and freezes the cgroup while it is in flight
    /// (or, with `freeze_first`, before the step); `bystander` (untraced,
    /// started by the test) is frozen with it.
    fn frozen_step(frz: &Freezer, bystander: i32, freeze_first: bool) -> FrozenStep {
        let sandbox = crate::sandbox::Sandbox::create(
            std::path::Path::new("/sys/fs/cgroup"),
            Default::default(),
        )
        .unwrap();
        // Frozen with the tracee; not in the sandbox (nothing is done to
        // it, and it outlives the sandbox).
        std::fs::write(frz.procs(), bystander.to_string()).unwrap();
        let mut procs = sandbox.procs_files();
        procs.push(frz.procs());
        let dir = frz.dir.clone();
        within(std::time::Duration::from_secs(60), move || {
            let mut t = start_threads_in(&["sleep", "30"], procs, 1);
            t.step_limit = std::time::Duration::from_secs(1);
            let r = Remote::locate(&t).unwrap();
            let d = dir.clone();
            if freeze_first {
                // Its threads are in a ptrace stop: frozen there, they still
                // take our registers and the step request, and run it only
                // once thawed.
                set_freezer(&d, "FROZEN");
            }
            let freezer = std::thread::spawn(move || {
                if !freeze_first {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    set_freezer(&d, "FROZEN");
                }
            });
            let started = std::time::Instant::now();
            // pause() returns only for a signal; the watchdog's SIGKILL
            // cannot end a frozen task: without the interrupt this blocks
            // until the thaw.
            let result = r.syscall(&mut t, libc::SYS_pause, [0; 6]).map(drop);
            let took = started.elapsed();
            freezer.join().unwrap();
            let tracee_pending = pending(t.pid);
            let bystander_pending = pending(bystander);
            set_freezer(&dir, "THAWED");
            let reaped = t.kill_and_reap(std::time::Duration::from_secs(30)) && t.is_gone();
            drop(sandbox);
            FrozenStep {
                result,
                took,
                tracee_pending,
                bystander_pending,
                reaped,
            }
        })
    }

    fn sleeper_in(frz: &mut Freezer) -> i32 {
        let kid = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = kid.id() as i32;
        frz.kids.push(kid);
        pid
    }

    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);

    /// A step of a process frozen by the v1 freezer (mid-call, or before
    /// the step) ends in an error in bounded time: killed at the deadline,
    /// not ended (frozen), given up on after the grace.
    fn frozen_step_ends_in_an_error(freeze_first: bool) {
        if !selfheal_sys::process::is_root() {
            eprintln!("SKIP: needs root (cgroups)");
            return;
        }
        let Some(mut frz) = Freezer::create() else {
            return;
        };
        let bystander = sleeper_in(&mut frz);
        let seen = frozen_step(&frz, bystander, freeze_first);
        assert!(
            matches!(
                seen.result,
                Err(TraceError::StepKilled { ended: false, .. })
            ),
            "{seen:?}"
        );
        assert_ne!(seen.tracee_pending & SIGKILL_BIT, 0, "{seen:?}");
        assert!(seen.took >= std::time::Duration::from_secs(1), "{seen:?}");
        let bound = std::time::Duration::from_secs(1)
            + crate::wait::GRACE
            + std::time::Duration::from_secs(5);
        assert!(seen.took < bound, "{seen:?}");
        assert!(seen.reaped, "the kill took effect at the thaw: {seen:?}");
    }

    #[test]
    fn a_step_of_a_process_frozen_mid_call_by_the_v1_freezer_ends_in_an_error() {
        frozen_step_ends_in_an_error(false);
    }

    #[test]
    fn a_step_of_a_process_frozen_before_it_by_the_v1_freezer_ends_in_an_error() {
        frozen_step_ends_in_an_error(true);
    }

    #[test]
    fn a_frozen_process_the_tracer_does_not_trace_is_never_signalled() {
        if !selfheal_sys::process::is_root() {
            eprintln!("SKIP: needs root (cgroups)");
            return;
        }
        let Some(mut frz) = Freezer::create() else {
            return;
        };
        let bystander = sleeper_in(&mut frz);
        let before = std::fs::read_to_string(format!("/proc/{bystander}/stat")).unwrap();
        let seen = frozen_step(&frz, bystander, false);
        assert!(seen.result.is_err(), "{seen:?}");
        // A frozen task cannot take a signal: any sent would still be
        // pending, as the tracee's SIGKILL is.
        assert_ne!(seen.tracee_pending & SIGKILL_BIT, 0, "{seen:?}");
        assert_eq!(seen.bystander_pending, 0, "{seen:?}");
        // Thawed, it sleeps on as before, same process.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(state(bystander), Some('S'));
        let after = std::fs::read_to_string(format!("/proc/{bystander}/stat")).unwrap();
        // Field 22: start time; same pid and start time = same process.
        let start = |s: &str| {
            s[s.rfind(')').unwrap() + 2..]
                .split(' ')
                .nth(19)
                .map(str::to_owned)
        };
        assert_eq!(start(&before), start(&after));
        assert!(
            matches!(frz.kids[0].try_wait(), Ok(None)),
            "bystander ended"
        );
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
            .any(|v| v.start == addr && v.read && v.write));
        t.resume_all().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Still alive and sleeping after the injections.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", t.pid)).unwrap();
        assert!(stat.contains(") S "), "{stat}");
        assert!(t.kill_and_reap(std::time::Duration::from_secs(30)));
        assert!(t.is_gone());
    }

    /// Cost of one injected system call (one single-step and its wait):
    /// `cargo test -p selfheal-checkpoint --lib --release -- --ignored
    /// --nocapture per_injected_call` prints the median of 7 rounds.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn per_injected_call() {
        let mut t = start_stopped(&["sleep", "30"]);
        let r = Remote::locate(&t).unwrap();
        for _ in 0..500 {
            r.syscall(&mut t, libc::SYS_getppid, [0; 6]).unwrap();
        }
        let n = 5000;
        let mut rounds: Vec<f64> = (0..7)
            .map(|_| {
                let t0 = std::time::Instant::now();
                for _ in 0..n {
                    r.syscall(&mut t, libc::SYS_getppid, [0; 6]).unwrap();
                }
                t0.elapsed().as_secs_f64() * 1e6 / n as f64
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        println!(
            "injected getppid: median {:.2} us/call (rounds {:.2}..{:.2})",
            rounds[3], rounds[0], rounds[6]
        );
        assert!(t.kill_and_reap(std::time::Duration::from_secs(30)));
    }
}
