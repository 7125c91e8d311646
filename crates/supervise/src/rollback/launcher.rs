//! Starting a program under the checkpoint engine, and the child handle
//! its events drive.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use selfheal_sys::signal as sig;

use super::engine::{self, Event, ExitInfo, Failure, StartError, Target};
use super::{AppCheckpoint, HangReply, PendingRequests, RunLink};
use crate::child::{
    ChildError, ChildHandle, ExitStatus, LaunchError, LaunchSpec, Launcher, SignalScope,
};

/// How often a run of failing checkpoints is reported.
const FAILURE_REPORT_EVERY: Duration = Duration::from_secs(30);

/// Starts programs under the checkpoint engine; when the engine cannot
/// run here (no ptrace permission, an unsupported CPU, a setup failure) the
/// program is started by the fallback launcher, without checkpoints, after
/// a critical `checkpoint` event that says why and how to fix it.
#[derive(Debug)]
pub struct CheckpointLauncher {
    ck: Arc<AppCheckpoint>,
}

impl CheckpointLauncher {
    /// A launcher for the app `ck` describes.
    pub fn new(ck: Arc<AppCheckpoint>) -> CheckpointLauncher {
        CheckpointLauncher { ck }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The checks a shell makes before running a command, so a mistake is
/// reported as 127/126 and never mistaken for an engine failure.
fn precheck(spec: &LaunchSpec) -> Result<(), LaunchError> {
    let argv = spec.program.argv.clone();
    let program = argv.first().cloned().unwrap_or_default();
    if program.is_empty() {
        return Err(LaunchError::Other {
            argv,
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
        });
    }
    if let Some(cwd) = &spec.program.cwd {
        if !cwd.is_dir() {
            return Err(LaunchError::BadWorkingDir {
                argv,
                dir: cwd.clone(),
            });
        }
    }
    let candidates: Vec<PathBuf> = if program.contains('/') {
        // Relative to the working directory the program starts in.
        let p = PathBuf::from(&program);
        vec![match &spec.program.cwd {
            Some(cwd) if p.is_relative() => cwd.join(p),
            _ => p,
        }]
    } else {
        std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join(&program))
                    .collect()
            })
            .unwrap_or_default()
    };
    if candidates.iter().any(|p| is_executable(p)) {
        return Ok(());
    }
    if candidates.iter().any(|p| p.is_file()) {
        return Err(LaunchError::NotExecutable { argv, program });
    }
    Err(LaunchError::NotFound { argv, program })
}

/// What to tell the operator when the engine fails for lack of permission.
fn permission_fix(e: &StartError) -> Option<&'static str> {
    let denied = match e {
        StartError::Spawn { source, .. } | StartError::Seize { source, .. } => {
            source.is_permission()
        }
        StartError::Setup { source, .. } => match source {
            engine::TraceError::Sys { source, .. } => source.is_permission(),
            engine::TraceError::Io { source, .. } => {
                source.kind() == io::ErrorKind::PermissionDenied
            }
            engine::TraceError::Remote { errno, .. } => {
                *errno == libc::EPERM || *errno == libc::EACCES
            }
            _ => false,
        },
        _ => false,
    };
    denied.then_some(
        "checkpoints need ptrace: run selfheal as root or give it CAP_SYS_PTRACE, \
         allow ptrace of children (kernel.yama.ptrace_scope 0 or 1), and in a container \
         allow ptrace, process_vm_readv and userfaultfd in the seccomp profile",
    )
}

impl Launcher for CheckpointLauncher {
    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn ChildHandle>, LaunchError> {
        precheck(&spec)?;
        let other = |source: io::Error| LaunchError::Other {
            argv: spec.program.argv.clone(),
            source,
        };
        let engine_spec = engine::LaunchSpec {
            // The engine's copy (descriptors duplicated): ours keeps
            // working for the fallback.
            program: spec.program.try_clone().map_err(other)?,
            // A tracee whose tracer died mid-checkpoint could run on with
            // injected registers: it is always killed with its tracer
            // (PTRACE_O_EXITKILL + PR_SET_PDEATHSIG SIGKILL).
            keep_alive_without_tracer: false,
            allow_thp: false,
        };
        // Made first: once the engine runs there is no going back.
        let wake = UnixStream::pair().map_err(other)?;
        let ck = &self.ck;
        let mut config = ck.config.clone();
        // Heartbeats and status lines sent to our notify socket are not
        // output a rollback must refuse: repeated, they do no harm.
        config.files.quiet_peers.extend(
            spec.program
                .env
                .iter()
                .filter(|(k, _)| k == "NOTIFY_SOCKET")
                .map(|(_, v)| v.clone()),
        );
        match (ck.start)(Target::Launch(engine_spec), config) {
            Ok(e) => Ok(Box::new(CheckpointChild::start(
                Arc::clone(ck),
                e,
                wake,
                spec.program.new_process_group,
                spec.kill_group_on_exit,
            ))),
            // A mistake in the command is the caller's, not the engine's.
            Err(StartError::BadCommand { reason, .. }) => Err(other(io::Error::other(reason))),
            Err(StartError::Spawn { source, .. }) if source.call.starts_with("execve") => {
                let argv = spec.program.argv.clone();
                let program = argv[0].clone();
                Err(match source.errno.0 {
                    libc::ENOENT => LaunchError::NotFound { argv, program },
                    libc::EACCES => LaunchError::NotExecutable { argv, program },
                    errno => other(io::Error::from_raw_os_error(errno)),
                })
            }
            Err(e) => {
                let error = e.to_string();
                let fix = permission_fix(&e);
                ck.totals.unavailable();
                let child = ck.fallback.launch(spec)?;
                ck.report_unavailable(child.pid(), &error, fix);
                Ok(child)
            }
        }
    }
}

/// What the pump learned that the supervisor asks for.
#[derive(Debug, Default)]
struct Shared {
    status: Option<ExitStatus>,
}

/// A program running under the checkpoint engine. The engine's tracer
/// thread reaps it; a pump thread reads the engine's events, reports
/// rollbacks and makes [`ChildHandle::exit_fd`] readable once it ended.
pub struct CheckpointChild {
    pid: i32,
    group: bool,
    pidfd: Option<OwnedFd>,
    control: engine::Control,
    shared: Arc<Mutex<Shared>>,
    exit_rx: UnixStream,
    pump: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for CheckpointChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointChild")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl CheckpointChild {
    fn start(
        ck: Arc<AppCheckpoint>,
        engine: engine::Engine,
        (exit_rx, exit_tx): (UnixStream, UnixStream),
        group: bool,
        kill_group_on_exit: bool,
    ) -> CheckpointChild {
        let pid = engine.pid();
        let control = engine.control();
        // Opened before the pump runs: until the pump has seen the exit,
        // the engine has not told us it reaped the process, but it may
        // have; the pidfd (or ESRCH) says which process we mean.
        let pidfd = sig::pidfd_open(pid).ok();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (requests, pending) = mpsc::channel();
        let link = RunLink {
            pid,
            control: control.clone(),
            requests,
        };
        let metrics = Arc::clone(engine.metrics());
        ck.totals.run_started(Arc::clone(&metrics));
        ck.set_current(Some(link.clone()));
        let ck_on_failure = Arc::clone(&ck);
        let pump = Pump {
            ck,
            pid,
            group: group && kill_group_on_exit,
            link,
            pending: PendingRequests(pending),
            shared: Arc::clone(&shared),
            exit_tx,
            rollbacks: VecDeque::new(),
            count: 0,
            last_rollback: None,
            last_failure_report: None,
            suppressed: 0,
        };
        let thread = std::thread::Builder::new()
            .name(format!("selfheal-ckpt-pump-{pid}"))
            .spawn(move || pump.run(engine));
        let pump = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                // The engine was moved into the failed closure and dropped,
                // which killed the program, and the closed wake-up socket
                // reads as the end; report it as killed.
                tracing::error!(pid, error = %e, "cannot start the checkpoint event thread; the program was killed");
                ck_on_failure.totals.run_ended(&metrics);
                ck_on_failure.set_current(None);
                let mut g = shared.lock().unwrap_or_else(|p| p.into_inner());
                g.status = Some(ExitStatus::killed(libc::SIGKILL, false));
                None
            }
        };
        CheckpointChild {
            pid,
            group,
            pidfd,
            control,
            shared,
            exit_rx,
            pump,
        }
    }

    fn status(&self) -> Option<ExitStatus> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).status
    }
}

impl ChildHandle for CheckpointChild {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn exit_fd(&self) -> BorrowedFd<'_> {
        self.exit_rx.as_fd()
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>, ChildError> {
        let mut s = self.status();
        if s.is_none() && self.pump.as_ref().is_some_and(|t| t.is_finished()) {
            // The pump died without a word (a bug): the engine it owned
            // killed the program on drop. Never leave the exit descriptor
            // readable with nothing to collect.
            let lost = ExitStatus {
                code: None,
                signal: None,
                core_dumped: false,
            };
            self.shared.lock().unwrap_or_else(|p| p.into_inner()).status = Some(lost);
            s = Some(lost);
        }
        if s.is_some() {
            // The pump is done (it sets the status last): reclaim it.
            if let Some(t) = self.pump.take() {
                let _ = t.join();
            }
        }
        Ok(s)
    }

    fn signal(&self, signal: i32, scope: SignalScope) -> Result<(), ChildError> {
        if self.status().is_some() {
            return Err(ChildError::Gone { pid: self.pid });
        }
        let sys = |source| ChildError::Sys {
            pid: self.pid,
            source,
        };
        let send = |signal: i32| match (scope, &self.pidfd) {
            // The unreaped leader keeps the group id reserved; once the
            // engine reaps it, kill() on the group fails with ESRCH.
            (SignalScope::Group, _) if self.group => {
                sig::kill_process_group(self.pid, signal).map_err(sys)
            }
            (_, Some(fd)) => sig::pidfd_send_signal(fd, signal).map_err(sys),
            (_, None) => Err(ChildError::Gone { pid: self.pid }),
        };
        send(signal)?;
        // An untraced stopped process dies of a fatal signal at once; a
        // stopped tracee (held with PTRACE_LISTEN) wakes only for SIGKILL
        // or SIGCONT, so SIGTERM would wait out the whole stop grace.
        // Continue it when the signal ends it anyway.
        if ends_process_by_default(signal) && !handled(self.pid, signal) {
            let _ = send(libc::SIGCONT);
        }
        Ok(())
    }
}

/// The default action of `signal` ends the process, and the engine does
/// not intercept it as a crash.
fn ends_process_by_default(signal: i32) -> bool {
    let stays = [
        libc::SIGCHLD,
        libc::SIGCONT,
        libc::SIGSTOP,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGURG,
        libc::SIGWINCH,
        libc::SIGKILL,
    ];
    (1..=64).contains(&signal)
        && !stays.contains(&signal)
        && !engine::CRASH_SIGNALS.contains(&signal)
}

/// The program catches or ignores `signal` (or its dispositions cannot be
/// read: then it is left alone).
fn handled(pid: i32, signal: i32) -> bool {
    engine::procfs::read_signal_dispositions(pid).map_or(true, |d| {
        d.catches(signal) || d.ignored & (1u64 << (signal - 1)) != 0
    })
}

impl Drop for CheckpointChild {
    /// A handle dropped while its program runs kills it: the engine kills
    /// and reaps it, the pump ends.
    fn drop(&mut self) {
        if self.status().is_none() {
            self.control.kill();
        }
        if let Some(t) = self.pump.take() {
            let _ = t.join();
        }
    }
}

/// Reads one run's engine events on its own thread.
struct Pump {
    ck: Arc<AppCheckpoint>,
    pid: i32,
    /// Kill what is left of the process group when the program ends.
    group: bool,
    link: RunLink,
    /// Hang rollback requests not answered yet, oldest first.
    pending: PendingRequests,
    shared: Arc<Mutex<Shared>>,
    exit_tx: UnixStream,
    /// Times of recent rollbacks, for `max_rollbacks`.
    rollbacks: VecDeque<Instant>,
    count: usize,
    /// When the last rollback was and how far back it went.
    last_rollback: Option<(Instant, usize)>,
    last_failure_report: Option<Instant>,
    suppressed: u64,
}

impl Pump {
    fn run(mut self, engine: engine::Engine) {
        let mut status = None;
        while status.is_none() {
            let Ok(ev) = engine.events().recv() else {
                tracing::error!(app = %self.ck.app, pid = self.pid, "the checkpoint engine stopped without reporting the exit; please report this bug");
                status = Some(ExitStatus {
                    code: None,
                    signal: None,
                    core_dumped: false,
                });
                break;
            };
            status = self.event(ev);
        }
        self.ck.totals.run_ended(engine.metrics());
        engine.join();
        self.finish(status.unwrap_or(ExitStatus {
            code: None,
            signal: None,
            core_dumped: false,
        }));
    }

    /// Handles one event; returns the exit status at the end.
    fn event(&mut self, ev: Event) -> Option<ExitStatus> {
        let pid = self.pid;
        match ev {
            Event::Started {
                tracking, files, ..
            } => self.ck.report_started(pid, &tracking, &files),
            Event::Checkpoint(_) => {}
            Event::CheckpointFailed { error } => {
                let due = self
                    .last_failure_report
                    .is_none_or(|t| t.elapsed() >= FAILURE_REPORT_EVERY);
                if due {
                    self.ck.report_failed(pid, &error, self.suppressed);
                    self.last_failure_report = Some(Instant::now());
                    self.suppressed = 0;
                } else {
                    self.suppressed += 1;
                }
            }
            Event::RolledBack(r) => {
                self.count += 1;
                // A recurrence goes `r.depth` further back from where the
                // previous rollback went (newer checkpoints are gone).
                let recurring = self
                    .last_rollback
                    .filter(|(t, _)| t.elapsed() < self.ck.config.recurrence_window);
                let depth = match recurring {
                    Some((_, d)) if r.depth > 0 => d + r.depth,
                    _ => r.depth,
                };
                self.last_rollback = Some((Instant::now(), depth));
                self.ck.report_rolled_back(pid, &r, depth, self.count);
                let hang = r.failure == Failure::Hang;
                self.reply(if hang {
                    HangReply::Done(r)
                } else {
                    HangReply::Refused(
                        "a crash was rolled back at the same time; the hang request was dropped"
                            .into(),
                    )
                });
                self.check_loop();
            }
            Event::RollbackImpossible { failure, why } => {
                self.ck.report_impossible(pid, &failure, &why);
                self.reply(HangReply::Refused(match failure {
                    Failure::Hang => super::report::explain(&failure, &why),
                    Failure::Crash { .. } => {
                        "a crash was handled at the same time; the hang request was dropped".into()
                    }
                }));
            }
            Event::Exec => self.ck.report_exec(pid),
            Event::Exited(info) => return Some(exit_status(info)),
            Event::Detached => {
                // Only asked for by nobody here; the program runs on untraced.
                tracing::error!(app = %self.ck.app, pid, "the checkpoint engine detached from the program");
                return Some(ExitStatus {
                    code: None,
                    signal: None,
                    core_dumped: false,
                });
            }
        }
        None
    }

    /// Answers the oldest hang rollback request: the engine answers its
    /// rollback commands in order, one event each.
    fn reply(&self, r: HangReply) {
        self.pending.answer_oldest(r);
    }

    /// Rolling back over and over does not help: kill for a restart.
    fn check_loop(&mut self) {
        let max = self.ck.max_rollbacks as usize;
        if max == 0 {
            return;
        }
        let now = Instant::now();
        self.rollbacks.push_back(now);
        while self
            .rollbacks
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.ck.rollback_window)
        {
            self.rollbacks.pop_front();
        }
        if self.rollbacks.len() > max {
            self.ck.report_gave_up(self.pid, self.rollbacks.len());
            self.link.control.kill();
            self.rollbacks.clear();
        }
    }

    fn finish(self, status: ExitStatus) {
        if self.group {
            // Helpers the program left in its group go with it. The engine
            // has reaped the leader, but the group id stays reserved while
            // any member lives; with none left this is ESRCH.
            if let Err(e) = sig::kill_process_group(self.pid, libc::SIGKILL) {
                if !e.is_gone() {
                    tracing::warn!(pid = self.pid, error = %e, "cleaning up the process group");
                }
            }
        }
        {
            let mut cur = self.ck.current.lock().unwrap_or_else(|p| p.into_inner());
            if cur.as_ref().is_some_and(|l| l.pid == self.pid) {
                *cur = None;
            }
        }
        self.pending.refuse_all("the program ended");
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).status = Some(status);
        let mut tx = self.exit_tx;
        let _ = tx.write_all(b"x");
    }
}

fn exit_status(info: ExitInfo) -> ExitStatus {
    match (info.code, info.signal) {
        (Some(c), _) => ExitStatus::exited(c),
        (None, Some(s)) => ExitStatus::killed(s, info.core_dumped),
        (None, None) => ExitStatus {
            code: None,
            signal: None,
            core_dumped: false,
        },
    }
}
