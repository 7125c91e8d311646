//! Starting a program already traced, or seizing one that runs.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use selfheal_sys::program::{Program, StdioSpec};
use selfheal_sys::ptrace::{self as pt, SpawnSpec, WaitStatus};

use crate::error::StartError;
use crate::wait::wait_task_until;

/// Longest wait for the child to reach its exec (or to end after a failed
/// start).
const START_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A program to run under checkpointing: the [`Program`] any launcher
/// takes (supervise's too), with what only a traced start has.
#[derive(Debug, Default)]
pub struct LaunchSpec {
    /// What to run, where, with which streams and cgroups (the sandbox for
    /// tests and fault injection).
    pub program: Program,
    /// Kill the program if the tracer thread dies (PTRACE_O_EXITKILL and
    /// PR_SET_PDEATHSIG). On by default for programs we start.
    pub keep_alive_without_tracer: bool,
    /// Leave transparent huge pages on. Off by default: a huge page makes
    /// every write dirty 2 MiB instead of 4 KiB.
    pub allow_thp: bool,
}

/// ptrace options for every tracee.
pub(crate) const OPTIONS: i64 = pt::PTRACE_O_TRACECLONE | pt::PTRACE_O_TRACEEXEC;

fn resolve(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The descriptors to install as 0, 1 and 2 (None: ours). `Fd`s are
/// borrowed from the spec; `/dev/null` is opened here (read for stdin,
/// write for the others) and lives until the child has its copy.
fn stdio_fds(stdio: &[StdioSpec; 3]) -> std::io::Result<[Option<StdioFd<'_>>; 3]> {
    let open = |i: usize| -> std::io::Result<Option<StdioFd<'_>>> {
        Ok(match &stdio[i] {
            StdioSpec::Inherit => None,
            StdioSpec::Null => Some(StdioFd::Owned(OwnedFd::from(
                std::fs::OpenOptions::new()
                    .read(i == 0)
                    .write(i != 0)
                    .open("/dev/null")?,
            ))),
            StdioSpec::Fd(fd) => Some(StdioFd::Borrowed(fd)),
        })
    };
    Ok([open(0)?, open(1)?, open(2)?])
}

/// A standard stream's descriptor for the child.
enum StdioFd<'a> {
    /// The spec's own.
    Borrowed(&'a OwnedFd),
    /// Opened for this start (`/dev/null`).
    Owned(OwnedFd),
}

impl AsRawFd for StdioFd<'_> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            StdioFd::Borrowed(fd) => fd.as_raw_fd(),
            StdioFd::Owned(fd) => fd.as_raw_fd(),
        }
    }
}

fn cstring(s: &[u8], argv: &[String]) -> Result<CString, StartError> {
    CString::new(s).map_err(|_| StartError::BadCommand {
        command: argv.to_vec(),
        reason: "contains a NUL byte".into(),
    })
}

/// Forks, seizes and execs `spec`; returns the pid of the traced program
/// and the signal to deliver when it runs (0: none). The program is held
/// stopped before its first instruction, so the first checkpoint is its
/// start whatever the load; the caller resumes it. Must run on the tracer
/// thread.
pub(crate) fn launch(spec: &LaunchSpec) -> Result<(i32, i32), StartError> {
    let argv = &spec.program.argv;
    let bad = |reason: &str| StartError::BadCommand {
        command: argv.clone(),
        reason: reason.into(),
    };
    let first = argv.first().ok_or_else(|| bad("empty command"))?;
    let program = resolve(first).ok_or_else(|| bad("not found in PATH"))?;
    let mut env: Vec<(Vec<u8>, Vec<u8>)> = std::env::vars_os()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    for (k, v) in &spec.program.env {
        env.retain(|(ek, _)| ek != k.as_bytes());
        env.push((k.as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    let mut envp = Vec::with_capacity(env.len());
    for (k, v) in env {
        let mut kv = k;
        kv.push(b'=');
        kv.extend(v);
        envp.push(cstring(&kv, argv)?);
    }
    let stdio =
        stdio_fds(&spec.program.stdio).map_err(|e| bad(&format!("cannot open /dev/null: {e}")))?;
    let sys_spec = SpawnSpec {
        program: cstring(program.as_os_str().as_bytes(), argv)?,
        argv: argv
            .iter()
            .map(|a| cstring(a.as_bytes(), argv))
            .collect::<Result<_, _>>()?,
        envp,
        cwd: match &spec.program.cwd {
            Some(c) => Some(cstring(c.as_os_str().as_bytes(), argv)?),
            None => None,
        },
        stdio: [0, 1, 2].map(|i| stdio[i].as_ref().map(|f| f.as_raw_fd())),
        new_process_group: spec.program.new_process_group,
        parent_death_signal: (!spec.keep_alive_without_tracer).then_some(libc::SIGKILL),
        disable_thp: !spec.allow_thp,
    };
    let spawn_err = |source| StartError::Spawn {
        command: argv.clone(),
        source,
    };
    let child = pt::spawn_gated(&sys_spec).map_err(spawn_err)?;
    let pid = child.pid();
    let mut options = OPTIONS;
    if !spec.keep_alive_without_tracer {
        options |= pt::PTRACE_O_EXITKILL;
    }
    // If anything fails before release, dropping `child` closes the gate and
    // the child exits 127 without running the program; reap it.
    let reap = |e: StartError| {
        let _ = wait_task_until(pid, START_LIMIT);
        e
    };
    for procs in &spec.program.cgroup_procs {
        if let Err(e) = std::fs::write(procs, pid.to_string()) {
            drop(child);
            let _ = wait_task_until(pid, START_LIMIT);
            return Err(bad(&format!("cannot join cgroup {}: {e}", procs.display())));
        }
    }
    if let Err(e) = pt::seize(pid, options) {
        drop(child);
        return Err(reap(spawn_err(e)));
    }
    // Not `release`: a signal sent to the child before its exec (a `kill`
    // aimed at the program a moment early) stops it until we answer, and
    // waiting for the exec there would wait forever.
    let released = match child.open_gate() {
        Ok(r) => r,
        Err(e) => return Err(reap(spawn_err(e))),
    };
    // The first report is the exec stop (or the child's death). Until
    // then the child has no other thread: waiting on it alone is safe.
    loop {
        let Some((_, st)) = wait_task_until(pid, START_LIMIT).map_err(spawn_err)? else {
            let _ = selfheal_sys::signal::kill_process(pid, libc::SIGKILL);
            let _ = wait_task_until(pid, START_LIMIT);
            return Err(bad(&format!(
                "did not start within {} s (exec stuck in uninterruptible sleep?)",
                START_LIMIT.as_secs()
            )));
        };
        match st {
            WaitStatus::Stopped {
                event: pt::PTRACE_EVENT_EXEC,
                ..
            } => return step_out_of_exec(pid).map_err(spawn_err),
            WaitStatus::Stopped { sig, event } => {
                // A signal before exec: deliver it, keep waiting.
                let deliver = if event == 0 { sig } else { 0 };
                pt::cont(pid, deliver).map_err(spawn_err)?;
            }
            WaitStatus::Exited(code) => {
                // Reaped: the exec error pipe is closed; read what it said.
                released.exec_result().map_err(spawn_err)?;
                return Err(bad(&format!("exited with {code} before running")));
            }
            WaitStatus::Signaled { sig, .. } => {
                return Err(bad(&format!("killed by signal {sig} before running")))
            }
        }
    }
}

/// From the exec stop to a stop where registers may be rewritten and
/// system calls injected. At the exec stop the thread is still inside
/// execve: a step injected there would be reported on the way out of the
/// system call, before its instruction ran, and look astray. One plain
/// step leaves execve; the kernel reports it at the system call's exit,
/// before the program's first instruction. Returns the pid and a signal
/// that arrived meanwhile, to deliver on resume.
fn step_out_of_exec(pid: i32) -> Result<(i32, i32), selfheal_sys::SysError> {
    pt::singlestep(pid, 0)?;
    loop {
        let gone = || selfheal_sys::SysError {
            call: format!("step program {pid} out of its exec"),
            errno: selfheal_sys::Errno(libc::ESRCH),
        };
        match wait_task_until(pid, START_LIMIT)? {
            Some((_, WaitStatus::Stopped { sig, event: 0 })) => {
                return Ok((pid, if sig == libc::SIGTRAP { 0 } else { sig }))
            }
            // A group-stop or another event: step on.
            Some((_, WaitStatus::Stopped { .. })) => pt::singlestep(pid, 0)?,
            Some(_) | None => return Err(gone()),
        }
    }
}

/// Seizes every thread of a running process. Must run on the tracer thread.
pub(crate) fn seize(pid: i32, exit_kill: bool) -> Result<Vec<i32>, StartError> {
    let options = OPTIONS | if exit_kill { pt::PTRACE_O_EXITKILL } else { 0 };
    let err = |source| StartError::Seize { pid, source };
    pt::seize(pid, options).map_err(err)?;
    let mut seized = vec![pid];
    // Threads may be created while we go; list until nothing new shows up.
    // With TRACECLONE set on a thread, its later clones are traced anyway.
    loop {
        let tids = crate::procfs::read_tids(pid).map_err(|e| {
            err(selfheal_sys::SysError {
                call: format!("read /proc/{pid}/task: {e}"),
                errno: selfheal_sys::Errno(e.raw_os_error().unwrap_or(libc::EIO)),
            })
        })?;
        let mut new = false;
        for tid in tids {
            if seized.contains(&tid) {
                continue;
            }
            match pt::seize(tid, options) {
                Ok(()) => {}
                // Exited meanwhile, or already auto-attached via a clone.
                Err(e) if e.is_gone() || e.errno.0 == libc::EPERM => {}
                Err(e) => return Err(err(e)),
            }
            seized.push(tid);
            new = true;
        }
        if !new {
            seized.sort_unstable();
            return Ok(seized);
        }
    }
}
