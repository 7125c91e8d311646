//! `[app.checkpoint]`: in-memory checkpoints and rollback in place.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::invalid::SettingError;

/// Periodic in-memory checkpoints of the program (μCheckpoint): a crash
/// signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) is intercepted and
/// the program rolled back to a checkpoint instead of restarted; a hang
/// is rolled back to a checkpoint from before it stopped making progress.
/// Off unless `interval` is set. Needs ptrace (root or CAP_SYS_PTRACE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Time between checkpoints (10ms to 60s); `"0"`, the default, turns
    /// checkpoints off.
    #[serde(deserialize_with = "de_interval")]
    pub interval: HumanDuration,
    /// Checkpoints kept in memory (1 to 256). A hang can only be rolled
    /// back if `keep × interval` reaches back past its last sign of
    /// progress.
    #[serde(deserialize_with = "de_keep")]
    pub keep: usize,
    /// The same crash again within this time after a rollback goes one
    /// checkpoint further back (progressive rollback), up to `keep`; then
    /// the program is restarted (10ms to 10m).
    #[serde(deserialize_with = "de_window")]
    pub recurrence_window: HumanDuration,
    /// More rollbacks than this within `crash_loop.window` and the program
    /// is restarted instead: rolling back keeps failing (0: no limit).
    pub max_rollbacks: u32,
    /// Compare full copies of memory at every checkpoint instead of
    /// tracking written pages (what kernels before 6.7 get anyway; slow).
    pub full_copy: bool,
    /// Copy the pages written since the last checkpoint while the program
    /// still runs, so the checkpoint's stop only copies what is written
    /// meanwhile (shorter pauses; one more page-table scan per checkpoint,
    /// run on another CPU). Off: everything is copied during the stop.
    pub precopy: bool,
    /// Changes to files are part of the checkpoint: a seccomp filter makes
    /// the program ask before every write, truncate, create, rename and
    /// delete, the old contents are kept, and a rollback puts them back.
    /// Off: a rollback is refused once the program wrote anything.
    pub files: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval: HumanDuration::from_secs(0),
            keep: 8,
            recurrence_window: HumanDuration::from_secs(1),
            max_rollbacks: 10,
            full_copy: false,
            precopy: true,
            files: true,
        }
    }
}

impl CheckpointConfig {
    /// True when checkpoints are on.
    pub fn enabled(&self) -> bool {
        !self.interval.get().is_zero()
    }

    /// Checks what deserialization checks, for configurations built in
    /// code; returns a message on error.
    pub fn validate(&self) -> Result<(), SettingError> {
        check_interval(self.interval)?;
        check_keep(self.keep)?;
        check_window(self.recurrence_window)
    }
}

fn check_interval(v: HumanDuration) -> Result<(), SettingError> {
    let ms = v.get().as_millis();
    if !v.get().is_zero() && !(10..=60_000).contains(&ms) {
        return Err(SettingError::out_of_range(
            "checkpoint interval",
            v,
            "10ms to 60s, or \"0\" for no checkpoints",
        ));
    }
    Ok(())
}

fn check_keep(v: usize) -> Result<(), SettingError> {
    if !(1..=256).contains(&v) {
        return Err(SettingError::out_of_range(
            "checkpoint keep =",
            v,
            "1 to 256 (default 8)",
        ));
    }
    Ok(())
}

fn check_window(v: HumanDuration) -> Result<(), SettingError> {
    let ms = v.get().as_millis();
    if !(10..=600_000).contains(&ms) {
        return Err(SettingError::out_of_range(
            "checkpoint recurrence_window",
            v,
            "10ms to 10m (default 1s)",
        ));
    }
    Ok(())
}

fn de_interval<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let v = HumanDuration::deserialize(d)?;
    check_interval(v).map_err(de::Error::custom)?;
    Ok(v)
}

fn de_keep<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = i64::deserialize(d)?;
    let v = usize::try_from(v).unwrap_or(0);
    check_keep(v).map_err(de::Error::custom)?;
    Ok(v)
}

fn de_window<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let v = HumanDuration::deserialize(d)?;
    check_window(v).map_err(de::Error::custom)?;
    Ok(v)
}
