//! What the run does about it: the host's evidence for the policy, the
//! policy's tick, and carrying out its decisions (rollback, restart, a
//! diagnosis recorded).

use selfheal_event::details_value;

use super::*;
use crate::details::{NoLinkDetails, NotHungDetails, Recovered, RecoveredDetails};
use crate::incident::{IncidentDetails, IncidentTrigger, LeftDetails};

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
                details_value(&NoLinkDetails {
                    port: self.cfg.port.clone(),
                }),
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
                        details_value(&LeftDetails {
                            trigger: trigger.as_ref().map(IncidentTrigger::of),
                            why: why.clone(),
                        }),
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
                    details_value(&NotHungDetails {
                        silent_ms: silent.as_millis() as u64,
                        why: why.clone(),
                    }),
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
                    details_value(&RecoveredDetails {
                        outcome: Recovered::Recovered,
                        trigger: trigger.name().into(),
                        rollbacks,
                        detect_to_serving_ms: detect_to_serving.map(|d| d.as_millis() as u64),
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
        history: None,
    }
}

fn describe(t: &Trigger) -> (EventKind, String) {
    match t {
        Trigger::Panic => (
            EventKind::VmCrash,
            "the guest kernel panicked (pvpanic)".into(),
        ),
        Trigger::Hang {
            silent,
            evidence,
            last_chance,
        } => (
            EventKind::VmHang,
            format!(
                "the guest link is silent for {} ms while QEMU runs ({:.0} ms CPU; vCPUs busy {}; could run them {:.0} ms of it){}",
                silent.as_millis(),
                evidence.qemu_cpu_ms,
                evidence
                    .vcpus
                    .iter()
                    .map(|(i, s)| format!("{i}:{:.0}%", s * 100.0))
                    .collect::<Vec<_>>()
                    .join(" "),
                evidence.runnable_ms.unwrap_or(f64::NAN),
                if *last_chance {
                    " — acted on short of the heartbeat timeout: the last checkpoint from before the silence is about to age out"
                } else {
                    ""
                }
            ),
        ),
        Trigger::Guest { class, message } => (
            EventKind::VmHang,
            format!("the guest did not recover a {class} it diagnosed ({message})"),
        ),
    }
}

fn trigger_details(t: &Trigger, attempt: u32, back_ms: u64) -> serde_json::Value {
    details_value(&IncidentDetails::new(t, attempt, back_ms))
}

#[cfg(test)]
mod details_tests {
    use serde_json::json;

    use super::*;
    use crate::details::{CheckpointPlan, StartDetails};

    /// Each VM incident document is exactly the JSON the old `json!`
    /// literals built: a trigger's own keys only for its kind, unknown
    /// values `null`.
    #[test]
    fn vm_event_details_match_the_documented_json() {
        let hang = Trigger::Hang {
            silent: Duration::from_millis(4000),
            evidence: HostEvidence {
                qemu_cpu_ms: 3.5,
                qemu_scheduled: None,
                window_ms: 1000.0,
                vcpus: vec![(0, 0.5)],
                vcpu_run_ms: Some(2.0),
                vcpu_wait_ms: None,
                runnable_ms: None,
                status: Some("running".into()),
                qmp_unresponsive: false,
            },
            last_chance: false,
        };
        assert_eq!(
            trigger_details(&hang, 1, 5000),
            json!({
                "trigger": "hang", "attempt": 1, "rollback_before_ms": 5000, "silent_ms": 4000,
                "evidence": {
                    "qemu_cpu_ms": 3.5, "qemu_scheduled": null, "window_ms": 1000.0,
                    "vcpu_run_ms": 2.0, "vcpu_wait_ms": null, "runnable_ms": null,
                    "vcpu_busy": [{"cpu": 0, "share": 0.5}], "qmp_status": "running",
                    "qmp_unresponsive": false,
                },
            })
        );
        let guest = Trigger::Guest {
            class: Class::KernelStall,
            message: "cpu 1 stalled".into(),
        };
        assert_eq!(
            trigger_details(&guest, 0, 0),
            json!({"trigger": "guest_diagnosis", "attempt": 0, "rollback_before_ms": 0,
                   "class": "kernel_stall", "guest_message": "cpu 1 stalled"})
        );
        assert_eq!(
            trigger_details(&Trigger::Panic, 0, 10),
            json!({"trigger": "panic", "attempt": 0, "rollback_before_ms": 10})
        );
        let argv = vec!["qemu-system-x86_64".to_string()];
        assert_eq!(
            details_value(&StartDetails {
                pid: 9,
                command: argv.clone(),
                checkpoints: Some(CheckpointPlan {
                    interval_ms: 200,
                    keep: 8,
                    older_every_ms: 1000,
                    older_span_ms: 10_000,
                }),
            }),
            json!({"pid": 9, "command": ["qemu-system-x86_64"],
                   "checkpoints": {"interval_ms": 200, "keep": 8, "older_every_ms": 1000,
                                   "older_span_ms": 10_000}})
        );
        assert_eq!(
            details_value(&StartDetails {
                pid: 9,
                command: argv.clone(),
                checkpoints: None,
            }),
            json!({"pid": 9, "command": ["qemu-system-x86_64"], "checkpoints": null})
        );
        assert_eq!(
            details_value(&NoLinkDetails {
                port: "4444".into()
            }),
            json!({"port": "4444"})
        );
        assert_eq!(
            details_value(&LeftDetails {
                trigger: None,
                why: "x".into()
            }),
            json!({"trigger": null, "why": "x"})
        );
        assert_eq!(
            details_value(&NotHungDetails {
                silent_ms: 7,
                why: "y".into()
            }),
            json!({"silent_ms": 7, "why": "y"})
        );
        assert_eq!(
            details_value(&RecoveredDetails {
                outcome: Recovered::Recovered,
                trigger: "hang".into(),
                rollbacks: 2,
                detect_to_serving_ms: None,
            }),
            json!({"outcome": "recovered", "trigger": "hang", "rollbacks": 2,
                   "detect_to_serving_ms": null})
        );
    }
}
