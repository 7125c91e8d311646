//! What the run loop hears: QMP events, the guest's messages and events,
//! the checkpoint engine's events; and what it sends on (the rollback
//! notice to the guest, the pause summaries).

use selfheal_event::details_value;

use super::*;
use crate::details::{
    CheckpointFailedDetails, CheckpointStallDetails, NotActedDetails, PauseStats,
    PauseSummaryDetails, RebootDetails, ResetDetails, RestartedBy, RolledBackDetails,
};
use crate::events::GuestDetails;
use crate::pauses::Explained;

impl Run<'_> {
    pub(super) fn qmp_event(&mut self, ev: QmpEvent, now: Instant) {
        match ev {
            QmpEvent::GuestPanicked { .. } => {
                self.status = Some("guest-panicked".into());
                self.policy.panic(now);
            }
            // QEMU's own pause stops the guest's clocks with it.
            QmpEvent::Stop => {
                self.status = Some("paused".into());
                self.teller.clock_changed();
            }
            QmpEvent::Resume => {
                self.status = Some("running".into());
                self.teller.clock_changed();
            }
            QmpEvent::Shutdown { reason, .. } => self.shutdown_reason = Some(reason),
            QmpEvent::Reset {
                guest: true,
                reason,
            } => self.emit(
                EventKind::VmRestart,
                Severity::Warning,
                format!("the guest reset itself ({reason})"),
                details_value(&ResetDetails {
                    reason: reason.clone(),
                    by: RestartedBy::Guest,
                }),
            ),
            QmpEvent::Reset { .. } | QmpEvent::Other(_) | QmpEvent::Closed => {}
        }
    }

    /// A message from the guest, read at host CLOCK_MONOTONIC `read_us`.
    pub(super) fn guest_message(&mut self, m: GuestMessage, now: Instant, read_us: u64) {
        match m {
            GuestMessage::Hello {
                boot_id,
                version,
                host_messages,
                host_waits,
                ..
            } => {
                self.guest_listens = host_messages;
                self.guest_wants_waits = host_messages && host_waits;
                if self.boot_id.as_ref().is_some_and(|b| *b != boot_id) {
                    self.emit(
                        EventKind::VmRestart,
                        Severity::Warning,
                        "the guest rebooted by itself (new boot id)".into(),
                        details_value(&RebootDetails {
                            boot_id: boot_id.clone(),
                            by: RestartedBy::Guest,
                        }),
                    );
                }
                if !self.heard {
                    tracing::info!(vm = %self.cfg.name, version, "guest link up");
                }
                self.boot_id = Some(boot_id);
            }
            GuestMessage::Heartbeat {
                unix_ms, mono_ms, ..
            } => {
                self.heard = true;
                self.teller.heartbeat(mono_ms, read_us);
                self.teller_waits = false;
                self.clock.heartbeat(
                    unix_ms,
                    selfheal_event::unix_ms(std::time::SystemTime::now()),
                );
                self.policy.heartbeat(now);
                self.metrics.heartbeat(now);
            }
            GuestMessage::Event { event } => self.guest_event(*event, now),
        }
    }

    pub(super) fn guest_event(&mut self, e: Event, now: Instant) {
        if !self.filter.admit(&e, now) {
            VmMetrics::inc(&self.metrics.guest_events_dropped);
            return;
        }
        let details = GuestDetails::read(&e.details);
        let made = self.clock.to_host(
            e.time_unix_ms,
            selfheal_event::unix_ms(std::time::SystemTime::now()),
            now,
        );
        match (e.kind, details.class) {
            (EventKind::Diagnosis, Some(class)) => {
                if let Some(x) = self.checkpoint_stall(class, &details, made) {
                    self.emit(
                        EventKind::Dismissed,
                        Severity::Info,
                        format!(
                            "the guest's {class} diagnosis is not acted on: QEMU stood stopped for checkpoints {} ms of the {} ms stall it reports (the guest's clock runs on while the host holds its vCPUs)",
                            x.stopped.as_millis(),
                            x.stall.as_millis()
                        ),
                        details_value(&CheckpointStallDetails {
                            class,
                            stall_ms: x.stall.as_millis() as u64,
                            stopped_ms: x.stopped.as_millis() as u64,
                            guest_message: e.message.clone(),
                        }),
                    );
                    VmMetrics::inc(&self.metrics.guest_events);
                    self.sink.emit(forwarded(&self.cfg.name, e));
                    return;
                }
                let back = onset_back(&details);
                if let Some(n) = self
                    .policy
                    .guest_diagnosis_at(now, made, class, back, &e.message)
                {
                    self.emit(
                        EventKind::Dismissed,
                        Severity::Info,
                        format!("the guest's {class} diagnosis is not acted on: {}", n.why),
                        details_value(&NotActedDetails {
                            class,
                            why: n.why.clone(),
                            after_rollback_ms: n.after_rollback.as_millis() as u64,
                            covers_ms: n.covers.as_millis() as u64,
                            settle_ms: self.cfg.settle.get().as_millis() as u64,
                            guest_message: e.message.clone(),
                        }),
                    );
                }
            }
            (EventKind::Alert, _) => self.policy.guest_alert(now, made, alert_held(&e.details)),
            (EventKind::Recovery, Some(class))
                if details.outcome.as_deref() == Some("recovered") =>
            {
                self.policy.guest_recovered(class)
            }
            _ => {}
        }
        VmMetrics::inc(&self.metrics.guest_events);
        self.sink.emit(forwarded(&self.cfg.name, e));
    }

    /// A guest `kernel_stall` whose stall the host's checkpoint stops
    /// account for ([`Pauses::explain`]).
    fn checkpoint_stall(
        &self,
        class: Class,
        details: &GuestDetails,
        made: Instant,
    ) -> Option<Explained> {
        if class != Class::KernelStall {
            return None;
        }
        let ms = details
            .evidence
            .as_ref()?
            .cpu_stalled_ms
            .filter(|v| v.is_finite() && *v >= 0.0)?;
        self.stops
            .explain(made, Duration::from_millis(ms.min(3_600_000.0) as u64))
    }

    pub(super) fn engine_event(&mut self, e: ckpt::Event, now: Instant) -> Option<RunEnd> {
        let m = self.metrics;
        match e {
            ckpt::Event::Checkpoint(s) => {
                VmMetrics::inc(&m.checkpoints);
                let stopped = s.pause_us + s.registration_pause_us;
                m.pause.observe(Duration::from_micros(stopped));
                // Ended about now: the report comes as QEMU resumes.
                self.stops.stopped(now, Duration::from_micros(stopped));
                if let Some(span) = s.registration_stopped_mono_us {
                    self.teller.stopped(span);
                }
                self.teller.stopped(s.stopped_mono_us);
                self.tell_stops();
                self.pauses.push(stopped);
                m.memory_bytes.store(s.memory_bytes, Ordering::Relaxed);
                m.held.store(s.held as u64, Ordering::Relaxed);
            }
            ckpt::Event::CheckpointFailed { error } => {
                if m.checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(100)
                {
                    self.emit(
                        EventKind::Checkpoint,
                        Severity::Warning,
                        format!("a VM checkpoint failed (QEMU runs on): {error}"),
                        details_value(&CheckpointFailedDetails {
                            error: error.clone(),
                        }),
                    );
                }
            }
            ckpt::Event::RolledBack(r) => {
                VmMetrics::inc(&m.rollbacks);
                self.teller.clock_changed();
                m.rollback.observe(Duration::from_micros(r.duration_us));
                let (trigger, attempt) = match (&r.failure, self.rollback.take()) {
                    (Failure::Hang, Some(t)) => {
                        // What the engine moved its kept checkpoints by.
                        let undone = Duration::from_millis(r.checkpoint_age_ms)
                            + Duration::from_micros(r.duration_us);
                        self.policy.rolled_back(now, undone);
                        (t.0.name().to_string(), Some(t.1))
                    }
                    // The engine rolled back a crash of QEMU itself.
                    (f, _) => (format!("qemu {f:?}"), None),
                };
                let told = self.tell_rollback(r.checkpoint_age_ms, r.duration_us, &trigger);
                self.emit(
                    EventKind::VmRollback,
                    Severity::Critical,
                    format!(
                        "rolled back in place to a checkpoint {} ms old ({} pages, QEMU stopped {:.1} ms){}",
                        r.checkpoint_age_ms,
                        r.pages_restored,
                        r.duration_us as f64 / 1000.0,
                        attempt
                            .filter(|a| *a > 0)
                            .map_or(String::new(), |a| format!(", attempt {}", a + 1))
                    ),
                    details_value(&RolledBackDetails {
                        trigger: trigger.clone(),
                        attempt,
                        rollback_ms: r.duration_us as f64 / 1000.0,
                        guest_told: told,
                        report: &r,
                    }),
                );
            }
            ckpt::Event::RollbackImpossible { failure, why } => {
                VmMetrics::inc(&m.rollbacks_impossible);
                if failure == Failure::Hang && self.rollback.take().is_some() {
                    let d = self.policy.rollback_failed(&format!("{why:?}"));
                    return self.decide(d, now);
                }
            }
            ckpt::Event::Exited(info) => {
                return Some(RunEnd::Exited {
                    info,
                    reason: self.shutdown_reason.take(),
                    started: self.qmp_seen,
                })
            }
            ckpt::Event::Started { .. } | ckpt::Event::Exec | ckpt::Event::Detached => {}
        }
        None
    }

    /// Tells the guest it was rolled back (when it listens); the result
    /// for the event: `Some(sent)`, or `None` when the guest does not
    /// listen.
    pub(super) fn tell_rollback(
        &mut self,
        age_ms: u64,
        duration_us: u64,
        trigger: &str,
    ) -> Option<bool> {
        if !self.guest_listens {
            return None;
        }
        self.told_rollbacks += 1;
        let m = HostMessage::Rollback {
            seq: self.told_rollbacks,
            rolled_back_ms: age_ms,
            pause_ms: duration_us / 1000,
            trigger: trigger.to_string(),
        };
        let line = m.to_line();
        let sent = self.link.send(&line);
        if !sent {
            // The link is down (a rollback to before QEMU accepted it
            // closes it): said again once it is up.
            self.untold = Some(line);
        }
        Some(sent)
    }

    /// Tells the guest (when it listens) the checkpoint stops not told yet.
    pub(super) fn tell_stops(&mut self) {
        if !self.guest_listens {
            return;
        }
        // A guest that stopped reading (hung) would make every send wait
        // out its timeout: after a failed one, wait for its next heartbeat.
        if self.teller_waits {
            return;
        }
        let now_us = selfheal_sys::bpf::monotonic_ns() / 1000;
        if let Some(m) = self.teller.message(now_us) {
            if self.link.send(&m.to_line()) {
                self.teller.told(now_us);
            } else {
                self.teller_waits = true;
            }
        }
    }

    /// Reads the vCPU threads' waits and tells them to the guest (when it
    /// asked for them); a line goes out after every read, with or without
    /// waits, so the guest knows how far the host's word reaches.
    pub(super) fn tell_waits(&mut self) {
        if !self.guest_wants_waits {
            return;
        }
        let clock = || selfheal_sys::bpf::monotonic_ns() / 1000;
        match self.vcpu_waits.sample(clock) {
            Ok(Some(s)) => self.teller.waited(s),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(vm = %self.cfg.name, "{e}");
                return;
            }
        }
        // As for the stops: a guest that stopped reading is not written
        // to again before its next heartbeat.
        if self.teller_waits {
            return;
        }
        if let Some(m) = self.teller.waits_message() {
            if self.link.send(&m.to_line()) {
                self.teller.waits_told();
            } else {
                self.teller_waits = true;
            }
        }
    }

    /// A `checkpoint` event with the pauses since the last one, and over
    /// the run so far (p50, p99, max, ms).
    pub(super) fn pause_summary(&mut self, now: Instant, last: bool) {
        if now < self.next_pause_summary && !last {
            return;
        }
        self.next_pause_summary = now + PAUSE_SUMMARY_EVERY;
        if self.pauses.is_empty() {
            return;
        }
        let window = pause_stats(&mut self.pauses);
        self.all_pauses.append(&mut self.pauses);
        let run = pause_stats(&mut self.all_pauses);
        self.emit(
            EventKind::Checkpoint,
            Severity::Info,
            format!(
                "checkpoint pauses: {} in the last {} s, p50 {:.1} ms, p99 {:.1} ms (run: {}, p50 {:.1} ms, p99 {:.1} ms)",
                window.n, PAUSE_SUMMARY_EVERY.as_secs(), window.p50_ms, window.p99_ms,
                run.n, run.p50_ms, run.p99_ms
            ),
            details_value(&PauseSummaryDetails {
                pauses: window,
                run_pauses: run,
            }),
        );
        // The run's list is bounded: at 20 a second, an hour is 72 000.
        if self.all_pauses.len() > 100_000 {
            self.all_pauses.drain(..50_000);
        }
    }
}

/// n, p50, p99 and max of pauses in µs, as ms (sorts `v`; not empty).
fn pause_stats(v: &mut [u64]) -> PauseStats {
    v.sort_unstable();
    let q = |p: f64| {
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i.min(v.len() - 1)] as f64 / 1000.0
    };
    PauseStats {
        n: v.len(),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: q(1.0),
    }
}

#[cfg(test)]
mod details_tests {
    use serde_json::json;

    use super::*;

    /// A pause summary is the document the old `json!` literals built,
    /// and its statistics are the nearest-rank percentiles of the pauses.
    #[test]
    fn pause_summary_matches_the_documented_json() {
        let mut window: Vec<u64> = vec![3000, 1000, 2000];
        let mut run: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let (w, r) = (pause_stats(&mut window), pause_stats(&mut run));
        assert_eq!(
            details_value(&PauseSummaryDetails {
                pauses: w,
                run_pauses: r,
            }),
            json!({
                "pauses": {"n": 3, "p50_ms": 2.0, "p99_ms": 3.0, "max_ms": 3.0},
                "run_pauses": {"n": 100, "p50_ms": 51.0, "p99_ms": 99.0, "max_ms": 100.0},
            })
        );
    }

    /// Each document is exactly the JSON the old `json!` literals built.
    #[test]
    fn vm_input_details_match_the_documented_json() {
        assert_eq!(
            details_value(&ResetDetails {
                reason: "guest-reset".into(),
                by: RestartedBy::Guest
            }),
            json!({"reason": "guest-reset", "by": "guest"})
        );
        assert_eq!(
            details_value(&RebootDetails {
                boot_id: "b2".into(),
                by: RestartedBy::Guest
            }),
            json!({"boot_id": "b2", "by": "guest"})
        );
        assert_eq!(
            details_value(&NotActedDetails {
                class: Class::KernelStall,
                why: "settling".into(),
                after_rollback_ms: 10,
                covers_ms: 20,
                settle_ms: 30,
                guest_message: "m".into(),
            }),
            json!({"class": "kernel_stall", "why": "settling", "after_rollback_ms": 10,
                   "covers_ms": 20, "settle_ms": 30, "guest_message": "m"})
        );
        assert_eq!(
            details_value(&CheckpointStallDetails {
                class: Class::KernelStall,
                stall_ms: 316,
                stopped_ms: 290,
                guest_message: "m".into(),
            }),
            json!({"class": "kernel_stall", "stall_ms": 316, "stopped_ms": 290,
                   "guest_message": "m"})
        );
        assert_eq!(
            details_value(&CheckpointFailedDetails { error: "e".into() }),
            json!({"error": "e"})
        );
        let report = json!({"pages_restored": 3});
        assert_eq!(
            details_value(&RolledBackDetails {
                trigger: "qemu Crash".into(),
                attempt: None,
                rollback_ms: 1.5,
                guest_told: None,
                report: &report,
            }),
            json!({"trigger": "qemu Crash", "attempt": null, "rollback_ms": 1.5,
                   "guest_told": null, "report": {"pages_restored": 3}})
        );
    }
}
