//! What ties a target to its symptom, and the checks made just before an
//! action: the evidence an incident carries (which symptom, which
//! measurement, when), the live re-check of the symptom, and the reasons a
//! step is refused.

use std::time::{Instant, SystemTime};

use serde::Serialize;

/// The evidence a diagnosis gathered: copied into every recovery event.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// The symptom, by its stable name (`rt_monopoly`, `cgroup_pids_at_limit`, …).
    pub symptom: &'static str,
    /// What was measured, in words with the numbers.
    pub measurement: String,
    /// When it was measured (wall clock).
    pub measured_at: SystemTime,
    /// When it was measured (monotonic: the evidence's age).
    pub measured_instant: Instant,
    /// Why the diagnosis names nobody to act on, when it does not.
    pub no_target: Option<String>,
    /// Why restarting the machine would not fix this fault, when the
    /// diagnosis knows (a FUSE or network filesystem server to blame, a
    /// process that accounts for the shortage): the `reboot` step refuses.
    pub restart_veto: Option<String>,
}

impl Evidence {
    /// Evidence measured now.
    pub fn now(symptom: &'static str, measurement: impl Into<String>) -> Evidence {
        Evidence {
            symptom,
            measurement: measurement.into(),
            measured_at: SystemTime::now(),
            measured_instant: Instant::now(),
            no_target: None,
            restart_veto: None,
        }
    }

    /// As it appears in a recovery event's `details.evidence`.
    pub fn details(&self) -> EvidenceDetails {
        EvidenceDetails {
            symptom: self.symptom,
            measurement: self.measurement.clone(),
            measured_unix_ms: selfheal_event::unix_ms(self.measured_at),
            age_ms: self.measured_instant.elapsed().as_millis() as u64,
        }
    }
}

/// `details.evidence` of a recovery event: the evidence, with its age
/// when the event was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceDetails {
    /// The symptom's stable name.
    pub symptom: &'static str,
    /// What was measured, in words with the numbers.
    pub measurement: String,
    /// When it was measured, ms since the epoch.
    pub measured_unix_ms: i64,
    /// How old the measurement was when the event was written, ms.
    pub age_ms: u64,
}

/// The symptom measured again, just before an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recheck {
    /// Still there: what was measured.
    Present(String),
    /// Gone: what was measured.
    Cleared(String),
    /// This symptom cannot be measured again.
    Unverifiable,
}

/// The live symptom an incident is about: polled after each step, and
/// measured again before each action.
pub trait SymptomProbe {
    /// True when the symptom is gone (polled while verifying a step).
    fn cleared(&mut self) -> bool;
    /// Measures the symptom now, before an action. May take a short
    /// measurement window (a thread's CPU share over ~50 ms).
    fn recheck(&mut self) -> Recheck;
}

/// A closure telling whether the symptom cleared is a probe whose re-check
/// reports "still there" while the closure says so (tests, simple callers).
impl<F: FnMut() -> bool> SymptomProbe for F {
    fn cleared(&mut self) -> bool {
        self()
    }

    fn recheck(&mut self) -> Recheck {
        if self() {
            Recheck::Cleared("the symptom check passes".into())
        } else {
            Recheck::Present("the symptom check still fails".into())
        }
    }
}

/// Why a step was refused. The stable name is `details.refusal` and the
/// `reason` label of `selfheal_recovery_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// pid 1, a kernel thread, selfheal or an ancestor, `recovery.protected`,
    /// `protected_units`, or outside `allowed_cgroups`.
    Protected,
    /// `reboot` without `recovery.allow_reboot`.
    RebootNotAllowed,
    /// The process now runs another program than the one diagnosed.
    IdentityChanged,
    /// The target is no longer among the processes the diagnosis blames.
    NotBlamed,
    /// Stale evidence: the symptom is no longer present.
    SymptomGone,
    /// Weak evidence: the symptom cannot be measured again before acting.
    Unverifiable,
    /// The cgroup holds processes the diagnosis does not blame.
    InnocentMembers,
    /// The cgroup is a hierarchy root, a slice or a session scope.
    CgroupScope,
    /// Restarting the machine would not fix this fault (a process or a
    /// remote server is to blame).
    RestartNotWarranted,
    /// `recovery.restart.max_restarts` restarts within its window already:
    /// a restart loop stops itself.
    RestartLimit,
}

impl Refusal {
    /// Every reason.
    pub const ALL: &'static [Refusal] = &[
        Refusal::Protected,
        Refusal::RebootNotAllowed,
        Refusal::IdentityChanged,
        Refusal::NotBlamed,
        Refusal::SymptomGone,
        Refusal::Unverifiable,
        Refusal::InnocentMembers,
        Refusal::CgroupScope,
        Refusal::RestartNotWarranted,
        Refusal::RestartLimit,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Protected => "protected",
            Refusal::RebootNotAllowed => "reboot_not_allowed",
            Refusal::IdentityChanged => "identity_changed",
            Refusal::NotBlamed => "not_blamed",
            Refusal::SymptomGone => "symptom_gone",
            Refusal::Unverifiable => "unverifiable",
            Refusal::InnocentMembers => "innocent_members",
            Refusal::CgroupScope => "cgroup_scope",
            Refusal::RestartNotWarranted => "restart_not_warranted",
            Refusal::RestartLimit => "restart_limit",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
