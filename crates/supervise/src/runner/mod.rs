//! One app's supervision thread: a single event loop that polls the
//! program's exit descriptor, its notify socket and the mailbox (probes,
//! the no-progress sampler, signals, shutdown), and sleeps exactly until
//! the next deadline (readiness, watchdog, stop grace, backoff). Nothing
//! is sleep-polled, so a crash or a missed deadline is acted on within
//! milliseconds.
//!
//! - `mod.rs`: the loop, starting the program, its end and the restart
//!   decision;
//! - `hang.rs`: detectors (watchdog, readiness, probes, suspicions),
//!   evidence, recovery steps and stopping;
//! - `notify.rs`: the notify protocol's messages.

mod hang;
mod notify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use selfheal_config::{AppConfig, KillMode, Output};
use selfheal_event::{details_value, EventKind, EventSink, Severity};
use selfheal_sys::child::poll_readable_any;

use crate::app_lifecycle::{
    Ended, Finished, GaveUp, LastRun, LaunchFailed, Restarted, Retried, RetryCause, Started,
};
use crate::child::{
    ChildHandle, ExitStatus, LaunchError, LaunchSpec, Launcher, Program, StdioSpec,
};
use crate::events::app_event;
use crate::mailbox::{Mailbox, Msg, Waker};
use crate::notify::NotifySocket;
use crate::output::{open_output, StderrPump};
use crate::probe::{self, ProbeOutcome, ProbeThread};
use crate::progress::{SuspicionEvidence, SuspicionKind};
use crate::respawn::{Decision, EndCause, RestartTracker};
use crate::state::{AppState, Phase};
use crate::steps::RecoveryStep;
use crate::streams::{RunStreams, Stream};

/// How long the crash event waits for the stderr pump to catch up.
const STDERR_DRAIN: Duration = Duration::from_millis(100);

/// After SIGKILL, how long before the supervisor says the process refuses
/// to die (it is in uninterruptible sleep) — it keeps waiting.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Shortest delay before retrying a program that failed to start.
const MIN_LAUNCH_RETRY: Duration = Duration::from_millis(500);

/// Everything a supervision thread needs.
pub(crate) struct RunnerSetup {
    pub app: AppConfig,
    pub state: Arc<AppState>,
    pub sink: Arc<dyn EventSink>,
    pub launcher: Arc<dyn Launcher>,
    pub steps: Vec<Box<dyn RecoveryStep>>,
    pub notify: Option<NotifySocket>,
    pub proc_root: PathBuf,
    pub cgroup_procs: Vec<PathBuf>,
    pub inherit_stdin: bool,
    pub dry_run: bool,
    pub stop_signal: i32,
    pub death_signal: Option<i32>,
}

/// How supervision of one app ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    /// How the last run ended, if the program ever ran.
    pub last_exit: Option<ExitStatus>,
    /// The program could not be started (shell status 127 or 126).
    pub launch_failure: Option<i32>,
    /// The crash-loop breaker gave up.
    pub gave_up: bool,
}

impl Finish {
    /// The exit status `selfheal run` returns: the program's, as a shell
    /// reports it.
    pub fn shell_status(&self) -> i32 {
        match (self.launch_failure, self.last_exit) {
            (Some(s), _) => s,
            (None, Some(e)) => e.shell_status(),
            (None, None) => 1,
        }
    }
}

/// Why the supervisor is stopping the program.
#[derive(Debug, Clone, PartialEq)]
enum StopCause {
    /// A detector found it hung.
    Hang(crate::HangDetector),
    /// Shutdown or a forwarded terminating signal.
    Requested,
    /// It sent `STOPPING=1` and is expected to exit by itself.
    AppStopping,
}

#[derive(Debug)]
struct Stopping {
    cause: StopCause,
    deadline: Instant,
    signalled: bool,
    killed: bool,
}

/// One run of the program.
struct Live {
    handle: Box<dyn ChildHandle>,
    pid: i32,
    started: Instant,
    pump: Option<StderrPump>,
    _probes: Vec<ProbeThread>,
    _progress: Option<crate::progress_thread::ProgressThread>,
    /// The latest consecutive failures of each probe (at most 10 kept).
    probe_failures: Vec<Vec<ProbeOutcome>>,
    probe_failure_count: Vec<u32>,
    probe_successes: Vec<u32>,
    /// When each probe's last successful check started (a sign of progress).
    probe_last_ok: Vec<Option<Instant>>,
    ready_deadline: Option<Instant>,
    watchdog: Option<Duration>,
    /// The watchdog counts from here (readiness, then each `WATCHDOG=1`).
    watchdog_base: Option<Instant>,
    last_ping: Option<Instant>,
    suspicions: HashMap<SuspicionKind, SuspicionEvidence>,
    /// Since when each held suspicion has held (progress stopped then).
    suspicion_since: HashMap<SuspicionKind, Instant>,
    stopping: Option<Stopping>,
}

/// What the next start is.
#[derive(Debug, Clone)]
enum Pending {
    Restart {
        at: Instant,
        /// When the previous run's end was noticed.
        ended: Instant,
        attempt: u32,
        delay: Duration,
        cause: EndCause,
        previous: LastRun,
    },
    Retry {
        at: Instant,
    },
}

pub(crate) struct Runner {
    s: RunnerSetup,
    mailbox: Mailbox,
    mailbox_waker: Waker,
    tracker: RestartTracker,
    run_id: u64,
    live: Option<Live>,
    pending: Option<Pending>,
    healthy_at: Option<Instant>,
    shutting_down: bool,
    last_exit: Option<ExitStatus>,
    finished: Option<Finish>,
    warned_notify: bool,
    warned_kill: bool,
    /// The last end was a failure to start.
    launch_failures: bool,
    /// The standard streams of the last run that are regular files, as it
    /// started.
    streams: RunStreams,
}

impl Runner {
    pub(crate) fn new(s: RunnerSetup, mailbox: Mailbox, waker: Waker) -> Runner {
        let tracker = RestartTracker::new(s.app.restart, &s.app.backoff, &s.app.crash_loop);
        Runner {
            s,
            mailbox,
            mailbox_waker: waker,
            tracker,
            run_id: 0,
            live: None,
            pending: None,
            healthy_at: None,
            shutting_down: false,
            last_exit: None,
            finished: None,
            warned_notify: false,
            warned_kill: false,
            launch_failures: false,
            streams: RunStreams::default(),
        }
    }

    fn name(&self) -> &str {
        &self.s.app.name
    }

    fn emit(&self, kind: EventKind, severity: Severity, message: String, details: Value) {
        let pid = self.live.as_ref().map(|l| l.pid);
        match severity {
            Severity::Critical => tracing::warn!(app = %self.name(), event = %kind, "{message}"),
            _ => tracing::info!(app = %self.name(), event = %kind, "{message}"),
        }
        let e = app_event(kind, severity, self.name(), pid, message, details);
        if !self.s.sink.emit(e) {
            tracing::warn!(app = %self.name(), event = %kind, "event dropped: the event sink is full or stopped");
        }
    }

    /// Runs until supervision of the app ends.
    pub(crate) fn run(mut self) -> Finish {
        self.start(None);
        while self.finished.is_none() {
            self.turn();
        }
        self.s
            .state
            .set_phase(if self.finished.is_some_and(|f| f.gave_up) {
                Phase::GaveUp
            } else {
                Phase::Exited
            });
        self.finished.unwrap_or(Finish {
            last_exit: self.last_exit,
            launch_failure: None,
            gave_up: false,
        })
    }

    /// One wait and everything that woke it.
    fn turn(&mut self) {
        let now = Instant::now();
        let timeout = self
            .next_deadline()
            .map(|d| d.saturating_duration_since(now));
        let ready = {
            let mut fds = vec![self.mailbox.fd()];
            if let Some(n) = &self.s.notify {
                fds.push(n.fd());
            }
            if let Some(l) = &self.live {
                fds.push(l.handle.exit_fd());
            }
            match poll_readable_any(&fds, timeout) {
                Ok(m) => m,
                Err(e) => {
                    // Cannot happen with valid descriptors; do not spin.
                    tracing::error!(app = %self.name(), error = %e, "poll failed");
                    std::thread::sleep(Duration::from_millis(10));
                    0
                }
            }
        };
        let notify_bit = 1 << 1;
        let exit_bit = if self.s.notify.is_some() {
            1 << 2
        } else {
            1 << 1
        };
        if self.s.notify.is_some() && ready & notify_bit != 0 {
            self.read_notify();
        }
        if self.live.is_some() && ready & exit_bit != 0 {
            self.check_exit();
        }
        if ready & 1 != 0 {
            for (_, msg) in self.mailbox.drain() {
                self.handle(msg);
            }
        }
        self.check_timers(Instant::now());
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Vec<Instant> = Vec::new();
        if let Some(l) = &self.live {
            match &l.stopping {
                Some(s) => d.push(s.deadline),
                None => {
                    d.extend(l.ready_deadline);
                    if let (Some(base), Some(w)) = (l.watchdog_base, l.watchdog) {
                        d.push(base + w);
                    }
                }
            }
            d.extend(self.healthy_at);
        }
        match &self.pending {
            Some(Pending::Restart { at, .. }) | Some(Pending::Retry { at }) => d.push(*at),
            None => {}
        }
        d.into_iter().min()
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Shutdown => self.request_stop(None),
            Msg::Forward { signal, terminate } => {
                if terminate {
                    self.request_stop(Some(signal));
                } else if let Some(l) = &self.live {
                    if let Err(e) = l.handle.signal(signal, crate::child::SignalScope::Process) {
                        tracing::debug!(app = %self.name(), error = %e, "forwarding a signal");
                    }
                }
            }
            Msg::Probe { run, outcome } => {
                if run == self.run_id {
                    self.probe_outcome(outcome);
                }
            }
            Msg::Progress { run, report } => {
                if run == self.run_id {
                    self.progress_report(report);
                }
            }
        }
    }

    fn check_timers(&mut self, now: Instant) {
        if let Some(at) = self.healthy_at {
            if now >= at && self.live.is_some() {
                self.healthy_at = None;
                self.tracker.healthy();
            }
        }
        if self.live.is_some() {
            self.check_live_timers(now);
        }
        match &self.pending {
            Some(Pending::Restart { at, .. }) | Some(Pending::Retry { at }) if now >= *at => {
                let p = self.pending.take();
                self.start(p);
            }
            _ => {}
        }
    }

    /// Starts the program (`pending` says why: `None` is the first start).
    fn start(&mut self, pending: Option<Pending>) {
        // After a failure the killed run's partial output goes (or aside),
        // so the new run does not append to it.
        let failed = matches!(
            &pending,
            Some(Pending::Restart { cause, .. }) if *cause != EndCause::CleanExit
        ) || matches!(&pending, Some(Pending::Retry { .. }));
        let output = if failed {
            self.streams.reset(self.s.app.restart_output, self.run_id)
        } else {
            Vec::new()
        };
        self.run_id += 1;
        let now = Instant::now();
        let spec = match self.launch_spec() {
            Ok(spec) => spec,
            Err(e) => {
                self.launch_failed(None, e.to_string(), pending.is_none());
                return;
            }
        };
        let (spec, pump, streams) = spec;
        self.streams = streams;
        let handle = match self.s.launcher.launch(spec) {
            Ok(h) => h,
            Err(e) => {
                self.launch_failed(Some(&e), e.to_string(), pending.is_none());
                return;
            }
        };
        let pid = handle.pid();
        let app = &self.s.app;
        let readiness = app.notify.enabled && !app.notify.ready_timeout.get().is_zero();
        let watchdog = (app.notify.enabled && !app.notify.watchdog.get().is_zero())
            .then(|| app.notify.watchdog.get());
        let probes = self.start_probes(now);
        let progress = self.start_progress(pid);
        self.live = Some(Live {
            handle,
            pid,
            started: now,
            pump,
            _probes: probes,
            _progress: progress,
            probe_failures: vec![Vec::new(); app.probes.len()],
            probe_failure_count: vec![0; app.probes.len()],
            probe_successes: vec![0; app.probes.len()],
            probe_last_ok: vec![None; app.probes.len()],
            ready_deadline: readiness.then(|| now + app.notify.ready_timeout.get()),
            watchdog,
            watchdog_base: (!readiness).then_some(now),
            last_ping: None,
            suspicions: HashMap::new(),
            suspicion_since: HashMap::new(),
            stopping: None,
        });
        let healthy = app.crash_loop.healthy_after.get();
        self.healthy_at = (!healthy.is_zero()).then(|| now + healthy);
        self.s.state.started(pid, now);
        self.s.state.set_ready(!readiness);
        self.s.state.set_phase(if readiness {
            Phase::Starting
        } else {
            Phase::Running
        });
        let command = self.s.app.command.clone();
        match pending {
            None => self.emit(
                EventKind::AppStart,
                Severity::Info,
                format!("started {} (pid {pid})", self.name()),
                details_value(&Started { pid, command }),
            ),
            Some(Pending::Restart {
                ended,
                attempt,
                delay,
                cause,
                previous,
                ..
            }) => {
                self.s.state.restarted_after(ended.elapsed());
                self.emit(
                    EventKind::AppRestart,
                    Severity::Warning,
                    format!(
                        "restarted {} (pid {pid}, restart {attempt} since healthy, after {delay:?} backoff){}",
                        self.name(),
                        crate::streams::summary(&output)
                    ),
                    details_value(&Restarted {
                        pid,
                        attempt,
                        backoff_ms: delay.as_millis() as u64,
                        cause,
                        previous,
                        restart_output: self.s.app.restart_output,
                        output,
                    }),
                );
            }
            Some(Pending::Retry { .. }) => {
                self.s.state.restarted();
                self.emit(
                    EventKind::AppRestart,
                    Severity::Warning,
                    format!(
                        "retrying {} after giving up (pid {pid}){}",
                        self.name(),
                        crate::streams::summary(&output)
                    ),
                    details_value(&Retried {
                        pid,
                        cause: RetryCause::RetryAfterGaveUp,
                        restart_output: self.s.app.restart_output,
                        output,
                    }),
                );
            }
        }
    }

    /// The spec for the next run, the stderr pump if stderr is piped, and
    /// the run's regular-file streams as it starts.
    fn launch_spec(&self) -> std::io::Result<(LaunchSpec, Option<StderrPump>, RunStreams)> {
        let app = &self.s.app;
        let mut env: Vec<(String, String)> = app
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(n) = &self.s.notify {
            env.push(("NOTIFY_SOCKET".into(), n.path().display().to_string()));
            if !app.notify.watchdog.get().is_zero() {
                env.push((
                    "WATCHDOG_USEC".into(),
                    app.notify.watchdog.get().as_micros().to_string(),
                ));
            }
        }
        let stdout = open_output(&app.stdout)?;
        let piped = app.stderr_tail_lines > 0 || matches!(app.stderr, Output::File(_));
        let (stderr, pump) = if piped {
            let (pump, w) = StderrPump::start(&app.stderr, app.stderr_tail_lines, &app.name)?;
            (StdioSpec::Fd(w), Some(pump))
        } else {
            (open_output(&app.stderr)?, None)
        };
        let stdin = if self.s.inherit_stdin {
            StdioSpec::Inherit
        } else {
            StdioSpec::Null
        };
        let mut streams = RunStreams::default();
        for (stream, spec) in [
            (Stream::Stdin, &stdin),
            (Stream::Stdout, &stdout),
            (Stream::Stderr, &stderr),
        ] {
            // A piped stderr is the pump's: not the program's file.
            if stream == Stream::Stderr && pump.is_some() {
                continue;
            }
            match spec {
                StdioSpec::Inherit => streams.note_inherited(stream),
                StdioSpec::Fd(fd) => streams.note(stream, std::os::fd::AsFd::as_fd(fd)),
                StdioSpec::Null => {}
            }
        }
        Ok((
            LaunchSpec {
                program: Program {
                    argv: app.command.clone(),
                    env,
                    cwd: app.cwd.clone(),
                    stdio: [stdin, stdout, stderr],
                    new_process_group: true,
                    cgroup_procs: self.s.cgroup_procs.clone(),
                },
                kill_group_on_exit: app.kill_mode == KillMode::Group,
                parent_death_signal: self.s.death_signal,
            },
            pump,
            streams,
        ))
    }

    fn start_probes(&self, now: Instant) -> Vec<ProbeThread> {
        let mut v = Vec::new();
        for (i, p) in self.s.app.probes.iter().enumerate() {
            match probe::spawn(i, self.name(), p, now, self.run_id, self.waker()) {
                Ok(t) => v.push(t),
                Err(e) => {
                    tracing::error!(app = %self.name(), probe = %p.name, error = %e, "cannot start the probe thread; the probe is off for this run")
                }
            }
        }
        v
    }

    fn start_progress(&self, pid: i32) -> Option<crate::progress_thread::ProgressThread> {
        if !self.s.app.progress.enabled() {
            return None;
        }
        crate::progress_thread::spawn(
            self.name(),
            &self.s.app.progress,
            self.s.proc_root.clone(),
            pid,
            self.run_id,
            self.waker(),
        )
        .map_err(|e| tracing::error!(app = %self.name(), error = %e, "cannot start the no-progress sampler"))
        .ok()
    }

    fn waker(&self) -> Waker {
        self.mailbox_waker.clone()
    }

    fn launch_failed(&mut self, err: Option<&LaunchError>, message: String, first: bool) {
        let status = err.map(LaunchError::shell_status);
        self.emit(
            EventKind::AppCrash,
            Severity::Critical,
            format!("{}: {message}", self.name()),
            details_value(&LaunchFailed {
                launch_error: message.clone(),
                shell_status: Some(status),
            }),
        );
        // A missing program or directory on the very first try is a
        // configuration mistake: retrying will not fix it.
        if first && err.is_some_and(LaunchError::is_permanent) {
            self.finish("the program could not be started", status, false);
            return;
        }
        self.launch_failures = true;
        self.after_end(
            EndCause::Crash,
            LastRun::LaunchFailed(LaunchFailed {
                launch_error: message,
                shell_status: None,
            }),
        );
    }

    /// The program ended: collect it, report, decide.
    fn check_exit(&mut self) {
        let status = match self.live.as_mut().map(|l| l.handle.try_wait()) {
            Some(Ok(Some(s))) => s,
            Some(Ok(None)) | None => return,
            Some(Err(e)) => {
                tracing::error!(app = %self.name(), error = %e, "collecting the program's exit status");
                ExitStatus {
                    code: None,
                    signal: None,
                    core_dumped: false,
                }
            }
        };
        let Some(mut live) = self.live.take() else {
            return;
        };
        self.healthy_at = None;
        let tail = live
            .pump
            .as_mut()
            .map(|p| p.drain(STDERR_DRAIN))
            .unwrap_or_default();
        let uptime = live.started.elapsed();
        let cause = match live.stopping.as_ref().map(|s| &s.cause) {
            Some(StopCause::Hang(_)) => EndCause::Hang,
            Some(StopCause::Requested) => EndCause::Requested,
            Some(StopCause::AppStopping) | None if status.success() => EndCause::CleanExit,
            Some(StopCause::AppStopping) | None => EndCause::Crash,
        };
        let pid = live.pid;
        drop(live);
        self.last_exit = Some(status);
        self.s.state.ended(status, cause == EndCause::Crash);
        let ended = Ended {
            pid,
            exit_code: status.code,
            signal: status.signal,
            signal_name: status.signal.map(selfheal_sys::signal::signal_name),
            core_dumped: status.core_dumped,
            uptime_ms: uptime.as_millis() as u64,
            stderr_tail: tail,
        };
        if cause == EndCause::Crash {
            let e = app_event(
                EventKind::AppCrash,
                Severity::Critical,
                self.name(),
                Some(pid),
                format!("{} (pid {pid}) {}", self.name(), status.describe()),
                details_value(&ended),
            );
            tracing::warn!(app = %self.name(), "{}", e.message);
            self.s.sink.emit(e);
        }
        self.after_end(cause, LastRun::Ended(ended));
    }

    /// Applies the restart policy after a run ended (or failed to start).
    fn after_end(&mut self, cause: EndCause, previous: LastRun) {
        let now = Instant::now();
        let decision = if self.shutting_down {
            Decision::Finish
        } else {
            self.tracker.decide(cause, now)
        };
        match decision {
            Decision::Restart { delay, attempt } => {
                // Failing to start costs no time: never retry in a tight loop.
                let delay = if std::mem::take(&mut self.launch_failures) {
                    delay.max(MIN_LAUNCH_RETRY)
                } else {
                    delay
                };
                self.s.state.set_phase(Phase::Backoff);
                self.pending = Some(Pending::Restart {
                    at: now + delay,
                    ended: now,
                    attempt,
                    delay,
                    cause,
                    previous,
                });
            }
            Decision::Finish => {
                let why = match cause {
                    EndCause::Requested => "stopped on request".to_string(),
                    _ if self.shutting_down => "stopped on request".to_string(),
                    _ => format!(
                        "restart policy {} does not restart it",
                        self.s.app.restart.as_str()
                    ),
                };
                self.finish(&why, None, false);
            }
            Decision::GiveUp { restarts } => {
                let window = self.s.app.crash_loop.window;
                let retry = self.s.app.crash_loop.retry_after.get();
                self.emit(
                    EventKind::AppGaveUp,
                    Severity::Critical,
                    format!(
                        "gave up on {}: {restarts} restarts within {window} and it failed again{}",
                        self.name(),
                        if retry.is_zero() {
                            String::new()
                        } else {
                            format!("; retrying in {}", selfheal_config::HumanDuration(retry))
                        }
                    ),
                    details_value(&GaveUp {
                        restarts,
                        window_ms: window.get().as_millis() as u64,
                        retry_after_ms: retry.as_millis() as u64,
                        last: previous,
                    }),
                );
                if retry.is_zero() {
                    self.finished = Some(Finish {
                        last_exit: self.last_exit,
                        launch_failure: None,
                        gave_up: true,
                    });
                } else {
                    self.s.state.set_phase(Phase::GaveUp);
                    self.tracker.healthy();
                    self.pending = Some(Pending::Retry { at: now + retry });
                }
            }
        }
    }

    fn finish(&mut self, why: &str, launch_failure: Option<i32>, gave_up: bool) {
        let last = self.last_exit;
        self.emit(
            EventKind::AppExit,
            Severity::Info,
            format!(
                "supervision of {} ended: {why}{}",
                self.name(),
                last.map(|s| format!(" (last run {})", s.describe()))
                    .unwrap_or_default()
            ),
            details_value(&Finished {
                reason: why.to_string(),
                last_exit: last,
                restarts: self.s.state.restarts(),
            }),
        );
        self.pending = None;
        self.finished = Some(Finish {
            last_exit: last,
            launch_failure,
            gave_up,
        });
    }
}
