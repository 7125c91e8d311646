//! Recovery as a chain of pluggable steps.
//!
//! When a program hangs, the supervisor captures evidence, then runs the
//! app's [`RecoveryStep`]s in order. A step may bring the program back
//! without a restart (the μCheckpoint engine rolls it back in place) and
//! end the chain, or decline and let the next one try. When none
//! recovers it, the built-in last resort runs: the stop signal, the grace
//! period, SIGKILL, then a restart as the policy and backoff allow.

use std::time::Instant;

use serde_json::Value;

use selfheal_config::AppConfig;

use crate::app_hang::AppHangEvidence;
use crate::child::{ChildHandle, ExitStatus};
use crate::HangDetector;

/// What went wrong.
#[derive(Debug, Clone)]
pub enum Trouble {
    /// The program is hung; it is still running.
    Hang {
        /// The detector.
        detector: HangDetector,
        /// What the detector saw.
        evidence: AppHangEvidence,
    },
    /// The program ended on its own (it can no longer be recovered in
    /// place; steps see this for information).
    Exit(ExitStatus),
}

/// What a step achieved.
#[derive(Debug, Clone)]
pub enum StepOutcome {
    /// The program runs healthily again; no restart. `detail` goes into
    /// the action event.
    Recovered {
        /// What was done.
        detail: Value,
    },
    /// The step did not apply or could not help; the next step runs.
    Declined {
        /// Why, for the action event.
        reason: String,
    },
}

/// What a step gets to work with.
pub struct StepContext<'a> {
    /// The app's configuration.
    pub app: &'a AppConfig,
    /// The program.
    pub child: &'a mut dyn ChildHandle,
    /// What went wrong.
    pub trouble: &'a Trouble,
    /// When the detector last saw the program make progress (its last
    /// `WATCHDOG=1`, the start of its last successful probe check, the
    /// start of a spin or deadlock); `None` when it never did (a missed
    /// `READY=1`). A rollback goes to a checkpoint from before this.
    pub last_progress: Option<Instant>,
}

/// One way of recovering a program short of restarting it.
pub trait RecoveryStep: Send {
    /// A short name for events (`rollback`).
    fn name(&self) -> &str;
    /// Tries to recover. Runs on the app's supervision thread, so it
    /// should finish within a few seconds.
    fn attempt(&mut self, ctx: &mut StepContext<'_>) -> StepOutcome;
}

/// Builds the steps for an app (called once per app at start).
pub type StepFactory = dyn Fn(&AppConfig) -> Vec<Box<dyn RecoveryStep>> + Send + Sync;

/// The default factory: no steps, so a hang goes straight to stop and
/// restart.
pub fn no_steps(_: &AppConfig) -> Vec<Box<dyn RecoveryStep>> {
    Vec::new()
}
