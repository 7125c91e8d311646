//! The heavy detector: snapshots in, a [`Diagnosis`] out. It runs no
//! thread of its own; `selfheal-hangwatch` calls it from the hang path.
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
//! - [`stored`]: a diagnosis event read back from the store, its evidence
//!   typed again.
//! - [`dwait`]: the eBPF D-state tracer the sweep reads, when it can run.
//! - [`pseudo_file`]: cheap reads of small procfs and cgroupfs files.
#![forbid(unsafe_code)]

pub mod blocker;
pub mod cgroups;
pub mod class;
pub mod classify;
pub mod dwait;
pub mod oomloop;
pub mod pseudo_file;
pub mod snapshot;
pub mod stored;
pub mod sweep;
pub mod verify;

pub use class::{Diagnosis, Symptom, Trigger};
pub use classify::evidence::DiagnosisEvidence;
pub use classify::{Diagnoser, Observation, Thresholds};
pub use snapshot::{Snapshot, SnapshotReader, TaskSample};
pub use stored::StoredDiagnosis;
