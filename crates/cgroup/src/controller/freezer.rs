//! Freezer: v1 `freezer.state`; v2 `cgroup.freeze` + `cgroup.events`.
//!
//! What a frozen task looks like in `/proc/PID/stat` differs: on this
//! kernel (6.18) a v1-frozen task shows state `D` (TASK_FROZEN counts as
//! uninterruptible), a v2-frozen one shows `S` (it sleeps in the signal
//! path). Trust the freezer files, not the task state.

use std::path::Path;

use super::flat_keyed_value;
use crate::error::Result;
use crate::fs;

/// Where a freezer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerState {
    /// Tasks run.
    Thawed,
    /// Freezing was requested; some tasks have not stopped yet.
    Freezing,
    /// Every task is frozen.
    Frozen,
}

/// Parses v1 `freezer.state` (`THAWED`, `FREEZING`, `FROZEN`).
pub fn parse_v1_state(text: &str) -> Option<FreezerState> {
    match text.trim() {
        "THAWED" => Some(FreezerState::Thawed),
        "FREEZING" => Some(FreezerState::Freezing),
        "FROZEN" => Some(FreezerState::Frozen),
        _ => None,
    }
}

/// True when `dir` has a v1 freezer (the root of the hierarchy has none).
pub fn has_v1(dir: &Path) -> bool {
    dir.join("freezer.state").exists()
}

/// Reads v1 `freezer.state`.
pub fn read_v1(dir: &Path) -> Result<FreezerState> {
    let path = dir.join("freezer.state");
    let text = fs::read(&path)?;
    parse_v1_state(&text).ok_or_else(|| fs::parse_error(&path, &text, "THAWED, FREEZING or FROZEN"))
}

/// Requests v1 freezing or thawing; completion is seen in [`read_v1`].
pub fn write_v1(dir: &Path, frozen: bool) -> Result<()> {
    fs::write(
        &dir.join("freezer.state"),
        if frozen { "FROZEN" } else { "THAWED" },
    )
}

/// Derives the v2 state from `cgroup.freeze` (requested) and the `frozen`
/// key of `cgroup.events` (reached, possibly because an ancestor is frozen).
pub fn v2_state(requested: bool, events: &str) -> Option<FreezerState> {
    let frozen = flat_keyed_value(events, "frozen")? == 1;
    Some(match (requested, frozen) {
        (_, true) => FreezerState::Frozen,
        (true, false) => FreezerState::Freezing,
        (false, false) => FreezerState::Thawed,
    })
}

/// True when `dir` has the v2 freezer (non-root cgroups, Linux 5.2+).
pub fn has_v2(dir: &Path) -> bool {
    dir.join("cgroup.freeze").exists()
}

/// Reads the v2 freezer state.
pub fn read_v2(dir: &Path) -> Result<FreezerState> {
    let freeze_path = dir.join("cgroup.freeze");
    let requested = fs::read_u64(&freeze_path)? == 1;
    let events_path = dir.join("cgroup.events");
    let events = fs::read(&events_path)?;
    v2_state(requested, &events)
        .ok_or_else(|| fs::parse_error(&events_path, &events, "a \"frozen 0|1\" line"))
}

/// Requests v2 freezing or thawing.
pub fn write_v2(dir: &Path, frozen: bool) -> Result<()> {
    fs::write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_states() {
        assert_eq!(parse_v1_state("FROZEN\n"), Some(FreezerState::Frozen));
        assert_eq!(parse_v1_state("FREEZING\n"), Some(FreezerState::Freezing));
        assert_eq!(parse_v1_state("THAWED\n"), Some(FreezerState::Thawed));
        assert_eq!(parse_v1_state("frozen"), None);
    }

    #[test]
    fn v2_states_from_captured_events() {
        // Captured from a child of /sys/fs/cgroup/unified on kernel 6.18.
        assert_eq!(
            v2_state(false, "populated 1\nfrozen 0\n"),
            Some(FreezerState::Thawed)
        );
        assert_eq!(
            v2_state(true, "populated 1\nfrozen 0\n"),
            Some(FreezerState::Freezing)
        );
        assert_eq!(
            v2_state(true, "populated 1\nfrozen 1\n"),
            Some(FreezerState::Frozen)
        );
        // Frozen through a frozen ancestor.
        assert_eq!(
            v2_state(false, "populated 1\nfrozen 1\n"),
            Some(FreezerState::Frozen)
        );
        assert_eq!(v2_state(true, "populated 1\n"), None);
    }

    #[test]
    fn files_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_v1(dir.path()) && !has_v2(dir.path()));
        std::fs::write(dir.path().join("freezer.state"), "THAWED\n").unwrap();
        write_v1(dir.path(), true).unwrap();
        assert_eq!(read_v1(dir.path()).unwrap(), FreezerState::Frozen);
        std::fs::write(dir.path().join("cgroup.freeze"), "0\n").unwrap();
        std::fs::write(dir.path().join("cgroup.events"), "populated 0\nfrozen 1\n").unwrap();
        write_v2(dir.path(), true).unwrap();
        assert_eq!(read_v2(dir.path()).unwrap(), FreezerState::Frozen);
        std::fs::write(dir.path().join("freezer.state"), "BOGUS\n").unwrap();
        assert!(read_v1(dir.path()).is_err());
    }
}
