//! A hang pipeline with a real light detector, in-process, recording
//! events in memory and every recovery call with its target.
#![allow(dead_code)]

use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal_cgroup::{Sandbox, SandboxConfig};
use selfheal_config::Config;
use selfheal_detect::{
    Alert, Heartbeat, LightDetector, LightShared, LightStats, LightThread, LightThreadConfig,
};
use selfheal_event::{Event, EventKind, MemorySink};
use selfheal_hangwatch::{HangPipeline, PipelineOptions};
use selfheal_recover::fake::{RecordedCall, Recording};
use selfheal_recover::LinuxOps;
use selfheal_sampler::{ReaderOptions, SampleBoard, Sampler};

pub struct Harness {
    pub pipeline: Option<HangPipeline>,
    pub light: Option<LightThread>,
    pub alerts: SyncSender<Alert>,
    pub sink: Arc<MemorySink>,
    pub ops: Arc<Recording<LinuxOps>>,
    pub heartbeat: Arc<Heartbeat>,
    pub started: Instant,
}

pub struct Options {
    pub config: Config,
    pub dry_run: bool,
    pub kmsg: bool,
    pub stall: bool,
    pub light: bool,
}

impl Options {
    /// Recovery may act only inside `allowed` (a sandbox path, or a path
    /// that does not exist so that nothing at all can be touched).
    pub fn new(allowed: &str) -> Options {
        let mut config = Config::default();
        config.recovery.allowed_cgroups = vec![allowed.to_string()];
        Options {
            config,
            dry_run: false,
            kmsg: false,
            stall: true,
            light: true,
        }
    }
}

impl Harness {
    pub fn start(o: Options) -> Harness {
        let config = o.config;
        let sampler = Sampler::with_options(
            &config.sampler.proc_root,
            ReaderOptions {
                sys_root: Some(config.sampler.sys_root.clone()),
                slow_every: config.sampler.slow_every,
            },
        )
        .unwrap();
        let cpus = sampler.cpus();
        let rules = config.effective_rules();
        let detector = LightDetector::new(
            rules.clone(),
            cpus,
            config.light.max_steal_percent,
            config.light.repeat.get(),
        )
        .unwrap();
        let board = Arc::new(SampleBoard::new(cpus));
        let heartbeat = Arc::new(Heartbeat::new());
        let sink = Arc::new(MemorySink::new());
        let ops = Arc::new(Recording::new(LinuxOps::new()));
        let mut opts = PipelineOptions::new(
            &config,
            board.clone(),
            heartbeat.clone(),
            sink.clone(),
            o.dry_run,
        );
        opts.ops = ops.clone();
        opts.kmsg = o.kmsg;
        opts.stall = o.stall;
        let (pipeline, alerts) = HangPipeline::spawn_with(opts).unwrap();
        let light = o.light.then(|| {
            LightThread::spawn(
                LightThreadConfig {
                    period: config.sampler.period.get(),
                    realtime_priority: config.light.realtime_priority,
                    ..LightThreadConfig::default()
                },
                sampler,
                detector,
                LightShared {
                    board,
                    heartbeat: heartbeat.clone(),
                    stats: Arc::new(LightStats::new(rules.len())),
                },
                alerts.clone(),
            )
            .unwrap()
        });
        Harness {
            pipeline: Some(pipeline),
            light,
            alerts,
            sink,
            ops,
            heartbeat,
            started: Instant::now(),
        }
    }

    pub fn pipeline(&self) -> &HangPipeline {
        self.pipeline.as_ref().unwrap()
    }

    pub fn events(&self) -> Vec<Event> {
        self.sink.events()
    }

    /// The first event matching `pred`, waiting up to `timeout`.
    pub fn wait_event(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let start = Instant::now();
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.ops.calls()
    }

    pub fn stop(mut self) {
        if let Some(l) = self.light.take() {
            l.stop();
        }
        if let Some(p) = self.pipeline.take() {
            p.shutdown();
        }
    }

    /// Every recovery event, as (class, action, outcome).
    pub fn recoveries(&self) -> Vec<(String, String, String)> {
        self.events()
            .iter()
            .filter(|e| e.kind == EventKind::Recovery)
            .map(|e| {
                let s = |k: &str| e.details[k].as_str().unwrap_or("").to_string();
                (s("class"), s("action"), s("outcome"))
            })
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(l) = self.light.take() {
            l.stop();
        }
        if let Some(p) = self.pipeline.take() {
            p.shutdown();
        }
    }
}

/// A sandbox, or `None` after printing why this machine cannot host one.
pub fn sandbox_or_skip(test: &str, config: SandboxConfig) -> Option<Sandbox> {
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP {test}: injecting faults needs root (cgroup sandbox, SCHED_FIFO)");
        return None;
    }
    match Sandbox::new(config) {
        Ok(s) => Some(s),
        Err(e) if e.is_unavailable() => {
            eprintln!("SKIP {test}: {e}");
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// Asserts that every state-changing recovery call addressed a process
/// inside cgroup subtree `sandbox` (or none at all).
pub fn assert_only_sandbox_touched(h: &Harness, sandbox: &str) {
    for c in h.calls() {
        match &c.target {
            Some(p) => assert!(
                !p.cgroups.is_empty()
                    && p.cgroups
                        .iter()
                        .all(|g| g == sandbox || g.starts_with(&format!("{sandbox}/"))),
                "recovery touched {} (pid {}) outside the sandbox: {:?}",
                p.comm,
                p.pid,
                c
            ),
            // A FUSE abort addresses a connection, not a process (the
            // tests check it is their own); lifting a fork hold puts back
            // the sandbox's own limit, never the machine's.
            None => assert!(
                match &c.call {
                    selfheal_recover::fake::Call::Signal(..)
                    | selfheal_recover::fake::Call::AbortFuse(..) => true,
                    selfheal_recover::fake::Call::ReleaseForks(
                        selfheal_recover::ops::ForkHold::Cgroup { dir, .. },
                    ) => dir.ends_with(sandbox.trim_start_matches('/')),
                    _ => false,
                },
                "unexpected call without a visible target: {c:?}"
            ),
        }
    }
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}
