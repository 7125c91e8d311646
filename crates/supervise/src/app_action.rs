//! The `details` of `app_action` events, what the runner does about a
//! hang (the hook, the recovery steps, the stop signals), as types that
//! write and read the same documents, and [`StoredAppAction`] to read
//! one back from the store, `/api/events` or `selfheal events --json`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use selfheal_config::KillMode;
use selfheal_event::{Event, EventKind};

use crate::evidence::HookRun;

/// `details` of the hook run before acting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookDetails {
    /// Always `hook`.
    pub action: String,
    /// What the hook command did.
    pub result: HookRun,
}

/// How a recovery step ended (`details.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepResult {
    /// It did not apply or could not help; the next step ran.
    Declined,
    /// It brought the program back without a restart.
    Recovered,
}

/// `details` of a recovery step that declined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDeclined {
    /// The step's name.
    pub action: String,
    /// Always [`StepResult::Declined`].
    pub outcome: StepResult,
    /// Why.
    pub reason: String,
}

/// `details` of a recovery step that recovered the program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecovered {
    /// The step's name.
    pub action: String,
    /// Always [`StepResult::Recovered`].
    pub outcome: StepResult,
    /// What the step did: its own document (steps are pluggable, see
    /// [`crate::StepOutcome::Recovered`]).
    pub detail: Value,
}

/// `details` of the signal a dry run would send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunSignal {
    /// Always `signal`.
    pub action: String,
    /// The signal's name.
    pub signal: String,
    /// Always true.
    pub dry_run: bool,
}

/// `details` of the stop signal sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalDetails {
    /// Always `signal`.
    pub action: String,
    /// The signal's name.
    pub signal: String,
    /// Whom it reached: the process group or the process.
    pub scope: KillMode,
    /// Why it was sent (`hang (probe)`, `requested`, …).
    pub reason: String,
    /// The grace period before SIGKILL, ms.
    pub grace_ms: u64,
    /// Why sending failed; `null` when it was sent.
    pub error: Option<String>,
}

/// `details` of the SIGKILL after the grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillDetails {
    /// Always `kill`.
    pub action: String,
    /// Always `SIGKILL`.
    pub signal: String,
    /// Whom it reached: the process group or the process.
    pub scope: KillMode,
    /// Why sending failed; `null` when it was sent.
    pub error: Option<String>,
}

/// An `app_action` event read back.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredAppAction {
    /// The hook ran.
    Hook(HookDetails),
    /// A recovery step declined.
    StepDeclined(StepDeclined),
    /// A recovery step recovered the program.
    StepRecovered(StepRecovered),
    /// A dry run would have sent the stop signal.
    DryRunSignal(DryRunSignal),
    /// The stop signal was sent.
    Signal(SignalDetails),
    /// SIGKILL was sent after the grace period.
    Kill(KillDetails),
}

/// A stored event that does not read back as an app action.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Only `app_action` events carry one.
    #[error("event {id:?} is a `{kind}` event; only `app_action` events carry an app action")]
    NotAnAction {
        /// The event's id in the store.
        id: Option<i64>,
        /// Its kind.
        kind: EventKind,
    },
    /// An `action` the runner does not write.
    #[error(
        "unknown app action `{0}`; expected hook, signal, kill or a recovery step with an outcome"
    )]
    UnknownAction(String),
    /// `details` is not the shape its action writes.
    #[error("the details of an app_action event are not an app action: {0}")]
    Details(#[source] serde_json::Error),
}

impl StoredAppAction {
    /// Reads the action an `app_action` event carries.
    pub fn from_event(event: &Event) -> Result<StoredAppAction, ReadError> {
        if event.kind != EventKind::AppAction {
            return Err(ReadError::NotAnAction {
                id: event.id,
                kind: event.kind,
            });
        }
        StoredAppAction::from_details(&event.details)
    }

    /// Reads an `app_action` event's `details`: a recovery step's has an
    /// `outcome` (its `action` is the step's name); the others are told
    /// apart by `action` (and a dry run by `dry_run`).
    pub fn from_details(d: &Value) -> Result<StoredAppAction, ReadError> {
        let action = d.get("action").and_then(Value::as_str).unwrap_or_default();
        let outcome = d.get("outcome").and_then(Value::as_str);
        match (action, outcome) {
            (_, Some("declined")) => of(d).map(StoredAppAction::StepDeclined),
            (_, Some(_)) => of(d).map(StoredAppAction::StepRecovered),
            ("hook", None) => of(d).map(StoredAppAction::Hook),
            ("signal", None) if d.get("dry_run").is_some() => {
                of(d).map(StoredAppAction::DryRunSignal)
            }
            ("signal", None) => of(d).map(StoredAppAction::Signal),
            ("kill", None) => of(d).map(StoredAppAction::Kill),
            (other, None) => return Err(ReadError::UnknownAction(other.to_string())),
        }
        .map_err(ReadError::Details)
    }
}

fn of<T: serde::de::DeserializeOwned>(d: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(d)
}

#[cfg(test)]
mod tests;
