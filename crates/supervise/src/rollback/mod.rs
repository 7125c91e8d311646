//! Supervision with in-memory checkpoints (`[app.checkpoint]`,
//! `selfheal run --checkpoint-interval`): the μCheckpoint engine
//! ([`selfheal_checkpoint`]) runs each program under ptrace, takes
//! incremental checkpoints and rolls the program back in place.
//!
//! - [`CheckpointLauncher`] starts the program under the engine. The
//!   engine's tracer thread reaps it, so its [`ChildHandle`] is driven by
//!   the engine's events: a pump thread per run turns them into `rollback`
//!   and `checkpoint` events and, at the end, into the exit status the
//!   supervisor collects as from any other child.
//! - A crash signal is intercepted and rolled back before it kills the
//!   program: the supervisor never sees a crash, only a `rollback` event.
//!   When a rollback is impossible the signal is delivered, the program
//!   dies and the normal crash → restart path runs, after a `rollback`
//!   event with `"outcome": "impossible"` that says why.
//! - [`RollbackStep`] is the recovery step for hangs: it asks for a
//!   rollback to a checkpoint from before the last sign of progress.
//! - [`CheckpointMetrics`] adds `selfheal_app_checkpoint*` and
//!   `selfheal_app_rollback*` series.
//!
//! [`ChildHandle`]: crate::ChildHandle

pub mod details;
mod launcher;
mod metrics;
mod report;
mod step;

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfheal_config::AppConfig;
use selfheal_event::EventSink;

use crate::child::Launcher;

pub use launcher::{CheckpointChild, CheckpointLauncher};
pub(crate) use metrics::Collectors;
pub use metrics::{CheckpointMetrics, CheckpointSnapshot, CheckpointTotals};
pub use report::describe_unrecoverable;
pub use selfheal_checkpoint as engine;
pub use step::RollbackStep;

/// Starts an engine (a seam so tests can make it fail).
pub(crate) type StartFn =
    fn(engine::Target, engine::Config) -> Result<engine::Engine, engine::StartError>;

/// What the pump answers a [`HangRequest`].
#[derive(Debug)]
pub(crate) enum HangReply {
    /// Rolled back.
    Done(engine::RollbackReport),
    /// Not rolled back, and why.
    Refused(String),
}

/// A hang rollback asked of one run, queued for the run's pump: the
/// engine answers each rollback command with one event, in order, and the
/// pump sends what that event says back on the request's own channel.
#[derive(Debug)]
pub(crate) struct HangRequest {
    /// Where the answer goes (a one-shot channel; nobody may listen any
    /// more when the requester gave up waiting).
    pub reply: SyncSender<HangReply>,
}

/// The pump's end of a run's hang requests, oldest first.
#[derive(Debug)]
pub(crate) struct PendingRequests(pub Receiver<HangRequest>);

impl PendingRequests {
    /// Answers the oldest request, if any (its requester may have given up
    /// waiting: then the answer is dropped with it).
    pub fn answer_oldest(&self, r: HangReply) {
        if let Ok(req) = self.0.try_recv() {
            let _ = req.reply.try_send(r);
        }
    }

    /// Refuses every request still waiting, for `why`.
    pub fn refuse_all(&self, why: &str) {
        while let Ok(req) = self.0.try_recv() {
            let _ = req.reply.try_send(HangReply::Refused(why.to_string()));
        }
    }
}

/// The run being checkpointed now, as the recovery step reaches it.
#[derive(Clone)]
pub(crate) struct RunLink {
    pub pid: i32,
    pub control: engine::Control,
    /// Hang rollback requests, to the run's pump.
    pub requests: Sender<HangRequest>,
}

impl RunLink {
    /// Asks the engine for a hang rollback to before `hung_since` and
    /// returns the channel the answer comes back on. The request reaches
    /// the pump before the engine can answer it; if the pump has ended,
    /// the channel is closed at once.
    pub fn request_rollback(&self, hung_since: Instant) -> Receiver<HangReply> {
        let (reply, answer) = mpsc::sync_channel(1);
        if self.requests.send(HangRequest { reply }).is_ok() {
            self.control.request_rollback(Some(hung_since));
        }
        answer
    }
}

/// One app's checkpointing: shared by its launcher, its rollback step and
/// the metrics collector.
pub struct AppCheckpoint {
    pub(crate) app: String,
    pub(crate) config: engine::Config,
    pub(crate) max_rollbacks: u32,
    pub(crate) rollback_window: Duration,
    /// `keep × interval` cannot reach back past a hang's detection time.
    pub(crate) history_warning: Option<String>,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) fallback: Arc<dyn Launcher>,
    pub(crate) totals: Arc<CheckpointTotals>,
    pub(crate) current: Mutex<Option<RunLink>>,
    pub(crate) start: StartFn,
    /// Hang rollbacks are only reported (`[daemon] dry_run`).
    pub(crate) dry_run: bool,
}

impl std::fmt::Debug for AppCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCheckpoint")
            .field("app", &self.app)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The engine settings for `app`.
pub fn engine_config(app: &AppConfig) -> engine::Config {
    let c = &app.checkpoint;
    engine::Config {
        interval: c.interval.get(),
        keep: c.keep,
        recurrence_window: c.recurrence_window.get(),
        force_full_copy: c.full_copy,
        precopy: c.precopy,
        files: engine::FilesConfig {
            track: c.files,
            ..engine::FilesConfig::default()
        },
        ..engine::Config::default()
    }
}

/// The shortest time after its last sign of progress at which a hang of
/// `app` can be declared, by the detectors it has configured.
fn hang_detection_time(app: &AppConfig) -> Option<(Duration, &'static str)> {
    let mut bounds: Vec<(Duration, &'static str)> = Vec::new();
    if app.notify.enabled && !app.notify.watchdog.get().is_zero() {
        bounds.push((app.notify.watchdog.get(), "the watchdog"));
    }
    for p in &app.probes {
        // A hang is declared after `failure_threshold` failed checks; the
        // first of them can start right after the last success.
        let t = p.period.get() * p.failure_threshold.saturating_sub(1) + p.timeout.get();
        bounds.push((t, "a probe"));
    }
    if !app.progress.spin.get().is_zero() {
        bounds.push((app.progress.spin.get(), "the spin heuristic"));
    }
    if !app.progress.deadlock.get().is_zero() {
        bounds.push((app.progress.deadlock.get(), "the deadlock heuristic"));
    }
    bounds.into_iter().min_by_key(|(d, _)| *d)
}

fn history_warning(app: &AppConfig) -> Option<String> {
    let c = &app.checkpoint;
    let history = c.interval.get() * c.keep as u32;
    let (detect, by) = hang_detection_time(app)?;
    (history <= detect).then(|| {
        format!(
            "checkpoints reach back {} (keep {} × interval {}) but {by} declares a hang at least {} after the last sign of progress: hang rollbacks will find no checkpoint old enough; raise keep or interval",
            selfheal_config::HumanDuration(history),
            c.keep,
            c.interval,
            selfheal_config::HumanDuration(detect),
        )
    })
}

impl AppCheckpoint {
    /// Checkpointing for `app` (which has `[app.checkpoint]` on), reporting
    /// to `sink`; `fallback` starts the program when the engine cannot.
    /// With `dry_run`, the hang step only says what it would do (crashes
    /// are still rolled back: the program would die otherwise).
    pub fn new(
        app: &AppConfig,
        sink: Arc<dyn EventSink>,
        fallback: Arc<dyn Launcher>,
        dry_run: bool,
    ) -> Arc<AppCheckpoint> {
        Self::with_start(app, sink, fallback, dry_run, engine::Engine::start)
    }

    pub(crate) fn with_start(
        app: &AppConfig,
        sink: Arc<dyn EventSink>,
        fallback: Arc<dyn Launcher>,
        dry_run: bool,
        start: StartFn,
    ) -> Arc<AppCheckpoint> {
        let history_warning = history_warning(app);
        if let Some(w) = &history_warning {
            tracing::warn!(app = %app.name, "{w}");
        }
        Arc::new(AppCheckpoint {
            app: app.name.clone(),
            config: engine_config(app),
            max_rollbacks: app.checkpoint.max_rollbacks,
            rollback_window: app.crash_loop.window.get(),
            history_warning,
            sink,
            fallback,
            totals: Arc::new(CheckpointTotals::default()),
            current: Mutex::new(None),
            start,
            dry_run,
        })
    }

    /// The launcher that runs this app's program under the engine.
    pub fn launcher(self: &Arc<Self>) -> Arc<dyn Launcher> {
        Arc::new(CheckpointLauncher::new(Arc::clone(self)))
    }

    /// The recovery step that rolls a hung program back.
    pub fn step(self: &Arc<Self>) -> RollbackStep {
        RollbackStep::new(Arc::clone(self))
    }

    /// Counters and gauges over every run of the app.
    pub fn totals(&self) -> &Arc<CheckpointTotals> {
        &self.totals
    }

    pub(crate) fn current(&self) -> Option<RunLink> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_current(&self, link: Option<RunLink>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = link;
    }
}

#[cfg(test)]
mod tests;
