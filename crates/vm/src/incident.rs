//! The `details` of a VM incident event (`vm_hang`, `vm_crash`) as types:
//! what the run writes when it rolls back or restarts a guest, or leaves
//! it as is, and what the supervisor writes when QEMU itself fails; and
//! [`StoredVmIncident`] to read one back from the store, `/api/events` or
//! `selfheal events --json`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use selfheal_checkpoint::ExitInfo;
use selfheal_event::{Class, Event, EventKind};

use crate::policy::{HostEvidence, Trigger};

/// What an incident was for: `details.trigger`, and the `trigger` label
/// of the VM metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentTrigger {
    /// The guest kernel panicked (pvpanic).
    Panic,
    /// The guest link went silent while QEMU ran.
    Hang,
    /// The guest diagnosed a fault it did not recover.
    GuestDiagnosis,
}

impl IncidentTrigger {
    /// What `trigger` is.
    pub fn of(t: &Trigger) -> IncidentTrigger {
        match t {
            Trigger::Panic => IncidentTrigger::Panic,
            Trigger::Hang { .. } => IncidentTrigger::Hang,
            Trigger::Guest { .. } => IncidentTrigger::GuestDiagnosis,
        }
    }

    /// The stable name ([`Trigger::name`]).
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentTrigger::Panic => "panic",
            IncidentTrigger::Hang => "hang",
            IncidentTrigger::GuestDiagnosis => "guest_diagnosis",
        }
    }
}

/// `details` of a VM incident acted on (rolled back or restarted). The
/// trigger's own keys are present only for its kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentDetails {
    /// What it was for.
    pub trigger: IncidentTrigger,
    /// Rollbacks already tried for this incident.
    pub attempt: u32,
    /// How far back the rollback goes, ms (0 for a restart).
    pub rollback_before_ms: u64,
    /// A hang: how long the guest link was silent, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_ms: Option<u64>,
    /// A hang: what the host measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<SilenceEvidence>,
    /// A guest diagnosis: its class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<Class>,
    /// A guest diagnosis: its message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_message: Option<String>,
    /// A hang acted on short of the heartbeat timeout, before the last
    /// checkpoint from before the silence ages out (present when true).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last_chance: bool,
}

impl IncidentDetails {
    /// The details of acting on `t`: rollback `attempt`, going back
    /// `back_ms` (0 for a restart).
    pub fn new(t: &Trigger, attempt: u32, back_ms: u64) -> IncidentDetails {
        let mut d = IncidentDetails {
            trigger: IncidentTrigger::of(t),
            attempt,
            rollback_before_ms: back_ms,
            silent_ms: None,
            evidence: None,
            class: None,
            guest_message: None,
            last_chance: false,
        };
        match t {
            Trigger::Hang {
                silent,
                evidence,
                last_chance,
            } => {
                d.silent_ms = Some(silent.as_millis() as u64);
                d.last_chance = *last_chance;
                d.evidence = Some(SilenceEvidence::from(evidence));
            }
            Trigger::Guest { class, message } => {
                d.class = Some(*class);
                d.guest_message = Some(message.clone());
            }
            Trigger::Panic => {}
        }
        d
    }
}

/// What the host measured of a silent guest (`details.evidence`). A
/// value it could not measure is `null` (JSON has no NaN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceEvidence {
    /// CPU time all QEMU threads got over the window, ms.
    pub qemu_cpu_ms: Option<f64>,
    /// Times QEMU's threads were scheduled in the window.
    pub qemu_scheduled: Option<u64>,
    /// The window, ms.
    pub window_ms: f64,
    /// Time the vCPU threads ran, ms.
    pub vcpu_run_ms: Option<f64>,
    /// Time the vCPU threads waited to run, ms.
    pub vcpu_wait_ms: Option<f64>,
    /// How long QEMU could have run its vCPUs, ms.
    pub runnable_ms: Option<f64>,
    /// Each vCPU thread's share of the window.
    pub vcpu_busy: Vec<VcpuBusy>,
    /// QMP `query-status`, when it answered.
    pub qmp_status: Option<String>,
    /// QMP did not answer.
    pub qmp_unresponsive: bool,
}

/// A measurement, or `None` when there is no number to store.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl From<&HostEvidence> for SilenceEvidence {
    fn from(e: &HostEvidence) -> SilenceEvidence {
        SilenceEvidence {
            qemu_cpu_ms: finite(e.qemu_cpu_ms),
            qemu_scheduled: e.qemu_scheduled,
            window_ms: e.window_ms,
            vcpu_run_ms: e.vcpu_run_ms.and_then(finite),
            vcpu_wait_ms: e.vcpu_wait_ms.and_then(finite),
            runnable_ms: e.runnable_ms.and_then(finite),
            vcpu_busy: e
                .vcpus
                .iter()
                .map(|&(cpu, share)| VcpuBusy { cpu, share })
                .collect(),
            qmp_status: e.status.clone(),
            qmp_unresponsive: e.qmp_unresponsive,
        }
    }
}

/// One vCPU thread's share of the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpuBusy {
    /// The vCPU.
    pub cpu: u32,
    /// Its share of the window, 0 to 1.
    pub share: f64,
}

/// `details` of a hang left as is (`restart = never`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeftDetails {
    /// What it was for; `null` when the policy named nothing.
    pub trigger: Option<IncidentTrigger>,
    /// Why it was not restarted.
    pub why: String,
}

/// `details` of a QEMU that exited (`vm_crash` when it failed,
/// `vm_exit` otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitedDetails {
    /// How it ended.
    pub exit: QemuExit,
    /// QMP's SHUTDOWN reason, if one came.
    pub shutdown_reason: Option<String>,
    /// Whether it is started again.
    pub restart: bool,
}

/// How QEMU ended (the checkpoint engine's `ExitInfo`, as stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuExit {
    /// Exit code if it exited.
    pub code: Option<i32>,
    /// Signal if it was killed.
    pub signal: Option<i32>,
    /// A core dump was written.
    pub core_dumped: bool,
}

impl From<&ExitInfo> for QemuExit {
    fn from(e: &ExitInfo) -> QemuExit {
        QemuExit {
            code: e.code,
            signal: e.signal,
            core_dumped: e.core_dumped,
        }
    }
}

/// A VM incident event read back.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredVmIncident {
    /// Rolled back or restarted.
    Acted(IncidentDetails),
    /// Left as is (`restart = never`).
    Left(LeftDetails),
    /// QEMU itself failed (`vm_crash`).
    Exited(ExitedDetails),
}

/// A stored event that does not read back as a VM incident.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Only `vm_hang` and `vm_crash` events carry one.
    #[error("event {id:?} is a `{kind}` event; only `vm_hang` and `vm_crash` events carry a VM incident")]
    NotAnIncident {
        /// The event's id in the store.
        id: Option<i64>,
        /// Its kind.
        kind: EventKind,
    },
    /// `details` is not a shape the run writes.
    #[error("the details of a VM incident event are not an incident: {0}")]
    Details(#[source] serde_json::Error),
}

impl StoredVmIncident {
    /// Reads the incident a `vm_hang` or `vm_crash` event carries.
    pub fn from_event(event: &Event) -> Result<StoredVmIncident, ReadError> {
        if !matches!(event.kind, EventKind::VmHang | EventKind::VmCrash) {
            return Err(ReadError::NotAnIncident {
                id: event.id,
                kind: event.kind,
            });
        }
        StoredVmIncident::from_details(&event.details)
    }

    /// Reads a VM incident event's `details` document: one left as is
    /// says `why`, a QEMU that failed says its `exit`.
    pub fn from_details(details: &Value) -> Result<StoredVmIncident, ReadError> {
        if details.get("why").is_some() {
            LeftDetails::deserialize(details).map(StoredVmIncident::Left)
        } else if details.get("exit").is_some() {
            ExitedDetails::deserialize(details).map(StoredVmIncident::Exited)
        } else {
            IncidentDetails::deserialize(details).map(StoredVmIncident::Acted)
        }
        .map_err(ReadError::Details)
    }
}

#[cfg(test)]
mod tests;
