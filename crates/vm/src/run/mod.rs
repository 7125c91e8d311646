//! One run of a guest: QEMU started (under the checkpoint engine when
//! checkpoints are on), QMP and the guest link connected, and a loop that
//! turns what it sees into [`Policy`] inputs and carries out its decisions,
//! until QEMU exits, a restart is decided or the run is stopped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfheal_checkpoint::{self as ckpt, ExitInfo, Failure};
use selfheal_config::VmConfig;
use selfheal_event::{Class, Event, EventKind, EventSink, Severity};
use selfheal_guestlink::{GuestMessage, HostMessage};

use crate::events::{alert_held, forwarded, onset_back, vm_event, GuestClock, GuestFilter};
use crate::host::HostProbe;
use crate::link::{Link, LinkInput};
use crate::metrics::VmMetrics;
use crate::pauses::Pauses;
use crate::policy::{Decision, HostEvidence, Policy, PolicyConfig, Trigger};
use crate::process::{Process, ProcessError};
use crate::qemu::{self, Sockets};
use crate::qmp::{Qmp, QmpEvent};
use crate::tell::StopTeller;
use crate::vcpu_wait::VcpuWaits;

mod decide;
mod inputs;

/// How long QMP gets to come up after QEMU starts (TCG on a busy host).
const QMP_START: Duration = Duration::from_secs(60);
/// Every QMP command's timeout.
const QMP_TIMEOUT: Duration = Duration::from_secs(2);
/// Main loop period.
const TICK: Duration = Duration::from_millis(50);
/// Host CPU-time sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The vCPU threads' waits are read and told to the guest this often: a
/// wait is placed no better than its interval, so several must fit in the
/// guest's stall bound (200 ms).
const WAITS_EVERY: Duration = Duration::from_millis(50);
/// A `checkpoint` event with the pauses' p50/p99 this often.
const PAUSE_SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The QEMU arguments conflict with what selfheal adds.
    #[error("vm {vm}: {source}")]
    Args {
        /// The VM.
        vm: String,
        /// What conflicts.
        source: qemu::ArgsError,
    },
    /// The directory for the sockets could not be made.
    #[error(
        "vm {vm}: cannot create a private directory for the QMP and guest-link sockets: {source}"
    )]
    RuntimeDir {
        /// The VM.
        vm: String,
        /// Why.
        source: std::io::Error,
    },
    /// QEMU could not be started.
    #[error("vm {vm}: {source}")]
    Start {
        /// The VM.
        vm: String,
        /// Why.
        source: ProcessError,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// QEMU exited (the guest powered off, or QEMU died).
    Exited {
        /// Its status.
        info: ExitInfo,
        /// QMP's SHUTDOWN reason, if one came (`guest-shutdown`, …).
        reason: Option<String>,
        /// QEMU got as far as answering QMP (false: it failed while
        /// starting, a configuration error that a restart repeats).
        started: bool,
    },
    /// The policy decided to start the guest again; QEMU was killed.
    Restart {
        /// Why.
        why: String,
    },
    /// [`Stop`] was asked for; QEMU was told to quit.
    Stopped,
}

/// Asks a running VM to stop (from another thread).
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Asks for the stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Asked?
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything that reaches the run loop.
#[derive(Debug)]
pub(crate) enum Input {
    Engine(ckpt::Event),
    Exited(ExitInfo),
    Qmp(QmpEvent),
    QmpUp,
    Link(LinkInput),
}

/// QMP, reconnected whenever it drops (a rollback to a checkpoint from
/// before the connection closes it).
struct QmpConn {
    current: Arc<Mutex<Option<Arc<Qmp>>>>,
    stop: Arc<AtomicBool>,
}

impl QmpConn {
    fn spawn(path: PathBuf, tx: Sender<Input>) -> std::io::Result<QmpConn> {
        let current: Arc<Mutex<Option<Arc<Qmp>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (current.clone(), stop.clone());
        std::thread::Builder::new()
            .name("selfheal-vm-qmp".into())
            .spawn(move || {
                let mut first = true;
                while !s.load(Ordering::Relaxed) {
                    let (etx, erx) = mpsc::channel();
                    let wait = if first { QMP_START } else { QMP_TIMEOUT };
                    let Ok(q) = Qmp::connect(&path, wait, etx) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    first = false;
                    *lock(&c) = Some(Arc::new(q));
                    if tx.send(Input::QmpUp).is_err() {
                        break;
                    }
                    for ev in erx {
                        if ev == QmpEvent::Closed {
                            break;
                        }
                        if tx.send(Input::Qmp(ev)).is_err() {
                            return;
                        }
                    }
                    *lock(&c) = None;
                }
            })?;
        Ok(QmpConn { current, stop })
    }

    fn get(&self) -> Option<Arc<Qmp>> {
        lock(&self.current).clone()
    }
}

impl Drop for QmpConn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the client shuts its socket: the thread's loop ends.
        lock(&self.current).take();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One run of a VM.
pub(crate) struct Run<'a> {
    cfg: &'a VmConfig,
    sink: &'a Arc<dyn EventSink>,
    metrics: &'a Arc<VmMetrics>,
    stop: &'a Stop,
    proc: Process,
    rx: Receiver<Input>,
    qmp: QmpConn,
    link: Link,
    /// The guest reads the host's messages (its hello said so).
    guest_listens: bool,
    /// The guest asked for its vCPUs' waits (its hello said so).
    guest_wants_waits: bool,
    /// Reads those waits.
    vcpu_waits: VcpuWaits,
    /// Rollbacks told to the guest.
    told_rollbacks: u64,
    /// The last rollback notice, not sent yet (the link was down).
    untold: Option<Vec<u8>>,
    /// The guest's clock against the host's (from heartbeats).
    clock: GuestClock,
    /// Checkpoint pauses since the last summary event, µs.
    pauses: Vec<u64>,
    /// Checkpoint pauses of the whole run, µs (for the run's summary).
    all_pauses: Vec<u64>,
    /// When QEMU stood stopped for checkpoints (a guest stall report that
    /// is only those is not acted on).
    stops: Pauses,
    /// The same stops, for the guest (its own stall detector excuses them).
    teller: StopTeller,
    /// A line of stops did not go out: none is sent until the guest beats.
    teller_waits: bool,
    next_pause_summary: Instant,
    probe: HostProbe,
    policy: Policy,
    filter: GuestFilter,
    boot_id: Option<String>,
    status: Option<String>,
    shutdown_reason: Option<String>,
    /// The trigger of the rollback asked for, until the engine answers.
    rollback: Option<(Trigger, u32)>,
    started: Instant,
    heard: bool,
    qmp_seen: bool,
    told_no_link: bool,
    _dir: tempfile::TempDir,
}

impl<'a> Run<'a> {
    /// Starts QEMU and connects to it.
    pub(crate) fn start(
        cfg: &'a VmConfig,
        sink: &'a Arc<dyn EventSink>,
        metrics: &'a Arc<VmMetrics>,
        stop: &'a Stop,
    ) -> Result<Run<'a>, RunError> {
        let vm = cfg.name.clone();
        let short: String = vm.chars().take(16).collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("shvm-{short}-"))
            .tempdir()
            .map_err(|source| RunError::RuntimeDir {
                vm: vm.clone(),
                source,
            })?;
        let sockets = Sockets::in_dir(dir.path());
        let argv =
            qemu::command(&cfg.command, &sockets, &cfg.port).map_err(|source| RunError::Args {
                vm: vm.clone(),
                source,
            })?;
        let (tx, rx) = mpsc::channel();
        let proc = Process::start(cfg, argv.clone(), &sockets, tx.clone()).map_err(|source| {
            RunError::Start {
                vm: vm.clone(),
                source,
            }
        })?;
        let io = |source| RunError::RuntimeDir {
            vm: vm.clone(),
            source,
        };
        let qmp = QmpConn::spawn(sockets.qmp.clone(), tx.clone()).map_err(io)?;
        let link = Link::spawn(sockets.link.clone(), tx, Input::Link).map_err(io)?;
        let c = &cfg.checkpoint;
        let policy = Policy::new(PolicyConfig {
            heartbeat_timeout: (!cfg.heartbeat_timeout.get().is_zero())
                .then(|| cfg.heartbeat_timeout.get()),
            rollback_on: cfg.rollback_on.clone(),
            guest_grace: cfg.guest_grace.get(),
            settle: cfg.settle.get(),
            recurrence_window: c.recurrence_window.get(),
            checkpoints: c.enabled() && proc.is_traced(),
            max_rollbacks: c.max_rollbacks,
            window: cfg.restart_window.get(),
            // As the engine keeps them (`process::engine_config`).
            history: Some(if c.older_every.get().is_zero() {
                c.interval.get() * c.keep as u32
            } else {
                c.older_span.get()
            }),
        });
        metrics.up.store(1, Ordering::Relaxed);
        sink.emit(vm_event(
            &vm,
            EventKind::VmStart,
            Severity::Info,
            format!(
                "started QEMU pid {}{}",
                proc.pid(),
                if proc.is_traced() {
                    format!(", checkpoints every {}", c.interval)
                } else {
                    ", no checkpoints (a panic or hang restarts the guest)".into()
                }
            ),
            selfheal_event::details_value(&crate::details::StartDetails {
                pid: proc.pid(),
                command: argv.clone(),
                checkpoints: proc.is_traced().then(|| crate::details::CheckpointPlan {
                    interval_ms: c.interval.get().as_millis() as u64,
                    keep: c.keep,
                    older_every_ms: c.older_every.get().as_millis() as u64,
                    older_span_ms: c.older_span.get().as_millis() as u64,
                }),
            }),
        ));
        Ok(Run {
            cfg,
            sink,
            metrics,
            stop,
            probe: HostProbe::new(PathBuf::from("/proc"), proc.pid()),
            vcpu_waits: VcpuWaits::new(PathBuf::from("/proc"), proc.pid()),
            proc,
            rx,
            qmp,
            link,
            guest_listens: false,
            guest_wants_waits: false,
            told_rollbacks: 0,
            untold: None,
            clock: GuestClock::default(),
            pauses: Vec::new(),
            all_pauses: Vec::new(),
            stops: Pauses::default(),
            teller: StopTeller::default(),
            teller_waits: false,
            next_pause_summary: Instant::now() + PAUSE_SUMMARY_EVERY,
            policy,
            filter: GuestFilter::new(50.0, 500.0),
            boot_id: None,
            status: None,
            shutdown_reason: None,
            rollback: None,
            started: Instant::now(),
            heard: false,
            qmp_seen: false,
            told_no_link: false,
            _dir: dir,
        })
    }

    fn emit(&self, kind: EventKind, severity: Severity, msg: String, details: serde_json::Value) {
        self.sink
            .emit(vm_event(&self.cfg.name, kind, severity, msg, details));
    }

    fn finish(mut self, end: RunEnd) -> RunEnd {
        self.pause_summary(Instant::now(), true);
        self.metrics.up.store(0, Ordering::Relaxed);
        end
    }

    fn end_stopped(mut self) -> RunEnd {
        self.pause_summary(Instant::now(), true);
        if let Some(q) = self.qmp.get() {
            q.quit();
        }
        self.proc.wait_or_kill(&self.rx, Duration::from_secs(5));
        self.finish(RunEnd::Stopped)
    }

    fn restart(mut self_: Run<'_>, why: String) -> RunEnd {
        self_.proc.kill();
        self_.proc.wait_or_kill(&self_.rx, Duration::from_secs(10));
        RunEnd::Restart { why }
    }

    fn input(&mut self, input: Input) -> Option<RunEnd> {
        let now = Instant::now();
        match input {
            Input::Exited(info) => {
                return Some(RunEnd::Exited {
                    info,
                    reason: self.shutdown_reason.take(),
                    started: self.qmp_seen,
                })
            }
            Input::Engine(e) => return self.engine_event(e, now),
            Input::QmpUp => {
                self.qmp_seen = true;
                if let Some(q) = self.qmp.get() {
                    if self.probe.vcpus().is_empty() {
                        if let Ok(v) = q.vcpu_threads(QMP_TIMEOUT) {
                            self.vcpu_waits.set_vcpus(&v);
                            self.probe.set_vcpus(v);
                        }
                    }
                    self.status = q.query_status(QMP_TIMEOUT).ok().map(|s| s.status);
                }
            }
            Input::Qmp(ev) => self.qmp_event(ev, now),
            Input::Link(LinkInput::Message { msg, read_us }) => {
                self.guest_message(msg, now, read_us)
            }
            Input::Link(LinkInput::Bad(_)) => VmMetrics::inc(&self.metrics.guest_bad_lines),
            Input::Link(LinkInput::Up) => {
                if let Some(line) = self.untold.take() {
                    if !self.link.send(&line) {
                        self.untold = Some(line);
                    }
                }
            }
            Input::Link(LinkInput::Down) => {}
        }
        None
    }
}

/// Starts a run and runs it to its end.
pub(crate) fn run_once(
    cfg: &VmConfig,
    sink: &Arc<dyn EventSink>,
    metrics: &Arc<VmMetrics>,
    stop: &Stop,
) -> Result<RunEnd, RunError> {
    Ok(Run::start(cfg, sink, metrics, stop)?.run())
}

impl Run<'_> {
    /// Runs until QEMU exits, a restart is decided (QEMU is then killed),
    /// or a stop is asked for.
    fn run(mut self) -> RunEnd {
        let mut next_sample = Instant::now();
        let mut next_waits = Instant::now();
        loop {
            if self.stop.is_set() {
                return self.end_stopped();
            }
            let end = match self.rx.recv_timeout(TICK) {
                Ok(input) => self.input(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(RunEnd::Exited {
                    info: ExitInfo {
                        code: None,
                        signal: None,
                        core_dumped: false,
                    },
                    reason: Some("lost track of QEMU".into()),
                    started: self.qmp_seen,
                }),
            };
            let end = end.or_else(|| {
                let now = Instant::now();
                if now >= next_sample {
                    self.probe.sample(now);
                    next_sample = now + SAMPLE_EVERY;
                }
                if now >= next_waits {
                    self.tell_waits();
                    next_waits = now + WAITS_EVERY;
                }
                self.pause_summary(now, false);
                self.tick(now)
            });
            match end {
                None => {}
                Some(RunEnd::Restart { why }) => {
                    self.metrics.up.store(0, Ordering::Relaxed);
                    return Run::restart(self, why);
                }
                Some(end) => return self.finish(end),
            }
        }
    }
}
