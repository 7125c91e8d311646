//! The recovery ladder: least destructive step first, verify, escalate.
//!
//! For each step of the class's ladder: check the target against the
//! [`Policy`] (every process the step would touch); pin it through a pidfd
//! and re-check the evidence (the same program, still among the processes
//! the diagnosis blames, the symptom still present); take one action from
//! the rate budget; act through the pinned handle (or, in dry-run, only say
//! what would be done); then poll the symptom until it clears or
//! `verify_timeout` passes. A cleared symptom ends the ladder
//! ("recovered"); otherwise the next step runs. Every step is an event with
//! its action, outcome, the evidence and, when refused, the reason.

mod actions;
mod blocker;
mod guard;
mod held_kill;
#[cfg(test)]
mod held_kill_tests;
mod hold;
#[cfg(test)]
mod hold_tests;
#[cfg(test)]
mod quarantine_tests;
#[cfg(test)]
mod refusals;
mod restart_step;
#[cfg(test)]
mod restart_tests;
mod step_details;
#[cfg(test)]
mod tests;
mod tree;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use selfheal_config::{Action, RecoveryConfig};
use selfheal_event::{
    Blame, Class, Culprit, Event, EventKind, EventSink, Severity, Source, Target,
};

use crate::evidence::{Evidence, Recheck, Refusal, SymptomProbe};
use crate::ops::{OpsError, SystemOps};
use crate::policy::Policy;
use crate::rate::RateLimiter;
use crate::restart::RestartStore;
use crate::target::{cooldown_key, program_covers};
use step_details::{IncidentRef, StepDetails, TargetDetails};

/// What stuck tasks wait on, where recovery can act on it directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// A FUSE connection whose server does not answer (`abort_fuse`).
    FuseConnection {
        /// `/sys/fs/fuse/connections/<connection>`.
        connection: u64,
        /// The mount it serves (re-checked before aborting: connection
        /// numbers are reused after an unmount).
        mount_id: u32,
        /// Where it is mounted.
        mount_point: std::path::PathBuf,
    },
}

/// One diagnosed problem to recover from.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// The diagnosis class: it picks the ladder.
    pub class: Class,
    /// Who is to blame, as the diagnosis recorded it (copied into events).
    pub culprit: Culprit,
    /// Whom to act on; `None` when there is no user-space culprit.
    pub target: Option<Target>,
    /// What ties the target to the symptom (copied into every step's event).
    pub evidence: Evidence,
    /// What stuck tasks wait on, when recovery can act on it.
    pub blocker: Option<Blocker>,
}

impl Incident {
    /// The culprit's command name, for messages.
    pub(crate) fn comm(&self) -> &str {
        self.culprit.comm.as_deref().unwrap_or("?")
    }
}

/// How a step ended. Names are stable (`details.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Evidence recorded (the `record` step).
    Recorded,
    /// Action taken and the symptom cleared.
    Recovered,
    /// Action taken but the symptom persisted past the verify timeout.
    NotCleared,
    /// The action failed.
    Failed,
    /// Policy forbids touching the target, or the evidence did not hold
    /// when re-checked (`details.refusal` says which).
    Refused,
    /// The rate budget or the target's cool-down stopped it.
    RateLimited,
    /// Dry run: would have acted.
    DryRun,
    /// The step does not apply (no unit to restart, not real-time, …).
    Skipped,
    /// The controlled restart was issued: the record is written, the disks
    /// synced, and the machine is going down.
    Restarting,
    /// Action taken; the fault persists but no longer takes from others (a
    /// runaway kernel thread moved to SCHED_IDLE). Ends the ladder.
    Mitigated,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: &'static [Outcome] = &[
        Outcome::Recorded,
        Outcome::Recovered,
        Outcome::NotCleared,
        Outcome::Failed,
        Outcome::Refused,
        Outcome::RateLimited,
        Outcome::DryRun,
        Outcome::Skipped,
        Outcome::Restarting,
        Outcome::Mitigated,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Recorded => "recorded",
            Outcome::Recovered => "recovered",
            Outcome::NotCleared => "not_cleared",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::RateLimited => "rate_limited",
            Outcome::DryRun => "dry_run",
            Outcome::Skipped => "skipped",
            Outcome::Restarting => "restarting",
            Outcome::Mitigated => "mitigated",
        }
    }
}

/// One step as it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The action.
    pub action: Action,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, in words.
    pub reason: String,
    /// Time spent acting.
    pub act_time: Duration,
    /// Time until the symptom cleared (or the verify timeout).
    pub verify_time: Duration,
    /// Processes signalled or changed by this step, as (pid, start time).
    pub touched: Vec<(i32, u64)>,
    /// Why the step was refused, when it was.
    pub refusal: Option<Refusal>,
    /// The symptom as measured just before acting, when it was.
    pub recheck: Option<String>,
    /// The incident's id, when the step wrote a restart record naming it.
    pub incident_id: Option<String>,
    /// What the step did besides acting on processes (a fork hold placed
    /// and lifted, or why none was).
    pub notes: Vec<String>,
}

impl StepRecord {
    fn new(action: Action, outcome: Outcome, reason: String) -> StepRecord {
        StepRecord {
            action,
            outcome,
            reason,
            act_time: Duration::ZERO,
            verify_time: Duration::ZERO,
            touched: Vec::new(),
            refusal: None,
            recheck: None,
            incident_id: None,
            notes: Vec::new(),
        }
    }

    fn refused(action: Action, refusal: Refusal, reason: String) -> StepRecord {
        StepRecord {
            refusal: Some(refusal),
            ..StepRecord::new(action, Outcome::Refused, reason)
        }
    }

    /// The pids touched.
    pub fn touched_pids(&self) -> Vec<i32> {
        self.touched.iter().map(|t| t.0).collect()
    }
}

/// What a ladder run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LadderReport {
    /// The steps, in order.
    pub steps: Vec<StepRecord>,
    /// True when a step cleared the symptom (or it cleared by itself).
    pub recovered: bool,
    /// From the start of the ladder to the symptom clearing.
    pub time_to_recover: Option<Duration>,
}

/// Ladder settings.
#[derive(Debug, Clone)]
pub struct LadderOptions {
    /// `[recovery]`.
    pub config: RecoveryConfig,
    /// Record only.
    pub dry_run: bool,
    /// How often the symptom is polled while verifying.
    pub poll: Duration,
}

impl LadderOptions {
    /// From `[recovery]` and the daemon's dry-run flag.
    pub fn new(config: RecoveryConfig, dry_run: bool) -> LadderOptions {
        LadderOptions {
            config,
            dry_run,
            poll: Duration::from_millis(20),
        }
    }
}

/// Runs ladders. Holds the rate limiter, so one ladder serves the daemon.
pub struct Ladder {
    ops: std::sync::Arc<dyn SystemOps>,
    policy: Policy,
    rate: RateLimiter,
    options: LadderOptions,
    /// Processes acted upon → when, for the settle window.
    acted: HashMap<(i32, u64), Instant>,
    /// Restart records and history (`recovery.restart.state_dir`).
    restart_store: RestartStore,
    /// Notes the running step left for its record.
    notes: std::sync::Mutex<Vec<String>>,
    /// A fork hold tried as the ladder started (and what it placed), for
    /// its first `kill_tree` or `quarantine` step to adopt (`hold.rs`).
    early_hold: std::sync::Mutex<Option<Option<std::sync::Arc<hold::Placed>>>>,
}

impl std::fmt::Debug for Ladder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ladder")
            .field("policy", &self.policy)
            .field("dry_run", &self.options.dry_run)
            .finish_non_exhaustive()
    }
}

/// Result of one action before verification.
pub(crate) enum Acted {
    /// Done; these processes (pid, start time) were touched.
    Done(Vec<(i32, u64)>),
    /// Not applicable.
    Skip(String),
    /// Refused: policy, or evidence that did not hold.
    Refuse(Refusal, String),
    /// The target was already gone.
    Gone,
    /// Failed.
    Fail(String),
}

impl Ladder {
    /// A ladder acting through `ops`.
    pub fn new(ops: Box<dyn SystemOps>, options: LadderOptions) -> Ladder {
        Ladder {
            policy: Policy::from_config(&options.config),
            rate: RateLimiter::new(
                options.config.max_actions_per_minute,
                options.config.target_cooldown.get(),
            ),
            restart_store: RestartStore::new(&options.config.restart.state_dir),
            ops: ops.into(),
            options,
            acted: HashMap::new(),
            notes: std::sync::Mutex::new(Vec::new()),
            early_hold: std::sync::Mutex::new(None),
        }
    }

    /// Keeps restart records in `store` (tests: a temporary directory with
    /// its own pstore and EFI locations).
    pub fn with_restart_store(mut self, store: RestartStore) -> Ladder {
        self.restart_store = store;
        self
    }

    /// Processes acted upon within the settle window (`recovery.settle`),
    /// as (pid, start time): diagnoses must not count them.
    pub fn settling(&mut self) -> HashSet<(i32, u64)> {
        let settle = self.options.config.settle.get();
        self.acted.retain(|_, t| t.elapsed() < settle);
        self.acted.keys().copied().collect()
    }

    /// The steps configured for `class`.
    pub fn steps_for(&self, class: Class) -> Vec<Action> {
        self.options.config.ladder.for_class(class).to_vec()
    }

    /// True in dry-run mode.
    pub fn dry_run(&self) -> bool {
        self.options.dry_run
    }

    /// Runs the class's ladder for `incident`. `probe` re-measures the
    /// symptom before each action and tells when it cleared; every step is
    /// emitted to `sink` as it completes.
    pub fn run(
        &mut self,
        incident: &Incident,
        probe: &mut dyn SymptomProbe,
        sink: &dyn EventSink,
    ) -> LadderReport {
        let steps = self.steps_for(incident.class);
        let start = Instant::now();
        let mut report = LadderReport::default();
        // The cool-down keeps a process from being acted on again straight
        // away. A ladder that acts on no process (record, the controlled
        // restart with its own grace and re-check) is not held back by it:
        // a runaway kernel thread deprioritized 2 s ago that now stalls
        // its CPU must still reach the restart (the hang lab's
        // spin_self-005 in lab/results/full-restart-2026-12-07 stayed
        // stalled, its kernel_stall refused for the cool-down).
        let acts_on_processes = steps
            .iter()
            .any(|a| !matches!(a, Action::Record | Action::Reboot));
        if let (Some(t), true) = (&incident.target, acts_on_processes) {
            if let Some(left) = self.rate.cooling(&cooldown_key(t), start) {
                let rec = StepRecord::new(
                    steps.first().copied().unwrap_or(Action::Record),
                    Outcome::RateLimited,
                    format!(
                        "{} (pid {}) was acted on recently; cool-down ends in {} ms",
                        incident.comm(),
                        t.pid,
                        left.as_millis()
                    ),
                );
                self.emit(sink, incident, &rec, 0, steps.len());
                report.steps.push(rec);
                return report;
            }
        }
        let lineage = Policy::own_lineage(self.ops.as_ref());
        hold::hold_at_start(self, incident, &steps, &lineage);
        let mut current = std::borrow::Cow::Borrowed(incident);
        for (i, &action) in steps.iter().enumerate() {
            if let Some(next) = self.successor(&current, &lineage) {
                tracing::info!(
                    "{}: pid {} is gone; the bomb's oldest live member by the same evidence, pid {}, is the target now",
                    current.class,
                    current.target.as_ref().map_or(0, |t| t.pid),
                    next.target.as_ref().map_or(0, |t| t.pid)
                );
                current = std::borrow::Cow::Owned(next);
            }
            let incident: &Incident = &current;
            let (rec, emitted) = if action == Action::Reboot {
                self.restart_step(incident, probe, sink, (i, steps.len()))
            } else {
                (self.step(incident, action, &lineage, probe), false)
            };
            if !emitted {
                self.emit(sink, incident, &rec, i, steps.len());
            }
            let now = Instant::now();
            for id in &rec.touched {
                self.acted.insert(*id, now);
            }
            let (outcome, refusal) = (rec.outcome, rec.refusal);
            report.steps.push(rec);
            let cleared = match outcome {
                Outcome::Recovered | Outcome::Mitigated => true,
                // Stale evidence: the symptom went away by itself.
                Outcome::Refused => refusal == Some(Refusal::SymptomGone),
                // Not for a bomb with a step to come: that step measures
                // the symptom again before acting (and ends the ladder
                // here if it is gone), and a count now, a read of every
                // process, only hands the bomb the time it takes.
                Outcome::Recorded if incident.class == Class::ForkBomb && i + 1 < steps.len() => {
                    false
                }
                Outcome::Recorded => !self.options.dry_run && probe.cleared(),
                _ => false,
            };
            if cleared {
                report.recovered = true;
                report.time_to_recover = Some(start.elapsed());
                break;
            }
            if matches!(outcome, Outcome::RateLimited | Outcome::Restarting) {
                break;
            }
        }
        if let Some(note) = hold::lift_unadopted(self) {
            // Emitted with its step already: kept in the report.
            if let Some(last) = report.steps.last_mut() {
                last.notes.push(note);
            }
        }
        if let (Some(t), false) = (&incident.target, self.options.dry_run) {
            if report.steps.iter().any(|s| !s.touched.is_empty()) {
                self.rate.cool(&cooldown_key(t), Instant::now());
            }
        }
        report
    }

    /// A fork bomb blamed as one program (its command, uid, counted members
    /// and their process groups) whose target is gone (killed by a step, or
    /// exited, as a bomb's members do) while other members live: the same
    /// incident aimed at the oldest live member that evidence covers and
    /// policy allows, so the next steps still have a process to act
    /// through. `None` otherwise (the target lives, another blame, or no
    /// member is left).
    fn successor(&self, inc: &Incident, lineage: &HashSet<i32>) -> Option<Incident> {
        if inc.class != Class::ForkBomb {
            return None;
        }
        let t = inc.target.as_ref()?;
        let Blame::Program(scope) = &t.blame else {
            return None;
        };
        match self.ops.process(t.pid) {
            Ok(Some(p)) if p.starttime == t.starttime && !crate::target::is_dead(&p) => {
                return None
            }
            Ok(_) | Err(OpsError::Gone) => {}
            Err(_) => return None,
        }
        let next = self
            .ops
            .processes()
            .ok()?
            .into_iter()
            .filter(|p| program_covers(scope, p) && !crate::target::is_dead(p))
            .filter(|p| self.policy.refusal(p, lineage).is_none())
            .min_by_key(|p| (p.starttime, p.pid))?;
        let mut inc = inc.clone();
        inc.culprit.pid = Some(next.pid);
        if inc.culprit.tid.is_some() {
            inc.culprit.tid = Some(next.pid);
        }
        if let Some(t) = inc.target.as_mut() {
            t.pid = next.pid;
            t.starttime = next.starttime;
        }
        Some(inc)
    }

    fn step(
        &mut self,
        incident: &Incident,
        action: Action,
        lineage: &HashSet<i32>,
        probe: &mut dyn SymptomProbe,
    ) -> StepRecord {
        let record = |outcome, reason: String| StepRecord::new(action, outcome, reason);
        if action == Action::Record {
            return record(Outcome::Recorded, "evidence recorded".into());
        }
        if !self.options.config.enabled {
            return record(Outcome::Skipped, "recovery.enabled = false".into());
        }
        if action == Action::AbortFuse {
            return self.abort_fuse(incident, lineage, probe);
        }
        let comm = incident.comm();
        // Every action here needs a target (`reboot` has its own step).
        let target = match &incident.target {
            Some(t) => Some(t),
            None => {
                let why = incident
                    .evidence
                    .no_target
                    .clone()
                    .unwrap_or_else(|| "no user-space culprit to act on".into());
                return record(Outcome::Skipped, why);
            }
        };
        // Refusals are decided before the budget is spent or anything done.
        let pinned = match target {
            None => None,
            Some(t) => {
                // Kernel threads are never touched, except by the one step
                // made for them.
                let check = if action == Action::Deprioritize {
                    self.policy.check_kthread(self.ops.as_ref(), t.pid, lineage)
                } else {
                    self.policy.check_pid(self.ops.as_ref(), t.pid, lineage)
                };
                match check.and_then(|why| Ok((why, self.ops.pin(t.pid, t.starttime)?))) {
                    Ok((Some(why), _)) => {
                        return StepRecord::refused(action, Refusal::Protected, why)
                    }
                    Ok((None, p)) => Some(p),
                    Err(OpsError::Gone) if self.cleared_soon(probe) => {
                        return record(Outcome::Recovered, self.gone_why(comm, t.pid))
                    }
                    Err(OpsError::Gone) => {
                        return record(
                            Outcome::Skipped,
                            format!(
                                "{comm} (pid {}) is gone: its pid names another process or nothing",
                                t.pid
                            ),
                        )
                    }
                    Err(e) => return record(Outcome::Failed, e.to_string()),
                }
            }
        };
        // The evidence must still hold: same program, still blamed...
        if let (Some(t), Some(p)) = (target, &pinned) {
            if let Err(a) = guard::still_blamed(self, incident, t, p) {
                return self.unacted(action, a, comm, t.pid, probe);
            }
        }
        // ...and the symptom still there.
        let recheck = match probe.recheck() {
            Recheck::Present(m) => m,
            Recheck::Cleared(m) => {
                return StepRecord::refused(
                    action,
                    Refusal::SymptomGone,
                    format!("stale evidence: the symptom is gone ({m})"),
                )
            }
            Recheck::Unverifiable => {
                return StepRecord::refused(
                    action,
                    Refusal::Unverifiable,
                    format!(
                        "weak evidence: the {} symptom cannot be measured again before acting",
                        incident.evidence.symptom
                    ),
                )
            }
        };
        let with_recheck = |rec: StepRecord| StepRecord {
            recheck: Some(recheck.clone()),
            ..rec
        };
        if self.options.dry_run {
            let plan = match actions::plan(self, incident, target, pinned.as_ref(), action, lineage)
            {
                Ok(p) => p,
                Err(a) => {
                    return with_recheck(self.unacted(
                        action,
                        a,
                        comm,
                        target.map_or(0, |t| t.pid),
                        probe,
                    ))
                }
            };
            return with_recheck(record(Outcome::DryRun, format!("would {plan}")));
        }
        if !self.rate.take(Instant::now()) {
            return with_recheck(record(
                Outcome::RateLimited,
                format!(
                    "recovery.max_actions_per_minute = {} reached",
                    self.options.config.max_actions_per_minute
                ),
            ));
        }
        let t0 = Instant::now();
        let acted = actions::act(self, incident, target, pinned.as_ref(), action, lineage);
        let act_time = t0.elapsed();
        let notes = std::mem::take(&mut *self.notes.lock().unwrap_or_else(|p| p.into_inner()));
        let (touched, gone) = match acted {
            Acted::Done(t) => (t, false),
            Acted::Gone if probe.cleared() => (Vec::new(), true),
            other => {
                let pid = target.map_or(0, |t| t.pid);
                return StepRecord {
                    act_time,
                    notes,
                    ..with_recheck(self.unacted(action, other, comm, pid, probe))
                };
            }
        };
        // Verify: poll until the symptom clears or the timeout passes.
        let v0 = Instant::now();
        let timeout = self.options.config.verify_timeout.get();
        let ok = loop {
            if probe.cleared() {
                break true;
            }
            if v0.elapsed() >= timeout {
                break false;
            }
            std::thread::sleep(self.options.poll);
        };
        let verify_time = v0.elapsed();
        let (outcome, reason) = match (ok, gone) {
            (true, true) => (
                Outcome::Recovered,
                "the target exited before the action".to_string(),
            ),
            (true, false) => (
                Outcome::Recovered,
                format!(
                    "symptom cleared {} ms after the action",
                    verify_time.as_millis()
                ),
            ),
            (false, _) if action == Action::Deprioritize => (
                Outcome::Mitigated,
                format!(
                    "{} now runs at SCHED_IDLE (nice 19 where refused) on its own CPU: it still spins (user space cannot stop a kernel thread), but everything else comes first",
                    comm
                ),
            ),
            (false, _) => (
                Outcome::NotCleared,
                format!(
                    "symptom persisted {} ms after the action",
                    timeout.as_millis()
                ),
            ),
        };
        StepRecord {
            act_time,
            verify_time,
            touched,
            recheck: Some(recheck),
            notes,
            ..record(outcome, reason)
        }
    }

    /// Leaves a note for the record of the step running now.
    pub(crate) fn note_step(&self, note: String) {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(note);
    }

    /// Whether the symptom clears within the verification time: asked when
    /// the target is gone before a step acts. Some symptoms clear only
    /// after staying cleared a moment (a fork bomb's count at zero), so
    /// one look right after the last member died is not the answer.
    fn cleared_soon(&self, probe: &mut dyn SymptomProbe) -> bool {
        let t0 = Instant::now();
        loop {
            if probe.cleared() {
                return true;
            }
            if t0.elapsed() >= self.options.config.verify_timeout.get() {
                return false;
            }
            std::thread::sleep(self.options.poll);
        }
    }

    /// Why a target that is gone while the symptom cleared is gone: an
    /// earlier step's work (a killed bomb's last members can take longer
    /// to die than that step's verification), or the process itself.
    fn gone_why(&self, comm: &str, pid: i32) -> String {
        if self.acted.keys().any(|&(p, _)| p == pid) {
            format!(
                "{comm} (pid {pid}) is gone, and the symptom with it: an earlier step acted on it"
            )
        } else {
            format!("{comm} (pid {pid}) exited by itself")
        }
    }

    /// The record of a step that did not act.
    fn unacted(
        &self,
        action: Action,
        a: Acted,
        comm: &str,
        pid: i32,
        probe: &mut dyn SymptomProbe,
    ) -> StepRecord {
        match a {
            Acted::Done(_) => StepRecord::new(action, Outcome::Failed, "internal: acted".into()),
            Acted::Skip(why) => StepRecord::new(action, Outcome::Skipped, why),
            Acted::Refuse(r, why) => StepRecord::refused(action, r, why),
            Acted::Fail(why) => StepRecord::new(action, Outcome::Failed, why),
            Acted::Gone if self.cleared_soon(probe) => {
                StepRecord::new(action, Outcome::Recovered, self.gone_why(comm, pid))
            }
            Acted::Gone => StepRecord::new(
                action,
                Outcome::Skipped,
                format!("{comm} (pid {pid}) is gone: its pid names another process or nothing"),
            ),
        }
    }

    fn emit(
        &self,
        sink: &dyn EventSink,
        incident: &Incident,
        rec: &StepRecord,
        i: usize,
        n: usize,
    ) {
        let severity = match rec.outcome {
            Outcome::Recorded | Outcome::DryRun | Outcome::Skipped => Severity::Info,
            Outcome::Refused | Outcome::RateLimited | Outcome::NotCleared | Outcome::Failed => {
                Severity::Warning
            }
            Outcome::Recovered | Outcome::Restarting | Outcome::Mitigated => Severity::Critical,
        };
        let who = incident.target.as_ref().map_or_else(
            || {
                let c = incident.culprit.to_string();
                if c.is_empty() {
                    "(no process to blame)".to_string()
                } else {
                    c
                }
            },
            |t| format!("{} pid {}", incident.comm(), t.pid),
        );
        let message = format!(
            "{}: {} {} -> {} ({})",
            incident.class,
            rec.action,
            who,
            rec.outcome.as_str(),
            rec.reason
        );
        let mut e = Event::now(EventKind::Recovery, severity, Source::Recovery, message)
            .with_rule(incident.class.as_str())
            .with_details_of(&StepDetails {
                class: incident.class.as_str(),
                action: rec.action.as_str(),
                outcome: rec.outcome.as_str(),
                reason: &rec.reason,
                step: i + 1,
                steps: n,
                dry_run: self.options.dry_run,
                act_ms: rec.act_time.as_secs_f64() * 1000.0,
                verify_ms: rec.verify_time.as_secs_f64() * 1000.0,
                touched: rec.touched_pids(),
                refusal: rec.refusal.map(Refusal::as_str),
                evidence: incident.evidence.details(),
                recheck: rec.recheck.as_deref(),
                notes: &rec.notes,
                incident: rec.incident_id.as_deref().map(|id| IncidentRef { id }),
                target: incident.target.as_ref().map(|t| TargetDetails {
                    pid: t.pid,
                    starttime: t.starttime,
                    tid: incident.culprit.tid,
                    comm: incident.culprit.comm.as_deref(),
                    cgroup: incident.culprit.cgroup.as_deref(),
                    unit: incident.culprit.unit.as_deref(),
                }),
            });
        if !incident.culprit.is_empty() {
            e = e.with_culprit(incident.culprit.clone());
        }
        sink.emit(e);
    }
}
