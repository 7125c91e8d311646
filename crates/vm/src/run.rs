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
use serde_json::json;

use crate::events::{alert_held, forwarded, onset_back, vm_event, GuestClock, GuestFilter};
use crate::host::HostProbe;
use crate::link::{Link, LinkInput};
use crate::metrics::VmMetrics;
use crate::policy::{Decision, HostEvidence, Policy, PolicyConfig, Trigger};
use crate::process::{Process, ProcessError};
use crate::qemu::{self, Sockets};
use crate::qmp::{Qmp, QmpEvent};

/// How long QMP gets to come up after QEMU starts (TCG on a busy host).
const QMP_START: Duration = Duration::from_secs(60);
/// Every QMP command's timeout.
const QMP_TIMEOUT: Duration = Duration::from_secs(2);
/// Main loop period.
const TICK: Duration = Duration::from_millis(50);
/// Host CPU-time sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
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
            json!({
                "pid": proc.pid(),
                "command": argv,
                "checkpoints": proc.is_traced().then(|| json!({
                    "interval_ms": c.interval.get().as_millis() as u64,
                    "keep": c.keep,
                    "older_every_ms": c.older_every.get().as_millis() as u64,
                    "older_span_ms": c.older_span.get().as_millis() as u64,
                })),
            }),
        ));
        Ok(Run {
            cfg,
            sink,
            metrics,
            stop,
            probe: HostProbe::new(PathBuf::from("/proc"), proc.pid()),
            proc,
            rx,
            qmp,
            link,
            guest_listens: false,
            told_rollbacks: 0,
            untold: None,
            clock: GuestClock::default(),
            pauses: Vec::new(),
            all_pauses: Vec::new(),
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
                            self.probe.set_vcpus(v);
                        }
                    }
                    self.status = q.query_status(QMP_TIMEOUT).ok().map(|s| s.status);
                }
            }
            Input::Qmp(ev) => self.qmp_event(ev, now),
            Input::Link(LinkInput::Message(m)) => self.guest_message(m, now),
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

    fn qmp_event(&mut self, ev: QmpEvent, now: Instant) {
        match ev {
            QmpEvent::GuestPanicked { .. } => {
                self.status = Some("guest-panicked".into());
                self.policy.panic(now);
            }
            QmpEvent::Stop => self.status = Some("paused".into()),
            QmpEvent::Resume => self.status = Some("running".into()),
            QmpEvent::Shutdown { reason, .. } => self.shutdown_reason = Some(reason),
            QmpEvent::Reset {
                guest: true,
                reason,
            } => self.emit(
                EventKind::VmRestart,
                Severity::Warning,
                format!("the guest reset itself ({reason})"),
                json!({ "reason": reason, "by": "guest" }),
            ),
            QmpEvent::Reset { .. } | QmpEvent::Other(_) | QmpEvent::Closed => {}
        }
    }

    fn guest_message(&mut self, m: GuestMessage, now: Instant) {
        match m {
            GuestMessage::Hello {
                boot_id,
                version,
                host_messages,
                ..
            } => {
                self.guest_listens = host_messages;
                if self.boot_id.as_ref().is_some_and(|b| *b != boot_id) {
                    self.emit(
                        EventKind::VmRestart,
                        Severity::Warning,
                        "the guest rebooted by itself (new boot id)".into(),
                        json!({ "boot_id": boot_id, "by": "guest" }),
                    );
                }
                if !self.heard {
                    tracing::info!(vm = %self.cfg.name, version, "guest link up");
                }
                self.boot_id = Some(boot_id);
            }
            GuestMessage::Heartbeat { unix_ms, .. } => {
                self.heard = true;
                self.clock.heartbeat(
                    unix_ms,
                    selfheal_event::unix_ms(std::time::SystemTime::now()),
                );
                self.policy.heartbeat(now);
                self.metrics.heartbeat(now);
            }
            GuestMessage::Event { event } => self.guest_event(*event, now),
        }
    }

    fn guest_event(&mut self, e: Event, now: Instant) {
        if !self.filter.admit(&e, now) {
            VmMetrics::inc(&self.metrics.guest_events_dropped);
            return;
        }
        let class = e
            .details
            .get("class")
            .and_then(|c| c.as_str())
            .and_then(|c| c.parse::<Class>().ok());
        let made = self.clock.to_host(
            e.time_unix_ms,
            selfheal_event::unix_ms(std::time::SystemTime::now()),
            now,
        );
        match (e.kind, class) {
            (EventKind::Diagnosis, Some(class)) => {
                let back = onset_back(&e.details);
                if let Some(n) = self
                    .policy
                    .guest_diagnosis_at(now, made, class, back, &e.message)
                {
                    self.emit(
                        EventKind::Dismissed,
                        Severity::Info,
                        format!("the guest's {class} diagnosis is not acted on: {}", n.why),
                        json!({
                            "class": class.as_str(),
                            "why": n.why,
                            "after_rollback_ms": n.after_rollback.as_millis() as u64,
                            "covers_ms": n.covers.as_millis() as u64,
                            "settle_ms": self.cfg.settle.get().as_millis() as u64,
                            "guest_message": e.message,
                        }),
                    );
                }
            }
            (EventKind::Alert, _) => self.policy.guest_alert(now, made, alert_held(&e.details)),
            (EventKind::Recovery, Some(class))
                if e.details.get("outcome").and_then(|o| o.as_str()) == Some("recovered") =>
            {
                self.policy.guest_recovered(class)
            }
            _ => {}
        }
        VmMetrics::inc(&self.metrics.guest_events);
        self.sink.emit(forwarded(&self.cfg.name, e));
    }

    fn engine_event(&mut self, e: ckpt::Event, now: Instant) -> Option<RunEnd> {
        let m = self.metrics;
        match e {
            ckpt::Event::Checkpoint(s) => {
                VmMetrics::inc(&m.checkpoints);
                let stopped = s.pause_us + s.registration_pause_us;
                m.pause.observe(Duration::from_micros(stopped));
                self.pauses.push(stopped);
                m.memory_bytes.store(s.memory_bytes, Ordering::Relaxed);
                m.held.store(s.held as u64, Ordering::Relaxed);
            }
            ckpt::Event::CheckpointFailed { error } => {
                if m.checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(100)
                {
                    self.emit(
                        EventKind::Checkpoint,
                        Severity::Warning,
                        format!("a VM checkpoint failed (QEMU runs on): {error}"),
                        json!({ "error": error }),
                    );
                }
            }
            ckpt::Event::RolledBack(r) => {
                VmMetrics::inc(&m.rollbacks);
                m.rollback.observe(Duration::from_micros(r.duration_us));
                let (trigger, attempt) = match (&r.failure, self.rollback.take()) {
                    (Failure::Hang, Some(t)) => {
                        self.policy.rolled_back(now);
                        (t.0.name().to_string(), Some(t.1))
                    }
                    // The engine rolled back a crash of QEMU itself.
                    (f, _) => (format!("qemu {f:?}"), None),
                };
                let told = self.tell_rollback(r.checkpoint_age_ms, r.duration_us, &trigger);
                self.emit(
                    EventKind::VmRollback,
                    Severity::Critical,
                    format!(
                        "rolled back in place to a checkpoint {} ms old ({} pages, QEMU stopped {:.1} ms){}",
                        r.checkpoint_age_ms,
                        r.pages_restored,
                        r.duration_us as f64 / 1000.0,
                        attempt
                            .filter(|a| *a > 0)
                            .map_or(String::new(), |a| format!(", attempt {}", a + 1))
                    ),
                    json!({
                        "trigger": trigger,
                        "attempt": attempt,
                        "rollback_ms": r.duration_us as f64 / 1000.0,
                        "guest_told": told,
                        "report": r,
                    }),
                );
            }
            ckpt::Event::RollbackImpossible { failure, why } => {
                VmMetrics::inc(&m.rollbacks_impossible);
                if failure == Failure::Hang && self.rollback.take().is_some() {
                    let d = self.policy.rollback_failed(&format!("{why:?}"));
                    return self.decide(d, now);
                }
            }
            ckpt::Event::Exited(info) => {
                return Some(RunEnd::Exited {
                    info,
                    reason: self.shutdown_reason.take(),
                    started: self.qmp_seen,
                })
            }
            ckpt::Event::Started { .. } | ckpt::Event::Exec | ckpt::Event::Detached => {}
        }
        None
    }

    /// Tells the guest it was rolled back (when it listens); the result
    /// for the event: `Some(sent)`, or `None` when the guest does not
    /// listen.
    fn tell_rollback(&mut self, age_ms: u64, duration_us: u64, trigger: &str) -> Option<bool> {
        if !self.guest_listens {
            return None;
        }
        self.told_rollbacks += 1;
        let m = HostMessage::Rollback {
            seq: self.told_rollbacks,
            rolled_back_ms: age_ms,
            pause_ms: duration_us / 1000,
            trigger: trigger.to_string(),
        };
        let line = m.to_line();
        let sent = self.link.send(&line);
        if !sent {
            // The link is down (a rollback to before QEMU accepted it
            // closes it): said again once it is up.
            self.untold = Some(line);
        }
        Some(sent)
    }

    /// A `checkpoint` event with the pauses since the last one, and over
    /// the run so far (p50, p99, max, ms).
    fn pause_summary(&mut self, now: Instant, last: bool) {
        if now < self.next_pause_summary && !last {
            return;
        }
        self.next_pause_summary = now + PAUSE_SUMMARY_EVERY;
        if self.pauses.is_empty() {
            return;
        }
        let window = pause_stats(&mut self.pauses);
        self.all_pauses.append(&mut self.pauses);
        let run = pause_stats(&mut self.all_pauses);
        self.emit(
            EventKind::Checkpoint,
            Severity::Info,
            format!(
                "checkpoint pauses: {} in the last {} s, p50 {:.1} ms, p99 {:.1} ms (run: {}, p50 {:.1} ms, p99 {:.1} ms)",
                window["n"], PAUSE_SUMMARY_EVERY.as_secs(), window["p50_ms"].as_f64().unwrap_or(0.0),
                window["p99_ms"].as_f64().unwrap_or(0.0), run["n"],
                run["p50_ms"].as_f64().unwrap_or(0.0), run["p99_ms"].as_f64().unwrap_or(0.0)
            ),
            json!({ "pauses": window, "run_pauses": run }),
        );
        // The run's list is bounded: at 20 a second, an hour is 72 000.
        if self.all_pauses.len() > 100_000 {
            self.all_pauses.drain(..50_000);
        }
    }

    fn evidence(&self, silent: Duration) -> HostEvidence {
        // The later part of the silence only: the heartbeat stopped at most
        // one heartbeat period after the last one arrived.
        let window = silent.saturating_sub(Duration::from_millis(300));
        let usage = self.probe.over(window);
        let (qemu_cpu_ms, qemu_scheduled, window_ms, vcpus, vcpu_run_ms, vcpu_wait_ms) = match usage
        {
            Some(u) => (
                u.cpu_ms,
                Some(u.scheduled),
                u.span.as_secs_f64() * 1e3,
                u.vcpus,
                u.vcpu_run_ms,
                u.vcpu_wait_ms,
            ),
            None => (f64::NAN, None, 0.0, Vec::new(), None, None),
        };
        let (status, qmp_unresponsive) = match self.qmp.get() {
            Some(q) => match q.query_status(Duration::from_millis(1000)) {
                Ok(s) => (Some(s.status), false),
                Err(_) => (None, true),
            },
            None => (self.status.clone(), false),
        };
        let runnable_ms = Instant::now()
            .checked_sub(silent)
            .and_then(|since| self.probe.runnable_since(since));
        HostEvidence {
            qemu_cpu_ms,
            runnable_ms,
            qemu_scheduled,
            window_ms,
            vcpus,
            vcpu_run_ms,
            vcpu_wait_ms,
            status,
            qmp_unresponsive,
        }
    }

    fn tick(&mut self, now: Instant) -> Option<RunEnd> {
        if !self.heard && !self.told_no_link && self.started.elapsed() > Duration::from_secs(120) {
            self.told_no_link = true;
            self.emit(
                EventKind::VmStart,
                Severity::Warning,
                "no heartbeat from the guest after 2 minutes: hang detection by heartbeat is off until one comes (run `selfheal watch` in the guest; its [host_link] port must match)".into(),
                json!({ "port": self.cfg.port }),
            );
        }
        let mut policy = std::mem::replace(&mut self.policy, Policy::new(placeholder()));
        let d = policy.tick(now, |silent| self.evidence(silent));
        self.policy = policy;
        let d = d?;
        self.decide(d, now)
    }

    fn decide(&mut self, d: Decision, now: Instant) -> Option<RunEnd> {
        match d {
            Decision::Rollback {
                trigger,
                before,
                attempt,
            } => {
                self.metrics.incident(trigger.name());
                let (kind, what) = describe(&trigger);
                let back_ms = now.saturating_duration_since(before).as_millis() as u64;
                self.emit(
                    kind,
                    Severity::Critical,
                    format!(
                        "{what}; rolling the VM back to before {back_ms} ms ago{}",
                        if attempt > 0 {
                            format!(
                                " (attempt {}: the last rollback did not clear it)",
                                attempt + 1
                            )
                        } else {
                            String::new()
                        }
                    ),
                    trigger_details(&trigger, attempt, back_ms),
                );
                self.rollback = Some((trigger, attempt));
                self.proc.request_rollback(before);
                None
            }
            Decision::Restart { trigger, why } => {
                if self.cfg.restart == selfheal_config::RestartPolicy::Never {
                    self.policy.hold();
                    self.emit(
                        EventKind::VmHang,
                        Severity::Critical,
                        format!("{why}; left as is (restart = never)"),
                        json!({ "trigger": trigger.as_ref().map(Trigger::name), "why": why }),
                    );
                    return None;
                }
                if let Some(t) = &trigger {
                    self.metrics.incident(t.name());
                    let (kind, what) = describe(t);
                    self.emit(
                        kind,
                        Severity::Critical,
                        format!("{what}; {why}"),
                        trigger_details(t, 0, 0),
                    );
                }
                Some(RunEnd::Restart { why })
            }
            Decision::NotHung { why, silent } => {
                self.emit(
                    EventKind::Dismissed,
                    Severity::Info,
                    format!(
                        "guest link silent for {} ms, not acted on: {why}",
                        silent.as_millis()
                    ),
                    json!({ "silent_ms": silent.as_millis() as u64, "why": why }),
                );
                None
            }
            Decision::Recovered {
                trigger,
                rollbacks,
                detect_to_serving,
            } => {
                VmMetrics::inc(&self.metrics.recovered);
                if let Some(d) = detect_to_serving {
                    self.metrics.detect_to_serving.observe(d);
                }
                self.emit(
                    EventKind::VmRollback,
                    Severity::Info,
                    format!(
                        "recovered: the guest runs on after {rollbacks} rollback(s) for a {}{}",
                        trigger.name(),
                        detect_to_serving.map_or(String::new(), |d| format!(
                            ", serving {} ms after detection",
                            d.as_millis()
                        ))
                    ),
                    json!({
                        "outcome": "recovered",
                        "trigger": trigger.name(),
                        "rollbacks": rollbacks,
                        "detect_to_serving_ms": detect_to_serving.map(|d| d.as_millis() as u64),
                    }),
                );
                None
            }
        }
    }
}

/// n, p50, p99 and max of pauses in µs, as ms (sorts `v`).
fn pause_stats(v: &mut [u64]) -> serde_json::Value {
    v.sort_unstable();
    let q = |p: f64| {
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i.min(v.len() - 1)] as f64 / 1000.0
    };
    json!({
        "n": v.len(),
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "max_ms": q(1.0),
    })
}

/// A policy that is never consulted (swapped in while the real one runs
/// with a borrow of the run).
fn placeholder() -> PolicyConfig {
    PolicyConfig {
        heartbeat_timeout: None,
        rollback_on: Vec::new(),
        guest_grace: Duration::ZERO,
        settle: Duration::ZERO,
        recurrence_window: Duration::ZERO,
        checkpoints: false,
        max_rollbacks: 0,
        window: Duration::ZERO,
    }
}

fn describe(t: &Trigger) -> (EventKind, String) {
    match t {
        Trigger::Panic => (
            EventKind::VmCrash,
            "the guest kernel panicked (pvpanic)".into(),
        ),
        Trigger::Hang { silent, evidence } => (
            EventKind::VmHang,
            format!(
                "the guest link is silent for {} ms while QEMU runs ({:.0} ms CPU; vCPUs busy {})",
                silent.as_millis(),
                evidence.qemu_cpu_ms,
                evidence
                    .vcpus
                    .iter()
                    .map(|(i, s)| format!("{i}:{:.0}%", s * 100.0))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
        Trigger::Guest { class, message } => (
            EventKind::VmHang,
            format!("the guest did not recover a {class} it diagnosed ({message})"),
        ),
    }
}

fn trigger_details(t: &Trigger, attempt: u32, back_ms: u64) -> serde_json::Value {
    let mut d = json!({ "trigger": t.name(), "attempt": attempt, "rollback_before_ms": back_ms });
    match t {
        Trigger::Hang { silent, evidence } => {
            d["silent_ms"] = json!(silent.as_millis() as u64);
            d["evidence"] = json!({
                "qemu_cpu_ms": evidence.qemu_cpu_ms,
                "qemu_scheduled": evidence.qemu_scheduled,
                "window_ms": evidence.window_ms,
                "vcpu_run_ms": evidence.vcpu_run_ms,
                "vcpu_wait_ms": evidence.vcpu_wait_ms,
                "runnable_ms": evidence.runnable_ms,
                "vcpu_busy": evidence.vcpus.iter().map(|(i, s)| json!({"cpu": i, "share": s})).collect::<Vec<_>>(),
                "qmp_status": evidence.status,
                "qmp_unresponsive": evidence.qmp_unresponsive,
            });
        }
        Trigger::Guest { class, message } => {
            d["class"] = json!(class.as_str());
            d["guest_message"] = json!(message);
        }
        Trigger::Panic => {}
    }
    d
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
