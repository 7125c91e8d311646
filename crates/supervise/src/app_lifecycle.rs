//! The `details` of the events a supervised program's lifecycle writes
//! (started, ready, restarted, could not start, ended, given up on,
//! supervision over), as types that write and read the same documents,
//! and [`StoredAppLifecycle`] to read one back from the store,
//! `/api/events`, `selfheal status` or `selfheal events --json`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use selfheal_config::RestartOutput;
use selfheal_event::{Event, EventKind};

use crate::child::ExitStatus;
use crate::respawn::EndCause;
use crate::streams::StreamReset;

/// `details` of `app_start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The program's pid.
    pub pid: i32,
    /// Its command line.
    pub command: Vec<String>,
}

/// `details` of `app_ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The program's pid.
    pub pid: i32,
    /// From the start to READY=1.
    pub startup_ms: u64,
}

/// `details` of `app_restart`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restarted {
    /// The new run's pid.
    pub pid: i32,
    /// Restarts since the program was last healthy.
    pub attempt: u32,
    /// The backoff waited, ms.
    pub backoff_ms: u64,
    /// Why the last run ended.
    pub cause: EndCause,
    /// The last run's end.
    pub previous: LastRun,
    /// `restart_output`.
    pub restart_output: RestartOutput,
    /// What was done with the failed run's output.
    pub output: Vec<StreamReset>,
}

/// `details` of `app_restart` after giving up and waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retried {
    /// The new run's pid.
    pub pid: i32,
    /// Always [`RetryCause::RetryAfterGaveUp`].
    pub cause: RetryCause,
    /// `restart_output`.
    pub restart_output: RestartOutput,
    /// What was done with the failed run's output.
    pub output: Vec<StreamReset>,
}

/// The `cause` of a [`Retried`] restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryCause {
    /// `retry_after_gave_up`: `crash_loop.retry_after` passed.
    RetryAfterGaveUp,
}

/// `details` of a program that could not be started (`app_crash`, with
/// `shell_status`) and the `previous` of the restart after it (without).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchFailed {
    /// What went wrong.
    pub launch_error: String,
    /// The shell's exit status for the error (126, 127, …): present on
    /// the `app_crash` only, `null` when the shell has none for it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub shell_status: Option<Option<i32>>,
}

/// A key that is present, even as `null`, is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i32>>, D::Error> {
    Option::<i32>::deserialize(d).map(Some)
}

/// `details` of a run that ended (`app_crash`, and `previous` of the
/// restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// Its pid.
    pub pid: i32,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
    /// The signal's name.
    pub signal_name: Option<String>,
    /// The kernel wrote a core dump.
    pub core_dumped: bool,
    /// How long it ran, ms.
    pub uptime_ms: u64,
    /// The last lines of its stderr.
    pub stderr_tail: Vec<String>,
}

/// How the last run ended: `previous` of a restart, `last` of giving up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LastRun {
    /// It ran and ended.
    Ended(Ended),
    /// It could not be started.
    LaunchFailed(LaunchFailed),
}

/// `details` of `app_gave_up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaveUp {
    /// Restarts within the window.
    pub restarts: u32,
    /// `crash_loop.window`, ms.
    pub window_ms: u64,
    /// When supervision tries again; 0: never.
    pub retry_after_ms: u64,
    /// The last run's end.
    pub last: LastRun,
}

/// `details` of `app_exit` (supervision over).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// Why supervision ended.
    pub reason: String,
    /// The last run's exit status, if one ran.
    pub last_exit: Option<ExitStatus>,
    /// Restarts over the whole supervision.
    pub restarts: u64,
}

/// A lifecycle event read back.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredAppLifecycle {
    /// `app_start`.
    Started(Started),
    /// `app_ready`.
    Ready(Ready),
    /// `app_restart` after a run ended.
    Restarted(Restarted),
    /// `app_restart` after giving up and waiting.
    Retried(Retried),
    /// `app_crash`: the program could not be started.
    LaunchFailed(LaunchFailed),
    /// `app_crash`: the program crashed.
    Crashed(Ended),
    /// `app_gave_up`.
    GaveUp(GaveUp),
    /// `app_exit`.
    Finished(Finished),
}

/// A stored event that does not read back as a lifecycle event.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not one of the lifecycle kinds.
    #[error("event {id:?} is a `{kind}` event, not an app lifecycle event (app_start, app_ready, app_restart, app_crash, app_gave_up, app_exit)")]
    NotLifecycle {
        /// The event's id in the store.
        id: Option<i64>,
        /// Its kind.
        kind: EventKind,
    },
    /// `details` is not a shape its kind has.
    #[error("the details of an `{kind}` event are not a shape it has: {source}")]
    Details {
        /// The event's kind.
        kind: EventKind,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
}

impl StoredAppLifecycle {
    /// Reads the details of an app lifecycle event.
    pub fn from_event(event: &Event) -> Result<StoredAppLifecycle, ReadError> {
        let d = &event.details;
        let has = |key: &str| d.get(key).is_some();
        let kind = event.kind;
        match kind {
            EventKind::AppStart => of(d).map(StoredAppLifecycle::Started),
            EventKind::AppReady => of(d).map(StoredAppLifecycle::Ready),
            EventKind::AppRestart if has("previous") => of(d).map(StoredAppLifecycle::Restarted),
            EventKind::AppRestart => of(d).map(StoredAppLifecycle::Retried),
            EventKind::AppCrash if has("launch_error") => {
                of(d).map(StoredAppLifecycle::LaunchFailed)
            }
            EventKind::AppCrash => of(d).map(StoredAppLifecycle::Crashed),
            EventKind::AppGaveUp => of(d).map(StoredAppLifecycle::GaveUp),
            EventKind::AppExit => of(d).map(StoredAppLifecycle::Finished),
            _ => {
                return Err(ReadError::NotLifecycle { id: event.id, kind });
            }
        }
        .map_err(|source| ReadError::Details { kind, source })
    }
}

fn of<T: serde::de::DeserializeOwned>(d: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(d)
}

#[cfg(test)]
mod tests;
