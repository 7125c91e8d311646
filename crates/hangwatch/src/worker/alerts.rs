//! The events the pipeline records itself: CPU stalls (held for the
//! host's word in a guest) and the detectors' watchdog.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use selfheal_detect::watchdog::WatchdogEvent;
use selfheal_diagnose::class::Trigger;
use selfheal_event::{Culprit, Event, EventKind, Severity, Source};

use super::{Pending, Worker};
use crate::details::{StallDetails, WatchdogDetails};
use crate::excuse::{HostTime, Verdict};

impl Worker {
    /// A CPU stall, recorded and handed to the heavy detector.
    /// `host`: the part of it the host's checkpoint stops and this vCPU's
    /// waits for a host CPU explain (in a guest the host tells them).
    pub(super) fn stall_alert(
        &mut self,
        cpu: u32,
        since: Instant,
        stalled_for: Duration,
        host: Option<HostTime>,
        pending: &mut Option<Pending>,
    ) {
        let mut parts = Vec::new();
        if let Some(h) = &host {
            if !h.stopped.is_zero() {
                parts.push(format!(
                    "{} ms of it the host stopped the VM for checkpoints",
                    h.stopped.as_millis()
                ));
            }
            if !h.waited.is_zero() {
                parts.push(format!(
                    "{} ms its vCPU waited for a host CPU",
                    h.waited.as_millis()
                ));
            }
        }
        let excused = if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        };
        self.sink.emit(
            Event::now(
                EventKind::Alert,
                Severity::Critical,
                Source::Stall,
                format!(
                    "cpu {cpu} stalled: its real-time canary has not run for {} ms{excused}",
                    stalled_for.as_millis()
                ),
            )
            .with_rule("cpu_stall")
            .with_culprit(Culprit {
                cpu: Some(cpu),
                ..Culprit::default()
            })
            .with_details_of(&StallDetails {
                cpu,
                stalled_ms: stalled_for.as_millis() as u64,
                bound_ms: self.cfg.stall.bound.get().as_millis() as u64,
                host_stopped_ms: host.map(|h| h.stopped.as_millis() as u64),
                host_waited_ms: host
                    .filter(|h| !h.waited.is_zero())
                    .map(|h| h.waited.as_millis() as u64),
            }),
        );
        Worker::want(pending, Trigger::Stall { cpu, stalled_for }, Some(since));
    }

    /// Held stalls the host's word now decides: reported, or excused.
    pub(super) fn release_held_stalls(&mut self, pending: &mut Option<Pending>) {
        let Some(h) = self.stalls_held.as_mut() else {
            return;
        };
        if h.is_empty() {
            return;
        }
        let now_us = selfheal_sys::bpf::monotonic_ns() / 1000;
        let verdicts = h.release(Instant::now(), now_us, self.cfg.stall.bound.get());
        for v in verdicts {
            match v {
                Verdict::Report {
                    cpu,
                    since,
                    stalled_for,
                    stopped,
                    waited,
                } => self.stall_alert(
                    cpu,
                    since,
                    stalled_for,
                    Some(HostTime { stopped, waited }),
                    pending,
                ),
                Verdict::Excused {
                    cpu,
                    stalled_for,
                    stopped,
                    waited,
                } => {
                    let n = self.stats.stalls_excused.fetch_add(1, Ordering::Relaxed) + 1;
                    // The first, then one in 20: a busy host stops the VM
                    // 20 times a second.
                    if n == 1 || n.is_multiple_of(20) {
                        tracing::info!(
                            "cpu {cpu}: {} ms without scheduling progress, {} ms of it the host's checkpoint stops and {} ms its vCPU's wait for a host CPU: no stall ({n} excused so far)",
                            stalled_for.as_millis(),
                            stopped.as_millis(),
                            waited.as_millis()
                        );
                    }
                }
            }
        }
    }

    pub(super) fn watchdog(&mut self, e: WatchdogEvent, pending: &mut Option<Pending>) {
        let (severity, message, details) =
            match &e {
                WatchdogEvent::Missed {
                    component,
                    age,
                    max_age,
                } => (
                    Severity::Critical,
                    format!(
                    "{component} heartbeat missed: {} old (limit {} ms); the detector is starved",
                    age.map_or("never beat".to_string(), |a| format!("{} ms", a.as_millis())),
                    max_age.as_millis()
                ),
                    WatchdogDetails::Missed {
                        component: component.as_str(),
                        age_ms: age.map(|a| a.as_millis() as u64),
                        max_age_ms: max_age.as_millis() as u64,
                    },
                ),
                WatchdogEvent::Recovered { component, after } => (
                    Severity::Info,
                    format!("{component} heartbeat back after {} ms", after.as_millis()),
                    WatchdogDetails::Recovered {
                        component: component.as_str(),
                        stale_ms: after.as_millis() as u64,
                    },
                ),
                WatchdogEvent::DeviceError { message } => (
                    Severity::Warning,
                    format!("hardware watchdog: {message}"),
                    WatchdogDetails::DeviceError { error: message },
                ),
            };
        self.sink.emit(
            Event::now(EventKind::Watchdog, severity, Source::Watchdog, message)
                .with_details_of(&details),
        );
        if let WatchdogEvent::Missed { component, age, .. } = e {
            // Something starved a detector: look at what runs.
            Worker::want(
                pending,
                Trigger::Watchdog {
                    component,
                    age: age.unwrap_or_default(),
                },
                None,
            );
        }
    }
}
