//! [`HangPipeline`]: what the daemon starts and stops. It owns the input
//! queue, the pipeline thread (`crate::worker`) and every source thread
//! that `crate::sources` wires to the queue.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use selfheal_config::Config;
use selfheal_detect::host_stops::SharedHostStops;
use selfheal_detect::stall::{StallDetector, StallEvent, StallShared};
use selfheal_detect::watchdog::{WatchdogChain, WatchdogEvent};
use selfheal_detect::{Alert, Heartbeat};
use selfheal_diagnose::dwait::DwaitTracer;
use selfheal_diagnose::Trigger;
use selfheal_event::EventSink;
use selfheal_kmsg::{KernelReport, KernelTunables, KmsgFollower, TunableChange};
use selfheal_metrics::Collector;
use selfheal_recover::{LinuxOps, SystemOps, WatchdogControl};
use selfheal_sampler::SampleBoard;

use crate::metrics::{CountingSink, PipelineCollector, PipelineStats};
use crate::sources::{self, InputSender};
use crate::worker::Worker;

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
    /// In a guest under `selfheal vm`: the host's checkpoint stops, which
    /// excuse the part of a CPU stall they fill (`None`: nothing excused).
    pub host_stops: Option<SharedHostStops>,
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
            host_stops: None,
        }
    }
}

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

    /// Starts the pipeline with explicit options: each source is wired
    /// to the input queue by its own function in `crate::sources`.
    pub fn spawn_with(
        opts: PipelineOptions,
    ) -> Result<(HangPipeline, SyncSender<Alert>), PipelineError> {
        let cfg = &opts.config;
        let stats = Arc::new(PipelineStats::default());
        let sink: Arc<dyn EventSink> = Arc::new(CountingSink {
            inner: opts.sink.clone(),
            stats: stats.clone(),
        });
        let mut notes = Vec::new();
        let (inputs, rx): (SyncSender<Input>, Receiver<Input>) = mpsc::sync_channel(INPUT_QUEUE);
        let send = InputSender::new(inputs.clone(), stats.clone());

        // Kernel thresholds first, so the kernel's reports start early.
        let tunables = sources::tighten_kernel(cfg, &opts.proc_root, &mut notes);
        // A fork hold a previous run placed and did not live to lift.
        let holds = std::path::Path::new(selfheal_recover::ops::FORK_HOLD_DIR);
        notes.extend(selfheal_recover::ops::restore_stale_fork_holds(holds));
        let stall = if opts.stall {
            sources::start_stall(&opts, &send, &mut notes)
        } else {
            None
        };
        let kmsg = if opts.kmsg {
            sources::start_kmsg(&opts, &send, &mut notes)
        } else {
            None
        };
        let tracer = sources::start_tracer(cfg, &opts.proc_root, &mut notes);
        if tracer.is_some() {
            stats.dstate_tracer.store(1, Ordering::Relaxed);
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
        let worker = start_worker(
            &opts,
            rx,
            sink,
            stats.clone(),
            pipeline_heartbeat.clone(),
            stall.as_ref(),
            tracer,
        )?;
        let chain =
            sources::start_watchdog_chain(&opts, pipeline_heartbeat, stall.as_ref(), &send)?;
        let _ = chain_health.set(chain.health());
        let alert_tx = sources::start_alert_forwarder(cfg.light.alert_queue, send)?;

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

/// Starts the pipeline thread (at `heavy.realtime_priority` when set).
fn start_worker(
    opts: &PipelineOptions,
    rx: Receiver<Input>,
    sink: Arc<dyn EventSink>,
    stats: Arc<PipelineStats>,
    heartbeat: Arc<Heartbeat>,
    stall: Option<&StallDetector>,
    tracer: Option<DwaitTracer>,
) -> Result<JoinHandle<()>, PipelineError> {
    let worker = Worker::new(
        opts,
        sink,
        stats,
        heartbeat,
        stall.map(StallDetector::shared),
        tracer,
    );
    let priority = opts.config.heavy.realtime_priority;
    let handle = std::thread::Builder::new()
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
    Ok(handle)
}
