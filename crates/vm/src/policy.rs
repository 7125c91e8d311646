//! What to do about a VM, decided from what was seen of it. Pure: time is a
//! parameter and the host's evidence comes in as values, so every rule is
//! tested without QEMU.
//!
//! Triggers: a guest panic (QMP `GUEST_PANICKED`, from the pvpanic device);
//! a hang (the guest link silent for `heartbeat_timeout` while the host sees
//! QEMU running: re-checked just before acting, and never when QEMU got no
//! CPU — stopped or frozen is not hung — nor when its vCPUs waited for a
//! CPU more than they ran and got too little to have beaten — slow is not
//! hung; a dismissed silence is looked at again every 0.5 s, so a guest
//! that hangs once QEMU runs again is caught; once the checkpoint its
//! rollback needs is about to age out of the engine's history, 30 % of the
//! timeout in runnable time is enough); a fault the guest's own
//! selfheal diagnosed, of a class in `rollback_on`, that it did not report
//! recovered within `guest_grace`.
//!
//! A trigger rolls the VM back to a checkpoint from before the fault's
//! estimated onset (a hang's: its last heartbeat minus the time that
//! heartbeat may have been in flight). The same or another trigger before
//! the incident is over (the guest ran `recurrence_window` since the
//! rollback and is being heard from) means the rollback did not clear it: the
//! next attempt reaches further back (onset − 0.5 s × (2^attempt − 1)),
//! and always to a checkpoint older than the one the last attempt
//! restored, so a fault noticed late (a leak found when memory runs out)
//! is reached in a few steps. More than `max_rollbacks` within `window`,
//! no checkpoints, or a rollback the engine refuses: restart the guest.
//!
//! Times after a rollback: the engine restamps the checkpoint it restored
//! as taken at the rollback's end and moves every older one forward by the
//! same amount (the time undone, which the guest never lived), so the
//! incident's onset moves forward by that much too; else a second attempt
//! asks for a checkpoint older than any the engine holds.
//!
//! Settle window: a guest diagnosis that arrives within `settle` of a
//! rollback's end and whose evidence reaches back over it (onset before the
//! rollback ended) is an artefact of the rollback itself (the guest sees the
//! rolled-back interval as time its CPUs did not run): recorded, with the
//! reason, not acted on. After the window such a diagnosis is acted on (a
//! stall the rollback did not clear). A diagnosis whose evidence does not
//! reach the rollback is acted on at any time.
//!
//! Onset: a guest diagnosis's onset is the time the guest made it (its own
//! clock mapped onto the host's) minus its evidence; when the guest's
//! alerts ran without a break from earlier than that (the first alert of
//! the run of alerts that leads to the diagnosis), the first alert is the
//! onset, so the rollback target lies before the fault and not inside it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use selfheal_event::Class;

/// How far back before a panic the rollback target lies (the oops that
/// leads to a panic runs for a while first).
const PANIC_MARGIN: Duration = Duration::from_millis(500);
/// Before a guest-diagnosed fault's onset.
const GUEST_MARGIN: Duration = Duration::from_millis(300);
/// Before a hang's last heartbeat: the guest sent it up to this long
/// before it reached the host (one heartbeat period, 100 ms, plus QEMU's
/// delivery, slower when QEMU waits for a CPU), and may have hung right
/// after sending it.
const HANG_MARGIN: Duration = Duration::from_millis(300);
/// Progressive rollback step.
const STEP: Duration = Duration::from_millis(500);
/// A silence is acted on this long before the checkpoint its rollback
/// needs would age out of the engine's history (the older history's 1 s
/// spacing, the host's evidence query, the request reaching the engine).
const LAST_CHANCE: Duration = Duration::from_millis(2500);
/// Then the share of `heartbeat_timeout` QEMU must have been able to run
/// the guest for (three heartbeat periods at the default 1 s).
const LAST_CHANCE_SHARE: f64 = 0.3;
/// A silence found not to be a hang is looked at again this often (the
/// guest may hang once QEMU runs again).
const RECHECK: Duration = Duration::from_millis(500);

/// A guest diagnosis with an onset this soon after a rollback's end is
/// still taken as an artefact of it.
const ARTEFACT_SLACK: Duration = Duration::from_millis(200);
/// Guest alerts this close together are one run of alerts (one episode).
const ALERT_CHAIN: Duration = Duration::from_millis(2000);
/// The first alert is taken as the onset at most this far before the
/// diagnosis's own onset or the last heartbeat (kept well inside the 10 s of older checkpoints: a
/// target older than the history makes the rollback impossible).
const ALERT_LOOKBACK: Duration = Duration::from_secs(5);

/// The knobs of [`Policy`].
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// The guest link silent this long while QEMU runs means hung (None: off).
    pub heartbeat_timeout: Option<Duration>,
    /// Guest diagnoses acted on.
    pub rollback_on: Vec<Class>,
    /// Time the guest's own recovery gets.
    pub guest_grace: Duration,
    /// A new trigger this soon after the guest resumed (or later, while it
    /// is not heard from) is a recurrence.
    pub recurrence_window: Duration,
    /// Checkpoints are taken (else every trigger restarts).
    pub checkpoints: bool,
    /// Rollbacks allowed within `window` before a restart (0: no limit).
    pub max_rollbacks: u32,
    /// Window for `max_rollbacks`.
    pub window: Duration,
    /// Guest diagnoses covering a rollback that arrive this soon after it
    /// are artefacts of it (recorded, not acted on).
    pub settle: Duration,
    /// How far back the engine keeps checkpoints (None: unknown). A
    /// silence is acted on before the checkpoint from before it ages out.
    pub history: Option<Duration>,
}

/// A guest diagnosis not acted on, and why (for the event).
#[derive(Debug, Clone, PartialEq)]
pub struct NotActed {
    /// Why.
    pub why: String,
    /// The diagnosis arrived this long after the last rollback ended.
    pub after_rollback: Duration,
    /// Its evidence began this long before that rollback ended.
    pub covers: Duration,
}

/// What started an incident.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// The guest kernel panicked.
    Panic,
    /// The guest link went silent while QEMU ran.
    Hang {
        /// How long it had been silent.
        silent: Duration,
        /// What the host saw.
        evidence: HostEvidence,
        /// Acted on with less than `heartbeat_timeout` of runnable time:
        /// waiting longer would lose the last checkpoint from before it.
        last_chance: bool,
    },
    /// The guest's selfheal diagnosed a fault it did not recover.
    Guest {
        /// The class.
        class: Class,
        /// Its message.
        message: String,
    },
}

impl Trigger {
    /// A short name for events and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Trigger::Panic => "panic",
            Trigger::Hang { .. } => "hang",
            Trigger::Guest { .. } => "guest_diagnosis",
        }
    }
}

/// What the host sees of QEMU over the later part of the silence.
#[derive(Debug, Clone, PartialEq)]
pub struct HostEvidence {
    /// CPU time all QEMU threads got over the interval, ms.
    pub qemu_cpu_ms: f64,
    /// Times QEMU's threads were scheduled in (None: not measured).
    pub qemu_scheduled: Option<u64>,
    /// The interval those were measured over, ms.
    pub window_ms: f64,
    /// Per vCPU: (index, share of the interval it ran, 0–1).
    pub vcpus: Vec<(u32, f64)>,
    /// CPU time the vCPU threads got, summed, ms (None: not measured).
    pub vcpu_run_ms: Option<f64>,
    /// Time the vCPU threads waited runnable for a CPU (busy host, CPU
    /// throttling), summed, ms (None: not measured).
    pub vcpu_wait_ms: Option<f64>,
    /// Of the whole silence, the time QEMU could run its vCPUs, ms: each
    /// interval weighted by the share of the CPU time they wanted that
    /// they got (idle vCPUs count in full, a stopped QEMU not at all).
    /// None: not measured.
    pub runnable_ms: Option<f64>,
    /// `query-status`, if QMP answered.
    pub status: Option<String>,
    /// QMP did not answer in time.
    pub qmp_unresponsive: bool,
}

impl HostEvidence {
    /// Why this is not a guest hang, if it is not.
    ///
    /// QEMU stopped (SIGSTOP), frozen or starved on the host neither
    /// answers QMP nor gets CPU; a hung guest's QEMU answers "running", and
    /// a QEMU hung itself spins. The checkpoint engine's own stops run
    /// QEMU's threads for a moment now and then, so "no CPU" is under 10 ms
    /// per second, not zero.
    /// `timeout` is the heartbeat timeout: a guest is hung only once QEMU
    /// could run it for that long without a heartbeat.
    pub fn not_hung(&self, timeout: Duration) -> Option<String> {
        let starved = self.qemu_scheduled == Some(0)
            || (self.qmp_unresponsive
                && self.window_ms > 0.0
                && self.qemu_cpu_ms / self.window_ms * 1000.0 < 10.0);
        if starved {
            return Some(format!(
                "QEMU {} and got {:.1} ms of CPU in {:.0} ms: stopped, frozen or starved on the host, not a hung guest",
                if self.qmp_unresponsive { "did not answer QMP" } else { "was not scheduled in" },
                self.qemu_cpu_ms,
                self.window_ms
            ));
        }
        if let Some(r) = self.runnable_ms {
            // Slow, not hung: stopped for part of the silence, or its vCPUs
            // got only a share of the CPU they wanted (a busy host, CPU
            // throttling). A guest halted with interrupts off wants no
            // CPU, so its silence counts in full.
            let t = timeout.as_secs_f64() * 1e3;
            if r < t {
                return Some(format!(
                    "QEMU could run the guest's vCPUs for only {r:.0} ms of the silence (needs {t:.0} ms without a heartbeat; vCPUs ran {:.0} ms and waited {:.0} ms for a CPU): the guest is slow, stopped or throttled on the host, not hung",
                    self.vcpu_run_ms.unwrap_or(f64::NAN),
                    self.vcpu_wait_ms.unwrap_or(f64::NAN),
                ));
            }
        }
        match self.status.as_deref() {
            Some("running") | None => None,
            Some(s) => Some(format!("the VM is not running (QMP status `{s}`)")),
        }
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Roll back to the newest checkpoint taken before `before`.
    Rollback {
        /// Why.
        trigger: Trigger,
        /// Newest acceptable checkpoint time.
        before: Instant,
        /// 0 for the first rollback of an incident.
        attempt: u32,
    },
    /// Start the guest again.
    Restart {
        /// What it is about.
        trigger: Option<Trigger>,
        /// Why not a rollback.
        why: String,
    },
    /// The guest link is silent but the guest is not hung (reported once
    /// per silence).
    NotHung {
        /// Why not.
        why: String,
        /// How long it has been silent.
        silent: Duration,
    },
    /// The incident is over: the guest ran `recurrence_window` after its
    /// last rollback without a new trigger.
    Recovered {
        /// The first trigger.
        trigger: Trigger,
        /// Rollbacks it took.
        rollbacks: u32,
        /// From the first trigger to the guest's first heartbeat after the
        /// last rollback (None without heartbeats).
        detect_to_serving: Option<Duration>,
    },
}

#[derive(Debug, Clone)]
struct Incident {
    trigger: Trigger,
    first_seen: Instant,
    onset: Instant,
    attempts: u32,
    /// When the last rollback was asked for: the engine stamps the
    /// checkpoint it restored, and every newer one, after this, so the
    /// next attempt asks for one from before it.
    requested: Option<Instant>,
    /// End of the last rollback (the guest resumed).
    resumed: Option<Instant>,
    /// First heartbeat after that.
    serving: Option<Instant>,
}

impl Incident {
    /// The rollback target of `attempt`: a step further back each time,
    /// and older than the checkpoint the last attempt restored (that one
    /// did not clear the fault).
    fn target(&self, attempt: u32) -> Instant {
        let back = STEP * ((1u32 << attempt.min(16)) - 1);
        let before = self.onset.checked_sub(back).unwrap_or(self.onset);
        self.requested.map_or(before, |r| before.min(r))
    }
}

#[derive(Debug, Clone)]
struct PendingDiagnosis {
    class: Class,
    message: String,
    onset: Instant,
    deadline: Instant,
}

/// The decision state of one VM run.
#[derive(Debug)]
pub struct Policy {
    cfg: PolicyConfig,
    last_beat: Option<Instant>,
    /// This silence was found not to be a hang and reported.
    silence_reported: bool,
    /// When to look at a dismissed silence again.
    recheck_at: Option<Instant>,
    /// Nothing more is done until the guest is heard from ([`Policy::hold`]).
    held: bool,
    panicked: Option<Instant>,
    pending: Vec<PendingDiagnosis>,
    incident: Option<Incident>,
    /// An action was handed out; no other until [`Policy::rolled_back`] or
    /// [`Policy::rollback_failed`].
    acting: bool,
    last_rollback_end: Option<Instant>,
    rollbacks: VecDeque<Instant>,
    /// A silence found not to be a hang, to report once.
    pending_not_hung: Option<(String, Duration)>,
    /// The current run of guest alerts: (onset of the first, time of the last).
    alerts: Option<(Instant, Instant)>,
}

impl Policy {
    /// A run that has seen nothing yet.
    pub fn new(cfg: PolicyConfig) -> Policy {
        Policy {
            cfg,
            last_beat: None,
            silence_reported: false,
            recheck_at: None,
            held: false,
            panicked: None,
            pending: Vec::new(),
            incident: None,
            acting: false,
            last_rollback_end: None,
            rollbacks: VecDeque::new(),
            pending_not_hung: None,
            alerts: None,
        }
    }

    /// A heartbeat arrived.
    pub fn heartbeat(&mut self, now: Instant) {
        self.last_beat = Some(now);
        self.silence_reported = false;
        self.recheck_at = None;
        self.held = false;
        if let Some(inc) = &mut self.incident {
            if inc.resumed.is_some() && inc.serving.is_none() {
                inc.serving = Some(now);
            }
        }
    }

    /// When the last heartbeat arrived.
    pub fn last_heartbeat(&self) -> Option<Instant> {
        self.last_beat
    }

    /// The guest panicked.
    pub fn panic(&mut self, now: Instant) {
        self.panicked.get_or_insert(now);
    }

    /// The guest diagnosed a fault of `class` just now; `onset_back` is how
    /// long before `now` it began (from its evidence).
    pub fn guest_diagnosis(
        &mut self,
        now: Instant,
        class: Class,
        onset_back: Duration,
        message: &str,
    ) -> Option<NotActed> {
        self.guest_diagnosis_at(now, now, class, onset_back, message)
    }

    /// The guest diagnosed a fault of `class` at `made` (its clock mapped
    /// onto the host's, at most `now`); `onset_back` is how long before
    /// `made` it began. `Some` when it is recorded but not acted on.
    pub fn guest_diagnosis_at(
        &mut self,
        now: Instant,
        made: Instant,
        class: Class,
        onset_back: Duration,
        message: &str,
    ) -> Option<NotActed> {
        if !self.cfg.rollback_on.contains(&class) {
            return None;
        }
        let made = made.min(now);
        let mut onset = made.checked_sub(onset_back).unwrap_or(made);
        if let Some(end) = self.last_rollback_end {
            let after = now.saturating_duration_since(end);
            if onset < end + ARTEFACT_SLACK && after <= self.cfg.settle {
                let covers = end.saturating_duration_since(onset);
                return Some(NotActed {
                    why: format!(
                        "arrived {} ms after a rollback and its evidence began {} ms before the rollback ended: the guest saw the rolled-back time as a stall (settle window {} ms)",
                        after.as_millis(),
                        covers.as_millis(),
                        self.cfg.settle.as_millis()
                    ),
                    after_rollback: after,
                    covers,
                });
            }
        }
        if let Some((first, last)) = self.alerts {
            if first < onset && onset <= last + ALERT_CHAIN {
                onset = first.max(onset.checked_sub(ALERT_LOOKBACK).unwrap_or(first));
            }
        }
        if self.pending.iter().any(|p| p.class == class) {
            return None;
        }
        self.pending.push(PendingDiagnosis {
            class,
            message: message.to_string(),
            onset,
            deadline: now + self.cfg.guest_grace,
        });
        None
    }

    /// The guest raised an alert at `made` (host clock) whose condition
    /// held for `held` before. Alerts about the time before the last
    /// rollback ended are about the undone state and are ignored.
    pub fn guest_alert(&mut self, now: Instant, made: Instant, held: Duration) {
        let made = made.min(now);
        let onset = made.checked_sub(held).unwrap_or(made);
        if self.last_rollback_end.is_some_and(|end| onset < end) {
            return;
        }
        self.alerts = match self.alerts {
            Some((first, last)) if made <= last + ALERT_CHAIN && onset + ALERT_CHAIN >= first => {
                Some((first.min(onset), last.max(made)))
            }
            _ => Some((onset, made)),
        };
    }

    /// The guest reported a fault of `class` recovered by its own ladder.
    pub fn guest_recovered(&mut self, class: Class) {
        self.pending.retain(|p| p.class != class);
    }

    /// The rollback handed out is done; the guest runs again from `now`.
    /// `undone` is the time it took back (the restored checkpoint's age
    /// when it was restored, plus the restore): the engine moved its
    /// kept checkpoints forward by that much, and the incident's onset
    /// moves with them.
    pub fn rolled_back(&mut self, now: Instant, undone: Duration) {
        self.acting = false;
        self.last_rollback_end = Some(now);
        self.rollbacks.push_back(now);
        // The silence, the panic and the diagnoses were about the state
        // that was undone; the heartbeat clock starts again.
        if self.last_beat.is_some() {
            self.last_beat = Some(now);
        }
        self.silence_reported = false;
        self.recheck_at = None;
        self.panicked = None;
        self.pending.clear();
        self.alerts = None;
        if let Some(inc) = &mut self.incident {
            inc.onset += undone;
            inc.resumed = Some(now);
            inc.serving = None;
        }
    }

    /// The rollback handed out could not be done: restart, if allowed.
    pub fn rollback_failed(&mut self, why: &str) -> Decision {
        self.acting = false;
        Decision::Restart {
            trigger: self.incident.take().map(|i| i.trigger),
            why: format!("rollback impossible: {why}"),
        }
    }

    /// Nothing more can be done about the current fault (a restart was
    /// decided but is not allowed): wait for the guest to be heard from
    /// again instead of deciding the same thing at every tick.
    pub fn hold(&mut self) {
        self.acting = false;
        self.incident = None;
        self.panicked = None;
        self.pending.clear();
        self.held = true;
    }

    /// Decides what to do now. `evidence` is called only when the guest
    /// link is silent, to re-check on the host just before acting.
    pub fn tick(
        &mut self,
        now: Instant,
        evidence: impl FnOnce(Duration) -> HostEvidence,
    ) -> Option<Decision> {
        if self.acting {
            return None;
        }
        let trigger = self.next_trigger(now, evidence);
        let Some((trigger, onset)) = trigger else {
            return self.maybe_recovered(now);
        };
        // After a rollback, until the incident is over: a starved guest's
        // silence may take longer than the window to be judged a hang, and
        // a guest rolled back into its hang may send one last heartbeat.
        let recurring = self
            .incident
            .as_ref()
            .is_some_and(|i| i.resumed.is_some() && !self.is_over(i, now));
        if !recurring {
            self.incident = Some(Incident {
                trigger: trigger.clone(),
                first_seen: now,
                onset,
                attempts: 0,
                requested: None,
                resumed: None,
                serving: None,
            });
        }
        let inc = self.incident.as_mut().expect("set above");
        if recurring {
            inc.attempts += 1;
        }
        if !self.cfg.checkpoints {
            return Some(Decision::Restart {
                trigger: Some(self.incident.take().expect("set").trigger),
                why: "checkpoints are off".into(),
            });
        }
        while self
            .rollbacks
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.cfg.window)
        {
            self.rollbacks.pop_front();
        }
        if self.cfg.max_rollbacks > 0 && self.rollbacks.len() as u32 >= self.cfg.max_rollbacks {
            return Some(Decision::Restart {
                trigger: Some(self.incident.take().expect("set").trigger),
                why: format!(
                    "{} rollbacks within {:?} did not keep the guest healthy",
                    self.rollbacks.len(),
                    self.cfg.window
                ),
            });
        }
        let attempt = inc.attempts;
        let before = inc.target(attempt);
        inc.requested = Some(now);
        self.acting = true;
        Some(Decision::Rollback {
            trigger,
            before,
            attempt,
        })
    }

    fn next_trigger(
        &mut self,
        now: Instant,
        evidence: impl FnOnce(Duration) -> HostEvidence,
    ) -> Option<(Trigger, Instant)> {
        if let Some(at) = self.panicked.take() {
            return Some((Trigger::Panic, at.checked_sub(PANIC_MARGIN).unwrap_or(at)));
        }
        if let Some(i) = self.pending.iter().position(|p| now >= p.deadline) {
            let p = self.pending.remove(i);
            let onset = p.onset.checked_sub(GUEST_MARGIN).unwrap_or(p.onset);
            return Some((
                Trigger::Guest {
                    class: p.class,
                    message: p.message,
                },
                onset,
            ));
        }
        let (Some(timeout), Some(last)) = (self.cfg.heartbeat_timeout, self.last_beat) else {
            return None;
        };
        let silent = now.saturating_duration_since(last);
        if silent < timeout || self.held || self.recheck_at.is_some_and(|t| now < t) {
            return None;
        }
        // The guest may have alerted before it went silent: the fault began
        // at the first alert of that run, not at the last heartbeat.
        let onset = match self.alerts {
            Some((first, alerted)) if first < last && last <= alerted + ALERT_CHAIN => {
                first.max(last.checked_sub(ALERT_LOOKBACK).unwrap_or(first))
            }
            _ => last.checked_sub(HANG_MARGIN).unwrap_or(last),
        };
        // What the rollback would ask for: past `history` minus a margin,
        // the checkpoint it needs is about to age out, and a starved guest
        // whose silence has not yet reached the timeout in runnable time
        // is acted on with less.
        let target = match &self.incident {
            Some(i) if i.resumed.is_some() && !self.is_over(i, now) => i.target(i.attempts + 1),
            _ => onset,
        };
        let last_chance = self
            .cfg
            .history
            .is_some_and(|h| now.saturating_duration_since(target) + LAST_CHANCE >= h);
        let need = if last_chance {
            timeout.mul_f64(LAST_CHANCE_SHARE)
        } else {
            timeout
        };
        let ev = evidence(silent);
        if let Some(why) = ev.not_hung(need) {
            // Reported once per silence, looked at again: a guest that
            // hangs once QEMU runs again is still caught.
            self.recheck_at = Some(now + RECHECK);
            if !self.silence_reported {
                self.silence_reported = true;
                self.pending_not_hung = Some((why, silent));
            }
            return None;
        }
        let last_chance = last_chance && ev.not_hung(timeout).is_some();
        Some((
            Trigger::Hang {
                silent,
                evidence: ev,
                last_chance,
            },
            onset,
        ))
    }

    /// The incident is over: the guest ran `recurrence_window` since its
    /// last rollback and, with heartbeats on, is being heard from (a
    /// heartbeat since the rollback, and none missed now).
    fn is_over(&self, inc: &Incident, now: Instant) -> bool {
        let Some(resumed) = inc.resumed else {
            return false;
        };
        if now.saturating_duration_since(resumed) <= self.cfg.recurrence_window {
            return false;
        }
        match (self.cfg.heartbeat_timeout, self.last_beat) {
            (Some(timeout), Some(last)) => {
                inc.serving.is_some() && now.saturating_duration_since(last) < timeout
            }
            _ => true,
        }
    }

    fn maybe_recovered(&mut self, now: Instant) -> Option<Decision> {
        if let Some((why, silent)) = self.pending_not_hung.take() {
            return Some(Decision::NotHung { why, silent });
        }
        if !self.is_over(self.incident.as_ref()?, now) {
            return None;
        }
        let inc = self.incident.take()?;
        Some(Decision::Recovered {
            detect_to_serving: inc
                .serving
                .map(|s| s.saturating_duration_since(inc.first_seen)),
            rollbacks: inc.attempts + 1,
            trigger: inc.trigger,
        })
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
