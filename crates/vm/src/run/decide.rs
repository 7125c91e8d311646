//! What the run does about it: the host's evidence for the policy, the
//! policy's tick, and carrying out its decisions (rollback, restart, a
//! diagnosis recorded).

use super::*;

impl Run<'_> {
    pub(super) fn evidence(&self, silent: Duration) -> HostEvidence {
        // The later part of the silence only: the heartbeat stopped at most
        // one heartbeat period after the last one arrived.
        let window = silent.saturating_sub(Duration::from_millis(300));
        let usage = self.probe.over(window);
        let (qemu_cpu_ms, qemu_scheduled, window_ms, vcpus, vcpu_run_ms, vcpu_wait_ms) = match usage
        {
            Some(u) => (
                u.cpu_ms,
                Some(u.scheduled),
                u.span.as_secs_f64() * 1e3,
                u.vcpus,
                u.vcpu_run_ms,
                u.vcpu_wait_ms,
            ),
            None => (f64::NAN, None, 0.0, Vec::new(), None, None),
        };
        let (status, qmp_unresponsive) = match self.qmp.get() {
            Some(q) => match q.query_status(Duration::from_millis(1000)) {
                Ok(s) => (Some(s.status), false),
                Err(_) => (None, true),
            },
            None => (self.status.clone(), false),
        };
        let runnable_ms = Instant::now()
            .checked_sub(silent)
            .and_then(|since| self.probe.runnable_since(since));
        HostEvidence {
            qemu_cpu_ms,
            runnable_ms,
            qemu_scheduled,
            window_ms,
            vcpus,
            vcpu_run_ms,
            vcpu_wait_ms,
            status,
            qmp_unresponsive,
        }
    }

    pub(super) fn tick(&mut self, now: Instant) -> Option<RunEnd> {
        if !self.heard && !self.told_no_link && self.started.elapsed() > Duration::from_secs(120) {
            self.told_no_link = true;
            self.emit(
                EventKind::VmStart,
                Severity::Warning,
                "no heartbeat from the guest after 2 minutes: hang detection by heartbeat is off until one comes (run `selfheal watch` in the guest; its [host_link] port must match)".into(),
                json!({ "port": self.cfg.port }),
            );
        }
        let mut policy = std::mem::replace(&mut self.policy, Policy::new(placeholder()));
        let d = policy.tick(now, |silent| self.evidence(silent));
        self.policy = policy;
        let d = d?;
        self.decide(d, now)
    }

    pub(super) fn decide(&mut self, d: Decision, now: Instant) -> Option<RunEnd> {
        match d {
            Decision::Rollback {
                trigger,
                before,
                attempt,
            } => {
                self.metrics.incident(trigger.name());
                let (kind, what) = describe(&trigger);
                let back_ms = now.saturating_duration_since(before).as_millis() as u64;
                self.emit(
                    kind,
                    Severity::Critical,
                    format!(
                        "{what}; rolling the VM back to before {back_ms} ms ago{}",
                        if attempt > 0 {
                            format!(
                                " (attempt {}: the last rollback did not clear it)",
                                attempt + 1
                            )
                        } else {
                            String::new()
                        }
                    ),
                    trigger_details(&trigger, attempt, back_ms),
                );
                self.rollback = Some((trigger, attempt));
                self.proc.request_rollback(before);
                None
            }
            Decision::Restart { trigger, why } => {
                if self.cfg.restart == selfheal_config::RestartPolicy::Never {
                    self.policy.hold();
                    self.emit(
                        EventKind::VmHang,
                        Severity::Critical,
                        format!("{why}; left as is (restart = never)"),
                        json!({ "trigger": trigger.as_ref().map(Trigger::name), "why": why }),
                    );
                    return None;
                }
                if let Some(t) = &trigger {
                    self.metrics.incident(t.name());
                    let (kind, what) = describe(t);
                    self.emit(
                        kind,
                        Severity::Critical,
                        format!("{what}; {why}"),
                        trigger_details(t, 0, 0),
                    );
                }
                Some(RunEnd::Restart { why })
            }
            Decision::NotHung { why, silent } => {
                self.emit(
                    EventKind::Dismissed,
                    Severity::Info,
                    format!(
                        "guest link silent for {} ms, not acted on: {why}",
                        silent.as_millis()
                    ),
                    json!({ "silent_ms": silent.as_millis() as u64, "why": why }),
                );
                None
            }
            Decision::Recovered {
                trigger,
                rollbacks,
                detect_to_serving,
            } => {
                VmMetrics::inc(&self.metrics.recovered);
                if let Some(d) = detect_to_serving {
                    self.metrics.detect_to_serving.observe(d);
                }
                self.emit(
                    EventKind::VmRollback,
                    Severity::Info,
                    format!(
                        "recovered: the guest runs on after {rollbacks} rollback(s) for a {}{}",
                        trigger.name(),
                        detect_to_serving.map_or(String::new(), |d| format!(
                            ", serving {} ms after detection",
                            d.as_millis()
                        ))
                    ),
                    json!({
                        "outcome": "recovered",
                        "trigger": trigger.name(),
                        "rollbacks": rollbacks,
                        "detect_to_serving_ms": detect_to_serving.map(|d| d.as_millis() as u64),
                    }),
                );
                None
            }
        }
    }
}

/// A policy that is never consulted (swapped in while the real one runs
/// with a borrow of the run).
fn placeholder() -> PolicyConfig {
    PolicyConfig {
        heartbeat_timeout: None,
        rollback_on: Vec::new(),
        guest_grace: Duration::ZERO,
        settle: Duration::ZERO,
        recurrence_window: Duration::ZERO,
        checkpoints: false,
        max_rollbacks: 0,
        window: Duration::ZERO,
    }
}

fn describe(t: &Trigger) -> (EventKind, String) {
    match t {
        Trigger::Panic => (
            EventKind::VmCrash,
            "the guest kernel panicked (pvpanic)".into(),
        ),
        Trigger::Hang { silent, evidence } => (
            EventKind::VmHang,
            format!(
                "the guest link is silent for {} ms while QEMU runs ({:.0} ms CPU; vCPUs busy {})",
                silent.as_millis(),
                evidence.qemu_cpu_ms,
                evidence
                    .vcpus
                    .iter()
                    .map(|(i, s)| format!("{i}:{:.0}%", s * 100.0))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
        Trigger::Guest { class, message } => (
            EventKind::VmHang,
            format!("the guest did not recover a {class} it diagnosed ({message})"),
        ),
    }
}

fn trigger_details(t: &Trigger, attempt: u32, back_ms: u64) -> serde_json::Value {
    let mut d = json!({ "trigger": t.name(), "attempt": attempt, "rollback_before_ms": back_ms });
    match t {
        Trigger::Hang { silent, evidence } => {
            d["silent_ms"] = json!(silent.as_millis() as u64);
            d["evidence"] = json!({
                "qemu_cpu_ms": evidence.qemu_cpu_ms,
                "qemu_scheduled": evidence.qemu_scheduled,
                "window_ms": evidence.window_ms,
                "vcpu_run_ms": evidence.vcpu_run_ms,
                "vcpu_wait_ms": evidence.vcpu_wait_ms,
                "runnable_ms": evidence.runnable_ms,
                "vcpu_busy": evidence.vcpus.iter().map(|(i, s)| json!({"cpu": i, "share": s})).collect::<Vec<_>>(),
                "qmp_status": evidence.status,
                "qmp_unresponsive": evidence.qmp_unresponsive,
            });
        }
        Trigger::Guest { class, message } => {
            d["class"] = json!(class.as_str());
            d["guest_message"] = json!(message);
        }
        Trigger::Panic => {}
    }
    d
}
