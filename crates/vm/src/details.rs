//! The `details` of every event `selfheal vm` records about a VM, as
//! types that write and read the same documents, and [`StoredVmEvent`]
//! to read any of them back from the store, `/api/events` or `selfheal
//! events --json`. Incidents (`vm_hang`, `vm_crash`) are in
//! [`crate::incident`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use selfheal_event::{Class, Event, EventKind, Source};

use crate::incident::{ExitedDetails, QemuExit, StoredVmIncident};

/// `details` of the `vm_start` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartDetails {
    /// QEMU's pid.
    pub pid: i32,
    /// Its command line.
    pub command: Vec<String>,
    /// How it is checkpointed; `null` when it is not.
    pub checkpoints: Option<CheckpointPlan>,
}

/// `details.checkpoints` of the `vm_start` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPlan {
    /// Interval between checkpoints, ms.
    pub interval_ms: u64,
    /// Checkpoints kept.
    pub keep: usize,
    /// Spacing of the older checkpoints kept, ms.
    pub older_every_ms: u64,
    /// How far back older checkpoints are kept, ms.
    pub older_span_ms: u64,
}

/// `details` of the warning that no guest heartbeat came (`vm_start`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoLinkDetails {
    /// The host-link port the guest should use.
    pub port: String,
}

/// `details` of a silent guest not acted on (`dismissed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotHungDetails {
    /// How long the guest link was silent, ms.
    pub silent_ms: u64,
    /// Why it is not a hang.
    pub why: String,
}

/// `details` of a guest diagnosis the host does not act on (`dismissed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotActedDetails {
    /// The guest's class.
    pub class: Class,
    /// Why the host does not act.
    pub why: String,
    /// How long after the last rollback it came, ms.
    pub after_rollback_ms: u64,
    /// How far back its onset reaches, ms.
    pub covers_ms: u64,
    /// `settle`, ms.
    pub settle_ms: u64,
    /// The guest's message.
    pub guest_message: String,
}

/// `details` of a guest stall that was QEMU stopped for checkpoints
/// (`dismissed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStallDetails {
    /// The guest's class.
    pub class: Class,
    /// The stall the guest reported (`evidence.cpu_stalled_ms`).
    pub stall_ms: u64,
    /// QEMU stopped for checkpoints within it, ms.
    pub stopped_ms: u64,
    /// The guest's message.
    pub guest_message: String,
}

/// `details` of a VM that runs on after its rollbacks (`vm_rollback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredDetails {
    /// Always `recovered`.
    pub outcome: Recovered,
    /// What the rollbacks were for (`hang`, `panic`, `guest_diagnosis`).
    pub trigger: String,
    /// Rollbacks it took.
    pub rollbacks: u32,
    /// From detection to the guest serving again, ms, when known.
    pub detect_to_serving_ms: Option<u64>,
}

/// The `"recovered"` of [`RecoveredDetails::outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovered {
    /// Stored as `"recovered"`.
    Recovered,
}

/// `details` of a rollback in place (`vm_rollback`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolledBackDetails<R = Value> {
    /// What it was for (`hang`, `panic`, … or `qemu <failure>`).
    pub trigger: String,
    /// Which attempt for this incident, when the supervisor asked for it.
    pub attempt: Option<u32>,
    /// How long QEMU was stopped, ms.
    pub rollback_ms: f64,
    /// Whether the notice was sent; `null` when the guest does not listen.
    pub guest_told: Option<bool>,
    /// The checkpoint engine's report (its type only serialises, so it
    /// reads back as the document).
    pub report: R,
}

/// Who restarted or reset the guest (`details.by` of `vm_restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartedBy {
    /// The guest itself.
    Guest,
    /// selfheal, starting QEMU again.
    Selfheal,
}

/// `details` of a reset the guest asked for (`vm_restart`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetDetails {
    /// QMP's reason.
    pub reason: String,
    /// Always `guest`.
    pub by: RestartedBy,
}

/// `details` of a guest that rebooted by itself (`vm_restart`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootDetails {
    /// The new boot id.
    pub boot_id: String,
    /// Always `guest`.
    pub by: RestartedBy,
}

/// `details` of starting QEMU again (`vm_restart`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartingDetails {
    /// Why.
    pub why: String,
    /// Always `selfheal`.
    pub by: RestartedBy,
}

/// `details` of a QEMU that could not start (`vm_exit`). `exit` is
/// present only when QEMU ran and exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartFailedDetails {
    /// How it ended, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<QemuExit>,
    /// What went wrong.
    pub error: String,
}

/// `details` of a QEMU told to quit (`vm_exit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedDetails {
    /// Always true.
    pub stopped: bool,
}

/// `details` of giving up after too many restarts (`vm_gave_up`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaveUpDetails {
    /// Restarts within `restart_window`.
    pub restarts: usize,
    /// Why the last run ended.
    pub why: String,
}

/// `details` of a pause summary (`checkpoint`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseSummaryDetails {
    /// Since the previous summary.
    pub pauses: PauseStats,
    /// Over the run so far.
    pub run_pauses: PauseStats,
}

/// Checkpoint pauses of a VM: how many, and their p50, p99 and max, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PauseStats {
    /// How many.
    pub n: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Longest, ms.
    pub max_ms: f64,
}

/// `details` of a failed VM checkpoint (`checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFailedDetails {
    /// What went wrong.
    pub error: String,
}

/// An event `selfheal vm` recorded about a VM, read back by its kind and
/// the keys its shape has.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredVmEvent {
    /// `vm_hang`, `vm_crash`.
    Incident(StoredVmIncident),
    /// `vm_start`: QEMU started.
    Started(StartDetails),
    /// `vm_start`: no heartbeat from the guest yet.
    NoLink(NoLinkDetails),
    /// `vm_rollback`: rolled back in place.
    RolledBack(RolledBackDetails),
    /// `vm_rollback`: the guest runs on after its rollbacks.
    Recovered(RecoveredDetails),
    /// `vm_restart`: the guest reset itself.
    GuestReset(ResetDetails),
    /// `vm_restart`: the guest rebooted by itself.
    GuestRebooted(RebootDetails),
    /// `vm_restart`: selfheal starts QEMU again.
    Restarting(RestartingDetails),
    /// `vm_exit`: QEMU could not start.
    StartFailed(StartFailedDetails),
    /// `vm_exit`: QEMU was told to quit.
    Stopped(StoppedDetails),
    /// `vm_exit`: QEMU exited.
    Exited(ExitedDetails),
    /// `vm_gave_up`.
    GaveUp(GaveUpDetails),
    /// `dismissed`: a silent guest not acted on.
    NotHung(NotHungDetails),
    /// `dismissed`: a guest diagnosis not acted on.
    NotActed(NotActedDetails),
    /// `dismissed`: a guest stall that was QEMU stopped for checkpoints.
    CheckpointStall(CheckpointStallDetails),
    /// `checkpoint`: a pause summary.
    Pauses(PauseSummaryDetails),
    /// `checkpoint`: a checkpoint failed.
    CheckpointFailed(CheckpointFailedDetails),
}

/// A stored event that does not read back as a VM event.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Only events of source `vm` are read here (a guest's own events
    /// are forwarded with source `guest:…`).
    #[error("event {id:?} has source `{source_name}`; only `vm` events are VM events")]
    NotAVmEvent {
        /// The event's id in the store.
        id: Option<i64>,
        /// Its source.
        source_name: String,
    },
    /// A kind `selfheal vm` does not record.
    #[error("event {id:?} is a `{kind}` event, which `selfheal vm` does not record")]
    Kind {
        /// The event's id in the store.
        id: Option<i64>,
        /// Its kind.
        kind: EventKind,
    },
    /// An incident that is not one.
    #[error(transparent)]
    Incident(#[from] crate::incident::ReadError),
    /// `details` is not a shape its kind has.
    #[error("the details of a `{kind}` VM event are not a shape it has: {source}")]
    Details {
        /// The event's kind.
        kind: EventKind,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
}

impl StoredVmEvent {
    /// Reads the details of an event of source `vm`.
    pub fn from_event(event: &Event) -> Result<StoredVmEvent, ReadError> {
        if event.source != Source::Vm {
            return Err(ReadError::NotAVmEvent {
                id: event.id,
                source_name: event.source.to_string(),
            });
        }
        let d = &event.details;
        let has = |key: &str| d.get(key).is_some();
        let kind = event.kind;
        let read = |r: Result<StoredVmEvent, serde_json::Error>| {
            r.map_err(|source| ReadError::Details { kind, source })
        };
        match kind {
            EventKind::VmHang | EventKind::VmCrash => Ok(StoredVmEvent::Incident(
                StoredVmIncident::from_event(event)?,
            )),
            EventKind::VmStart if has("port") => read(of(d).map(StoredVmEvent::NoLink)),
            EventKind::VmStart => read(of(d).map(StoredVmEvent::Started)),
            EventKind::VmRollback if has("outcome") => read(of(d).map(StoredVmEvent::Recovered)),
            EventKind::VmRollback => read(of(d).map(StoredVmEvent::RolledBack)),
            EventKind::VmRestart if has("reason") => read(of(d).map(StoredVmEvent::GuestReset)),
            EventKind::VmRestart if has("boot_id") => read(of(d).map(StoredVmEvent::GuestRebooted)),
            EventKind::VmRestart => read(of(d).map(StoredVmEvent::Restarting)),
            EventKind::VmExit if has("stopped") => read(of(d).map(StoredVmEvent::Stopped)),
            EventKind::VmExit if has("error") => read(of(d).map(StoredVmEvent::StartFailed)),
            EventKind::VmExit => read(of(d).map(StoredVmEvent::Exited)),
            EventKind::VmGaveUp => read(of(d).map(StoredVmEvent::GaveUp)),
            EventKind::Dismissed if has("silent_ms") => read(of(d).map(StoredVmEvent::NotHung)),
            EventKind::Dismissed if has("stall_ms") => {
                read(of(d).map(StoredVmEvent::CheckpointStall))
            }
            EventKind::Dismissed => read(of(d).map(StoredVmEvent::NotActed)),
            EventKind::Checkpoint if has("error") => {
                read(of(d).map(StoredVmEvent::CheckpointFailed))
            }
            EventKind::Checkpoint => read(of(d).map(StoredVmEvent::Pauses)),
            _ => Err(ReadError::Kind { id: event.id, kind }),
        }
    }
}

fn of<T: serde::de::DeserializeOwned>(d: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(d)
}

#[cfg(test)]
mod tests;
