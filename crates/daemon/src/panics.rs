//! Panics in the daemon's threads. A process-wide panic hook records each
//! one (thread, place, message); the main loop turns records into `panic`
//! events. Per thread:
//!
//! - `selfheal-http`, `selfheal-http-handler`: recovered in place (the
//!   server loop is restarted on the same socket; a handler's panic
//!   answers 500), so the daemon stays healthy.
//! - every other thread (store writer, hang pipeline and its watcher,
//!   stall canaries, kmsg follower, light detector, supervised apps'
//!   runners, probes and output pumps, signals): its work cannot be
//!   resumed in place without losing state, so the daemon reports
//!   unhealthy from then on: `/healthz` answers 503 naming the thread and
//!   `WATCHDOG=1` stops, so systemd restarts the daemon. The light
//!   detector and the pipeline would also go stale through their
//!   heartbeats; the writer, apps and follower have none, which is why
//!   the hook is needed.

use std::sync::{Arc, Mutex, OnceLock};

use selfheal_event::{Event, EventKind, Severity, Source};

/// Threads whose panics are recovered where they happen.
const RECOVERED_IN_PLACE: &[&str] = &["selfheal-http", "selfheal-http-handler"];

/// One panic; also the `details` of its `panic` event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PanicRecord {
    /// The thread's name (`unnamed` without one).
    pub thread: String,
    /// `file:line:column`.
    pub location: String,
    /// The panic message.
    pub message: String,
    /// False when the component was recovered in place.
    pub fatal: bool,
}

/// Every panic seen since the hook was installed.
#[derive(Default)]
pub struct PanicWatch {
    records: Mutex<Vec<PanicRecord>>,
    /// Called after each record: wakes the main loop, which otherwise
    /// sleeps for seconds at a time.
    waker: Mutex<Option<Box<dyn Fn() + Send>>>,
}

impl std::fmt::Debug for PanicWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PanicWatch")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

static WATCH: OnceLock<Arc<PanicWatch>> = OnceLock::new();

impl PanicWatch {
    /// Installs the hook (once per process; the previous hook, which
    /// prints the message, still runs) and returns the watch.
    pub fn install() -> Arc<PanicWatch> {
        WATCH
            .get_or_init(|| {
                let watch = Arc::new(PanicWatch::default());
                let w = watch.clone();
                let previous = std::panic::take_hook();
                std::panic::set_hook(Box::new(move |info| {
                    let thread = std::thread::current()
                        .name()
                        .unwrap_or("unnamed")
                        .to_string();
                    let message = crate::http::panic_message(info.payload());
                    let location = info.location().map_or_else(String::new, |l| l.to_string());
                    let fatal = !RECOVERED_IN_PLACE.contains(&thread.as_str());
                    // Never block or panic inside the hook.
                    if let Ok(mut r) = w.records.try_lock() {
                        r.push(PanicRecord {
                            thread,
                            location,
                            message,
                            fatal,
                        });
                    }
                    if let Ok(waker) = w.waker.try_lock() {
                        if let Some(wake) = waker.as_ref() {
                            wake();
                        }
                    }
                    previous(info);
                }));
                watch
            })
            .clone()
    }

    /// Calls `wake` after every panic recorded from now on (it must not
    /// block or panic).
    pub fn set_waker(&self, wake: Box<dyn Fn() + Send>) {
        *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(wake);
    }

    /// Records from index `from` on.
    pub fn since(&self, from: usize) -> Vec<PanicRecord> {
        let r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        r.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// Why the daemon is unhealthy because of panics (empty: it is not).
    pub fn fatal_reasons(&self) -> Vec<String> {
        self.since(0)
            .into_iter()
            .filter(|p| p.fatal)
            .map(|p| {
                format!(
                    "thread {} panicked at {}: {}; restart selfheal",
                    p.thread, p.location, p.message
                )
            })
            .collect()
    }
}

impl PanicRecord {
    /// The `panic` event for this record.
    pub fn to_event(&self) -> Event {
        let (severity, outcome) = if self.fatal {
            (
                Severity::Critical,
                "the daemon now reports unhealthy (/healthz 503, no systemd watchdog pings) until restarted",
            )
        } else {
            (Severity::Warning, "recovered in place")
        };
        Event::now(
            EventKind::Panic,
            severity,
            Source::Daemon,
            format!(
                "thread {} panicked at {}: {}; {outcome}",
                self.thread, self.location, self.message
            ),
        )
        .with_details_of(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `panic` event carries exactly the document the old `json!`
    /// literal built.
    #[test]
    fn panic_details_match_the_documented_json() {
        let p = PanicRecord {
            thread: "light".into(),
            location: "src/x.rs:1:2".into(),
            message: "boom".into(),
            fatal: true,
        };
        assert_eq!(
            p.to_event().details,
            serde_json::json!({
                "thread": "light", "location": "src/x.rs:1:2", "message": "boom", "fatal": true,
            })
        );
    }
}
