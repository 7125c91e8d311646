//! The heavy detector and the hang pipeline.
//!
//! - [`snapshot`]: every task's scheduling state, CPU time, memory and
//!   wait channel, plus the system counters, read from /proc.
//! - [`sweep`] and [`cgroups`]: the cheap periodic checks that see what the
//!   light detector's metrics cannot (D-state tasks; cgroups near their
//!   memory or pids limit).
//! - [`classify`]: two snapshots + what the stall detector, the sweep and the
//!   kernel say → a [`Diagnosis`] of one [`Class`], with the culprit and the
//!   evidence; or a `legitimate_load` dismissal.
//! - [`oomloop`]: memory cgroups whose programs the kernel OOM-kills again
//!   and again (fill, kill, respawn), from its own verdicts.
//! - [`verify`]: live checks that a symptom cleared, for the recovery ladder.
//! - [`pipeline`]: [`HangPipeline`], the thread the daemon starts: it owns the
//!   stall detector, the watchdog chain, the kmsg follower, the sweep, the
//!   heavy detector and the recovery ladder, and records every event.
//! - [`metrics`]: its counters and Prometheus collector.
//! - [`pseudo_file`]: cheap reads of small procfs and cgroupfs files.
#![forbid(unsafe_code)]

pub mod blocker;
pub mod cgroups;
pub mod class;
pub mod classify;
pub mod dwait;
pub mod metrics;
pub mod oomloop;
pub mod pipeline;
pub mod pseudo_file;
pub mod snapshot;
pub mod sweep;
pub mod verify;

pub use class::{Blame, Class, Diagnosis, Symptom, Target, Trigger};
pub use classify::{Diagnoser, Observation, Thresholds};
pub use pipeline::{HangPipeline, PipelineError, PipelineOptions};
pub use snapshot::{Snapshot, SnapshotReader, TaskSample};
