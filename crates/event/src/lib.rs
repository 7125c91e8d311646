//! The event model shared by detectors, recovery, supervision and the store.
//!
//! An [`Event`] is what an operator reads afterwards: when, what kind, how bad,
//! which rule fired, who the culprit was, and the evidence (a JSON document,
//! usually the metric snapshot at the time).
#![forbid(unsafe_code)]

mod class;
mod source;
mod target;

pub use class::{Class, UnknownClass};
pub use source::Source;
pub use target::{Blame, ProgramScope, Target};

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What happened. Stored as its `snake_case` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The daemon started watching.
    Start,
    /// The daemon stopped cleanly.
    Stop,
    /// A light- or heavy-level rule held out of range for its sustain time.
    Alert,
    /// The heavy detector classified a suspected hang and named a culprit.
    Diagnosis,
    /// The heavy detector looked and found legitimate load, not a hang.
    Dismissed,
    /// A recovery step was taken (or, in dry-run, would have been).
    Recovery,
    /// The kernel's own detectors reported something (soft lockup, OOM kill, …).
    Kernel,
    /// The detector watchdog chain missed heartbeats.
    Watchdog,
    /// A supervised application was started.
    AppStart,
    /// A supervised application reported readiness.
    AppReady,
    /// A supervised application exited or was killed by a signal.
    AppCrash,
    /// A supervised application was found hung.
    AppHang,
    /// An action was taken on a supervised application.
    AppAction,
    /// A supervised application was restarted.
    AppRestart,
    /// The crash-loop breaker gave up on a supervised application.
    AppGaveUp,
    /// A supervised application exited and will not be restarted.
    AppExit,
    /// A checkpoint-related condition worth recording (fallback, failure).
    Checkpoint,
    /// A supervised application was rolled back to an in-memory checkpoint.
    Rollback,
    /// A daemon thread panicked: its component was restarted, or the
    /// daemon reports unhealthy (`/healthz`, systemd watchdog).
    Panic,
    /// A virtual machine was started (`selfheal vm`, `[[vm]]`).
    VmStart,
    /// A guest panicked (pvpanic) or its QEMU crashed.
    VmCrash,
    /// A guest was found hung: its heartbeat stopped while QEMU ran it, or
    /// it reported a fault it cannot recover from itself.
    VmHang,
    /// A whole VM was rolled back to an in-memory checkpoint, or that
    /// rollback's outcome (the guest serves again, or it did not help).
    VmRollback,
    /// A VM was restarted (QEMU started again), or rebooted by itself.
    VmRestart,
    /// The restart limit gave up on a VM.
    VmGaveUp,
    /// A VM's QEMU exited and will not be started again.
    VmExit,
    /// The machine restarted: recorded at the next start with the
    /// incident that made selfheal restart it (or that the restart it
    /// asked for did not happen).
    Restart,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [EventKind] = &[
        EventKind::Start,
        EventKind::Stop,
        EventKind::Alert,
        EventKind::Diagnosis,
        EventKind::Dismissed,
        EventKind::Recovery,
        EventKind::Kernel,
        EventKind::Watchdog,
        EventKind::AppStart,
        EventKind::AppReady,
        EventKind::AppCrash,
        EventKind::AppHang,
        EventKind::AppAction,
        EventKind::AppRestart,
        EventKind::AppGaveUp,
        EventKind::AppExit,
        EventKind::Checkpoint,
        EventKind::Rollback,
        EventKind::Panic,
        EventKind::VmStart,
        EventKind::VmCrash,
        EventKind::VmHang,
        EventKind::VmRollback,
        EventKind::VmRestart,
        EventKind::VmGaveUp,
        EventKind::VmExit,
        EventKind::Restart,
    ];

    /// The stable name used in the store, the API and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Stop => "stop",
            EventKind::Alert => "alert",
            EventKind::Diagnosis => "diagnosis",
            EventKind::Dismissed => "dismissed",
            EventKind::Recovery => "recovery",
            EventKind::Kernel => "kernel",
            EventKind::Watchdog => "watchdog",
            EventKind::AppStart => "app_start",
            EventKind::AppReady => "app_ready",
            EventKind::AppCrash => "app_crash",
            EventKind::AppHang => "app_hang",
            EventKind::AppAction => "app_action",
            EventKind::AppRestart => "app_restart",
            EventKind::AppGaveUp => "app_gave_up",
            EventKind::AppExit => "app_exit",
            EventKind::Checkpoint => "checkpoint",
            EventKind::Rollback => "rollback",
            EventKind::Panic => "panic",
            EventKind::VmStart => "vm_start",
            EventKind::VmCrash => "vm_crash",
            EventKind::VmHang => "vm_hang",
            EventKind::VmRollback => "vm_rollback",
            EventKind::VmRestart => "vm_restart",
            EventKind::VmGaveUp => "vm_gave_up",
            EventKind::VmExit => "vm_exit",
            EventKind::Restart => "restart",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that is not one of [`EventKind::ALL`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown event kind `{0}`; known kinds: {known}", known = known_kinds())]
pub struct UnknownKind(pub String);

fn known_kinds() -> String {
    EventKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for EventKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Routine: start, stop, dismissed alerts, readiness.
    Info,
    /// Something is out of range but nothing is known to be broken.
    Warning,
    /// A hang, crash or recovery action.
    Critical,
}

impl Severity {
    /// The stable name used in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A severity name that is not `info`, `warning` or `critical`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity `{0}`; expected info, warning or critical")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            other => Err(UnknownSeverity(other.to_string())),
        }
    }
}

/// Who is to blame, as far as it is known: the one description of a culprit,
/// recorded in events and carried by recovery's incidents (which add only
/// the identity and scope to act on, [`Target`]). Every
/// field is optional because different detectors know different things (a
/// stalled CPU has no pid).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Culprit {
    /// Thread-group id (the process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Thread id, when a single thread is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<i32>,
    /// Command name from /proc/PID/comm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// cgroup path (v2 path, or the v1 path of the most specific controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// systemd unit, when the cgroup names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// CPU the culprit was running on or stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Supervised application name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The virtual machine (`[[vm]]` name): the VM itself, or the guest
    /// the pid, comm and app above are inside (events forwarded from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
}

impl Culprit {
    /// True when nothing at all is known.
    pub fn is_empty(&self) -> bool {
        *self == Culprit::default()
    }
}

impl fmt::Display for Culprit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(vm) = &self.vm {
            parts.push(format!("vm={vm}"));
        }
        if let Some(app) = &self.app {
            parts.push(format!("app={app}"));
        }
        if let Some(pid) = self.pid {
            parts.push(format!("pid={pid}"));
        }
        if let Some(tid) = self.tid {
            if Some(tid) != self.pid {
                parts.push(format!("tid={tid}"));
            }
        }
        if let Some(comm) = &self.comm {
            parts.push(format!("comm={comm}"));
        }
        if let Some(cpu) = self.cpu {
            parts.push(format!("cpu={cpu}"));
        }
        if let Some(unit) = &self.unit {
            parts.push(format!("unit={unit}"));
        } else if let Some(cg) = &self.cgroup {
            parts.push(format!("cgroup={cg}"));
        }
        f.write_str(&parts.join(" "))
    }
}

/// One thing that happened, as recorded in the store and served by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Row id assigned by the store; `None` before it is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Wall-clock time in milliseconds since the Unix epoch.
    pub time_unix_ms: i64,
    /// What happened.
    pub kind: EventKind,
    /// How bad it is.
    pub severity: Severity,
    /// Which part reported it (stored as its name: `light`, `heavy`, …).
    pub source: Source,
    /// The rule or detector that fired, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Who is to blame, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub culprit: Option<Culprit>,
    /// One human-readable line.
    pub message: String,
    /// Evidence: the metric snapshot, thresholds, action outcome, …
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl Event {
    /// A new event stamped with the current wall-clock time.
    pub fn now(
        kind: EventKind,
        severity: Severity,
        source: Source,
        message: impl Into<String>,
    ) -> Event {
        Event {
            id: None,
            time_unix_ms: unix_ms(SystemTime::now()),
            kind,
            severity,
            source,
            rule: None,
            culprit: None,
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    /// Sets the rule name.
    pub fn with_rule(mut self, rule: impl Into<String>) -> Event {
        self.rule = Some(rule.into());
        self
    }

    /// Sets the culprit.
    pub fn with_culprit(mut self, culprit: Culprit) -> Event {
        self.culprit = Some(culprit);
        self
    }

    /// Sets the evidence document.
    pub fn with_details(mut self, details: serde_json::Value) -> Event {
        self.details = details;
        self
    }

    /// Sets the evidence document from a typed detail struct (each event
    /// family declares one next to the code that fills it), stored as the
    /// JSON it serialises to.
    pub fn with_details_of<T: Serialize + ?Sized>(self, details: &T) -> Event {
        self.with_details(details_value(details))
    }

    /// The event time as a `SystemTime`.
    pub fn time(&self) -> SystemTime {
        if self.time_unix_ms >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.time_unix_ms as u64)
        } else {
            UNIX_EPOCH
        }
    }
}

/// A typed detail document as the JSON an event stores. Serialising plain
/// structs of strings, numbers and lists cannot fail; if one ever does (a
/// map keyed by something other than a string), the event keeps the error
/// in `details.details_error` rather than losing the event.
pub fn details_value<T: Serialize + ?Sized>(details: &T) -> serde_json::Value {
    serde_json::to_value(details).unwrap_or_else(|e| {
        let mut m = serde_json::Map::new();
        m.insert("details_error".into(), e.to_string().into());
        serde_json::Value::Object(m)
    })
}

/// Milliseconds since the Unix epoch (negative before it, which never happens
/// on a sane clock but must not panic).
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Where events go. The daemon's implementation forwards to the store writer
/// thread; tests collect them in memory.
pub trait EventSink: Send + Sync {
    /// Records an event. Must not block for long: callers include detector
    /// threads. Returns false when the event had to be dropped.
    fn emit(&self, event: Event) -> bool;

    /// Makes every event emitted so far durable, waiting at most `timeout`;
    /// true when done. Called only before the machine goes down (a
    /// controlled restart); sinks that keep nothing return true at once.
    fn flush(&self, timeout: std::time::Duration) -> bool {
        let _ = timeout;
        true
    }
}

/// An in-memory sink for tests and for one-shot commands.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: std::sync::Mutex<Vec<Event>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// A copy of everything emitted so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl EventSink for MemorySink {
    fn emit(&self, event: Event) -> bool {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), *k);
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        let err = "nope".parse::<EventKind>().unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("alert"), "{err}");
    }

    #[test]
    fn event_json_omits_unknowns() {
        let e = Event::now(
            EventKind::Alert,
            Severity::Warning,
            Source::Light,
            "sys high",
        )
        .with_rule("kernel_spin");
        let json = serde_json::to_value(&e).unwrap();
        assert!(json.get("culprit").is_none());
        assert!(json.get("details").is_none());
        assert_eq!(json["rule"], "kernel_spin");
        assert_eq!(json["source"], "light");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn event_json_keeps_any_source_byte_for_byte() {
        for source in ["heavy", "guest:kmsg", "placeholder"] {
            let text = format!(
                r#"{{"time_unix_ms":5,"kind":"alert","severity":"warning","source":"{source}","message":"m"}}"#
            );
            let e: Event = serde_json::from_str(&text).unwrap();
            assert_eq!(e.source, Source::from(source));
            assert_eq!(serde_json::to_string(&e).unwrap(), text);
        }
    }

    #[test]
    fn severity_names_round_trip() {
        for s in [Severity::Info, Severity::Warning, Severity::Critical] {
            assert_eq!(s.as_str().parse::<Severity>(), Ok(s));
        }
        let err = "fatal".parse::<Severity>().unwrap_err();
        assert_eq!(err, UnknownSeverity("fatal".into()));
        assert_eq!(
            err.to_string(),
            "unknown severity `fatal`; expected info, warning or critical"
        );
    }

    #[test]
    fn culprit_display_is_compact() {
        let c = Culprit {
            pid: Some(10),
            tid: Some(10),
            comm: Some("spin".into()),
            cpu: Some(1),
            ..Culprit::default()
        };
        assert_eq!(c.to_string(), "pid=10 comm=spin cpu=1");
    }
}
