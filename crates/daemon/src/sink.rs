//! Where the daemon's events go: the store (durable), an optional JSON-lines
//! event log, and the log.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use selfheal_event::{Event, EventSink, Severity};
use serde::Serialize;

/// One line of the event log: the event with its time also in RFC 3339
/// (UTC, milliseconds) first, so log shippers and node-problem-detector's
/// filelog watcher (which parses times with a Go layout, not epoch
/// numbers) can read it.
#[derive(Serialize)]
struct EventLogLine<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a Event,
}

/// The event log's JSON line for `event` (no trailing newline).
pub fn event_log_line(event: &Event) -> serde_json::Result<String> {
    let ms = u64::try_from(event.time_unix_ms).unwrap_or(0);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    serde_json::to_string(&EventLogLine {
        time: humantime::format_rfc3339_millis(t).to_string(),
        event,
    })
}

/// An event log target: a file opened for append, or standard output.
#[derive(Debug)]
enum LogTarget {
    Stdout,
    File(File),
}

/// Fans every event out to the store writer, the event log and `tracing`.
pub struct FanoutSink {
    store: Arc<dyn EventSink>,
    event_log: Option<Mutex<LogTarget>>,
    /// The link to the host when running in a VM (`[host_link]`).
    link: Option<Arc<dyn EventSink>>,
    /// Test hook (`SELFHEAL_TEST_INJECT_PANIC=sink:KIND`): the thread that
    /// emits the first event of this kind panics, to prove that a panic in
    /// a daemon thread is recorded and reported.
    panic_on: Mutex<Option<selfheal_event::EventKind>>,
}

impl std::fmt::Debug for FanoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutSink")
            .field("event_log", &self.event_log)
            .finish_non_exhaustive()
    }
}

/// The event log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open event log {path}: {source}; fix the path or drop --event-log")]
pub struct EventLogError {
    /// The path.
    pub path: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl FanoutSink {
    /// Events go to `store`, and to `event_log` when given (`-` = stdout).
    pub fn new(
        store: Arc<dyn EventSink>,
        event_log: Option<&Path>,
    ) -> Result<FanoutSink, EventLogError> {
        let event_log = match event_log {
            None => None,
            Some(p) if p == Path::new("-") => Some(Mutex::new(LogTarget::Stdout)),
            Some(p) => {
                // Root only when created (events name commands, cgroups
                // and users); an existing file keeps the mode its owner gave it.
                use std::os::unix::fs::OpenOptionsExt;
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(p)
                    .map_err(|source| EventLogError {
                        path: p.display().to_string(),
                        source,
                    })?;
                Some(Mutex::new(LogTarget::File(f)))
            }
        };
        let panic_on = std::env::var("SELFHEAL_TEST_INJECT_PANIC")
            .ok()
            .and_then(|v| v.strip_prefix("sink:")?.parse().ok());
        Ok(FanoutSink {
            store,
            event_log,
            link: None,
            panic_on: Mutex::new(panic_on),
        })
    }

    /// Also forwards every event to `link` (the host, from inside a VM).
    pub fn with_link(mut self, link: Arc<dyn EventSink>) -> FanoutSink {
        self.link = Some(link);
        self
    }
}

impl EventSink for FanoutSink {
    fn emit(&self, event: Event) -> bool {
        let inject = {
            let mut p = self.panic_on.lock().unwrap_or_else(|p| p.into_inner());
            (*p == Some(event.kind)).then(|| p.take())
        };
        if inject.is_some() {
            panic!(
                "injected panic on emitting a {} event (test hook)",
                event.kind
            );
        }
        let culprit = event
            .culprit
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        match event.severity {
            Severity::Critical => {
                tracing::warn!(kind = %event.kind, rule = event.rule.as_deref().unwrap_or(""), culprit = %culprit, "{}", event.message)
            }
            Severity::Warning => {
                tracing::warn!(kind = %event.kind, rule = event.rule.as_deref().unwrap_or(""), culprit = %culprit, "{}", event.message)
            }
            Severity::Info => tracing::info!(kind = %event.kind, "{}", event.message),
        }
        if let Some(log) = &self.event_log {
            if let Ok(line) = event_log_line(&event) {
                let mut target = log.lock().unwrap_or_else(|p| p.into_inner());
                let res = match &mut *target {
                    LogTarget::Stdout => {
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "{line}").and_then(|_| out.flush())
                    }
                    LogTarget::File(f) => writeln!(f, "{line}"),
                };
                if let Err(e) = res {
                    tracing::error!("writing the event log failed: {e}");
                }
            }
        }
        if let Some(link) = &self.link {
            link.emit(event.clone());
        }
        self.store.emit(event)
    }

    /// The event log's data, then the store, each within `timeout`.
    fn flush(&self, timeout: std::time::Duration) -> bool {
        let log_ok = match &self.event_log {
            Some(log) => match &mut *log.lock().unwrap_or_else(|p| p.into_inner()) {
                LogTarget::Stdout => std::io::stdout().flush().is_ok(),
                LogTarget::File(f) => sync_log(f),
            },
            None => true,
        };
        let store_ok = self.store.flush(timeout);
        if !log_ok {
            tracing::warn!("flush: the event log's data did not reach its disk");
        }
        if !store_ok {
            tracing::warn!("flush: the event store did not commit within {timeout:?}");
        }
        store_ok && log_ok
    }
}

/// Puts the event log's data on its disk. A log on a terminal, a serial
/// port, a pipe or a socket (the lab guest logs to /dev/ttyS2) has no disk
/// cache: `fdatasync(2)` answers EINVAL there, and every write already went
/// to the device, so that counts as done. Before, it made every controlled
/// restart report the event store "NOT flushed in time" in 0.4 s.
fn sync_log(f: &File) -> bool {
    match f.sync_data() {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            f.metadata().is_ok_and(|m| !m.file_type().is_file())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_event::{EventKind, MemorySink, Source};

    #[test]
    fn writes_json_lines_and_forwards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mem = Arc::new(MemorySink::new());
        let sink = FanoutSink::new(mem.clone(), Some(&path)).unwrap();
        sink.emit(Event::now(
            EventKind::Start,
            Severity::Info,
            Source::Daemon,
            "started",
        ));
        sink.emit(Event::now(
            EventKind::Stop,
            Severity::Info,
            Source::Daemon,
            "stopped",
        ));
        assert_eq!(mem.events().len(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[1].kind, EventKind::Stop);
        // The RFC 3339 time comes first and equals time_unix_ms.
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let t = first["time"].as_str().unwrap();
        assert!(text.starts_with(&format!("{{\"time\":\"{t}\",")), "{text}");
        let parsed = humantime::parse_rfc3339(t).unwrap();
        let ms = parsed
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert_eq!(ms, lines[0].time_unix_ms);
        assert!(
            t.ends_with('Z') && t.len() == "2026-12-06T12:00:00.123Z".len(),
            "{t}"
        );
    }

    /// The lab guest's event log is a serial port: flushing before a
    /// controlled restart must not fail on it (fdatasync says EINVAL), or
    /// every restart reads "event store NOT flushed".
    #[test]
    fn flush_succeeds_with_the_log_on_a_character_device() {
        let mem = Arc::new(MemorySink::new());
        let sink = FanoutSink::new(mem.clone(), Some(Path::new("/dev/null"))).unwrap();
        sink.emit(Event::now(
            EventKind::Start,
            Severity::Info,
            Source::Daemon,
            "started",
        ));
        assert!(sink.flush(std::time::Duration::from_secs(1)));
        // A regular file is synced, and still counts as flushed.
        let dir = tempfile::tempdir().unwrap();
        let sink = FanoutSink::new(mem, Some(&dir.path().join("e.jsonl"))).unwrap();
        assert!(sink.flush(std::time::Duration::from_secs(1)));
    }

    /// What the store could not commit still fails the flush.
    #[test]
    fn flush_fails_when_the_store_does() {
        struct Stuck;
        impl EventSink for Stuck {
            fn emit(&self, _: Event) -> bool {
                true
            }
            fn flush(&self, _: std::time::Duration) -> bool {
                false
            }
        }
        let sink = FanoutSink::new(Arc::new(Stuck), Some(Path::new("/dev/null"))).unwrap();
        assert!(!sink.flush(std::time::Duration::from_millis(10)));
    }

    #[test]
    fn bad_event_log_path_is_named() {
        let mem = Arc::new(MemorySink::new());
        let err = FanoutSink::new(mem, Some(Path::new("/nonexistent/dir/e.jsonl")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/dir/e.jsonl"), "{err}");
    }
}
