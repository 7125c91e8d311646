//! The driving API: a tracer thread that starts or seizes a process, takes
//! periodic checkpoints, intercepts crash signals, rolls back (progressively
//! on recurrence), accepts rollback requests for hangs, and reports events.

mod failure;
mod take;

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use selfheal_sys::ptrace::{self as pt, WaitStatus};

use crate::error::{StartError, TraceError};
use crate::events::{CheckpointStats, Event, ExitInfo, Failure, Metrics, Unrecoverable};
use crate::launch::{self, LaunchSpec};
use crate::procfs;
use crate::session::Session;
use crate::tracee::{Notice, Tracee};
use crate::tracker::Tracker;

/// The signals intercepted as crashes unless the program handles them.
pub const CRASH_SIGNALS: [i32; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGABRT,
];

fn crash_filter(sig: i32) -> bool {
    CRASH_SIGNALS.contains(&sig)
}

/// How checkpoints are taken and failures handled.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time between checkpoints.
    pub interval: Duration,
    /// Checkpoints kept (older ones are dropped).
    pub keep: usize,
    /// A failure with the same signature within this time after a rollback
    /// counts as a recurrence and rolls back one checkpoint further.
    /// Checkpoints are suspended for this long after a rollback so the
    /// older history survives while the outcome is unknown.
    pub recurrence_window: Duration,
    /// Crash signals to intercept (a subset of [`CRASH_SIGNALS`]).
    pub crash_signals: Vec<i32>,
    /// Use full copies even when the kernel can track writes (for testing
    /// the fallback).
    pub force_full_copy: bool,
    /// Send an [`Event::Checkpoint`] for every checkpoint.
    pub report_checkpoints: bool,
    /// Longest time before a stop of the process is noticed.
    pub poll_interval: Duration,
    /// Copy the written pages while the process still runs, just before
    /// each checkpoint stops it; the stop then copies only the pages written
    /// meanwhile. Shortens pauses (most of all the first copy of a large
    /// heap) at the cost of one more page-table scan per checkpoint, done on
    /// another CPU when there is one. No effect in full-copy mode.
    pub precopy: bool,
    /// Older history beyond the newest `keep` checkpoints: one checkpoint
    /// per `every`, back to `span` (None: older ones are dropped). A fault
    /// found late (a leak, a task blocked for seconds) can then still be
    /// rolled back to before it began, at the cost of the pages written
    /// over `span`, not of a copy per checkpoint.
    pub older: Option<Older>,
    /// Unix sockets, by the path they are bound to, whose lost and replayed
    /// bytes the peer tolerates (a line protocol whose reader resynchronises
    /// on line boundaries, like QMP or a heartbeat channel). The process's
    /// end must be bound to the path: a listening socket, or a connection
    /// accepted on it. Such sockets do not make a rollback impossible:
    /// bytes the process read since the checkpoint are lost to it, bytes it
    /// wrote are written again as it re-runs, and a connection accepted
    /// since the checkpoint is closed (the peer sees EOF and reconnects).
    pub replay_tolerant_sockets: Vec<PathBuf>,
    /// Changes to files are part of the checkpoint (see `crate::files`).
    pub files: crate::files::FilesConfig,
}

/// How checkpoints older than the newest `keep` are thinned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Older {
    /// At most one checkpoint per this much time.
    pub every: Duration,
    /// None older than this.
    pub span: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            interval: Duration::from_millis(50),
            keep: 8,
            recurrence_window: Duration::from_secs(1),
            crash_signals: CRASH_SIGNALS.to_vec(),
            force_full_copy: false,
            report_checkpoints: false,
            poll_interval: Duration::from_millis(5),
            precopy: true,
            older: None,
            replay_tolerant_sockets: Vec::new(),
            files: crate::files::FilesConfig::default(),
        }
    }
}

/// What to run under checkpointing.
#[derive(Debug)]
pub enum Target {
    /// Start this program (the engine is its parent and reaps it).
    Launch(LaunchSpec),
    /// Seize a running process (our child, or CAP_SYS_PTRACE). Its parent
    /// must not `waitpid` for it while we trace it.
    Seize {
        /// Process.
        pid: i32,
        /// Kill it if the tracer thread dies.
        kill_on_tracer_exit: bool,
    },
}

#[derive(Debug)]
enum Command {
    Rollback(Option<Instant>),
    Checkpoint,
    Kill,
    Detach,
}

/// Sends requests to the tracer thread from any thread (the [`Engine`]
/// itself is not `Sync`: its event receiver belongs to one reader).
/// Requests sent after the engine ended are ignored.
#[derive(Debug, Clone)]
pub struct Control {
    pid: i32,
    tx: Sender<Command>,
}

impl Control {
    /// The traced process.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Same as [`Engine::request_rollback`].
    pub fn request_rollback(&self, hung_since: Option<Instant>) {
        let _ = self.tx.send(Command::Rollback(hung_since));
    }

    /// Same as [`Engine::request_checkpoint`].
    pub fn request_checkpoint(&self) {
        let _ = self.tx.send(Command::Checkpoint);
    }

    /// Same as [`Engine::kill`].
    pub fn kill(&self) {
        let _ = self.tx.send(Command::Kill);
    }
}

/// Handle to a running checkpoint engine. Dropping it kills a launched
/// process and detaches from a seized one.
pub struct Engine {
    pid: i32,
    launched: bool,
    tx: Sender<Command>,
    events: Receiver<Event>,
    metrics: Arc<Metrics>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the tracer thread on `target`. Returns once the process runs
    /// under checkpointing (its first checkpoint taken).
    pub fn start(target: Target, config: Config) -> Result<Engine, StartError> {
        if !cfg!(target_arch = "x86_64") {
            return Err(StartError::UnsupportedArch);
        }
        let launched = matches!(target, Target::Launch(_));
        let (tx, rx) = mpsc::channel();
        let (etx, erx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let metrics = Arc::new(Metrics::default());
        let m = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("selfheal-ckpt".into())
            .spawn(move || tracer_main(target, config, rx, etx, m, ready_tx))
            .map_err(StartError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(pid)) => Ok(Engine {
                pid,
                launched,
                tx,
                events: erx,
                metrics,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(StartError::Thread(std::io::Error::other(
                    "checkpoint thread died during start",
                )))
            }
        }
    }

    /// The traced process.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A handle for requests from other threads (while one thread reads
    /// [`Engine::events`]).
    pub fn control(&self) -> Control {
        Control {
            pid: self.pid,
            tx: self.tx.clone(),
        }
    }

    /// Events, in order; [`Event::Exited`] or [`Event::Detached`] is last.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// Live counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Asks for a rollback because the process hangs. `hung_since` is when
    /// it was last seen making progress: checkpoints taken after that hold
    /// the hung state, so the newest one before it is restored (None: the
    /// newest checkpoint). A second request within the recurrence window
    /// goes one checkpoint further back.
    pub fn request_rollback(&self, hung_since: Option<Instant>) {
        let _ = self.tx.send(Command::Rollback(hung_since));
    }

    /// Asks for a checkpoint now.
    pub fn request_checkpoint(&self) {
        let _ = self.tx.send(Command::Checkpoint);
    }

    /// Kills the process; [`Event::Exited`] follows.
    pub fn kill(&self) {
        let _ = self.tx.send(Command::Kill);
    }

    /// Stops tracing and lets the process run on; [`Event::Detached`] follows.
    pub fn detach(&self) {
        let _ = self.tx.send(Command::Detach);
    }

    /// Waits for the tracer thread to end (after exit, kill or detach).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.tx.send(if self.launched {
                Command::Kill
            } else {
                Command::Detach
            });
            let _ = t.join();
        }
    }
}

fn exit_info(st: WaitStatus) -> ExitInfo {
    match st {
        WaitStatus::Exited(code) => ExitInfo {
            code: Some(code),
            signal: None,
            core_dumped: false,
        },
        WaitStatus::Signaled { sig, core_dumped } => ExitInfo {
            code: None,
            signal: Some(sig),
            core_dumped,
        },
        WaitStatus::Stopped { .. } => ExitInfo {
            code: None,
            signal: None,
            core_dumped: false,
        },
    }
}

/// Longest wait for a killed process to be reaped before the engine
/// reports it dying and polls on.
const KILL_WAIT: Duration = Duration::from_secs(10);

fn setup(
    target: Target,
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<(Session, CheckpointStats), StartError> {
    let (pid, tids, launched, pending) = match target {
        Target::Launch(spec) => {
            let (pid, pending) = launch::launch(&spec)?;
            (pid, Vec::new(), true, pending)
        }
        Target::Seize {
            pid,
            kill_on_tracer_exit,
        } => (pid, launch::seize(pid, kill_on_tracer_exit)?, false, 0),
    };
    let t = match Tracee::new(pid, &tids, crash_filter) {
        Ok(mut t) => {
            if launched {
                // Held before its first instruction (see `launch`). A
                // signal that came before it ran is sent again once the
                // first checkpoint is taken: delivered on resume as it
                // stands, a SIGSEGV from outside would kill the program
                // with no rollback and no event.
                t.set_pending(pid, 0);
                if pending != 0 {
                    t.deferred_signals.push((pid, pending));
                }
            }
            t
        }
        Err(source) => {
            if launched {
                // Not started yet: only the leader is there to reap.
                let _ = selfheal_sys::signal::kill_process(pid, libc::SIGKILL);
                let _ = crate::wait::wait_task_until(pid, KILL_WAIT);
            }
            return Err(StartError::Setup { pid, source });
        }
    };
    type Failed = Box<(TraceError, Tracee)>;
    let build = |mut t: Tracee| -> Result<(Session, CheckpointStats), Failed> {
        let mut notices = Vec::new();
        let started = Instant::now();
        if let Err(e) = t.stop_all(&mut notices) {
            return Err(Box::new((e, t)));
        }
        let mut s = Session::new(t, config.keep, config.force_full_copy)?;
        s.older = config.older;
        s.replay_tolerant = config.replay_tolerant_sockets.clone();
        let mut files = config.files.clone();
        files.tolerant_sockets.extend(
            config
                .replay_tolerant_sockets
                .iter()
                .map(|p| p.display().to_string()),
        );
        s.files =
            match crate::files::Files::install(&mut s.t, &mut s.remote, &files, metrics.clone()) {
                Ok(f) => f,
                Err(e) => return Err(Box::new((e, s.t))),
            };
        let stats = match s.checkpoint(started) {
            Ok(st) => st,
            Err(e) => return Err(Box::new((e, s.t))),
        };
        match s.t.resume_all() {
            Ok(()) => Ok((s, stats)),
            Err(e) => Err(Box::new((e, s.t))),
        }
    };
    build(t).map_err(|failed| {
        let (source, mut t) = *failed;
        if launched {
            // Its threads may be zombies only we can reap: reap them all.
            t.kill_and_reap(KILL_WAIT);
        }
        StartError::Setup { pid, source }
    })
}

fn tracer_main(
    target: Target,
    config: Config,
    rx: Receiver<Command>,
    events: Sender<Event>,
    metrics: Arc<Metrics>,
    ready: mpsc::SyncSender<Result<i32, StartError>>,
) {
    let (session, first) = match setup(target, &config, &metrics) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let pid = session.t.pid;
    let _ = events.send(Event::Started {
        pid,
        tracking: session.tracker.mode(),
        files: session.files.mode(),
    });
    metrics.record_checkpoint(&first, std::time::Duration::from_micros(first.pause_us));
    if config.report_checkpoints {
        let _ = events.send(Event::Checkpoint(first));
    }
    let _ = ready.send(Ok(pid));
    let mut tracer = Tracer {
        s: session,
        config,
        events,
        metrics,
        last_rollback: None,
        next_checkpoint: Instant::now(),
        dying: false,
        ended: false,
        told_leader_ended: false,
        told_wait_mask: false,
        checkpoint_requested: false,
    };
    tracer.next_checkpoint = Instant::now() + tracer.config.interval;
    tracer.run(rx);
}

/// What identifies "the same failure again".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signature {
    Crash { signal: i32, rip: u64 },
    External,
    Hang,
}

struct Tracer {
    s: Session,
    config: Config,
    events: Sender<Event>,
    metrics: Arc<Metrics>,
    /// When, to which checkpoint id, and for what the last rollback was.
    last_rollback: Option<(Instant, u64, Signature)>,
    next_checkpoint: Instant,
    /// Killed but not reaped yet (a thread in uninterruptible sleep): the
    /// loop only polls for its end.
    dying: bool,
    /// The process is gone or no longer ours; the loop ends.
    ended: bool,
    /// The end of the main thread was reported.
    told_leader_ended: bool,
    /// A checkpoint waiting for a thread's masked wait was reported (once
    /// until the next checkpoint).
    told_wait_mask: bool,
    /// A checkpoint was asked for and neither taken nor failed yet (a
    /// crash caught while stopping for it comes first): taken next.
    checkpoint_requested: bool,
}

/// Stops the current step: the process is gone, no longer ours, or dying.
struct Done;

impl Tracer {
    fn send(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn run(&mut self, rx: Receiver<Command>) {
        while !self.ended {
            let _ = if self.dying {
                self.step_dying(&rx)
            } else {
                self.step(&rx)
            };
        }
    }

    /// Killed, not reaped yet: wait for the end without blocking, still
    /// answering requests.
    fn step_dying(&mut self, rx: &Receiver<Command>) -> Result<(), Done> {
        let mut notices = Vec::new();
        let _ = self.s.t.poll(&mut notices);
        if self.s.t.is_gone() {
            return self.finish();
        }
        match rx.recv_timeout(self.config.poll_interval) {
            Ok(Command::Rollback(_)) => self.send(Event::RollbackImpossible {
                failure: Failure::Hang,
                why: Unrecoverable::Failed {
                    error: "the process is being killed".into(),
                },
            }),
            Ok(Command::Kill) => {
                let _ = selfheal_sys::signal::pidfd_send_signal(&self.s.t.pidfd, libc::SIGKILL);
            }
            Ok(Command::Checkpoint | Command::Detach) | Err(RecvTimeoutError::Timeout) => {}
            // Nobody listens any more: end the thread; the kernel detaches
            // us and the process is reaped when it finally dies.
            Err(RecvTimeoutError::Disconnected) => self.ended = true,
        }
        Ok(())
    }

    fn step(&mut self, rx: &Receiver<Command>) -> Result<(), Done> {
        let mut notices = Vec::new();
        if let Err(e) = self.s.t.poll(&mut notices) {
            return self.stop_failed(&notices, e);
        }
        self.handle_notices(notices)?;
        let now = Instant::now();
        if now >= self.next_checkpoint {
            self.checkpoint()?;
            // A checkpoint that took longer than the interval (a loaded
            // machine: every stop and injected call waits for a CPU) is
            // followed by at least as much time running: back-to-back
            // checkpoints would stop the program for good.
            let end = Instant::now();
            self.next_checkpoint =
                (self.next_checkpoint + self.config.interval).max(end + (end - now));
        } else if self.checkpoint_requested {
            self.checkpoint()?;
        }
        let wait = self
            .next_checkpoint
            .saturating_duration_since(Instant::now())
            .min(self.config.poll_interval);
        match rx.recv_timeout(wait) {
            Ok(cmd) => self.command(cmd),
            Err(RecvTimeoutError::Timeout) => Ok(()),
            // The handle is gone without a word: behave as Drop would have.
            Err(RecvTimeoutError::Disconnected) => self.command(Command::Kill),
        }
    }

    fn command(&mut self, cmd: Command) -> Result<(), Done> {
        match cmd {
            Command::Rollback(since) => {
                let mut notices = Vec::new();
                if let Err(e) = self.s.t.stop_all(&mut notices) {
                    return self.stop_failed(&notices, e);
                }
                if self.crash_in(&notices).is_some() {
                    return self.handle_notices(notices);
                }
                self.failure(Failure::Hang, None, since)
            }
            Command::Checkpoint => {
                self.checkpoint_requested = true;
                self.checkpoint()
            }
            Command::Kill => self.kill(),
            Command::Detach => {
                self.detach();
                self.send(Event::Detached);
                self.ended = true;
                Err(Done)
            }
        }
    }

    fn finish(&mut self) -> Result<(), Done> {
        // No rollback can come any more: stashed files go before anyone
        // is told the program ended.
        self.s.files.stop();
        let st = self.s.t.exit_status.unwrap_or(WaitStatus::Signaled {
            sig: libc::SIGKILL,
            core_dumped: false,
        });
        self.send(Event::Exited(exit_info(st)));
        self.ended = true;
        Err(Done)
    }

    /// Kills the process and reports its end; if it does not die within
    /// [`KILL_WAIT`], says so and polls on for the end (`dying`).
    fn kill(&mut self) -> Result<(), Done> {
        if self.dying {
            return Err(Done);
        }
        if self.s.t.is_gone() || self.s.t.kill_and_reap(KILL_WAIT) {
            return self.finish();
        }
        self.dying = true;
        self.send(Event::CheckpointFailed {
            error: format!(
                "pid {} was killed but did not end within {} s (a thread in uninterruptible sleep?); waiting for its end",
                self.s.t.pid,
                KILL_WAIT.as_secs()
            ),
        });
        Err(Done)
    }

    fn fatal(&mut self, e: TraceError) -> Result<(), Done> {
        if let TraceError::StepKilled { .. } = e {
            // We killed it: say why. If it could not act on the kill
            // (frozen, uninterruptible sleep), `kill` waits for its end
            // without blocking; nothing else is signalled.
            self.send(Event::CheckpointFailed {
                error: e.to_string(),
            });
        }
        if self.s.t.is_gone() || e.is_gone() {
            return self.kill();
        }
        // Lost control of the process: never leave it half-managed.
        self.send(Event::CheckpointFailed {
            error: e.to_string(),
        });
        self.kill()
    }

    fn resume(&mut self) -> Result<(), Done> {
        let r = self.s.t.resume_all();
        // A signal our system calls took and could not queue back was
        // re-sent from us: the program sees another sender. Not silent.
        for e in std::mem::take(&mut self.s.t.siginfo_lost) {
            self.send(Event::CheckpointFailed {
                error: e.to_string(),
            });
        }
        match r {
            Ok(()) => Ok(()),
            Err(e) => self.fatal(e),
        }
    }

    /// The program exec'd: its old memory is gone, start over.
    fn exec(&mut self) -> Result<(), Done> {
        self.s.reset();
        self.send(Event::Exec);
        let mut notices = Vec::new();
        let redo = |s: &mut Session, n: &mut Vec<Notice>, full: bool| -> Result<(), TraceError> {
            s.t.stop_all(n)?;
            s.t.reopen_mem()?;
            s.remote = crate::remote::Remote::locate(&s.t)?;
            s.remote.scratch(&mut s.t)?;
            s.tracker = Tracker::setup(&mut s.t, &s.remote, full)?;
            s.checkpoint(Instant::now())?;
            s.t.resume_all()
        };
        match redo(&mut self.s, &mut notices, self.config.force_full_copy) {
            Ok(()) => Ok(()),
            Err(e) => self.fatal(e),
        }
    }

    fn detach(&mut self) {
        // The filter stays (it cannot be removed); its calls are let
        // through unrecorded from now on.
        self.s.files.stop();
        let mut notices = Vec::new();
        if self.s.t.stop_all(&mut notices).is_ok() {
            if let Ok(maps) = procfs::read_maps(self.s.t.pid) {
                self.s.tracker.unregister_all(&maps);
            }
            if let Some(addr) = self.s.remote.scratch {
                let _ = self.s.remote.syscall(
                    &mut self.s.t,
                    libc::SYS_munmap,
                    [addr, 4096, 0, 0, 0, 0],
                );
            }
        }
        for (&tid, st) in &self.s.t.threads {
            let sig = match st {
                crate::tracee::ThreadState::Stopped { pending } => *pending,
                _ => 0,
            };
            let _ = pt::detach(tid, sig);
        }
    }
}
