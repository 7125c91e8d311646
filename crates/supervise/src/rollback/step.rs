//! The hang recovery step: roll the program back to a checkpoint taken
//! before its last sign of progress.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use selfheal_event::details_value;

use super::details::HangRolledBack;
use super::{AppCheckpoint, HangReply};
use crate::steps::{RecoveryStep, StepContext, StepOutcome, Trouble};

/// How long the step waits for the engine (stopping every thread may take
/// up to 5 s when one is in uninterruptible sleep).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Rolls a hung program back in place ([`StepOutcome::Recovered`]), or
/// declines (no checkpoint old enough, state that cannot be restored, no
/// progress ever seen) so the supervisor stops and restarts it.
#[derive(Debug)]
pub struct RollbackStep {
    ck: Arc<AppCheckpoint>,
}

impl RollbackStep {
    /// The step for the app `ck` describes.
    pub fn new(ck: Arc<AppCheckpoint>) -> RollbackStep {
        RollbackStep { ck }
    }
}

fn declined(reason: impl Into<String>) -> StepOutcome {
    StepOutcome::Declined {
        reason: reason.into(),
    }
}

impl RecoveryStep for RollbackStep {
    fn name(&self) -> &str {
        "rollback"
    }

    fn attempt(&mut self, ctx: &mut StepContext<'_>) -> StepOutcome {
        let detector = match ctx.trouble {
            Trouble::Hang { detector, .. } => *detector,
            Trouble::Exit(_) => return declined("the program has ended"),
        };
        let Some(run) = self.ck.current() else {
            return declined("this run has no checkpoints (see the checkpoint event at its start)");
        };
        if run.pid != ctx.child.pid() {
            return declined("this run has no checkpoints (see the checkpoint event at its start)");
        }
        // A rollback to before the last sign of progress: the checkpoints
        // after it may hold the hung state already.
        let Some(since) = ctx.last_progress else {
            return declined(format!(
                "the {detector} detector never saw the program make progress, so no checkpoint is known to be good"
            ));
        };
        if self.ck.dry_run {
            return declined(format!(
                "dry run: would roll back to a checkpoint from before {} ms ago",
                since.elapsed().as_millis()
            ));
        }
        match run.request_rollback(since).recv_timeout(ANSWER_WITHIN) {
            Ok(HangReply::Done(r)) => StepOutcome::Recovered {
                detail: details_value(&HangRolledBack {
                    checkpoint_id: r.checkpoint_id,
                    checkpoint_age_ms: r.checkpoint_age_ms,
                    last_progress_ms_ago: since.elapsed().as_millis() as u64,
                    depth: r.depth,
                    pages_restored: r.pages_restored,
                    duration_us: r.duration_us,
                }),
            },
            Ok(HangReply::Refused(why)) => declined(why),
            Err(RecvTimeoutError::Timeout) => declined(format!(
                "the checkpoint engine did not answer within {ANSWER_WITHIN:?}"
            )),
            Err(RecvTimeoutError::Disconnected) => declined("the checkpoint engine has ended"),
        }
    }
}
