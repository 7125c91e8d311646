//! Acting on what stuck tasks wait for instead of on them: aborting a dead
//! FUSE connection. The waiters are never signalled (a task in D cannot
//! die until it wakes, and then a kill destroys its work); aborting makes
//! their requests fail, so they wake and handle the error themselves.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use selfheal_config::Action;

use super::{Blocker, Incident, Ladder, Outcome, StepRecord};
use crate::evidence::{Recheck, Refusal, SymptomProbe};
use crate::ops::OpsError;

impl Ladder {
    /// The `abort_fuse` step: re-checks the connection (same mount, requests
    /// still waiting) and the symptom just before aborting it.
    pub(super) fn abort_fuse(
        &mut self,
        incident: &Incident,
        lineage: &HashSet<i32>,
        probe: &mut dyn SymptomProbe,
    ) -> StepRecord {
        let action = Action::AbortFuse;
        let record = |outcome, reason: String| StepRecord::new(action, outcome, reason);
        let Some(Blocker::FuseConnection {
            connection,
            mount_id,
            mount_point,
        }) = &incident.blocker
        else {
            return record(
                Outcome::Skipped,
                "the stuck tasks do not wait on a FUSE connection".into(),
            );
        };
        let (connection, what) = (
            *connection,
            format!("FUSE connection {connection} ({})", mount_point.display()),
        );
        let ops = self.ops.as_ref();
        // The connection belongs to its server: recovery must be allowed to
        // touch that process.
        match &incident.target {
            Some(t) => match self.policy.check_pid(ops, t.pid, lineage) {
                Ok(Some(why)) => {
                    return StepRecord::refused(action, Refusal::Protected, format!("its server: {why}"))
                }
                Ok(None) | Err(OpsError::Gone) => {}
                Err(e) => return record(Outcome::Failed, e.to_string()),
            },
            None if !self.options.config.allowed_cgroups.is_empty() => {
                return StepRecord::refused(
                    action,
                    Refusal::Protected,
                    format!(
                        "the server of {what} is unknown, so whether it is inside recovery.allowed_cgroups cannot be told"
                    ),
                )
            }
            None => {}
        }
        // Re-check just before acting: the same mount, requests waiting…
        let now = match ops.fuse_connection(connection) {
            Ok(c) => c,
            Err(e) => return record(Outcome::Failed, e.to_string()),
        };
        if !now.mount_ids.contains(mount_id) {
            return StepRecord::refused(
                action,
                Refusal::IdentityChanged,
                format!("{what} no longer serves mount {mount_id} (unmounted, or the number was reused)"),
            );
        }
        if now.waiting == Some(0) {
            return StepRecord::refused(
                action,
                Refusal::SymptomGone,
                format!("stale evidence: no request is waiting on {what}"),
            );
        }
        // …and the tasks still stuck.
        let recheck = match probe.recheck() {
            Recheck::Present(m) => m,
            Recheck::Cleared(m) => {
                return StepRecord::refused(
                    action,
                    Refusal::SymptomGone,
                    format!("stale evidence: the symptom is gone ({m})"),
                )
            }
            Recheck::Unverifiable => {
                return StepRecord::refused(
                    action,
                    Refusal::Unverifiable,
                    format!(
                        "weak evidence: the {} symptom cannot be measured again before acting",
                        incident.evidence.symptom
                    ),
                )
            }
        };
        let with_recheck = |rec: StepRecord| StepRecord {
            recheck: Some(recheck.clone()),
            ..rec
        };
        let waiting = now
            .waiting
            .map_or(String::new(), |w| format!(" ({w} requests waiting)"));
        if self.options.dry_run {
            return with_recheck(record(
                Outcome::DryRun,
                format!("would abort {what}{waiting}: its requests fail, the waiters wake"),
            ));
        }
        if !self.rate.take(Instant::now()) {
            return with_recheck(record(
                Outcome::RateLimited,
                format!(
                    "recovery.max_actions_per_minute = {} reached",
                    self.options.config.max_actions_per_minute
                ),
            ));
        }
        let t0 = Instant::now();
        let done = self.ops.abort_fuse(connection);
        let act_time = t0.elapsed();
        if let Err(e) = done {
            return StepRecord {
                act_time,
                ..with_recheck(record(Outcome::Failed, format!("aborting {what}: {e}")))
            };
        }
        let (ok, verify_time) = self.wait_cleared(probe);
        let reason = if ok {
            format!(
                "aborted {what}{waiting}; the waiters woke {} ms later",
                verify_time.as_millis()
            )
        } else {
            format!(
                "aborted {what}{waiting}; the tasks were still stuck after {} ms",
                verify_time.as_millis()
            )
        };
        let outcome = if ok {
            Outcome::Recovered
        } else {
            Outcome::NotCleared
        };
        StepRecord {
            act_time,
            verify_time,
            ..with_recheck(record(outcome, reason))
        }
    }

    /// Polls the probe until the symptom clears or `verify_timeout` passes.
    fn wait_cleared(&self, probe: &mut dyn SymptomProbe) -> (bool, Duration) {
        let v0 = Instant::now();
        let timeout = self.options.config.verify_timeout.get();
        loop {
            if probe.cleared() {
                return (true, v0.elapsed());
            }
            if v0.elapsed() >= timeout {
                return (false, v0.elapsed());
            }
            std::thread::sleep(self.options.poll);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use selfheal_config::{HumanDuration, RecoveryConfig};
    use selfheal_event::{Class, Culprit, MemorySink};

    use super::*;
    use crate::fake::{Call, FakeSystem};
    use crate::ladder::{LadderOptions, Target};
    use crate::ops::ProcInfo;

    fn server() -> ProcInfo {
        ProcInfo {
            pid: 70,
            ppid: 1,
            comm: "sshfs".into(),
            starttime: 7000,
            uid: Some(1000),
            kernel_thread: false,
            cgroups: vec!["/user.slice/sshfs".into()],
            unit: None,
            pgid: 70,
            sid: 70,
            state: 'S',
        }
    }

    fn stuck_on_fuse(target: Option<Target>) -> Incident {
        Incident {
            class: Class::DState,
            culprit: Culprit {
                pid: Some(70),
                comm: Some("sshfs".into()),
                ..Culprit::default()
            },
            target,
            evidence: crate::evidence::Evidence::now("stuck_in_d", "test: stuck on FUSE"),
            blocker: Some(Blocker::FuseConnection {
                connection: 40,
                mount_id: 45,
                mount_point: "/mnt/remote".into(),
            }),
        }
    }

    fn ladder(f: &Arc<FakeSystem>, allowed: &[&str], dry_run: bool) -> Ladder {
        let config = RecoveryConfig {
            verify_timeout: HumanDuration::from_millis(60),
            allowed_cgroups: allowed.iter().map(|s| s.to_string()).collect(),
            ..RecoveryConfig::default()
        };
        Ladder::new(Box::new(f.clone()), LadderOptions::new(config, dry_run))
    }

    fn system() -> Arc<FakeSystem> {
        let f = Arc::new(FakeSystem::new(500));
        f.add(server());
        f.add_fuse(40, 45, 2);
        f
    }

    #[test]
    fn the_default_d_state_ladder_aborts_the_connection_and_signals_nobody() {
        let f = system();
        let mut l = ladder(&f, &[], false);
        let aborted = Arc::new(AtomicBool::new(false));
        let fake = f.clone();
        let woke = aborted.clone();
        let mut cleared = move || {
            woke.store(fake.fuse_aborted(40), Ordering::Relaxed);
            fake.fuse_aborted(40)
        };
        let sink = MemorySink::new();
        let r = l.run(
            &stuck_on_fuse(Some(Target::tree(70, 7000))),
            &mut cleared,
            &sink,
        );
        let steps: Vec<_> = r
            .steps
            .iter()
            .map(|s| (s.action.as_str(), s.outcome.as_str()))
            .collect();
        assert_eq!(
            steps,
            vec![("record", "recorded"), ("abort_fuse", "recovered")]
        );
        assert!(aborted.load(Ordering::Relaxed));
        // Nothing but the abort: no process was signalled.
        assert_eq!(f.calls(), vec![Call::AbortFuse(40)]);
        assert!(
            r.steps[1].reason.contains("2 requests waiting"),
            "{}",
            r.steps[1].reason
        );
    }

    #[test]
    fn a_reused_connection_number_or_an_answered_request_is_left_alone() {
        // Mount 45 is gone; connection 40 now serves mount 99.
        let f = Arc::new(FakeSystem::new(500));
        f.add(server());
        f.add_fuse(40, 99, 1);
        let mut l = ladder(&f, &[], false);
        let r = l.run(
            &stuck_on_fuse(Some(Target::tree(70, 7000))),
            &mut || false,
            &MemorySink::new(),
        );
        assert_eq!(r.steps[1].outcome, Outcome::Refused);
        assert_eq!(r.steps[1].refusal, Some(Refusal::IdentityChanged));
        assert!(r.steps[1].reason.contains("no longer serves mount 45"));
        // Nothing waits any more.
        let f = Arc::new(FakeSystem::new(500));
        f.add_fuse(40, 45, 0);
        let mut l = ladder(&f, &[], false);
        let r = l.run(&stuck_on_fuse(None), &mut || false, &MemorySink::new());
        assert_eq!(r.steps[1].refusal, Some(Refusal::SymptomGone));
        assert!(f.calls().iter().all(|c| !matches!(c, Call::AbortFuse(_))));
    }

    #[test]
    fn scope_and_dry_run_are_respected() {
        // Its server is outside the allowed cgroups: refused.
        let f = system();
        let mut l = ladder(&f, &["/selfheal-sandbox"], false);
        let r = l.run(
            &stuck_on_fuse(Some(Target::tree(70, 7000))),
            &mut || false,
            &MemorySink::new(),
        );
        assert_eq!(r.steps[1].outcome, Outcome::Refused, "{:?}", r.steps[1]);
        // Unknown server with a scope set: refused too.
        let r = l.run(&stuck_on_fuse(None), &mut || false, &MemorySink::new());
        assert_eq!(r.steps[1].outcome, Outcome::Refused);
        // Dry run: the plan, nothing done.
        let mut l = ladder(&f, &[], true);
        let r = l.run(
            &stuck_on_fuse(Some(Target::tree(70, 7000))),
            &mut || false,
            &MemorySink::new(),
        );
        assert_eq!(r.steps[1].outcome, Outcome::DryRun);
        assert!(r.steps[1].reason.contains("would abort FUSE connection 40"));
        assert!(f.calls().is_empty());
    }
}
