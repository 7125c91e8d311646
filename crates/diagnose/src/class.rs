//! What the heavy detector concludes: a [`Class`] (shared with config and
//! recovery through `selfheal-event`), a culprit and the evidence.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::classify::evidence::DiagnosisEvidence;
use selfheal_cgroup::Controller;
use selfheal_config::Level;
use selfheal_detect::watchdog::Detector;
use selfheal_event::{Class, Culprit, Event, EventKind, Severity, Source, Target};
use selfheal_kmsg::VerdictKind;

/// What woke the heavy detector.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// A light-detector rule fired.
    Alert {
        /// The rule.
        rule: String,
        /// The rule's level.
        level: Level,
        /// The CPU, for per-CPU rules.
        cpu: Option<u32>,
    },
    /// The stall detector found a CPU whose canary stopped running.
    Stall {
        /// The CPU.
        cpu: u32,
        /// How long its canary had not run when reported.
        stalled_for: Duration,
    },
    /// The watchdog chain saw a detector's heartbeat go stale.
    Watchdog {
        /// Whose heartbeat.
        component: Detector,
        /// Its age.
        age: Duration,
    },
    /// The kernel reported a verdict.
    Kernel {
        /// Which kernel detector spoke (`soft_lockup`, `hung_task`, …).
        verdict: VerdictKind,
        /// CPU named, if any.
        cpu: Option<u32>,
    },
    /// The sweep found tasks in D state past the bound.
    DState {
        /// Stuck threads.
        tids: Vec<i32>,
    },
    /// The sweep found a cgroup near its memory or pids limit.
    Cgroup {
        /// The cgroup path.
        path: String,
        /// The controller at its limit: memory or pids.
        resource: Controller,
    },
    /// A test or the CLI asked for a diagnosis.
    Manual,
}

/// What kind of [`Trigger`] woke the heavy detector. Its
/// [`TriggerKind::as_str`] name is stable: the evidence's `trigger.kind`
/// and the `trigger` label of `selfheal_heavy_runs_total` carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerKind {
    /// A light-detector rule fired (`alert`).
    Alert,
    /// The stall detector reported a CPU (`stall`).
    Stall,
    /// The watchdog chain saw a heartbeat go stale (`watchdog`).
    Watchdog,
    /// The kernel reported a verdict (`kernel`).
    Kernel,
    /// The periodic sweep found D-state tasks or a cgroup at its limit
    /// (`sweep`).
    Sweep,
    /// A test or the CLI asked (`manual`).
    Manual,
}

impl TriggerKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [TriggerKind] = &[
        TriggerKind::Alert,
        TriggerKind::Stall,
        TriggerKind::Watchdog,
        TriggerKind::Kernel,
        TriggerKind::Sweep,
        TriggerKind::Manual,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Alert => "alert",
            TriggerKind::Stall => "stall",
            TriggerKind::Watchdog => "watchdog",
            TriggerKind::Kernel => "kernel",
            TriggerKind::Sweep => "sweep",
            TriggerKind::Manual => "manual",
        }
    }

    /// Index into [`TriggerKind::ALL`] (for counters).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TriggerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Trigger {
    /// What kind of trigger it is.
    pub fn kind(&self) -> TriggerKind {
        match self {
            Trigger::Alert { .. } => TriggerKind::Alert,
            Trigger::Stall { .. } => TriggerKind::Stall,
            Trigger::Watchdog { .. } => TriggerKind::Watchdog,
            Trigger::Kernel { .. } => TriggerKind::Kernel,
            Trigger::DState { .. } | Trigger::Cgroup { .. } => TriggerKind::Sweep,
            Trigger::Manual => TriggerKind::Manual,
        }
    }

    /// The CPU this trigger points at, if any.
    pub fn cpu(&self) -> Option<u32> {
        match self {
            Trigger::Alert { cpu, .. } | Trigger::Kernel { cpu, .. } => *cpu,
            Trigger::Stall { cpu, .. } => Some(*cpu),
            _ => None,
        }
    }

    /// As JSON evidence.
    pub fn to_json(&self) -> Value {
        selfheal_event::details_value(&self.details())
    }

    /// As evidence: `details.trigger` of diagnosis events.
    pub fn details(&self) -> TriggerDetails {
        match self {
            Trigger::Alert { rule, level, cpu } => TriggerDetails::Alert {
                rule: rule.clone(),
                level: *level,
                cpu: *cpu,
            },
            Trigger::Stall { cpu, stalled_for } => TriggerDetails::Stall {
                cpu: *cpu,
                stalled_ms: stalled_for.as_millis() as u64,
            },
            Trigger::Watchdog { component, age } => TriggerDetails::Watchdog {
                component: *component,
                age_ms: age.as_millis() as u64,
            },
            Trigger::Kernel { verdict, cpu } => TriggerDetails::Kernel {
                verdict: *verdict,
                cpu: *cpu,
            },
            Trigger::DState { tids } => {
                TriggerDetails::Sweep(SweepFinding::DState { tids: tids.clone() })
            }
            Trigger::Cgroup { path, resource } => TriggerDetails::Sweep(SweepFinding::Cgroup {
                controller: *resource,
                cgroup: path.clone(),
            }),
            Trigger::Manual => TriggerDetails::Manual,
        }
    }
}

/// `details.trigger` of a diagnosis event: what woke the heavy detector,
/// tagged by `kind` ([`TriggerKind::as_str`]). Written by
/// [`Trigger::details`], read back by
/// [`StoredDiagnosis`](crate::StoredDiagnosis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerDetails {
    /// A light-detector rule fired.
    Alert {
        /// The rule.
        rule: String,
        /// `light` or `heavy`.
        level: Level,
        /// The CPU, for per-CPU rules; `null` otherwise.
        cpu: Option<u32>,
    },
    /// A CPU's stall canary stopped running.
    Stall {
        /// The CPU.
        cpu: u32,
        /// How long its canary had not run, ms.
        stalled_ms: u64,
    },
    /// A detector's heartbeat went stale.
    Watchdog {
        /// Whose heartbeat.
        component: Detector,
        /// Its age, ms.
        age_ms: u64,
    },
    /// The kernel reported a verdict.
    Kernel {
        /// Which kernel detector spoke.
        verdict: VerdictKind,
        /// The CPU named; `null` when none.
        cpu: Option<u32>,
    },
    /// The periodic sweep found something (`kind: sweep`).
    Sweep(SweepFinding),
    /// A test or the CLI asked.
    Manual,
}

/// What the periodic sweep found, told apart by `finding`: `d_state`, or
/// the controller of a cgroup at its limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "SweepDocument", try_from = "SweepDocument")]
pub enum SweepFinding {
    /// Tasks in D state past the bound (`finding: d_state`).
    DState {
        /// The stuck threads.
        tids: Vec<i32>,
    },
    /// A cgroup at its limit (`finding`: the controller's name, `memory`
    /// or `pids`).
    Cgroup {
        /// The controller at its limit.
        controller: Controller,
        /// The cgroup path.
        cgroup: String,
    },
}

/// [`SweepFinding`] as stored: `finding` names the variant (a controller
/// name is not a serde tag, hence the conversion).
#[derive(Serialize, Deserialize)]
struct SweepDocument {
    finding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tids: Option<Vec<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cgroup: Option<String>,
}

/// A stored sweep finding that is not one [`SweepFinding`] writes.
#[derive(Debug, thiserror::Error)]
enum SweepFindingError {
    /// `finding` is neither `d_state` nor a controller.
    #[error("unknown sweep finding `{0}`; expected d_state or a cgroup controller")]
    Unknown(String),
    /// A field the finding needs is absent.
    #[error("sweep finding `{finding}` lacks `{field}`")]
    Missing {
        /// The finding.
        finding: String,
        /// The absent field.
        field: &'static str,
    },
}

impl From<SweepFinding> for SweepDocument {
    fn from(f: SweepFinding) -> Self {
        match f {
            SweepFinding::DState { tids } => SweepDocument {
                finding: "d_state".into(),
                tids: Some(tids),
                cgroup: None,
            },
            SweepFinding::Cgroup { controller, cgroup } => SweepDocument {
                finding: controller.as_str().into(),
                tids: None,
                cgroup: Some(cgroup),
            },
        }
    }
}

impl TryFrom<SweepDocument> for SweepFinding {
    type Error = SweepFindingError;
    fn try_from(d: SweepDocument) -> Result<Self, Self::Error> {
        let missing = |field| SweepFindingError::Missing {
            finding: d.finding.clone(),
            field,
        };
        if d.finding == "d_state" {
            let tids = d.tids.clone().ok_or_else(|| missing("tids"))?;
            return Ok(SweepFinding::DState { tids });
        }
        let controller = Controller::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == d.finding)
            .ok_or_else(|| SweepFindingError::Unknown(d.finding.clone()))?;
        let cgroup = d.cgroup.clone().ok_or_else(|| missing("cgroup"))?;
        Ok(SweepFinding::Cgroup { controller, cgroup })
    }
}

/// `details` of a diagnosis (or dismissed) event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiagnosisDetails<'a> {
    /// The class.
    pub class: &'static str,
    /// What woke the heavy detector.
    pub trigger: TriggerDetails,
    /// The classifier's evidence.
    pub evidence: &'a DiagnosisEvidence,
    /// From the first sign to the diagnosis, ms, when known (absent
    /// otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection_latency_ms: Option<f64>,
    /// Why there is nobody to act on, when that is a decision (absent
    /// otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_only: Option<&'a str>,
}

use selfheal_recover::{Evidence, Incident};

/// How to tell that the symptom cleared, for recovery's verification.
#[derive(Debug, Clone, PartialEq)]
pub enum Symptom {
    /// A CPU's canary stopped running.
    CpuStalled {
        /// The CPU.
        cpu: u32,
    },
    /// A real-time thread monopolises a CPU; cleared when it is gone, no
    /// longer real-time, or runs less than `percent` of the time.
    RtMonopoly {
        /// The thread.
        tid: i32,
        /// Its process.
        pid: i32,
        /// Its start time.
        starttime: u64,
        /// Share of wall time above which it still monopolises, percent.
        percent: f64,
    },
    /// Threads stuck in D state.
    Stuck {
        /// (pid, tid, start time) of each.
        tasks: Vec<(i32, i32, u64)>,
    },
    /// A cgroup's task count at its limit.
    CgroupTasks {
        /// cgroup path.
        path: String,
        /// Cleared when the count falls below this.
        below: u64,
    },
    /// The number of live processes a fork bomb's target blames (its tree,
    /// or for a program-wide bomb the program's members and process
    /// groups: `selfheal_recover::blamed_set`, the set recovery acts on).
    TreeTasks {
        /// The bomb's oldest member and what it blames.
        target: Target,
        /// Cleared when fewer processes than this remain.
        below: usize,
    },
    /// A cgroup's unreclaimable memory near its limit.
    CgroupMemory {
        /// cgroup path.
        path: String,
        /// Cleared when usage falls below this share of the limit, percent.
        percent: f64,
    },
    /// The machine's available memory low.
    MachineMemory {
        /// Cleared when MemAvailable is at least this share, percent.
        available_percent: f64,
    },
    /// A kernel thread that runs without ever sleeping; cleared when it is
    /// gone or sleeps (a voluntary context switch).
    KthreadSpin {
        /// The thread (a kernel thread is its own process).
        tid: i32,
        /// Its start time.
        starttime: u64,
    },
    /// Nothing to verify (record-only classes).
    Unverifiable,
}

impl Symptom {
    /// The stable name (`details.evidence.symptom` of recovery events).
    pub fn name(&self) -> &'static str {
        match self {
            Symptom::CpuStalled { .. } => "cpu_stalled",
            Symptom::RtMonopoly { .. } => "rt_monopoly",
            Symptom::Stuck { .. } => "stuck_in_d",
            Symptom::CgroupTasks { .. } => "cgroup_pids_at_limit",
            Symptom::TreeTasks { .. } => "process_count",
            Symptom::CgroupMemory { .. } => "cgroup_memory_at_limit",
            Symptom::MachineMemory { .. } => "machine_memory_low",
            Symptom::KthreadSpin { .. } => "kthread_spinning",
            Symptom::Unverifiable => "unverifiable",
        }
    }
}

/// One diagnosis.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnosis {
    /// The class.
    pub class: Class,
    /// Who is to blame: the one description of the culprit.
    pub culprit: Culprit,
    /// The culprit's identity and blamed scope, for recovery; `None` when
    /// there is no user-space culprit to act on.
    pub target: Option<Target>,
    /// One line for the event message.
    pub summary: String,
    /// Evidence (the event's `details.evidence`), one shape per class.
    pub evidence: DiagnosisEvidence,
    /// How recovery checks that it worked.
    pub symptom: Symptom,
    /// Why there is no target although a process is involved, when that
    /// is a decision (recovery records it as the reason it did not act).
    pub no_target: Option<String>,
    /// Why restarting the machine would not fix this (a process accounts
    /// for it, or a server elsewhere is to blame): the `reboot` step refuses.
    pub restart_veto: Option<String>,
    /// What the stuck tasks wait on, when recovery can act on it (an
    /// `abort_fuse` step); `None` for every other class.
    pub blocker: Option<selfheal_recover::Blocker>,
}

impl Diagnosis {
    /// A key that identifies "the same problem" across runs (for debouncing).
    pub fn key(&self) -> String {
        // Stuck tasks with nothing to act on (held, unknown blocker): the
        // same tasks are the same problem.
        if let (None, Symptom::Stuck { tasks }) = (&self.target, &self.symptom) {
            let tids: Vec<String> = tasks.iter().map(|t| t.1.to_string()).collect();
            return format!("{}:stuck:{}", self.class, tids.join(","));
        }
        match &self.target {
            Some(t) => format!("{}:{}:{}", self.class, t.pid, t.starttime),
            None => format!(
                "{}:cpu{:?}:{}",
                self.class,
                self.culprit.cpu,
                self.culprit.cgroup.as_deref().unwrap_or("")
            ),
        }
    }

    /// What recovery works from: the class, the culprit, the target and the
    /// evidence (the summary, as measured at `measured_at`).
    pub fn incident(&self, measured_at: Instant, measured_wall: SystemTime) -> Incident {
        Incident {
            class: self.class,
            culprit: self.culprit.clone(),
            target: self.target.clone(),
            blocker: self.blocker.clone(),
            evidence: Evidence {
                symptom: self.symptom.name(),
                measurement: self.summary.clone(),
                measured_at: measured_wall,
                measured_instant: measured_at,
                no_target: self.no_target.clone(),
                restart_veto: self.restart_veto.clone(),
            },
        }
    }

    /// The store event: kind `diagnosis` (`dismissed` for legitimate load).
    pub fn to_event(&self, trigger: &Trigger, latency: Option<Duration>) -> Event {
        let (kind, severity) = if self.class.is_fault() {
            (EventKind::Diagnosis, Severity::Critical)
        } else {
            (EventKind::Dismissed, Severity::Info)
        };
        let details = DiagnosisDetails {
            class: self.class.as_str(),
            trigger: trigger.details(),
            evidence: &self.evidence,
            detection_latency_ms: latency.map(|l| l.as_secs_f64() * 1000.0),
            record_only: self.no_target.as_deref(),
        };
        let mut e = Event::now(kind, severity, Source::Heavy, self.summary.clone())
            .with_rule(self.class.as_str())
            .with_details_of(&details);
        if !self.culprit.is_empty() {
            e = e.with_culprit(self.culprit.clone());
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::classify::evidence::StallEvidence;

    #[test]
    fn trigger_kinds_name_the_evidence_and_index_the_counters() {
        let every = [
            Trigger::Alert {
                rule: "sys_high".into(),
                level: Level::Heavy,
                cpu: Some(1),
            },
            Trigger::Stall {
                cpu: 0,
                stalled_for: Duration::from_millis(250),
            },
            Trigger::Watchdog {
                component: Detector::Light,
                age: Duration::from_secs(2),
            },
            Trigger::Kernel {
                verdict: VerdictKind::SoftLockup,
                cpu: None,
            },
            Trigger::DState { tids: vec![7] },
            Trigger::Cgroup {
                path: "/a".into(),
                resource: Controller::Pids,
            },
            Trigger::Manual,
        ];
        for t in &every {
            assert_eq!(t.to_json()["kind"], t.kind().as_str(), "{t:?}");
        }
        assert_eq!(every[0].to_json()["level"], "heavy");
        assert_eq!(every[2].to_json()["component"], "light");
        assert_eq!(every[3].to_json()["verdict"], "soft_lockup");
        assert_eq!(every[5].to_json()["finding"], "pids");
        let names: Vec<&str> = TriggerKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["alert", "stall", "watchdog", "kernel", "sweep", "manual"]
        );
        for (i, k) in TriggerKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(k.to_string(), k.as_str());
        }
    }

    /// Diagnosis events carry exactly the documents the old `json!`
    /// literals built: each trigger's keys (nulls kept), and
    /// `detection_latency_ms` and `record_only` only when known.
    #[test]
    fn diagnosis_details_match_the_documented_json() {
        let cases = [
            (
                Trigger::Alert {
                    rule: "sys_high".into(),
                    level: Level::Heavy,
                    cpu: None,
                },
                json!({"kind": "alert", "rule": "sys_high", "level": "heavy", "cpu": null}),
            ),
            (
                Trigger::Stall {
                    cpu: 3,
                    stalled_for: Duration::from_millis(250),
                },
                json!({"kind": "stall", "cpu": 3, "stalled_ms": 250}),
            ),
            (
                Trigger::Watchdog {
                    component: Detector::Light,
                    age: Duration::from_secs(2),
                },
                json!({"kind": "watchdog", "component": "light", "age_ms": 2000}),
            ),
            (
                Trigger::Kernel {
                    verdict: VerdictKind::HungTask,
                    cpu: Some(1),
                },
                json!({"kind": "kernel", "verdict": "hung_task", "cpu": 1}),
            ),
            (
                Trigger::DState { tids: vec![7, 8] },
                json!({"kind": "sweep", "finding": "d_state", "tids": [7, 8]}),
            ),
            (
                Trigger::Cgroup {
                    path: "/a".into(),
                    resource: Controller::Memory,
                },
                json!({"kind": "sweep", "finding": "memory", "cgroup": "/a"}),
            ),
            (Trigger::Manual, json!({"kind": "manual"})),
        ];
        for (t, want) in &cases {
            assert_eq!(&t.to_json(), want, "{t:?}");
        }

        let d = Diagnosis {
            class: Class::RtHog,
            culprit: Culprit {
                pid: Some(100),
                ..Culprit::default()
            },
            target: None,
            summary: "rt_hog: spin".into(),
            evidence: DiagnosisEvidence::KernelStall(StallEvidence {
                cpu: 1,
                cpu_stalled_ms: None,
                top_share_percent: 99.0,
                culprit: None,
                kernel_stack: None,
                kernel_reports: vec![],
                interval_ms: 100.0,
            }),
            symptom: Symptom::Unverifiable,
            no_target: Some("held by the operator".into()),
            restart_veto: None,
            blocker: None,
        };
        let e = d.to_event(&cases[1].0, Some(Duration::from_millis(1500)));
        assert_eq!(e.kind, EventKind::Diagnosis);
        assert_eq!(
            e.details,
            json!({
                "class": "rt_hog",
                "trigger": {"kind": "stall", "cpu": 3, "stalled_ms": 250},
                "evidence": {"cpu": 1, "cpu_stalled_ms": null, "top_share_percent": 99.0,
                             "culprit": null, "kernel_stack": null, "kernel_reports": [],
                             "interval_ms": 100.0},
                "detection_latency_ms": 1500.0,
                "record_only": "held by the operator",
            })
        );
        let plain = Diagnosis {
            no_target: None,
            ..d
        };
        assert_eq!(
            plain.to_event(&Trigger::Manual, None).details,
            json!({
                "class": "rt_hog",
                "trigger": {"kind": "manual"},
                "evidence": {"cpu": 1, "cpu_stalled_ms": null, "top_share_percent": 99.0,
                             "culprit": null, "kernel_stack": null, "kernel_reports": [],
                             "interval_ms": 100.0},
            })
        );
    }
}
