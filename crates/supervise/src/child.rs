//! Starting a supervised program and learning how it ended.
//!
//! The supervisor never calls `waitpid` itself: it asks a [`Launcher`] for a
//! [`ChildHandle`], polls the handle's [`exit_fd`](ChildHandle::exit_fd)
//! with its other event sources, and calls
//! [`try_wait`](ChildHandle::try_wait) when it turns readable. The default
//! [`ProcessLauncher`] forks and execs and watches a pidfd; a launcher that
//! runs the program under another owner (the checkpoint engine's ptrace
//! tracer reaps its tracee itself) supplies its own handle.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use selfheal_sys::child::{self as sc, ChildExit};
use selfheal_sys::signal as sig;
use serde::{Deserialize, Serialize};

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
    /// The kernel wrote a core dump.
    pub core_dumped: bool,
}

impl ExitStatus {
    /// Exited with this code.
    pub fn exited(code: i32) -> ExitStatus {
        ExitStatus {
            code: Some(code),
            signal: None,
            core_dumped: false,
        }
    }

    /// Killed by this signal.
    pub fn killed(signal: i32, core_dumped: bool) -> ExitStatus {
        ExitStatus {
            code: None,
            signal: Some(signal),
            core_dumped,
        }
    }

    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The status a shell would report: the code, or 128 + the signal.
    pub fn shell_status(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }

    /// `exited with status 1`, `killed by SIGSEGV (core dumped)`.
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!(
                "killed by {}{}",
                sig::signal_name(s),
                if self.core_dumped {
                    " (core dumped)"
                } else {
                    ""
                }
            ),
            (None, None) => "ended for an unknown reason".to_string(),
        }
    }
}

impl From<ChildExit> for ExitStatus {
    fn from(e: ChildExit) -> ExitStatus {
        match e {
            ChildExit::Exited(c) => ExitStatus::exited(c),
            ChildExit::Killed {
                signal,
                core_dumped,
            } => ExitStatus::killed(signal, core_dumped),
        }
    }
}

/// Which processes a signal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalScope {
    /// The main process only.
    Process,
    /// The main process's whole process group (when it leads one).
    Group,
}

pub use selfheal_sys::program::{Program, StdioSpec};

/// A program to start, with what only a supervised start has. The
/// program's description ([`Program`]) is the one the checkpoint engine
/// takes too.
#[derive(Debug, Default)]
pub struct LaunchSpec {
    /// What to run, where, with which streams and cgroups.
    pub program: Program,
    /// When the main process ends, SIGKILL what is left of its group before
    /// reaping it (while the unreaped leader keeps the group id reserved).
    pub kill_group_on_exit: bool,
    /// Signal for the program when the launching thread dies.
    pub parent_death_signal: Option<i32>,
}

/// Why a program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program does not exist (shells report 127).
    #[error("cannot start {argv:?}: {program} not found (check the path or PATH)")]
    NotFound {
        /// The command.
        argv: Vec<String>,
        /// The program.
        program: String,
    },
    /// The program is not executable (shells report 126).
    #[error("cannot start {argv:?}: permission denied executing {program} (is it executable?)")]
    NotExecutable {
        /// The command.
        argv: Vec<String>,
        /// The program.
        program: String,
    },
    /// The working directory does not exist or is not a directory.
    #[error("cannot start {argv:?}: working directory {dir} is not a directory")]
    BadWorkingDir {
        /// The command.
        argv: Vec<String>,
        /// The directory.
        dir: PathBuf,
    },
    /// Any other failure of fork, exec or the pre-exec setup.
    #[error("cannot start {argv:?}: {source}")]
    Other {
        /// The command.
        argv: Vec<String>,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl LaunchError {
    /// The exit status a shell reports for this failure (127, 126 or 1).
    pub fn shell_status(&self) -> i32 {
        match self {
            LaunchError::NotFound { .. } => 127,
            LaunchError::NotExecutable { .. } => 126,
            LaunchError::BadWorkingDir { .. } | LaunchError::Other { .. } => 1,
        }
    }

    /// A mistake in the command or its setup that retrying cannot fix.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, LaunchError::Other { .. })
    }
}

/// Waiting for or signalling a program failed.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The program was already reaped: there is nothing left to signal.
    #[error("process {pid} has already ended and been reaped")]
    Gone {
        /// Its pid.
        pid: i32,
    },
    /// A system call failed.
    #[error("process {pid}: {source}")]
    Sys {
        /// Its pid.
        pid: i32,
        /// The failure.
        #[source]
        source: selfheal_sys::SysError,
    },
}

/// A running program as the supervisor sees it.
pub trait ChildHandle: Send {
    /// The main process id.
    fn pid(&self) -> i32;
    /// A descriptor that polls readable once [`ChildHandle::try_wait`] has
    /// news (the program ended). It may stay readable afterwards.
    fn exit_fd(&self) -> BorrowedFd<'_>;
    /// How the program ended, if it has; collects it. Later calls return
    /// the same status.
    fn try_wait(&mut self) -> Result<Option<ExitStatus>, ChildError>;
    /// Sends `signal` to the program (or its group); after it has been
    /// collected this fails with [`ChildError::Gone`].
    fn signal(&self, signal: i32, scope: SignalScope) -> Result<(), ChildError>;
}

/// Starts programs.
pub trait Launcher: Send + Sync {
    /// Starts `spec` and returns its handle.
    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn ChildHandle>, LaunchError>;
}

/// Fork and exec with the standard library, watched through a pidfd
/// (Linux 5.3+) or, without one, through a thread blocked in `waitid`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessLauncher;

impl Launcher for ProcessLauncher {
    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn ChildHandle>, LaunchError> {
        Ok(Box::new(ProcessChild::spawn(spec)?))
    }
}

fn stdio(s: StdioSpec) -> Stdio {
    match s {
        StdioSpec::Inherit => Stdio::inherit(),
        StdioSpec::Null => Stdio::null(),
        StdioSpec::Fd(fd) => Stdio::from(fd),
    }
}

/// How the exit is noticed.
#[derive(Debug)]
enum ExitWatch {
    /// Readable when the process ends.
    Pidfd(OwnedFd),
    /// A thread blocked in `waitid(WNOWAIT)` writes one byte on exit.
    Thread(UnixStream),
}

/// A program started by [`ProcessLauncher`].
#[derive(Debug)]
pub struct ProcessChild {
    pid: i32,
    group: bool,
    kill_group_on_exit: bool,
    watch: ExitWatch,
    status: Option<ExitStatus>,
}

impl ProcessChild {
    /// Forks and execs `spec`.
    pub fn spawn(spec: LaunchSpec) -> Result<ProcessChild, LaunchError> {
        let LaunchSpec {
            program: p,
            kill_group_on_exit,
            parent_death_signal,
        } = spec;
        let argv = p.argv.clone();
        let program = argv.first().cloned().unwrap_or_default();
        let other = |source: io::Error| LaunchError::Other {
            argv: argv.clone(),
            source,
        };
        if program.is_empty() {
            return Err(other(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty command",
            )));
        }
        let mut cmd = Command::new(&program);
        cmd.args(&p.argv[1..]);
        for (k, v) in &p.env {
            cmd.env(k, v);
        }
        if let Some(cwd) = &p.cwd {
            // Checked here: a failing chdir in the child would come back as
            // ENOENT and read as "program not found".
            if !cwd.is_dir() {
                return Err(LaunchError::BadWorkingDir {
                    argv,
                    dir: cwd.clone(),
                });
            }
            cmd.current_dir(cwd);
        }
        let [i, o, e] = p.stdio;
        cmd.stdin(stdio(i)).stdout(stdio(o)).stderr(stdio(e));
        if p.new_process_group {
            cmd.process_group(0);
        }
        if !p.cgroup_procs.is_empty() {
            let mut fds = Vec::new();
            for f in &p.cgroup_procs {
                let f = OpenOptions::new().write(true).open(f).map_err(|e| {
                    other(io::Error::new(
                        e.kind(),
                        format!("open {}: {e}", f.display()),
                    ))
                })?;
                fds.push(OwnedFd::from(f));
            }
            selfheal_sys::spawn::join_cgroups_before_exec(&mut cmd, fds);
        }
        if let Some(s) = parent_death_signal {
            sc::parent_death_signal_before_exec(&mut cmd, s);
        }
        // The daemon protects itself from the OOM killer; what it starts
        // must not inherit that.
        sc::reset_oom_score_adj_before_exec(&mut cmd);
        let child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => LaunchError::NotFound {
                argv: argv.clone(),
                program: program.clone(),
            },
            io::ErrorKind::PermissionDenied => LaunchError::NotExecutable {
                argv: argv.clone(),
                program: program.clone(),
            },
            _ => other(e),
        })?;
        let pid = child.id() as i32;
        // std's Child is only a pid and pipes here (we passed descriptors
        // in); dropping it neither waits nor kills. Waiting is ours.
        drop(child);
        let watch = match sig::pidfd_open(pid) {
            Ok(fd) => ExitWatch::Pidfd(fd),
            Err(e) => {
                tracing::debug!(pid, error = %e, "no pidfd; watching the exit from a thread");
                watch_with_thread(pid).map_err(other)?
            }
        };
        Ok(ProcessChild {
            pid,
            group: p.new_process_group,
            kill_group_on_exit: p.new_process_group && kill_group_on_exit,
            watch,
            status: None,
        })
    }
}

fn watch_with_thread(pid: i32) -> io::Result<ExitWatch> {
    let (rx, mut tx) = UnixStream::pair()?;
    std::thread::Builder::new()
        .name(format!("selfheal-wait-{pid}"))
        .spawn(move || {
            // WNOWAIT: the zombie stays until try_wait collects it, so the
            // pid cannot be reused while the supervisor may still signal it.
            match sc::wait_child(pid, false, true) {
                // Reaped already by the handle's drop: nothing to report.
                Err(e) if e.errno.0 == libc::ECHILD => {}
                Err(e) => {
                    tracing::warn!(pid, error = %e, "waiting for the supervised process failed")
                }
                Ok(_) => {}
            }
            let _ = io::Write::write_all(&mut tx, b"x");
        })?;
    Ok(ExitWatch::Thread(rx))
}

impl ChildHandle for ProcessChild {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn exit_fd(&self) -> BorrowedFd<'_> {
        match &self.watch {
            ExitWatch::Pidfd(fd) => fd.as_fd(),
            ExitWatch::Thread(s) => s.as_fd(),
        }
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>, ChildError> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let sys = |source| ChildError::Sys {
            pid: self.pid,
            source,
        };
        let Some(_) = sc::wait_child(self.pid, false, false).map_err(sys)? else {
            return Ok(None);
        };
        if self.kill_group_on_exit {
            // The unreaped leader keeps the group id ours; ESRCH just means
            // nothing else was left in it.
            if let Err(e) = sig::kill_process_group(self.pid, libc::SIGKILL) {
                if !e.is_gone() {
                    tracing::warn!(pid = self.pid, error = %e, "cleaning up the process group");
                }
            }
        }
        let exit = sc::wait_child(self.pid, true, false)
            .map_err(sys)?
            .map(ExitStatus::from);
        self.status = exit;
        Ok(exit)
    }

    fn signal(&self, signal: i32, scope: SignalScope) -> Result<(), ChildError> {
        if self.status.is_some() {
            return Err(ChildError::Gone { pid: self.pid });
        }
        let sys = |source| ChildError::Sys {
            pid: self.pid,
            source,
        };
        // Until we reap it, the pid (and the group id it leads) cannot be
        // reused, so signalling by number is safe; the pidfd is used when
        // there is one because it says so by construction.
        match (scope, &self.watch) {
            (SignalScope::Group, _) if self.group => {
                sig::kill_process_group(self.pid, signal).map_err(sys)
            }
            (_, ExitWatch::Pidfd(fd)) => sig::pidfd_send_signal(fd, signal).map_err(sys),
            _ => sig::kill_process(self.pid, signal).map_err(sys),
        }
    }
}

impl Drop for ProcessChild {
    /// A handle dropped while its program runs kills it (and its group)
    /// and reaps it: no orphan, no zombie.
    fn drop(&mut self) {
        // Only while the kernel confirms it is still our unreaped child: if
        // someone else reaped it (a process that ignores SIGCHLD), its pid
        // may already name a stranger.
        if self.status.is_none() && sc::wait_child(self.pid, false, false).is_ok() {
            let _ = self.signal(libc::SIGKILL, SignalScope::Group);
            let _ = sc::wait_child(self.pid, true, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_sys::poll::poll_readable;
    use std::time::Duration;

    fn spec(argv: &[&str]) -> LaunchSpec {
        LaunchSpec {
            program: Program {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                new_process_group: true,
                ..Program::default()
            },
            kill_group_on_exit: true,
            parent_death_signal: Some(libc::SIGKILL),
        }
    }

    fn wait(c: &mut dyn ChildHandle) -> ExitStatus {
        assert!(poll_readable(c.exit_fd(), Some(Duration::from_secs(20))).unwrap());
        c.try_wait().unwrap().expect("exit_fd readable means ended")
    }

    #[test]
    fn exit_code_and_signal() {
        let mut c = ProcessLauncher
            .launch(spec(&["sh", "-c", "exit 3"]))
            .unwrap();
        let s = wait(c.as_mut());
        assert_eq!(s, ExitStatus::exited(3));
        assert_eq!(s.describe(), "exited with status 3");
        assert!(matches!(
            c.signal(libc::SIGTERM, SignalScope::Process),
            Err(ChildError::Gone { .. })
        ));

        let mut c = ProcessLauncher.launch(spec(&["sleep", "30"])).unwrap();
        assert_eq!(c.try_wait().unwrap(), None);
        c.signal(libc::SIGTERM, SignalScope::Group).unwrap();
        let s = wait(c.as_mut());
        assert_eq!(s.signal, Some(libc::SIGTERM));
        assert_eq!(s.shell_status(), 143);
        assert_eq!(s.describe(), "killed by SIGTERM");
    }

    #[test]
    fn missing_program_is_127() {
        let err = ProcessLauncher
            .launch(spec(&["/nonexistent/selfheal-test"]))
            .err()
            .unwrap();
        assert_eq!(err.shell_status(), 127, "{err}");
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[test]
    fn group_leftovers_are_killed_when_the_leader_exits() {
        // The leader starts a background sleeper in its group and exits.
        let (r, w) = selfheal_sys::child::pipe_cloexec().unwrap();
        let mut s = spec(&["sh", "-c", "sleep 60 & echo $!; exit 0"]);
        s.program.stdio[1] = StdioSpec::Fd(w);
        let mut c = ProcessLauncher.launch(s).unwrap();
        let status = wait(c.as_mut());
        assert!(status.success());
        let mut out = String::new();
        io::Read::read_to_string(&mut std::fs::File::from(r), &mut out).unwrap();
        let bg: i32 = out.trim().parse().unwrap();
        // The sleeper was our grandchild; it is reparented and reaped by
        // init (or a subreaper), so poll its /proc entry for a while.
        let gone = (0..200).any(|_| {
            let st = std::fs::read_to_string(format!("/proc/{bg}/stat")).unwrap_or_default();
            let dead = st.is_empty() || st.split(") ").nth(1).is_some_and(|r| r.starts_with('Z'));
            if !dead {
                std::thread::sleep(Duration::from_millis(10));
            }
            dead
        });
        assert!(gone, "background process {bg} survived its group's cleanup");
    }

    #[test]
    fn thread_watch_fallback_works() {
        let child = Command::new("sh").args(["-c", "exit 5"]).spawn().unwrap();
        let pid = child.id() as i32;
        drop(child);
        let mut c = ProcessChild {
            pid,
            group: false,
            kill_group_on_exit: false,
            watch: watch_with_thread(pid).unwrap(),
            status: None,
        };
        assert_eq!(wait(&mut c), ExitStatus::exited(5));
    }
}
