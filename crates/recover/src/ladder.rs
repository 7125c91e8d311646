//! The recovery ladder: least destructive step first, verify, escalate.
//!
//! For each step of the class's ladder: check the target against the
//! [`Policy`] (every process the step would touch), take one action from
//! the rate budget, act (or, in dry-run, only say what would be done),
//! then poll the symptom until it clears or `verify_timeout` passes. A
//! cleared symptom ends the ladder ("recovered"); otherwise the next step
//! runs. Every step is an event with its action and outcome.

mod actions;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use selfheal_config::{Action, RecoveryConfig};
use selfheal_event::{Class, Culprit, Event, EventKind, EventSink, Severity};

use crate::ops::{OpsError, SystemOps};
use crate::policy::Policy;
use crate::rate::RateLimiter;

/// Whom recovery acts on: the identity that makes acting safe and the
/// processes blamed along with it. What the process is (command, cgroup,
/// unit) is the incident's [`Culprit`], the one description of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The process.
    pub pid: i32,
    /// Process start time (ticks after boot): a reused pid has another, so
    /// with the pid it names exactly one process, ever.
    pub starttime: u64,
    /// Which processes the diagnosis blames along with this one.
    pub blame: Blame,
}

/// The processes a diagnosis blames: what `kill_tree` kills, and what a
/// cgroup may hold for `kill_cgroup`/`freeze_cgroup` to be allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Blame {
    /// The process and its descendants.
    #[default]
    Tree,
    /// Also every process with this command and uid (a fork bomb whose
    /// members were re-parented away from their tree).
    CommUid(String, u32),
    /// Every process in the target's cgroup (a fork bomb filling a cgroup).
    Cgroup,
}

impl Target {
    /// A target blaming the process and its descendants.
    pub fn tree(pid: i32, starttime: u64) -> Target {
        Target {
            pid,
            starttime,
            blame: Blame::Tree,
        }
    }

    /// The cool-down key.
    fn key(&self) -> String {
        format!("pid:{}:{}", self.pid, self.starttime)
    }
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
    /// Policy forbids touching the target.
    Refused,
    /// The rate budget or the target's cool-down stopped it.
    RateLimited,
    /// Dry run: would have acted.
    DryRun,
    /// The step does not apply (no unit to restart, not real-time, …).
    Skipped,
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
    /// Processes signalled or changed by this step.
    pub touched: Vec<i32>,
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
    ops: Box<dyn SystemOps>,
    policy: Policy,
    rate: RateLimiter,
    options: LadderOptions,
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
    /// Done; these processes were touched.
    Done(Vec<i32>),
    /// Not applicable.
    Skip(String),
    /// Policy refused.
    Refuse(String),
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
            ops,
            options,
        }
    }

    /// The steps configured for `class`.
    pub fn steps_for(&self, class: Class) -> Vec<Action> {
        self.options.config.ladder.for_class(class).to_vec()
    }

    /// True in dry-run mode.
    pub fn dry_run(&self) -> bool {
        self.options.dry_run
    }

    /// Runs the class's ladder for `incident`. `cleared` reports whether the
    /// symptom is gone; every step is emitted to `sink` as it completes.
    pub fn run(
        &mut self,
        incident: &Incident,
        cleared: &mut dyn FnMut() -> bool,
        sink: &dyn EventSink,
    ) -> LadderReport {
        let steps = self.steps_for(incident.class);
        let start = Instant::now();
        let mut report = LadderReport::default();
        if let Some(t) = &incident.target {
            if let Some(left) = self.rate.cooling(&t.key(), start) {
                let rec = StepRecord {
                    action: steps.first().copied().unwrap_or(Action::Record),
                    outcome: Outcome::RateLimited,
                    reason: format!(
                        "{} (pid {}) was acted on recently; cool-down ends in {} ms",
                        incident.comm(),
                        t.pid,
                        left.as_millis()
                    ),
                    act_time: Duration::ZERO,
                    verify_time: Duration::ZERO,
                    touched: Vec::new(),
                };
                self.emit(sink, incident, &rec, 0, steps.len());
                report.steps.push(rec);
                return report;
            }
        }
        let lineage = Policy::own_lineage(self.ops.as_ref());
        for (i, &action) in steps.iter().enumerate() {
            let rec = self.step(incident, action, &lineage, cleared);
            self.emit(sink, incident, &rec, i, steps.len());
            let outcome = rec.outcome;
            report.steps.push(rec);
            match outcome {
                Outcome::Recovered => {
                    report.recovered = true;
                    report.time_to_recover = Some(start.elapsed());
                    break;
                }
                Outcome::Recorded if !self.options.dry_run && cleared() => {
                    report.recovered = true;
                    report.time_to_recover = Some(start.elapsed());
                    break;
                }
                Outcome::RateLimited => break,
                _ => {}
            }
        }
        if let (Some(t), false) = (&incident.target, self.options.dry_run) {
            if report.steps.iter().any(|s| !s.touched.is_empty()) {
                self.rate.cool(&t.key(), Instant::now());
            }
        }
        report
    }

    fn step(
        &mut self,
        incident: &Incident,
        action: Action,
        lineage: &HashSet<i32>,
        cleared: &mut dyn FnMut() -> bool,
    ) -> StepRecord {
        let record = |outcome, reason: String| StepRecord {
            action,
            outcome,
            reason,
            act_time: Duration::ZERO,
            verify_time: Duration::ZERO,
            touched: Vec::new(),
        };
        if action == Action::Record {
            return record(Outcome::Recorded, "evidence recorded".into());
        }
        if !self.options.config.enabled {
            return record(Outcome::Skipped, "recovery.enabled = false".into());
        }
        if action == Action::Reboot && !self.options.config.allow_reboot {
            return record(
                Outcome::Refused,
                "reboot needs recovery.allow_reboot = true".into(),
            );
        }
        let comm = incident.comm();
        let target = match &incident.target {
            Some(t) if action != Action::Reboot => t.clone(),
            None if action != Action::Reboot => {
                return record(Outcome::Skipped, "no user-space culprit to act on".into())
            }
            // Reboot addresses no process.
            _ => Target::tree(0, 0),
        };
        // Refusals are decided before the budget is spent or anything done.
        if action != Action::Reboot {
            match self
                .policy
                .check_pid(self.ops.as_ref(), target.pid, lineage)
            {
                Ok(Some(why)) => return record(Outcome::Refused, why),
                Ok(None) => {}
                Err(OpsError::Gone) if cleared() => {
                    return record(
                        Outcome::Recovered,
                        format!("{comm} (pid {}) exited by itself", target.pid),
                    )
                }
                Err(OpsError::Gone) => {
                    return record(
                        Outcome::Skipped,
                        format!("{comm} (pid {}) is gone", target.pid),
                    )
                }
                Err(e) => return record(Outcome::Failed, e.to_string()),
            }
        }
        if self.options.dry_run {
            let plan = match actions::plan(self, incident, &target, action, lineage) {
                Ok(p) => p,
                Err(Acted::Refuse(why)) => return record(Outcome::Refused, why),
                Err(Acted::Skip(why)) => return record(Outcome::Skipped, why),
                Err(_) => String::new(),
            };
            return record(Outcome::DryRun, format!("would {plan}"));
        }
        if !self.rate.take(Instant::now()) {
            return record(
                Outcome::RateLimited,
                format!(
                    "recovery.max_actions_per_minute = {} reached",
                    self.options.config.max_actions_per_minute
                ),
            );
        }
        let t0 = Instant::now();
        let acted = actions::act(self, incident, &target, action, lineage);
        let act_time = t0.elapsed();
        let (touched, gone) = match acted {
            Acted::Done(t) => (t, false),
            Acted::Gone if !cleared() => {
                return StepRecord {
                    act_time,
                    ..record(
                        Outcome::Skipped,
                        format!(
                            "{comm} (pid {}) is gone: its pid names another process or nothing",
                            target.pid
                        ),
                    )
                }
            }
            Acted::Gone => (Vec::new(), true),
            Acted::Skip(why) => return record(Outcome::Skipped, why),
            Acted::Refuse(why) => return record(Outcome::Refused, why),
            Acted::Fail(why) => {
                return StepRecord {
                    act_time,
                    ..record(Outcome::Failed, why)
                }
            }
        };
        // Verify: poll until the symptom clears or the timeout passes.
        let v0 = Instant::now();
        let timeout = self.options.config.verify_timeout.get();
        let ok = loop {
            if cleared() {
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
            (false, _) => (
                Outcome::NotCleared,
                format!(
                    "symptom persisted {} ms after the action",
                    timeout.as_millis()
                ),
            ),
        };
        StepRecord {
            action,
            outcome,
            reason,
            act_time,
            verify_time,
            touched,
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
            Outcome::Recovered => Severity::Critical,
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
        let mut e = Event::now(EventKind::Recovery, severity, "recovery", message)
            .with_rule(incident.class.as_str())
            .with_details(json!({
                "class": incident.class.as_str(),
                "action": rec.action.as_str(),
                "outcome": rec.outcome.as_str(),
                "reason": rec.reason,
                "step": i + 1,
                "steps": n,
                "dry_run": self.options.dry_run,
                "act_ms": rec.act_time.as_secs_f64() * 1000.0,
                "verify_ms": rec.verify_time.as_secs_f64() * 1000.0,
                "touched": rec.touched,
                "target": incident.target.as_ref().map(|t| json!({
                    "pid": t.pid, "starttime": t.starttime,
                    "tid": incident.culprit.tid, "comm": incident.culprit.comm,
                    "cgroup": incident.culprit.cgroup, "unit": incident.culprit.unit,
                })),
            }));
        if !incident.culprit.is_empty() {
            e = e.with_culprit(incident.culprit.clone());
        }
        sink.emit(e);
    }
}
