//! One function per input source of the hang pipeline: each starts its
//! source (or tightens the kernel's own thresholds) and wires what it
//! reports to the pipeline's input queue. What a source cannot do on this
//! machine becomes a note, not an error, unless the configuration demands
//! it (a hardware watchdog device that cannot be opened).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use selfheal_config::Config;
use selfheal_detect::stall::{StallDetector, StallOptions};
use selfheal_detect::watchdog::{
    Detector, Petter, WatchdogChain, WatchdogEvent, WatchdogOptions, Watched,
};
use selfheal_detect::{Alert, Heartbeat};
use selfheal_diagnose::dwait::DwaitTracer;
use selfheal_kmsg::{FollowOptions, KernelTunables, KmsgFollower, TunableChange};

use crate::metrics::PipelineStats;
use crate::pipeline::{Input, PipelineError, PipelineOptions};

/// Light-detector periods without a beat after which parked canaries arm
/// themselves (the light thread arms them on demand; it may be trapped on
/// the very CPU that stalled).
const DRIVER_MISSED_PERIODS: u32 = 3;

/// How every source hands an input to the pipeline: `try_send`, never
/// blocking; an input that finds the queue full is counted as dropped.
#[derive(Clone)]
pub(crate) struct InputSender {
    tx: SyncSender<Input>,
    stats: Arc<PipelineStats>,
}

impl InputSender {
    /// A sender into `tx` that counts drops in `stats`.
    pub(crate) fn new(tx: SyncSender<Input>, stats: Arc<PipelineStats>) -> InputSender {
        InputSender { tx, stats }
    }

    /// Queues `input`; a stopped pipeline is not an error.
    pub(crate) fn send(&self, input: Input) {
        match self.tx.try_send(input) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.inputs_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Lowers the kernel's own thresholds (`kernel.watchdog_thresh`,
/// `kernel.hung_task_timeout_secs`) when configured; returns what to
/// restore on exit, when `kmsg.restore_on_exit`.
pub(crate) fn tighten_kernel(
    cfg: &Config,
    proc_root: &Path,
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

/// The per-CPU stall detector: its stalls become `Input::Stall`. On
/// demand, the light thread publishing to the sample board arms the
/// canaries (it is started after us), and they arm themselves if it stops
/// beating (trapped on a stalled CPU).
pub(crate) fn start_stall(
    opts: &PipelineOptions,
    send: &InputSender,
    notes: &mut Vec<String>,
) -> Option<StallDetector> {
    let cfg = &opts.config;
    let s = send.clone();
    match StallDetector::spawn(
        StallOptions::from_config(&cfg.stall),
        Arc::new(move |e| s.send(Input::Stall(e))),
    ) {
        Ok(d) => {
            notes.extend(d.notes().iter().cloned());
            if let Some(driver) = d.driver() {
                selfheal_detect::light::attach_sample_hook(&opts.board, Box::new(driver));
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
}

/// The /dev/kmsg follower: the kernel's verdicts become `Input::Kernel`.
pub(crate) fn start_kmsg(
    opts: &PipelineOptions,
    send: &InputSender,
    notes: &mut Vec<String>,
) -> Option<KmsgFollower> {
    let cfg = &opts.config;
    let s = send.clone();
    match KmsgFollower::spawn(
        FollowOptions {
            path: cfg.kmsg.path.clone(),
            replay: cfg.kmsg.replay,
            uptime_path: opts.proc_root.join("uptime"),
        },
        move |r| s.send(Input::Kernel(Box::new(r))),
        None,
    ) {
        Ok(f) => Some(f),
        Err(e) => {
            notes.push(e.to_string());
            None
        }
    }
}

/// The eBPF D-state tracer, when configured and possible: it reads the
/// real /proc's tids, so not for a test's procfs root. The sweep reads it;
/// it sends nothing itself.
pub(crate) fn start_tracer(
    cfg: &Config,
    proc_root: &Path,
    notes: &mut Vec<String>,
) -> Option<DwaitTracer> {
    if !cfg.heavy.dstate_tracer || proc_root != Path::new("/proc") {
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

/// The watchdog chain: it watches the light detector, the pipeline thread
/// and the canaries (see [`watched`]), pets the hardware watchdog when one
/// is configured, and its misses become `Input::Watchdog`. A starved light
/// thread arms every canary, so they watch each other.
pub(crate) fn start_watchdog_chain(
    opts: &PipelineOptions,
    pipeline_heartbeat: Arc<Heartbeat>,
    stall: Option<&StallDetector>,
    send: &InputSender,
) -> Result<WatchdogChain, PipelineError> {
    let cfg = &opts.config;
    let watched = watched(cfg, &opts.light_heartbeat, pipeline_heartbeat, stall);
    let device = open_device(cfg)?;
    let s = send.clone();
    let stall_shared = stall.map(StallDetector::shared);
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
                if *component == Detector::Light {
                    st.arm_all();
                }
            }
            s.send(Input::Watchdog(e))
        }),
    )?;
    Ok(chain)
}

/// The heartbeats the chain watches and how old each may get.
fn watched(
    cfg: &Config,
    light_heartbeat: &Arc<Heartbeat>,
    pipeline_heartbeat: Arc<Heartbeat>,
    stall: Option<&StallDetector>,
) -> Vec<Watched> {
    let mut watched = vec![
        Watched {
            name: Detector::Light,
            heartbeat: light_heartbeat.clone(),
            max_age: cfg.sampler.period.get() * cfg.watchdog.missed_periods.max(1),
        },
        Watched {
            name: Detector::Pipeline,
            heartbeat: pipeline_heartbeat,
            // A recovery ladder may legitimately keep it busy a while.
            max_age: Duration::from_secs(30),
        },
    ];
    // Only canaries that run (real-time) beat; without any, there is
    // nothing to watch (and a silent heartbeat must not fail the chain).
    let canaries = stall.filter(|s| {
        s.shared()
            .cpus
            .iter()
            .any(|c| c.alive.load(Ordering::Relaxed))
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
            name: Detector::Stall,
            heartbeat: s.shared().heartbeat.clone(),
            max_age: beat_every * cfg.watchdog.missed_periods.max(1),
        });
    }
    watched
}

/// The configured hardware watchdog device, opened with its timeout set.
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

/// The light detector's alert queue (`light.alert_queue` deep) and the
/// thread that moves each alert into the pipeline's queue as
/// `Input::Alert`. Returns the sender to hand to the light thread; the
/// forwarder ends when the light thread drops it.
pub(crate) fn start_alert_forwarder(
    queue: usize,
    send: InputSender,
) -> Result<SyncSender<Alert>, PipelineError> {
    let (alert_tx, alert_rx) = mpsc::sync_channel::<Alert>(queue);
    std::thread::Builder::new()
        .name("selfheal-alertfwd".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            while let Ok(a) = alert_rx.recv() {
                send.send(Input::Alert(a));
            }
        })?;
    Ok(alert_tx)
}
