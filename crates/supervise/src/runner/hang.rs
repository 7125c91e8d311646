//! Hang detection outcomes, evidence, recovery steps and stopping.

use std::time::Instant;

use selfheal_config::KillMode;
use selfheal_event::{details_value, EventKind, Severity};
use selfheal_sys::signal::signal_name;

use super::{Runner, StopCause, Stopping, KILL_WAIT};

/// Probe failures quoted in a hang event.
const PROBE_HISTORY: usize = 10;
use crate::app_action::{
    DryRunSignal, HookDetails, KillDetails, SignalDetails, StepDeclined, StepRecovered, StepResult,
};
use crate::app_hang::{
    ActAlone, AppHangEvidence, Confirmation, HangDetails, ProbeEvidence, ProbeFailure,
    ReadyTimeoutEvidence, SuspectedDetails, WatchdogEvidence,
};
use crate::child::SignalScope;
use crate::events::unix_us;
use crate::evidence::{run_hook, thread_stacks};
use crate::probe::ProbeOutcome;
use crate::progress::ProgressReport;
use crate::state::Phase;
use crate::steps::{StepContext, StepOutcome, Trouble};
use crate::HangDetector;

impl Runner {
    fn group_scope(&self) -> SignalScope {
        match self.s.app.kill_mode {
            KillMode::Group => SignalScope::Group,
            KillMode::Process => SignalScope::Process,
        }
    }

    /// Deadlines of the running program: stop grace, readiness, watchdog.
    pub(super) fn check_live_timers(&mut self, now: Instant) {
        let Some(l) = &self.live else { return };
        if let Some(s) = &l.stopping {
            if now >= s.deadline {
                self.stop_deadline_passed(now);
            }
            return;
        }
        if let Some(d) = l.ready_deadline {
            if now >= d {
                let timeout = self.s.app.notify.ready_timeout;
                let evidence = AppHangEvidence::ReadyTimeout(ReadyTimeoutEvidence {
                    ready_timeout_ms: timeout.get().as_millis() as u64,
                    deadline_unix_us: unix_us(d),
                    status: self.s.state.status().status,
                });
                // Never ready: no state of this run is known to be good.
                self.hang(
                    HangDetector::ReadyTimeout,
                    evidence,
                    None,
                    format!("did not send READY=1 within {timeout}"),
                    None,
                );
                return;
            }
        }
        if let (Some(base), Some(w)) = (l.watchdog_base, l.watchdog) {
            let deadline = base + w;
            if now >= deadline {
                let evidence = AppHangEvidence::Watchdog(WatchdogEvidence {
                    watchdog_ms: w.as_millis() as u64,
                    last_ping_unix_us: l.last_ping.map(unix_us),
                    deadline_unix_us: unix_us(deadline),
                    suspected: l.suspicions.keys().map(|k| (*k).into()).collect(),
                });
                let why = match l.last_ping {
                    Some(p) => format!("no WATCHDOG=1 for {:?} (limit {w:?})", now - p),
                    None => format!("no WATCHDOG=1 within {w:?} of becoming ready"),
                };
                let progress = l.watchdog_base;
                self.hang(HangDetector::Watchdog, evidence, None, why, progress);
            }
        }
    }

    /// A probe check finished for the current run.
    pub(super) fn probe_outcome(&mut self, o: ProbeOutcome) {
        let app = self.s.app.clone();
        let Some(l) = self.live.as_mut() else { return };
        if l.stopping.is_some() || o.probe >= app.probes.len() {
            return;
        }
        let cfg = &app.probes[o.probe];
        if o.ok {
            l.probe_last_ok[o.probe] = Some(o.started);
            l.probe_successes[o.probe] += 1;
            if l.probe_successes[o.probe] >= cfg.success_threshold {
                l.probe_failures[o.probe].clear();
                l.probe_failure_count[o.probe] = 0;
            }
            return;
        }
        self.s.state.probe_failed();
        l.probe_successes[o.probe] = 0;
        // The count can reach a large threshold; the evidence keeps the
        // most recent failures only.
        let recent = &mut l.probe_failures[o.probe];
        if recent.len() >= PROBE_HISTORY {
            recent.remove(0);
        }
        recent.push(o.clone());
        l.probe_failure_count[o.probe] += 1;
        let failures = l.probe_failure_count[o.probe];
        tracing::debug!(app = %app.name, probe = %cfg.name, failures, detail = %o.detail, "probe failed");
        let history: Vec<ProbeFailure> = l.probe_failures[o.probe]
            .iter()
            .map(|f| ProbeFailure {
                detail: f.detail.clone(),
                started_unix_us: unix_us(f.started),
                elapsed_ms: f.elapsed.as_secs_f64() * 1000.0,
            })
            .collect();
        let evidence = ProbeEvidence {
            probe: cfg.name.clone(),
            kind: cfg.check.kind().into(),
            target: match &cfg.check {
                selfheal_config::ProbeCheck::Exec { command } => command.join(" "),
                selfheal_config::ProbeCheck::Tcp { address } => address.clone(),
                selfheal_config::ProbeCheck::Http { url, .. } => url.clone(),
            },
            consecutive_failures: failures,
            failure_threshold: cfg.failure_threshold,
            period_ms: cfg.period.get().as_millis() as u64,
            timeout_ms: cfg.timeout.get().as_millis() as u64,
            failures: history,
            // When the failing check gave up: its start plus what it took.
            failed_at_unix_us: unix_us(o.started + o.elapsed),
        };
        if failures >= cfg.failure_threshold {
            let why = format!(
                "probe {} failed {failures} times in a row: {}",
                cfg.name, o.detail
            );
            let progress = l.probe_last_ok[o.probe];
            let evidence = AppHangEvidence::Probe(evidence);
            self.hang(HangDetector::Probe, evidence, None, why, progress);
            return;
        }
        // A failing probe confirms a suspicion held at the same time.
        let suspicion = l
            .suspicions
            .iter()
            .next()
            .map(|(k, v)| (*k, v.clone(), l.suspicion_since.get(k).copied()));
        if let Some((kind, ev, since)) = suspicion {
            let why = format!(
                "{} suspected and probe {} failed: {}",
                kind.as_str(),
                cfg.name,
                o.detail
            );
            self.hang(
                kind.into(),
                AppHangEvidence::Suspicion(ev),
                Some(Confirmation::ProbeFailed { probe: evidence }),
                why,
                since,
            );
        }
    }

    /// The no-progress sampler found or cleared a suspicion.
    pub(super) fn progress_report(&mut self, r: ProgressReport) {
        let act_alone = self.s.app.progress.act_alone;
        let Some(l) = self.live.as_mut() else { return };
        if l.stopping.is_some() {
            return;
        }
        match r {
            ProgressReport::Suspected {
                kind,
                evidence,
                since,
            } => {
                l.suspicions.insert(kind, evidence.clone());
                l.suspicion_since.insert(kind, since);
                let probe_failing = l
                    .probe_failures
                    .iter()
                    .enumerate()
                    .find(|(_, f)| !f.is_empty())
                    .map(|(i, f)| (i, f.last().map(|o| o.detail.clone()).unwrap_or_default()));
                self.s.state.suspect(kind.into(), true);
                let what = match kind {
                    crate::progress::SuspicionKind::Spin => {
                        "an infinite loop (a thread spins on CPU without system calls)"
                    }
                    crate::progress::SuspicionKind::Deadlock => {
                        "a deadlock (every thread blocked, no CPU time)"
                    }
                };
                let confirmed = act_alone || probe_failing.is_some();
                self.emit(
                    EventKind::AppHang,
                    Severity::Warning,
                    format!(
                        "{} suspected of {what}{}",
                        self.name(),
                        if confirmed {
                            ""
                        } else {
                            "; not acting without confirmation"
                        }
                    ),
                    details_value(&SuspectedDetails {
                        detector: kind.into(),
                        suspected: true,
                        evidence: &evidence,
                    }),
                );
                if act_alone {
                    let why = format!("{} suspected and act_alone is set", kind.as_str());
                    self.hang(
                        kind.into(),
                        AppHangEvidence::Suspicion(evidence),
                        Some(Confirmation::Alone(ActAlone::ActAlone)),
                        why,
                        Some(since),
                    );
                } else if let Some((i, detail)) = probe_failing {
                    let name = self.s.app.probes[i].name.clone();
                    let why = format!(
                        "{} suspected and probe {name} is failing: {detail}",
                        kind.as_str()
                    );
                    self.hang(
                        kind.into(),
                        AppHangEvidence::Suspicion(evidence),
                        Some(Confirmation::ProbeFailing {
                            probe: name,
                            detail,
                        }),
                        why,
                        Some(since),
                    );
                }
            }
            ProgressReport::Cleared { kind } => {
                l.suspicions.remove(&kind);
                l.suspicion_since.remove(&kind);
                self.s.state.suspect(kind.into(), false);
                tracing::info!(app = %self.name(), heuristic = kind.as_str(), "no-progress suspicion cleared");
            }
        }
    }

    /// A detector says the program hangs: report with evidence, run the
    /// hook and the recovery steps, and stop it unless a step recovered it.
    /// `last_progress`: when the detector last saw the program make
    /// progress (for a rollback to before it), if ever.
    pub(super) fn hang(
        &mut self,
        detector: HangDetector,
        evidence: AppHangEvidence,
        confirmed_by: Option<Confirmation>,
        why: String,
        last_progress: Option<Instant>,
    ) {
        let Some(l) = &self.live else { return };
        if l.stopping.is_some() {
            return;
        }
        let pid = l.pid;
        let detected = Instant::now();
        self.s.state.hang(detector);
        let stacks = self
            .s
            .app
            .hook
            .thread_stacks
            .then(|| thread_stacks(&self.s.proc_root, pid));
        self.emit(
            EventKind::AppHang,
            Severity::Critical,
            format!("{} (pid {pid}) is hung: {why}", self.name()),
            details_value(&HangDetails {
                detector,
                suspected: false,
                confirmed_by: confirmed_by.as_ref(),
                evidence: &evidence,
                detected_unix_us: unix_us(detected),
                thread_stacks: stacks.as_ref(),
            }),
        );
        if let Some(out) = run_hook(&self.s.app.hook, self.name(), pid, detector.as_str()) {
            self.emit(
                EventKind::AppAction,
                Severity::Info,
                format!("ran the hook for {} before acting", self.name()),
                details_value(&HookDetails {
                    action: "hook".into(),
                    result: out,
                }),
            );
        }
        let trouble = Trouble::Hang { detector, evidence };
        let mut steps = std::mem::take(&mut self.s.steps);
        let mut recovered = None;
        for step in steps.iter_mut() {
            let Some(l) = self.live.as_mut() else { break };
            let mut ctx = StepContext {
                app: &self.s.app,
                child: l.handle.as_mut(),
                trouble: &trouble,
                last_progress,
            };
            match step.attempt(&mut ctx) {
                StepOutcome::Recovered { detail } => {
                    recovered = Some((step.name().to_string(), detail));
                    break;
                }
                StepOutcome::Declined { reason } => {
                    let name = step.name().to_string();
                    self.emit(
                        EventKind::AppAction,
                        Severity::Info,
                        format!(
                            "recovery step {name} declined for {}: {reason}",
                            self.name()
                        ),
                        details_value(&StepDeclined {
                            action: name,
                            outcome: StepResult::Declined,
                            reason,
                        }),
                    );
                }
            }
        }
        self.s.steps = steps;
        if let Some((name, detail)) = recovered {
            self.emit(
                EventKind::AppAction,
                Severity::Warning,
                format!(
                    "recovery step {name} recovered {} without a restart",
                    self.name()
                ),
                details_value(&StepRecovered {
                    action: name,
                    outcome: StepResult::Recovered,
                    detail,
                }),
            );
            self.rearm_detectors();
            return;
        }
        if self.s.dry_run {
            let signal = signal_name(self.s.stop_signal);
            self.emit(
                EventKind::AppAction,
                Severity::Info,
                format!(
                    "dry run: would send {signal} to {} and restart it",
                    self.name()
                ),
                details_value(&DryRunSignal {
                    action: "signal".into(),
                    signal,
                    dry_run: true,
                }),
            );
            self.rearm_detectors();
            return;
        }
        self.begin_stop(StopCause::Hang(detector), None);
    }

    /// After a hang was handled without a restart (a recovery step, or a
    /// dry run), every detector starts over as if the program had just
    /// become ready.
    fn rearm_detectors(&mut self) {
        let now = Instant::now();
        if let Some(l) = self.live.as_mut() {
            l.ready_deadline = None;
            l.watchdog_base = Some(now);
            l.suspicions.clear();
            l.suspicion_since.clear();
            l.probe_failures.iter_mut().for_each(Vec::clear);
            l.probe_failure_count.iter_mut().for_each(|c| *c = 0);
        }
    }

    /// Shutdown (`signal` None: the stop signal) or a forwarded terminating
    /// signal: stop without restarting.
    pub(super) fn request_stop(&mut self, signal: Option<i32>) {
        self.shutting_down = true;
        let Some(l) = &self.live else {
            if self.finished.is_none() {
                self.finish("stopped on request", None, false);
            }
            return;
        };
        match &l.stopping {
            Some(s) if s.signalled => {
                // Already stopping: pass a repeated Ctrl-C on.
                if let Some(sig) = signal {
                    let _ = l.handle.signal(sig, self.group_scope());
                }
                if let Some(st) = self.live.as_mut().and_then(|l| l.stopping.as_mut()) {
                    st.cause = StopCause::Requested;
                }
            }
            _ => self.begin_stop(StopCause::Requested, signal),
        }
    }

    /// Sends the stop signal (or `signal`) and starts the grace period.
    pub(super) fn begin_stop(&mut self, cause: StopCause, signal: Option<i32>) {
        let sig = signal.unwrap_or(self.s.stop_signal);
        let scope = self.group_scope();
        let grace = self.s.app.stop_grace;
        let Some(l) = self.live.as_mut() else { return };
        let sent = l.handle.signal(sig, scope);
        // A program stopped by job control acts on the stop signal only
        // once continued: SIGCONT follows (as systemd does), so it gets to
        // exit in the grace period instead of waiting out the grace.
        let stops = [
            libc::SIGSTOP,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGCONT,
            libc::SIGKILL,
        ];
        if sent.is_ok() && !stops.contains(&sig) {
            let _ = l.handle.signal(libc::SIGCONT, scope);
        }
        let deadline = Instant::now() + grace.get();
        l.stopping = Some(Stopping {
            cause: cause.clone(),
            deadline,
            signalled: true,
            killed: false,
        });
        self.s.state.set_phase(Phase::Stopping);
        let reason = match &cause {
            StopCause::Hang(d) => format!("hang ({d})"),
            StopCause::Requested => "requested".into(),
            StopCause::AppStopping => "did not exit after STOPPING=1".into(),
        };
        self.emit(
            EventKind::AppAction,
            Severity::Warning,
            format!(
                "sent {} to {} ({reason}); SIGKILL follows in {grace}",
                signal_name(sig),
                self.name()
            ),
            details_value(&SignalDetails {
                action: "signal".into(),
                signal: signal_name(sig),
                scope: stored_scope(scope),
                reason,
                grace_ms: grace.get().as_millis() as u64,
                error: sent.err().map(|e| e.to_string()),
            }),
        );
    }

    /// The program sent STOPPING=1: give it the grace period to exit.
    pub(super) fn app_stopping(&mut self) {
        let grace = self.s.app.stop_grace.get();
        let Some(l) = self.live.as_mut() else { return };
        if l.stopping.is_none() {
            l.stopping = Some(Stopping {
                cause: StopCause::AppStopping,
                deadline: Instant::now() + grace,
                signalled: false,
                killed: false,
            });
            self.s.state.set_phase(Phase::Stopping);
        }
    }

    fn stop_deadline_passed(&mut self, now: Instant) {
        let scope = self.group_scope();
        let Some(l) = self.live.as_mut() else { return };
        let Some(st) = l.stopping.as_mut() else {
            return;
        };
        if !st.signalled {
            // STOPPING=1 was sent but the program is still here.
            let cause = st.cause.clone();
            self.begin_stop(cause, None);
            return;
        }
        if !st.killed {
            st.killed = true;
            st.deadline = now + KILL_WAIT;
            let res = l.handle.signal(libc::SIGKILL, scope);
            let grace = self.s.app.stop_grace;
            self.emit(
                EventKind::AppAction,
                Severity::Warning,
                format!("{} did not stop within {grace}; sent SIGKILL", self.name()),
                details_value(&KillDetails {
                    action: "kill".into(),
                    signal: "SIGKILL".into(),
                    scope: stored_scope(scope),
                    error: res.err().map(|e| e.to_string()),
                }),
            );
            return;
        }
        st.deadline = now + KILL_WAIT;
        let pid = l.pid;
        if !self.warned_kill {
            self.warned_kill = true;
            tracing::error!(app = %self.name(), pid, "the program survives SIGKILL (uninterruptible sleep?); still waiting for it to end");
        }
    }
}

/// A signal's reach as events store it (`group` or `process`).
fn stored_scope(scope: SignalScope) -> KillMode {
    if scope == SignalScope::Group {
        KillMode::Group
    } else {
        KillMode::Process
    }
}
