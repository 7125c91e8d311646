//! The `details` of `app_hang` events as types: what a detector saw
//! ([`AppHangEvidence`], one shape per detector), what confirmed a
//! suspicion ([`Confirmation`]), and [`StoredAppHang`] to read an event
//! back from the store, `/api/events` or `selfheal events --json`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use selfheal_event::{Event, EventKind};

use crate::evidence::ThreadStacks;
use crate::progress::SuspicionEvidence;
use crate::HangDetector;

/// What a detector saw: `details.evidence` of an `app_hang` event. The
/// stored document carries no tag; the event's `detector` says which
/// shape it is ([`AppHangEvidence::from_stored`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AppHangEvidence {
    /// `ready_timeout`: no READY=1 in time.
    ReadyTimeout(ReadyTimeoutEvidence),
    /// `watchdog`: WATCHDOG=1 stopped arriving.
    Watchdog(WatchdogEvidence),
    /// `watchdog`: the program sent WATCHDOG=trigger.
    WatchdogTrigger(WatchdogTriggerEvidence),
    /// `probe`: a probe failed `failure_threshold` times in a row.
    Probe(ProbeEvidence),
    /// `spin` or `deadlock`: a no-progress heuristic held.
    Suspicion(SuspicionEvidence),
}

impl AppHangEvidence {
    /// Reads a stored `evidence` document as the shape `detector` writes.
    pub fn from_stored(detector: HangDetector, v: &Value) -> Result<Self, serde_json::Error> {
        Ok(match detector {
            HangDetector::ReadyTimeout => {
                AppHangEvidence::ReadyTimeout(ReadyTimeoutEvidence::deserialize(v)?)
            }
            // A trigger's document is `{"trigger": …}` alone.
            HangDetector::Watchdog if v.get("trigger").is_some() => {
                AppHangEvidence::WatchdogTrigger(WatchdogTriggerEvidence::deserialize(v)?)
            }
            HangDetector::Watchdog => AppHangEvidence::Watchdog(WatchdogEvidence::deserialize(v)?),
            HangDetector::Probe => AppHangEvidence::Probe(ProbeEvidence::deserialize(v)?),
            HangDetector::Spin | HangDetector::Deadlock => {
                AppHangEvidence::Suspicion(SuspicionEvidence::deserialize(v)?)
            }
        })
    }
}

/// A run that never sent READY=1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyTimeoutEvidence {
    /// `notify.ready_timeout`, ms.
    pub ready_timeout_ms: u64,
    /// When it passed.
    pub deadline_unix_us: i64,
    /// The last STATUS= the app sent, if any.
    pub status: Option<String>,
}

/// A run that stopped sending WATCHDOG=1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchdogEvidence {
    /// The watchdog interval, ms.
    pub watchdog_ms: u64,
    /// The last ping; `null` when none came since it became ready.
    pub last_ping_unix_us: Option<i64>,
    /// When the interval ran out.
    pub deadline_unix_us: i64,
    /// Suspicions held at the time (`spin`, `deadlock`).
    pub suspected: Vec<HangDetector>,
}

/// A run that asked to be treated as hung (`WATCHDOG=trigger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogTriggerEvidence {
    /// Always [`WATCHDOG_TRIGGER`]: the message received.
    pub trigger: String,
}

/// The notify message a program sends to be treated as hung.
pub const WATCHDOG_TRIGGER: &str = "WATCHDOG=trigger";

/// A probe that failed `failure_threshold` times in a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeEvidence {
    /// The probe's name.
    pub probe: String,
    /// `exec`, `tcp` or `http`.
    pub kind: String,
    /// The command, address or URL checked.
    pub target: String,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// The app's `failure_threshold`.
    pub failure_threshold: u32,
    /// The probe's period, ms.
    pub period_ms: u64,
    /// The probe's timeout, ms.
    pub timeout_ms: u64,
    /// The most recent failures.
    pub failures: Vec<ProbeFailure>,
    /// When the failing check gave up: its start plus what it took.
    pub failed_at_unix_us: i64,
}

/// One failed probe check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeFailure {
    /// What went wrong.
    pub detail: String,
    /// When the check started.
    pub started_unix_us: i64,
    /// How long it took, ms.
    pub elapsed_ms: f64,
}

/// What confirmed a suspicion (`details.confirmed_by`); a detector that
/// needs no confirmation stores `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Confirmation {
    /// `"act_alone"`: the app's `progress.act_alone` lets a suspicion act.
    Alone(ActAlone),
    /// A probe was failing when the suspicion came: `{probe, detail}`.
    ProbeFailing {
        /// The probe's name.
        probe: String,
        /// Its latest failure.
        detail: String,
    },
    /// A probe failed while the suspicion was held: `{probe: evidence}`.
    ProbeFailed {
        /// The probe's evidence.
        probe: ProbeEvidence,
    },
}

/// The `"act_alone"` of [`Confirmation::Alone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActAlone {
    /// Stored as `"act_alone"`.
    #[serde(rename = "act_alone")]
    ActAlone,
}

/// `details` of an `app_hang` event for a suspicion (not acted on alone).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct SuspectedDetails<'a> {
    /// The heuristic (`spin`, `deadlock`).
    pub detector: HangDetector,
    /// Always true.
    pub suspected: bool,
    pub evidence: &'a SuspicionEvidence,
}

/// `details` of an `app_hang` event for a hang acted on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct HangDetails<'a> {
    /// `ready_timeout`, `watchdog`, `probe` or a heuristic.
    pub detector: HangDetector,
    /// Always false.
    pub suspected: bool,
    /// What confirmed a suspicion; `null` for a detector that needs no
    /// confirmation.
    pub confirmed_by: Option<&'a Confirmation>,
    pub evidence: &'a AppHangEvidence,
    pub detected_unix_us: i64,
    /// The threads' kernel stacks, when `hook.thread_stacks`; else `null`.
    pub thread_stacks: Option<&'a ThreadStacks>,
}

/// An `app_hang` event read back: a suspicion (`suspected`, with only
/// the detector and the evidence) or a hang acted on.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAppHang {
    /// Which detector spoke.
    pub detector: HangDetector,
    /// True for a suspicion not acted on alone.
    pub suspected: bool,
    /// What confirmed a suspicion, when one did.
    pub confirmed_by: Option<Confirmation>,
    /// What the detector saw.
    pub evidence: AppHangEvidence,
    /// When the hang was found; `None` for a suspicion.
    pub detected_unix_us: Option<i64>,
    /// The threads' kernel stacks, when they were read.
    pub thread_stacks: Option<ThreadStacks>,
}

/// The `details` document before its evidence is read by detector.
#[derive(Deserialize)]
struct Raw {
    detector: HangDetector,
    suspected: bool,
    #[serde(default)]
    confirmed_by: Option<Confirmation>,
    evidence: Value,
    #[serde(default)]
    detected_unix_us: Option<i64>,
    #[serde(default)]
    thread_stacks: Option<ThreadStacks>,
}

/// A stored event that does not read back as an app hang.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Only `app_hang` events carry one.
    #[error("event {id:?} is a `{kind}` event; only `app_hang` events carry an app hang")]
    NotAnAppHang {
        /// The event's id in the store.
        id: Option<i64>,
        /// Its kind.
        kind: EventKind,
    },
    /// `details` lacks `detector`, `suspected` or `evidence`, or one of
    /// them is not a shape the runner writes.
    #[error("the details of an app_hang event are not an app hang: {0}")]
    Details(#[source] serde_json::Error),
    /// The evidence is not the shape its detector writes.
    #[error("the evidence of an app_hang event is not what `{detector}` writes: {source}")]
    Evidence {
        /// The detector.
        detector: HangDetector,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
}

impl StoredAppHang {
    /// Reads the hang an `app_hang` event carries.
    pub fn from_event(event: &Event) -> Result<StoredAppHang, ReadError> {
        if event.kind != EventKind::AppHang {
            return Err(ReadError::NotAnAppHang {
                id: event.id,
                kind: event.kind,
            });
        }
        StoredAppHang::from_details(&event.details)
    }

    /// Reads an `app_hang` event's `details` document.
    pub fn from_details(details: &Value) -> Result<StoredAppHang, ReadError> {
        let raw = Raw::deserialize(details).map_err(ReadError::Details)?;
        let evidence =
            AppHangEvidence::from_stored(raw.detector, &raw.evidence).map_err(|source| {
                ReadError::Evidence {
                    detector: raw.detector,
                    source,
                }
            })?;
        Ok(StoredAppHang {
            detector: raw.detector,
            suspected: raw.suspected,
            confirmed_by: raw.confirmed_by,
            evidence,
            detected_unix_us: raw.detected_unix_us,
            thread_stacks: raw.thread_stacks,
        })
    }
}

#[cfg(test)]
mod tests;
