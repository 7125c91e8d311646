//! The `reboot` step: the controlled restart, the last rung.
//!
//! Refused unless `recovery.allow_reboot`; refused when a restart would not
//! fix the fault (the diagnosis says so, or a process that accounts for it
//! is alive); refused past `max_restarts` within the window, counted across
//! boots. Otherwise it waits out the class's grace while polling the
//! symptom (cleared: recovered, no restart), measures the symptom once more
//! (gone: stale evidence; unmeasurable: weak evidence), writes the record
//! durably (state dir, history, pstore, EFI), announces the restart as an
//! event and flushes the event store, syncs filesystems with a deadline,
//! then tries each restart method in turn.

use std::time::{Duration, Instant, SystemTime};

use selfheal_config::{Action, RestartMethod};
use selfheal_event::{unix_ms, Class, EventSink};

use super::{Incident, Ladder, Outcome, StepRecord};
use crate::evidence::{Recheck, Refusal, SymptomProbe};
use crate::restart::{boot_id, RestartRecord};

impl Ladder {
    /// Runs the `reboot` step. Returns the step and whether its event was
    /// already emitted (the `restarting` event goes out before the machine
    /// goes down).
    pub(super) fn restart_step(
        &mut self,
        inc: &Incident,
        probe: &mut dyn SymptomProbe,
        sink: &dyn EventSink,
        (i, n): (usize, usize),
    ) -> (StepRecord, bool) {
        let action = Action::Reboot;
        let record = |outcome, reason: String| StepRecord::new(action, outcome, reason);
        let refused = |r, reason: String| (StepRecord::refused(action, r, reason), false);
        let rc = &self.options.config;
        if !rc.enabled {
            return (
                record(Outcome::Skipped, "recovery.enabled = false".into()),
                false,
            );
        }
        if !rc.allow_reboot {
            return refused(
                Refusal::RebootNotAllowed,
                "a controlled restart needs recovery.allow_reboot = true".into(),
            );
        }
        if let Some(why) = &inc.evidence.restart_veto {
            return refused(Refusal::RestartNotWarranted, why.clone());
        }
        if let Some(why) = self.process_to_blame(inc) {
            return refused(Refusal::RestartNotWarranted, why);
        }
        let cfg = rc.restart.clone();
        let recent = self
            .restart_store
            .restarts_within(cfg.window.get(), SystemTime::now());
        if recent.len() >= cfg.max_restarts as usize {
            return refused(
                Refusal::RestartLimit,
                format!(
                    "{} restart(s) within recovery.restart.window = {} (max_restarts = {}): \
                     the restart loop stops here; the fault needs a person",
                    recent.len(),
                    cfg.window,
                    cfg.max_restarts
                ),
            );
        }
        let grace = cfg.grace.for_class(inc.class);
        // A stalled CPU's interrupt count, before the grace and after: one
        // that stands still has interrupts off.
        let stalled_cpu = (inc.class == Class::KernelStall)
            .then_some(inc.culprit.cpu)
            .flatten();
        let irqs_before = stalled_cpu
            .and_then(|c| self.ops.cpu_interrupts(c))
            .map(|n| (n, Instant::now()));
        let mut deaf_early = None;
        if !self.options.dry_run {
            let until = inc.evidence.measured_instant + grace;
            let mut next_deaf_look = inc.evidence.measured_instant + cfg.irqs_off_grace.get();
            while Instant::now() < until {
                // A CPU deaf to interrupts does not wait out the grace:
                // the other CPUs follow it at their next cross-CPU call.
                let now = Instant::now();
                if now >= next_deaf_look {
                    next_deaf_look = now + Duration::from_millis(250);
                    if let Some(cpu) = deaf_cpu(self.ops.as_ref(), stalled_cpu, irqs_before) {
                        deaf_early = Some(cpu);
                        break;
                    }
                }
                if probe.cleared() {
                    return (
                        record(
                            Outcome::Recovered,
                            format!(
                                "the symptom cleared within the restart grace ({})",
                                humantime::format_duration(grace)
                            ),
                        ),
                        false,
                    );
                }
                std::thread::sleep(self.options.poll.max(Duration::from_millis(20)));
            }
        }
        let recheck = match probe.recheck() {
            Recheck::Present(m) => m,
            Recheck::Cleared(m) => {
                return refused(
                    Refusal::SymptomGone,
                    format!("stale evidence: the symptom is gone ({m})"),
                )
            }
            Recheck::Unverifiable => {
                return refused(
                    Refusal::Unverifiable,
                    format!(
                        "weak evidence: the {} symptom cannot be measured again before a restart",
                        inc.evidence.symptom
                    ),
                )
            }
        };
        let methods: Vec<&str> = cfg.methods.iter().map(|m| m.as_str()).collect();
        if self.options.dry_run {
            let mut rec = record(
                Outcome::DryRun,
                format!(
                    "would restart the machine once the symptom persisted {} ({})",
                    humantime::format_duration(grace),
                    methods.join(", then ")
                ),
            );
            rec.recheck = Some(recheck);
            return (rec, false);
        }
        if !self.rate.take(Instant::now()) {
            let mut rec = record(
                Outcome::RateLimited,
                format!(
                    "recovery.max_actions_per_minute = {} reached",
                    rc.max_actions_per_minute
                ),
            );
            rec.recheck = Some(recheck);
            return (rec, false);
        }

        // The evidence, durably, before anything else.
        let boot = boot_id(std::path::Path::new("/proc"));
        let now = unix_ms(SystemTime::now());
        let id = format!("{}-{now}", boot.get(..8).unwrap_or("boot"));
        let rec = RestartRecord {
            incident_id: id.clone(),
            class: inc.class,
            culprit: inc.culprit.clone(),
            symptom: inc.evidence.symptom.to_string(),
            measurement: inc.evidence.measurement.clone(),
            recheck: recheck.clone(),
            diagnosed_unix_ms: unix_ms(inc.evidence.measured_at),
            requested_unix_ms: now,
            boot_id: boot,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            selfheal_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let t0 = Instant::now();
        let written = match self.restart_store.write(&rec, cfg.pstore, cfg.efi) {
            Ok(w) => w,
            Err(e) => {
                let mut r = record(Outcome::Failed, e.to_string());
                r.recheck = Some(recheck);
                return (r, false);
            }
        };
        let files: Vec<String> = written
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let mut step = record(
            Outcome::Restarting,
            format!(
                "symptom persisted {}; restarting ({}); evidence in {}{}",
                match deaf_early {
                    Some(cpu) => format!(
                        "{} with CPU {cpu} taking no interrupts (recovery.restart.irqs_off_grace; \
                         the class's grace is {})",
                        humantime::format_duration(cfg.irqs_off_grace.get()),
                        humantime::format_duration(grace)
                    ),
                    None => humantime::format_duration(grace).to_string(),
                },
                methods.join(", then "),
                files.join(", "),
                if written.notes.is_empty() {
                    String::new()
                } else {
                    format!(" (not written: {})", written.notes.join("; "))
                }
            ),
        );
        step.recheck = Some(recheck);
        step.incident_id = Some(id);
        step.act_time = t0.elapsed();
        // The announcement must reach the store before the machine goes.
        self.emit(sink, inc, &step, i, n);
        let flushed = sink.flush(cfg.flush_timeout.get());
        let synced = self.ops.sync_filesystems(cfg.sync_timeout.get());
        tracing::warn!(
            "controlled restart: event store {}, filesystems {}",
            if flushed {
                "flushed"
            } else {
                "NOT flushed in time"
            },
            if synced {
                "synced"
            } else {
                "NOT synced in time"
            }
        );
        let mut failures = Vec::new();
        let deaf = deaf_cpu(self.ops.as_ref(), stalled_cpu, irqs_before);
        let mut emergency_tried = false;
        for &m in &cfg.methods {
            if let (Some(cpu), RestartMethod::Kexec | RestartMethod::Reboot) = (deaf, m) {
                // reboot(2), kexec included, runs the reboot notifiers, and
                // one of them (perf_reboot) waits for every CPU to answer a
                // cross-CPU call: this one never will (the hang lab's
                // irq_loop hung there). The emergency restart skips them.
                if emergency_tried {
                    continue;
                }
                emergency_tried = true;
                tracing::warn!(
                    "controlled restart: CPU {cpu} takes no interrupts; reboot(2) would wait for it forever: emergency restart"
                );
                match self.ops.emergency_restart() {
                    Ok(()) => return (step, true),
                    Err(e) => failures.push(format!(
                        "{}: CPU {cpu} takes no interrupts, so reboot(2) would hang; the emergency restart failed: {e}",
                        m.as_str()
                    )),
                }
                continue;
            }
            if m == RestartMethod::Kexec && !self.ops.kexec_loaded() {
                failures.push("kexec: no kernel loaded".to_string());
                continue;
            }
            match self.ops.restart(m) {
                // Only a fake returns: the machine is going down.
                Ok(()) => return (step, true),
                Err(e) => {
                    tracing::error!("restart by {} failed: {e}", m.as_str());
                    failures.push(format!("{}: {e}", m.as_str()));
                }
            }
        }
        step.outcome = Outcome::Failed;
        step.reason = format!(
            "every restart method failed ({}); the record stays in {}",
            failures.join("; "),
            self.restart_store.dir().display()
        );
        step.act_time = t0.elapsed();
        (step, false)
    }

    /// Why a process, not the machine, is to blame: the classes whose
    /// culprit causes the fault (memory, fork bomb, real-time hog) while
    /// that process is still alive (recovery acts on it; a restart for one
    /// process would take everything else down with it).
    fn process_to_blame(&self, inc: &Incident) -> Option<String> {
        if !matches!(
            inc.class,
            Class::MemoryExhaustion | Class::ForkBomb | Class::RtHog
        ) {
            return None;
        }
        let t = inc.target.as_ref()?;
        let p = self.ops.process(t.pid).ok().flatten()?;
        (p.starttime == t.starttime && !p.kernel_thread && !crate::target::is_dead(&p)).then(|| {
            format!(
                "{} (pid {}) is to blame and alive: recovery acts on it, never restarts the machine for one process",
                p.comm, p.pid
            )
        })
    }
}

/// The stalled CPU, if its interrupt count stood still from `before`
/// (taken as the grace began) to now, over at least 200 ms: a busy CPU
/// takes hundreds of timer interrupts a second unless interrupts are off.
fn deaf_cpu(
    ops: &dyn crate::ops::SystemOps,
    cpu: Option<u32>,
    before: Option<(u64, Instant)>,
) -> Option<u32> {
    let (cpu, (n0, t0)) = (cpu?, before?);
    if t0.elapsed() < Duration::from_millis(200) {
        return None;
    }
    (ops.cpu_interrupts(cpu)? == n0).then_some(cpu)
}
