//! The `selfheal watch` daemon.
//!
//! Threads: the light detector (SCHED_FIFO, samples and evaluates rules), the
//! hang pipeline (records alerts, heavy detector, stall canaries, watchdog
//! chain, kernel reports, recovery; see `hang.rs`), the
//! store writer (SQLite), the HTTP server, and the main thread (signals,
//! systemd watchdog pings, retention). Data flows one way: /proc → sampler →
//! light detector → alert queue → events → store → HTTP/CLI.
#![forbid(unsafe_code)]

mod api;
pub mod collectors;
mod details;
mod hang;
mod host_link;
pub mod http;
mod panics;
mod restart;
pub mod sdnotify;
mod since;
mod sink;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use selfheal_config::Config;
use selfheal_detect::{
    Heartbeat, LightDetector, LightShared, LightStats, LightThread, LightThreadConfig,
};
use selfheal_event::{Event, EventKind, EventSink, Severity, Source};
use selfheal_metrics::Registry;
use selfheal_sampler::{ReaderOptions, SampleBoard, Sampler};
use selfheal_store::{Retention, Store, StoreWriter, WriterOptions};

pub use api::{events_query, QueryError};
pub use host_link::{HostLink, LinkCounters};
pub use panics::{PanicRecord, PanicWatch};
pub use since::{parse_since, SinceError};
pub use sink::{event_log_line, FanoutSink};

/// Why the daemon could not start. Each message names the input and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] selfheal_store::OpenError),
    /// The store writer thread could not start.
    #[error(transparent)]
    Writer(#[from] selfheal_store::WriterError),
    /// /proc could not be sampled.
    #[error("{0}")]
    Sampler(#[from] selfheal_sampler::SamplerError),
    /// A rule is unusable. (The wrapped errors below are in the message;
    /// they are kept typed for callers but not repeated as a source.)
    #[error("invalid rule set: {0}")]
    Rules(selfheal_detect::light::RuleError),
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick another address with --listen ADDR (or \"\" to disable HTTP)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The event log could not be opened.
    #[error(transparent)]
    EventLog(#[from] sink::EventLogError),
    /// A thread could not be spawned.
    #[error("cannot start a daemon thread: {0}")]
    Thread(std::io::Error),
    /// The supervised applications could not start.
    #[error("cannot start the supervised apps: {0}")]
    Apps(selfheal_supervise::SuperviseError),
    /// The hang pipeline could not start.
    #[error(transparent)]
    Hang(#[from] selfheal_hangwatch::PipelineError),
}

/// What the daemon needs beyond the config file.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The configuration (already merged with command-line overrides).
    pub config: Config,
    /// The store file to use.
    pub store_path: PathBuf,
}

/// Shared state the HTTP API reads.
pub(crate) struct Shared {
    pub board: Arc<SampleBoard>,
    pub heartbeat: Arc<Heartbeat>,
    pub stats: Arc<LightStats>,
    pub registry: Registry,
    pub store_path: PathBuf,
    pub period: Duration,
    pub cpus: usize,
    pub started: SystemTime,
    pub writer_counters: Arc<selfheal_store::WriterCounters>,
    pub features: selfheal_sampler::Features,
    pub notes: Vec<String>,
    pub dry_run: bool,
    /// Supervised `[[app]]`s; taken out (and shut down) when the daemon stops.
    pub apps: Mutex<Option<selfheal_supervise::Supervisor>>,
    /// The hang pipeline's watchdog chain (canaries, pipeline, watcher),
    /// when it runs.
    pub chain: Option<Arc<selfheal_detect::watchdog::ChainHealth>>,
    /// Panics of the daemon's threads.
    pub panics: Arc<PanicWatch>,
}

/// A running daemon.
pub struct Daemon {
    config: Config,
    shared: Arc<Shared>,
    light: Option<LightThread>,
    hang: Option<selfheal_hangwatch::HangPipeline>,
    http: Option<http::HttpServer>,
    writer: Option<Arc<StoreWriter>>,
    sink: Arc<dyn EventSink>,
    host_link: Option<HostLink>,
    /// SIGTERM/SIGINT, registered before anything starts: a stop asked for
    /// while the daemon is still starting is honoured once it runs,
    /// instead of killing it half-started with the default action.
    signals: Option<signal_hook::iterator::Signals>,
    /// `[[vm]]` guests.
    vms: Option<selfheal_vm::VmSupervisor>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("store", &self.shared.store_path)
            .field("http", &self.http_addr())
            .finish_non_exhaustive()
    }
}

/// What the guest does when the host says it rolled the VM back: its clocks
/// jumped over time in which none of its code ran, so every measure of a
/// time gap starts again from now (the stall canaries' silence, the light
/// detector's heartbeat age; a gap that goes on from here is still seen),
/// and the rollback is recorded.
fn on_host_rollback(
    link: &HostLink,
    stall: Option<Arc<selfheal_detect::stall::StallShared>>,
    light: Arc<Heartbeat>,
    sink: Arc<dyn EventSink>,
) {
    link.on_host_message(move |m| match m {
        selfheal_guestlink::HostMessage::Rollback {
            seq,
            rolled_back_ms,
            pause_ms,
            trigger,
        } => {
            if let Some(s) = &stall {
                s.rebaseline();
            }
            light.beat();
            sink.emit(
                selfheal_event::Event::now(
                    selfheal_event::EventKind::VmRollback,
                    selfheal_event::Severity::Warning,
                    selfheal_event::Source::HostLink,
                    format!(
                        "the host rolled this VM back {rolled_back_ms} ms (its {trigger}); stall windows and heartbeat ages start again from now"
                    ),
                )
                .with_details_of(&details::RollbackDetails {
                    seq: *seq,
                    rolled_back_ms: *rolled_back_ms,
                    pause_ms: *pause_ms,
                    trigger,
                    rebaselined: details::Rebaselined {
                        stall_canaries: stall.is_some(),
                        light_heartbeat: true,
                    },
                }),
            );
        }
        selfheal_guestlink::HostMessage::Stopped(_) | selfheal_guestlink::HostMessage::Waited(_) => {}
    });
}

impl Daemon {
    /// Opens the store, starts every thread, records a `start` event.
    pub fn start(opts: DaemonOptions) -> Result<Daemon, StartError> {
        let signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])
        .map_err(StartError::Thread)?;
        let config = opts.config;
        let started = SystemTime::now();
        // Large temporary buffers (heavy-detector snapshots, /metrics
        // bodies) get mappings of their own, unmapped when freed: the heap
        // arenas, locked by mlockall, would otherwise keep every peak.
        if !selfheal_sys::memory::malloc_mmap_threshold(MMAP_THRESHOLD) {
            tracing::debug!("cannot fix malloc's mmap threshold (not glibc?)");
        }
        let panics = PanicWatch::install();
        let store = Store::open(&opts.store_path)?;
        let writer = Arc::new(StoreWriter::start(store, WriterOptions::default())?);
        let writer_counters = writer.counters().clone();
        let heartbeat = Arc::new(Heartbeat::new());
        let host_link = match HostLink::start(
            &config.host_link,
            &selfheal_guestlink::PortLookup::default(),
            heartbeat.clone(),
            config.sampler.period.get(),
        ) {
            Ok(Some(link)) => {
                tracing::info!(
                    "host link: heartbeats and events go to {}",
                    link.port.display()
                );
                Some(link)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(
                    "host link port {} exists but cannot be opened: {e}; the host sees no heartbeat",
                    config.host_link.port
                );
                None
            }
        };
        let mut fanout = FanoutSink::new(writer.clone(), config.daemon.event_log.as_deref())?;
        if let Some(link) = &host_link {
            fanout = fanout.with_link(link.sink());
        }
        let sink: Arc<dyn EventSink> = Arc::new(fanout);

        let sampler = Sampler::with_options(
            &config.sampler.proc_root,
            ReaderOptions {
                sys_root: Some(config.sampler.sys_root.clone()),
                slow_every: config.sampler.slow_every,
            },
        )?;
        let mut notes: Vec<String> = sampler.notes().to_vec();
        for n in &notes {
            tracing::warn!("{n}");
        }
        let cpus = sampler.cpus();
        let features = sampler.features();
        let rules = config.effective_rules();
        let detector = LightDetector::new(
            rules.clone(),
            cpus,
            config.light.max_steal_percent,
            config.light.repeat.get(),
        )
        .map_err(StartError::Rules)?;

        if config.light.mlock {
            match selfheal_sys::sched::mlockall() {
                Ok(()) => tracing::info!("memory locked (mlockall)"),
                Err(e) => {
                    let note = format!(
                        "memory not locked ({e}): the detector may be paged out under memory pressure. \
                         Run as root, grant CAP_IPC_LOCK, or raise RLIMIT_MEMLOCK (systemd: LimitMEMLOCK=infinity); \
                         set light.mlock = false to silence this"
                    );
                    tracing::warn!("{note}");
                    notes.push(note);
                }
            }
        }

        match selfheal_sys::process::set_oom_score_adj(config.daemon.oom_score_adj) {
            Ok(()) => tracing::info!("oom_score_adj set to {}", config.daemon.oom_score_adj),
            Err(e) => {
                let current = selfheal_sys::process::oom_score_adj().unwrap_or(0);
                let note = format!(
                    "cannot set oom_score_adj to {} ({e}); it stays {current}, so the kernel's OOM killer \
                     may pick the daemon in a memory or fork storm. Run as root or grant CAP_SYS_RESOURCE \
                     (systemd: OOMScoreAdjust=-1000)",
                    config.daemon.oom_score_adj
                );
                tracing::warn!("{note}");
                notes.push(note);
            }
        }

        let board = Arc::new(SampleBoard::new(cpus));
        let stats = Arc::new(LightStats::new(rules.len()));
        let registry = Registry::new();
        registry.register(Arc::new(collectors::ProcessCollector { started }));
        registry.register(Arc::new(collectors::SampleCollector::new(
            board.clone(),
            cpus,
        )));
        registry.register(Arc::new(collectors::LightCollector {
            stats: stats.clone(),
            rules: rules.clone(),
            heartbeat: heartbeat.clone(),
        }));
        registry.register(Arc::new(collectors::StoreCollector(
            writer_counters.clone(),
        )));
        if let Some(link) = &host_link {
            registry.register(Arc::new(collectors::HostLinkCollector(
                link.counters.clone(),
            )));
        }

        let restart_event = restart::at_start(&config, &mut notes);
        let excuse = crate::host_link::Excuse {
            stops: config.host_link.excuse_host_stops,
            waits: config.host_link.excuse_host_waits,
        };
        let host_stops = host_link
            .as_ref()
            .filter(|_| excuse.stops || excuse.waits)
            .map(|l| l.follow_stops(excuse));
        let (hang, tx) = hang::start(
            &config,
            board.clone(),
            heartbeat.clone(),
            sink.clone(),
            &registry,
            host_stops,
            &mut notes,
        )?;
        if let Some(link) = &host_link {
            on_host_rollback(link, hang.stall_state(), heartbeat.clone(), sink.clone());
        }
        let light = LightThread::spawn(
            LightThreadConfig {
                period: config.sampler.period.get(),
                realtime_priority: config.light.realtime_priority,
                ..LightThreadConfig::default()
            },
            sampler,
            detector,
            LightShared {
                board: board.clone(),
                heartbeat: heartbeat.clone(),
                stats: stats.clone(),
            },
            tx,
        )
        .map_err(StartError::Thread)?;

        let apps = if config.apps.is_empty() {
            None
        } else {
            let sup = selfheal_supervise::Supervisor::start_with(
                config.apps.clone(),
                sink.clone(),
                selfheal_supervise::Options {
                    dry_run: config.daemon.dry_run,
                    ..selfheal_supervise::Options::default()
                },
            )
            .map_err(StartError::Apps)?;
            registry.register(sup.collector());
            tracing::info!("supervising {} app(s)", config.apps.len());
            Some(sup)
        };
        let vms = if config.vms.is_empty() {
            None
        } else {
            let sup = selfheal_vm::VmSupervisor::start(config.vms.clone(), sink.clone())
                .map_err(StartError::Thread)?;
            registry.register(sup.collector());
            tracing::info!("running {} vm(s)", config.vms.len());
            Some(sup)
        };

        let shared = Arc::new(Shared {
            board,
            heartbeat,
            stats,
            registry,
            store_path: opts.store_path.clone(),
            period: config.sampler.period.get(),
            cpus,
            started,
            writer_counters,
            features,
            notes: notes.clone(),
            dry_run: config.daemon.dry_run,
            apps: Mutex::new(apps),
            chain: hang.chain_health(),
            panics,
        });
        let http = match config.daemon.listen {
            Some(addr) => {
                let server =
                    http::HttpServer::start(addr, api::router(shared.clone()), http_limits())
                        .map_err(|source| StartError::Listen { addr, source })?;
                shared
                    .registry
                    .register(Arc::new(collectors::HttpCollector(server.stats())));
                if std::env::var("SELFHEAL_TEST_INJECT_PANIC").as_deref() == Ok("http") {
                    server.inject_panic();
                }
                Some(server)
            }
            None => None,
        };
        let daemon = Daemon {
            config,
            shared,
            light: Some(light),
            hang: Some(hang),
            http,
            writer: Some(writer),
            sink,
            host_link,
            signals: Some(signals),
            vms,
        };
        daemon.record_start(rules.len());
        if let Some(e) = restart_event {
            daemon.sink.emit(e);
        }
        Ok(daemon)
    }

    fn record_start(&self, rules: usize) {
        let c = &self.config;
        let msg = format!(
            "watching {} CPUs every {}; {} rules; store {}{}",
            self.shared.cpus,
            c.sampler.period,
            rules,
            self.shared.store_path.display(),
            if c.daemon.dry_run { "; dry run" } else { "" }
        );
        let ev = Event::now(EventKind::Start, Severity::Info, Source::Daemon, msg).with_details_of(
            &details::StartDetails {
                version: env!("CARGO_PKG_VERSION"),
                pid: std::process::id(),
                cpus: self.shared.cpus,
                period_ms: c.sampler.period.get().as_millis() as u64,
                rules,
                listen: c.daemon.listen.map(|a| a.to_string()),
                dry_run: c.daemon.dry_run,
                psi: self.shared.features.psi,
                notes: &self.shared.notes,
            },
        );
        self.sink.emit(ev);
    }

    /// The bound HTTP address, when HTTP is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.local_addr())
    }

    /// True while the light detector has beaten within three periods (and
    /// at least a second) and the hang pipeline's watchdog chain is healthy
    /// (light detector, stall canaries and pipeline all beating): what the
    /// systemd watchdog is told, and what `/healthz` reports.
    pub fn is_healthy(&self) -> bool {
        let max_age = (self.shared.period * 3).max(Duration::from_secs(1));
        self.shared.heartbeat.is_fresh(max_age)
            && self.hang.as_ref().is_none_or(|h| h.is_healthy())
            && self.shared.panics.fatal_reasons().is_empty()
    }

    /// Emits a `panic` event for each panic recorded from index `from` on;
    /// returns how many.
    fn record_panics(&self, from: usize) -> usize {
        let new = self.shared.panics.since(from);
        for p in &new {
            self.sink.emit(p.to_event());
        }
        new.len()
    }

    /// Where events go (for components started next to the daemon).
    pub fn sink(&self) -> Arc<dyn EventSink> {
        self.sink.clone()
    }

    /// Applies retention now.
    pub fn apply_retention(&self) {
        let s = &self.config.store;
        let r = Retention {
            max_age: (!s.max_age.get().is_zero()).then(|| s.max_age.get()),
            max_count: (s.max_count > 0).then_some(s.max_count),
        };
        if let Some(w) = &self.writer {
            match w.apply_retention(r) {
                Ok(0) => {}
                Ok(n) => tracing::info!("retention deleted {n} old events"),
                Err(e) => tracing::error!("retention failed: {e}"),
            }
        }
    }

    /// Stops every thread, records a `stop` event and makes the store
    /// consistent (everything flushed, WAL checkpointed on close).
    pub fn stop(mut self, reason: &str) {
        if let Some(light) = self.light.take() {
            light.stop();
        }
        if let Some(h) = self.hang.take() {
            h.shutdown();
        }
        // Supervised programs get their stop signal and grace period.
        let apps = self
            .shared
            .apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(sup) = apps {
            sup.shutdown();
        }
        // Guests are told to quit (QMP `quit`), then killed after a grace.
        if let Some(vms) = self.vms.take() {
            vms.shutdown();
        }
        if let Some(h) = self.http.take() {
            h.stop();
        }
        self.sink.emit(Event::now(
            EventKind::Stop,
            Severity::Info,
            Source::Daemon,
            format!("stopped: {reason}"),
        ));
        if let Some(link) = self.host_link.take() {
            link.stop();
        }
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.flush_timeout(Some(Duration::from_secs(10))) {
                tracing::error!("store flush on shutdown: {e}");
            }
            if let Err(e) = w.shutdown() {
                tracing::error!("store shutdown: {e}");
            }
        }
    }

    /// Runs until SIGTERM or SIGINT: tells systemd READY=1, sends
    /// WATCHDOG=1 while healthy, applies retention periodically, then stops
    /// cleanly.
    pub fn run_until_signalled(mut self) -> std::io::Result<()> {
        let (sig_tx, sig_rx) = mpsc::channel();
        let mut signals = match self.signals.take() {
            Some(s) => s,
            None => signal_hook::iterator::Signals::new([
                signal_hook::consts::SIGTERM,
                signal_hook::consts::SIGINT,
            ])?,
        };
        let sig_handle = signals.handle();
        // A panic wakes the loop at once (-1 is no signal number), so it
        // is recorded as an event without a periodic wake-up.
        let panic_tx = Mutex::new(sig_tx.clone());
        self.shared.panics.set_waker(Box::new(move || {
            if let Ok(tx) = panic_tx.try_lock() {
                let _ = tx.send(-1);
            }
        }));
        std::thread::Builder::new()
            .name("selfheal-signals".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let _ = sig_tx.send(sig);
                }
            })?;

        let notifier = match sdnotify::Notifier::from_env() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET is set but unusable: {e}");
                None
            }
        };
        let watchdog = sdnotify::watchdog_interval();
        if let Some(n) = &notifier {
            let _ = n.notify(&format!(
                "READY=1\nSTATUS=watching {} CPUs every {}",
                self.shared.cpus, self.config.sampler.period
            ));
        }
        // Ping at half the watchdog interval; otherwise wake every 10 s
        // (panics wake the loop at once; /healthz reads health itself):
        // an idle daemon's main thread costs almost no wake-ups.
        let tick = watchdog.map_or(IDLE_TICK, |w| (w / 2).max(Duration::from_millis(10)));
        let retention_every = self
            .config
            .store
            .retention_interval
            .get()
            .max(Duration::from_secs(1));
        let mut next_retention = Instant::now();
        let mut was_healthy = true;
        // The light thread's first cycle may not have ended when this
        // loop first looks: not a stale heartbeat (it used to log an
        // ERROR at every start, and "recovered" only 10 s later).
        let first_beat_by = Instant::now() + Duration::from_secs(2);
        let mut panics_recorded = 0;
        let reason = loop {
            let wait = tick.min(next_retention.saturating_duration_since(Instant::now()));
            match sig_rx.recv_timeout(wait) {
                Ok(-1) => {}
                Ok(sig) => break format!("signal {}", selfheal_sys::signal::signal_name(sig)),
                Err(RecvTimeoutError::Disconnected) => break "signal handler gone".to_string(),
                Err(RecvTimeoutError::Timeout) => {}
            }
            panics_recorded += self.record_panics(panics_recorded);
            let mut healthy = self.is_healthy();
            while !healthy && self.shared.heartbeat.beats() == 0 && Instant::now() < first_beat_by {
                std::thread::sleep(Duration::from_millis(20));
                healthy = self.is_healthy();
            }
            if let (Some(n), Some(_)) = (&notifier, watchdog) {
                if healthy {
                    let _ = n.notify("WATCHDOG=1");
                }
            }
            if healthy != was_healthy {
                if healthy {
                    tracing::info!("light detector heartbeat recovered");
                } else {
                    tracing::error!(
                        "light detector heartbeat is stale; not petting the systemd watchdog"
                    );
                }
                was_healthy = healthy;
            }
            if Instant::now() >= next_retention {
                self.apply_retention();
                next_retention = Instant::now() + retention_every;
            }
        };
        tracing::info!("stopping: {reason}");
        if let Some(n) = &notifier {
            let _ = n.notify("STOPPING=1");
        }
        sig_handle.close();
        self.record_panics(panics_recorded);
        self.stop(&reason);
        Ok(())
    }
}

/// Allocations this large or larger are mapped on their own and unmapped
/// when freed (see `selfheal_sys::memory::malloc_mmap_threshold`).
const MMAP_THRESHOLD: usize = 64 * 1024;

/// How often the main loop wakes without a systemd watchdog to pet: to
/// log a change of health and apply retention when due.
const IDLE_TICK: Duration = Duration::from_secs(10);

/// The HTTP server's limits, with the connection limit kept below the
/// open-file limit (raised first): running out of descriptors would stall
/// accept() and with it /healthz.
fn http_limits() -> http::Limits {
    let mut limits = http::Limits::default();
    let want = limits.max_connections as u64 + 1024;
    match selfheal_sys::rlimit::raise_nofile_limit(want) {
        Ok(soft) if soft < want => {
            let fit = soft.saturating_sub(256).max(16) as usize;
            tracing::warn!(
                "open-file limit is {soft}: serving at most {fit} HTTP connections at once \
                 (raise it with LimitNOFILE= or ulimit -n)"
            );
            limits.max_connections = fit;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
    limits
}

/// The store path to use: `--store`, else `[daemon] store`, else the default
/// for this user.
pub fn resolve_store_path(
    cli: Option<&Path>,
    config: &Config,
) -> Result<PathBuf, selfheal_store::NoDefaultPath> {
    if let Some(p) = cli {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = &config.daemon.store {
        return Ok(p.clone());
    }
    selfheal_store::default_path_for_this_process()
}
