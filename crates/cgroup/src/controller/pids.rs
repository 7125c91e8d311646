//! Pids controller: `pids.current`, `pids.max`, `pids.events` (same names in v1 and v2).

use std::path::Path;

use super::{flat_keyed_value, parse_max};
use crate::error::Result;
use crate::fs;

/// Task counts of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidsStats {
    /// Tasks (processes and threads) in the cgroup and its descendants.
    pub current: u64,
    /// The limit; `None` for `max` (unlimited).
    pub max: Option<u64>,
    /// Forks refused because a limit was hit (`pids.events` `max`), if offered.
    pub refused_forks: Option<u64>,
}

/// True when `dir` has the pids controller files (not at the root).
pub fn present(dir: &Path) -> bool {
    dir.join("pids.current").exists()
}

/// Reads the counters (v1 and v2 alike).
pub fn read(dir: &Path) -> Result<PidsStats> {
    let current = fs::read_u64(&dir.join("pids.current"))?;
    let max_path = dir.join("pids.max");
    let max_text = fs::read(&max_path)?;
    let max = parse_max(&max_text)
        .ok_or_else(|| fs::parse_error(&max_path, &max_text, "\"max\" or an integer"))?;
    let refused_forks = fs::read_optional(&dir.join("pids.events"))?
        .and_then(|text| flat_keyed_value(&text, "max"));
    Ok(PidsStats {
        current,
        max,
        refused_forks,
    })
}

/// Sets `pids.max`.
pub fn apply(dir: &Path, max: u64) -> Result<()> {
    fs::write(&dir.join("pids.max"), &max.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_captured_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pids.current"), "20\n").unwrap();
        std::fs::write(dir.path().join("pids.max"), "20\n").unwrap();
        std::fs::write(dir.path().join("pids.events"), "max 1534\n").unwrap();
        let s = read(dir.path()).unwrap();
        assert_eq!(
            s,
            PidsStats {
                current: 20,
                max: Some(20),
                refused_forks: Some(1534)
            }
        );
        std::fs::write(dir.path().join("pids.max"), "max\n").unwrap();
        std::fs::remove_file(dir.path().join("pids.events")).unwrap();
        let s = read(dir.path()).unwrap();
        assert_eq!((s.max, s.refused_forks), (None, None));
        std::fs::write(dir.path().join("pids.max"), "lots\n").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
