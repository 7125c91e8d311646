//! The pipeline thread: records what arrives, sweeps, runs the heavy
//! detector on a trigger, and hands hangs to the recovery ladder.
//!
//! This file holds the state and the loop; the periodic sweep is in
//! `sweep`, the stall and watchdog events the pipeline records itself in
//! `alerts`, and the heavy detector's run in `heavy`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfheal_config::{Config, Rule};
use selfheal_detect::stall::{StallEvent, StallShared};
use selfheal_detect::Heartbeat;
use selfheal_diagnose::cgroups::{CgroupRoots, CgroupScanner};
use selfheal_diagnose::class::Trigger;
use selfheal_diagnose::classify::{Diagnoser, Thresholds};
use selfheal_diagnose::dwait::{DWait, DwaitTracer};
use selfheal_diagnose::oomloop::OomLoops;
use selfheal_diagnose::snapshot::SnapshotReader;
use selfheal_diagnose::sweep::DStateTracker;
use selfheal_event::EventSink;
use selfheal_kmsg::{KernelReport, VerdictKind};
use selfheal_recover::{Ladder, LadderOptions};
use selfheal_sampler::{Sample, SampleBoard};

use crate::excuse::HeldStalls;
use crate::metrics::PipelineStats;
use crate::pipeline::{Input, PipelineOptions};

mod alerts;
mod heavy;
mod sweep;

/// How often the limited-cgroup list is rebuilt (a heavy run rebuilds it too).
const CGROUP_REWALK: Duration = Duration::from_secs(5);

/// How often a task recorded as held is checked again (a thawed freezer
/// or a continued server that still does not answer is then a fault).
const HELD_RECHECK: Duration = Duration::from_secs(10);

/// A task recorded as held on purpose.
struct HeldWatch {
    pid: i32,
    next_check: Instant,
    alerted: bool,
}

/// The pipeline thread's state: the heavy detector, the sweep's trackers,
/// the recovery ladder and what was already reported.
pub(crate) struct Worker {
    cfg: Config,
    rules: Vec<Rule>,
    board: Arc<SampleBoard>,
    sample: Sample,
    sink: Arc<dyn EventSink>,
    stats: Arc<PipelineStats>,
    heartbeat: Arc<Heartbeat>,
    stall: Option<Arc<StallShared>>,
    proc_root: PathBuf,
    reader: SnapshotReader,
    diagnoser: Diagnoser,
    tracker: DStateTracker,
    scanner: Arc<Mutex<CgroupScanner>>,
    ladder: Ladder,
    kernel: VecDeque<(Instant, KernelReport)>,
    /// Diagnosis key → when last recorded.
    recent: HashMap<String, Instant>,
    /// Stuck threads already reported.
    stuck_reported: HashSet<(i32, u64)>,
    /// Cgroups already reported by the sweep → when.
    cgroups_reported: HashMap<String, Instant>,
    /// Memory cgroups' kernel OOM kills, for fill-and-kill loops.
    oom_loops: OomLoops,
    /// Last time every task's state was read.
    last_full_scan: Instant,
    /// The eBPF D-wait tracer, when it runs (else the sweep scans /proc).
    tracer: Option<DwaitTracer>,
    /// The tracer's last reading.
    waits: Vec<DWait>,
    /// Every task's state has been read once (blocks that began before
    /// the tracer started are not in its map).
    scanned_once: bool,
    /// Tasks recorded as held, by (tid, start time).
    held: HashMap<(i32, u64), HeldWatch>,
    /// In a guest under `selfheal vm`: CPU stalls waiting for the host's
    /// word on its checkpoint stops.
    stalls_held: Option<HeldStalls>,
}

/// A trigger waiting for the heavy detector, with the fault's onset if known.
struct Pending {
    trigger: Trigger,
    onset: Option<Instant>,
}

fn rank(t: &Trigger) -> u8 {
    match t {
        Trigger::Stall { .. } => 6,
        Trigger::Watchdog { .. } => 5,
        Trigger::DState { .. } | Trigger::Cgroup { .. } => 4,
        Trigger::Kernel { .. } => 3,
        Trigger::Manual => 2,
        Trigger::Alert { .. } => 1,
    }
}

impl Worker {
    pub(crate) fn new(
        opts: &PipelineOptions,
        sink: Arc<dyn EventSink>,
        stats: Arc<PipelineStats>,
        heartbeat: Arc<Heartbeat>,
        stall: Option<Arc<StallShared>>,
        tracer: Option<DwaitTracer>,
    ) -> Worker {
        let cfg = opts.config.clone();
        let reader = SnapshotReader::new(&opts.proc_root);
        let mut diagnoser = Diagnoser::new(Thresholds::from_config(&cfg.heavy), &opts.proc_root);
        diagnoser.own_pids = vec![opts.ops.own_pid()];
        let ladder = Ladder::new(
            Box::new(opts.ops.clone()),
            LadderOptions::new(cfg.recovery.clone(), opts.dry_run),
        );
        Worker {
            rules: cfg.effective_rules(),
            sample: Sample::with_cpus(reader.cpus()),
            board: opts.board.clone(),
            sink,
            stats,
            heartbeat,
            stall,
            proc_root: opts.proc_root.clone(),
            tracker: DStateTracker::new(&opts.proc_root),
            scanner: Arc::new(Mutex::new(CgroupScanner::new(
                CgroupRoots::detect(),
                CGROUP_REWALK,
            ))),
            reader,
            diagnoser,
            ladder,
            kernel: VecDeque::new(),
            recent: HashMap::new(),
            stuck_reported: HashSet::new(),
            cgroups_reported: HashMap::new(),
            oom_loops: OomLoops::new(cfg.heavy.oom_loop_kills, cfg.heavy.oom_loop_window.get()),
            last_full_scan: Instant::now(),
            tracer,
            waits: Vec::with_capacity(64),
            scanned_once: false,
            held: HashMap::new(),
            stalls_held: opts.host_stops.clone().map(HeldStalls::new),
            cfg,
        }
    }

    pub(crate) fn run(mut self, rx: Receiver<Input>) {
        let sweep_every = self.cfg.heavy.sweep_interval.get();
        let mut next_sweep = Instant::now() + sweep_every;
        loop {
            self.heartbeat.beat();
            // Sweep again when a D-state thread reaches the bound, not only
            // on the sweep period: it is then reported at the bound.
            let bound = self.cfg.heavy.dstate_bound.get();
            let due = self
                .tracker
                .next_due(bound, |tid, st| self.stuck_reported.contains(&(tid, st)));
            if let Some(due) = due {
                next_sweep = next_sweep.min(due.max(Instant::now()));
            }
            let mut wait = if sweep_every.is_zero() && due.is_none() {
                Duration::from_secs(1)
            } else {
                next_sweep.saturating_duration_since(Instant::now())
            };
            if let Some(at) = self
                .stalls_held
                .as_ref()
                .and_then(|h| h.next_check(Instant::now()))
            {
                wait = wait.min(at.saturating_duration_since(Instant::now()));
            }
            let mut pending: Option<Pending> = None;
            match rx.recv_timeout(wait) {
                Ok(Input::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(input) => self.handle(input, &mut pending),
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Take everything else that arrived meanwhile.
            while let Ok(input) = rx.try_recv() {
                if matches!(input, Input::Shutdown) {
                    return;
                }
                self.handle(input, &mut pending);
            }
            self.release_held_stalls(&mut pending);
            if (!sweep_every.is_zero() || due.is_some()) && Instant::now() >= next_sweep {
                self.sweep(&mut pending);
                next_sweep = Instant::now() + sweep_every.max(Duration::from_millis(100));
            }
            if let Some(p) = pending {
                self.heavy(p);
            }
        }
    }

    fn want(pending: &mut Option<Pending>, trigger: Trigger, onset: Option<Instant>) {
        match pending {
            Some(p) if rank(&p.trigger) >= rank(&trigger) => {
                if p.onset.is_none() {
                    p.onset = onset;
                }
            }
            _ => *pending = Some(Pending { trigger, onset }),
        }
    }

    fn handle(&mut self, input: Input, pending: &mut Option<Pending>) {
        match input {
            Input::Alert(a) => {
                self.stats.alerts.fetch_add(1, Ordering::Relaxed);
                let Some(rule) = self.rules.get(a.rule_index as usize) else {
                    return;
                };
                let snap = self
                    .board
                    .read_into(&mut self.sample)
                    .then_some(&self.sample);
                self.sink.emit(a.to_event(rule, snap));
                let onset = a.raised_at.checked_sub(a.held_for);
                Worker::want(
                    pending,
                    Trigger::Alert {
                        rule: rule.name.clone(),
                        level: a.level,
                        cpu: a.cpu(),
                    },
                    onset,
                );
            }
            Input::Stall(StallEvent::Stalled {
                cpu,
                stalled_for,
                since,
            }) => {
                if let Some(h) = self.stalls_held.as_mut() {
                    let now_us = selfheal_sys::bpf::monotonic_ns() / 1000;
                    if h.hold(cpu, since, Instant::now(), now_us) {
                        return;
                    }
                }
                self.stall_alert(cpu, since, stalled_for, None, pending);
            }
            Input::Stall(StallEvent::Cleared {
                cpu,
                lasted,
                context_switches,
            }) => {
                if let Some(h) = self.stalls_held.as_mut() {
                    h.cleared(cpu, lasted);
                }
                tracing::info!(
                    "cpu {cpu} no longer stalled after {} ms ({} context switches during the stall)",
                    lasted.as_millis(),
                    context_switches.map_or("uncounted".to_string(), |c| c.to_string())
                );
            }
            Input::Watchdog(e) => self.watchdog(e, pending),
            Input::Kernel(r) => {
                self.sink.emit(r.to_event());
                let wake = matches!(
                    r.kind,
                    VerdictKind::SoftLockup
                        | VerdictKind::HardLockup
                        | VerdictKind::RcuStall
                        | VerdictKind::HungTask
                        | VerdictKind::ForkRejected
                        | VerdictKind::RtThrottling
                );
                // A memory cgroup's OOM kills wake it once the loop shows,
                // then once per `rediagnose_after` while it goes on.
                let looping = self
                    .oom_loops
                    .record(&r, Instant::now())
                    .filter(|cg| {
                        let again = self.cfg.heavy.rediagnose_after.get();
                        let key = format!("oom:{cg}");
                        let due = self
                            .cgroups_reported
                            .get(&key)
                            .is_none_or(|t| t.elapsed() >= again);
                        if due {
                            self.cgroups_reported.insert(key, Instant::now());
                        }
                        due
                    })
                    .is_some();
                if wake || looping {
                    Worker::want(
                        pending,
                        Trigger::Kernel {
                            verdict: r.kind,
                            cpu: r.cpu,
                        },
                        None,
                    );
                }
                self.kernel.push_back((Instant::now(), *r));
                while self.kernel.len() > 256 {
                    self.kernel.pop_front();
                }
            }
            Input::Manual(t) => Worker::want(pending, t, None),
            Input::Shutdown => {}
        }
    }
}
