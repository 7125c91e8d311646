//! The pipeline thread: records what arrives, sweeps, runs the heavy
//! detector on a trigger, and hands hangs to the recovery ladder.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use selfheal_cgroup::Controller;
use selfheal_config::{Config, Rule};
use selfheal_detect::stall::{StallEvent, StallShared};
use selfheal_detect::watchdog::WatchdogEvent;
use selfheal_detect::Heartbeat;
use selfheal_diagnose::cgroups::{CgroupRoots, CgroupScanner};
use selfheal_diagnose::class::{Symptom, Trigger};
use selfheal_diagnose::classify::{Diagnoser, Observation, Thresholds};
use selfheal_diagnose::dwait::{DWait, DwaitTracer};
use selfheal_diagnose::oomloop::OomLoops;
use selfheal_diagnose::snapshot::SnapshotReader;
use selfheal_diagnose::sweep::DStateTracker;
use selfheal_diagnose::verify::SymptomCheck;
use selfheal_event::{Class, Culprit, Event, EventKind, EventSink, Severity, Source};
use selfheal_kmsg::{KernelReport, VerdictKind};
use selfheal_recover::{Ladder, LadderOptions, Recheck, SymptomProbe};
use selfheal_sampler::{Sample, SampleBoard, SystemMetric};

use crate::details::{HeldDetails, StallDetails, WatchdogDetails};
use crate::excuse::{HeldStalls, HostTime, Verdict};
use crate::metrics::PipelineStats;
use crate::pipeline::{Input, PipelineOptions};

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

    /// Brings the D-state tracker up to date: from the tracer's map (and
    /// one full scan at start, or when the map overflowed), else by
    /// scanning /proc — on a sweep (`periodic`) only when tasks are
    /// blocked on I/O, some are followed, or the full scan is due.
    fn refresh_dstate(&mut self, now: Instant, periodic: bool) {
        let bound = self.cfg.heavy.dstate_bound.get();
        if let Some(t) = self.tracer.as_mut() {
            match t.read(&mut self.waits) {
                Ok(complete) => {
                    if !complete || !self.scanned_once {
                        if !complete {
                            tracing::warn!(
                                "D-state tracer: {} tasks in D at once fill its map; scanning /proc too",
                                self.waits.len()
                            );
                        }
                        self.tracker.scan(now);
                        self.scanned_once = true;
                        self.last_full_scan = now;
                        self.stats
                            .sweep_threads
                            .store(self.tracker.last_scanned as u64, Ordering::Relaxed);
                    }
                    self.tracker.observe_traced(&self.waits, now, bound);
                    self.stats
                        .dstate_traced
                        .store(self.waits.len() as u64, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    tracing::warn!("D-state tracer failed ({e}); scanning /proc from now on");
                    self.tracer = None;
                    self.stats.dstate_tracer.store(0, Ordering::Relaxed);
                }
            }
        }
        let full_every = self.cfg.heavy.dstate_full_scan.get();
        let full_due = !full_every.is_zero() && self.last_full_scan.elapsed() >= full_every;
        let blocked = periodic
            && self.board.read_into(&mut self.sample)
            && self.sample.system(SystemMetric::BlockedTasks) >= 1.0;
        if !periodic || blocked || full_due || self.tracker.in_d_state() > 0 {
            self.tracker.scan(now);
            self.scanned_once = true;
            if full_due {
                self.last_full_scan = now;
            }
            self.stats
                .sweep_threads
                .store(self.tracker.last_scanned as u64, Ordering::Relaxed);
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

    /// A CPU stall, recorded and handed to the heavy detector.
    /// `host`: the part of it the host's checkpoint stops and this vCPU's
    /// waits for a host CPU explain (in a guest the host tells them).
    fn stall_alert(
        &mut self,
        cpu: u32,
        since: Instant,
        stalled_for: Duration,
        host: Option<HostTime>,
        pending: &mut Option<Pending>,
    ) {
        let mut parts = Vec::new();
        if let Some(h) = &host {
            if !h.stopped.is_zero() {
                parts.push(format!(
                    "{} ms of it the host stopped the VM for checkpoints",
                    h.stopped.as_millis()
                ));
            }
            if !h.waited.is_zero() {
                parts.push(format!(
                    "{} ms its vCPU waited for a host CPU",
                    h.waited.as_millis()
                ));
            }
        }
        let excused = if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        };
        self.sink.emit(
            Event::now(
                EventKind::Alert,
                Severity::Critical,
                Source::Stall,
                format!(
                    "cpu {cpu} stalled: its real-time canary has not run for {} ms{excused}",
                    stalled_for.as_millis()
                ),
            )
            .with_rule("cpu_stall")
            .with_culprit(Culprit {
                cpu: Some(cpu),
                ..Culprit::default()
            })
            .with_details_of(&StallDetails {
                cpu,
                stalled_ms: stalled_for.as_millis() as u64,
                bound_ms: self.cfg.stall.bound.get().as_millis() as u64,
                host_stopped_ms: host.map(|h| h.stopped.as_millis() as u64),
                host_waited_ms: host
                    .filter(|h| !h.waited.is_zero())
                    .map(|h| h.waited.as_millis() as u64),
            }),
        );
        Worker::want(pending, Trigger::Stall { cpu, stalled_for }, Some(since));
    }

    /// Held stalls the host's word now decides: reported, or excused.
    fn release_held_stalls(&mut self, pending: &mut Option<Pending>) {
        let Some(h) = self.stalls_held.as_mut() else {
            return;
        };
        if h.is_empty() {
            return;
        }
        let now_us = selfheal_sys::bpf::monotonic_ns() / 1000;
        let verdicts = h.release(Instant::now(), now_us, self.cfg.stall.bound.get());
        for v in verdicts {
            match v {
                Verdict::Report {
                    cpu,
                    since,
                    stalled_for,
                    stopped,
                    waited,
                } => self.stall_alert(
                    cpu,
                    since,
                    stalled_for,
                    Some(HostTime { stopped, waited }),
                    pending,
                ),
                Verdict::Excused {
                    cpu,
                    stalled_for,
                    stopped,
                    waited,
                } => {
                    let n = self.stats.stalls_excused.fetch_add(1, Ordering::Relaxed) + 1;
                    // The first, then one in 20: a busy host stops the VM
                    // 20 times a second.
                    if n == 1 || n.is_multiple_of(20) {
                        tracing::info!(
                            "cpu {cpu}: {} ms without scheduling progress, {} ms of it the host's checkpoint stops and {} ms its vCPU's wait for a host CPU: no stall ({n} excused so far)",
                            stalled_for.as_millis(),
                            stopped.as_millis(),
                            waited.as_millis()
                        );
                    }
                }
            }
        }
    }

    fn watchdog(&mut self, e: WatchdogEvent, pending: &mut Option<Pending>) {
        let (severity, message, details) =
            match &e {
                WatchdogEvent::Missed {
                    component,
                    age,
                    max_age,
                } => (
                    Severity::Critical,
                    format!(
                    "{component} heartbeat missed: {} old (limit {} ms); the detector is starved",
                    age.map_or("never beat".to_string(), |a| format!("{} ms", a.as_millis())),
                    max_age.as_millis()
                ),
                    WatchdogDetails::Missed {
                        component: component.as_str(),
                        age_ms: age.map(|a| a.as_millis() as u64),
                        max_age_ms: max_age.as_millis() as u64,
                    },
                ),
                WatchdogEvent::Recovered { component, after } => (
                    Severity::Info,
                    format!("{component} heartbeat back after {} ms", after.as_millis()),
                    WatchdogDetails::Recovered {
                        component: component.as_str(),
                        stale_ms: after.as_millis() as u64,
                    },
                ),
                WatchdogEvent::DeviceError { message } => (
                    Severity::Warning,
                    format!("hardware watchdog: {message}"),
                    WatchdogDetails::DeviceError { error: message },
                ),
            };
        self.sink.emit(
            Event::now(EventKind::Watchdog, severity, Source::Watchdog, message)
                .with_details_of(&details),
        );
        if let WatchdogEvent::Missed { component, age, .. } = e {
            // Something starved a detector: look at what runs.
            Worker::want(
                pending,
                Trigger::Watchdog {
                    component,
                    age: age.unwrap_or_default(),
                },
                None,
            );
        }
    }

    /// The cheap periodic check: limited cgroups, and D-state threads (see
    /// [`Worker::refresh_dstate`]).
    fn sweep(&mut self, pending: &mut Option<Pending>) {
        let t0 = Instant::now();
        self.refresh_dstate(t0, true);
        self.recheck_held(t0);
        let bound = self.cfg.heavy.dstate_bound.get();
        let own = self.diagnoser.own_pids.clone();
        let stuck: Vec<_> = self
            .tracker
            .stuck(Instant::now(), bound)
            .into_iter()
            .filter(|s| !own.contains(&s.pid))
            .filter(|s| !self.stuck_reported.contains(&(s.tid, s.starttime)))
            .collect();
        if !stuck.is_empty() {
            let onset = stuck.iter().map(|s| s.since).min();
            Worker::want(
                pending,
                Trigger::DState {
                    tids: stuck.iter().map(|s| s.tid).collect(),
                },
                onset,
            );
        }
        let usages = {
            let mut sc = self.scanner.lock().unwrap_or_else(|p| p.into_inner());
            // memory.stat (the kernel sums per-CPU counters) only where the
            // total usage, page cache included, reaches the threshold: below
            // it the unreclaimable part cannot (heavy runs read it all).
            sc.set_detail_above(Some(self.cfg.heavy.cgroup_memory_percent));
            sc.scan()
        };
        let th = &self.cfg.heavy;
        let again = self.cfg.heavy.rediagnose_after.get();
        for u in usages {
            let memory = u
                .memory
                .is_some_and(|m| m.percent() >= th.cgroup_memory_percent);
            let pids = u
                .pids
                .is_some_and(|p| p.percent() >= th.cgroup_pids_percent && p.refused_recently > 0);
            if !(memory || pids) {
                continue;
            }
            if self
                .cgroups_reported
                .get(&u.path)
                .is_some_and(|t| t.elapsed() < again)
            {
                continue;
            }
            self.cgroups_reported.insert(u.path.clone(), Instant::now());
            Worker::want(
                pending,
                Trigger::Cgroup {
                    path: u.path.clone(),
                    resource: if pids {
                        Controller::Pids
                    } else {
                        Controller::Memory
                    },
                },
                None,
            );
        }
        self.stats.sweeps.fetch_add(1, Ordering::Relaxed);
        self.stats
            .sweep_last_us
            .store(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Tasks recorded as held: forgotten when their block ends; every
    /// [`HELD_RECHECK`], what they wait for is looked at again, and a task
    /// no longer held becomes a trigger (its block is then a fault). Held
    /// longer than `heavy.held_alert_after`: one alert.
    fn recheck_held(&mut self, now: Instant) {
        if self.held.is_empty() {
            return;
        }
        let stuck: HashMap<(i32, u64), selfheal_diagnose::sweep::StuckTask> = self
            .tracker
            .stuck(now, Duration::ZERO)
            .into_iter()
            .map(|s| ((s.tid, s.starttime), s))
            .collect();
        self.held.retain(|k, _| stuck.contains_key(k));
        let alert_after = self.cfg.heavy.held_alert_after.get();
        let kernel: Vec<KernelReport> = self.kernel.iter().map(|(_, r)| r.clone()).collect();
        let mut released = Vec::new();
        for (key, w) in self.held.iter_mut() {
            let s = &stuck[key];
            if now >= w.next_check {
                w.next_check = now + HELD_RECHECK;
                let b =
                    self.diagnoser
                        .blockers
                        .blocker_of(w.pid, s.tid, s.wchan.as_deref(), &kernel);
                if b.held().is_none() {
                    released.push(*key);
                    continue;
                }
            }
            if !alert_after.is_zero() && s.stuck_for >= alert_after && !w.alerted {
                w.alerted = true;
                self.sink.emit(
                    Event::now(
                        EventKind::Alert,
                        Severity::Warning,
                        Source::Heavy,
                        format!(
                            "{} pid {} held for {} s (heavy.held_alert_after = {}); not acted on",
                            s.comm,
                            s.pid,
                            s.stuck_for.as_secs(),
                            self.cfg.heavy.held_alert_after
                        ),
                    )
                    .with_rule("held_too_long")
                    .with_culprit(Culprit {
                        pid: Some(s.pid),
                        tid: Some(s.tid),
                        comm: Some(s.comm.clone()),
                        ..Culprit::default()
                    })
                    .with_details_of(&HeldDetails {
                        stuck_ms: s.stuck_for.as_millis() as u64,
                        held_alert_after_ms: alert_after.as_millis() as u64,
                    }),
                );
            }
        }
        for key in released {
            self.held.remove(&key);
            self.stuck_reported.remove(&key);
        }
    }

    /// Two snapshots, a diagnosis, and recovery for every hang found.
    fn heavy(&mut self, p: Pending) {
        let t0 = Instant::now();
        self.stats.count_run(p.trigger.kind());
        let before = match self.reader.take() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("heavy detector: cannot snapshot tasks: {e}");
                return;
            }
        };
        std::thread::sleep(self.cfg.heavy.interval.get());
        let Ok(after) = self.reader.take() else {
            return;
        };
        let now = Instant::now();
        let measured_wall = SystemTime::now();
        self.refresh_dstate(now, false);
        let stuck = self.tracker.stuck(now, self.cfg.heavy.dstate_bound.get());
        let oom_loops = self.oom_loops.looping(now);
        let (cgroups, members) = {
            let mut sc = self.scanner.lock().unwrap_or_else(|p| p.into_inner());
            // Full figures, and cgroups created since the last walk.
            sc.set_detail_above(None);
            sc.walk();
            let cgroups = sc.scan();
            let th = &self.cfg.heavy;
            let members: HashMap<String, Vec<i32>> = cgroups
                .iter()
                .filter(|u| {
                    u.memory
                        .is_some_and(|m| m.percent() >= th.cgroup_memory_percent)
                        || u.pids
                            .is_some_and(|p| p.percent() >= th.cgroup_pids_percent)
                })
                .map(|u| (u.path.clone(), sc.members(&u.path)))
                .chain(
                    oom_loops
                        .iter()
                        .map(|l| (l.cgroup.clone(), sc.members(&l.cgroup))),
                )
                .collect();
            (cgroups, members)
        };
        let mut stalled = self.stall.as_ref().map(|s| s.stalled()).unwrap_or_default();
        // A stall held for the host's word is not one yet.
        if let Some(h) = &self.stalls_held {
            stalled.retain(|(cpu, _)| !h.holds(*cpu));
        }
        let window = self.cfg.kmsg.correlate_window.get();
        let kernel: Vec<KernelReport> = self
            .kernel
            .iter()
            .filter(|(t, _)| t.elapsed() <= window)
            .map(|(_, r)| r.clone())
            .collect();
        let settling = self.ladder.settling();
        let obs = Observation {
            trigger: &p.trigger,
            before: &before,
            after: &after,
            stalled_cpus: &stalled,
            stuck: &stuck,
            cgroups: &cgroups,
            cgroup_members: &members,
            kernel: &kernel,
            settling: &settling,
            oom_loops: &oom_loops,
        };
        let diagnoses = self.diagnoser.diagnose(&obs);
        let elapsed = t0.elapsed();
        self.stats.heavy_run.observe(elapsed);
        let took = elapsed.as_micros() as u64;
        self.stats.heavy_last_us.store(took, Ordering::Relaxed);
        self.stats.heavy_max_us.fetch_max(took, Ordering::Relaxed);

        let again = self.cfg.heavy.rediagnose_after.get();
        self.recent.retain(|_, t| t.elapsed() < again);
        for d in diagnoses {
            // Stuck tasks seen by this diagnosis are not triggers again
            // (held ones are re-checked by the sweep, see `recheck_held`).
            if let Symptom::Stuck { tasks } = &d.symptom {
                for s in stuck.iter().filter(|s| tasks.iter().any(|t| t.1 == s.tid)) {
                    self.stuck_reported.insert((s.tid, s.starttime));
                    if d.class == Class::Held {
                        self.held.entry((s.tid, s.starttime)).or_insert(HeldWatch {
                            pid: s.pid,
                            next_check: Instant::now() + HELD_RECHECK,
                            alerted: false,
                        });
                    }
                }
            }
            let key = d.key();
            if self.recent.contains_key(&key) {
                continue;
            }
            self.recent.insert(key, Instant::now());
            // Stuck tasks carry their own onset (the trigger may be an
            // alert that came later, or another task's block).
            let onset = match &d.symptom {
                Symptom::Stuck { tasks } => stuck
                    .iter()
                    .filter(|s| tasks.iter().any(|t| t.1 == s.tid && t.2 == s.starttime))
                    .map(|s| s.since)
                    .min()
                    .or(p.onset),
                _ => p.onset,
            };
            let latency = onset.map(|o| Instant::now().saturating_duration_since(o));
            self.sink.emit(d.to_event(&p.trigger, latency));
            if !d.class.is_fault() {
                continue;
            }
            let incident = d.incident(now, measured_wall);
            let mut probe = Beating {
                check: SymptomCheck::new(
                    d.symptom.clone(),
                    &self.proc_root,
                    self.stall.clone(),
                    Some(self.scanner.clone()),
                ),
                heartbeat: &self.heartbeat,
            };
            let report = self.ladder.run(&incident, &mut probe, self.sink.as_ref());
            if let Some(t) = report.time_to_recover {
                tracing::info!("{}: recovered in {} ms", d.class, t.as_millis());
            }
        }
        // Forget stuck threads that are gone, so a new hang of a reused tid
        // is reported again.
        let live: HashSet<(i32, u64)> = stuck.iter().map(|s| (s.tid, s.starttime)).collect();
        self.stuck_reported.retain(|k| live.contains(k));
    }
}

/// The symptom check, beating the pipeline's heartbeat while the ladder
/// polls it (a ladder can take seconds; the watchdog must not see a
/// stalled pipeline).
struct Beating<'a> {
    check: SymptomCheck,
    heartbeat: &'a Heartbeat,
}

impl SymptomProbe for Beating<'_> {
    fn cleared(&mut self) -> bool {
        self.heartbeat.beat();
        self.check.cleared()
    }

    fn recheck(&mut self) -> Recheck {
        self.heartbeat.beat();
        self.check.recheck()
    }
}
