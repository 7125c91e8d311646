//! The hang pipeline the daemon starts: it owns the stall detector, the
//! watchdog chain, the kmsg follower, the sweep, the heavy detector and the
//! recovery ladder, and records every event.
//!
//! ```text
//! light thread ──Alert──► forwarder ─┐
//! stall canaries ──StallEvent────────┤
//! watchdog chain ──WatchdogEvent─────┼─► pipeline thread ─► heavy detector ─► recovery ladder
//! kmsg follower ──KernelReport───────┤        │ (sweep every heavy.sweep_interval)
//! tests / CLI ──Trigger::Manual──────┘        └─► events (alert, diagnosis, dismissed, recovery, kernel, watchdog)
//! ```
//!
//! The heavy detector wakes on a light alert, a stall, a watchdog miss, a
//! kernel verdict or a sweep finding; never on a timer alone. Every source
//! hands over with `try_send`: none ever blocks on the pipeline.

mod worker;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use selfheal_config::Config;
use selfheal_detect::stall::{StallDetector, StallEvent, StallOptions, StallShared};
use selfheal_detect::watchdog::{Petter, WatchdogChain, WatchdogEvent, WatchdogOptions, Watched};
use selfheal_detect::{Alert, Heartbeat};
use selfheal_event::EventSink;
use selfheal_kmsg::{FollowOptions, KernelReport, KernelTunables, KmsgFollower, TunableChange};
use selfheal_metrics::Collector;
use selfheal_recover::{LinuxOps, SystemOps, WatchdogControl};
use selfheal_sampler::SampleBoard;

use crate::class::Trigger;
use crate::dwait::DwaitTracer;
use crate::metrics::{CountingSink, PipelineCollector, PipelineStats};

/// What the pipeline thread receives.
#[derive(Debug)]
pub(crate) enum Input {
    Alert(Alert),
    Stall(StallEvent),
    Watchdog(WatchdogEvent),
    Kernel(Box<KernelReport>),
    Manual(Trigger),
    Shutdown,
}

/// The pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A thread could not be spawned.
    #[error("cannot start a hang-pipeline thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The configured hardware watchdog could not be opened.
    #[error(
        "cannot use the hardware watchdog {path}: {message}; fix [watchdog] device or remove it"
    )]
    Watchdog {
        /// The device.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Everything the pipeline needs; [`HangPipeline::spawn`] fills it from the
/// config, tests adjust it.
pub struct PipelineOptions {
    /// The configuration.
    pub config: Config,
    /// The light detector's sample board (alert evidence).
    pub board: Arc<SampleBoard>,
    /// The light detector's heartbeat (watched by the chain).
    pub light_heartbeat: Arc<Heartbeat>,
    /// Where events go.
    pub sink: Arc<dyn EventSink>,
    /// Record what recovery would do, do nothing.
    pub dry_run: bool,
    /// The system recovery acts on (tests pass a fake).
    pub ops: Arc<dyn SystemOps>,
    /// procfs root.
    pub proc_root: PathBuf,
    /// Follow /dev/kmsg (overrides `kmsg.enabled`).
    pub kmsg: bool,
    /// Run the per-CPU canaries (overrides `stall.enabled`).
    pub stall: bool,
    /// Set by the controlled restart's `watchdog` method: the chain stops
    /// petting the hardware watchdog (shared with `ops`).
    pub watchdog_starve: Arc<AtomicBool>,
}

impl std::fmt::Debug for PipelineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineOptions")
            .field("dry_run", &self.dry_run)
            .field("proc_root", &self.proc_root)
            .finish_non_exhaustive()
    }
}

impl PipelineOptions {
    /// Options from the configuration, acting on the real system.
    pub fn new(
        config: &Config,
        board: Arc<SampleBoard>,
        light_heartbeat: Arc<Heartbeat>,
        sink: Arc<dyn EventSink>,
        dry_run: bool,
    ) -> PipelineOptions {
        let watchdog_starve = Arc::new(AtomicBool::new(false));
        let mut ops = LinuxOps::new().allow_restart(config.recovery.allow_reboot && !dry_run);
        if config.watchdog.device.is_some() {
            ops = ops.with_watchdog(WatchdogControl {
                starve: watchdog_starve.clone(),
                timeout: config.watchdog.device_timeout.get(),
            });
        }
        PipelineOptions {
            proc_root: config.sampler.proc_root.clone(),
            kmsg: config.kmsg.enabled,
            stall: config.stall.enabled,
            config: config.clone(),
            board,
            light_heartbeat,
            sink,
            dry_run,
            ops: Arc::new(ops),
            watchdog_starve,
        }
    }
}

/// Light-detector periods without a beat after which parked canaries arm
/// themselves (the light thread arms them on demand; it may be trapped on
/// the very CPU that stalled).
const DRIVER_MISSED_PERIODS: u32 = 3;

/// The running pipeline.
pub struct HangPipeline {
    inputs: SyncSender<Input>,
    worker: Option<JoinHandle<()>>,
    stall: Option<StallDetector>,
    kmsg: Option<KmsgFollower>,
    chain: Option<WatchdogChain>,
    collector: Arc<PipelineCollector>,
    stats: Arc<PipelineStats>,
    tunables: Option<(KernelTunables, Vec<TunableChange>)>,
    notes: Vec<String>,
}

impl std::fmt::Debug for HangPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HangPipeline")
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

/// Queue between the sources and the pipeline thread.
const INPUT_QUEUE: usize = 1024;

impl HangPipeline {
    /// Starts the pipeline for `cfg`. Returns the sender to hand to
    /// `LightThread::spawn`: every alert sent there is recorded as an event
    /// and may wake the heavy detector.
    pub fn spawn(
        cfg: &Config,
        board: Arc<SampleBoard>,
        heartbeat: Arc<Heartbeat>,
        sink: Arc<dyn EventSink>,
        dry_run: bool,
    ) -> Result<(HangPipeline, SyncSender<Alert>), PipelineError> {
        HangPipeline::spawn_with(PipelineOptions::new(cfg, board, heartbeat, sink, dry_run))
    }

    /// Starts the pipeline with explicit options.
    pub fn spawn_with(
        opts: PipelineOptions,
    ) -> Result<(HangPipeline, SyncSender<Alert>), PipelineError> {
        let cfg = opts.config.clone();
        let stats = Arc::new(PipelineStats::default());
        let sink: Arc<dyn EventSink> = Arc::new(CountingSink {
            inner: opts.sink.clone(),
            stats: stats.clone(),
        });
        let mut notes = Vec::new();
        let (inputs, rx): (SyncSender<Input>, Receiver<Input>) = mpsc::sync_channel(INPUT_QUEUE);
        let send = {
            let (tx, stats) = (inputs.clone(), stats.clone());
            move |i: Input| match tx.try_send(i) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    stats
                        .inputs_dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        };

        // Kernel thresholds first, so the kernel's reports start early.
        let tunables = tighten_kernel(&cfg, &opts.proc_root, &mut notes);

        let stall = if opts.stall {
            let s = send.clone();
            match StallDetector::spawn(
                StallOptions::from_config(&cfg.stall),
                Arc::new(move |e| s(Input::Stall(e))),
            ) {
                Ok(d) => {
                    notes.extend(d.notes().iter().cloned());
                    // On demand: the light thread publishing to this board
                    // arms the canaries (it is started after us).
                    if let Some(driver) = d.driver() {
                        selfheal_detect::light::attach_sample_hook(&opts.board, Box::new(driver));
                        // If the light thread is trapped (on a stalled
                        // CPU), the canaries arm themselves.
                        d.shared().watch_driver(
                            opts.light_heartbeat.clone(),
                            cfg.sampler.period.get() * DRIVER_MISSED_PERIODS,
                        );
                    }
                    Some(d)
                }
                Err(e) => {
                    notes.push(format!("stall detector not running: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let kmsg = if opts.kmsg {
            let s = send.clone();
            match KmsgFollower::spawn(
                FollowOptions {
                    path: cfg.kmsg.path.clone(),
                    replay: cfg.kmsg.replay,
                    uptime_path: opts.proc_root.join("uptime"),
                },
                move |r| s(Input::Kernel(Box::new(r))),
                None,
            ) {
                Ok(f) => Some(f),
                Err(e) => {
                    notes.push(e.to_string());
                    None
                }
            }
        } else {
            None
        };
        let tracer = start_tracer(&cfg, &opts.proc_root, &mut notes);
        if tracer.is_some() {
            stats
                .dstate_tracer
                .store(1, std::sync::atomic::Ordering::Relaxed);
        }
        for n in &notes {
            tracing::warn!("hang pipeline: {n}");
        }

        let chain_health = Arc::new(OnceLock::new());
        let collector = Arc::new(PipelineCollector {
            stats: stats.clone(),
            stall: stall.as_ref().map(StallDetector::shared),
            kmsg: kmsg.as_ref().map(KmsgFollower::stats),
            chain: chain_health.clone(),
        });

        let pipeline_heartbeat = Arc::new(Heartbeat::new());
        pipeline_heartbeat.beat();
        let worker = worker::Worker::new(
            &opts,
            sink.clone(),
            stats.clone(),
            pipeline_heartbeat.clone(),
            stall.as_ref().map(StallDetector::shared),
            tracer,
        );
        let priority = cfg.heavy.realtime_priority;
        let worker = std::thread::Builder::new()
            .name("selfheal-hang".into())
            .stack_size(2 << 20)
            .spawn(move || {
                if priority > 0 {
                    if let Err(e) = selfheal_sys::sched::set_fifo(0, i32::from(priority)) {
                        tracing::warn!("hang pipeline runs at normal priority: {e}");
                    }
                }
                worker.run(rx)
            })?;

        // The watchdog chain watches the light detector, the canaries and us.
        let mut watched = vec![
            Watched {
                name: "light",
                heartbeat: opts.light_heartbeat.clone(),
                max_age: cfg.sampler.period.get() * cfg.watchdog.missed_periods.max(1),
            },
            Watched {
                name: "pipeline",
                heartbeat: pipeline_heartbeat,
                // A recovery ladder may legitimately keep it busy a while.
                max_age: Duration::from_secs(30),
            },
        ];
        // Only canaries that run (real-time) beat; without any, there is
        // nothing to watch (and a silent heartbeat must not fail the chain).
        let canaries = stall.as_ref().filter(|s| {
            s.shared()
                .cpus
                .iter()
                .any(|c| c.alive.load(std::sync::atomic::Ordering::Relaxed))
        });
        if let Some(s) = canaries {
            // Beaten by every canary tick and, on demand, by the light
            // thread's driver after every sample.
            let beat_every = if cfg.stall.on_demand {
                cfg.stall.tick.get().max(cfg.sampler.period.get())
            } else {
                cfg.stall.tick.get()
            };
            watched.push(Watched {
                name: "stall",
                heartbeat: s.shared().heartbeat.clone(),
                max_age: beat_every * cfg.watchdog.missed_periods.max(1),
            });
        }
        let device = open_device(&cfg)?;
        let s = send.clone();
        let stall_shared = stall.as_ref().map(StallDetector::shared);
        let chain = WatchdogChain::spawn(
            WatchdogOptions {
                period: cfg.watchdog.period.get(),
                realtime_priority: cfg.watchdog.realtime_priority,
                startup_grace: Duration::from_secs(5),
                starve: opts.watchdog_starve.clone(),
            },
            watched,
            device,
            Arc::new(move |e| {
                // The light thread arms the canaries on demand: while it
                // starves, every canary ticks and they watch each other.
                if let (WatchdogEvent::Missed { component, .. }, Some(st)) = (&e, &stall_shared) {
                    if *component == "light" {
                        st.arm_all();
                    }
                }
                s(Input::Watchdog(e))
            }),
        )?;
        let _ = chain_health.set(chain.health());

        let forward_to = inputs.clone();
        let (alert_tx, alert_rx) = mpsc::sync_channel::<Alert>(cfg.light.alert_queue);
        let forward_stats = stats.clone();
        std::thread::Builder::new()
            .name("selfheal-alertfwd".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // Ends when the light thread drops its sender.
                while let Ok(a) = alert_rx.recv() {
                    if let Err(TrySendError::Full(_)) = forward_to.try_send(Input::Alert(a)) {
                        forward_stats
                            .inputs_dropped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })?;

        Ok((
            HangPipeline {
                inputs,
                worker: Some(worker),
                stall,
                kmsg,
                chain: Some(chain),
                collector,
                stats,
                tunables,
                notes,
            },
            alert_tx,
        ))
    }

    /// The `/metrics` collector (diagnoses, recoveries, stall and kmsg
    /// counters, watchdog chain health).
    pub fn collector(&self) -> Arc<dyn Collector> {
        self.collector.clone()
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> Arc<PipelineStats> {
        self.stats.clone()
    }

    /// True while the light detector, the canaries and the pipeline all
    /// beat in time: the daemon pets systemd's watchdog only then.
    pub fn is_healthy(&self) -> bool {
        self.chain.as_ref().is_some_and(WatchdogChain::is_healthy)
    }

    /// The watchdog chain's view of every heartbeat (for `/healthz`).
    pub fn chain_health(&self) -> Option<Arc<selfheal_detect::watchdog::ChainHealth>> {
        self.chain.as_ref().map(WatchdogChain::health)
    }

    /// What the pipeline could not do on this machine.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// CPUs the stall detector reports stalled now.
    pub fn stalled_cpus(&self) -> Vec<(u32, Duration)> {
        self.stall
            .as_ref()
            .map(|s| s.shared().stalled())
            .unwrap_or_default()
    }

    /// The stall detector's state, when it runs (canaries armed or
    /// parked, their ticks, stalls).
    pub fn stall_state(&self) -> Option<Arc<StallShared>> {
        self.stall.as_ref().map(StallDetector::shared)
    }

    /// Asks for a diagnosis now (the CLI, tests).
    pub fn request(&self, trigger: Trigger) -> bool {
        self.inputs.try_send(Input::Manual(trigger)).is_ok()
    }

    /// Stops every thread, disarms the hardware watchdog and restores the
    /// kernel thresholds. The light thread should be stopped first.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        let _ = self.inputs.try_send(Input::Shutdown);
        if let Some(w) = self.worker.take() {
            // Long enough for a recovery step under way to finish its
            // verification; a worker blocked in a /proc read of a task in
            // exec (whose lock such reads take) is left behind, so a stop
            // is never held up for good.
            let deadline = Instant::now() + Duration::from_secs(8);
            while !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if w.is_finished() {
                let _ = w.join();
            } else {
                tracing::error!("hang pipeline thread did not stop within 8 s; leaving it");
            }
        }
        if let Some(c) = self.chain.take() {
            c.stop();
        }
        if let Some(s) = self.stall.take() {
            s.stop();
        }
        if let Some(k) = self.kmsg.take() {
            k.stop();
        }
        if let Some((t, changes)) = self.tunables.take() {
            if let Err(e) = t.restore(&changes) {
                tracing::error!("restoring the kernel's detector thresholds: {e}");
            }
        }
    }
}

impl Drop for HangPipeline {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The eBPF D-state tracer, when configured and possible: it reads the
/// real /proc's tids, so not for a test's procfs root.
fn start_tracer(
    cfg: &Config,
    proc_root: &std::path::Path,
    notes: &mut Vec<String>,
) -> Option<DwaitTracer> {
    if !cfg.heavy.dstate_tracer || proc_root != std::path::Path::new("/proc") {
        return None;
    }
    match DwaitTracer::start() {
        Ok(t) => {
            if let Some(dir) = &t.mounted_tracefs {
                tracing::info!(
                    "mounted tracefs at {} for the D-state tracer",
                    dir.display()
                );
            }
            Some(t)
        }
        Err(e) => {
            notes.push(format!(
                "D-state tracer not running ({e}): D states are found by scanning /proc, \
                 those that are not I/O waits up to heavy.dstate_full_scan ({}) late",
                cfg.heavy.dstate_full_scan
            ));
            None
        }
    }
}

/// Lowers the kernel's own thresholds when configured.
fn tighten_kernel(
    cfg: &Config,
    proc_root: &std::path::Path,
    notes: &mut Vec<String>,
) -> Option<(KernelTunables, Vec<TunableChange>)> {
    let t = KernelTunables::new(proc_root);
    let mut changes = Vec::new();
    let wanted = [
        ("watchdog_thresh", u64::from(cfg.kmsg.watchdog_thresh)),
        (
            "hung_task_timeout_secs",
            cfg.kmsg.hung_task_timeout.get().as_secs(),
        ),
    ];
    for (file, value) in wanted {
        if value == 0 {
            continue;
        }
        match t.tighten(file, value) {
            Ok(Some(c)) => {
                tracing::info!("kernel.{file}: {} -> {}", c.old, c.new);
                changes.push(c);
            }
            Ok(None) => {}
            Err(e) => notes.push(e.to_string()),
        }
    }
    (!changes.is_empty() && cfg.kmsg.restore_on_exit).then_some((t, changes))
}

fn open_device(cfg: &Config) -> Result<Option<Box<dyn Petter>>, PipelineError> {
    let Some(path) = &cfg.watchdog.device else {
        return Ok(None);
    };
    let err = |message: String| PipelineError::Watchdog {
        path: path.clone(),
        message,
    };
    let dev =
        selfheal_sys::watchdog_dev::WatchdogDevice::open(path).map_err(|e| err(e.to_string()))?;
    let secs = cfg.watchdog.device_timeout.get().as_secs() as u32;
    if secs > 0 {
        match dev.set_timeout(secs) {
            Ok(got) => tracing::info!("hardware watchdog {}: timeout {got} s", path.display()),
            Err(e) => tracing::warn!(
                "hardware watchdog {}: keeping the driver's timeout ({e})",
                path.display()
            ),
        }
    }
    Ok(Some(Box::new(dev)))
}
